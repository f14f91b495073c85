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
  type OutputTarget,
  parseDuration,
  parseEnvEntry,
  parseInteger,
  parseName,
  parseOutput,
  parsePath,
  parseRestartPolicy,
  parseSeconds,
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
] as const;

/** A command. */
export type Command = typeof COMMANDS[number];

/** The control layer's module, where the help finds the defaults. */
export type Defaults = typeof import("../control/mod.ts");

/** Every option's value after parsing: absent when not given, switches false. */
export interface Values {
  pidfile?: string;
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
  conflictExitCode?: number;
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

/** Seconds for the help, from milliseconds. */
function seconds(ms: number): string {
  return String(ms / 1000);
}

/** A umask for the help: 022. */
export function octal(mask: number): string {
  return mask.toString(8).padStart(3, "0");
}

/** A duration for the help, from milliseconds: 500ms, 10s, 2m. */
function duration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** The table: every option of every command, in the order the help lists them. */
export const OPTIONS: { readonly [K in keyof Values]-?: OptionSpec<NonNullable<Values[K]>> } = {
  pidfile: {
    name: "pidfile",
    kind: "value",
    arg: "PATH",
    commands: [...GUARDED, "status"],
    help: "the pid file (required)",
    // An empty value reads as a missing one (see the parser's check).
    parse: (text) => text,
  },
  retry: {
    name: "retry",
    kind: "value",
    arg: "SCHEDULE",
    commands: ["stop", "restart"],
    help: "start-stop-daemon syntax: SIGNAL/SECS/SIGNAL/SECS..., a bare number N " +
      "for TERM/N/KILL/N, 'forever' to repeat what follows it",
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
    arg: "SECS",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "bound on every wait for readiness",
    shown: (d) => seconds(d.DEFAULT_READY_TIMEOUT_MS),
    parse: (text, option) => parseSeconds(text, option, { positive: true }),
  },
  readyAfter: {
    name: "ready-after",
    kind: "value",
    arg: "MS",
    commands: LAUNCH,
    supervisedIn: ["run"],
    help: "without a notify option: ready when still alive MS milliseconds after the exec",
    shown: (d) =>
      `${d.DEFAULT_READY_AFTER_MS}, or once it has listened and waited for connections ` +
      `for ${d.DEFAULT_READY_SERVING_MS}`,
    parse: (text, option) => parseInteger(text, option, { min: 0, max: 3_600_000 }),
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
    arg: "SECS",
    commands: ["start", "run", "restart"],
    help: "the lock's lease: the longest another host waits after this one vanishes",
    shown: (d) => seconds(d.DEFAULT_LOCK_TTL_MS),
    parse: (text, option) => parseSeconds(text, option, { positive: true }),
  },
  lockWait: {
    name: "lock-wait",
    kind: "value",
    arg: "SECS|forever",
    commands: ["start", "run", "restart"],
    help: "wait this long for a lock held elsewhere (default 0: fail at once, exit 3); with " +
      "--supervise, a lost lock is waited for again",
    parse: (text, option) => text === "forever" ? "forever" : parseSeconds(text, option),
  },
  lockTimeout: {
    name: "lock-timeout",
    kind: "value",
    arg: "SECS",
    commands: ["start", "run", "restart", "status"],
    help: "bound on every connect and request to the cluster",
    shown: (d) => seconds(d.DEFAULT_LOCK_TIMEOUT_MS),
    parse: (text, option) => parseSeconds(text, option, { positive: true }),
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
  conflictExitCode: {
    name: "conflict-exit-code",
    kind: "value",
    arg: "N",
    commands: ["run"],
    help: "exit N instead of 3 when already running",
    parse: (text, option) => parseInteger(text, option, { min: 0, max: 255 }),
  },
  json: {
    name: "json",
    kind: "switch",
    commands: ["status"],
    help: "print one JSON object: state, pid, pidfile, code, and for a running daemon " +
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
    arg: "SECS",
    commands: GUARDED,
    help: "how long to wait for another start/stop",
    shown: (d) => seconds(d.DEFAULT_GUARD_TIMEOUT_MS),
    parse: (text, option) => parseSeconds(text, option),
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
    help: "first restart delay, doubling (500ms, 2s, 2m...)",
    shown: (d) => duration(d.DEFAULT_RESTART_DELAY_MS),
    parse: parseDuration,
  },
  restartDelayMax: {
    name: "restart-delay-max",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "the longest delay",
    shown: (d) => duration(d.DEFAULT_RESTART_DELAY_MAX_MS),
    parse: parseDuration,
  },
  minUptime: {
    name: "min-uptime",
    kind: "value",
    arg: "DUR",
    commands: LAUNCH,
    needs: "supervise",
    help: "a run this long resets the delay",
    shown: (d) => duration(d.DEFAULT_MIN_UPTIME_MS),
    parse: parseDuration,
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
    shown: (d) => duration(d.DEFAULT_RESTART_WINDOW_MS),
    parse: parseDuration,
  },
  killGroup: {
    name: "kill-group",
    kind: "switch",
    commands: LAUNCH,
    needs: "supervise",
    help: "signal COMMAND's whole process group (its workers too)",
  },
  stopSchedule: {
    name: "stop-schedule",
    kind: "value",
    arg: "SCHED",
    commands: LAUNCH,
    needs: "supervise",
    help: "how the supervisor (or the keeper, with --keeper or --lock) stops COMMAND " +
      "(--retry's syntax); its first wait is the time a fenced COMMAND gets before SIGKILL",
    shown: (d) => d.DEFAULT_CHILD_STOP_SCHEDULE,
    parse: parseStopSchedule,
  },
  name: {
    name: "name",
    kind: "value",
    arg: "NAME",
    commands: LAUNCH,
    needs: "supervise",
    help: "syslog ident and log name (default COMMAND's basename)",
    parse: parseName,
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
