/**
 * Thin, typed wrappers over the libc calls the rest of the project makes.
 * Each turns `-1` plus errno into a {@link SystemError} that names the call
 * and the path; the few that have an expected failure return it instead.
 *
 * @module
 */

import { check, errno, libc, platform } from "./libc.ts";
import { cstr, CStringArray } from "./cstring.ts";
import { ERRNO, quote, SystemError } from "./errors.ts";
import { linux } from "./platform.ts";

export { linux as C };

/** What `fstat`/`lstat` report that the project uses. */
export interface FileStat {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: bigint;
  /** How many names the file has (hard links). */
  readonly nlink: number;
}

/** The file type bits of a mode, as a word for messages. */
export function fileKind(mode: number): string {
  switch (mode & linux.S_IFMT) {
    case linux.S_IFREG:
      return "regular file";
    case linux.S_IFDIR:
      return "directory";
    case linux.S_IFLNK:
      return "symbolic link";
    case linux.S_IFIFO:
      return "FIFO";
    case linux.S_IFSOCK:
      return "socket";
    case linux.S_IFCHR:
      return "character device";
    case linux.S_IFBLK:
      return "block device";
    default:
      return "special file";
  }
}

/**
 * open(2).
 *
 * @param path the path
 * @param flags `O_*` flags; add `O_CLOEXEC` unless the descriptor is for a child
 * @param mode the mode for a created file
 * @returns the descriptor
 * @throws {SystemError} on failure, naming the path
 */
export function open(path: string, flags: number, mode = 0o644): number {
  const p = cstr(path, "path");
  return check(libc().open(p, flags, mode), "open", { path });
}

/** close(2), ignoring EINTR (the descriptor is closed on Linux regardless). */
export function close(fd: number): void {
  const r = libc().close(fd);
  if (r < 0) {
    const e = errno();
    if (e !== ERRNO.EINTR) throw new SystemError("close", e, { path: `fd ${fd}` });
  }
}

/**
 * read(2) once.
 *
 * @param fd the descriptor
 * @param max the most bytes to read
 * @returns the bytes read; empty at end of file
 */
export function read(fd: number, max: number): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(max);
  const n = Number(libc().read(fd, buf, BigInt(max)));
  check(n, "read", { path: `fd ${fd}` });
  return buf.subarray(0, n);
}

/**
 * read(2) once, into a buffer the caller owns.
 *
 * @param fd the descriptor
 * @param buf where to read to (its whole length)
 * @returns the number of bytes read; 0 at end of file
 */
export function readInto(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  return check(Number(libc().read(fd, buf, BigInt(buf.length))), "read", { path: `fd ${fd}` });
}

/**
 * write(2) until every byte is written.
 *
 * @param fd the descriptor
 * @param bytes what to write
 * @param path the file, for the error message
 */
export function writeAll(fd: number, bytes: Uint8Array<ArrayBuffer>, path?: string): void {
  let off = 0;
  while (off < bytes.length) {
    const rest = bytes.subarray(off);
    const n = Number(libc().write(fd, rest, BigInt(rest.length)));
    if (n < 0) {
      const e = errno();
      if (e === ERRNO.EINTR) continue;
      throw new SystemError("write", e, { path: path ?? `fd ${fd}` });
    }
    off += n;
  }
}

/**
 * pread(2) once, from an offset, without moving the file position.
 *
 * @returns the bytes read; empty at end of file
 */
export function pread(fd: number, max: number, offset = 0, path?: string): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(max);
  const n = Number(libc().pread(fd, buf, BigInt(max), BigInt(offset)));
  check(n, "pread", { path: path ?? `fd ${fd}` });
  return buf.subarray(0, n);
}

/**
 * Replace a file's whole content: pwrite(2) the new bytes at offset 0, then
 * cut the file to their length, then fsync(2) unless told not to. Writing
 * before truncating means a process killed half-way leaves the new bytes
 * followed by a tail of the old ones, never an empty file; a caller whose
 * format tolerates trailing whitespace pads `bytes` to the old length.
 */
export function replaceContent(
  fd: number,
  bytes: Uint8Array<ArrayBuffer>,
  path?: string,
  sync = true,
): void {
  const where = { path: path ?? `fd ${fd}` };
  let off = 0;
  while (off < bytes.length) {
    const rest = bytes.subarray(off);
    const n = Number(libc().pwrite(fd, rest, BigInt(rest.length), BigInt(off)));
    if (n < 0) {
      const e = errno();
      if (e === ERRNO.EINTR) continue;
      throw new SystemError("pwrite", e, where);
    }
    off += n;
  }
  check(libc().ftruncate(fd, BigInt(bytes.length)), "ftruncate", where);
  if (sync) check(libc().fsync(fd), "fsync", where);
}

/** ftruncate(2). */
export function ftruncate(fd: number, length = 0, path?: string): void {
  check(libc().ftruncate(fd, BigInt(length)), "ftruncate", { path: path ?? `fd ${fd}` });
}

/** fchmod(2): set the mode of an open file (no path, so no link is followed). */
export function fchmod(fd: number, mode: number, path?: string): void {
  check(libc().fchmod(fd, mode), "fchmod", { path: path ?? `fd ${fd}` });
}

/** fsync(2). */
export function fsync(fd: number, path?: string): void {
  check(libc().fsync(fd), "fsync", { path: path ?? `fd ${fd}` });
}

function decodeStat(buf: Uint8Array<ArrayBuffer>): FileStat {
  const o = platform().layout.stat;
  const v = new DataView(buf.buffer);
  return {
    dev: v.getBigUint64(o.dev, true),
    ino: v.getBigUint64(o.ino, true),
    mode: v.getUint32(o.mode, true),
    uid: v.getUint32(o.uid, true),
    gid: v.getUint32(o.gid, true),
    size: v.getBigInt64(o.size_, true),
    nlink: o.nlinkBytes === 8 ? Number(v.getBigUint64(o.nlink, true)) : v.getUint32(o.nlink, true),
  };
}

