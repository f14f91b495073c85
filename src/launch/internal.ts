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
 * file names the daemon, not the keeper; `job` becomes a job under its time
 * limit (`run --max-runtime`), started by the enforcer shell.
 */
export type InternalRole = "privilege" | "supervisor" | "keeper" | "job";

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
 * The argv that starts an internal stage: this program again (the bundle,
 * the compiled binary) with the internal flag, the role and its arguments;
 * from source, the stage module itself under `deno run` (so a stage loads
 * nothing of the command line, and a program that imports the control API
 * is not run again in its place), with the permission flags this process
 * was given under `deno run`, or all of them under another subcommand
 * (`deno test`).
 *
 * @param role the stage
 * @param args its arguments
 * @returns the argv; `[0]` is an absolute path
 */
export function stageCommand(role: InternalRole, args: readonly string[]): string[] {
  const self = selfCommand();
  const tail = internalArgs(role, args);
  if (!import.meta.url.endsWith("/launch/internal.ts")) return [...self, ...tail]; // bundled
  const url = new URL("../supervisor/stage.ts", import.meta.url);
  const entry = url.protocol === "file:" ? url.pathname : url.href;
  if (self.length >= 3 && self[1] === "run") return [...self.slice(0, -1), entry, ...tail];
  return [self[0]!, "run", "-A", entry, ...tail];
}

/**
 * The command line that runs this program again: the compiled binary alone,
 * or `deno run <flags> <script>` as this process was started, permission
 * flags included. Arguments given to this program are not part of it.
 *
 * @returns the argv prefix; `[0]` is an absolute path
 */
export function selfCommand(): string[] {
  const argv = cmdlineOf("self");
  if (!argv) throw new Error("cannot read /proc/self/cmdline");
  const prefix = argv.slice(0, argv.length - Deno.args.length);
  prefix[0] = Deno.execPath();
  return prefix;
}
