/**
 * The command line, read through the option table: each value parsed and
 * bounded as it is met, then the checks between options, so every usage
 * error is found before anything is created.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { normalPath, parseSignalArgument, quote } from "../control/values.ts";
import { checkServiceName, servicePidfile } from "../control/names.ts";
import { listWords } from "./help.ts";
import { type AnyOption, type Command, OPTION_LIST, optionsOf, type Values } from "./options.ts";

/** A parsed command line. */
export interface Invocation {
  /** The command. */
  readonly cmd: Command;
  /** The options' values. */
  readonly values: Values;
  /** Arguments before `--` that are not options (SIGNAL for `signal`). */
  readonly positionals: readonly string[];
  /** What follows `--` (COMMAND and its arguments), undefined without `--`. */
  readonly command: readonly string[] | undefined;
  /** `--help` or `-h` was given. */
  readonly help: boolean;
  /** For `signal`: the signal number (0 for the existence check). */
  readonly signal?: number;
}

/**
 * Read a command's arguments.
 *
 * @param cmd the command
 * @param args its arguments (after the command's name)
 * @returns the invocation
 * @throws {UsageError} for an unknown option, a missing or malformed value
 */
export function parseArgs(cmd: Command, args: readonly string[]): Invocation {
  const table = optionsOf(cmd);
  const values: Values = {
    pidfiles: [],
    env: [],
    notifySocket: false,
    oknodo: false,
    json: false,
    supervise: false,
    killGroup: false,
    keeper: false,
    force: false,
    quiet: false,
    replace: false,
  };
  const store = values as unknown as Record<string, unknown>;
  const given = new Map<string, string>();
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
      const entry = table.get(name);
      if (entry === undefined) throw unknownOption(cmd, `--${name}`, table);
      const [key, spec] = entry;
      if (spec.kind === "switch") {
        if (eq >= 0) throw new UsageError(`option --${name} takes no value`);
        store[key] = true;
        continue;
      }
      let text: string;
      if (eq >= 0) text = arg.slice(eq + 1);
      else {
        const next = args[i + 1];
        if (next === undefined || next === "--") {
          throw new UsageError(`option --${name} needs a value`);
        }
        text = next;
        i++;
      }
      if (spec.kind === "multi") {
        (store[key] as unknown[]).push(spec.parse(text, `--${name}`));
        continue;
      }
      const before = given.get(name);
      if (before !== undefined && before !== text) {
        throw new UsageError(`option --${name} given twice`);
      }
      given.set(name, text);
      store[key] = spec.parse(text, `--${name}`);
      continue;
    }
    if (arg.startsWith("-") && arg !== "-" && !/^-[0-9]+$/.test(arg)) {
      throw unknownOption(cmd, arg, table);
    }
    positionals.push(arg);
  }
  const parsed = { cmd, values, positionals, command, help };
  if (help) return parsed;
  const invocation = named(parsed);
  check(invocation, table, given);
  if (cmd === "signal") {
    return { ...invocation, signal: parseSignalArgument(invocation.positionals[0]!) };
  }
  return invocation;
}

/**
 * An unknown option, with the nearest one this command takes, or the
 * commands that take it when it belongs to others.
 */
function unknownOption(
  cmd: Command,
  arg: string,
  table: ReturnType<typeof optionsOf>,
): UsageError {
  const name = arg.replace(/^-+/, "").replace(/=.*$/, "");
  const elsewhere = OPTION_LIST.find(([, spec]) => spec.name === name)?.[1].commands;
  const near = nearest(name, [...table.keys(), "help"]);
  const hint = table.has(name)
    ? ` (did you mean --${name}?)`
    : elsewhere !== undefined
    ? ` (only ${listWords(elsewhere)} take${elsewhere.length === 1 ? "s" : ""} it)`
    : near === undefined
    ? ""
    : ` (did you mean --${near}?)`;
  return new UsageError(`unknown option for ${cmd}: ${arg}${hint}`);
}

/**
 * The candidate a mistyped word most likely meant: the one it begins
 * (`pid` for `pidfile`), or the closest by edits (a letter added, dropped,
 * changed, or two swapped) when that is at most 2 and under half its length.
 *
 * @param word what was typed
 * @param candidates the words it may have meant
 * @returns the likeliest candidate, or undefined when none is close
 */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  const prefixed = candidates.filter((c) => word.length >= 2 && c.startsWith(word));
  if (prefixed.length === 1) return prefixed[0];
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= 2 && bestDistance * 2 < word.length ? best : undefined;
}

