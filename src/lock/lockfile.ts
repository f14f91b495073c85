/**
 * The one way to open and flock a lock file beside the pid file (the pid
 * file itself and the guard): opened without following a link or blocking on
 * a FIFO, checked to be a regular file with one name, then locked with
 * flock(2), which belongs to the open file description (not the process, as
 * fcntl locks do) and is released by the kernel when the last descriptor
 * closes.
 *
 * @module
 */

import { C, tryFlock } from "../ffi/sys.ts";
import { openBeside, type OpenedFile, type OpenHints } from "../ffi/files.ts";

/** How {@link openLockFile} opens a lock file. */
export interface LockFileOptions {
  /** What the file is, for messages: "pid file", "guard file". */
  readonly what: string;
  /** The mode of a newly created file (before the umask). */
  readonly mode: number;
  /** Extra advice by errno name, such as `{ EACCES: "..." }`. */
  readonly hints?: OpenHints;
}

/**
 * Open a lock file for reading and writing, creating it when missing.
 *
 * @param path the file
 * @param options what it is, its mode
 * @returns the descriptor (close-on-exec) and its stat
 * @throws {SystemError} for a link, a FIFO, a hard link, a missing directory, no permission
 */
export function openLockFile(path: string, options: LockFileOptions): OpenedFile {
  return openBeside(path, {
    what: options.what,
    access: "readwrite",
    create: options.mode,
    ...(options.hints ? { hints: options.hints } : {}),
  });
}

/**
 * Take an exclusive flock on an open descriptor, waiting at most `timeoutMs`.
 *
 * @param fd the descriptor
 * @param path the file, for messages
 * @param timeoutMs the longest wait (0: try once)
 * @param pause waits between two tries, given the time left; it may throw to give up
 * @returns true once locked, false when the time ran out
 * @throws {SystemError} when flock(2) fails for another reason than a holder
 */
export async function lockExclusive(
  fd: number,
  path: string,
  timeoutMs: number,
  pause: (remainingMs: number) => Promise<void>,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!tryFlock(fd, C.LOCK_EX, path)) {
    const remaining = deadline - performance.now();
    if (remaining <= 0) return false;
    await pause(remaining);
  }
  return true;
}
