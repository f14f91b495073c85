/**
 * Daemons whose lock a keeper holds: a program that closed its descriptors
 * (the lock's too), or one under a cluster lock, runs under a keeper process
 * that holds the lock until the program's main process exits, while the pid
 * file names the program. The controllers act on the program, never the
 * keeper, once they know the keeper keeps it.
 *
 * A keeper is known by facts another user cannot forge: the service record
 * (owner-checked, 0600) names it and the program by pid and start time, it
 * runs as root or the pid file's owner, and it holds an exclusive lock on
 * the pid file's current inode. Never by its argv: anyone can run `deno`
 * with any argv.
 *
 * @module
 */

import { holderFacts, holdsLockInFdinfo, type LockContext } from "../lock/holders.ts";
import type { FileIdentity } from "../lock/holders.ts";
import { stillRuns } from "../lock/identity.ts";

/**
 * The keeper that holds the pid file's lock for the process the file names.
 *
 * @param st the pid file's identity (the inode whose lock counts)
 * @param named the pid the file names
 * @param ctx the pid file's owner and record
 * @returns the keeper's pid, or undefined when no keeper keeps that process
 */
export function keeperOf(
  st: FileIdentity,
  named: number | undefined,
  ctx: LockContext,
): number | undefined {
  const record = ctx.record();
  if (named === undefined || !record || record.spec.holder.kind !== "keeper") return undefined;
  const { daemon, holder } = record;
  if (!daemon || !holder || daemon.pid !== named || !stillRuns(daemon)) return undefined;
  const keeper = holderFacts(holder.pid);
  if (!keeper || keeper.startTicks !== holder.start) return undefined;
  if (!keeper.root && keeper.uid !== ctx.owner) return undefined;
  return holdsLockInFdinfo(keeper.pid, st) === true ? keeper.pid : undefined;
}
