/**
 * The guard lock: a file beside the pid file, flock-locked for the whole of
 * one action (start, stop, restart, reload, signal), so two controllers never
 * act on one daemon at once. `status` never takes it.
 *
 * @module
 */

import { close, quote } from "../ffi/mod.ts";
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
   * @returns the held guard
   * @throws {GuardTimeoutError} when another controller keeps it
   * @throws {InterruptedError} when `signal` aborts the wait
   * @throws {SystemError} when it cannot be opened (or is not a regular file with one name)
   */
  static async take(path: string, timeoutMs: number, signal?: AbortSignal): Promise<Guard> {
    const { fd } = openLockFile(path, {
      what: "guard file",
      mode: GUARD_MODE,
      hints: { EACCES: "name a writable one with --guard FILE" },
    });
    try {
      const started = performance.now();
      let sleep = 1;
      const pause = async (remaining: number): Promise<void> => {
        if (signal?.aborted) {
          throw new InterruptedError(
            `interrupted (${String(signal.reason)}) while waiting for the guard ${quote(path)}`,
          );
        }
        await new Promise((r) => setTimeout(r, Math.min(sleep, remaining)));
        sleep = Math.min(sleep * 2, 25);
      };
      if (!await lockExclusive(fd, path, timeoutMs, pause)) {
        throw new GuardTimeoutError(path, performance.now() - started);
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
  );
}
