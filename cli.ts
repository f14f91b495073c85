/**
 * The `singleton-run` command: parses arguments, calls the library, prints,
 * and exits with the documented code. No system calls of its own.
 *
 * ```
 * singleton-run start   --pidfile PATH [options] -- COMMAND [ARG...]
 * singleton-run run     --pidfile PATH [options] -- COMMAND [ARG...]
 * singleton-run stop    --pidfile PATH [--retry SCHEDULE] [--oknodo]
 * singleton-run status  --pidfile PATH [--json]
 * singleton-run restart --pidfile PATH [options] -- COMMAND [ARG...]
 * singleton-run reload  --pidfile PATH
 * singleton-run signal  --pidfile PATH SIGNAL
 * singleton-run --help | --version | help COMMAND
 * ```
 *
 * Exit codes: 0 done; 1 failed; 2 usage error; 3 nothing to do (already
 * running, or not running). `status` uses the LSB codes 0, 1, 3, 4.
 *
 * @module
 */

import { quote, SystemError } from "./src/ffi/errors.ts";
import { parseSignal } from "./src/ffi/signals.ts";
import { AlreadyRunningError } from "./src/lock/pidfile.ts";
import { INTERNAL_FLAG } from "./src/launch/internal.ts";

/** The version `--version` prints. */
export const VERSION = "0.1.0";

const NAME = "singleton-run";

/** Exit codes of the command. */
export const EXIT = {
  /** Done. */
  OK: 0,
  /** Failed when acted on: paths, permissions, programs, timeouts. */
  FAILED: 1,
  /** The command line itself is wrong. */
  USAGE: 2,
  /** Nothing to do: already running, or not running. */
  NOTHING_TO_DO: 3,
} as const;

class Usage extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Usage";
  }
}

// ---------------------------------------------------------------- help

const COMMANDS = ["start", "run", "stop", "status", "restart", "reload", "signal"] as const;
type Command = typeof COMMANDS[number];

const GUARD_HELP = `  --guard FILE           the guard lock file (default: PIDFILE.lock)
  --guard-timeout SECS   how long to wait for another start/stop (default 30)`;

const LAUNCH_HELP = `  --chdir DIR            working directory (start: default /; run: unchanged)
  --umask OCTAL          umask (start: default 022; run: unchanged)
  --env KEY=VALUE        add to the environment (repeatable)
  --user USER[:GROUP]    run as that user with its groups (root only)`;

const START_HELP = `  --output FILE          append stdout and stderr to FILE (default /dev/null)
  --ready-timeout SECS   bound on every wait for readiness (default 60)
  --ready-after MS       without a notify option: ready when still alive MS
                         milliseconds after the exec (default 20)
  --notify-fd N          ready when the daemon writes a newline to fd N (s6);
                         NOTIFY_FD=N is set in its environment
  --notify-socket        ready when the daemon sends READY=1 to NOTIFY_SOCKET
                         (sd_notify; STATUS=, MAINPID=, EXTEND_TIMEOUT_USEC=,
                         ERRNO= are understood)`;

// supervise mode (issue 5)
const SUPERVISE_HELP =
  `  --supervise            a supervisor becomes the daemon (it holds the pid file)
                         and restarts COMMAND when it exits; these go with it:
  --restart POLICY       on-failure (default), always, never
  --restart-delay DUR    first restart delay, doubling (default 1s; 500ms, 2m...)
  --restart-delay-max DUR  the longest delay (default 60s)
  --min-uptime DUR       a run this long resets the delay (default 10s)
  --max-restarts N       give up (exit 1, lock freed) after N restarts within
  --restart-window DUR   this window (defaults 5 and 60s; 0 restarts: never)
  --kill-group           signal COMMAND's whole process group (its workers too)
  --stop-schedule SCHED  how the supervisor stops COMMAND (default TERM/5/KILL/2)
  --name NAME            syslog ident and log name (default COMMAND's basename)
  --output syslog[:FACILITY]  COMMAND's stdout to syslog at info, stderr at err,
                         with COMMAND's pid (default facility daemon); or
  --output FILE          appended line by line, reopened on SIGHUP/SIGUSR1
  With --supervise, --notify-fd/--notify-socket/--ready-after are COMMAND's
  readiness, awaited after every restart; start returns once the first is ready.`;

