/**
 * The PID lock file: a regular file that holds one process id and a newline,
 * kept locked with flock(2) for the whole life of the process it names. The
 * lock, not the number, says whether the daemon runs: it is released by the
 * kernel the moment the last holder exits, before any zombie is reaped, so a
 * stale or recycled pid is never mistaken for a live daemon.
 *
 * @module
 */

// The ffi modules themselves, not their index: `status` loads this file and
// must not load the spawn and syslog bindings the index also re-exports.
import {
  C,
  close,
  fchmod,
  type FileStat,
  fstat,
  fsync,
  ftruncate,
  getlk,
  ids,
  pidfdOpen,
  pollNow,
  pollWait,
  pread,
  read,
  replaceContent,
  setCloexec,
  tryFlock,
} from "../ffi/sys.ts";
import { ERRNO, quote, SystemError } from "../ffi/errors.ts";
import { checkPlainFile, openBeside, reopenDescriptor } from "../ffi/files.ts";
import {
  type FileIdentity,
  holderFacts,
  holdsLockInFdinfo,
  isOurs,
  lockContext,
  lockHolders,
  type LockLine,
  locksOnFile,
} from "./holders.ts";
import { lockExclusive, openLockFile } from "./lockfile.ts";
import { otherWriter } from "./writers.ts";
import { createTemp, renameInto } from "./replace.ts";

/** The largest pid Linux hands out (`pid_max` can be at most 2^22). */
const PID_MAX = 4_194_304;
/** A pid file longer than this is garbage, not a pid. */
const MAX_PIDFILE_BYTES = 64;

/** Options of {@link PidFile.acquire}. */
export interface AcquireOptions {
  /**
   * How long to wait for another holder to let go, in milliseconds.
   * @default {0} fail at once
   */
  readonly wait?: number;
  /**
   * The mode of a newly created file (before the umask).
   * @default {0o644}
   */
  readonly mode?: number;
  /**
   * The pid to write into the file.
   * @default {Deno.pid} this process
   */
  readonly pid?: number;
}

/** What {@link PidFile.probe} found. */
export type ProbeResult =
  | {
    /** Some process holds a lock on the file. */
    readonly state: "running";
    /** The pid the file names; undefined while it is empty or unreadable. */
    readonly pid: number | undefined;
  }
  | {
    /** Nobody holds the lock, yet the file names a pid: left by a dead daemon. */
    readonly state: "stale";
    readonly pid: number;
  }
  | {
    /** No file, or an unlocked file that names no pid. */
    readonly state: "absent";
  };

/**
 * Another process holds the lock.
 *
 * @example
 * ```ts
 * import { AlreadyRunningError } from "./pidfile.ts";
 * const err = new AlreadyRunningError("/run/app.pid", 4242);
 * console.log(err.message); // already running (pid 4242)
 * ```
 */
export class AlreadyRunningError extends Error {
  /** The command's exit code for it: 3, nothing to do. */
  readonly exitCode: 3 = 3;
  /** The pid the file names, or `undefined` when it was empty or unreadable. */
  readonly pid: number | undefined;
  /** The pid file. */
  readonly path: string;

  /**
   * Make the error for a pid file another process holds.
   *
   * @param path the pid file
   * @param pid the pid it names, if any
   */
  constructor(path: string, pid: number | undefined) {
    super(
      pid === undefined
        ? `already running (pid file ${quote(path)} is locked)`
        : `already running (pid ${pid})`,
    );
    this.name = "AlreadyRunningError";
    this.path = path;
    this.pid = pid;
  }
}

/** Parse a pid file's bytes: digits and an optional newline, nothing else. */
export function parsePid(bytes: Uint8Array): number | undefined {
  if (bytes.length === 0 || bytes.length > MAX_PIDFILE_BYTES) return undefined;
  const text = new TextDecoder().decode(bytes);
  const m = /^\s*([0-9]{1,7})\s*$/.exec(text);
  if (!m) return undefined;
  const pid = Number(m[1]);
  return pid >= 1 && pid <= PID_MAX ? pid : undefined;
}

