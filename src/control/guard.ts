/**
 * The guard lock: a file beside the pid file, flock-locked for the whole of
 * one action (start, stop, restart, reload, signal), so two controllers never
 * act on one daemon at once. `status` never takes it.
 *
 * @module
 */

import {
  close,
  ERRNO,
  fchmod,
  type FileStat,
  ids,
  isWritable,
  lookupUser,
  quote,
  SystemError,
} from "../ffi/mod.ts";
import { maySignal, procStatus } from "../ffi/proc.ts";
import { probeSync } from "../lock/pidfile.ts";
import {
  foreignLockers,
  type Holder,
  isOurs,
  lockContext,
  lockHolders,
  topHolders,
} from "../lock/holders.ts";
import { lockExclusive, openLockFile } from "../lock/lockfile.ts";
import { GuardTimeoutError, InterruptedError } from "./errors.ts";
import { DEFAULT_GUARD_TIMEOUT_MS, type GuardOptions } from "./options.ts";

/** Only root's controllers (or the owner's) may open the guard: another user's hold would stall them. */
const GUARD_MODE = 0o600;

/**
 * The guard lock: one flock'd descriptor held for a whole action (a second
 * open of the same file would deadlock against the first).
 */
export class Guard implements Disposable {
  #fd: number;
  /** The guard file. */
  readonly path: string;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /**
   * Lock the guard file, creating it (mode 0600), waiting at most `timeoutMs`.
   *
   * @param path the guard file
   * @param timeoutMs the longest wait
   * @param signal gives up the wait when aborted
   * @param accessHint advice for a guard this user may not open, found only then
   * @returns the held guard
   * @throws {GuardTimeoutError} when another controller keeps it
   * @throws {InterruptedError} when `signal` aborts the wait
   * @throws {SystemError} when it cannot be opened (or is not a regular file with one name)
   */
  static async take(
    path: string,
    timeoutMs: number,
    signal?: AbortSignal,
    accessHint?: () => string | undefined,
  ): Promise<Guard> {
    const { fd, stat } = openLockFile(path, {
      what: "guard file",
      mode: GUARD_MODE,
      ...(accessHint ? { hints: { EACCES: accessHint } } : {}),
    });
    try {
      secure(fd, stat, path);
      const started = performance.now();
      let sleep = 1;
      let looked = false;
      const pause = async (remaining: number): Promise<void> => {
        if (!looked) {
          looked = true;
          refuseForeignHolder(path, stat);
        }
        if (signal?.aborted) {
          throw new InterruptedError(
            `interrupted (${String(signal.reason)}) while waiting for the guard ${quote(path)}`,
          );
        }
        await new Promise((r) => setTimeout(r, Math.min(sleep, remaining)));
        sleep = Math.min(sleep * 2, 25);
      };
      if (!await lockExclusive(fd, path, timeoutMs, pause)) {
        throw new GuardTimeoutError(
          path,
          performance.now() - started,
          describeHolder(topHolders(lockHolders(stat))[0]),
        );
      }
      return new Guard(path, fd);
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /** Let go of the guard. Idempotent. */
  release(): void {
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }

  /** Same as {@link Guard.release}. */
  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * Make a guard file root owns 0600 when it is not: one made earlier (or by
 * hand) with a looser mode lets any user open it and hold it, which stalls
 * every controller. A descriptor that user opened before stays open; see
 * {@link refuseForeignHolder}.
 */
function secure(fd: number, st: FileStat, path: string): void {
  if (st.uid !== 0 || ids.euid() !== 0 || (st.mode & 0o7777) === GUARD_MODE) return;
  try {
    fchmod(fd, GUARD_MODE, path);
  } catch {
    // A read-only mount and the like: the guard still works as it is.
  }
}

/**
 * As root, a guard held only by other users' processes is held by no
 * controller of root's: say who at once rather than wait out the timeout.
 *
 * @throws {SystemError} EPERM naming the holder's pid and user
 */
function refuseForeignHolder(path: string, st: FileStat): void {
  if (ids.euid() !== 0) return;
  const ctx = lockContext(path, st.uid);
  if (lockHolders(st).some((h) => isOurs(h, ctx))) return;
  // A shared flock blocks our exclusive one as well as an exclusive one does.
  const foreign = foreignLockers(st, ctx).find((f) => f.kind.startsWith("flock"));
  if (!foreign) return;
  throw new SystemError("flock", ERRNO.EPERM, {
    path,
    message: `guard file ${quote(path)} is locked by pid ${foreign.pid} of user ${
      userName(foreign.uid)
    }, which is not a controller of root's; not waiting for it (find out why that user holds it)`,
  });
}

/** A user's name, quoted, or its uid. */
function userName(uid: number): string {
  let name: string | undefined;
  try {
    name = lookupUser(String(uid))?.name;
  } catch {
    name = undefined;
  }
  return name === undefined ? String(uid) : quote(name);
}

/** "pid 123 of user "nobody"", or undefined when there is no holder. */
function describeHolder(holder: Holder | undefined): string | undefined {
  return holder ? `pid ${holder.pid} of user ${userName(holder.uid)}` : undefined;
}

/**
 * Advice for a guard file this user may not open. Another guard (`--guard`)
 * helps only when this user may act on the daemon: signal the process the
 * pid file names or, with none running, write the pid file. A daemon this
 * user may not signal is another user's: that is said instead, since no
 * option of ours would get past the kernel's refusal.
 *
 * @param pidfile the pid file
 * @returns the advice, or undefined when there is none that would work
 */
function guardAccessHint(pidfile: string): string | undefined {
  let found;
  try {
    found = probeSync(pidfile);
  } catch {
    return undefined; // A pid file this user cannot read: no option of ours helps.
  }
  const pid = found.state === "running" ? found.pid : undefined;
  if (pid !== undefined) {
    if (maySignal(pid)) return "name a writable one with --guard FILE";
    const uid = procStatus(pid)?.uids[0];
    return uid === undefined
      ? undefined
      : `the daemon, pid ${pid}, runs as user ${userName(uid)}, whom this user may not signal`;
  }
  return isWritable(pidfile) ? "name a writable one with --guard FILE" : undefined;
}

/**
 * The guard file of a pid file.
 *
 * @param options the pid file and the guard, if given
 * @returns `--guard`, or the pid file's path with ".lock" added
 */
export function guardPath(options: GuardOptions): string {
  return options.guard ?? `${options.pidfile}.lock`;
}

/**
 * Take the guard, wait for `action`, let go of the guard.
 *
 * @param options the guard file and its timeout
 * @param action what to do under the guard
 * @param abort gives up the wait for the guard
 * @returns what `action` returns
 */
export async function withGuard<T>(
  options: GuardOptions,
  action: () => Promise<T>,
  abort?: AbortSignal,
): Promise<T> {
  using _guard = await takeGuard(options, abort);
  return await action();
}

/**
 * Take the guard of these options.
 *
 * @param options the guard file and its timeout
 * @param abort gives up the wait
 * @returns the held guard
 */
export function takeGuard(options: GuardOptions, abort?: AbortSignal): Promise<Guard> {
  return Guard.take(
    guardPath(options),
    options.guardTimeout ?? DEFAULT_GUARD_TIMEOUT_MS,
    abort,
    () => guardAccessHint(options.pidfile),
  );
}
