/**
 * Every option of the command, once: its name, what value it takes, which
 * commands take it, how its value is parsed and checked, its help line and
 * the default the help shows. The parser ({@link ./parse.ts}) and the help
 * ({@link ./help.ts}) are both read from this table, so they cannot drift.
 *
 * Defaults are not written here: the help reads them from the control
 * layer's constants, the same ones the library falls back on.
 *
 * @module
 */

import {
  formatDuration,
  type HostPort,
  type OutputTarget,
  parseDuration,
  parseEnvEntry,
  parseHealthCommand,
  parseHealthUrl,
  parseHostPort,
  parseInteger,
  parseName,
  parseOutput,
  parsePath,
  parsePositiveDuration,
  parseRestartPolicy,
  parseStopSchedule,
  parseUmask,
  type RestartPolicy,
} from "../control/values.ts";
import type { Schedule } from "../control/mod.ts";

/** The commands, in the order the help lists them. */
export const COMMANDS = [
  "start",
  "run",
  "stop",
  "status",
  "restart",
  "reload",
  "signal",
  "reopen",
  "list",
] as const;

/** A command. */
export type Command = typeof COMMANDS[number];

/** The control layer's module, where the help finds the defaults. */
export type Defaults = typeof import("../control/mod.ts");

/** Every option's value after parsing: absent when not given, switches false. */
export interface Values {
  pidfile?: string;
  pidfiles: string[];
  retry?: Schedule;
  chdir?: string;
  umask?: number;
  env: [string, string][];
  user?: string;
  output?: OutputTarget;
  readyTimeout?: number;
  readyAfter?: number;
  notifyFd?: number;
  notifySocket: boolean;
  daemonPidfile?: string;
  keeper: boolean;
  exec?: string;
  lock?: string;
  lockTtl?: number;
  lockWait?: number | "forever";
  lockTimeout?: number;
  lockCacert?: string;
  lockCert?: string;
  lockKey?: string;
  lockPasswordFile?: string;
  oknodo: boolean;
  force: boolean;
  conflictExitCode?: number;
  wait?: number | "forever";
  replace: boolean;
  maxRuntime?: number;
  oncePer?: number;
  json: boolean;
  guard?: string;
  guardTimeout?: number;
  supervise: boolean;
  restart?: RestartPolicy;
  restartDelay?: number;
  restartDelayMax?: number;
  minUptime?: number;
  maxRestarts?: number;
  restartWindow?: number;
  killGroup: boolean;
  stopSchedule?: Schedule;
  name?: string;
  quiet: boolean;
  healthCmd?: string;
  healthHttp?: string;
  healthTcp?: HostPort;
  healthInterval?: number;
  healthTimeout?: number;
  healthRetries?: number;
  healthStartPeriod?: number;
  watchdog?: number;
}

interface Base {
  /** The option's name, without `--`. */
  readonly name: string;
  /** The commands that take it. */
  readonly commands: readonly Command[];
  /** The placeholder for its value in the help (per command where that differs). */
  readonly arg?: string | ((cmd: Command) => string);
  /** What it does, for the help (per command where that differs). */
  readonly help: string | ((cmd: Command) => string);
  /** The default the help shows, from the control layer's constants; undefined for none. */
  readonly shown?: (defaults: Defaults, cmd: Command) => string | undefined;
  /** Which other option it belongs to: given without it, a usage error. */
  readonly needs?: "supervise";
  /** The commands where it needs --supervise (while others take it alone). */
  readonly supervisedIn?: readonly Command[];
}

/** One option, typed by the value it gives. */
export type OptionSpec<T> =
  | Base & { readonly kind: "switch" } & (T extends boolean ? unknown : never)
  | Base & { readonly kind: "value"; readonly parse: (text: string, option: string) => T }
  | Base & {
    readonly kind: "multi";
    readonly parse: (text: string, option: string) => T extends readonly (infer U)[] ? U : never;
  };

