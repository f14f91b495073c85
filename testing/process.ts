/**
 * The process helpers that tests, the bench and the stress suite share:
 * temporary directories that remove themselves, child processes read line by
 * line or run to the end with a bound, and what /proc says of a process (its
 * state, argv, memory, descriptors and the locks it holds).
 *
 * Nothing here imports `src/`: these are the facts a user could check with
 * `ps` and `ls -l /proc/PID/fd`, so they can judge the code under test
 * instead of repeating it.
 *
 * @module
 */

/** A temporary directory removed (with its content) when disposed. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
  join(name: string): string;
}

/** Make a temporary directory that `await using` removes at the end of the scope. */
export async function tempDir(prefix = "singleton-run-test-"): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    join: (name) => `${path}/${name}`,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** Whether a path exists (following symlinks). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * A timer as a promise.
 *
 * @param ms milliseconds
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Wait until `check()` is true or `ms` pass, looking every 10 ms.
 *
 * @returns whether it became true in time
 */
export async function until(
  check: () => boolean | Promise<boolean>,
  ms: number,
): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** Wait (bounded) until a condition holds; throws naming `what` when it does not. */
export async function eventually(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  if (!(await until(condition, timeoutMs))) {
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  }
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
 * The fields of /proc/PID/stat after the command name: [state, ppid, pgrp,
 * session, ...]. Throws once the process is gone.
 *
 * @param pid the process
 */
export function procStat(pid: number): string[] {
  const raw = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The command name may hold spaces and parentheses: split after the last ")".
  return raw.slice(raw.lastIndexOf(")") + 2).split(" ");
}

/** State letter, parent and session of a process, from /proc/PID/stat. */
export interface ProcStat {
  /** R, S, D, Z, T, ... */
  readonly state: string;
  /** The parent pid. */
  readonly ppid: number;
  /** The session id. */
  readonly sid: number;
}

/**
 * State, parent and session of a process.
 *
 * @param pid the process
 * @returns undefined once it is gone
 */
export function statOf(pid: number): ProcStat | undefined {
  try {
    const rest = procStat(pid);
    return { state: rest[0]!, ppid: Number(rest[1]), sid: Number(rest[3]) };
  } catch {
    return undefined;
  }
}

/** The one-letter state of a process (R, S, Z, ...) or undefined when it is gone. */
export function processState(pid: number): string | undefined {
  return statOf(pid)?.state;
}

/** Whether a process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== "Z" && state !== "X";
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

/** Resident memory of a process, in kB. */
export interface Memory {
  /** VmRSS: every resident page, shared ones included. */
  readonly rss: number;
  /** RssAnon: its private (anonymous) pages. */
  readonly anon: number;
  /** Pss from smaps_rollup: shared pages divided among their users (0 on an old kernel). */
  readonly pss: number;
}

/**
 * RSS, anonymous RSS and PSS of a process. Throws once the process is gone.
 *
 * @param pid the process
 */
export function memory(pid: number): Memory {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  let pss = 0;
  try {
    const rollup = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
    pss = Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
  } catch {
    // no smaps_rollup (old kernel)
  }
  return { rss: field("VmRSS"), anon: field("RssAnon"), pss };
}

/**
 * Resident memory of a process in KiB (VmRSS), or undefined once it is gone.
 *
 * @param pid the process
 */
export function rssKiB(pid: number): number | undefined {
  try {
    return memory(pid).rss;
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
    if (exe.endsWith(`/${program}`) && isAlive(pid)) found.push(pid);
  }
  return found;
}

/**
 * Live processes whose argv mentions `needle` anywhere (a temp dir, a marker):
 * everything a run started, controllers included, this process excluded.
 *
 * @param needle a substring of one argument
 */
export function findMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const pid of listPids()) {
    if (pid === Deno.pid) continue;
    const argv = argvOf(pid);
    if (argv && argv.some((a) => a.includes(needle)) && isAlive(pid)) found.push(pid);
  }
  return found;
}

/**
 * Signal a process we started, by pid, ignoring one that is already gone.
 *
 * @param pid the process
 * @param signal the signal
 * @returns whether it was sent
 */
export function killQuietly(pid: number, signal: Deno.Signal = "SIGKILL"): boolean {
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
  while (isAlive(pid)) {
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
  for (const pid of pids) killQuietly(pid, "SIGKILL");
  for (const pid of pids) await waitGone(pid, timeoutMs);
}

/** The repository root (this file is testing/process.ts). */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** `deno run -A` with this Deno, for fixture programs. */
export function denoArgs(script: string, ...args: string[]): [string, string[]] {
  return [Deno.execPath(), ["run", "-A", "--quiet", script, ...args]];
}

/** How the singleton-run command is invoked: from source, or the bundle. */
export type CliForm = "source" | "bundle";

/**
 * The argv prefix that runs singleton-run.
 *
 * @param form "source" (`deno run -A cli.ts`) or "bundle" (`dist/singleton-run.js`)
 * @param permissions the permission flags (all, unless given)
 */
export function cliArgv(form: CliForm, permissions: readonly string[] = ["--allow-all"]): string[] {
  const script = form === "bundle" ? `${ROOT}/dist/singleton-run.js` : `${ROOT}/cli.ts`;
  return [Deno.execPath(), "run", ...permissions, "--quiet", script];
}

/**
 * `start`'s readiness for a program known to start fine, in a test or a
 * bench row that is not about start-up failures: time alive alone, 20 ms
 * (the old default), instead of the default wait (alive 4 s, or serving for
 * 1 s), which would add seconds to every such start. Tests of readiness
 * itself and of forking daemons use the default.
 */
export const STARTS_FINE: readonly string[] = ["--ready-after", "20"];

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
    killQuietly(child.pid, "SIGKILL");
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

/** A child process whose stdout is read a line at a time. */
export class LineChild implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;

  constructor(command: string, args: string[], options: { env?: Record<string, string> } = {}) {
    this.process = new Deno.Command(command, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      ...(options.env ? { env: options.env } : {}),
    }).spawn();
    this.#stdin = this.process.stdin.getWriter();
    this.#lines = this.process.stdout
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(splitLines())[Symbol.asyncIterator]();
  }

  get pid(): number {
    return this.process.pid;
  }

  /** The next line of output, or undefined at its end; fails after `timeoutMs`. */
  async line(timeoutMs = 20_000): Promise<string | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no line from pid ${this.pid} in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const next = await Promise.race([this.#lines.next(), timeout]);
      return next.done ? undefined : next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Close its stdin (holders then let go) and wait for it to exit. */
  async finish(): Promise<Deno.CommandStatus> {
    await this.#stdin.close().catch(() => {});
    while (await this.line().catch(() => undefined) !== undefined) { /* drain */ }
    return await this.process.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.finish().catch(() => {});
  }
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, controller) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) controller.enqueue(p);
    },
    flush(controller) {
      if (rest) controller.enqueue(rest);
    },
  });
}