function readPidFd(fd: number, path: string): number | undefined {
  return parsePid(pread(fd, MAX_PIDFILE_BYTES + 1, 0, path));
}

/**
 * The pid in a descriptor just opened (its offset still 0) with read(2)
 * rather than pread: the same bytes, and a `status` binds one libc symbol
 * fewer (each first use of one costs ~0.3 ms).
 */
function readFreshPidFd(fd: number, path: string): number | undefined {
  try {
    return parsePid(read(fd, MAX_PIDFILE_BYTES + 1));
  } catch (err) {
    if (err instanceof SystemError) throw new SystemError("read", err.errno, { path });
    throw err;
  }
}

/** Open the pid file to read it: no link followed, no FIFO waited on, one name only. */
function openPidFileForReading(path: string): { fd: number; stat: FileStat } {
  return openBeside(path, { what: "pid file", access: "read" });
}

/**
 * Refuse anything but a regular file with one name and, as root, a file
 * another user owns or may write, by its mode bits or its access ACL (root
 * acting on a pid file someone else controls is how pid files become a
 * privilege escalation: a pid written there is a process root would stop).
 *
 * @param st what fstat or lstat says of the file
 * @param path the file, for the message
 * @throws {SystemError} EINVAL for another kind of file, EMLINK for a hard
 *   link, EPERM for an untrusted one
 */
export function checkPidFileStat(st: FileStat, path: string): void {
  checkPlainFile(st, path, "pid file");
  if (ids.euid() !== 0) return;
  const writer = st.uid === 0 ? otherWriter(path, st) : undefined;
  if (st.uid !== 0 || writer !== undefined) {
    const who = st.uid !== 0 ? `owned by uid ${st.uid}` : `writable by ${writer}`;
    throw new SystemError("open", ERRNO.EPERM, {
      path,
      message: `pid file ${
        quote(path)
      } is ${who}; as root, refusing to trust it (remove it, or fix its owner and mode)`,
    });
  }
}

/** Open file descriptions in this process that hold a pid file, for shutdown. */
const held = new Set<PidFile>();

/**
 * A PID lock file held by this process.
 *
 * @example Hold the lock for as long as the program runs
 * ```ts
 * import { PidFile } from "./pidfile.ts";
 * const path = await Deno.makeTempFile({ suffix: ".pid" });
 * using lock = await PidFile.acquire(path);
 * console.log(lock.pid === Deno.pid); // true
 * ```
 */
export class PidFile {
  readonly #path: string;
  /** This process's read-write descriptor: every write and truncation goes through it. */
  #fd: number;
  /**
   * A read-only open file description of the same file that holds the
   * flock: the one a daemon inherits, so the daemon holds the lock but
   * cannot write the file (a write gets EBADF).
   */
  #lockFd: number;
  #pid: number;

  private constructor(path: string, fd: number, lockFd: number, pid: number) {
    this.#path = path;
    this.#fd = fd;
    this.#lockFd = lockFd;
    this.#pid = pid;
    held.add(this);
  }

