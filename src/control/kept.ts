/**
 * Daemons whose lock a keeper holds: a program that closed its descriptors
 * (the lock's too) is kept by a keeper process, which holds the lock until
 * the program's main process exits, while the pid file names the program.
 * The controllers act on the program, never the keeper, once they know the
 * keeper keeps it.
 *
 * @module
 */

import { procStat } from "../ffi/proc.ts";
import { processRole } from "../launch/internal.ts";
import { type FileIdentity, lockHolders } from "../lock/holders.ts";

/**
 * The daemon's parent, when it is a keeper (`start --keeper`, `start
 * --lock`): the keeper started it, and holds the lock with it.
 *
 * @param pid the daemon
 * @returns the keeper's pid, or undefined
 */
export function parentKeeper(pid: number): number | undefined {
  const parent = procStat(pid)?.ppid;
  return parent !== undefined && parent > 1 && processRole(parent) === "keeper"
    ? parent
    : undefined;
}

/**
 * The keeper that holds the pid file's lock for the process the file names:
 * a holder running the keeper stage, while the named process runs and is
 * either the keeper's child (the keeper started it, or it forked away to
 * the keeper, a child subreaper) or older than the keeper (started before
 * it, by the `start` that handed the lock over). A process that got the
 * named pid after the daemon exited is neither: the keeper let go of the
 * lock the moment the daemon exited, and a new process is younger than it.
 *
 * @param st the pid file's identity
 * @param named the pid the file names
 * @returns the keeper's pid, or undefined when no keeper keeps that process
 */
export function keeperOf(st: FileIdentity, named: number | undefined): number | undefined {
  if (named === undefined) return undefined;
  const daemon = procStat(named);
  if (!daemon || daemon.state === "Z" || daemon.state === "X") return undefined;
  for (const h of lockHolders(st)) {
    if (h.pid === named || processRole(h.pid) !== "keeper") continue;
    if (daemon.ppid === h.pid || daemon.startTicks <= h.startTicks) return h.pid;
  }
  return undefined;
}
