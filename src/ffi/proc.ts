/**
 * What /proc says of a process: its state, parent, group and start time, its
 * resident memory, its command line. Read through libc (Deno asks for
 * `--allow-all` to read /proc with its own API).
 *
 * @module
 */

import { platform } from "./libc.ts";
import { ids, listDirectory, readLink, readSmallFile, stat } from "./sys.ts";

/** The fields of /proc/PID/stat the project uses. */
export interface ProcStat {
  /** R, S, D, Z, T, ... */
  readonly state: string;
  readonly ppid: number;
  /** Its process group. */
  readonly pgid: number;
  /** Its session (the pid of the session leader). */
  readonly sid: number;
  /** When it started, in clock ticks since boot (field 22). */
  readonly startTicks: number;
}

/**
 * /proc/PID/stat, parsed after the command name (which may hold spaces and
 * parentheses).
 *
 * @param pid the process, or "self"
 * @returns its fields, or undefined when it is gone or hidden
 */
export function procStat(pid: number | "self"): ProcStat | undefined {
  let text: string;
  try {
    text = readSmallFile(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return {
    state: f[0] ?? "?",
    ppid: Number(f[1]),
    pgid: Number(f[2]),
    sid: Number(f[3]),
    startTicks: Number(f[19]), // field 22, counted from field 3
  };
}

/**
 * Whether a process runs: it exists and is not a zombie.
 *
 * @param pid the process
 * @returns false for a process that is gone, a zombie, or dead
 */
export function processRuns(pid: number): boolean {
  const st = procStat(pid);
  return st !== undefined && st.state !== "Z" && st.state !== "X";
}

/** USER_HZ: 100 on every Linux architecture this project supports. */
const HZ = 100;

/**
 * When a process started, from its start ticks, the boot time and the uptime.
 *
 * @param startTicks from {@link procStat}
 * @returns the wall-clock start and the seconds since, where /proc tells them
 */
export function startedAt(startTicks: number): { time?: Date; uptimeSeconds?: number } {
  const out: { time?: Date; uptimeSeconds?: number } = {};
  if (!Number.isFinite(startTicks)) return out;
  try {
    const btime = bootTime();
    if (Number.isFinite(btime)) out.time = new Date((btime + startTicks / HZ) * 1000);
    const uptime = Number(readSmallFile("/proc/uptime").split(" ")[0]);
    if (Number.isFinite(uptime)) {
      out.uptimeSeconds = Math.max(0, Math.round((uptime - startTicks / HZ) * 100) / 100);
    }
  } catch {
    // /proc without stat or uptime: leave them out.
  }
  return out;
}

/** The fields of /proc/PID/status the project uses. */
export interface ProcStatus {
  /** Its real, effective and saved user ids (the `Uid:` line). */
  readonly uids: readonly [real: number, effective: number, saved: number];
  /** Its resident set size in KiB (`VmRSS:`); 0 for a process with no memory of its own. */
  readonly rssKiB: number;
  /** The signals its main thread blocks (`SigBlk:`), bit N-1 for signal N. */
  readonly blocked: bigint;
  /** The signals it ignores (`SigIgn:`). */
  readonly ignored: bigint;
  /** The signals it catches with a handler (`SigCgt:`). */
  readonly caught: bigint;
}

/**
 * /proc/PID/status, parsed.
 *
 * @param pid the process, or "self"
 * @returns its fields, or undefined when it is gone or hidden
 */
export function procStatus(pid: number | "self"): ProcStatus | undefined {
  let text: string;
  try {
    text = readSmallFile(`/proc/${pid}/status`);
  } catch {
    return undefined;
  }
  const uid = /^Uid:\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)/m.exec(text);
  if (!uid) return undefined;
  const mask = (name: string) => {
    const m = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, "m").exec(text);
    return m ? BigInt(`0x${m[1]}`) : 0n;
  };
  return {
    uids: [Number(uid[1]), Number(uid[2]), Number(uid[3])],
    rssKiB: Number(/^VmRSS:\s*([0-9]+)\s*kB/m.exec(text)?.[1] ?? 0),
    blocked: mask("SigBlk"),
    ignored: mask("SigIgn"),
    caught: mask("SigCgt"),
  };
}

/**
 * The boot time, as last read, and when (monotonic ms): `list` asks for it
 * once per service, and /proc/stat costs more to read than everything else
 * a status reads. Read again after a second, since a step of the wall clock
 * moves it.
 */
let boot: { readonly btime: number; readonly at: number } | undefined;

/** The boot time in seconds since the epoch (`btime` in /proc/stat); NaN when /proc does not say. */
function bootTime(): number {
  const now = performance.now();
  if (boot === undefined || now - boot.at > 1000) {
    boot = { btime: Number(/^btime (\d+)$/m.exec(readSmallFile("/proc/stat"))?.[1]), at: now };
  }
  return boot.btime;
}