/** fstat(2). */
export function fstat(fd: number, path?: string): FileStat {
  const buf = new Uint8Array(platform().layout.stat.size);
  check(libc().fstat(fd, buf), "fstat", { path: path ?? `fd ${fd}` });
  return decodeStat(buf);
}

/** lstat(2): the link itself, not what it points to. */
export function lstat(path: string): FileStat {
  const buf = new Uint8Array(platform().layout.stat.size);
  check(libc().lstat(cstr(path, "path"), buf), "lstat", { path });
  return decodeStat(buf);
}

/** stat(2): what a path (following symbolic links) names. */
export function stat(path: string): FileStat {
  const buf = new Uint8Array(platform().layout.stat.size);
  check(libc().stat(cstr(path, "path"), buf), "stat", { path });
  return decodeStat(buf);
}

/**
 * Read a whole (small) file through libc. Deno's own file API asks for
 * `--allow-all` to read anything under /proc; this needs only `--allow-ffi`,
 * so the narrow permissions of the compiled binary suffice.
 *
 * @param path the file, typically under /proc
 * @param limit the most bytes to read
 * @returns its content as text
 * @throws {SystemError} ENOENT for a process that is gone, EACCES, ...
 */
export function readSmallFile(path: string, limit = 1 << 22): string {
  const fd = open(path, linux.O_RDONLY | linux.O_CLOEXEC | linux.O_NOCTTY);
  let total = 0;
  try {
    while (total < limit) {
      if (total === scratch.length) {
        const bigger = new Uint8Array(Math.min(scratch.length * 2, limit));
        bigger.set(scratch);
        scratch = bigger;
      }
      const room = scratch.subarray(total, Math.min(scratch.length, limit));
      const n = Number(libc().read(fd, room, BigInt(room.length)));
      if (n < 0) {
        const e = errno();
        if (e === ERRNO.EINTR) continue;
        throw new SystemError("read", e, { path });
      }
      if (n === 0) break;
      total += n;
    }
  } finally {
    close(fd);
  }
  return textDecoder.decode(scratch.subarray(0, total));
}

/** One buffer, reused by {@link readSmallFile}: /proc files are read often and are small. */
let scratch = new Uint8Array(16384);
const textDecoder = new TextDecoder();

/** One entry of a POSIX access ACL: whom it names and the permission bits it grants (4 r, 2 w, 1 x). */
export interface AclEntry {
  /** `user` and `group` name another uid or gid; the rest are the mode bits' own. */
  readonly tag: "owner" | "user" | "owning group" | "group" | "mask" | "other";
  /** The uid or gid of a `user` or `group` entry. */
  readonly id?: number;
  readonly perm: number;
}

/** The tags of `system.posix_acl_access` entries (linux/posix_acl.h). */
const ACL_TAGS: ReadonlyMap<number, AclEntry["tag"]> = new Map([
  [0x01, "owner"],
  [0x02, "user"],
  [0x04, "owning group"],
  [0x08, "group"],
  [0x10, "mask"],
  [0x20, "other"],
]);

/** The largest access ACL read: 8191 entries; a longer one cannot be told (ERANGE). */
const ACL_LIMIT = 4 + 8 * 8191;

/**
 * The access ACL a path itself (a link, not its target) carries
 * (`system.posix_acl_access`): users and groups its mode bits do not name may
 * then reach it, and its group bits show only the ACL's mask.
 *
 * @param path the file or directory
 * @returns its entries, or undefined when it has none or its file system keeps none
 * @throws {SystemError} when it cannot be told (ENOENT, EACCES, ERANGE, an unknown format)
 */
export function accessAcl(path: string): readonly AclEntry[] | undefined {
  const value = new Uint8Array(ACL_LIMIT);
  const n = Number(
    libc().lgetxattr(
      cstr(path, "path"),
      cstr("system.posix_acl_access", "name"),
      value,
      BigInt(value.length),
    ),
  );
  if (n < 0) {
    const e = errno();
    if (e === ERRNO.ENODATA || e === ERRNO.EOPNOTSUPP) return undefined;
    throw new SystemError("lgetxattr", e, { path });
  }
  const unknownFormat = () =>
    new SystemError("lgetxattr", ERRNO.EINVAL, {
      path,
      message: `${quote(path)}: an access ACL of unknown format`,
    });
  const view = new DataView(value.buffer, 0, n);
  if (n < 4 || (n - 4) % 8 !== 0 || view.getUint32(0, true) !== 2) throw unknownFormat();
  const entries: AclEntry[] = [];
  for (let at = 4; at < n; at += 8) {
    const tag = ACL_TAGS.get(view.getUint16(at, true));
    if (tag === undefined) throw unknownFormat();
    const perm = view.getUint16(at + 2, true);
    entries.push(
      tag === "user" || tag === "group"
        ? { tag, id: view.getUint32(at + 4, true), perm }
        : { tag, perm },
    );
  }
  return entries;
}

/**
 * readlink(2): where a symbolic link (such as /proc/self/fd/N) points.
 *
 * @param path the link
 * @returns its target
 * @throws {SystemError} ENOENT, EINVAL (not a link), EACCES
 */
export function readLink(path: string): string {
  const buf = new Uint8Array(4096);
  const n = Number(libc().readlink(cstr(path, "path"), buf, BigInt(buf.length)));
  check(n, "readlink", { path });
  return new TextDecoder().decode(buf.subarray(0, n));
}

/**
 * The names in a directory (without `.` and `..`), through libc, for
 * /proc listings under narrow permissions.
 *
 * @param path the directory
 * @returns the entry names
 * @throws {SystemError} ENOENT, EACCES, ENOTDIR
 */