/** Any option, its value's type forgotten: what the parser and the help walk. */
export type AnyOption =
  | Base & { readonly kind: "switch" }
  | Base & {
    readonly kind: "value" | "multi";
    readonly parse: (text: string, option: string) => unknown;
  };

/**
 * The placeholder an option's value shows in a command's help (per command
 * where that differs: `--user USER[:GROUP]` for start, `USER` for stop).
 *
 * @param spec the option
 * @param cmd the command, or its first one
 * @returns the placeholder, or undefined for a switch
 */
export function argOf(spec: AnyOption, cmd: Command = spec.commands[0]!): string | undefined {
  return typeof spec.arg === "function" ? spec.arg(cmd) : spec.arg;
}

const LAUNCH: readonly Command[] = ["start", "run", "restart"];
const GUARDED: readonly Command[] = [
  "start",
  "run",
  "stop",
  "restart",
  "reload",
  "signal",
  "reopen",
];

/** A umask for the help: 022. */
export function octal(mask: number): string {
  return mask.toString(8).padStart(3, "0");
}

/** The table: every option of every command, in the order the help lists them. */
export const OPTIONS: { readonly [K in keyof Values]-?: OptionSpec<NonNullable<Values[K]>> } = {
  pidfile: {
    name: "pidfile",
    kind: "value",
    arg: "PATH",
    commands: [...GUARDED, "status"],
    help: (cmd) =>
      cmd === "start" || cmd === "run"
        ? "the pid file (or --name NAME: DIR/NAME.pid)"
        : "the pid file (or a NAME: DIR/NAME.pid)",
    // An empty value reads as a missing one (see the parser's check).
    parse: (text) => text,
  },
  pidfiles: {
    name: "pidfile",
    kind: "multi",
    arg: "PATH",
    commands: ["list"],
    help: "also list this pid file, named by its path (repeatable)",
    parse: parsePath,
  },
  retry: {
    name: "retry",
    kind: "value",
    arg: "SCHEDULE",
    commands: ["stop", "restart"],
    help: "start-stop-daemon syntax: SIGNAL/DUR/SIGNAL/DUR..., a bare DUR " +
      "for TERM/DUR/KILL/DUR, 'forever' to repeat what follows it",
    shown: (d) => d.DEFAULT_SCHEDULE,
    parse: (text, option) => parseStopSchedule(text, option),
  },
  chdir: {
    name: "chdir",
    kind: "value",
    arg: "DIR",
    commands: LAUNCH,
    help: (cmd) => `working directory${cmd === "run" ? " (default: unchanged)" : ""}`,
    shown: (d, cmd) => cmd === "run" ? undefined : d.DEFAULT_CHDIR,
    parse: parsePath,
  },
  umask: {
    name: "umask",
    kind: "value",
    arg: "OCTAL",
    commands: LAUNCH,
    help: (cmd) => `umask${cmd === "run" ? " (default: unchanged)" : ""}`,
    shown: (d, cmd) => cmd === "run" ? undefined : octal(d.DEFAULT_UMASK),
    parse: parseUmask,
  },
  env: {
    name: "env",
    kind: "multi",
    arg: "KEY=VALUE",
    commands: LAUNCH,
    help: "add to the environment (repeatable)",
    parse: parseEnvEntry,
  },
  user: {
    name: "user",
    kind: "value",
    arg: (cmd) => LAUNCH.includes(cmd) ? "USER[:GROUP]" : "USER",
    commands: [...LAUNCH, "stop", "status", "reload", "signal"],
    help: (cmd) =>
      LAUNCH.includes(cmd)
        ? "run as that user with its groups (root only)"
        : "act only on a process whose real uid is USER's (a name or uid; start-stop-daemon's " +
          "--user); with --exec, it names whose process no lock covers may be trusted " +
          "(default: root, the pid file's owner or you)",
    parse: parseName,
  },
  output: {
    name: "output",
    kind: "value",
    arg: "FILE",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: (cmd) =>
      (cmd === "run" ? "" : "append stdout and stderr to FILE (default /dev/null); with " +
        "--supervise, ") +
      "appended line by line and reopened on SIGHUP/SIGUSR1, or syslog[:FACILITY]: stdout " +
      "to syslog at info, stderr at err, with COMMAND's pid",
    parse: parseOutput,
  },
  readyTimeout: {
    name: "ready-timeout",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "bound on every wait for readiness",
    shown: (d) => formatDuration(d.DEFAULT_READY_TIMEOUT_MS),
    parse: (text, option) => parseDuration(text, option, { positive: true }),
  },
  readyAfter: {
    name: "ready-after",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "without a notify option: ready when still alive this long after the exec, whether " +
      "or not it serves (a bare number is milliseconds)",
    shown: (d) =>
      `${formatDuration(d.DEFAULT_READY_AFTER_MS)}, or once it has listened and waited for ` +
      `connections for ${formatDuration(d.DEFAULT_READY_SERVING_MS)}`,
    parse: (text, option) => parseDuration(text, option, { bare: "ms", maxMs: 3_600_000 }),
  },
  notifyFd: {
    name: "notify-fd",
    kind: "value",
    arg: "N",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "ready when the daemon writes a newline to fd N (s6); NOTIFY_FD=N is set " +
      "in its environment",
    parse: (text, option) => parseInteger(text, option, { min: 3, max: 1023 }),
  },
  notifySocket: {
    name: "notify-socket",
    kind: "switch",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "ready when the daemon sends READY=1 to NOTIFY_SOCKET (sd_notify; STATUS=, " +
      "MAINPID=, EXTEND_TIMEOUT_USEC=, ERRNO= are understood)",
  },
  daemonPidfile: {
    name: "daemon-pidfile",
    kind: "value",
    arg: "FILE",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "the program's own pid file, for a program that forks away (its first process " +
      "exits 0 while its child runs on): the pid in it names the main process once that " +
      "process descends from this start; read, never written. Without it, the main process " +
      "is the one process left",
    parse: parsePath,
  },
  keeper: {
    name: "keeper",
    kind: "switch",
    commands: ["start", "restart"],
    help: "run COMMAND under a keeper that holds the lock until COMMAND's main process " +
      "exits, for a program that closes every descriptor after it starts (the pid file " +
      "names COMMAND; with --output, the keeper writes the file). Without it, start " +
      "switches to a keeper by itself when the lock is dropped before COMMAND is ready",
  },
  exec: {
    name: "exec",
    kind: "value",
    arg: "PATH",
    commands: ["stop", "status", "reload", "signal"],
    help: "act only on a process that runs PATH (start-stop-daemon's --exec), and then even " +
      "when no lock covers the pid file: a daemon singleton-run did not start, named by its " +
      "own pid file",
    parse: parsePath,
  },
  lock: {
    name: "lock",
    kind: "value",
    arg: "URL",
    commands: ["start", "run", "restart", "status"],
    help: (cmd) =>
      cmd === "status"
        ? "who holds this cluster lock, from any host (no --pidfile needed): 0 held, 3 free, " +
          "4 cannot tell"
        : "also hold this cluster lock: etcd://HOST:PORT[,HOST:PORT...]/NAME, etcds://..., or " +
          "postgres://USER@HOST:PORT/DB?name=NAME; COMMAND runs under a keeper that fences it " +
          "(stops its process group) before the lease can expire",
    // Checked by the control layer, which loads the cluster code only when a lock is asked for.
    parse: (text) => text,
  },
  lockTtl: {
    name: "lock-ttl",
    kind: "value",
    arg: "DUR",
    commands: ["start", "run", "restart"],
    help: "the lock's lease: the longest another host waits after this one vanishes",
    shown: (d) => formatDuration(d.DEFAULT_LOCK_TTL_MS),
    parse: (text, option) => parseDuration(text, option, { positive: true }),
  },
  lockWait: {
    name: "lock-wait",
    kind: "value",
    arg: "DUR|forever",
    commands: ["start", "run", "restart"],
    help: "wait this long for a lock held elsewhere (default 0: fail at once, exit 3); with " +
      "--supervise, a lost lock is waited for again",
    parse: (text, option) => text === "forever" ? "forever" : parseDuration(text, option),
  },
  lockTimeout: {
    name: "lock-timeout",
    kind: "value",
    arg: "DUR",
    commands: ["start", "run", "restart", "status"],
    help: "bound on every connect and request to the cluster",
    shown: (d) => formatDuration(d.DEFAULT_LOCK_TIMEOUT_MS),
    parse: (text, option) => parseDuration(text, option, { positive: true }),
  },
  lockCacert: {
    name: "lock-cacert",
    kind: "value",
    arg: "FILE",
    commands: ["start", "run", "restart", "status"],
    help: "CA certificate for etcds://",
    parse: parsePath,
  },
  lockCert: {
    name: "lock-cert",
    kind: "value",
    arg: "FILE",
    commands: ["start", "run", "restart", "status"],
    help: "client certificate for etcds://",
    parse: parsePath,
  },
  lockKey: {
    name: "lock-key",
    kind: "value",
    arg: "FILE",
    commands: ["start", "run", "restart", "status"],
    help: "client key for etcds://",
    parse: parsePath,
  },
  lockPasswordFile: {
    name: "lock-password-file",
    kind: "value",
    arg: "FILE",
    commands: ["start", "run", "restart", "status"],
    help: "the PostgreSQL lock's password: FILE's first line; FILE is yours or root's (with " +
      "--user, that user's), mode 0600. Else PGPASSWORD; never in the URL, which every user " +
      "can read",
    parse: parsePath,
  },
  oknodo: {
    name: "oknodo",
    kind: "switch",
    commands: ["start", "stop"],
    help: (cmd) =>
      cmd === "start"
        ? "exit 0 (and print its pid) when already running"
        : "exit 0 when not running",
  },
  force: {
    name: "force",
    kind: "switch",
    commands: ["reload"],
    help: "send SIGHUP even when the program neither catches, ignores nor blocks it " +
      "(SIGHUP would then end it)",
  },
  conflictExitCode: {
    name: "conflict-exit-code",
    kind: "value",
    arg: "N",
    commands: ["run"],
    help: "exit N instead of 3 when COMMAND does not run for a conflict: already running " +
      "(here, or on another host with --lock), a --wait that ran out, a later --replace, a " +
      "--once-per slot already done",
    parse: (text, option) => parseInteger(text, option, { min: 0, max: 255 }),
  },
  wait: {
    name: "wait",
    kind: "value",
    arg: "DUR|forever",
    commands: ["run"],
    help: "when already running, wait up to DUR for it to end, then run (flock -w); still " +
      "running by then: exit 3. Waiters hold no guard while they wait and run one at a time, " +
      "in the order they came",
    parse: (text, option) =>
      text === "forever" ? "forever" : parseDuration(text, option, { positive: true }),
  },
  replace: {
    name: "replace",
    kind: "switch",
    commands: ["run"],
    help: "when already running, stop it by --stop-schedule (its process group with " +
      "--kill-group), wait until its lock is free, then run; of several at once, the last " +
      "to take the guard runs and the others exit 3 without running",
  },
  maxRuntime: {
    name: "max-runtime",
    kind: "value",
    arg: "DUR",
    commands: ["run"],
    help: "stop COMMAND by --stop-schedule (its process group with --kill-group) once it " +
      "has run this long, and exit 124 (timeout's code); else its own status. The pid file " +
      "names COMMAND; a /bin/sh stays as its parent to keep the time",
    parse: (text, option) => parseDuration(text, option, { positive: true }),
  },
  oncePer: {
    name: "once-per",
    kind: "value",
    arg: "DUR",
    commands: ["run"],
    help: "with --lock: COMMAND's success is recorded at most once per slot of DUR across " +
      "every host (the multiple of DUR nearest the run's start); a run whose slot is done " +
      "exits 3 without running COMMAND, which gets the slot as SINGLETON_RUN_SLOT",
    parse: (text, option) => parseDuration(text, option, { positive: true }),
  },
  json: {
    name: "json",
    kind: "switch",
    commands: ["status", "list"],
    help: (cmd) =>
      cmd === "list"
        ? "print a JSON array of the objects status --json prints, each with its name"
        : "print one JSON object: state, pid, pidfile, code, and for a running daemon " +
          "startTime, uptimeSeconds, rssKiB, fds, cmdline",
  },
  guard: {
    name: "guard",
    kind: "value",
    arg: "FILE",
    commands: GUARDED,
    help: "the guard lock file (default: PIDFILE.lock)",
    parse: parsePath,
  },
  guardTimeout: {
    name: "guard-timeout",
    kind: "value",
    arg: "DUR",
    commands: GUARDED,
    help: "how long to wait for another start/stop",
    shown: (d) => formatDuration(d.DEFAULT_GUARD_TIMEOUT_MS),
    parse: (text, option) => parseDuration(text, option),
  },
  supervise: {
    name: "supervise",
    kind: "switch",
    commands: LAUNCH,
    help: "a supervisor becomes the daemon (it holds the pid file) and restarts COMMAND " +
      "when it exits; the options below go with it. With --supervise, --notify-fd, " +
      "--notify-socket and --ready-after are COMMAND's readiness, awaited after every " +
      "restart; start returns once the first is ready",
  },
  restart: {
    name: "restart",
    kind: "value",
    arg: "POLICY",
    commands: LAUNCH,
    needs: "supervise",
    help: "on-failure, always or never",
    shown: (d) => d.DEFAULT_RESTART_POLICY,
    parse: parseRestartPolicy,
  },
  restartDelay: {
    name: "restart-delay",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "first restart delay, doubling",
    shown: (d) => formatDuration(d.DEFAULT_RESTART_DELAY_MS),
    parse: (text, option) => parseDuration(text, option),
  },
  restartDelayMax: {
    name: "restart-delay-max",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "the longest delay",
    shown: (d) => formatDuration(d.DEFAULT_RESTART_DELAY_MAX_MS),
    parse: (text, option) => parseDuration(text, option),
  },
  minUptime: {
    name: "min-uptime",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "a run this long resets the delay",
    shown: (d) => formatDuration(d.DEFAULT_MIN_UPTIME_MS),
    parse: (text, option) => parseDuration(text, option),
  },
  maxRestarts: {
    name: "max-restarts",
    kind: "value",
    arg: "N",
    commands: LAUNCH,
    needs: "supervise",
    help: "give up (exit 1, lock freed) after N restarts within --restart-window " +
      "(0: never give up)",
    shown: (d) => String(d.DEFAULT_MAX_RESTARTS),
    parse: (text, option) => parseInteger(text, option, { min: 0, max: 1_000_000 }),
  },
  restartWindow: {
    name: "restart-window",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "the window --max-restarts counts in",
    shown: (d) => formatDuration(d.DEFAULT_RESTART_WINDOW_MS),
    parse: (text, option) => parseDuration(text, option),
  },
  killGroup: {
    name: "kill-group",
    kind: "switch",
    commands: LAUNCH,
    needs: "supervise",
    help: (cmd) =>
      "signal COMMAND's whole process group (its workers too)" +
      (cmd === "run" ? "; without --supervise, with --replace or --max-runtime" : ""),
  },
  stopSchedule: {
    name: "stop-schedule",
    kind: "value",
    arg: "SCHED",
    commands: LAUNCH,
    needs: "supervise",
    help: (cmd) =>
      "how the supervisor (or the keeper, with --keeper or --lock" +
      (cmd === "run" ? "; or the time limit, --max-runtime; or --replace, the running copy" : "") +
      ") stops COMMAND (--retry's syntax); its first wait is the time a fenced COMMAND gets " +
      "before SIGKILL",
    shown: (d) => d.DEFAULT_CHILD_STOP_SCHEDULE,
    parse: parseStopSchedule,
  },
  name: {
    name: "name",
    kind: "value",
    arg: "NAME",
    commands: [...GUARDED, "status"],
    help: (cmd) =>
      LAUNCH.includes(cmd)
        ? "without --pidfile: the service's name, which selects the pid file DIR/NAME.pid " +
          "(DIR: $SINGLETON_RUN_DIR, /run/singleton-run for root, " +
          "$XDG_RUNTIME_DIR/singleton-run, else /tmp/singleton-run-UID; made when missing); " +
          "with --supervise, also the syslog ident and log name (default COMMAND's basename; " +
          "with --pidfile, only that)"
        : "the service's name: the pid file DIR/NAME.pid (as the NAME operand)",
    parse: parseName,
  },
  quiet: {
    name: "quiet",
    kind: "switch",
    commands: COMMANDS,
    help: "no message on stderr but errors (exit 1 and 2): nothing for an outcome of exit 3 " +
      "(already running, not running) or a note; stdout is unchanged",
  },
  healthCmd: {
    name: "health-cmd",
    kind: "value",
    arg: "CMD",
    commands: LAUNCH,
    needs: "supervise",
    help: "health check: CMD run by /bin/sh -c as COMMAND runs (its directory, user and " +
      "environment, plus SINGLETON_RUN_PID), healthy on exit 0. An unhealthy COMMAND is " +
      "stopped by --stop-schedule and restarted (each such restart counts toward --max-restarts)",
    parse: parseHealthCommand,
  },
  healthHttp: {
    name: "health-http",
    kind: "value",
    arg: "URL",
    commands: LAUNCH,
    needs: "supervise",
    help: "health check: an http:// or https:// GET, healthy on a 2xx or 3xx answer " +
      "(needs Deno's --allow-net)",
    parse: parseHealthUrl,
  },
  healthTcp: {
    name: "health-tcp",
    kind: "value",
    arg: "HOST:PORT",
    commands: LAUNCH,
    needs: "supervise",
    help: "health check: healthy when a TCP connection opens (a stopped program whose " +
      "accept queue has room still passes: the kernel answers; needs Deno's --allow-net)",
    parse: parseHostPort,
  },
  healthInterval: {
    name: "health-interval",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "from readiness to the first check, and from each check's end to the next",
    shown: (d) => formatDuration(d.DEFAULT_HEALTH_INTERVAL_MS),
    parse: parsePositiveDuration,
  },
  healthTimeout: {
    name: "health-timeout",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "a check that takes longer failed, and everything it started is killed",
    shown: (d) => formatDuration(d.DEFAULT_HEALTH_TIMEOUT_MS),
    parse: parsePositiveDuration,
  },
  healthRetries: {
    name: "health-retries",
    kind: "value",
    arg: "N",
    commands: LAUNCH,
    needs: "supervise",
    help: "failed checks in a row that make COMMAND unhealthy",
    shown: (d) => String(d.DEFAULT_HEALTH_RETRIES),
    parse: (text, option) => parseInteger(text, option, { min: 1, max: 1_000_000 }),
  },
  healthStartPeriod: {
    name: "health-start-period",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "from readiness: failed checks in this time do not count (it ends at the first success)",
    shown: (d) => formatDuration(d.DEFAULT_HEALTH_START_PERIOD_MS),
    parse: parseDuration,
  },
  watchdog: {
    name: "watchdog",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "with --notify-socket: COMMAND gets WATCHDOG_USEC and must send WATCHDOG=1 at least " +
      "every DUR; a missed one (or WATCHDOG=trigger) is handled as unhealthy",
    parse: parsePositiveDuration,
  },
};

/** The table's entries, each with the key its value is stored under. */
export const OPTION_LIST: ReadonlyArray<[keyof Values, AnyOption]> = Object.entries(
  OPTIONS,
) as [keyof Values, AnyOption][];

/**
 * The options a command takes, by name.
 *
 * @param cmd the command
 * @returns name (without `--`) to its key and spec
 */
export function optionsOf(cmd: Command): Map<string, [keyof Values, AnyOption]> {
  return new Map(
    OPTION_LIST.filter(([, spec]) => spec.commands.includes(cmd)).map((e) => [e[1].name, e]),
  );
}
