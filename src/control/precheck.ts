/**
 * Taking the pid file's lock for a start or a run (the checks made before
 * anything is created are in `spec.ts` and `paths.ts`): a warning first when
 * it lies on a file system where flock may not exclude other hosts, and an
 * "already running" that names the process that really holds the lock.
 *
 * @module
 */

import { C, quote, statfsType } from "../ffi/mod.ts";
import { AlreadyRunningError, PidFile } from "../lock/pidfile.ts";
import { fileIdentity, lockHolder } from "../lock/holders.ts";
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
 * file system where flock may not exclude other hosts).
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
    throw withRealHolder(err);
  }
}

/**
 * An AlreadyRunningError naming the process that really holds the lock,
 * when the pid file names one that is gone or does not hold it.
 */
function withRealHolder(err: unknown): unknown {
  if (!(err instanceof AlreadyRunningError)) return err;
  const st = fileIdentity(err.path);
  if (st && keeperOf(st, err.pid) !== undefined) return err; // a keeper holds it for the daemon
  const holder = lockHolder(err.path, err.pid);
  return holder === err.pid ? err : new AlreadyRunningError(err.path, holder);
}
