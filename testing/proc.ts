/**
 * What the bench and the stress suite see of processes, read from /proc:
 * argv, state, parent, RSS, open descriptors, the locks they hold. No FFI:
 * these are the facts a user could check with `ps` and `ls -l /proc/PID/fd`.
 *
 * @module
 */

/** State letter and parent of a process, from /proc/PID/stat. */
export interface ProcStat {
  /** R, S, D, Z, T, ... */
  readonly state: string;
  /** The parent pid. */
  readonly ppid: number;
  /** The session id. */
  readonly sid: number;
}

/** Every pid in /proc now. */
export function listPids(): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (/^[0-9]+$/.test(e.name)) pids.push(Number(e.name));
  }
  return pids;
}

/**
 * A process's argv, or undefined once it is gone or a zombie (whose argv the
 * kernel no longer has).
 *
 * @param pid the process
 */
export function argvOf(pid: number): string[] | undefined {
  try {
    const raw = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    if (raw === "") return undefined;
    const argv = raw.split("\0");
    if (argv[argv.length - 1] === "") argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}

/**
 * State, parent and session of a process.
 *
 * @param pid the process
 * @returns undefined once it is gone
 */
export function statOf(pid: number): ProcStat | undefined {
  try {
    const raw = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name may hold spaces and parentheses: split after the last ")".
    const rest = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
    return { state: rest[0]!, ppid: Number(rest[1]), sid: Number(rest[3]) };
  } catch {
    return undefined;
  }
}

/**
 * Whether a process exists and is not a zombie.
 *
 * @param pid the process
 */
export function alive(pid: number): boolean {
  const st = statOf(pid);
  return st !== undefined && st.state !== "Z" && st.state !== "X";
}

/**
 * Resident memory of a process in KiB (VmRSS), or undefined once it is gone.
 *
 * @param pid the process
 */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+([0-9]+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A process's open descriptors and what each points to (`readlink`).
 *
 * @param pid the process
 * @returns fd number to target; empty once the process is gone
 */
export function fdsOf(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        out.set(Number(e.name), Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`));
      } catch {
        // closed while we looked
      }
    }
  } catch {
    // gone
  }
  return out;
}

/**
 * Whether a process holds a lock (flock, POSIX or OFD) on the file with this
 * inode through one of its own descriptors: the `lock:` lines of
 * /proc/PID/fdinfo/FD. Unlike /proc/locks (one global list read a page at a
 * time), this is one small file per descriptor.
 *
 * @param pid the process
 * @param ino the pid file's inode
 */
export function holdsLockOn(pid: number, ino: number): boolean {
  for (const fd of fdsOf(pid).keys()) {
    try {
      const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
      for (const line of info.split("\n")) {
        if (!line.startsWith("lock:") || line.includes("->")) continue;
        const m = /\s[0-9a-f]+:[0-9a-f]+:([0-9]+)\s/.exec(line);
        if (m && Number(m[1]) === ino) return true;
      }
    } catch {
      // closed while we looked
    }
  }
  return false;
}

/**
 * Live processes whose argv holds `marker` as one whole argument, and whose
 * program is `program` (a basename, e.g. "sleep"), so a controller whose own
 * argv mentions the marker is not counted.
 *
 * @param marker the unique argument
 * @param program the executable's basename
 */
export function findInstances(marker: string, program = "sleep"): number[] {
  const found: number[] = [];
  for (const pid of listPids()) {
    const argv = argvOf(pid);
    if (!argv || !argv.includes(marker)) continue;
    let exe: string;
    try {
      exe = Deno.readLinkSync(`/proc/${pid}/exe`);
    } catch {
      continue;
    }
    if (exe.endsWith(`/${program}`) && alive(pid)) found.push(pid);
  }
  return found;
}

/**
 * Live processes whose argv mentions `needle` anywhere (a temp dir, a marker):
 * everything a run started, controllers included.
 *
 * @param needle a substring of one argument
 */
export function findMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const pid of listPids()) {
    if (pid === Deno.pid) continue;
    const argv = argvOf(pid);
    if (argv && argv.some((a) => a.includes(needle)) && alive(pid)) found.push(pid);
  }
  return found;
}

/**
 * Send a signal to a pid we started, ignoring "no such process".
 *
 * @param pid the process
 * @param signal the signal
 * @returns whether it was sent
 */
export function signalPid(pid: number, signal: Deno.Signal = "SIGKILL"): boolean {
  try {
    Deno.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Wait until a process is gone or a zombie.
 *
 * @param pid the process
 * @param timeoutMs the longest wait
 * @returns whether it went away in time
 */
export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (alive(pid)) {
    if (performance.now() > deadline) return false;
    await sleep(2);
  }
  return true;
}

/**
 * SIGKILL each pid (ours, by pid) and wait for it to go.
 *
 * @param pids the processes
 * @param timeoutMs the longest wait for each
 */
export async function killAll(pids: Iterable<number>, timeoutMs = 2000): Promise<void> {
  for (const pid of pids) signalPid(pid, "SIGKILL");
  for (const pid of pids) await waitGone(pid, timeoutMs);
}

/**
 * A timer as a promise.
 *
 * @param ms milliseconds
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Median of a list of numbers (NaN for none). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Where a tool lives on PATH, or undefined.
 *
 * @param name the program
 * @param path the directories to look in
 */
export function which(
  name: string,
  path: string = Deno.env.get("PATH") ?? "/usr/bin:/bin",
): string | undefined {
  for (const dir of path.split(":")) {
    const path = `${dir}/${name}`;
    try {
      const st = Deno.statSync(path);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** How the singleton-run command is invoked: from source, or the bundle. */
export type CliForm = "source" | "bundle";

/** The repository root (this file is testing/proc.ts). */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The argv prefix that runs singleton-run.
 *
 * @param form "source" (`deno run -A cli.ts`) or "bundle" (`dist/singleton-run.js`)
 */
export function cliArgv(form: CliForm): string[] {
  const script = form === "bundle" ? `${ROOT}/dist/singleton-run.js` : `${ROOT}/cli.ts`;
  return [Deno.execPath(), "run", "--allow-all", "--quiet", script];
}

/** Result of {@link runCmd}. */
export interface CmdResult {
  /** Exit code (128+N for a signal, -1 when it was killed on timeout). */
  readonly code: number;
  /** The signal that ended it, if any. */
  readonly signal: Deno.Signal | null;
  /** What it printed. */
  readonly stdout: string;
  /** What it printed on stderr. */
  readonly stderr: string;
  /** Wall time from spawn to exit, in milliseconds. */
  readonly ms: number;
  /** Its pid. */
  readonly pid: number;
  /** True when it had to be killed after the timeout. */
  readonly timedOut: boolean;
}

/** Options of {@link runCmd}. */
export interface RunOptions {
  /** Kill it with SIGKILL after this many milliseconds. @default {30000} */
  readonly timeoutMs?: number;
  /** Kill it with SIGKILL after this many milliseconds, on purpose (a fault). */
  readonly killAfterMs?: number;
  /** Environment additions. */
  readonly env?: Record<string, string>;
  /** Working directory. */
  readonly cwd?: string;
  /** Called with the pid right after spawn. */
  readonly onSpawn?: (pid: number) => void;
}

/**
 * Run a command to the end, bounded in time, and time it.
 *
 * @param argv the program and its arguments
 * @param options timeout, env, cwd
 * @returns exit code, output, wall time
 */
export async function runCmd(
  argv: readonly string[],
  options: RunOptions = {},
): Promise<CmdResult> {
  const t0 = performance.now();
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
    cwd: options.cwd,
  }).spawn();
  options.onSpawn?.(child.pid);
  let timedOut = false;
  const limit = options.killAfterMs ?? options.timeoutMs ?? 30_000;
  const timer = setTimeout(() => {
    timedOut = options.killAfterMs === undefined;
    signalPid(child.pid, "SIGKILL");
  }, limit);
  try {
    const out = await child.output();
    const ms = performance.now() - t0;
    const dec = new TextDecoder();
    return {
      code: timedOut ? -1 : out.code,
      signal: out.signal,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      ms,
      pid: child.pid,
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}
