/**
 * Who holds a pid file's lock, read from /proc: which process holds it
 * through one of its own descriptors (its fdinfo lists the lock), every
 * holder of the file, the ones to act on, and pidfds that name them for good.
 *
 * The pid file names the daemon, but the lock is what counts: when the named
 * process is gone or does not hold the lock while the lock is still held (a
 * supervisor SIGKILLed while its child runs on, a daemon whose forked child
 * kept the inherited descriptor), the holders found here are the daemon.
 *
 * @module
 */

// The ffi modules themselves, not their index, which also loads the spawn
// and syslog bindings: `status` loads this file.
import {
  C,
  close,
  type FileStat,
  ids,
  listDirectory,
  lookupUser,
  lstat,
  pidfdOpen,
  pollNow,
  readSmallFile,
  stat,
} from "../ffi/sys.ts";
import { readRecord, type ServiceRecord } from "./record.ts";
import { ERRNO, quote, SystemError } from "../ffi/errors.ts";
import { processRuns, procStat, procStatus, selfAndAncestors } from "../ffi/proc.ts";

/** A file's identity: what a descriptor in /proc/PID/fd is compared with. */
export type FileIdentity = Pick<FileStat, "dev" | "ino">;

/** A process that holds the lock through one of its own descriptors. */
export interface Holder {
  readonly pid: number;
  readonly ppid: number;
  /** Its process group. */
  readonly pgid: number;
  /** Its session. */
  readonly sid: number;
  /** Its real user (the first of the `Uid:` line of /proc/PID/status). */
  readonly uid: number;
  /**
   * Its real, effective and saved user ids are all 0. A setuid-root program
   * run by another user has effective uid 0 but stays that user's process.
   */
  readonly root: boolean;
  /** When it started, in clock ticks since boot (field 22 of /proc/PID/stat). */
  readonly startTicks: number;
}

/** A lock's kind, as `status --json` names it. */
export type LockKind = "flock" | "posix" | "ofd";

/** One lock on a file, as /proc/locks or a descriptor's fdinfo lists it. */
export interface LockLine {
  readonly kind: LockKind;
  /** An exclusive (write) lock; false for a shared (read) one. */
  readonly write: boolean;
  /** The pid the kernel lists: a POSIX lock's owner; for flock, the process that took it; -1 for OFD. */
  readonly pid: number;
}

/** A process of another user with a lock on the pid file: reported, never acted on. */
export interface ForeignLocker {
  readonly pid: number;
  readonly uid: number;
  /** `flock-read`, `posix-read`, `ofd-read`, `flock-write`... */
  readonly kind: string;
}

/**
 * What decides whether a lock holder is ours: the pid file's owner, and the
 * service record (read only when needed).
 */
export interface LockContext {
  /** The pid file's owner. */
  readonly owner: number;
  /** The service record beside the pid file, if there is one to trust. */
  readonly record: () => ServiceRecord | undefined;
}

/**
 * The context of a pid file's lock.
 *
 * @param pidfile the pid file
 * @param owner its owner (from the fstat of the file whose lock is judged)
 * @returns the context, reading the record at most once, when asked
 */
export function lockContext(pidfile: string, owner: number): LockContext {
  let record: ServiceRecord | undefined | null = null;
  return {
    owner,
    record: () => record === null ? (record = readRecord(pidfile)) : record,
  };
}

/**
 * Whether a holder of an exclusive lock is ours: root's process, the pid
 * file owner's, or, for a daemon run as another user, the very process the
 * record names (by pid and start time) or one of its session. Any user who
 * can read a 0644 pid file can take a lock on it (flock needs only read
 * access), so a holder's lock alone proves nothing: this is the one rule.
 *
 * @param holder the process
 * @param ctx the pid file's owner and record
 * @returns true when its lock means the daemon runs
 */
export function isOurs(holder: Holder, ctx: LockContext): boolean {
  if (holder.root || holder.uid === ctx.owner) return true;
  const record = ctx.record();
  if (!record) return false;
  for (const id of [record.daemon, record.holder]) {
    if (id && id.pid === holder.pid && id.start === holder.startTicks) return true;
  }
  // The daemon's children keep its session (its pid is not handed out while the session lives).
  return record.spec.user?.uid === holder.uid && record.daemon !== null &&
    holder.sid === record.daemon.pid;
}