const HELP: Record<Command | "main", string> = {
  main: `${NAME} ${VERSION}: run exactly one instance of a program, its pid file
kept flock-locked for its whole life, with race-free start and stop.

Usage:
  ${NAME} start   --pidfile PATH [options] -- COMMAND [ARG...]
  ${NAME} run     --pidfile PATH [options] -- COMMAND [ARG...]
  ${NAME} stop    --pidfile PATH [--retry SCHEDULE] [--oknodo]
  ${NAME} status  --pidfile PATH [--json]
  ${NAME} restart --pidfile PATH [options] -- COMMAND [ARG...]
  ${NAME} reload  --pidfile PATH
  ${NAME} signal  --pidfile PATH SIGNAL
  ${NAME} --help | --version | help COMMAND

Commands:
  start    start COMMAND as a daemon; print its pid once it is ready
  run      take the lock and exec COMMAND in the foreground (same pid)
  stop     signal the daemon through a pidfd and wait until it is gone
  status   LSB status: 0 running, 1 stale pid file, 3 not running, 4 unknown
  restart  stop, then start, under one guard lock; print the new pid
  reload   send SIGHUP
  signal   send any signal (name or number)

Exit codes: 0 done, 1 failed, 2 usage error, 3 nothing to do (already
running for start/restart/run, not running for stop/reload/signal).
Messages go to stderr; stdout carries only data (a pid, JSON).

Run '${NAME} help COMMAND' for a command's options.`,
  start: `Usage: ${NAME} start --pidfile PATH [options] -- COMMAND [ARG...]

Start COMMAND as a daemon: new session, cwd /, umask 022, stdin from
/dev/null, stdout and stderr to /dev/null or --output, no other inherited
descriptor but the pid file lock (fd 3; fd 4 when --notify-fd is 3).
Prints the daemon's pid once it is ready. Exit 3 if already running.

Options:
  --pidfile PATH         the pid file (required)
${LAUNCH_HELP}
${START_HELP}
  --oknodo               exit 0 (and print its pid) when already running
${GUARD_HELP}
${SUPERVISE_HELP}`,
  run: `Usage: ${NAME} run --pidfile PATH [options] -- COMMAND [ARG...]

Take the pid file lock, then exec COMMAND in the foreground: it keeps this
pid and the lock, and its exit status is ${NAME}'s. For systemd,
containers, cron and deno task scripts.

Options:
  --pidfile PATH         the pid file (required)
${LAUNCH_HELP}
  --conflict-exit-code N exit N instead of 3 when already running
${GUARD_HELP}
${SUPERVISE_HELP}`,
  stop: `Usage: ${NAME} stop --pidfile PATH [--retry SCHEDULE] [--oknodo]

Signal the daemon through a pidfd (after re-checking that it holds the
lock, so a recycled pid is never signalled) and wait for the lock to be
released. A stale pid file is never signalled; it is emptied. After a stop
the pid file is left empty. Exit 3 if not running; exit 1 if it still runs
after the schedule.

Options:
  --pidfile PATH         the pid file (required)
  --retry SCHEDULE       start-stop-daemon syntax: SIGNAL/SECS/SIGNAL/SECS...,
                         a bare number N for TERM/N/KILL/N, 'forever' to
                         repeat what follows it (default TERM/10/KILL/5)
  --oknodo               exit 0 when not running
${GUARD_HELP}`,
  status: `Usage: ${NAME} status --pidfile PATH [--json]

Report the daemon's state without waiting for anything. Exit codes (LSB):
0 running, 1 not running but the pid file names a pid (stale), 3 not
running, 4 cannot tell (e.g. no permission).

Options:
  --pidfile PATH         the pid file (required)
  --json                 print one JSON object: state, pid, pidfile, code, and
                         for a running daemon startTime, uptimeSeconds,
                         rssKiB, fds, cmdline`,
  restart: `Usage: ${NAME} restart --pidfile PATH [options] -- COMMAND [ARG...]

Stop the daemon if it runs, then start COMMAND, under one hold of the guard
lock. Prints the new pid. Takes start's options and stop's --retry.

Options:
  --pidfile PATH         the pid file (required)
  --retry SCHEDULE       the stop schedule (default TERM/10/KILL/5)
${LAUNCH_HELP}
${START_HELP}
${GUARD_HELP}
${SUPERVISE_HELP}`,
  reload: `Usage: ${NAME} reload --pidfile PATH

Send SIGHUP to the daemon (re-read its configuration). Exit 3 if not running.

Options:
  --pidfile PATH         the pid file (required)
${GUARD_HELP}`,
  signal: `Usage: ${NAME} signal --pidfile PATH SIGNAL

Send SIGNAL (TERM, SIGTERM, 15, ...) to the daemon. Exit 3 if not running.

Options:
  --pidfile PATH         the pid file (required)
${GUARD_HELP}`,
};

