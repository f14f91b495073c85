/**
 * The options and results of the control actions, and every default they
 * use, each defined once, and the bound every wait must keep.
 *
 * @module
 */

import type { Schedule } from "../launch/schedule.ts";
import type {
  ClusterLockSettings,
  HealthCheck,
  OutputTarget,
  Readiness,
  RestartPolicy,
} from "../launch/spec.ts";
import { checkWaitMs } from "./values.ts";
import type { SupervisorStatus } from "../supervisor/state.ts";
import type { FailedState } from "../lock/record.ts";

export {
  /** How long `start` waits, by default, to see that a daemon stays alive after its exec. */
  DEFAULT_READY_AFTER_MS,
  /** By default, a daemon that has served this long is ready sooner. */
  DEFAULT_READY_SERVING_MS,
} from "../supervisor/defaults.ts";
/** The default bound on every readiness wait. */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
/** The default bound on the wait for the guard lock. */
export const DEFAULT_GUARD_TIMEOUT_MS = 30_000;
/** The working directory `start` gives the daemon, so no file system is kept busy. */
export const DEFAULT_CHDIR = "/";
/** The umask `start` gives the daemon. */
export const DEFAULT_UMASK = 0o022;
/** The default stop schedule: TERM, wait 10 s, KILL, wait 5 s. */
export const DEFAULT_SCHEDULE = "TERM/10/KILL/5";

/** Options every guarded action takes. */
export interface GuardOptions {
  /** The pid file. */
  readonly pidfile: string;
  /**
   * The guard file.
   * @default {`${pidfile}.lock`}
   */
  readonly guard?: string;
  /**
   * How long to wait for another controller's action, in milliseconds.
   * @default {30000}
   */
  readonly guardTimeout?: number;
  /** Called with a warning (e.g. a pid file on NFS); the action goes on. */
  readonly onWarning?: (message: string) => void;
}

/** How a controller may trust a process that no lock proves to be the daemon. */
export interface TrustOptions {
  /**
   * The daemon's executable (start-stop-daemon's `--exec`): a process the
   * pid file names is acted on only when it runs this file, and then even
   * when no lock covers it (a daemon singleton-run did not start, named by
   * its own pid file). A file replaced since the process started (a package
   * upgrade) still matches by its path. Such a process must also run as
   * root, the pid file's owner or the caller (or as `runsAs`).
   */
  readonly exec?: string;
  /**
   * Act only on a process whose real uid is this user's (a name or a uid;
   * start-stop-daemon's `--user`, the command line's `--user` of stop,
   * status, signal and reload); with `exec`, it replaces the default rule
   * for a process no lock covers (root, the pid file's owner or the
   * caller). Not `user`, which names whom a start runs as: a restart takes
   * both.
   */
  readonly runsAs?: string;
}

/** What is started and how. */
export interface LaunchOptions {
  /** The command and its arguments; `command[0]` is searched in PATH. */
  readonly command: readonly string[];
  /**
   * The daemon's working directory.
   * @default {DEFAULT_CHDIR} for start; the current directory for run
   */
  readonly chdir?: string;
  /**
   * The daemon's umask.
   * @default {DEFAULT_UMASK} for start; unchanged for run
   */
  readonly umask?: number;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
  /** `USER[:GROUP]`, name or number: run as that account (root only). */
  readonly user?: string;
  /**
   * The service's name: in messages, the syslog ident (unless
   * `supervise.name` gives another), and, given without `pidfile` (see
   * `Named`), what selects the pid file `DIR/NAME.pid`.
   * @default {the program's basename}
   */
  readonly name?: string;
}