/**
 * Another user's process holds the pid file's lock, and nothing ties it to
 * the daemon: it is not signalled, and not reported as running.
 */
export class ForeignHolderError extends SystemError {
  /** The process that holds the lock. */
  readonly holder: number;
  /** Its user id. */
  readonly uid: number;
  /**
   * Make the error for a lock held by another user's process.
   *
   * @param path the pid file
   * @param holder the process that holds its lock
   */
  constructor(path: string, holder: Holder) {
    const name = lookupUserName(holder.uid);
    super("flock", ERRNO.EPERM, {
      path,
      message: `pid file ${quote(path)} is locked by pid ${holder.pid} of user ${
        name === undefined ? holder.uid : quote(name)
      }, which is not the daemon; not acting on it (find out why that user holds it)`,
    });
    this.name = "ForeignHolderError";
    this.holder = holder.pid;
    this.uid = holder.uid;
  }
}

function lookupUserName(uid: number): string | undefined {
  try {
    return lookupUser(String(uid))?.name;
  } catch {
    return undefined;
  }
}

/** A holder to act on, named for good by a pidfd. */
export interface Target {
  readonly pid: number;
  readonly pidfd: number;
  /** It was found as a holder and leads its own process group: signal the group. */
  readonly group: boolean;
}

/** Where singleton-run's daemons keep the lock (fd 3; 63 for a supervised child). */
const CONVENTIONAL_LOCK_FDS = ["3", "63"];

/**
 * The device and inode of a file, or undefined when it is gone.
 *
 * @param path the file (a symbolic link is not followed)
 * @returns its identity, or undefined
 */
export function fileIdentity(path: string): FileIdentity | undefined {
  try {
    return lstat(path);
  } catch {
    return undefined;
  }
}

/**
 * The locks a process holds on the file through its own descriptors, from
 * /proc/PID/fdinfo, which lists the locks held through each descriptor (a
 * dup or an inherited copy of the locking one lists the flock too).
 *
 * @param pid the process
 * @param st the file's device and inode
 * @param enough stop looking once a lock satisfies this
 * @returns the locks (none for a process that is gone or a zombie);
 *   undefined when /proc does not let us look (another user's process)
 */
export function locksOf(
  pid: number,
  st: FileIdentity,
  enough: (lock: LockLine) => boolean = () => false,
): LockLine[] | undefined {
  const out: LockLine[] = [];
  const look = (name: string): boolean => {
    try {
      const target = stat(`/proc/${pid}/fd/${name}`);
      if (target.dev !== st.dev || target.ino !== st.ino) return false;
      for (const line of readSmallFile(`/proc/${pid}/fdinfo/${name}`).split("\n")) {
        const lock = line.startsWith("lock:") ? parseLockLine(line.slice(5)) : undefined;
        if (lock) out.push(lock);
      }
      return out.some(enough);
    } catch {
      return false; // not open, closed meanwhile, or not ours to look at
    }
  };
  // The usual descriptors first: each look at /proc costs microseconds.
  if (CONVENTIONAL_LOCK_FDS.some(look)) return out;
  let names: string[];
  try {
    names = listDirectory(`/proc/${pid}/fd`);
  } catch (err) {
    // A zombie's descriptors are closed, yet as non-root its fd directory reads EACCES.
    return err instanceof SystemError && err.code === "ENOENT" || !processRuns(pid)
      ? []
      : undefined;
  }
  for (const name of names) {
    if (!CONVENTIONAL_LOCK_FDS.includes(name) && look(name)) break;
  }
  return out;
}

/**
 * Whether a process holds an exclusive lock on the file (of any kind)
 * through one of its own descriptors; a shared one is no hold on a pid file.
 *
 * @param pid the process
 * @param st the file's device and inode
 * @returns true or false (false for a process that is gone or a zombie);
 *   undefined when /proc does not let us look (another user's process)
 */
export function holdsLockInFdinfo(pid: number, st: FileIdentity): boolean | undefined {
  return locksOf(pid, st, (l) => l.write)?.some((l) => l.write);
}

