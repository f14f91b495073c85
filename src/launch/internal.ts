/**
 * The one argv scheme for re-executing this program as an internal stage:
 * `<self...> --singleton-run-internal <role> <args...>`. The marker is in
 * argv, never in the environment, so nothing of it leaks to a child.
 *
 * @module
 */

/** The argv flag that turns this program into one of its internal stages. */
export const INTERNAL_FLAG = "--singleton-run-internal";

/**
 * Which internal stage: `privilege` drops privileges and execs the daemon
 * (`start --user`), `supervisor` is the supervisor process (`start --supervise`).
 */
export type InternalRole = "privilege" | "supervisor";

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
