/**
 * The command line, read through the option table: each value parsed and
 * bounded as it is met, then the checks between options, so every usage
 * error is found before anything is created.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { parseSignalArgument, quote } from "../control/values.ts";
import { type Command, optionsOf, type Values } from "./options.ts";

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
    env: [],
    notifySocket: false,
    oknodo: false,
    json: false,
    supervise: false,
    killGroup: false,
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
      if (entry === undefined) throw new UsageError(`unknown option for ${cmd}: --${name}`);
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
      throw new UsageError(`unknown option for ${cmd}: ${arg}`);
    }
    positionals.push(arg);
  }
  const invocation = { cmd, values, positionals, command, help };
  if (help) return invocation;
  check(invocation, table, given);
  if (cmd === "signal") return { ...invocation, signal: parseSignalArgument(positionals[0]!) };
  return invocation;
}

/** The checks between options and arguments, in the order a user meets them. */
function check(
  inv: Invocation,
  table: ReturnType<typeof optionsOf>,
  given: ReadonlyMap<string, string>,
): void {
  const { cmd, values: v } = inv;
  if (v.pidfile === undefined || v.pidfile === "") throw new UsageError("missing --pidfile PATH");
  const wantsCommand = cmd === "start" || cmd === "run" || cmd === "restart";
  if (wantsCommand) {
    if (inv.positionals.length > 0) {
      throw new UsageError(
        `unexpected argument ${quote(inv.positionals[0]!)} (put COMMAND after --)`,
      );
    }
    if (inv.command === undefined) throw new UsageError("missing -- COMMAND");
    if (inv.command.length === 0) throw new UsageError("missing COMMAND after --");
  } else {
    if (inv.command !== undefined) throw new UsageError(`${cmd} takes no COMMAND`);
    const allowed = cmd === "signal" ? 1 : 0;
    if (inv.positionals.length > allowed) {
      throw new UsageError(`unexpected argument ${quote(inv.positionals[allowed]!)}`);
    }
    if (cmd === "signal" && inv.positionals.length === 0) throw new UsageError("missing SIGNAL");
  }
  if (!v.supervise) {
    const store = v as unknown as Record<string, unknown>;
    for (const [name, [key, spec]] of table) {
      const set = spec.kind === "switch" ? store[key] === true : given.has(name);
      if (spec.needs === "supervise" && set) throw new UsageError(`--${name} needs --supervise`);
    }
    for (const [name, [key, spec]] of table) {
      const set = spec.kind === "switch" ? store[key] === true : given.has(name);
      if (spec.supervisedIn?.includes(cmd) && set) {
        throw new UsageError(`--${name} with ${cmd} needs --supervise`);
      }
    }
    if (v.output?.kind === "syslog") {
      throw new UsageError(
        `--output ${
          quote(given.get("output")!)
        } needs --supervise (without it, output goes to a file)`,
      );
    }
  }
  if (v.notifyFd !== undefined && v.notifySocket) {
    throw new UsageError("--notify-fd and --notify-socket exclude each other");
  }
  if (cmd === "run" && v.supervise && v.user !== undefined) {
    throw new UsageError("--user with run --supervise is not supported (start --supervise is)");
  }
  samePaths(v);
}

/** Two of the files singleton-run keeps beside each other must not be one file. */
function samePaths(v: Values): void {
  const pidfile = absolute(v.pidfile!);
  const guard = v.guard === undefined ? `${pidfile}.lock` : absolute(v.guard);
  if (guard === pidfile) throw new UsageError(`--guard ${quote(v.guard!)} is the pid file`);
  if (v.output?.kind === "file") {
    const output = absolute(v.output.path);
    if (output === pidfile) {
      throw new UsageError(`--output ${quote(v.output.path)} is the pid file`);
    }
    if (output === guard) {
      throw new UsageError(`--output ${quote(v.output.path)} is the guard file`);
    }
  }
}

/** A path made absolute and normalized (`.`, `..`, repeated slashes), without touching the file system. */
function absolute(path: string): string {
  const full = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts: string[] = [];
  for (const part of full.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}
