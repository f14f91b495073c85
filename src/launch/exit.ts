/**
 * How a process ended, in the words every message uses.
 *
 * @module
 */

import { type ExitReason, signalName } from "../ffi/mod.ts";

/**
 * Describe how a process ended.
 *
 * @param reason from waitpid
 * @returns `exit status 1`, `killed by SIGKILL`, `killed by SIGSEGV (core dumped)`
 */
export function describeExit(reason: ExitReason): string {
  if (reason.exited) return `exit status ${reason.code}`;
  return `killed by ${signalName(reason.signal)}${reason.coreDumped ? " (core dumped)" : ""}`;
}