export function listDirectory(path: string): string[] {
  const c = libc();
  const dir = c.opendir(cstr(path, "path"));
  if (dir === null) throw new SystemError("opendir", errno(), { path });
  const names: string[] = [];
  try {
    for (;;) {
      const entry = c.readdir(dir);
      if (entry === null) break;
      const name = new Deno.UnsafePointerView(entry).getCString(19); // d_name in struct dirent64
      if (name !== "." && name !== "..") names.push(name);
    }
  } finally {
    c.closedir(dir);
  }
  return names;
}

/**
 * mkdir(2), then the mode set exactly (the umask would narrow it) through a
 * descriptor on the new directory, opened without following a link.
 *
 * @param path the directory to make (its parent must exist)
 * @param mode its permission bits
 * @returns true when made, false when something already has that name
 * @throws {SystemError} ENOENT (no parent), EACCES, ENOTDIR, ...
 */
export function makeDirectory(path: string, mode: number): boolean {
  if (libc().mkdir(cstr(path, "path"), mode) !== 0) {
    const e = errno();
    if (e === ERRNO.EEXIST) return false;
    throw new SystemError("mkdir", e, { path });
  }
  const fd = open(
    path,
    linux.O_RDONLY | linux.O_CLOEXEC | platform().O_DIRECTORY | platform().O_NOFOLLOW,
  );
  try {
    fchmod(fd, mode, path);
  } finally {
    close(fd);
  }
  return true;
}

/**
 * The file system type (`f_type`) of the file system holding a path.
 *
 * @param path a path on that file system
 * @returns the magic number, such as {@link linux.NFS_SUPER_MAGIC}
 */
export function statfsType(path: string): number {
  const buf = new Uint8Array(linux.SIZEOF_STATFS);
  check(libc().statfs(cstr(path, "path"), buf), "statfs", { path });
  return Number(new DataView(buf.buffer).getBigInt64(0, true) & 0xffffffffn);
}

/**
 * flock(2) without waiting.
 *
 * flock with `LOCK_NB` fails only with EWOULDBLOCK, EINTR, EBADF, EINVAL or
 * ENOLCK. Any other errno is not flock's (it was changed before it could be
 * read, as an ENOENT seen under load showed): the call is made again rather
 * than a held lock reported as a failure.
 *
 * @param fd the descriptor
 * @param op `LOCK_EX`, `LOCK_SH` or `LOCK_UN` (`LOCK_NB` is added)
 * @param path the file, for the error message
 * @returns false when another open file description holds a conflicting lock
 * @throws {SystemError} EBADF, EINVAL, ENOLCK
 */
export function tryFlock(fd: number, op: number, path?: string): boolean {
  for (let strange = 0;;) {
    if (libc().flock(fd, op | linux.LOCK_NB) === 0) return true;
    const e = errno();
    if (e === ERRNO.EAGAIN) return false;
    if (e === ERRNO.EINTR) continue;
    if (FLOCK_ERRORS.has(e) || ++strange > 3) {
      throw new SystemError("flock", e, { path: path ?? `fd ${fd}` });
    }
  }
}

/** The errors flock(2) can report besides EWOULDBLOCK and EINTR. */
const FLOCK_ERRORS: ReadonlySet<number> = new Set([ERRNO.EBADF, ERRNO.EINVAL, ERRNO.ENOLCK]);

/**
 * fcntl(F_GETLK or F_OFD_GETLK): who holds a POSIX or OFD lock that would
 * block a write lock on the whole file.
 *
 * @param fd the descriptor
 * @param ofd test open-file-description locks instead of process locks
 * @returns the holder's pid (-1 for an OFD lock, whose owner has no pid), or 0 when unlocked
 */
export function getlk(fd: number, ofd: boolean): number {
  const o = platform().layout.flock;
  const buf = new Uint8Array(o.size);
  const v = new DataView(buf.buffer);
  v.setInt16(o.type, linux.F_WRLCK, true);
  v.setInt16(o.whence, 0, true);
  const cmd = ofd ? linux.F_OFD_GETLK : linux.F_GETLK;
  check(libc().fcntl_lock(fd, cmd, buf), ofd ? "fcntl(F_OFD_GETLK)" : "fcntl(F_GETLK)");
  if (v.getInt16(o.type, true) === linux.F_UNLCK) return 0;
  const pid = v.getInt32(o.pid, true);
  return pid === 0 ? -1 : pid;
}

/** An open-file-description lock on a byte range, as {@link ofdConflict} finds it. */
export interface RangeLock {
  /** Its first byte. */
  readonly start: bigint;
  /** Its length; 0 for "to the end of any file". */
  readonly len: bigint;
  /** A write (exclusive) lock; false for a read (shared) one. */
  readonly write: boolean;
}

function flockStruct(type: number, start: bigint, len: bigint): Uint8Array<ArrayBuffer> {
  const o = platform().layout.flock;
  const buf = new Uint8Array(o.size);
  const v = new DataView(buf.buffer);
  v.setInt16(o.type, type, true);
  v.setInt16(o.whence, 0, true);
  v.setBigInt64(o.start, start, true);
  v.setBigInt64(o.len, len, true);
  return buf;
}

/**
 * fcntl(F_OFD_SETLK) on a byte range, without waiting: a lock owned by the
 * open file description (not the process), released when its last
 * descriptor closes, and independent of flock(2) on the same file.
 *
 * @param fd the descriptor
 * @param type "read", "write", or "unlock"
 * @param start the first byte
 * @param len how many bytes (0: to the end of any file)
 * @returns false when another description holds a conflicting lock
 * @throws {SystemError} for any other failure
 */
export function ofdLock(
  fd: number,
  type: "read" | "write" | "unlock",
  start: bigint,
  len: bigint,
): boolean {
  const t = type === "read" ? linux.F_RDLCK : type === "write" ? linux.F_WRLCK : linux.F_UNLCK;
  const buf = flockStruct(t, start, len);
  for (;;) {
    if (libc().fcntl_lock(fd, linux.F_OFD_SETLK, buf) === 0) return true;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.EAGAIN || e === ERRNO.EACCES) return false;
    throw new SystemError("fcntl(F_OFD_SETLK)", e, { path: `fd ${fd}` });
  }
}