/**
 * One line of /proc/locks (or of an fdinfo's `lock:` line, without its
 * prefix): `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`. A request
 * still waiting (`1: -> FLOCK ...`) holds nothing and is not a lock.
 *
 * @param line the line
 * @returns the lock, or undefined for a waiter or another line
 */
export function parseLockLine(line: string): LockLine | undefined {
  const m = /^\s*[0-9]+:\s+(FLOCK|POSIX|OFDLCK)\s+\S+\s+(READ|WRITE)\s+(-?[0-9]+)\s/.exec(line);
  if (!m) return undefined;
  const kind = m[1] === "FLOCK" ? "flock" : m[1] === "POSIX" ? "posix" : "ofd";
  return { kind, write: m[2] === "WRITE", pid: Number(m[3]) };
}

/**
 * The locks held on a file, from /proc/locks (every user's, every kind).
 * /proc/locks is handed out a page per read(), with the lock table free to
 * change between two reads, so a record can slip past: callers that find
 * none confirm it another way.
 *
 * @param st the file's device and inode
 * @param text the content of /proc/locks, when already read
 * @returns the locks; undefined when /proc/locks cannot be read
 */
export function locksOnFile(st: FileIdentity, text?: string): LockLine[] | undefined {
  if (text === undefined) {
    try {
      text = readSmallFile("/proc/locks");
    } catch {
      return undefined;
    }
  }
  const dev = st.dev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const needle = ` ${major.toString(16).padStart(2, "0")}:${
    minor.toString(16).padStart(2, "0")
  }:${st.ino} `;
  const out: LockLine[] = [];
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) {
    const line = text.slice(text.lastIndexOf("\n", at) + 1, at + needle.length);
    const lock = parseLockLine(line);
    if (lock) out.push(lock);
  }
  return out;
}

/**
 * Parent, group, session, users and start time of a running process.
 *
 * @param pid the process
 * @returns its facts; undefined when gone or a zombie
 */
export function holderFacts(pid: number): Holder | undefined {
  const st = procStat(pid);
  if (!st || st.state === "Z" || st.state === "X") return undefined;
  const uids = procStatus(pid)?.uids;
  if (!uids) return undefined;
  const [uid, euid, suid] = uids;
  return {
    pid,
    ppid: st.ppid,
    pgid: st.pgid,
    sid: st.sid,
    uid,
    root: uid === 0 && euid === 0 && suid === 0,
    startTicks: st.startTicks,
  };
}

/**
 * Every process that holds the lock on the file, found by scanning
 * /proc/*\/fd (through libc: Deno's own API would need --allow-all for
 * /proc). Processes /proc hides from us (another user's, as non-root) are
 * not found. This process and its ancestors are never listed: a controller
 * run from inside the daemon's own tree (a shell that inherited the
 * descriptor) must not signal the shell that runs it.
 *
 * @param st the file's identity
 * @returns the holders, in /proc order
 */
export function lockHolders(st: FileIdentity): Holder[] {
  let entries: string[];
  try {
    entries = listDirectory("/proc");
  } catch {
    return [];
  }
  const skip = selfAndAncestors();
  // Init is listed unless it is this process, as it always was: in a container it may be the daemon.
  if (ids.pid() !== 1) skip.delete(1);
  const out: Holder[] = [];
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0 || skip.has(pid)) continue;
    if (holdsLockInFdinfo(pid, st) !== true) continue;
    const facts = holderFacts(pid);
    if (facts) out.push(facts);
  }
  return out;
}

/**
 * The holders that are not descendants of another holder (a worker that
 * inherited the descriptor from its master is not one), oldest first: the
 * processes to act on, as a supervisor or a parent would.
 *
 * @param holders every holder
 * @returns the top ones, oldest first
 */
export function topHolders(holders: readonly Holder[]): Holder[] {
  const pids = new Set(holders.map((h) => h.pid));
  return holders.filter((h) => !pids.has(h.ppid))
    .sort((a, b) => a.startTicks - b.startTicks || a.pid - b.pid);
}

/**
 * Who holds a locked pid file: the pid it names when that process holds it
 * (or /proc does not let us tell), else the oldest top holder found in /proc
 * that is ours (the named pid again when none can be seen).
 *
 * @param path the pid file
 * @param named the pid the file names, if any
 * @returns the holder's pid, or undefined when none is named or seen
 * @throws {ForeignHolderError} when only another user's processes hold it
 */