// ---------------------------------------------------------------- parsing

type Flag = "value" | "switch" | "multi";

const GUARD_FLAGS: Record<string, Flag> = {
  pidfile: "value",
  guard: "value",
  "guard-timeout": "value",
};
const LAUNCH_FLAGS: Record<string, Flag> = {
  chdir: "value",
  umask: "value",
  env: "multi",
  user: "value",
};
const START_FLAGS: Record<string, Flag> = {
  output: "value",
  "ready-timeout": "value",
  "ready-after": "value",
  "notify-fd": "value",
  "notify-socket": "switch",
};

// supervise mode (issue 5)
const SUPERVISE_FLAGS: Record<string, Flag> = {
  supervise: "switch",
  restart: "value",
  "restart-delay": "value",
  "restart-delay-max": "value",
  "min-uptime": "value",
  "max-restarts": "value",
  "restart-window": "value",
  "kill-group": "switch",
  "stop-schedule": "value",
  name: "value",
};

const FLAGS: Record<Command, Record<string, Flag>> = {
  start: { ...GUARD_FLAGS, ...LAUNCH_FLAGS, ...START_FLAGS, oknodo: "switch", ...SUPERVISE_FLAGS },
  run: {
    ...GUARD_FLAGS,
    ...LAUNCH_FLAGS,
    "conflict-exit-code": "value",
    ...SUPERVISE_FLAGS,
    ...START_FLAGS,
  },
  stop: { ...GUARD_FLAGS, retry: "value", oknodo: "switch" },
  status: { pidfile: "value", json: "switch" },
  restart: { ...GUARD_FLAGS, ...LAUNCH_FLAGS, ...START_FLAGS, retry: "value", ...SUPERVISE_FLAGS },
  reload: { ...GUARD_FLAGS },
  signal: { ...GUARD_FLAGS },
};

interface Parsed {
  readonly values: Record<string, string | undefined>;
  readonly multi: Record<string, string[]>;
  readonly switches: Set<string>;
  readonly positionals: string[];
  readonly command: string[] | undefined;
  readonly help: boolean;
}

function parse(cmd: Command, args: readonly string[]): Parsed {
  const flags = FLAGS[cmd];
  const values: Record<string, string | undefined> = {};
  const multi: Record<string, string[]> = {};
  const switches = new Set<string>();
  const positionals: string[] = [];
  let command: string[] | undefined;
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      command = args.slice(i + 1);
      break;
    }
    if (arg === "-h" || arg === "--help") {
      help = true;
      continue;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const kind = flags[name];
      if (kind === undefined) {
        throw new Usage(`unknown option for ${cmd}: --${name}`);
      }
      if (kind === "switch") {
        if (eq >= 0) throw new Usage(`option --${name} takes no value`);
        switches.add(name);
        continue;
      }
      let value: string;
      if (eq >= 0) value = arg.slice(eq + 1);
      else {
        const next = args[i + 1];
        if (next === undefined || next === "--") throw new Usage(`option --${name} needs a value`);
        value = next;
        i++;
      }
      if (kind === "multi") (multi[name] ??= []).push(value);
      else if (values[name] !== undefined && values[name] !== value) {
        throw new Usage(`option --${name} given twice`);
      } else values[name] = value;
      continue;
    }
    if (arg.startsWith("-") && arg !== "-" && !/^-[0-9]+$/.test(arg)) {
      throw new Usage(`unknown option for ${cmd}: ${arg}`);
    }
    positionals.push(arg);
  }
  return { values, multi, switches, positionals, command, help };
}