/**
 * fcntl(F_OFD_GETLK): a lock of another open file description (read or
 * write) on the byte range, if any.
 *
 * @param fd the descriptor
 * @param start the first byte
 * @param len how many bytes (0: to the end of any file)
 * @returns one such lock (the kernel's choice), or undefined when there is none
 */
export function ofdConflict(fd: number, start: bigint, len: bigint): RangeLock | undefined {
  const o = platform().layout.flock;
  const buf = flockStruct(linux.F_WRLCK, start, len);
  check(libc().fcntl_lock(fd, linux.F_OFD_GETLK, buf), "fcntl(F_OFD_GETLK)");
  const v = new DataView(buf.buffer);
  const type = v.getInt16(o.type, true);
  if (type === linux.F_UNLCK) return undefined;
  return {
    start: v.getBigInt64(o.start, true),
    len: v.getBigInt64(o.len, true),
    write: type === linux.F_WRLCK,
  };
}

/**
 * Set or clear `FD_CLOEXEC` on a descriptor.
 *
 * @param fd the descriptor
 * @param on true to close it on exec, false to let a program inherit it
 */
export function setCloexec(fd: number, on: boolean): void {
  const flags = check(libc().fcntl(fd, linux.F_GETFD, 0n), "fcntl(F_GETFD)", { path: `fd ${fd}` });
  const next = on ? flags | linux.FD_CLOEXEC : flags & ~linux.FD_CLOEXEC;
  if (next !== flags) {
    check(libc().fcntl(fd, linux.F_SETFD, BigInt(next)), "fcntl(F_SETFD)", { path: `fd ${fd}` });
  }
}

/**
 * Whether a descriptor has `FD_CLOEXEC` set.
 *
 * @throws {SystemError} EBADF when the descriptor is not open
 */
export function getCloexec(fd: number): boolean {
  const flags = check(libc().fcntl(fd, linux.F_GETFD, 0n), "fcntl(F_GETFD)", { path: `fd ${fd}` });
  return (flags & linux.FD_CLOEXEC) !== 0;
}

/**
 * Duplicate a descriptor to the lowest free number at or above `min`, close-on-exec.
 *
 * @returns the new descriptor
 */
export function dupCloexec(fd: number, min: number): number {
  return check(libc().fcntl(fd, linux.F_DUPFD_CLOEXEC, BigInt(min)), "fcntl(F_DUPFD_CLOEXEC)", {
    path: `fd ${fd}`,
  });
}

/**
 * pipe2(2).
 *
 * @param flags `O_CLOEXEC` and/or `O_NONBLOCK`
 * @returns `[readEnd, writeEnd]`
 */
export function pipe(flags: number = linux.O_CLOEXEC): [number, number] {
  const fds = new Int32Array(2);
  check(libc().pipe2(fds, flags), "pipe2");
  return [fds[0]!, fds[1]!];
}

/**
 * socketpair(AF_UNIX, SOCK_STREAM or SOCK_DGRAM | SOCK_CLOEXEC).
 *
 * @param kind a byte stream, or datagrams (one message at a time, whole)
 * @returns the two connected ends
 */
export function socketpair(kind: "stream" | "datagram" = "stream"): [number, number] {
  const fds = new Int32Array(2);
  const type = kind === "stream" ? linux.SOCK_STREAM : linux.SOCK_DGRAM;
  check(libc().socketpair(linux.AF_UNIX, type | linux.SOCK_CLOEXEC, 0, fds), "socketpair");
  return [fds[0]!, fds[1]!];
}

/** The address of a buffer, as a struct field holds it. */
function addressOf(buf: Uint8Array<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** The room a control message with `count` descriptors takes (CMSG_SPACE). */
function fdsSpace(count: number): number {
  return platform().layout.msghdr.cmsghdr + Math.ceil((4 * count) / 8) * 8;
}

/**
 * A `struct msghdr` over one buffer and a control buffer. What it points
 * to (the iovec it returns too) must stay alive until the call returns.
 */
function messageHeader(
  data: Uint8Array<ArrayBuffer>,
  size: number,
  control: Uint8Array<ArrayBuffer>,
): { msg: Uint8Array<ArrayBuffer>; iov: Uint8Array<ArrayBuffer> } {
  const o = platform().layout.msghdr;
  const iov = new Uint8Array(new BigUint64Array([addressOf(data), BigInt(size)]).buffer);
  const msg = new Uint8Array(o.size);
  const m = new DataView(msg.buffer);
  m.setBigUint64(o.iov, addressOf(iov), true);
  m.setBigUint64(o.iovlen, 1n, true);
  m.setBigUint64(o.control, addressOf(control), true);
  m.setBigUint64(o.controllen, BigInt(control.length), true);
  return { msg, iov };
}

/**
 * sendmsg(2) of one message with descriptors attached (SCM_RIGHTS): the
 * receiver gets its own copies of them, which keep the open file descriptions
 * alive (and a flock held) while the message waits to be read.
 *
 * @param fd a unix socket
 * @param bytes the message
 * @param fds the descriptors to pass
 * @throws {SystemError} when it cannot be sent (EMSGSIZE for a message too large)
 */
export function sendWithFds(
  fd: number,
  bytes: Uint8Array<ArrayBuffer>,
  fds: readonly number[],
): void {
  const o = platform().layout.msghdr;
  const control = new Uint8Array(fdsSpace(fds.length));
  const c = new DataView(control.buffer);
  c.setBigUint64(0, BigInt(o.cmsghdr + 4 * fds.length), true); // CMSG_LEN
  c.setInt32(8, linux.SOL_SOCKET, true);
  c.setInt32(12, linux.SCM_RIGHTS, true);
  fds.forEach((f, i) => c.setInt32(o.cmsghdr + 4 * i, f, true));
  const { msg, iov } = messageHeader(bytes, bytes.length, control);
  for (;;) {
    const sent = Number(libc().sendmsg(fd, msg, linux.MSG_NOSIGNAL));
    void iov; // alive until the call returned
    if (sent >= 0) return;
    const e = errno();
    if (e !== ERRNO.EINTR) throw new SystemError("sendmsg", e, { path: `fd ${fd}` });
  }
}

/**
 * recvmsg(2) of one message and the descriptors attached to it, without
 * waiting; the descriptors come close-on-exec.
 *
 * @param fd a unix socket
 * @param max the longest message taken
 * @param maxFds the most descriptors taken
 * @returns the message and the descriptors, or undefined when none is waiting
 * @throws {SystemError} for any other failure
 */
export function recvWithFds(
  fd: number,
  max: number,
  maxFds: number,
): { readonly bytes: Uint8Array<ArrayBuffer>; readonly fds: number[] } | undefined {
  const o = platform().layout.msghdr;
  const bytes = new Uint8Array(max);
  const control = new Uint8Array(fdsSpace(maxFds));
  const { msg, iov } = messageHeader(bytes, max, control);
  const m = new DataView(msg.buffer);
  let n: number;
  for (;;) {
    n = Number(libc().recvmsg(fd, msg, linux.MSG_DONTWAIT | linux.MSG_CMSG_CLOEXEC));
    void iov; // alive until the call returned
    if (n >= 0) break;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.EAGAIN) return undefined;
    throw new SystemError("recvmsg", e, { path: `fd ${fd}` });
  }
  const fds: number[] = [];
  const c = new DataView(control.buffer);
  const used = Number(m.getBigUint64(o.controllen, true));
  if (
    used >= o.cmsghdr && c.getInt32(8, true) === linux.SOL_SOCKET &&
    c.getInt32(12, true) === linux.SCM_RIGHTS
  ) {
    const count = (Number(c.getBigUint64(0, true)) - o.cmsghdr) / 4;
    for (let i = 0; i < count; i++) fds.push(c.getInt32(o.cmsghdr + 4 * i, true));
  }
  return { bytes: bytes.subarray(0, n), fds };
}

