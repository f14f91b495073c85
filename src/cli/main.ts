/**
 * The `singleton-run` command: read the arguments through the option table,
 * load the one command's handler, print, and map errors to exit codes.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { quote } from "../control/values.ts";
import { EXIT, report } from "./exit.ts";
import { commandHelp, mainHelp, NAME } from "./help.ts";
import { type Command, COMMANDS } from "./options.ts";
import { out, setQuiet } from "./output.ts";
import { type Invocation, nearest, parseArgs } from "./parse.ts";
import { VERSION } from "./version.ts";

/** Each command's handler, loaded only when that command runs. */
const HANDLERS: Record<Command, () => Promise<(inv: Invocation) => number | Promise<number>>> = {
  start: async () => (await import("./commands/start.ts")).startCommand,
  run: async () => (await import("./commands/run.ts")).runCommand,
  stop: async () => (await import("./commands/stop.ts")).stopCommand,
  status: async () => (await import("./commands/status.ts")).statusCommand,
  restart: async () => (await import("./commands/restart.ts")).restartCommand,
  reload: async () => (await import("./commands/reload.ts")).reloadCommand,
  signal: async () => (await import("./commands/signal.ts")).signalCommand,
  reopen: async () => (await import("./commands/reopen.ts")).reopenCommand,
  list: async () => (await import("./commands/list.ts")).listCommand,
};

/** Other names of commands. */
const ALIASES: Readonly<Record<string, Command>> = { ls: "list" };

/**
 * Run the command with these arguments.
 *
 * @param args the arguments, without the program name
 * @returns the exit code (`run` does not return when it execs)
 */
export async function main(args: readonly string[]): Promise<number> {
  return (await execute(args)).code;
}

/** How a command ended. */
export interface Outcome {
  /** The exit code. */
  readonly code: number;
  /**
   * Whether it awaited anything (a wait, a child, the network) and so may
   * have left work pending that only an exit ends; false when it ran to its
   * end synchronously (status, list, help, a usage error), which leaves
   * nothing behind.
   */
  readonly awaited: boolean;
}

/**
 * Run the command with these arguments, and say whether it awaited
 * anything.
 *
 * @param args the arguments, without the program name
 * @returns the exit code and whether work may be pending
 */
export async function execute(args: readonly string[]): Promise<Outcome> {
  const first = command(args[0]);
  let awaited = false;
  try {
    if (first === undefined) throw new UsageError("missing command");
    if (first === "--help" || first === "-h") {
      out(mainHelp());
      return { code: EXIT.OK, awaited };
    }
    if (first === "--version" || first === "-V") {
      out(`${NAME} ${VERSION}`);
      return { code: EXIT.OK, awaited };
    }
    if (first === "help") {
      const topic = command(args[1]);
      if (topic === undefined) out(mainHelp());
      else if (!isCommand(topic)) {
        throw new UsageError(`no help for unknown command ${quote(topic)}`);
      } else out(commandHelp(topic, await import("../control/mod.ts")));
      return { code: EXIT.OK, awaited };
    }
    if (first === "completion") {
      const { completionCommand } = await import("./completion.ts");
      return { code: completionCommand(args.slice(1)), awaited };
    }
    if (!isCommand(first)) throw unknownCommand(first);
    const inv = parseArgs(first, args.slice(1));
    setQuiet(inv.values.quiet);
    if (inv.help) {
      out(commandHelp(first, await import("../control/mod.ts")));
      return { code: EXIT.OK, awaited };
    }
    // Loading a module starts no work of its own; a handler that returns a
    // promise may have.
    const handler = await HANDLERS[first]();
    const result = handler(inv);
    if (typeof result === "number") return { code: result, awaited };
    awaited = true;
    return { code: await result, awaited };
  } catch (e) {
    return { code: report(e, first), awaited };
  }
}

/** A first argument that is no command: an option before the command, or a typo. */
function unknownCommand(first: string): UsageError {
  if (first.startsWith("-")) {
    return new UsageError(`unknown option: ${first} (the command comes first: start, stop, ...)`);
  }
  const near = nearest(first, [...COMMANDS, "help", "completion"]);
  return new UsageError(
    `unknown command ${quote(first)}${near === undefined ? "" : ` (did you mean ${near}?)`}`,
  );
}

/** A command's name as given, its alias resolved. */
function command(name: string | undefined): string | undefined {
  return name === undefined ? undefined : ALIASES[name] ?? name;
}

function isCommand(s: string): s is Command {
  return (COMMANDS as readonly string[]).includes(s);
}

export { EXIT, VERSION };
