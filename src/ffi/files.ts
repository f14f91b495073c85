/**
 * The one way to open a file that lies beside the pid file (the pid file,
 * the guard, the output file, the supervisor's state file and its temp file).
 * Such a directory may be writable by somebody else, who may plant a
 * symbolic link, a FIFO, a device or a hard link there first. So the file is
 * opened through libc with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY`
 * (never Deno's file API, which follows links and blocks on FIFOs), then
 * checked with fstat: a regular file with one name. Reading is bounded.
 *
 * @module
 */

import { C, close, fileKind, type FileStat, fstat, open, readInto } from "./sys.ts";
import { describeErrno, ERRNO, quote, SystemError } from "./errors.ts";
import { platform } from "./libc.ts";

/** How {@link openBeside} opens a file. */
export interface OpenBesideOptions {
  /** What the file is, for messages: "pid file", "output file", "state file". */
  readonly what: string;
  /** read, write (from the start), append, or read and write. */
  readonly access: "read" | "write" | "append" | "readwrite";
  /** Create it with this mode when it does not exist. */
  readonly create?: number;
  /** With `create`: fail with EEXIST when it exists (a temp file). */
  readonly exclusive?: boolean;
  /** Extra advice by errno name, such as `{ EACCES: "run as root" }`. */
  readonly hints?: OpenHints;
}

/**
 * Advice for a failed open by errno name: the text, or a function that
 * finds out, only once the open failed, whether there is advice to give
 * (undefined: none, rather than advice that would not work).
 */
export type OpenHints = { readonly [code: string]: string | (() => string | undefined) };

/** An open descriptor and what fstat said of it. */
export interface OpenedFile {
  readonly fd: number;
  readonly stat: FileStat;
}

const ACCESS = {
  read: C.O_RDONLY,
  write: C.O_WRONLY,
  append: C.O_WRONLY | C.O_APPEND,
  readwrite: C.O_RDWR,
} as const;

/**
 * Open a file beside the pid file without following a link or blocking on a
 * FIFO, and refuse anything but a regular file with exactly one name.
 *
 * @param path the file
 * @param options how, and what it is called in messages
 * @returns the descriptor (close-on-exec) and its stat
 * @throws {SystemError} with a one-line message naming the file and the reason
 *   (ELOOP for a link, EINVAL for another kind of file, EMLINK for a hard link)
 */
export function openBeside(path: string, options: OpenBesideOptions): OpenedFile {
  let flags = ACCESS[options.access] | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK |
    platform().O_NOFOLLOW;
  if (options.create !== undefined) flags |= C.O_CREAT;
  if (options.exclusive) flags |= C.O_EXCL;
  let fd: number;
  try {
    fd = open(path, flags, options.create ?? 0);
  } catch (err) {
    if (err instanceof SystemError) throw explainOpenError(err, path, options.what, options.hints);
    throw err;
  }
  try {
    const stat = fstat(fd, path);
    checkPlainFile(stat, path, options.what);
    return { fd, stat };
  } catch (err) {
    close(fd);
    throw err;
  }
}

/**
 * Open the file an open descriptor names once more, as a new open file
 * description with other access (through `/proc/self/fd/N`, which names
 * the descriptor's file itself, not a path anyone can swap): the pid file's
 * lock is held through a read-only description that children inherit,
 * while this process writes through its own.
 *
 * @param fd the open descriptor
 * @param access read, or read and write
 * @param path the file, for messages
 * @returns the new descriptor (close-on-exec)
 * @throws {SystemError} when it cannot be opened, or is not the same file
 */
export function reopenDescriptor(fd: number, access: "read" | "readwrite", path: string): number {
  const fresh = open(
    `/proc/self/fd/${fd}`,
    ACCESS[access] | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK,
    0,
  );
  try {
    const a = fstat(fd, path);
    const b = fstat(fresh, path);
    if (a.dev !== b.dev || a.ino !== b.ino) {
      throw new SystemError("open", ERRNO.EINVAL, {
        path,
        message: `descriptor ${fd} no longer names ${quote(path)}`,
      });
    }
    return fresh;
  } catch (err) {
    close(fresh);
    throw err;
  }
}

/**
 * Refuse anything but a regular file with one name: a FIFO or device would
 * block or misbehave, and a second name (a hard link planted by another
 * user) makes writing here write somebody else's file.
 *
 * @param st what fstat or lstat says of the file
 * @param path the file, for the message
 * @param what what the file is, for the message
 * @throws {SystemError} EINVAL for another kind of file, EMLINK for a hard link
 */
export function checkPlainFile(st: FileStat, path: string, what: string): void {
  if ((st.mode & C.S_IFMT) !== C.S_IFREG) {
    throw new SystemError("open", ERRNO.EINVAL, {
      path,
      message: `${what} ${quote(path)} is a ${fileKind(st.mode)}, not a regular file`,
    });
  }
  if (st.nlink > 1) {
    throw new SystemError("open", ERRNO.EMLINK, {
      path,
      message: `${what} ${quote(path)} has ${st.nlink} hard links; refusing to use a file ` +
        "that has another name (remove it)",
    });
  }
}

/**
 * Read at most `max` bytes from the start of an open file: a file swapped
 * for something endless cannot make a reader grow without bound.
 *
 * @param fd the descriptor (its offset is used as it is)
 * @param max the most bytes to read
 * @returns the bytes read
 */
export function readBounded(fd: number, max: number): Uint8Array<ArrayBuffer> {
  // Grown as the file turns out to need it: most files read this way are a
  // few hundred bytes, and a buffer of the bound (zeroed at each call) made
  // reading 100 of them cost a hundred times more than the reads.
  let out = new Uint8Array(Math.min(max, 4096));
  let got = 0;
  while (got < max) {
    if (got === out.length) {
      const bigger = new Uint8Array(Math.min(out.length * 2, max));
      bigger.set(out);
      out = bigger;
    }
    const n = readInto(fd, out.subarray(got));
    if (n === 0) break;
    got += n;
  }
  return out.slice(0, got);
}

/**
 * Say in one line why a file could not be opened: `cannot open pid file
 * "/run/x.pid": it is a symbolic link, which is never followed`.
 *
 * @param err the failure of open(2)
 * @param path the file
 * @param what what the file is ("pid file", "guard file", "output file")
 * @param hints extra advice by errno name, such as `{ EACCES: "..." }`
 * @returns the error to throw, with the same errno and a clearer message
 */
export function explainOpenError(
  err: SystemError,
  path: string,
  what: string,
  hints: OpenHints = {},
): SystemError {
  const reason = (() => {
    switch (err.errno) {
      case ERRNO.ELOOP:
        return "it is a symbolic link, which is never followed";
      case ERRNO.EISDIR:
        return "it is a directory";
      case ERRNO.ENOENT:
        return "its directory does not exist";
      case ERRNO.ENOTDIR:
        return "a component of the path is not a directory";
      case ERRNO.EROFS:
        return "read-only file system";
      case ERRNO.ENXIO:
        return "it is a FIFO or socket nobody has open";
      default:
        return describeErrno(err.errno);
    }
  })();
  const advice = hints[err.code];
  const hint = typeof advice === "function" ? advice() : advice;
  return new SystemError(err.syscall, err.errno, {
    path,
    message: `cannot open ${what} ${quote(path)}: ${reason}${hint ? ` (${hint})` : ""}`,
  });
}
