/**
 * Taking the pid file's lock for a start or a run (the checks made before
 * anything is created are in `spec.ts` and `paths.ts`): a warning first when
 * it lies on a file system where flock may not exclude other hosts, and an
 * "already running" that names the process that really holds the lock.
 *
 * @module
 */

import { C, describeUid, lstat, quote, statfsType } from "../ffi/mod.ts";
import { AlreadyRunningError, PidFile, probeSync } from "../lock/pidfile.ts";
import {
  type ForeignLocker,
  foreignLockers,
  isOurs,
  lockContext,
  lockHolder,
  lockHolders,
} from "../lock/holders.ts";
import { stillRuns } from "../lock/identity.ts";
import { readRecord } from "../lock/record.ts";
import { StartFailedError } from "./errors.ts";
import { keeperOf } from "./kept.ts";
import type { GuardOptions } from "./options.ts";
import { dirname } from "./paths.ts";

function warnIfRemote(path: string, warn: ((m: string) => void) | undefined): void {
  if (!warn) return;
  let type: number;
  try {
    type = statfsType(dirname(path));
  } catch {
    return;
  }
  const name = type === C.NFS_SUPER_MAGIC
    ? "NFS"
    : type === C.SMB_SUPER_MAGIC || type === C.CIFS_MAGIC_NUMBER
    ? "SMB/CIFS"
    : type === C.FUSE_SUPER_MAGIC
    ? "FUSE"
    : undefined;
  if (name) {
    warn(
      `warning: pid file ${
        quote(path)
      } is on ${name}; flock(2) may not exclude processes on other hosts`,
    );
  }
}

/**
 * Lock the pid file for a start or a run (warning first when it lies on a
 * file system where flock may not exclude other hosts). When the lock is
 * held by other users' processes only (any user who can read the file can
 * flock it), the lock is taken on a fresh file in its place, said once.
 * Called with the guard held.
 *
 * @param options the pid file and where warnings go
 * @returns the held lock
 * @throws {AlreadyRunningError} naming the process that really holds it
 */
export async function lockPidfile(options: GuardOptions): Promise<PidFile> {
  warnIfRemote(options.pidfile, options.onWarning);
  try {
    return await PidFile.acquire(options.pidfile);
  } catch (err) {
    if (!(err instanceof AlreadyRunningError)) throw err;
    const foreign = onlyForeignFlocks(options.pidfile);
    if (foreign.length === 0) throw withRealHolder(err);
    const who = foreign.map((f) => `pid ${f.pid} of ${describeUid(f.uid)}`).join(", ");
    options.onWarning?.(
      `pid file ${quote(options.pidfile)} was locked by another user (${who}), not by the ` +
        "daemon: took the lock on a fresh file in its place",
    );
    return PidFile.replace(options.pidfile);
  }
}

/**
 * The other users' processes whose flock keeps us from the pid file's lock,
 * when no process of ours holds it; none when one of ours does, or when the
 * holders cannot be seen (then the lock stands).
 */
function onlyForeignFlocks(pidfile: string): ForeignLocker[] {
  let st;
  try {
    st = lstat(pidfile);
  } catch {
    return [];
  }
  const ctx = lockContext(pidfile, st.uid);
  if (lockHolders(st).some((h) => isOurs(h, ctx))) return [];
  return foreignLockers(st, ctx).filter((f) => f.kind.startsWith("flock"));
}

/**
 * Refuse to start over the daemon the record names when it still runs (the
 * same pid and start time) while no lock of ours is held: the daemon of a
 * keeper or supervisor that died (the OOM killer), which a second start
 * would run beside. A process that got its pid since is not it. Called with
 * the guard held, before the pid file is touched.
 *
 * @param pidfile the pid file
 * @throws {StartFailedError} saying how to stop it
 */
export function refuseUnlockedDaemon(pidfile: string): void {
  const record = readRecord(pidfile);
  const daemon = record?.daemon;
  if (!record || !daemon || !stillRuns(daemon)) return;
  if (probeSync(pidfile).state === "running") return; // held: the start reports who holds it
  throw new StartFailedError(
    `${record.spec.name} (pid ${daemon.pid}) still runs, started for ${
      quote(pidfile)
    }, but holds no lock on it (the keeper or supervisor that held it for it has ended): ` +
      `stop it first with "singleton-run stop --exec ${record.spec.path} --pidfile ${pidfile}"`,
    daemon.pid,
    undefined,
    undefined,
    [],
  );
}

/**
 * An AlreadyRunningError naming the process that really holds the lock,
 * when the pid file names one that is gone or does not hold it.
 */
function withRealHolder(err: AlreadyRunningError): AlreadyRunningError {
  let st;
  try {
    st = lstat(err.path);
  } catch {
    return err;
  }
  const ctx = lockContext(err.path, st.uid);
  if (keeperOf(st, err.pid, ctx) !== undefined) return err; // a keeper holds it for the daemon
  const holder = lockHolder(err.path, err.pid);
  return holder === err.pid ? err : new AlreadyRunningError(err.path, holder);
}
