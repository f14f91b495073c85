/**
 * The one argv scheme for re-executing this program as an internal stage:
 * `<self...> --singleton-run-internal <role> <args...>`. The marker is in
 * argv, never in the environment, so nothing of it leaks to a child.
 *
 * @module
 */

import { cmdlineOf } from "../ffi/proc.ts";

/** The argv flag that turns this program into one of its internal stages. */
export const INTERNAL_FLAG = "--singleton-run-internal";

/**
 * Which internal stage: `privilege` drops privileges and execs the daemon
 * (`start --user`), `supervisor` is the supervisor process (`start
 * --supervise`), `keeper` holds the lock for a daemon that does not hold it
 * itself (a program that closes its descriptors, `start --keeper`): the pid
 * file names the daemon, not the keeper.
 */
export type InternalRole = "privilege" | "supervisor" | "keeper";

/**
 * The argv that follows this program's own command to start a stage.
 *
 * @param role the stage
 * @param args its arguments
 * @returns `[INTERNAL_FLAG, role, ...args]`
 */
export function internalArgs(role: InternalRole, args: readonly string[]): string[] {
  return [INTERNAL_FLAG, role, ...args];
}

/**
 * The internal stage a process runs, read from its argv: how a controller
 * tells a supervisor or a keeper among the lock's holders.
 *
 * @param pid the process
 * @returns its role, or undefined for any other process (or one that is gone)
 */
export function processRole(pid: number): InternalRole | undefined {
  const argv = cmdlineOf(pid);
  const at = argv?.indexOf(INTERNAL_FLAG) ?? -1;
  if (at < 0) return undefined;
  const role = argv![at + 1];
  return role === "privilege" || role === "supervisor" || role === "keeper" ? role : undefined;
}