/**
 * A process's resident set size (`VmRSS` in /proc/PID/status).
 *
 * @param pid the process, or "self"
 * @returns kibibytes; 0 for a process with no memory of its own (a kernel
 *   thread or a zombie); undefined when it is gone or hidden
 */
export function vmRssKiB(pid: number | "self"): number | undefined {
  return procStatus(pid)?.rssKiB;
}

/**
 * Whether kill(2) would let this process signal another, by the kernel's
 * rule: root's effective uid may signal anyone; otherwise this process's real
 * or effective uid must be the target's real or saved uid.
 *
 * @param pid the process
 * @returns false when it may not, or when it is gone or hidden
 */
export function maySignal(pid: number): boolean {
  const target = procStatus(pid);
  if (!target) return false;
  if (ids.euid() === 0) return true;
  const [real, , saved] = target.uids;
  return [ids.uid(), ids.euid()].some((u) => u === real || u === saved);
}

/**
 * A process's argv, from /proc/PID/cmdline.
 *
 * @param pid the process, or "self"
 * @returns the arguments, or undefined when it is gone or hidden
 */
export function cmdlineOf(pid: number | "self"): string[] | undefined {
  let raw: string;
  try {
    raw = readSmallFile(`/proc/${pid}/cmdline`);
  } catch {
    return undefined;
  }
  const argv = raw.split("\0");
  if (argv[argv.length - 1] === "") argv.pop();
  return argv;
}

/**
 * Whether a process's environment (as it was at its exec, from
 * /proc/PID/environ) holds this exact `KEY=VALUE` entry. Readable for one's
 * own user's processes, or by root.
 *
 * @param pid the process
 * @param entry the whole entry
 * @returns false when it does not, or when the process is gone or hidden
 */
export function environHas(pid: number, entry: string): boolean {
  try {
    return readSmallFile(`/proc/${pid}/environ`, 1 << 20).split("\0").includes(entry);
  } catch {
    return false;
  }
}

/**
 * How many descriptors a process has open. The size /proc reports for its
 * fd directory is that count (Linux 6.2 and later), which a single stat(2)
 * reads; elsewhere the directory is listed. Statting `fd/.` rather than
 * `fd` walks into the directory, so it needs the same permission as
 * listing it: another user's process stays hidden from a non-root caller.
 *
 * @param pid the process, or "self"
 * @returns the count, or undefined when it is gone or hidden
 */
export function openFdCount(pid: number | "self"): number | undefined {
  try {
    const size = Number(stat(`/proc/${pid}/fd/.`).size);
    if (size > 0) return size;
    return listDirectory(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

/**
 * The live children of a process (zombies left out), found by scanning
 * /proc for their parent: what a child subreaper has after its child forked
 * away and exited.
 *
 * @param parent the parent's pid
 * @param options `zombies`: list the children that have ended but are not reaped yet too
 * @returns their pids, oldest first
 */
export function childrenOf(parent: number, options: { zombies?: boolean } = {}): number[] {
  let entries: string[];
  try {
    entries = listDirectory("/proc");
  } catch {
    return [];
  }
  const found: { pid: number; startTicks: number }[] = [];
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 1 || pid === parent) continue;
    const st = procStat(pid);
    if (!st || st.ppid !== parent) continue;
    if (!options.zombies && (st.state === "Z" || st.state === "X")) continue;
    found.push({ pid, startTicks: st.startTicks });
  }
  return found.sort((a, b) => a.startTicks - b.startTicks || a.pid - b.pid).map((f) => f.pid);
}

/**
 * A process and every live process below it, parents first (one scan of
 * /proc per process found: for the few processes a test or a bench starts).
 *
 * @param pid the top process
 * @returns its pid, then its descendants'
 */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...childrenOf(out[i]!));
  return out;
}

/**
 * Whether a process descends from another (its parent chain reaches it).
 *
 * @param pid the process
 * @param ancestor the would-be ancestor
 * @returns false when it does not, or when it is gone or a zombie
 */
export function descendsFrom(pid: number, ancestor: number): boolean {
  let at = pid;
  for (let step = 0; step < 256 && at > 1; step++) {
    const st = procStat(at);
    if (!st || st.state === "Z" || st.state === "X") return false;
    if (st.ppid === ancestor) return true;
    at = st.ppid;
  }
  return false;
}

/** The executable a process runs, as /proc/PID/exe shows it. */
export interface Executable {
  /**
   * The link's text: the path the file had when the process started, with
   * " (deleted)" appended by the kernel once that file has no name left (and
   * also part of a name that really ends so: never decide by it).
   */
  readonly text: string;
  /** The file itself (the link is followed to it), when it can be looked at. */
  readonly id?: {
    readonly dev: bigint;
    readonly ino: bigint;
    /** 0 once the file was removed or replaced (renamed over) since the process started. */
    readonly nlink: number;
  };
}

/**
 * The executable a process runs, from /proc/PID/exe: the link's text, and
 * the file's device, inode and link count when it can be looked at.
 *
 * @param pid the process
 * @returns what it runs, or undefined when it is gone or hidden
 */