  /**
   * Lock the pid file, creating it if needed, and write a pid into it.
   *
   * @param path the pid file
   * @param options how long to wait, the mode, the pid to write
   * @returns the held lock
   * @throws {AlreadyRunningError} when another holder keeps the lock past `wait`
   * @throws {SystemError} for a symlink, a directory, another kind of file, a
   *   missing directory, no permission, or a root-owned check that fails
   */
  static async acquire(path: string, options: AcquireOptions = {}): Promise<PidFile> {
    const { fd, stat } = openLockFile(path, { what: "pid file", mode: options.mode ?? 0o644 });
    let lockFd = -1;
    try {
      checkPidFileStat(stat, path);
      lockFd = reopenDescriptor(fd, "read", path);
      const backoff = new Backoff();
      const locked = await lockExclusive(
        lockFd,
        path,
        options.wait ?? 0,
        (remaining) => waitForHolder(readPidFd(fd, path), remaining, backoff),
      );
      if (!locked) throw new AlreadyRunningError(path, readPidFd(fd, path));
      const lock = new PidFile(path, fd, lockFd, options.pid ?? ids.pid());
      lock.writePid(lock.#pid);
      return lock;
    } catch (err) {
      if (lockFd >= 0) close(lockFd);
      close(fd);
      throw err;
    }
  }

  /**
   * Take the lock on a fresh file in the pid file's place: a new file is
   * created beside it (owner-only until it is locked, so nobody can lock it
   * first), locked, made 0644 and renamed over the pid file. For a pid file
   * whose lock another user's process holds (any user who can read it can
   * lock it): that process keeps a lock on a file that is no longer the pid
   * file. Only under the guard: two controllers must never both do it.
   *
   * @param path the pid file
   * @param options the pid to write
   * @returns the held lock on the new file
   * @throws {SystemError} when the new file cannot be made or renamed
   */
  static replace(path: string, options: { readonly pid?: number } = {}): PidFile {
    const { fd, tmp } = createTemp(path, "new", "pid file", 0o600, "readwrite");
    let lockFd = -1;
    try {
      lockFd = reopenDescriptor(fd, "read", tmp);
      if (!tryFlock(lockFd, C.LOCK_EX, tmp)) throw new AlreadyRunningError(path, undefined);
      fchmod(fd, 0o644, tmp);
      renameInto(tmp, path, "pid file");
    } catch (err) {
      if (lockFd >= 0) close(lockFd);
      close(fd);
      try {
        Deno.removeSync(tmp);
      } catch {
        // renamed already, or gone
      }
      throw err;
    }
    const lock = new PidFile(path, fd, lockFd, options.pid ?? ids.pid());
    lock.writePid(lock.#pid);
    return lock;
  }

  /**
   * Empty a pid file nobody holds: lock it (without waiting, without
   * creating it) and cut it to nothing. Nothing is written first, so no
   * reader ever sees this process's pid in the file, and a crash here leaves
   * the old (stale) pid or nothing.
   *
   * @param path the pid file
   * @param options `evenIfLocked`: empty it though a lock is held (another
   *   user's, which the caller judged not the daemon's; under the guard)
   * @returns true once emptied (or when there is no file), false when a holder keeps the lock
   * @throws {SystemError} for a link, another kind of file, an untrusted file, no permission
   */
  static empty(path: string, options: { readonly evenIfLocked?: boolean } = {}): boolean {
    let fd: number;
    let stat: FileStat;
    try {
      ({ fd, stat } = openBeside(path, { what: "pid file", access: "readwrite" }));
    } catch (err) {
      if (err instanceof SystemError && err.errno === ERRNO.ENOENT) return true;
      throw err;
    }
    try {
      checkPidFileStat(stat, path);
      if (!tryFlock(fd, C.LOCK_EX, path) && !options.evenIfLocked) return false;
      if (stat.size > 0) ftruncate(fd, 0, path);
      return true;
    } finally {
      close(fd); // and with it the lock
    }
  }

  /**
   * Take over a locked descriptor this process inherited from the one that
   * started it (a daemon re-executed by `daemonize()`). The descriptor is
   * marked close-on-exec, so the daemon's own children do not keep the lock.
   *
   * @param fd the inherited descriptor that holds the lock (read-only)
   * @param path the pid file it was opened on
   * @param names the pid the file is to name: this process (by default),
   *   or the daemon a keeper holds the lock for
   * @param writeFd an inherited read-write descriptor on the same file, for
   *   the writes (without it, the file is opened for writing once more
   *   through the lock's descriptor when a write is needed)
   * @returns the held lock, naming that process
   * @throws {SystemError} when a descriptor is not that file
   */
  static adopt(
    fd: number,
    path: string,
    names: number = ids.pid(),
    writeFd?: number,
  ): PidFile {
    const st = fstat(fd, path);
    const { fd: fresh, stat: named } = openPidFileForReading(path);
    try {
      if (named.dev !== st.dev || named.ino !== st.ino) {
        throw new SystemError("fstat", ERRNO.EINVAL, {
          path,
          message: `inherited descriptor ${fd} is not the pid file ${quote(path)}`,
        });
      }
    } finally {
      close(fresh);
    }
    setCloexec(fd, true);
    if (!tryFlock(fd, C.LOCK_EX, path)) throw new AlreadyRunningError(path, readPidFd(fd, path));
    if (writeFd !== undefined) {
      const w = fstat(writeFd, path);
      if (w.dev !== st.dev || w.ino !== st.ino) {
        throw new SystemError("fstat", ERRNO.EINVAL, {
          path,
          message: `inherited descriptor ${writeFd} is not the pid file ${quote(path)}`,
        });
      }
      setCloexec(writeFd, true);
    }
    const lock = new PidFile(path, writeFd ?? -1, fd, names);
    if (readPidFd(fd, path) !== lock.#pid) lock.writePid(lock.#pid);
    return lock;
  }

  /**
   * Look at a pid file without changing it: never blocks, never creates it,
   * never takes a lock (so it cannot make a concurrent start fail). Running
   * means an exclusive lock (flock, POSIX `fcntl` or OFD) held by root's
   * process, the pid file owner's, or the daemon the record names; a shared
   * lock, or another user's, does not (any user who can read the file can
   * lock it).
   *
   * @param path the pid file
   * @returns running (with the pid it names), stale, or absent
   * @throws {SystemError} when the file cannot be read (permission, symlink,
   *   not a regular file)
   */
  static probe(path: string): Promise<ProbeResult> {
    try {
      return Promise.resolve(probeSync(path));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Wait until nobody holds the lock, waking when the holder exits (a pidfd
   * poll), never polling `kill(pid, 0)`: a zombie nobody reaps has already
   * let go of the lock.
   *
   * @param path the pid file
   * @param options `timeout` in milliseconds
   * @returns true once the lock is free (or the file is gone), false on timeout
   */
  static async waitForRelease(
    path: string,
    options: { readonly timeout: number },
  ): Promise<boolean> {
    const deadline = performance.now() + options.timeout;
    const backoff = new Backoff();
    for (;;) {
      const found = probeSync(path);
      if (found.state !== "running") return true;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return false;
      await waitForHolder(found.pid, remaining, backoff);
    }
  }

  /** The pid file's path. */
  get path(): string {
    return this.#path;
  }

  /** The pid the file names. */
  get pid(): number {
    return this.#pid;
  }

  /**
   * The descriptor that holds the lock (-1 once released), for handing to a
   * child: a read-only description, so the child holds the lock but cannot
   * change the file.
   */
  get fd(): number {
    return this.#lockFd;
  }

  /**
   * This process's read-write descriptor (-1 once released, or when it has
   * none), for handing to singleton-run's own stages (the supervisor, the
   * keeper), which write the file; never to the daemon.
   */
  get writeFd(): number {
    return this.#writeFd();
  }

  /** The read-write descriptor, opened once more through the lock's when this process has none. */
  #writeFd(): number {
    if (this.#fd < 0 && this.#lockFd >= 0) {
      try {
        this.#fd = reopenDescriptor(this.#lockFd, "readwrite", this.#path);
      } catch {
        // Not ours to write (another user's file): writes fail with EBADF below.
      }
    }
    return this.#fd;
  }

  /**
   * Replace the file's content with `PID\n` and fsync it; used when the
   * holder becomes a spawned child that inherited the descriptor.
   *
   * @param pid the pid to record
   * @throws {SystemError} when the write fails or the lock was released
   */
  writePid(pid: number): void {
    if (!Number.isInteger(pid) || pid < 1 || pid > PID_MAX) {
      throw new RangeError(`not a process id: ${pid}`);
    }
    if (this.#lockFd < 0) {
      throw new SystemError("write", ERRNO.EBADF, {
        path: this.#path,
        message: `pid file ${quote(this.#path)} was already released`,
      });
    }
    if (this.#writeFd() < 0) {
      throw new SystemError("write", ERRNO.EBADF, {
        path: this.#path,
        message: `pid file ${quote(this.#path)} cannot be written by this process`,
      });
    }
    // Padded with spaces over the old content before the file is cut to size, so
    // a writer killed half-way leaves a pid (the old or the new), never nothing.
    const text = `${pid}\n`;
    const old = Number(fstat(this.#fd, this.#path).size);
    const padded = old > text.length && old <= MAX_PIDFILE_BYTES
      ? text + " ".repeat(old - text.length)
      : text;
    const bytes = new TextEncoder().encode(padded);
    replaceContent(this.#fd, bytes, this.#path, false);
    if (bytes.length !== text.length) ftruncate(this.#fd, text.length, this.#path);
    fsync(this.#fd, this.#path);
    this.#pid = pid;
  }

  /**
   * Close this process's descriptor but leave the file's content: a child
   * that inherited the descriptor keeps the lock and the file names it.
   */
  detach(): void {
    if (this.#lockFd < 0) return;
    held.delete(this);
    if (this.#fd >= 0) close(this.#fd);
    close(this.#lockFd);
    this.#fd = this.#lockFd = -1;
  }

  /**
   * Empty the file (as LibUCW does, so no reader takes a stale pid for the
   * current one) and let go of the lock. Idempotent.
   */
  release(): void {
    if (this.#lockFd < 0) return;
    try {
      // No fsync: after a crash an unsynced truncate leaves an unlocked, stale pid.
      if (this.#writeFd() >= 0) replaceContent(this.#fd, new Uint8Array(0), this.#path, false);
    } finally {
      this.detach();
    }
  }

  /** Same as {@link PidFile.release}. */
  [Symbol.dispose](): void {
    this.release();
  }
}

/** Every pid file this process holds now (for a shutdown that releases them). */
export function heldPidFiles(): PidFile[] {
  return [...held];
}

/** The probe, synchronous. */
export function probeSync(path: string): ProbeResult {
  return probeIdentified(path).found;
}

/**
 * The probe, and the identity (device, inode) of the file it looked at,
 * which `status` compares with the descriptors in /proc: the file whose lock
 * was seen, with no second look at the path.
 *
 * @param path the pid file
 * @param check judges the opened file before it is read (it throws to refuse it); by
 *   default {@link checkPidFileStat}, so that no reader, root above all, believes a
 *   file another user owns or may write
 * @returns what the probe found, the file's identity and owner (undefined
 *   when absent), and the locks /proc/locks listed on it (when it was read)
 * @throws {SystemError} as {@link PidFile.probe}, or what `check` throws
 */
export function probeIdentified(
  path: string,
  check: (st: FileStat, path: string) => void = checkPidFileStat,
): {
  found: ProbeResult;
  identity: (FileIdentity & { readonly uid: number }) | undefined;
  locks?: LockLine[];
} {
  let fd: number;
  let st: FileStat;
  try {
    ({ fd, stat: st } = openPidFileForReading(path));
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) {
      // A missing file reads as absent; a missing directory is the same answer.
      return { found: { state: "absent" }, identity: undefined };
    }
    throw err;
  }
  const identity = { dev: st.dev, ino: st.ino, uid: st.uid };
  try {
    check(st, path);
    const pid = readFreshPidFd(fd, path);
    const { held, locks } = heldByUs(fd, st, path, pid);
    const found: ProbeResult = held
      ? { state: "running", pid }
      : pid === undefined
      ? { state: "absent" }
      : { state: "stale", pid };
    return { found, identity, ...(locks ? { locks } : {}) };
  } finally {
    close(fd);
  }
}

let procLocksReadable = true;

/**
 * Whether the file is locked in the way that means its daemon runs: an
 * exclusive lock held by a process of ours (see `isOurs`: root's, the pid
 * file owner's, or the recorded daemon's), never by its shared locks or
 * another user's (any user who can read the file can lock it). First the
 * named process's fdinfo (which lists the locks held through each of its
 * descriptors), then /proc/locks, then who holds each exclusive lock. A miss
 * in /proc/locks (read a page at a time while it changes) is confirmed with
 * F_GETLK/F_OFD_GETLK and a second read. Where /proc cannot be read, any lock
 * counts, found by those calls and a shared flock test.
 *
 * @returns whether it is held, and the locks /proc/locks listed (when read)
 */
function heldByUs(
  fd: number,
  st: FileStat,
  path: string,
  pid: number | undefined,
): { held: boolean; locks?: LockLine[] } {
  const ctx = lockContext(path, st.uid);
  // The usual case first, and the cheap one: the named process holds the lock.
  // (The first read of /proc/locks in a process can cost 10-16 ms.)
  if (pid !== undefined && holdsLockInFdinfo(pid, st) === true) {
    const holder = holderFacts(pid);
    if (holder && isOurs(holder, ctx)) return { held: true };
  }
  let locks = procLocksReadable ? locksOnFile(st) : undefined;
  if (locks === undefined) {
    procLocksReadable = false;
    return { held: isLockedBySyscalls(fd, path) };
  }
  if (!locks.some((l) => l.write) && (getlk(fd, false) !== 0 || getlk(fd, true) !== 0)) {
    locks = locksOnFile(st) ?? locks;
  }
  if (!locks.some((l) => l.write)) return { held: false, locks };
  const holders = lockHolders(st);
  if (holders.some((h) => isOurs(h, ctx))) return { held: true, locks };
  if (holders.length > 0) return { held: false, locks };
  // No holder in sight (/proc hides another user's descriptors, or it let go just now): judge
  // each exclusive lock by the process the kernel lists for it, when it still runs.
  const judged = locks.filter((l) => l.write).map((l) => {
    const taker = l.pid > 0 ? holderFacts(l.pid) : undefined;
    return taker === undefined ? undefined : isOurs(taker, ctx);
  });
  return { held: judged.some((ours) => ours !== false), locks };
}

/** The probe's fallback: may briefly hold a shared flock. */
export function isLockedBySyscalls(fd: number, path: string): boolean {
  if (getlk(fd, false) !== 0 || getlk(fd, true) !== 0) return true;
  if (!tryFlock(fd, C.LOCK_SH, path)) return true;
  tryFlock(fd, C.LOCK_UN, path);
  return false;
}

/** Waits that grow from 2 ms to 100 ms between looks at a lock. */
class Backoff {
  #ms = 2;
  next(limit: number): number {
    const ms = Math.max(1, Math.min(this.#ms, limit));
    this.#ms = Math.min(this.#ms * 2, 100);
    return ms;
  }
  sleep(limit: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, this.next(limit)));
  }
}

/**
 * Wait a while for the holder of a lock to let go. With a pid, poll its pidfd,
 * which wakes the moment the process exits; in slices that grow to 100 ms,
 * since a holder may also let go without exiting, or not be the only holder.
 */
async function waitForHolder(
  pid: number | undefined,
  remaining: number,
  backoff: Backoff,
): Promise<void> {
  const pidfd = pid === undefined ? undefined : safePidfd(pid);
  if (pidfd === undefined) return backoff.sleep(remaining);
  try {
    const watch = [{ fd: pidfd, events: C.POLLIN }];
    // Already exited (a zombie, or a holder that handed the lock on): sleep instead.
    if (pollNow(watch)[0] !== 0) return await backoff.sleep(remaining);
    await pollWait(watch, backoff.next(remaining));
  } finally {
    close(pidfd);
  }
}

function safePidfd(pid: number): number | undefined {
  try {
    return pidfdOpen(pid);
  } catch {
    return undefined;
  }
}