/** Edits from one word to another: insertions, deletions, changes, swaps of two neighbours. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** The commands that take a service's NAME as their one operand (signal: NAME SIGNAL). */
const NAME_OPERAND: readonly Command[] = ["status", "stop", "restart", "reload", "reopen"];

/**
 * A service named instead of a pid file: by the NAME operand (signal's
 * first of two, when neither --pidfile nor --name is given) or by --name
 * without --pidfile, which selects DIR/NAME.pid. With --pidfile, --name is
 * only the supervisor's ident (start, run, restart), as it always was.
 */
function named(inv: Invocation): Invocation {
  const v = inv.values;
  let positionals = inv.positionals;
  const byOperand = inv.cmd === "signal"
    ? positionals.length >= 2 && v.pidfile === undefined && v.name === undefined
    : NAME_OPERAND.includes(inv.cmd) && positionals.length > 0;
  if (byOperand) {
    const operand = positionals[0]!;
    positionals = positionals.slice(1);
    if (v.pidfile !== undefined) {
      throw new UsageError(`a NAME (${quote(operand)}) and --pidfile exclude each other`);
    }
    if (v.name !== undefined && v.name !== operand) {
      throw new UsageError(`two names: ${quote(operand)} and --name ${quote(v.name)}`);
    }
    v.name = operand;
  }
  if (v.name === undefined) return { ...inv, positionals };
  if (v.pidfile === undefined) {
    v.pidfile = servicePidfile(checkServiceName(v.name));
  } else if (!LAUNCH_COMMANDS.includes(inv.cmd)) {
    throw new UsageError("--name and --pidfile exclude each other (--name selects DIR/NAME.pid)");
  } else if (!v.supervise) {
    throw new UsageError(
      "--name with --pidfile needs --supervise (without --pidfile, --name selects DIR/NAME.pid)",
    );
  }
  return { ...inv, positionals };
}

const LAUNCH_COMMANDS: readonly Command[] = ["start", "run", "restart"];

/** The checks between options and arguments, in the order a user meets them. */
function check(
  inv: Invocation,
  table: ReturnType<typeof optionsOf>,
  given: ReadonlyMap<string, string>,
): void {
  const v = inv.values;
  if (inv.cmd === "list") {
    checkArguments(inv);
    return;
  }
  const lockOnly = inv.cmd === "status" && v.lock !== undefined && v.pidfile === undefined;
  if (!lockOnly && (v.pidfile === undefined || v.pidfile === "")) {
    throw new UsageError(
      `missing --pidfile PATH${
        LAUNCH_COMMANDS.includes(inv.cmd) && inv.cmd !== "restart" ? " or --name NAME" : " or NAME"
      }`,
    );
  }
  if (v.lock === undefined) {
    const stray = [
      "lockTtl",
      "lockWait",
      "lockTimeout",
      "lockCacert",
      "lockCert",
      "lockKey",
      "lockPasswordFile",
      "oncePer",
    ]
      .find((k) => (v as unknown as Record<string, unknown>)[k] !== undefined);
    if (stray) {
      throw new UsageError(
        `--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} needs --lock`,
      );
    }
  }
  if (inv.cmd === "run" && v.lock !== undefined && v.user !== undefined) {
    throw new UsageError("--user with run --lock is not supported (start --lock is)");
  }
  checkArguments(inv);
  if (!v.supervise) checkWithoutSupervise(inv, table, given);
  if (v.notifyFd !== undefined && v.notifySocket) {
    throw new UsageError("--notify-fd and --notify-socket exclude each other");
  }
  checkHealth(v);
  if (v.keeper && v.supervise) {
    throw new UsageError(
      "--keeper and --supervise exclude each other (the supervisor holds the lock)",
    );
  }
  if (inv.cmd === "run" && v.supervise && v.user !== undefined) {
    throw new UsageError("--user with run --supervise is not supported (start --supervise is)");
  }
  if (inv.cmd === "run") checkRunPolicies(v);
  if (!lockOnly) samePaths(v);
}

/** A job's policies that exclude each other, or a supervised run (the library checks them too). */
function checkRunPolicies(v: Values): void {
  if (v.wait !== undefined && v.replace) {
    throw new UsageError(
      "--wait and --replace exclude each other (wait for the running copy, or stop it)",
    );
  }
  if (v.supervise && v.maxRuntime !== undefined) {
    throw new UsageError(
      "--max-runtime with --supervise is not supported (it limits one run of a job)",
    );
  }
  if (v.supervise && v.oncePer !== undefined) {
    throw new UsageError("--once-per with --supervise is not supported (it is for a job)");
  }
}

