/**
 * Exit codes of the command, and which error means which.
 *
 * @module
 */

import { exitCodeOf } from "../errors.ts";
import { NAME } from "./help.ts";
import { quote } from "../control/values.ts";
import { complain, err, say } from "./output.ts";

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

/**
 * Say what went wrong, in one line (a failed start adds its output's last
 * lines), and choose the exit code. Only a bug keeps its stack.
 *
 * @param e what was thrown
 * @param cmd the command, for an internal error's message
 * @returns the exit code
 */
export function report(e: unknown, cmd: string | undefined): number {
  if (e instanceof Deno.errors.NotCapable) {
    complain(`${e.message} (run with --allow-all, or use the compiled binary)`);
    return EXIT.FAILED;
  }
  if (e instanceof Error && /^cannot load /.test(e.message)) {
    complain(e.message);
    return EXIT.FAILED;
  }
  // The library's errors carry the command's exit code (one mapping, see exitCodeOf).
  const code = exitCodeOf(e);
  if (code === undefined) return internal(e, cmd);
  const message = (e as Error).message;
  switch (code) {
    case EXIT.USAGE:
      complain(message);
      err(`Try '${NAME} --help'.`);
      return code;
    case EXIT.NOTHING_TO_DO:
      say(message); // an outcome, not an error: --quiet drops it
      return code;
  }
  complain(message);
  // A failed start adds what its program said, since this start.
  const failed = e as { output?: unknown; outputTail?: unknown };
  if (typeof failed.output === "string" && Array.isArray(failed.outputTail)) {
    if (failed.outputTail.length > 0) {
      complain(`last lines of ${quote(failed.output)} since this start:`);
      for (const line of failed.outputTail) err(`  ${line}`);
    } else complain(`${quote(failed.output)} has no output since this start`);
  }
  return code;
}

/** A bug, not a user's mistake: keep the stack. */
function internal(e: unknown, cmd: string | undefined): number {
  complain(`internal error${cmd ? ` in ${cmd}` : ""}: ${e instanceof Error ? e.stack : e}`);
  return EXIT.FAILED;
}