/** A `struct sockaddr_un` and the length to pass with it. */
export interface UnixAddress {
  readonly addr: Uint8Array<ArrayBuffer>;
  readonly len: number;
}

/**
 * The one builder of a `struct sockaddr_un`: a path, or `@name` for the
 * abstract namespace (sun_path[0] is NUL, the name follows, unterminated).
 *
 * @param address a path, or `@name`
 * @param syscall the call it is for, named in the error
 * @returns the address and its length
 * @throws {SystemError} ENAMETOOLONG when it does not fit in 108 bytes
 * @throws {TypeError} when it holds a NUL byte
 */
export function sockaddrUnix(address: string, syscall = "bind"): UnixAddress {
  const abstract = address.startsWith("@");
  const name = abstract
    ? cstr(address.slice(1), "socket address").subarray(0, -1)
    : cstr(address, "socket path"); // with its NUL
  const room = linux.SIZEOF_SOCKADDR_UN - 2 - (abstract ? 1 : 0);
  if (name.length > room) {
    throw new SystemError(syscall, ERRNO.ENAMETOOLONG, {
      path: address,
      message: `socket address ${quote(address)} is longer than 107 bytes`,
    });
  }
  const addr = new Uint8Array(linux.SIZEOF_SOCKADDR_UN);
  new DataView(addr.buffer).setUint16(0, linux.AF_UNIX, true);
  addr.set(name, abstract ? 3 : 2);
  return { addr, len: 2 + (abstract ? 1 : 0) + name.length };
}

/**
 * socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC), unbound.
 *
 * @param nonblocking add `SOCK_NONBLOCK`
 * @returns the descriptor
 */
export function unixDatagramSocket(nonblocking: boolean): number {
  const type = linux.SOCK_DGRAM | linux.SOCK_CLOEXEC | (nonblocking ? linux.SOCK_NONBLOCK : 0);
  return check(libc().socket(linux.AF_UNIX, type, 0), "socket");
}

/**
 * socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK) bound to a path:
 * a datagram listener such as a `NOTIFY_SOCKET`.
 *
 * @param path where to bind it (must not exist yet)
 * @returns the descriptor
 * @throws {SystemError} when the socket cannot be made or bound
 */
export function bindUnixDatagram(path: string): number {
  const { addr, len } = sockaddrUnix(path, "bind");
  const fd = unixDatagramSocket(true);
  if (libc().bind(fd, addr, len) < 0) {
    const e = errno();
    close(fd);
    throw new SystemError("bind", e, { path });
  }
  return fd;
}

/**
 * sendto(2) of one datagram with `MSG_NOSIGNAL`, retried on EINTR.
 *
 * @param fd the socket
 * @param bytes the datagram
 * @param to the address, from {@link sockaddrUnix}
 * @param path the address as text, for the error
 * @returns false when the socket's queue is full (EAGAIN, ENOBUFS): try again later
 * @throws {SystemError} for any other failure (ENOENT, ECONNREFUSED: no listener)
 */
export function sendDatagram(
  fd: number,
  bytes: Uint8Array<ArrayBuffer>,
  to: UnixAddress,
  path: string,
): boolean {
  for (;;) {
    const n = Number(
      libc().sendto(fd, bytes, BigInt(bytes.length), linux.MSG_NOSIGNAL, to.addr, to.len),
    );
    if (n >= 0) return true;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.EAGAIN || e === ERRNO.ENOBUFS) return false;
    throw new SystemError("sendto", e, { path });
  }
}

/**
 * recv(2) into a buffer, retried on EINTR.
 *
 * @param fd the socket
 * @param buf where to put the bytes
 * @param flags `MSG_PEEK`, `MSG_DONTWAIT`, ...
 * @returns how many bytes were received, or `undefined` when nothing is
 *   waiting on a non-blocking receive (EAGAIN)
 * @throws {SystemError} for any other failure
 */