/**
 * COMMAND after `--` for start, run and restart (restart without it: the
 * recorded one); SIGNAL alone for signal (the NAME is taken by now); nothing
 * else.
 */
function checkArguments(inv: Invocation): void {
  const { cmd, positionals, command } = inv;
  if (cmd === "start" || cmd === "run" || cmd === "restart") {
    if (positionals.length > 0) {
      throw new UsageError(`unexpected argument ${quote(positionals[0]!)} (put COMMAND after --)`);
    }
    if (command === undefined && cmd !== "restart") throw new UsageError("missing -- COMMAND");
    if (command?.length === 0) throw new UsageError("missing COMMAND after --");
    return;
  }
  if (command !== undefined) throw new UsageError(`${cmd} takes no COMMAND`);
  const allowed = cmd === "signal" ? 1 : 0;
  if (positionals.length > allowed) {
    throw new UsageError(`unexpected argument ${quote(positionals[allowed]!)}`);
  }
  if (cmd === "signal" && positionals.length === 0) throw new UsageError("missing SIGNAL");
}

/** Options that only go with --supervise (in every command, or in this one). */
function checkWithoutSupervise(
  inv: Invocation,
  table: ReturnType<typeof optionsOf>,
  given: ReadonlyMap<string, string>,
): void {
  const store = inv.values as unknown as Record<string, unknown>;
  const set = ([name, [key, spec]]: [string, [string, AnyOption]]) =>
    spec.kind === "switch" ? store[key] === true : given.has(name);
  const entries = [...table];
  // A keeper stops COMMAND too (when it is stopped, or fences it): it takes the stop schedule.
  // So does a job's time limit, and a replace (the running copy, as a group with --kill-group).
  const v = inv.values;
  const kept = v.keeper || v.lock !== undefined;
  const job = v.replace || v.maxRuntime !== undefined;
  const allowed = (key: string) =>
    (key === "stopSchedule" && (kept || job)) || (key === "killGroup" && job);
  const always = entries.find((e) => e[1][1].needs === "supervise" && set(e) && !allowed(e[1][0]));
  if (always) throw new UsageError(`--${always[0]} needs --supervise`);
  const here = entries.find((e) => e[1][1].supervisedIn?.includes(inv.cmd) && set(e));
  if (here) throw new UsageError(`--${here[0]} with ${inv.cmd} needs --supervise`);
  if (inv.values.output?.kind === "syslog") {
    throw new UsageError(
      `--output ${
        quote(given.get("output")!)
      } needs --supervise (without it, output goes to a file)`,
    );
  }
}

/** One kind of health check; its timing only with one; the watchdog on the notify socket. */
function checkHealth(v: Values): void {
  const kinds = (["healthCmd", "healthHttp", "healthTcp"] as const).filter((k) =>
    v[k] !== undefined
  );
  if (kinds.length > 1) {
    throw new UsageError(`${kinds.map(flag).join(" and ")} exclude each other: give one check`);
  }
  if (kinds.length === 0) {
    const timing =
      (["healthInterval", "healthTimeout", "healthRetries", "healthStartPeriod"] as const)
        .find((k) => v[k] !== undefined);
    if (timing) {
      throw new UsageError(`${flag(timing)} needs --health-cmd, --health-http or --health-tcp`);
    }
  }
  if (v.watchdog !== undefined && !v.notifySocket) {
    throw new UsageError("--watchdog needs --notify-socket (WATCHDOG=1 comes through it)");
  }
}

/** An option's flag from its key: `healthCmd` is `--health-cmd`. */
function flag(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Two of the files singleton-run keeps beside each other must not be one file. */
function samePaths(v: Values): void {
  const pidfile = normalPath(v.pidfile!);
  const guard = v.guard === undefined ? `${pidfile}.lock` : normalPath(v.guard);
  if (guard === pidfile) throw new UsageError(`--guard ${quote(v.guard!)} is the pid file`);
  if (v.output?.kind === "file") {
    const output = normalPath(v.output.path);
    if (output === pidfile) {
      throw new UsageError(`--output ${quote(v.output.path)} is the pid file`);
    }
    if (output === guard) {
      throw new UsageError(`--output ${quote(v.output.path)} is the guard file`);
    }
  }
  if (v.daemonPidfile !== undefined) {
    const own = normalPath(v.daemonPidfile);
    if (own === pidfile || own === guard) {
      throw new UsageError(
        `--daemon-pidfile ${quote(v.daemonPidfile)} is ${
          own === pidfile ? "the pid file" : "the guard file"
        }: it names the program's own pid file, which singleton-run only reads`,
      );
    }
  }
}
