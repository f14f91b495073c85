/**
 * Drives `singleton-run` as a user's shell would: the command as a separate
 * process, its exit code, stdout and stderr. Each test can run against every
 * packaging of the command (the source with `deno run`, the bundle, and the
 * compiled binary when one can be built here) or against the fastest one.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PERMISSIONS } from "../../tools/permissions.ts";
import {
  argvOf,
  eventually,
  exists,
  isAlive,
  listPids,
  processState,
} from "../../testing/process.ts";
import { STARTS_FINE } from "../../testing/process.ts";
export { STARTS_FINE };

/** The state letter of a process (R, S, Z, ...), or undefined when it is gone. */
export const procState: (pid: number) => string | undefined = processState;
/** Whether a process runs (a zombie does not). */
export const alive: (pid: number) => boolean = isAlive;

/** The project root, with a trailing slash. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;
/** The CLI fixture daemon (a Deno program speaking both readiness protocols). */
export const FIXTURE: string = `${ROOT}tests/cli/fixtures/daemon.ts`;
/** How to run the fixture daemon: `deno run -A FIXTURE`. */
export const FIXTURE_CMD: readonly string[] = [Deno.execPath(), "run", "-A", FIXTURE];

/** One packaging of the command: how to invoke it. */
export interface Variant {
  /** "source", "bundle" or "compiled". */
  readonly name: string;
  /** The argv prefix; the command's own arguments follow. */
  readonly cmd: readonly string[];
}

/** `deno run -A cli.ts`: the fast path every test uses. */
export const SOURCE: Variant = {
  name: "source",
  cmd: [Deno.execPath(), "run", "-A", `${ROOT}cli.ts`],
};

let bundleBuilt: Promise<Variant> | undefined;

/** `deno run -A dist/singleton-run.js`, building the bundle first when it is missing. */
export function bundleVariant(): Promise<Variant> {
  bundleBuilt ??= (async () => {
    const path = `${ROOT}dist/singleton-run.js`;
    if (!exists(path) || Deno.statSync(path).mtime! < newestSource()) {
      // The task's own command, so the tests run the bundle exactly as it ships.
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["task", "--quiet", "bundle"],
        cwd: ROOT,
        stdout: "inherit",
        stderr: "inherit",
      }).output();
      assert(r.success, "deno bundle failed");
    }
    return { name: "bundle", cmd: [Deno.execPath(), "run", "-A", path] };
  })();
  return bundleBuilt;
}

/** The permission flags the compiled binary and the single file get (tools/permissions.ts). */
export function compilePermissions(): string[] {
  return [...PERMISSIONS];
}

/**
 * The bundle run with exactly the compiled binary's narrow permissions: what
 * proves, on a machine that cannot build the binary, that the command needs
 * no more than `deno task compile` grants.
 */
export async function narrowVariant(): Promise<Variant> {
  const bundle = await bundleVariant();
  return { name: "narrow", cmd: [Deno.execPath(), "run", ...compilePermissions(), bundle.cmd[3]!] };
}

let compiled: Promise<Variant | undefined> | undefined;

/**
 * The compiled binary `dist/compiled/singleton-run`: used when it exists and is newer
 * than cli.ts, else built by `deno task compile` (which needs the denort runtime:
 * `DENORT_BIN` or a cached download). Prints one "skipped" line when it cannot.
 */
export function compiledVariant(): Promise<Variant | undefined> {
  compiled ??= (async () => {
    const path = `${ROOT}dist/compiled/singleton-run`;
    const fresh = (() => {
      try {
        return Deno.statSync(path).mtime! >= Deno.statSync(`${ROOT}cli.ts`).mtime!;
      } catch {
        return false;
      }
    })();
    if (!fresh) {
      // The task itself, so the tests run the binary exactly as it ships.
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["task", "--quiet", "compile"],
        cwd: ROOT,
        stdout: "null",
        stderr: "null",
        signal: AbortSignal.timeout(60_000),
      }).output().catch(() => undefined);
      if (!r?.success) {
        console.log(
          "skipped: compiled binary (deno compile cannot fetch denort here; set DENORT_BIN)",
        );
        return undefined;
      }
    }
    return { name: "compiled", cmd: [path] };
  })();
  return compiled;
}