/** How to supervise the command. */
export interface SuperviseSettings {
  /**
   * The syslog ident and the name in the supervisor's messages.
   * @default {the program's basename}
   */
  readonly name?: string;
  /**
   * When to start the command again.
   * @default {"on-failure"}
   */
  readonly restart?: RestartPolicy;
  /**
   * The first restart delay, in ms; it doubles with each quick failure.
   * @default {1000}
   */
  readonly restartDelay?: number;
  /**
   * The longest restart delay, in ms.
   * @default {60000}
   */
  readonly restartDelayMax?: number;
  /**
   * A child that ran this long (ms) resets the backoff.
   * @default {10000}
   */
  readonly minUptime?: number;
  /**
   * Give up after this many restarts within `restartWindow`; 0 for never.
   * @default {5}
   */
  readonly maxRestarts?: number;
  /**
   * The crash-loop window, in ms.
   * @default {60000}
   */
  readonly restartWindow?: number;
  /** Signal the child's whole process group (it is started as a group leader). */
  readonly killGroup?: boolean;
  /**
   * How a child shows it is ready.
   * @default {{ kind: "alive", afterMs: 4000, servingMs: 1000 }}
   */
  readonly readiness?: Readiness;
  /**
   * How long a notifying child may take to become ready, in ms.
   * @default {60000}
   */
  readonly readyTimeout?: number;
  /**
   * How to stop the child, in start-stop-daemon's `--retry` grammar.
   * @default {"TERM/5/KILL/2"}
   */
  readonly stopSchedule?: string | Schedule;
  /**
   * `syslog`, `syslog:FACILITY` or a file path; absent: the child shares
   * the supervisor's stdout and stderr.
   */
  readonly output?: string | OutputTarget;
  /**
   * The program's own pid file, for a program that forks away: its pid
   * names the main process of each run (read, never written). Without it,
   * the main process of a program that forked away is the one process left.
   */
  readonly daemonPidfile?: string;
  /** An outer lock on a cluster, held by the supervisor (or keeper) for the program. */
  readonly lock?: ClusterLockSettings;
}

/**
 * A supervisor's health check as a caller gives it: what to check (Docker's
 * HEALTHCHECK, one kind), and when; each time in ms, defaults applied by the
 * launch spec.
 */
export type HealthSettings = HealthCheck & {
  /**
   * From readiness to the first check, and from each check's end to the next.
   * @default {10000}
   */
  readonly interval?: number;
  /**
   * A check that takes longer failed, and everything it started is killed.
   * @default {5000}
   */
  readonly timeout?: number;
  /**
   * Failures in a row that make COMMAND unhealthy.
   * @default {3}
   */
  readonly retries?: number;
  /**
   * From readiness: failures in this time do not count (it ends at the first success).
   * @default {0}
   */
  readonly startPeriod?: number;
};

/** The liveness of a supervised COMMAND: a health check and a watchdog (with `supervise` only). */
export interface LivenessOptions {
  /**
   * With `supervise`: check COMMAND's health; an unhealthy COMMAND is
   * stopped by the stop schedule and started again under the restart
   * policy, and every such restart counts toward `maxRestarts`.
   */
  readonly health?: HealthSettings;
  /**
   * With `supervise` and socket readiness: COMMAND gets `WATCHDOG_USEC` and
   * must send `WATCHDOG=1` at least this often (ms); a missed deadline (or
   * `WATCHDOG=trigger`) is handled as unhealthy.
   */
  readonly watchdog?: number;
}

/** Options of {@link start}. */
export interface StartOptions extends GuardOptions, LaunchOptions, LivenessOptions {
  /** Append the daemon's stdout and stderr to this file (mode 0640) instead of /dev/null. */
  readonly output?: string | OutputTarget;
  /**
   * The bound on every wait for readiness, in milliseconds.
   * @default {60000}
   */
  readonly readyTimeout?: number;
  /**
   * Readiness by time alone: the daemon is ready once it has stayed alive
   * this long after its exec, in ms. Without it (and without a notify
   * option), the default: alive {@link DEFAULT_READY_AFTER_MS}, or sooner,
   * once it has served (listened on a socket, with a thread waiting for
   * connections) for {@link DEFAULT_READY_SERVING_MS}.
   */
  readonly readyAfter?: number;
  /** s6-style readiness: the daemon writes a newline to this descriptor. */
  readonly notifyFd?: number;
  /** sd_notify readiness: the daemon sends READY=1 to NOTIFY_SOCKET. */
  readonly notifySocket?: boolean;
  /**
   * Supervise mode: the daemon is a supervisor that runs COMMAND, restarts
   * it, and tells `start` it is ready once COMMAND's first run is ready
   * (COMMAND's own readiness is in these settings).
   */
  readonly supervise?: SuperviseSettings;
  /**
   * The program's own pid file, for a program that forks away (the process
   * launched exits 0 while its child runs on): the pid in it names the main
   * process, once that process is one this start launched. Read, never
   * written. Without it, the main process of a program that forked away is
   * the one process it left; with several, the start fails.
   */
  readonly daemonPidfile?: string;
  /**
   * Run COMMAND under a keeper from the start: a small process that holds
   * the lock until COMMAND's main process exits, for programs that close
   * every descriptor (the lock's too) after they start. The pid file names
   * COMMAND's main process. Without it, `start` switches to a keeper by
   * itself when it sees the lock dropped by the time the daemon is ready.
   */
  readonly keeper?: boolean;
  /**
   * An outer lock on a cluster, taken before COMMAND starts and held by a
   * keeper (or the supervisor, with `supervise`) that fences COMMAND before
   * the lock can pass to another host.
   */
  readonly lock?: ClusterLockSettings;
  /**
   * With `keeper` or `lock`: how the keeper stops COMMAND (start-stop-daemon's
   * `--retry` grammar); its first wait is what a fenced COMMAND gets between
   * SIGTERM and SIGKILL.
   * @default {DEFAULT_CHILD_STOP_SCHEDULE}
   */
  readonly stopSchedule?: string | Schedule;
  /**
   * Abort the wait for readiness (the CLI wires SIGINT, SIGTERM and SIGHUP to
   * it): the daemon is killed and the start fails, leaving nothing behind.
   */
  readonly signal?: AbortSignal;
}

