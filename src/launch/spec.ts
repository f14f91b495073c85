/**
 * The one model of a launch: what to run, how, and who holds the pid file's
 * lock while it runs. It is made once, by the control layer, from what a
 * caller gave (the command line, or the control API's options), with every
 * value parsed, checked and every default applied; everything after reads
 * it and nothing parses a value again: `start`, `run` and `restart`, the
 * supervisor and the keeper stage, and the record kept beside the pid file.
 *
 * It is plain data, safe to turn into JSON and back: the supervisor and the
 * keeper get it through a pipe when they are started (never in argv, which
 * any user can read in /proc), and the record keeps it for a `restart`
 * without the command. It holds no secret: a cluster lock's password is read
 * again by whoever takes the lock (see `src/cluster/`).
 *
 * @module
 */

import type { SyslogFacility } from "../syslog/codes.ts";
import type { Schedule } from "./schedule.ts";

/** How the program says it is ready. */
export type Readiness =
  /**
   * Alive `afterMs` after a successful exec; or, with `servingMs`, sooner:
   * once it has been serving (listening on a socket, with a thread waiting
   * for connections) for that long without a break (see `serving.ts`).
   */
  | { readonly kind: "alive"; readonly afterMs: number; readonly servingMs?: number }
  /** Writes a newline to descriptor `fd` (s6 style, `NOTIFY_FD`). */
  | { readonly kind: "fd"; readonly fd: number }
  /** Sends `READY=1` to `NOTIFY_SOCKET` (sd_notify). */
  | { readonly kind: "socket" };

/** Where the program's output goes. */
export type OutputTarget =
  /** Appended to a file (an absolute path, once the spec is made). */
  | { readonly kind: "file"; readonly path: string }
  /** To syslog, a line each, with the program's pid (the supervisor only). */
  | { readonly kind: "syslog"; readonly facility: SyslogFacility };

/** When the supervisor starts the program again. */
export type RestartPolicy = "on-failure" | "always" | "never";

/** The supervisor's restart policy, every value given. */
export interface RestartSpec {
  /** When to start the program again. */
  readonly policy: RestartPolicy;
  /** The first restart delay, in ms; it doubles with each quick failure. */
  readonly delayMs: number;
  /** The longest restart delay, in ms. */
  readonly delayMaxMs: number;
  /** A run this long (ms) resets the backoff. */
  readonly minUptimeMs: number;
  /** Give up after this many restarts within `windowMs`; 0 for never. */
  readonly maxRestarts: number;
  /** The crash-loop window, in ms. */
  readonly windowMs: number;
}

/**
 * An outer lock on a cluster (etcd, PostgreSQL) held for the program: taken
 * before each run, kept alive, and the program fenced (stopped) before the
 * lock can pass to another host.
 */
export interface ClusterLockSettings {
  /** `etcd://HOST:PORT[,HOST:PORT...]/NAME`, `etcds://...`, `postgres://USER@HOST:PORT/DB?name=NAME`. */
  readonly url: string;
  /**
   * The lease's time to live, in ms.
   * @default {10000}
   */
  readonly ttlMs?: number;
  /**
   * How long to wait for a lock held elsewhere, in ms, or "forever".
   * @default {0} fail at once
   */
  readonly waitMs?: number | "forever";
  /**
   * The bound on every connect and request, in ms.
   * @default {5000}
   */
  readonly timeoutMs?: number;
  /** TLS files for `etcds://`. */
  readonly tls?: { readonly cacert?: string; readonly cert?: string; readonly key?: string };
  /**
   * PostgreSQL: a file whose first line is the password (owned by the
   * caller or root, mode 0600); without it, `PGPASSWORD`. The URL holds
   * none, and the spec holds only the file's path: whoever takes the lock
   * reads the password itself.
   */
  readonly passwordFile?: string;
  /**
   * `run` only: the job's success is recorded at most once per slot of this
   * many ms across every host (a slot is the multiple of it, from the epoch,
   * nearest to the moment the run starts), in the lock's backend, fenced by
   * the lock's token; a run whose slot is done does not run the job.
   */
  readonly oncePerMs?: number;
}

/** What a health check asks of the program. */
export type HealthCheck =
  /** A shell command (`/bin/sh -c`), in the program's directory, as its user: healthy on exit 0. */
  | { readonly kind: "cmd"; readonly command: string }
  /** An HTTP GET of `url` (`http://` or `https://`): healthy on a 2xx or 3xx answer. */
  | { readonly kind: "http"; readonly url: string }
  /** A TCP connection to `host`:`port`: healthy when it opens. */
  | { readonly kind: "tcp"; readonly host: string; readonly port: number };