function number(name: string, text: string | undefined, opts: {
  min?: number;
  max?: number;
  integer?: boolean;
}): number | undefined {
  if (text === undefined) return undefined;
  const ok = opts.integer ? /^[0-9]+$/.test(text) : /^[0-9]+(\.[0-9]+)?$/.test(text);
  const n = Number(text);
  if (!ok || (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max)) {
    const range = opts.max !== undefined ? ` from ${opts.min ?? 0} to ${opts.max}` : "";
    const what = opts.integer ? "a whole number" : "a number";
    throw new Usage(`bad --${name} ${quote(text)}: expected ${what}${range}`);
  }
  return n;
}

function parseEnv(entries: readonly string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of entries ?? []) {
    const eq = e.indexOf("=");
    if (eq <= 0) throw new Usage(`bad --env ${quote(e)}: expected KEY=VALUE`);
    env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  return env;
}

// ---------------------------------------------------------------- output

const encoder = new TextEncoder();

function out(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/** Control characters in a message (a path or name holding a newline) shown escaped, so a message stays one line. */
function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => {
    const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
    return named[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}

function err(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(oneLine(line) + "\n"));
  } catch {
    // stderr closed: nothing to do.
  }
}

// ---------------------------------------------------------------- main

/**
 * Run the command with these arguments.
 *
 * @param args the arguments, without the program name
 * @returns the exit code (`run` does not return when it execs)
 */
export async function main(args: readonly string[]): Promise<number> {
  const first = args[0];
  if (first === INTERNAL_FLAG) {
    // An internal stage: this program started again by itself (see src/launch/internal.ts).
    const role: string | undefined = args[1];
    if (role === "privilege") {
      const { runStage } = await import("./src/launch/privilege.ts");
      return runStage(args.slice(2));
    }
    if (role === "supervisor") {
      const { superviseStage } = await import("./src/supervisor/stage.ts");
      return superviseStage(args.slice(2));
    }
    err(`${NAME}: unknown internal stage ${quote(String(role))}`);
    return 2;
  }
  try {
    if (first === undefined) throw new Usage("missing command");
    if (first === "--help" || first === "-h") {
      out(HELP.main);
      return EXIT.OK;
    }
    if (first === "--version" || first === "-V") {
      out(`${NAME} ${VERSION}`);
      return EXIT.OK;
    }
    if (first === "help") {
      const topic = args[1];
      if (topic === undefined) {
        out(HELP.main);
        return EXIT.OK;
      }
      if (!isCommand(topic)) throw new Usage(`no help for unknown command ${quote(topic)}`);
      out(HELP[topic]);
      return EXIT.OK;
    }
    if (!isCommand(first)) {
      throw new Usage(
        first.startsWith("-") ? `unknown option: ${first}` : `unknown command ${quote(first)}`,
      );
    }
    const parsed = parse(first, args.slice(1));
    if (parsed.help) {
      out(HELP[first]);
      return EXIT.OK;
    }
    return await dispatch(first, parsed);
  } catch (e) {
    return report(e, first);
  }
}

function isCommand(s: string): s is Command {
  return (COMMANDS as readonly string[]).includes(s);
}

