/**
 * Exit codes of the command, and which error means which.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
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
export async function report(e: unknown, cmd: string | undefined): Promise<number> {
  if (e instanceof UsageError) {
    complain(e.message);
    err(`Try '${NAME} --help'.`);
    return EXIT.USAGE;
  }
  if (e instanceof Deno.errors.NotCapable) {
    complain(`${e.message} (run with --allow-all, or use the compiled binary)`);
    return EXIT.FAILED;
  }
  // Only a command that ran can throw the control layer's errors: it is loaded by now.
  let control;
  try {
    control = await import("../control/mod.ts");
  } catch {
    return internal(e, cmd);
  }
  if (
    e instanceof control.AlreadyRunningError || e instanceof control.NotRunningError ||
    e instanceof control.HeldElsewhereError || e instanceof control.JobSkippedError
  ) {
    say(e.message);
    return EXIT.NOTHING_TO_DO;
  }
  if (e instanceof control.StartFailedError) {
    complain(e.message);
    if (e.output !== undefined) {
      if (e.outputTail.length > 0) {
        complain(`last lines of ${quote(e.output)} since this start:`);
        for (const line of e.outputTail) err(`  ${line}`);
      } else complain(`${quote(e.output)} has no output since this start`);
    }
    return EXIT.FAILED;
  }
  if (
    e instanceof control.SystemError || e instanceof control.StopFailedError ||
    e instanceof control.GuardTimeoutError || e instanceof control.InterruptedError
  ) {
    complain(e.message);
    return EXIT.FAILED;
  }
  if (e instanceof Error && /^cannot load /.test(e.message)) {
    complain(e.message);
    return EXIT.FAILED;
  }
  return internal(e, cmd);
}

/** A bug, not a user's mistake: keep the stack. */
function internal(e: unknown, cmd: string | undefined): number {
  complain(`internal error${cmd ? ` in ${cmd}` : ""}: ${e instanceof Error ? e.stack : e}`);
  return EXIT.FAILED;
}