/** What {@link start} did. */
export interface StartResult {
  /** The daemon's pid, as the pid file names it. */
  readonly pid: number;
  /** The last STATUS= the daemon sent, if any. */
  readonly status?: string;
  /** The keeper's pid, when a keeper holds the lock for the daemon. */
  readonly keeper?: number;
  /** The daemon forked away: the pid of the process launched, which exited. */
  readonly launched?: number;
}

/** Options of {@link stop}. */
export interface StopOptions extends GuardOptions, TrustOptions {
  /**
   * The signals to send and how long to wait after each.
   * @default {parseSchedule("TERM/10/KILL/5")}
   */
  readonly schedule?: Schedule;
  /** Signal the process the pid file names as a process group, when it leads one. */
  readonly group?: boolean;
}

/** What {@link stop} did. */
export interface StopResult {
  /** The pid that was stopped. */
  readonly pid: number;
  /** The signals sent, in order. */
  readonly signals: readonly number[];
  /** How long until the lock was free, in milliseconds. */
  readonly waitedMs: number;
  /**
   * Only when the pid file named a process that was gone or did not hold the
   * lock: the processes that held it, which were signalled instead.
   */
  readonly holders?: readonly number[];
}

/** Options of {@link restart}. */
export interface RestartOptions extends Omit<StartOptions, "command">, StopOptions {
  /**
   * The command and its arguments. Without it, the launch recorded beside
   * the pid file is started again, with these options over the recorded
   * ones (the caller's environment, plus the recorded `env`).
   */
  readonly command?: readonly string[];
}

/** Options of {@link run}. */
export interface RunOptions extends GuardOptions, LaunchOptions, LivenessOptions {
  /** Supervise COMMAND in the foreground instead of exec'ing it. */
  readonly supervise?: SuperviseSettings;
  /**
   * An outer lock on a cluster: COMMAND runs under a keeper in the
   * foreground (instead of an exec) that holds the lock and fences COMMAND.
   */
  readonly lock?: ClusterLockSettings;
  /**
   * With `lock`, `replace` or `maxRuntime` (and no `supervise`): how COMMAND
   * is stopped (by the keeper, the time limit, or a later `replace` of this
   * run: the running copy is stopped by the schedule of the run that
   * replaces it).
   * @default {DEFAULT_CHILD_STOP_SCHEDULE}
   */
  readonly stopSchedule?: string | Schedule;
  /**
   * When another copy runs: wait up to this many ms (or "forever") for it to
   * end, then run; still running by then: {@link AlreadyRunningError}.
   * Waiters hold no guard while they wait and run one at a time, in the
   * order they came (flock(1)'s `-w`). Not with `replace`.
   */
  readonly wait?: number | "forever";
  /**
   * When another copy runs: stop it by `stopSchedule` (its process group
   * with `killGroup`), wait until its lock is free, then run (run-one's
   * `run-this-one`, by the lock). Of several at once, the one that takes the
   * guard last runs; the others throw {@link AlreadyRunningError} without
   * running COMMAND.
   */
  readonly replace?: boolean;
  /**
   * The job's time limit, in ms: once COMMAND has run this long it is
   * stopped by `stopSchedule` (its process group with `killGroup`) and this
   * process exits 124, whatever signal ended it; else with COMMAND's own
   * status. The pid file names COMMAND; what stays to enforce the limit is a
   * `/bin/sh` (about 0.6 MiB of PSS), which holds no lock. Not with `supervise`.
   */
  readonly maxRuntime?: number;
  /** With `replace` or `maxRuntime`: signal COMMAND's whole process group (it leads one). */
  readonly killGroup?: boolean;
}