async function dispatch(cmd: Command, p: Parsed): Promise<number> {
  const pidfile = p.values.pidfile;
  if (pidfile === undefined || pidfile === "") throw new Usage("missing --pidfile PATH");
  const wantsCommand = cmd === "start" || cmd === "run" || cmd === "restart";
  if (wantsCommand) {
    if (p.positionals.length > 0) {
      throw new Usage(`unexpected argument ${quote(p.positionals[0]!)} (put COMMAND after --)`);
    }
    if (p.command === undefined) throw new Usage("missing -- COMMAND");
    if (p.command.length === 0) throw new Usage("missing COMMAND after --");
  } else {
    if (p.command !== undefined) throw new Usage(`${cmd} takes no COMMAND`);
    const allowed = cmd === "signal" ? 1 : 0;
    if (p.positionals.length > allowed) {
      throw new Usage(`unexpected argument ${quote(p.positionals[allowed]!)}`);
    }
  }

  const control = await import("./src/control/control.ts");
  const guard = {
    pidfile,
    ...(p.values.guard === undefined ? {} : { guard: p.values.guard }),
    ...optional(
      "guardTimeout",
      secondsToMs(number("guard-timeout", p.values["guard-timeout"], {})),
    ),
    onWarning: (m: string) => err(`${NAME}: ${m}`),
  };
  const launch = () => ({
    command: p.command!,
    ...optional("chdir", p.values.chdir),
    ...optional(
      "umask",
      p.values.umask === undefined ? undefined : control.parseUmask(p.values.umask),
    ),
    env: parseEnv(p.multi.env),
    ...optional("user", p.values.user),
  });
  const startOpts = () => {
    const notifyFd = number("notify-fd", p.values["notify-fd"], {
      integer: true,
      min: 3,
      max: 1023,
    });
    if (notifyFd !== undefined && p.switches.has("notify-socket")) {
      throw new Usage("--notify-fd and --notify-socket exclude each other");
    }
    const readyTimeout = number("ready-timeout", p.values["ready-timeout"], {});
    if (readyTimeout === 0) throw new Usage(`bad --ready-timeout "0": must be more than 0`);
    if (supervise) {
      // supervise mode (issue 5): COMMAND's readiness and output belong to the supervisor.
      const output = p.values.output;
      const readyAfter = number("ready-after", p.values["ready-after"], {
        integer: true,
        max: 3_600_000,
      });
      const settings = {
        ...supervise,
        readiness: notifyFd !== undefined
          ? { kind: "fd" as const, fd: notifyFd }
          : p.switches.has("notify-socket")
          ? { kind: "socket" as const }
          : { kind: "alive" as const, afterMs: readyAfter ?? 100 },
        ...optional("readyTimeout", secondsToMs(readyTimeout)),
      };
      return {
        ...launch(),
        ...(output !== undefined && !/^syslog(:|$)/.test(output) ? { output } : {}),
        ...optional("readyTimeout", secondsToMs(readyTimeout)),
        supervise: settings,
      };
    }
    return {
      ...launch(),
      ...optional("output", p.values.output),
      ...optional("readyTimeout", secondsToMs(readyTimeout)),
      ...optional(
        "readyAfter",
        number("ready-after", p.values["ready-after"], { integer: true, max: 3_600_000 }),
      ),
      ...optional("notifyFd", notifyFd),
      ...(p.switches.has("notify-socket") ? { notifySocket: true } : {}),
    };
  };
  const supervise = await superviseSettings(cmd, p);
  const schedule = () =>
    p.values.retry === undefined ? {} : { schedule: control.parseSchedule(p.values.retry) };

  switch (cmd) {
    case "start": {
      const opts = { ...guard, ...startOpts(), signal: interruptions() };
      try {
        const r = await control.start(opts);
        if (r.status !== undefined) err(`${NAME}: ready: ${r.status}`);
        out(String(r.pid));
        return EXIT.OK;
      } catch (e) {
        if (e instanceof AlreadyRunningError && p.switches.has("oknodo")) {
          err(`${NAME}: ${e.message}`);
          if (e.pid !== undefined) out(String(e.pid));
          return EXIT.OK;
        }
        throw e;
      }
    }
    case "restart": {
      const opts = { ...guard, ...startOpts(), ...schedule(), signal: interruptions() };
      const r = await control.restart(opts);
      if (r.status !== undefined) err(`${NAME}: ready: ${r.status}`);
      out(String(r.pid));
      return EXIT.OK;
    }
    case "run": {
      const conflict = number("conflict-exit-code", p.values["conflict-exit-code"], {
        integer: true,
        max: 255,
      });
      if (!supervise) {
        for (const name of Object.keys(START_FLAGS)) {
          if (p.values[name] !== undefined || p.switches.has(name)) {
            throw new Usage(`--${name} with run needs --supervise`);
          }
        }
      }
      try {
        if (supervise) {
          const { supervise: settings } = startOpts() as { supervise: object };
          return await control.run({ ...guard, ...launch(), supervise: settings });
        }
        return await control.run({ ...guard, ...launch() });
      } catch (e) {
        if (e instanceof AlreadyRunningError) {
          err(`${NAME}: ${e.message}`);
          return conflict ?? EXIT.NOTHING_TO_DO;
        }
        throw e;
      }
    }
    case "stop": {
      const opts = { ...guard, ...schedule() };
      try {
        await control.stop(opts);
        return EXIT.OK;
      } catch (e) {
        if (e instanceof control.NotRunningError && p.switches.has("oknodo")) {
          err(`${NAME}: ${e.message}`);
          return EXIT.OK;
        }
        throw e;
      }
    }
    case "status": {
      const r = control.status(pidfile);
      if (p.switches.has("json")) out(JSON.stringify(r));
      else {
        const sv = r.supervisor; // supervise mode (issue 5)
        const text = r.state === "running"
          ? `running (pid ${r.pid ?? "unknown"}${
            r.uptimeSeconds === undefined ? "" : `, up ${formatUptime(r.uptimeSeconds)}`
          }${
            sv
              ? `; supervising ${
                sv.childPid === null ? `no child (${sv.phase})` : `pid ${sv.childPid}`
              }` +
                `, ${sv.restarts} restart(s)${sv.lastExit ? `, last: ${sv.lastExit}` : ""}`
              : ""
          }${holdersText(r)})`
          : r.state === "stale"
          ? `not running, but the pid file names pid ${r.pid} (stale)`
          : r.state === "stopped"
          ? "not running"
          : `cannot tell: ${r.error}`;
        err(`${NAME}: ${text}`);
      }
      return r.code;
    }
    case "reload":
      await control.reload(guard);
      return EXIT.OK;
    case "signal": {
      const text = p.positionals[0];
      if (text === undefined) throw new Usage("missing SIGNAL");
      const signal = parseSignal(text);
      if (signal === undefined) throw new Usage(`unknown signal ${quote(text)}`);
      await control.sendSignal({ ...guard, signal });
      return EXIT.OK;
    }
  }
}