export function recv(fd: number, buf: Uint8Array<ArrayBuffer>, flags: number): number | undefined {
  for (;;) {
    const n = Number(libc().recv(fd, buf, BigInt(buf.length), flags));
    if (n >= 0) return n;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.EAGAIN) return undefined;
    throw new SystemError("recv", e, { path: `fd ${fd}` });
  }
}

/**
 * recv(2) with `MSG_DONTWAIT`: one datagram (or what a stream has), if any.
 *
 * @param fd the socket
 * @param max the largest datagram to take
 * @returns the bytes, or `undefined` when nothing is waiting (EAGAIN)
 * @throws {SystemError} for any other failure
 */
export function recvNow(fd: number, max: number): Uint8Array<ArrayBuffer> | undefined {
  const buf = new Uint8Array(max);
  const n = recv(fd, buf, linux.MSG_DONTWAIT);
  return n === undefined ? undefined : buf.subarray(0, n);
}

/**
 * read(2) once into a caller's buffer from a non-blocking descriptor,
 * retried on EINTR.
 *
 * @param fd the descriptor
 * @param buf where to put the bytes (its whole length is offered)
 * @param path what it is, for the error
 * @returns how many bytes were read (0 at end of file), or `undefined` when
 *   nothing is there yet (EAGAIN)
 * @throws {SystemError} for any other failure
 */
export function readNow(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
  path?: string,
): number | undefined {
  for (;;) {
    const n = Number(libc().read(fd, buf, BigInt(buf.length)));
    if (n >= 0) return n;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.EAGAIN) return undefined;
    throw new SystemError("read", e, { path: path ?? `fd ${fd}` });
  }
}

/**
 * write(2) once to a non-blocking descriptor, retried on EINTR: for a
 * wake-up byte, where a full pipe already means "awake".
 *
 * @param fd the descriptor
 * @param bytes what to write
 * @returns how many bytes were written, or `undefined` when it is full (EAGAIN)
 * @throws {SystemError} for any other failure
 */
export function writeNow(fd: number, bytes: Uint8Array<ArrayBuffer>): number | undefined {
  for (;;) {
    const n = Number(libc().write(fd, bytes, BigInt(bytes.length)));
    if (n >= 0) return n;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.EAGAIN) return undefined;
    throw new SystemError("write", e, { path: `fd ${fd}` });
  }
}

/**
 * Set or clear `O_NONBLOCK` on a descriptor (fcntl F_GETFL/F_SETFL).
 *
 * @param fd the descriptor
 * @param on true for non-blocking
 */
export function setNonblocking(fd: number, on: boolean): void {
  const where = { path: `fd ${fd}` };
  const flags = check(libc().fcntl(fd, linux.F_GETFL, 0n), "fcntl(F_GETFL)", where);
  const next = on ? flags | linux.O_NONBLOCK : flags & ~linux.O_NONBLOCK;
  if (next !== flags) check(libc().fcntl(fd, linux.F_SETFL, BigInt(next)), "fcntl(F_SETFL)", where);
}

/**
 * chown(2).
 *
 * @param path the file
 * @param uid the new owner
 * @param gid the new group
 * @throws {SystemError} on failure
 */
export function chown(path: string, uid: number, gid: number): void {
  check(libc().chown(cstr(path, "path"), uid, gid), "chown", { path });
}

/** One descriptor to watch with {@link poll}. */
export interface PollFd {
  readonly fd: number;
  readonly events: number;
}

function pollBuffer(fds: readonly PollFd[]): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(8 * fds.length);
  const v = new DataView(buf.buffer);
  fds.forEach((p, i) => {
    v.setInt32(i * 8, p.fd, true);
    v.setInt16(i * 8 + 4, p.events, true);
  });
  return buf;
}

function pollResult(buf: Uint8Array<ArrayBuffer>, count: number): number[] {
  const v = new DataView(buf.buffer);
  return Array.from({ length: count }, (_, i) => v.getInt16(i * 8 + 6, true));
}

/**
 * poll(2) on a worker thread: the event loop keeps running while it waits.
 * An interrupted or failed wait reads as "nothing happened"; the caller
 * checks its condition again.
 *
 * @param fds what to watch
 * @param timeoutMs the longest wait; -1 for none
 * @returns the `revents` of each entry, in order
 */
export async function pollWait(fds: readonly PollFd[], timeoutMs: number): Promise<number[]> {
  const buf = pollBuffer(fds);
  const n = await libc().poll_wait(buf, BigInt(fds.length), Math.max(-1, Math.ceil(timeoutMs)));
  return n > 0 ? pollResult(buf, fds.length) : fds.map(() => 0);
}

/**
 * poll(2) on this thread, for a zero or very short timeout.
 *
 * @returns the `revents` of each entry, in order
 */
export function pollNow(fds: readonly PollFd[], timeoutMs = 0): number[] {
  const buf = pollBuffer(fds);
  const n = libc().poll(buf, BigInt(fds.length), timeoutMs);
  return n > 0 ? pollResult(buf, fds.length) : fds.map(() => 0);
}

/**
 * pidfd_open(2): a descriptor that names one process for as long as it is
 * open, even after its pid is reused. Close-on-exec.
 *
 * @param pid the process
 * @returns the pidfd, or `undefined` when no such process exists (ESRCH)
 * @throws {SystemError} for any other failure (ENOSYS on old kernels, EMFILE)
 */
export function pidfdOpen(pid: number): number | undefined {
  const r = Number(libc().syscall(BigInt(linux.SYS_pidfd_open), BigInt(pid), 0n, 0n, 0n));
  if (r >= 0) return r;
  const e = errno();
  if (e === ERRNO.ESRCH) return undefined;
  throw new SystemError("pidfd_open", e, { path: `pid ${pid}` });
}

/**
 * pidfd_send_signal(2).
 *
 * @param pidfd from {@link pidfdOpen}
 * @param signal the signal number (0 only tests)
 * @returns false when the process has already exited (ESRCH)
 * @throws {SystemError} EPERM and the like
 */