/** Options of {@link status}: the pid file, and what to trust where no lock covers it. */
export interface StatusOptions extends TrustOptions {
  /** The pid file. */
  readonly pidfile: string;
}

/** Options of {@link signal}. */
export interface SignalOptions extends GuardOptions, TrustOptions {
  /**
   * The signal, by name (`"SIGUSR1"`); a number is still taken (0 sends
   * nothing: it checks that the daemon runs and may be signalled; real-time
   * signals have no `Deno.Signal` name).
   */
  readonly signal: Deno.Signal | number;
}

/** What {@link status} found. */
export interface StatusReport {
  /**
   * running, stale (unlocked but names a pid), stopped, unknown (cannot
   * tell), or failed (not running: its supervisor or keeper gave up; see
   * `failed`).
   */
  readonly state: "running" | "stale" | "stopped" | "unknown" | "failed";
  /** The LSB status code: 0 running, 1 stale, 3 stopped or failed, 4 unknown. */
  readonly code: 0 | 1 | 3 | 4;
  /**
   * The pid the file names, or null; for a running daemon, the process that
   * holds the lock: when the named one is gone or does not hold it, the
   * oldest holder found in /proc (see `holders`).
   */
  readonly pid: number | null;
  /** The pid file. */
  readonly pidfile: string;
  /**
   * Only when the lock's holder is not the pid the file names (a supervisor
   * SIGKILLed while its child runs on, a daemon whose forked child kept the
   * inherited descriptor): every process that holds the lock.
   */
  readonly holders?: readonly number[];
  /** With `holders`: the pid the file names, or null when it names none. */
  readonly namedPid?: number | null;
  /** With `holders`: true when the named pid no longer runs (or none is named). */
  readonly namedPidGone?: boolean;
  /** When the daemon started (ISO 8601), for a running daemon. */
  readonly startTime?: string;
  /** Seconds since it started. */
  readonly uptimeSeconds?: number;
  /** Its resident set size in KiB. */
  readonly rssKiB?: number;
  /** Its open descriptors; null when /proc does not let us count them. */
  readonly fds?: number | null;
  /** Its command line. */
  readonly cmdline?: readonly string[];
  /** Why the state is unknown. */
  readonly error?: string;
  /** For a supervisor (start --supervise): its child, restarts and last exit. */
  readonly supervisor?: SupervisorStatus;
  /**
   * When a keeper holds the lock for the daemon (which closed its
   * descriptors, or runs under a cluster lock): the keeper's pid. `pid` is
   * the daemon's.
   */
  readonly keeper?: number;
  /**
   * Other users' processes with a lock on the pid file: any user who can read
   * it can lock it, so these change no decision (they are not the daemon,
   * and a start takes its lock on a fresh file when they are in the way).
   */
  readonly foreignHolders?: readonly {
    readonly pid: number;
    readonly uid: number;
    readonly kind: string;
  }[];
  /** The cluster lock held for the daemon: URL, key, fencing token, TTL and time left. */
  readonly lock?: SupervisorStatus["lock"];
  /**
   * For a supervisor with a health check or a watchdog: the program's health
   * (`starting`, `healthy`, `unhealthy`), failures in a row, the last check
   * and error, and the restarts it caused. The daemon runs (code 0) either way.
   */
  readonly health?: SupervisorStatus["health"];
  /**
   * What was launched, from the record beside the pid file: the command as
   * given and when it was recorded. (`cmdline` is what /proc shows now.)
   */
  readonly spec?: { readonly command: readonly string[]; readonly recordedAt: string };
  /** With state failed: when it gave up, after how many restarts, and how its last run ended. */
  readonly failed?: FailedState;
}

/**
 * Bound every wait a caller gives: poll(2) takes an int of milliseconds, and
 * the command line's parsers bound theirs the same way.
 *
 * @param options the guard's timeout and, for a start, the readiness waits
 * @throws {UsageError} for a negative, non-number or too long wait
 */
export function checkWaits(
  options: GuardOptions & { readonly readyTimeout?: number; readonly readyAfter?: number },
): void {
  if (options.guardTimeout !== undefined) checkWaitMs(options.guardTimeout, "guardTimeout");
  if (options.readyTimeout !== undefined) checkWaitMs(options.readyTimeout, "readyTimeout");
  if (options.readyAfter !== undefined) checkWaitMs(options.readyAfter, "readyAfter");
}