/**
 * An AbortSignal fired by SIGINT, SIGTERM or SIGHUP, so an interrupted start
 * kills its half-started daemon instead of leaving it behind. Listening for
 * them also keeps the default action (dying at once) from skipping that.
 */
function interruptions(): AbortSignal {
  const controller = new AbortController();
  const codes = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => {
      controller.abort(sig);
      // Outside the readiness wait (the guard wait, restart's stop), go as the signal would.
      Deno.unrefTimer(setTimeout(() => Deno.exit(codes[sig]), 2000));
    });
  }
  return controller.signal;
}

/**
 * supervise mode (issue 5): the supervise options, checked here so a mistake is a usage
 * error (2) before anything starts; undefined without --supervise.
 */
async function superviseSettings(cmd: Command, p: Parsed) {
  const given = Object.keys(SUPERVISE_FLAGS).filter((n) =>
    n !== "supervise" && (p.values[n] !== undefined || p.switches.has(n))
  );
  if (!p.switches.has("supervise")) {
    if (given.length > 0) throw new Usage(`--${given[0]} needs --supervise`);
    return undefined;
  }
  if (cmd !== "start" && cmd !== "run" && cmd !== "restart") return undefined;
  const sv = await import("./src/supervisor/supervisor.ts");
  const duration = (name: string) => {
    const text = p.values[name];
    if (text === undefined) return undefined;
    try {
      return sv.parseDuration(text);
    } catch {
      throw new Usage(`bad --${name} ${quote(text)}: expected a duration such as 500ms, 2s, 1m`);
    }
  };
  const policy = p.values.restart;
  if (policy !== undefined && !["on-failure", "always", "never"].includes(policy)) {
    throw new Usage(`bad --restart ${quote(policy)}: expected on-failure, always or never`);
  }
  const stopSchedule = p.values["stop-schedule"];
  if (stopSchedule !== undefined) {
    try {
      sv.parseStopSchedule(stopSchedule);
    } catch (e) {
      throw new Usage((e as Error).message.replace("stop schedule", "--stop-schedule"));
    }
  }
  const output = p.values.output;
  if (output !== undefined && /^syslog(:|$)/.test(output)) {
    try {
      sv.parseOutput(output);
    } catch (e) {
      throw new Usage(`bad --output ${quote(output)}: ${(e as Error).message}`);
    }
  }
  return {
    ...optional("restart", policy as "on-failure" | "always" | "never" | undefined),
    ...optional("restartDelay", duration("restart-delay")),
    ...optional("restartDelayMax", duration("restart-delay-max")),
    ...optional("minUptime", duration("min-uptime")),
    ...optional("restartWindow", duration("restart-window")),
    ...optional("maxRestarts", number("max-restarts", p.values["max-restarts"], { integer: true })),
    ...(p.switches.has("kill-group") ? { killGroup: true } : {}),
    ...optional("stopSchedule", stopSchedule),
    ...optional("name", p.values.name),
    ...optional("output", output),
  };
}