/** When a supervisor's health checks run and what counts, every value given. */
export interface HealthTiming {
  /** From readiness to the first check, and from the end of each check to the next, in ms. */
  readonly intervalMs: number;
  /** A check that takes longer failed, and everything it started is killed, in ms. */
  readonly timeoutMs: number;
  /** Failures in a row that make the program unhealthy. */
  readonly retries: number;
  /** From readiness: failures in this time do not count, until the first success, in ms. */
  readonly startPeriodMs: number;
}

/** A supervisor's health check: what it asks and when. */
export type HealthSpec = HealthCheck & HealthTiming;

/**
 * Who holds the pid file's lock while the program runs, and so which
 * process the pid file names and what `start` hands the lock over to.
 */
export type Holder =
  /** The program itself: it inherits the locked descriptor, and the file names it. */
  | { readonly kind: "self" }
  /**
   * A keeper: a small process of ours that runs the program once and holds
   * the lock (and a cluster lock) until the program's main process exits;
   * the file names the program.
   */
  | { readonly kind: "keeper" }
  /** A supervisor: it holds the lock, restarts the program, and the file names it. */
  | { readonly kind: "supervisor"; readonly restart: RestartSpec };

/** What to launch, how, and who holds the lock: parsed, checked, complete. */
export interface LaunchSpec {
  /** The command as given: `command[0]` as written, then its arguments. */
  readonly command: readonly string[];
  /** The program `command[0]` names, as an absolute path. */
  readonly path: string;
  /**
   * The variables given for the program (`--env`), over the caller's own
   * environment, which is not part of the spec.
   */
  readonly env: Readonly<Record<string, string>>;
  /** Its working directory, absolute. */
  readonly cwd: string;
  /** Its umask; null to keep the caller's (`run`). */
  readonly umask: number | null;
  /** The account it runs as (the pid file's holder stays the caller's), or null. */
  readonly user: {
    readonly name: string;
    readonly uid: number;
    /** The primary group to take. */
    readonly gid: number;
    readonly home: string;
  } | null;
  /**
   * Its output: a file or syslog; null for /dev/null (a daemon) or the
   * caller's own stdout and stderr (in the foreground).
   */
  readonly output: OutputTarget | null;
  /** How it says it is ready. */
  readonly readiness: Readiness;
  /** The bound on every wait for readiness, in ms. */
  readonly readyTimeoutMs: number;
  /** How it is stopped (a keeper's fence, a supervisor's stop, its group's end). */
  readonly stopSchedule: Schedule;
  /** Signal its whole process group (it is started as a group leader). */
  readonly killGroup: boolean;
  /**
   * The program's own pid file, absolute, for a program that forks away: it
   * names the main process (read, never written); null without one.
   */
  readonly daemonPidfile: string | null;
  /** An outer lock on a cluster (TLS paths absolute), or null. */
  readonly lock: ClusterLockSettings | null;
  /** The name in messages and the syslog ident. */
  readonly name: string;
  /** Who holds the pid file's lock. */
  readonly holder: Holder;
  /**
   * The supervisor's health check (a program found unhealthy is stopped and
   * started again), or null.
   */
  readonly health: HealthSpec | null;
  /**
   * The supervisor's watchdog: the program (with `readiness` `socket`) gets
   * `WATCHDOG_USEC` and must send `WATCHDOG=1` at least this often, in ms;
   * null for none (unless the program asks for one with `WATCHDOG_USEC=`).
   */
  readonly watchdogMs: number | null;
  /**
   * `run` only: the job's time limit, in ms: once it has run this long it is
   * stopped by the stop schedule (its process group with `killGroup`) and
   * `run` exits 124; null for none. (A record written before this field
   * existed lacks it: none.)
   */
  readonly maxRuntimeMs: number | null;
}

/**
 * The variables a program gets on top of the caller's environment: what
 * the spec gives, and the account's own when it runs as another user.
 *
 * @param spec the launch
 * @param base the caller's environment (its readiness channels already removed)
 * @returns the program's whole environment
 */
export function environmentFor(
  spec: LaunchSpec,
  base: Readonly<Record<string, string>>,
): Record<string, string> {
  const env: Record<string, string> = { ...base };
  if (spec.user) {
    env.HOME = spec.user.home;
    env.USER = spec.user.name;
    env.LOGNAME = spec.user.name;
  }
  return { ...env, ...spec.env };
}