export function pidfdSendSignal(pidfd: number, signal: number, what = `pidfd ${pidfd}`): boolean {
  const r = Number(
    libc().syscall(BigInt(linux.SYS_pidfd_send_signal), BigInt(pidfd), BigInt(signal), 0n, 0n),
  );
  if (r === 0) return true;
  const e = errno();
  if (e === ERRNO.ESRCH) return false;
  throw new SystemError("pidfd_send_signal", e, { path: what });
}

/**
 * setpgid(2).
 *
 * @param pid the process (0: this one)
 * @param pgid its new process group (0: its own pid, a new group it leads)
 * @throws {SystemError} on failure
 */
export function setpgid(pid: number, pgid: number): void {
  check(libc().setpgid(pid, pgid), "setpgid", { path: `pid ${pid}` });
}

/**
 * kill(2).
 *
 * @returns false when no such process (or process group) exists
 * @throws {SystemError} EPERM and the like
 */
export function kill(pid: number, signal: number): boolean {
  if (libc().kill(pid, signal) === 0) return true;
  const e = errno();
  if (e === ERRNO.ESRCH) return false;
  throw new SystemError("kill", e, { path: `pid ${pid}` });
}

/** How a child ended, from a `waitpid` status. */
export type ExitReason =
  | { readonly exited: true; readonly code: number }
  | { readonly exited: false; readonly signal: number; readonly coreDumped: boolean };

/** Decode a `waitpid` status word. */
export function decodeWaitStatus(status: number): ExitReason {
  const sig = status & 0x7f;
  if (sig === 0) return { exited: true, code: (status >> 8) & 0xff };
  return { exited: false, signal: sig, coreDumped: (status & 0x80) !== 0 };
}

/**
 * waitpid(pid, WNOHANG): reap a child that has ended, without waiting.
 *
 * @returns how it ended, or `undefined` while it still runs (or is not our child)
 */
export function reap(pid: number): ExitReason | undefined {
  const status = new Int32Array(1);
  for (;;) {
    const r = libc().waitpid(pid, status, linux.WNOHANG);
    if (r > 0) return decodeWaitStatus(status[0]!);
    if (r === 0) return undefined;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.ECHILD) return undefined;
    throw new SystemError("waitpid", e, { path: `pid ${pid}` });
  }
}

/**
 * waitpid(-1, WNOHANG): reap any child that has ended (the supervisor's own
 * child or an orphan reparented to it), without waiting.
 *
 * @returns its pid and how it ended, or `undefined` when none has ended
 */
export function reapAny(): { readonly pid: number; readonly reason: ExitReason } | undefined {
  const status = new Int32Array(1);
  for (;;) {
    const pid = libc().waitpid(-1, status, linux.WNOHANG);
    if (pid > 0) return { pid, reason: decodeWaitStatus(status[0]!) };
    if (pid === 0) return undefined;
    const e = errno();
    if (e === ERRNO.EINTR) continue;
    if (e === ERRNO.ECHILD) return undefined;
    throw new SystemError("waitpid", e, { path: "any child" });
  }
}

/**
 * access(2) with `X_OK`: may this process execute the file?
 *
 * @returns true when it may
 */
export function isExecutable(path: string): boolean {
  return libc().access(cstr(path, "path"), 1) === 0;
}

/**
 * access(2) with `W_OK`: may this process write the file?
 *
 * @returns true when it may
 */
export function isWritable(path: string): boolean {
  return libc().access(cstr(path, "path"), 2) === 0;
}

/** umask(2): set the mask and return the old one. */
export function umask(mask: number): number {
  return libc().umask(mask);
}

/** The ids of this process. */
export const ids = {
  pid: (): number => libc().getpid(),
  ppid: (): number => libc().getppid(),
  sid: (pid = 0): number => libc().getsid(pid),
  pgid: (pid = 0): number => libc().getpgid(pid),
  uid: (): number => libc().getuid(),
  euid: (): number => libc().geteuid(),
  gid: (): number => libc().getgid(),
  egid: (): number => libc().getegid(),
};

/** A user's account entry. */
export interface User {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

function readPasswd(p: Deno.PointerValue): User | undefined {
  if (p === null) return undefined;
  const v = new Deno.UnsafePointerView(p);
  const str = (off: number) => {
    const ptr = v.getPointer(off);
    return ptr === null ? "" : new Deno.UnsafePointerView(ptr).getCString();
  };
  return { name: str(0), uid: v.getUint32(16), gid: v.getUint32(20), home: str(32) };
}

/**
 * getpwnam(3), or getpwuid(3) for a number.
 *
 * @param user a name or a numeric uid
 * @returns the entry, or `undefined` when there is none
 */
export function lookupUser(user: string): User | undefined {
  if (/^[0-9]+$/.test(user)) return readPasswd(libc().getpwuid(Number(user)));
  return readPasswd(libc().getpwnam(cstr(user, "user name")));
}

/**
 * A user as messages name it: `user "nobody" (uid 65534)`, or `uid 1234`
 * when the account has no entry (or cannot be looked up).
 *
 * @param uid the user id
 * @returns the words
 */
export function describeUid(uid: number): string {
  try {
    const name = lookupUser(String(uid))?.name;
    return name === undefined ? `uid ${uid}` : `user ${quote(name)} (uid ${uid})`;
  } catch {
    return `uid ${uid}`;
  }
}

/**
 * A group as messages name it: `group "adm" (gid 4)`, or `gid 1234` when
 * the group has no entry (or cannot be looked up).
 *
 * @param gid the group id
 * @returns the words
 */
export function describeGid(gid: number): string {
  try {
    const p = libc().getgrgid(gid);
    const name = p === null ? null : new Deno.UnsafePointerView(p).getPointer(0);
    return name === null
      ? `gid ${gid}`
      : `group ${quote(new Deno.UnsafePointerView(name).getCString())} (gid ${gid})`;
  } catch {
    return `gid ${gid}`;
  }
}

/**
 * getgrnam(3), or getgrgid(3) for a number.
 *
 * @param group a name or a numeric gid
 * @returns the gid, or `undefined` when there is no such group
 */
export function lookupGroup(group: string): number | undefined {
  const p = /^[0-9]+$/.test(group)
    ? libc().getgrgid(Number(group))
    : libc().getgrnam(cstr(group, "group name"));
  return p === null ? undefined : new Deno.UnsafePointerView(p).getUint32(16);
}

/**
 * Become another user for good: supplementary groups, then gid, then uid (in
 * that order, while still privileged).
 *
 * @param user the account whose groups to take (initgroups)
 * @param gid the primary group
 */
export function becomeUser(user: User, gid: number): void {
  check(libc().initgroups(cstr(user.name, "user name"), gid), "initgroups", { path: user.name });
  check(libc().setgid(gid), "setgid", { path: String(gid) });
  check(libc().setuid(user.uid), "setuid", { path: String(user.uid) });
}

/**
 * Put every signal back to its default action and unblock them all, as a
 * program expects to find them after exec (an ignored signal would survive
 * exec; Deno's runtime ignores SIGPIPE).
 */
export function resetSignals(): void {
  const c = libc();
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === 9 || sig === 19 || sig === 32 || sig === 33) continue;
    c.signal(sig, null);
  }
  const set = new Uint8Array(linux.SIZEOF_SIGSET);
  c.sigemptyset(set);
  c.pthread_sigmask(linux.SIG_SETMASK, set, null);
}