export function lockHolder(path: string, named: number | undefined): number | undefined {
  let st: FileStat;
  try {
    st = lstat(path);
  } catch {
    return named;
  }
  if (named !== undefined && holdsLockInFdinfo(named, st) !== false) return named;
  const holders = topHolders(lockHolders(st));
  const ctx = lockContext(path, st.uid);
  const daemon = holders.find((h) => isOurs(h, ctx));
  if (!daemon && holders[0]) throw new ForeignHolderError(path, holders[0]);
  return daemon?.pid ?? named;
}

/**
 * The first holder of the lock that is not ours, if every holder found is
 * one of those.
 *
 * @param st the pid file's identity
 * @param ctx its owner and record
 * @returns that holder, or undefined
 */
export function onlyForeignHolder(st: FileIdentity, ctx: LockContext): Holder | undefined {
  const holders = topHolders(lockHolders(st));
  return holders.some((h) => isOurs(h, ctx)) ? undefined : holders[0];
}

/**
 * Every other user's process with a lock of any kind on the file: what
 * `status --json` reports as `foreignHolders` (and nothing acts on). As
 * another user than root, /proc hides other users' descriptors: a POSIX
 * lock is still found by its owner's pid in /proc/locks.
 *
 * @param st the pid file's identity
 * @param ctx its owner and record
 * @param locks the file's locks from /proc/locks, when already read
 * @returns the foreign lockers, by pid
 */
export function foreignLockers(
  st: FileIdentity,
  ctx: LockContext,
  locks: readonly LockLine[] | undefined = locksOnFile(st),
): ForeignLocker[] {
  const out = new Map<number, ForeignLocker>();
  const add = (h: Holder, lock: LockLine) => {
    if (isOurs(h, ctx) || out.has(h.pid)) return;
    out.set(h.pid, {
      pid: h.pid,
      uid: h.uid,
      kind: `${lock.kind}-${lock.write ? "write" : "read"}`,
    });
  };
  const skip = selfAndAncestors();
  let entries: string[] = [];
  if ((locks ?? []).some((l) => l.kind !== "posix")) {
    try {
      entries = listDirectory("/proc");
    } catch {
      // Nothing to scan: the POSIX owners below are all we can name.
    }
  }
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0 || skip.has(pid)) continue;
    const held = locksOf(pid, st)?.filter((l) => l.kind !== "posix");
    const facts = held?.length ? holderFacts(pid) : undefined;
    if (facts) add(facts, held![0]!);
  }
  for (const lock of locks ?? []) {
    if (lock.kind !== "posix" || skip.has(lock.pid)) continue;
    const facts = holderFacts(lock.pid);
    if (facts) add(facts, lock);
  }
  return [...out.values()].sort((a, b) => a.pid - b.pid);
}

/**
 * pidfds on the top holders of the lock (see {@link topHolders}) that `keep`
 * accepts, each re-checked after the open: a pid reused between the scan
 * and the open does not hold the lock, so it is dropped, never signalled.
 *
 * @param st the pid file's identity
 * @param keep which holders to take (by default, all)
 * @returns the targets; the caller closes their pidfds
 */
export function openHolders(
  st: FileIdentity,
  keep: (holder: Holder) => boolean = () => true,
): Target[] {
  const out: Target[] = [];
  for (const h of topHolders(lockHolders(st)).filter(keep)) {
    let pidfd: number | undefined;
    try {
      pidfd = pidfdOpen(h.pid);
    } catch {
      continue; // EMFILE and the like: leave this one
    }
    if (pidfd === undefined) continue;
    if (holdsLockInFdinfo(h.pid, st) !== true) {
      close(pidfd);
      continue;
    }
    out.push({ pid: h.pid, pidfd, group: h.pgid === h.pid });
  }
  return out;
}

/**
 * The targets whose process has not exited (its pidfd is not readable yet).
 *
 * @param targets the targets
 * @returns the live ones
 */
export function liveTargets(targets: readonly Target[]): Target[] {
  if (targets.length === 0) return [];
  const revents = pollNow(targets.map((t) => ({ fd: t.pidfd, events: C.POLLIN })));
  return targets.filter((_, i) => revents[i] === 0);
}