/** Every packaging that can run here. */
export async function allVariants(): Promise<Variant[]> {
  const out = [SOURCE, await bundleVariant(), await narrowVariant()];
  const bin = await compiledVariant();
  if (bin) out.push(bin);
  return out;
}

/** What one run of the command gave. */
export interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time in milliseconds. */
  readonly ms: number;
}

/** Options of {@link sr}. */
export interface RunOptions {
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  /** Kill it after this long (the test then fails on the code). */
  readonly timeoutMs?: number;
  /** Run it through this command first (`ip netns exec NAME`). */
  readonly prefix?: readonly string[];
}

/**
 * Run `singleton-run ARGS` and collect what it printed.
 *
 * @param variant which packaging
 * @param args the command's arguments
 * @param options environment, cwd, timeout
 */
export async function sr(
  variant: Variant,
  args: readonly string[],
  options: RunOptions = {},
): Promise<Result> {
  const started = performance.now();
  const argv = [...(options.prefix ?? []), ...variant.cmd, ...args];
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: performance.now() - started,
  };
}

/**
 * `start OPTIONS --pidfile ... -- COMMAND` from source, for a program known to
 * start fine, which must succeed:
 * the pid it printed, tracked by the sandbox.
 */
export async function startTracked(
  sb: Sandbox,
  options: readonly string[],
  command: readonly string[],
): Promise<number> {
  const r = await startFine(SOURCE, sb.pidfile, [...options, "--", ...command]);
  assert.equal(r.code, 0, r.stderr);
  const pid = Number(r.stdout.trim());
  sb.track(pid);
  return pid;
}

/**
 * `singleton-run start --pidfile PIDFILE ARGS` for a program known to start
 * fine, in a test that is not about start-up failures: with
 * {@link STARTS_FINE}, so it does not wait the default readiness (unless
 * the test gives its own `--ready-after`).
 *
 * @param variant which packaging
 * @param pidfile the pid file
 * @param args start's other arguments, `--` and the command
 * @param options environment, cwd, timeout
 */