export function executableOf(pid: number): Executable | undefined {
  let text: string;
  try {
    text = readLink(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
  try {
    const st = stat(`/proc/${pid}/exe`);
    return { text, id: { dev: st.dev, ino: st.ino, nlink: st.nlink } };
  } catch {
    return { text };
  }
}

/**
 * This process and its ancestors: its parent, and theirs, up to one whose
 * parent is 0 (init, or the first process of this pid namespace that was
 * entered from outside it, as `docker exec` does).
 *
 * @returns their pids, this process's first
 */
export function selfAndAncestors(): Set<number> {
  const out = new Set([ids.pid()]);
  let pid = ids.ppid();
  while (pid > 0 && !out.has(pid) && out.size < 256) {
    out.add(pid);
    const st = procStat(pid);
    if (!st) break;
    pid = st.ppid;
  }
  return out;
}

/** The threads of a process (their ids), or none when it is gone or hidden. */
function tasksOf(pid: number): string[] {
  try {
    return listDirectory(`/proc/${pid}/task`);
  } catch {
    return [];
  }
}

/**
 * The children of a process, from /proc/PID/task/TID/children (one read per
 * thread); where the kernel has no such file, by the scan of
 * {@link childrenOf}.
 *
 * @param pid the parent
 * @returns their pids (zombies included)
 */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const tid of tasksOf(pid)) {
    let text: string;
    try {
      text = readSmallFile(`/proc/${pid}/task/${tid}/children`);
    } catch (err) {
      if ((err as { code?: string }).code === "ENOENT" && tid === String(pid)) {
        return childrenOf(pid, { zombies: true });
      }
      continue;
    }
    for (const word of text.split(" ")) if (word !== "" && word !== "\n") out.push(Number(word));
  }
  return out;
}

/**
 * Whether one of a process's threads is blocked waiting for events on its
 * descriptors (poll, select, epoll, accept), by /proc/PID/task/TID/syscall.
 * A thread that runs, or that the caller may not look at, does not count.
 *
 * @param pid the process
 * @returns true when one is
 */
export function waitsForEvents(pid: number): boolean {
  const waits = platform().eventWaits;
  for (const tid of tasksOf(pid)) {
    try {
      const text = readSmallFile(`/proc/${pid}/task/${tid}/syscall`, 64);
      if (waits.includes(Number(text.slice(0, text.indexOf(" "))))) return true;
    } catch {
      // Gone, or not ours to look at.
    }
  }
  return false;
}

/** The most descriptors of one process looked at for sockets. */
const MAX_FDS_LOOKED_AT = 4096;

/**
 * The inodes of the sockets a process has open, from the links in
 * /proc/PID/fd (`socket:[INODE]`), looking at no more than 4096 descriptors.
 *
 * @param pid the process
 * @returns the inodes, as decimal text
 */
export function socketInodes(pid: number): string[] {
  let fds: string[];
  try {
    fds = listDirectory(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const fd of fds.slice(0, MAX_FDS_LOOKED_AT)) {
    try {
      const link = readLink(`/proc/${pid}/fd/${fd}`);
      if (link.startsWith("socket:[")) out.push(link.slice(8, -1));
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

/** How much of each table is read: the kernel lists listening TCP sockets first. */
const TCP_TABLE_BYTES = 1 << 16;
const UNIX_TABLE_BYTES = 1 << 20;
/** `__SO_ACCEPTCON` in /proc/net/unix's Flags: the socket listens. */
const SO_ACCEPTCON = 0x10000;

/**
 * The inodes of the sockets that listen for connections in a process's
 * network namespace: TCP over IPv4 and IPv6 in the LISTEN state, and Unix
 * stream sockets that accept. Only the start of each table is read (64 KiB
 * of a TCP table, where the kernel lists its listening sockets first; 1 MiB
 * of the Unix one), so a listener past that is not seen: callers must treat
 * "not seen" as "not known", never as "not listening" proven.
 *
 * @param pid a process in the namespace
 * @returns the inodes, as decimal text
 */
export function listeningInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const table of ["tcp", "tcp6"]) {
    for (const line of tableLines(`/proc/${pid}/net/${table}`, TCP_TABLE_BYTES)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === "0A" && f[9] !== undefined) out.add(f[9]);
    }
  }
  for (const line of tableLines(`/proc/${pid}/net/unix`, UNIX_TABLE_BYTES)) {
    const f = line.trim().split(/\s+/);
    if (f[6] !== undefined && (parseInt(f[3] ?? "0", 16) & SO_ACCEPTCON) !== 0) out.add(f[6]);
  }
  return out;
}

/** The whole lines of the first `bytes` of a /proc table, less its header. */
function tableLines(path: string, bytes: number): string[] {
  let text: string;
  try {
    text = readSmallFile(path, bytes);
  } catch {
    return [];
  }
  const lines = text.split("\n").slice(1);
  // A line cut by the limit is dropped; so is the empty string after the last newline.
  lines.pop();
  return lines;
}