/**
 * execve(2): replace this process with a program, keeping the pid and every
 * descriptor not marked close-on-exec. Returns only by throwing.
 *
 * @param path the program's path
 * @param argv its arguments, `argv[0]` included
 * @param env its environment
 * @throws {SystemError} when the exec fails
 */
export function execve(path: string, argv: readonly string[], env: Record<string, string>): never {
  const p = cstr(path, "program path");
  const args = new CStringArray(argv, "argument");
  const envp = new CStringArray(
    Object.entries(env).map(([k, v]) => `${k}=${v}`),
    "environment entry",
  );
  libc().execve(p, args.buffer, envp.buffer);
  throw new SystemError("execve", errno(), { path });
}

/**
 * prctl(PR_SET_CHILD_SUBREAPER, 1): orphans below this process are
 * reparented to it instead of to PID 1.
 */
export function becomeSubreaper(): void {
  setSubreaper(true);
}

/**
 * prctl(PR_SET_PDEATHSIG): the signal this process gets when its parent
 * (the thread that started it) exits. Kept across execve, cleared by a
 * change of user: set it after dropping privileges.
 *
 * @param signal the signal number, 0 for none
 */
export function setParentDeathSignal(signal: number): void {
  check(
    libc().prctl(linux.PR_SET_PDEATHSIG, BigInt(signal), 0n, 0n, 0n),
    "prctl(PR_SET_PDEATHSIG)",
  );
}

/**
 * prctl(PR_SET_CHILD_SUBREAPER): turn the child subreaper attribute on or
 * off. Orphans already reparented stay this process's children.
 *
 * @param on the new setting
 */
export function setSubreaper(on: boolean): void {
  check(
    libc().prctl(linux.PR_SET_CHILD_SUBREAPER, on ? 1n : 0n, 0n, 0n, 0n),
    "prctl(PR_SET_CHILD_SUBREAPER)",
  );
}

/**
 * prctl(PR_GET_CHILD_SUBREAPER): whether this process is a child subreaper.
 *
 * @returns the setting
 */
export function isSubreaper(): boolean {
  const out = new Int32Array(1);
  const ptr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(out)));
  check(
    libc().prctl(linux.PR_GET_CHILD_SUBREAPER, ptr, 0n, 0n, 0n),
    "prctl(PR_GET_CHILD_SUBREAPER)",
  );
  return out[0] !== 0;
}

/** getrlimit(2) of `RLIMIT_NOFILE` and friends: `[soft, hard]`. */
export function getrlimit(resource: number): [bigint, bigint] {
  const buf = new BigUint64Array(2);
  check(libc().getrlimit(resource, buf), "getrlimit");
  return [buf[0]!, buf[1]!];
}

/** setrlimit(2). */
export function setrlimit(resource: number, soft: bigint, hard: bigint): void {
  check(libc().setrlimit(resource, new BigUint64Array([soft, hard])), "setrlimit");
}

/** strerror(3): the C library's text for an errno, for `%m`-style messages. */
export function strerror(errnum: number): string {
  const p = libc().strerror(errnum);
  return p === null ? `errno ${errnum}` : new Deno.UnsafePointerView(p).getCString();
}

/**
 * clock_gettime(CLOCK_MONOTONIC) in microseconds: the clock systemd's
 * `MONOTONIC_USEC=` names.
 *
 * @returns microseconds since an arbitrary fixed point (boot)
 */
export function monotonicMicros(): bigint {
  const ts = new BigInt64Array(2);
  check(libc().clock_gettime(linux.CLOCK_MONOTONIC, ts), "clock_gettime");
  return ts[0]! * 1_000_000n + ts[1]! / 1000n;
}

/**
 * Send one datagram to an AF_UNIX datagram socket by address, from a fresh
 * unbound socket (what `sd_notify` does). An address starting with `@` is in
 * the abstract namespace.
 *
 * @param address a path, or `@name` for an abstract socket
 * @param bytes the datagram
 * @throws {SystemError} when the address is too long or the send fails
 *   (ENOENT, ECONNREFUSED, EACCES), naming the address
 */
export function sendUnixDatagram(address: string, bytes: Uint8Array<ArrayBuffer>): void {
  const to = sockaddrUnix(address, "sendto");
  const fd = unixDatagramSocket(false);
  try {
    if (!sendDatagram(fd, bytes, to, address)) {
      throw new SystemError("sendto", ERRNO.ENOBUFS, { path: address });
    }
  } finally {
    close(fd);
  }
}