function optional<K extends string, V>(key: K, value: V | undefined): { [k in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [k in K]?: V };
}

function secondsToMs(s: number | undefined): number | undefined {
  return s === undefined ? undefined : s * 1000;
}

/** For a lock held by another process than the one the pid file names: who and why. */
function holdersText(
  r: { holders?: readonly number[]; namedPid?: number | null; namedPidGone?: boolean },
): string {
  if (r.holders === undefined) return "";
  const named = r.namedPid === null || r.namedPid === undefined
    ? "the pid file names no pid"
    : `the pid file names pid ${r.namedPid}, which ${
      r.namedPidGone ? "is gone" : "does not hold its lock"
    }`;
  const all = r.holders.length > 1 ? `; held by pids ${r.holders.join(", ")}` : "";
  return `; ${named}${all}`;
}

function formatUptime(s: number): string {
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

async function report(e: unknown, cmd: string | undefined): Promise<number> {
  if (e instanceof Usage) {
    err(`${NAME}: ${e.message}`);
    err(`Try '${NAME} --help'.`);
    return EXIT.USAGE;
  }
  if (e instanceof Error && e.name === "UsageError") {
    err(`${NAME}: ${e.message}`);
    err(`Try '${NAME} --help'.`);
    return EXIT.USAGE;
  }
  if (e instanceof AlreadyRunningError) {
    err(`${NAME}: ${e.message}`);
    return EXIT.NOTHING_TO_DO;
  }
  const control = await import("./src/control/control.ts");
  if (e instanceof control.NotRunningError) {
    err(`${NAME}: ${e.message}`);
    return EXIT.NOTHING_TO_DO;
  }
  if (e instanceof control.StartFailedError) {
    err(`${NAME}: ${e.message}`);
    if (e.output !== undefined) {
      if (e.outputTail.length > 0) {
        err(`${NAME}: last lines of ${quote(e.output)}:`);
        for (const line of e.outputTail) err(`  ${line}`);
      } else err(`${NAME}: ${quote(e.output)} has no output`);
    }
    return EXIT.FAILED;
  }
  if (
    e instanceof SystemError || e instanceof control.StopFailedError ||
    e instanceof control.GuardTimeoutError || e instanceof control.InterruptedError
  ) {
    err(`${NAME}: ${e.message}`);
    return EXIT.FAILED;
  }
  if (e instanceof Deno.errors.NotCapable) {
    err(`${NAME}: ${e.message} (run with --allow-all, or use the compiled binary)`);
    return EXIT.FAILED;
  }
  if (e instanceof Error && /^cannot load /.test(e.message)) {
    err(`${NAME}: ${e.message}`);
    return EXIT.FAILED;
  }
  // A bug, not a user's mistake: keep the stack.
  err(`${NAME}: internal error${cmd ? ` in ${cmd}` : ""}: ${e instanceof Error ? e.stack : e}`);
  return EXIT.FAILED;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
