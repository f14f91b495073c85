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
import { ERRNO, quote, SystemError } from "../ffi/errors.ts";
import { processRuns, procStat, procStatus } from "../ffi/proc.ts";

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

/**
 * Whether a holder may be the daemon, as root sees it: root's own process,
 * the pid the file names (root wrote it), or a process in that pid's session
 * (the daemon's children, which keep its session even when it is gone). Any
 * other user's process can lock a readable file (`flock -s`); that makes it
 * no daemon. As another user, /proc hides other users' descriptors, so every
 * holder found is one's own.
 *
 * @param holder the holder
 * @param named the pid the file names, if any
 * @returns true when it may be acted on
 */
export function mayBeDaemon(holder: Holder, named: number | undefined): boolean {
  if (ids.euid() !== 0 || holder.root) return true;
  return named !== undefined && (holder.pid === named || holder.sid === named);
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
 * Whether a process holds a lock on the file through one of its own
 * descriptors, from /proc/PID/fdinfo, which lists the locks held through each
 * descriptor (a dup or an inherited copy of the locking one lists the flock
 * too).
 *
 * @param pid the process
 * @param st the file's device and inode
 * @returns true or false (false for a process that is gone or a zombie);
 *   undefined when /proc does not let us look (another user's process)
 */
export function holdsLockInFdinfo(pid: number, st: FileIdentity): boolean | undefined {
  const holds = (name: string): boolean => {
    try {
      const target = stat(`/proc/${pid}/fd/${name}`);
      if (target.dev !== st.dev || target.ino !== st.ino) return false;
      return /^lock:/m.test(readSmallFile(`/proc/${pid}/fdinfo/${name}`));
    } catch {
      return false; // not open, closed meanwhile, or not ours to look at
    }
  };
  // The usual descriptors first: each look at /proc costs microseconds.
  if (CONVENTIONAL_LOCK_FDS.some(holds)) return true;
  let names: string[];
  try {
    names = listDirectory(`/proc/${pid}/fd`);
  } catch (err) {
    // A zombie's descriptors are closed, yet as non-root its fd directory reads EACCES.
    return err instanceof SystemError && err.code === "ENOENT" || !processRuns(pid)
      ? false
      : undefined;
  }
  return names.some((name) => !CONVENTIONAL_LOCK_FDS.includes(name) && holds(name));
}

/** Parent, group, session, users and start time of a running process; undefined when gone or a zombie. */
function holderFacts(pid: number): Holder | undefined {
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

/** This process's pid and its ancestors' (up to init). */
function selfAndAncestors(): Set<number> {
  const out = new Set([ids.pid()]);
  let pid = ids.ppid();
  while (pid > 1 && !out.has(pid) && out.size < 256) {
    out.add(pid);
    const st = procStat(pid);
    if (!st) break;
    pid = st.ppid;
  }
  return out;
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
 * that may be the daemon (the named pid again when none can be seen).
 *
 * @param path the pid file
 * @param named the pid the file names, if any
 * @returns the holder's pid, or undefined when none is named or seen
 * @throws {ForeignHolderError} when only another user's processes hold it
 */
export function lockHolder(path: string, named: number | undefined): number | undefined {
  const st = fileIdentity(path);
  if (!st) return named;
  if (named !== undefined && holdsLockInFdinfo(named, st) !== false) return named;
  const holders = topHolders(lockHolders(st));
  const daemon = holders.find((h) => mayBeDaemon(h, named));
  if (!daemon && holders[0]) throw new ForeignHolderError(path, holders[0]);
  return daemon?.pid ?? named;
}

/**
 * The first holder of the lock that cannot be the daemon, if every holder
 * found is one of those.
 *
 * @param st the pid file's identity
 * @param named the pid the file names, if any
 * @returns that holder, or undefined
 */
export function onlyForeignHolder(
  st: FileIdentity,
  named: number | undefined,
): Holder | undefined {
  const holders = topHolders(lockHolders(st));
  return holders.some((h) => mayBeDaemon(h, named)) ? undefined : holders[0];
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
