/**
 * One error class for every failed system call: it carries the errno number,
 * its name, the call and the path or object it was made on.
 *
 * @module
 */

/** Linux errno numbers by name (asm-generic, the same on x86_64 and aarch64). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOTSOCK: 88,
  ENOBUFS: 105,
  EADDRINUSE: 98,
  ECONNREFUSED: 111,
  ETIMEDOUT: 110,
  EDQUOT: 122,
  EOPNOTSUPP: 95,
  ENODATA: 61,
} as const;

/** The name of an errno value. */
export type ErrnoCode = keyof typeof ERRNO;

const NAMES: ReadonlyMap<number, ErrnoCode> = new Map(
  Object.entries(ERRNO).map(([name, n]) => [n, name as ErrnoCode]),
);

const DESCRIPTIONS: { readonly [code in ErrnoCode]?: string } = {
  EPERM: "operation not permitted",
  ENOENT: "no such file or directory",
  ESRCH: "no such process",
  EINTR: "interrupted system call",
  EIO: "input/output error",
  EBADF: "bad file descriptor",
  ECHILD: "no child processes",
  EAGAIN: "resource temporarily unavailable",
  ENOMEM: "out of memory",
  EACCES: "permission denied",
  EEXIST: "file exists",
  ENOTDIR: "not a directory",
  EISDIR: "is a directory",
  EINVAL: "invalid argument",
  EMFILE: "too many open files",
  ENOSPC: "no space left on device",
  EROFS: "read-only file system",
  ENAMETOOLONG: "file name too long",
  ENOLCK: "no locks available",
  ENOSYS: "function not implemented",
  ELOOP: "too many levels of symbolic links",
  ENOEXEC: "exec format error",
  ETXTBSY: "text file busy",
  E2BIG: "argument list too long",
  ECONNREFUSED: "connection refused",
  EDQUOT: "disk quota exceeded",
  EOPNOTSUPP: "operation not supported",
  ENODATA: "no data available",
};

/**
 * The symbolic name of an errno value, such as `"EAGAIN"`, or `"E<n>"` for a
 * number this table does not know.
 *
 * @param errno the value of `errno`
 * @returns its name
 */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}

/**
 * A short human description of an errno value (`"permission denied"`).
 *
 * @param errno the value of `errno`
 * @returns the description, or the errno name when none is known
 */
export function describeErrno(errno: number): string {
  const name = NAMES.get(errno);
  return (name && DESCRIPTIONS[name]) ?? errnoName(errno);
}

/**
 * Quote a value for a one-line message: in double quotes, with newlines,
 * control characters, quotes and backslashes escaped as in JSON, so a
 * hostile file name cannot split or rewrite the line.
 *
 * @param value the value, such as a path
 * @returns the quoted value
 */
export function quote(value: string): string {
  return JSON.stringify(value);
}

/** Options of a {@link SystemError}. */
export interface SystemErrorOptions {
  /** The file, process or other object the call was made on. */
  readonly path?: string;
  /** A sentence to use instead of the generated message. */
  readonly message?: string;
}

/**
 * A system call failed. Callers decide by `code` (or `errno`), never by the
 * message text.
 *
 * @example Catch a missing file by its code
 * ```ts
 * import { SystemError } from "./errors.ts";
 * const err = new SystemError("open", 2, { path: "/run/x.pid" });
 * console.log(err.code, err.message); // ENOENT open "/run/x.pid": no such file or directory
 * ```
 */
export class SystemError extends Error {
  /** The command's exit code for it: 1, failed when acted on. */
  readonly exitCode: 1 = 1;
  /** The errno value. */
  readonly errno: number;
  /** The errno name, such as `"EAGAIN"`. */
  readonly code: string;
  /** The system call that failed. */
  readonly syscall: string;
  /** The path or object the call was made on, if any. */
  readonly path?: string;

  /**
   * Make the error for a failed call.
   *
   * @param syscall the failing call, such as `"open"`
   * @param errno the errno value read right after the call
   * @param options the path, or a message to use instead of the generated one
   */
  constructor(syscall: string, errno: number, options: SystemErrorOptions = {}) {
    const where = options.path === undefined ? "" : ` ${quote(options.path)}`;
    super(options.message ?? `${syscall}${where}: ${describeErrno(errno)}`);
    this.name = "SystemError";
    this.errno = errno;
    this.code = errnoName(errno);
    this.syscall = syscall;
    if (options.path !== undefined) this.path = options.path;
  }
}