export function startFine(
  variant: Variant,
  pidfile: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<Result> {
  const own = args.slice(0, args.includes("--") ? args.indexOf("--") : args.length);
  const fine = own.includes(STARTS_FINE[0]!) ? [] : STARTS_FINE; // a test's own --ready-after rules
  return sr(variant, ["start", ...fine, "--pidfile", pidfile, ...args], options);
}

/**
 * Start `singleton-run ARGS` without waiting (to kill it halfway, or run many at once).
 *
 * @param options `prefix`: run it through this command first (`ip netns exec NAME`);
 *   `env`: more environment variables
 */
export function srSpawn(
  variant: Variant,
  args: readonly string[],
  options: Pick<RunOptions, "prefix" | "env"> = {},
): Deno.ChildProcess {
  const argv = [...(options.prefix ?? []), ...variant.cmd, ...args];
  return new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
}

/** Assert a user-facing error: the code, one `singleton-run:` line (plus the --help hint for usage), no stack. */
export function assertCleanError(r: Result, code: number, pattern?: RegExp): void {
  assert.deepEqual(r.code, code, `exit code; stderr: ${r.stderr}`);
  assert.deepEqual(r.stdout, "", "nothing on stdout");
  assert(!/\n\s+at /.test(r.stderr), `no stack trace: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert(lines[0]!.startsWith("singleton-run: "), `message prefix: ${r.stderr}`);
  if (code === 2) {
    assert.deepEqual(lines.length, 2, `one line and the --help hint: ${r.stderr}`);
    assert.deepEqual(lines[1], "Try 'singleton-run --help'.");
  } else {
    assert.deepEqual(lines.length, 1, `one line: ${r.stderr}`);
  }
  if (pattern) assert(pattern.test(r.stderr), `${pattern} in: ${r.stderr}`);
}

/** The newest modification time among cli.ts and src/**.ts. */
export function newestSource(): Date {
  let newest = Deno.statSync(`${ROOT}cli.ts`).mtime!;
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) walk(p);
      else if (e.name.endsWith(".ts")) {
        const m = Deno.statSync(p).mtime!;
        if (m > newest) newest = m;
      }
    }
  };
  walk(`${ROOT}src`);
  return newest;
}

/** Read a pid file: the pid, or undefined when empty or missing. */
export function readPid(path: string): number | undefined {
  try {
    if (!Deno.lstatSync(path).isFile) return undefined; // never open a FIFO: it would block
    const text = Deno.readTextFileSync(path).trim();
    return text === "" ? undefined : Number(text);
  } catch {
    return undefined;
  }
}

/** Wait until `check` is true, at most `timeoutMs`; throws naming `what` when it is not. */
export function waitFor(
  check: () => boolean,
  timeoutMs = 5000,
  what = "condition",
): Promise<void> {
  return eventually(what, check, timeoutMs);
}

/** Whether /proc/locks lists a lock on this file. */
export function locked(path: string): boolean {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(path);
  } catch {
    return false;
  }
  const dev = st.dev;
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  const key = `${major.toString(16).padStart(2, "0")}:${
    minor.toString(16).padStart(2, "0")
  }:${st.ino}`;
  return Deno.readTextFileSync("/proc/locks").split("\n").some((l) =>
    l.includes(` ${key} `) && !l.includes("->")
  );
}

/** The pids of live (not zombie) processes whose argv is exactly `argv`. */
export function findProcesses(argv: readonly string[]): number[] {
  const want = argv.join("\0");
  return listPids().filter((pid) => argvOf(pid)?.join("\0") === want && alive(pid));
}

/** Whether process `pid` has a descriptor open on `path`. */
export function holds(pid: number, path: string): boolean {
  const st = Deno.statSync(path);
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        const s = Deno.statSync(`/proc/${pid}/fd/${e.name}`);
        if (s.dev === st.dev && s.ino === st.ino) return true;
      } catch {
        // Closed meanwhile.
      }
    }
  } catch {
    return false;
  }
  return false;
}

/**
 * A temporary directory for one test, and the processes it started: on
 * dispose, every tracked pid still alive is killed (SIGKILL, by pid) and the
 * directory is removed.
 */
export class Sandbox implements AsyncDisposable {
  readonly dir: string;
  readonly #pids = new Set<number>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Make one. */
  static async create(): Promise<Sandbox> {
    return new Sandbox(await Deno.makeTempDir({ prefix: "singleton-run-cli-" }));
  }

  /** A path inside the sandbox. */
  path(name: string): string {
    return `${this.dir}/${name}`;
  }

  /** The default pid file. */
  get pidfile(): string {
    return this.path("d.pid");
  }

  /** Kill this pid at the end if it still runs. */
  track(pid: number | undefined): void {
    if (pid !== undefined && Number.isInteger(pid) && pid > 1) this.#pids.add(pid);
  }

  /** The entries of the directory, sorted. */
  list(): string[] {
    return [...Deno.readDirSync(this.dir)].map((e) => e.name).sort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const pid = readPid(this.pidfile);
    if (pid !== undefined && locked(this.pidfile) && holds(pid, this.pidfile)) this.track(pid);
    for (const p of this.#pids) {
      if (alive(p)) {
        try {
          Deno.kill(p, "SIGKILL");
        } catch {
          // Gone.
        }
      }
    }
    for (const p of this.#pids) await waitFor(() => !alive(p), 5000, `pid ${p} to die`);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * A number no other test uses, as a `sleep` argument that names a process
 * (a decimal, so `sleep` takes it as seconds).
 *
 * @param base the whole seconds
 */
export function marker(base = 300): string {
  return String(base + Math.floor(Math.random() * 1e6) / 1e6);
}
