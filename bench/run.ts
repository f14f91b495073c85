/**
 * `deno task bench`: singleton-run side by side with the tools users would
 * otherwise pick (start-stop-daemon, daemonize, libslack's daemon, flock), in
 * one run on this machine. Every row is a median over repeated runs, measured
 * interleaved with its peers (run 1 of each, then run 2 of each, ...), and
 * shown as a ratio to the fastest peer and to the floor (Deno's own start-up).
 *
 * Prints a markdown table, then the targets met or missed, and writes
 * bench/results.json (every sample) and docs/performance.svg (the chart that
 * docs/performance.md shows, dated), so no number is ever copied by hand.
 *
 * Options: `--runs N` (default 15), `--quick` (5 runs, fewer stops and lists),
 * `--only GROUP[,GROUP]`, `--json PATH`, `--svg PATH`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PidFile } from "../mod.ts";
import { DEFAULT_READY_AFTER_MS, DEFAULT_READY_SERVING_MS } from "../src/control/mod.ts";
import {
  argvOf,
  cliArgv,
  type CliForm,
  findInstances,
  findMentioning,
  isAlive,
  killAll,
  killQuietly,
  ROOT,
  rssKiB,
  runCmd,
  type RunOptions,
  sleep,
  statOf,
  waitGone,
} from "../testing/process.ts";
import { PERMISSIONS } from "../tools/permissions.ts";
import { holdAsDaemon } from "./holder.ts";
import { renderSvg } from "./svg.ts";

/** Who a row measures. */
type Kind = "floor" | "ours" | "peer";

/** One line of the table. */
export interface Row {
  /** The comparison it belongs to. */
  readonly group: string;
  /** Tool and command, short. */
  readonly name: string;
  /** floor, ours or peer. */
  readonly kind: Kind;
  /** "ms", "µs" or "MiB". */
  readonly unit: string;
  /** Every sample, in unit. */
  samples: number[];
  /** The median of the samples. */
  median?: number;
  /** median / fastest peer's median in the group. */
  vsPeer?: number;
  /** median / the floor's median. */
  vsFloor?: number;
  /** Anything a reader must know (exit codes, instances, skips). */
  notes: string[];
}

const args = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string" },
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    json: { type: "string", default: `${ROOT}/bench/results.json` },
    svg: { type: "string", default: `${ROOT}/docs/performance.svg` },
  },
});
const RUNS = Number(args.values.runs ?? (args.values.quick ? 5 : 15));
const STOP_RUNS = args.values.quick ? 2 : 5;
const BURST_RUNS = args.values.quick ? 2 : 5;
const ONLY = args.values.only?.split(",");
const BURST = 32;

const rows: Row[] = [];
const skipped: string[] = [];
const work = await Deno.makeTempDir({ prefix: "sr-bench-" });
let seq = 0;
/** A fresh directory per measured run, so no run sees another's pid file. */
function freshDir(): string {
  const dir = `${work}/r${++seq}`;
  Deno.mkdirSync(dir);
  return dir;
}
/** A marker argument that only this run's daemon carries: sleep sums its arguments. */
function marker(): string {
  return `0.0${String(Deno.pid).padStart(7, "0")}${String(++seq).padStart(5, "0")}`;
}

function row(group: string, name: string, kind: Kind, unit = "ms"): Row {
  const r: Row = { group, name, kind, unit, samples: [], notes: [] };
  rows.push(r);
  return r;
}
function note(r: Row, text: string): void {
  if (!r.notes.includes(text)) r.notes.push(text);
}
function wanted(group: string): boolean {
  return ONLY === undefined || ONLY.some((g) => group.toLowerCase().includes(g.toLowerCase()));
}

/** Median of a list of numbers (NaN for none). */
function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Where a tool lives on PATH (or in `path`), or undefined. */
function which(
  name: string,
  path: string = Deno.env.get("PATH") ?? "/usr/bin:/bin",
): string | undefined {
  for (const dir of path.split(":")) {
    const file = `${dir}/${name}`;
    try {
      const st = Deno.statSync(file);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

// ---- tools -----------------------------------------------------------------

const tools = {
  daemonize: which("daemonize"),
  ssd: which("start-stop-daemon") ?? which("start-stop-daemon", "/sbin:/usr/sbin"),
  daemon: which("daemon"),
  flock: which("flock"),
  sleep: which("sleep") ?? "/bin/sleep",
};
const missing = (name: string, pkg: string) =>
  skipped.push(`${name}: not installed (apt-get install ${pkg}); its rows are skipped`);
if (!tools.daemonize) missing("daemonize", "daemonize");
if (!tools.daemon) missing("daemon", "daemon");
if (!tools.ssd) missing("start-stop-daemon", "dpkg");
if (!tools.flock) missing("flock", "util-linux");

/** The CLI forms that work: the bundle must be built, the CLI must answer --version. */
const forms: CliForm[] = [];
for (const form of ["bundle", "source"] as const) {
  if (form === "bundle") {
    try {
      Deno.statSync(`${ROOT}/dist/singleton-run.js`);
    } catch {
      skipped.push("singleton-run (bundle): dist/singleton-run.js missing (deno task bundle)");
      continue;
    }
  }
  const probe = await runCmd([...cliArgv(form), "--help"], { timeoutMs: 20_000 });
  if (probe.code === 0 && /\bstart\b/.test(probe.stdout + probe.stderr)) forms.push(form);
  else skipped.push(`singleton-run (${form}): --help did not list commands (not built yet?)`);
}
const ours = (form: CliForm) => `singleton-run (${form === "bundle" ? "bundle" : "cli.ts"})`;

// ---- helpers ---------------------------------------------------------------

/** Run once, record its wall time; a failure is a note, not a sample. */
async function timed(
  r: Row,
  argv: string[],
  ok: (code: number) => boolean = (c) => c === 0,
  opts: RunOptions = {},
) {
  const res = await runCmd(argv, { timeoutMs: 30_000, ...opts });
  if (ok(res.code)) r.samples.push(res.ms);
  else {
    const line = res.stderr.trim().split("\n").pop() ?? "";
    note(r, `exit ${res.timedOut ? "timeout" : res.code}: ${line.slice(0, 120)}`);
  }
  return res;
}

/** Rotate the order each run, so no tool always goes first. */
function rotated<T>(xs: T[], i: number): T[] {
  const k = i % Math.max(1, xs.length);
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/** Every live process this bench started under `dir` or with `mark`: killed by pid. */
async function cleanup(...needles: string[]): Promise<void> {
  const pids = new Set<number>();
  for (const n of needles) for (const p of findMentioning(n)) pids.add(p);
  await killAll(pids);
}

/** The pid written into a pid file by a peer, once it is there. */
async function pidFromFile(path: string, timeoutMs = 2000): Promise<number | undefined> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      const m = /^\s*([0-9]+)/.exec(Deno.readTextFileSync(path));
      if (m) return Number(m[1]);
    } catch {
      // not yet
    }
    await sleep(2);
  }
  return undefined;
}

// ---- floor -----------------------------------------------------------------

const FLOOR = "floor";
const denoFloor = row(FLOOR, "deno run (empty script)", "floor");
const flockFloor = tools.flock ? row(FLOOR, "flock -n FILE true", "floor") : undefined;
const trueFloor = row(FLOOR, "/bin/true (spawn cost of this harness)", "floor");

async function floorRun(i: number): Promise<void> {
  const dir = freshDir();
  const jobs: Array<() => Promise<unknown>> = [
    () =>
      timed(denoFloor, [Deno.execPath(), "run", "--allow-all", `${ROOT}/bench/fixtures/empty.ts`]),
    () => timed(trueFloor, ["/bin/true"]),
  ];
  if (flockFloor) jobs.push(() => timed(flockFloor, [tools.flock!, "-n", `${dir}/f.lock`, "true"]));
  for (const job of rotated(jobs, i)) await job();
}

// ---- start until ready -----------------------------------------------------

const START = "start until ready (sleep)";
const START_SERVER = "start until ready (a server)";
/** What the default readiness costs is measured against this: the exec, and no wait. */
const NO_WAIT = ["--ready-after", "0"];
interface Starter {
  row: Row;
  /** Start in dir, return the daemon's pid (or undefined). */
  start(dir: string, mark: string): Promise<number | undefined>;
}
const starters: Starter[] = [];
/** Our start rows, each with the row of the same form and command without a wait. */
const startBaselines = new Map<Row, Row>();

/** A row of `start EXTRA -- COMMAND` for one form of the CLI. */
function ourStarter(
  group: string,
  form: CliForm,
  extra: string[],
  command: (mark: string) => string[],
): Starter {
  const r = row(group, `${ours(form)} start${extra.length ? ` ${extra.join(" ")}` : ""}`, "ours");
  return {
    row: r,
    async start(dir, mark) {
      const res = await timed(r, [
        ...cliArgv(form),
        "start",
        "--pidfile",
        `${dir}/d.pid`,
        ...extra,
        "--",
        ...command(mark),
      ]);
      const pid = Number(res.stdout.trim());
      if (res.code === 0 && !(pid > 0)) note(r, `stdout was not a pid: ${res.stdout.trim()}`);
      return pid > 0 ? pid : undefined;
    },
  };
}

if (wanted(START)) {
  // The default readiness: a program that serves nothing (sleep) is ready once it has stayed
  // alive DEFAULT_READY_AFTER_MS; "--ready-after 20" is the old default, and "--ready-after 0"
  // the start without any wait (still more than the peers check: they return after fork,
  // before the exec), the baseline every start row is divided by.
  const sleeper = (mark: string) => [tools.sleep, "3600", mark];
  for (const form of forms) {
    const base = ourStarter(START, form, NO_WAIT, sleeper);
    starters.push(base);
    if (form !== forms[0]) continue;
    for (const extra of [[], ["--ready-after", "20"]]) {
      const s = ourStarter(START, form, extra, sleeper);
      startBaselines.set(s.row, base.row);
      starters.push(s);
    }
  }
  if (tools.daemonize) {
    const r = row(START, "daemonize -p -l", "peer");
    starters.push({
      row: r,
      async start(dir, mark) {
        await timed(r, [
          tools.daemonize!,
          "-p",
          `${dir}/d.pid`,
          "-l",
          `${dir}/d.lock`,
          tools.sleep,
          "3600",
          mark,
        ]);
        return await pidFromFile(`${dir}/d.pid`);
      },
    });
  }
  if (tools.ssd) {
    const r = row(START, "start-stop-daemon --start --background --make-pidfile", "peer");
    starters.push({
      row: r,
      async start(dir, mark) {
        await timed(r, [
          tools.ssd!,
          "--start",
          "--background",
          "--make-pidfile",
          "--pidfile",
          `${dir}/d.pid`,
          "--exec",
          tools.sleep,
          "--",
          "3600",
          mark,
        ]);
        return await pidFromFile(`${dir}/d.pid`);
      },
    });
  }
  if (tools.daemon) {
    const r = row(START, "daemon --name --pidfiles", "peer");
    starters.push({
      row: r,
      async start(dir, mark) {
        await timed(r, [
          tools.daemon!,
          "--name",
          "d",
          "--pidfiles",
          dir,
          "--",
          tools.sleep,
          "3600",
          mark,
        ]);
        return await pidFromFile(`${dir}/d.pid`);
      },
    });
  }
}

// A server under the default readiness: ready once it has served (listened and waited for
// connections) for DEFAULT_READY_SERVING_MS, against the same start without a wait.
const servers: Starter[] = [];
if (wanted(START_SERVER) && forms.length > 0) {
  const server = (mark: string) => [
    Deno.execPath(),
    "run",
    "--allow-net=127.0.0.1",
    `${ROOT}/bench/fixtures/serve.ts`,
    mark,
  ];
  const base = ourStarter(START_SERVER, forms[0]!, NO_WAIT, server);
  const s = ourStarter(START_SERVER, forms[0]!, [], server);
  startBaselines.set(s.row, base.row);
  servers.push(base, s);
}

async function startRun(i: number): Promise<void> {
  for (const s of rotated(starters, i)) {
    const dir = freshDir();
    const mark = marker();
    await s.start(dir, mark);
    // Each tool's daemon must really be there, then goes (by pid).
    await sleep(20);
    const found = findInstances(mark);
    if (found.length !== 1) note(s.row, `run ${i + 1}: ${found.length} instances afterwards`);
    await cleanup(dir, mark);
  }
  for (const s of rotated(servers, i)) {
    const dir = freshDir();
    const mark = marker();
    const pid = await s.start(dir, mark);
    if (pid === undefined || !isAlive(pid)) note(s.row, `run ${i + 1}: no server afterwards`);
    await cleanup(dir, mark);
  }
}

// ---- stop until gone, nobody reaps ------------------------------------------

interface Stopper {
  row: Row;
  argv(pidfile: string): string[];
  ok(code: number): boolean;
}
function stopRows(group: string): Stopper[] {
  const out: Stopper[] = [];
  for (const form of forms) {
    out.push({
      row: row(group, `${ours(form)} stop`, "ours"),
      argv: (p) => [...cliArgv(form), "stop", "--pidfile", p],
      ok: (c) => c === 0,
    });
  }
  if (tools.ssd) {
    out.push({
      row: row(group, "start-stop-daemon --stop --retry TERM/5", "peer"),
      argv: (p) => [tools.ssd!, "--stop", "--retry", "TERM/5", "--pidfile", p],
      // 2 is "the schedule ran out": it waited the full 5 s; still a time worth showing.
      ok: (c) => c === 0 || c === 2,
    });
  }
  return out;
}
const STOP_PARENT = "stop until gone (daemon's parent never reaps)";
const STOP_ORPHAN = "stop until gone (orphan, PID 1 reaps when it likes)";
const stoppers: Record<string, Stopper[]> = {};
if (wanted(STOP_PARENT) && tools.flock) stoppers.parent = stopRows(STOP_PARENT);
if (wanted(STOP_ORPHAN) && tools.flock) stoppers.orphan = stopRows(STOP_ORPHAN);

async function stopRun(mode: "parent" | "orphan", i: number): Promise<void> {
  for (const s of rotated(stoppers[mode] ?? [], i)) {
    const dir = freshDir();
    const mark = marker();
    const pidfile = `${dir}/d.pid`;
    const setup = await runCmd(
      [`${ROOT}/bench/fixtures/unreaped.sh`, pidfile, mark, mode],
      { timeoutMs: 5000 },
    );
    const [daemon, parent] = setup.stdout.trim().split(" ").map(Number);
    if (setup.code !== 0 || !(daemon! > 0)) {
      note(s.row, `setup failed: ${setup.stderr.trim()}`);
      continue;
    }
    if (mode === "orphan") {
      await sleep(5); // let the reparenting happen
      const ppid = statOf(daemon!)?.ppid;
      if (ppid !== 1) note(s.row, `the orphan's new parent was pid ${ppid}, not 1`);
    }
    const res = await timed(s.row, s.argv(pidfile), s.ok, { timeoutMs: 20_000 });
    if (res.code === 2 && s.row.kind === "peer") {
      note(s.row, "exit 2: gave up after its 5 s schedule (the zombie still answers kill(pid, 0))");
    }
    if (isAlive(daemon!)) note(s.row, `run ${i + 1}: the daemon was still running after stop`);
    if (parent! > 0) killQuietly(parent!, "SIGKILL");
    await cleanup(dir, mark);
  }
}

// ---- status ----------------------------------------------------------------

const STATUS = "status of a running daemon";
interface Prober {
  row: Row;
  argv: string[];
  ok(code: number): boolean;
}
const probers: Prober[] = [];
let statusDaemonPids: number[] = [];
const statusMarks: string[] = [];
const statusDir = freshDir();
if (wanted(STATUS)) {
  const pidfile = `${statusDir}/d.pid`;
  const mark = marker();
  if (tools.flock) {
    const setup = await runCmd(
      [`${ROOT}/bench/fixtures/unreaped.sh`, pidfile, mark, "parent"],
      { timeoutMs: 5000 },
    );
    statusDaemonPids = setup.stdout.trim().split(" ").map(Number).filter((n) => n > 0);
  }
  // With the permissions the installed command runs with, not -A.
  for (const form of forms) {
    probers.push({
      row: row(STATUS, `${ours(form)} status`, "ours"),
      argv: [...cliArgv(form, PERMISSIONS), "status", "--pidfile", pidfile],
      ok: (c) => c === 0,
    });
  }
  // What every status cost while the command exited before Deno stored its
  // compiled code (it compiled the module again each time), and what the
  // first status after an install or upgrade still costs.
  if (forms.includes("bundle")) {
    probers.push({
      row: row(STATUS, `${ours("bundle")} status, compiled afresh (--no-code-cache)`, "ours"),
      argv: [
        ...cliArgv("bundle", [...PERMISSIONS, "--no-code-cache"]),
        "status",
        "--pidfile",
        pidfile,
      ],
      ok: (c) => c === 0,
    });
  }
  if (tools.ssd) {
    probers.push({
      row: row(STATUS, "start-stop-daemon --status --pidfile", "peer"),
      argv: [tools.ssd, "--status", "--pidfile", pidfile],
      ok: (c) => c === 0,
    });
  }
  if (tools.daemon) {
    const dmark = marker();
    statusMarks.push(dmark);
    await runCmd([
      tools.daemon,
      "--name",
      "s",
      "--pidfiles",
      statusDir,
      "--",
      tools.sleep,
      "3600",
      dmark,
    ]);
    probers.push({
      row: row(STATUS, "daemon --running --name --pidfiles", "peer"),
      argv: [tools.daemon, "--running", "--name", "s", "--pidfiles", statusDir],
      ok: (c) => c === 0,
    });
  }
  if (tools.flock) {
    probers.push({
      row: row(STATUS, "flock -n PIDFILE true (fails while held)", "floor"),
      argv: [tools.flock, "-n", pidfile, "true"],
      ok: (c) => c === 1,
    });
  }
}

// The peak memory of one status against an empty `deno run`, measured in the
// same runs: GNU time's maximum resident set size of the whole process.
const STATUS_MEMORY = "peak memory of status (max RSS)";
const gnuTime = which("time", "/usr/bin:/bin");
const memoryProbers: Prober[] = [];
if (wanted(STATUS) && !gnuTime) missing("time (GNU time, for peak memory)", "time");
if (wanted(STATUS) && gnuTime) {
  memoryProbers.push({
    row: row(STATUS_MEMORY, "deno run (empty script)", "floor", "MiB"),
    argv: [Deno.execPath(), "run", "--allow-all", `${ROOT}/bench/fixtures/empty.ts`],
    ok: (c) => c === 0,
  });
  for (const p of probers.filter((p) => p.row.kind === "ours")) {
    memoryProbers.push({
      row: row(STATUS_MEMORY, p.row.name, "ours", "MiB"),
      argv: p.argv,
      ok: p.ok,
    });
  }
}

/** Run once under GNU time and record the peak RSS in MiB; a failure is a note. */
async function peakMemory(p: Prober): Promise<void> {
  const res = await runCmd([gnuTime!, "-f", "maxrss %M", ...p.argv], { timeoutMs: 30_000 });
  const kib = /maxrss ([0-9]+)\s*$/.exec(res.stderr)?.[1];
  if (p.ok(res.code) && kib !== undefined) p.row.samples.push(Number(kib) / 1024);
  else {
    const own = res.stderr.split("\n").filter((l) => l && !/^(maxrss |Command )/.test(l));
    note(p.row, `exit ${res.timedOut ? "timeout" : res.code}: ${(own.pop() ?? "").slice(0, 120)}`);
  }
}

// The CPU time (user + system, every thread) of one status against an empty
// `deno run`'s, in the same runs: on a shared machine the wall time also
// measures the other processes' load, the CPU time far less. bash's `times`
// reports what its children used, to the millisecond.
const STATUS_CPU = "CPU time of status (user+sys)";
const bash = which("bash");
const cpuProbers: Prober[] = [];
if (wanted(STATUS) && !bash) missing("bash (its `times`, for CPU time)", "bash");
if (wanted(STATUS) && bash) {
  for (const p of memoryProbers) {
    cpuProbers.push({ ...p, row: row(STATUS_CPU, p.row.name, p.row.kind) });
  }
}

/** Run once under bash and record the CPU time its `times` reports; a failure is a note. */
async function cpuTime(p: Prober): Promise<void> {
  const script = '"$@" >/dev/null 2>&1; status=$?; times >&2; exit $status';
  const res = await runCmd([bash!, "-c", script, "bash", ...p.argv], { timeoutMs: 30_000 });
  // The second line of `times`: the children's user and system time, `0m0.041s 0m0.044s`.
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/m.exec(res.stderr.split("\n")[1] ?? "");
  if (p.ok(res.code) && m) {
    const [min1, s1, min2, s2] = m.slice(1).map(Number) as [number, number, number, number];
    p.row.samples.push((min1 * 60 + s1 + min2 * 60 + s2) * 1000);
  } else note(p.row, `exit ${res.timedOut ? "timeout" : res.code}`);
}

async function statusRun(i: number): Promise<void> {
  for (const p of rotated(probers, i)) await timed(p.row, p.argv, p.ok);
  for (const p of rotated(memoryProbers, i)) await peakMemory(p);
  for (const p of rotated(cpuProbers, i)) await cpuTime(p);
}

// ---- list of 100 services ----------------------------------------------------

// `list` reports on every service in one process, against what a script
// would do otherwise: a status per service (ours, or start-stop-daemon's).
// The 100 services are plain `sleep`s started for this group through the
// control API (as `start --name` would: DIR/NAME.pid), and stopped after by
// their pids. A sample of an "x100" row is the wall time of 100 runs in a row.
const LIST = "list of 100 running services";
const LIST_SERVICES = 100;
const LIST_RUNS = args.values.quick ? 2 : 5;
interface Lister {
  row: Row;
  /** How many runs one sample is. */
  times: number;
  argv: string[];
  ok(code: number): boolean;
}
const listers: Lister[] = [];
const listDir = `${work}/services`;
const listEnv = { SINGLETON_RUN_DIR: listDir };
const listPids: number[] = [];

/** Start the services `list` reports on: DIR/s000.pid ... */
async function startListServices(): Promise<void> {
  const { start } = await import("../src/control/mod.ts");
  Deno.mkdirSync(listDir);
  const mark = marker();
  statusMarks.push(mark);
  for (let i = 0; i < LIST_SERVICES; i++) {
    const name = `s${String(i).padStart(3, "0")}`;
    const r = await start({
      pidfile: `${listDir}/${name}.pid`,
      command: [tools.sleep, "3600", mark],
      readyAfter: 0,
    });
    listPids.push(r.pid);
  }
}

if (wanted(LIST)) {
  await startListServices();
  const one = `${listDir}/s050.pid`;
  for (const form of forms) {
    listers.push({
      row: row(LIST, `${ours(form)} list (${LIST_SERVICES} services, one process)`, "ours"),
      times: 1,
      argv: [...cliArgv(form), "list"],
      ok: (c) => c === 0,
    });
    listers.push({
      row: row(LIST, `${ours(form)} status (one service)`, "ours"),
      times: 1,
      argv: [...cliArgv(form), "status", "s050"],
      ok: (c) => c === 0,
    });
    listers.push({
      row: row(LIST, `${ours(form)} status x${LIST_SERVICES}`, "ours"),
      times: LIST_SERVICES,
      argv: [...cliArgv(form), "status", "s050"],
      ok: (c) => c === 0,
    });
  }
  if (tools.ssd) {
    listers.push({
      row: row(LIST, `start-stop-daemon --status --pidfile x${LIST_SERVICES}`, "peer"),
      times: LIST_SERVICES,
      argv: [tools.ssd, "--status", "--pidfile", one],
      ok: (c) => c === 0,
    });
  }
}

/** One sample of each lister: `times` runs in a row, one wall time. */
async function listRun(i: number): Promise<void> {
  for (const l of rotated(listers, i)) {
    const t0 = performance.now();
    let failed = false;
    for (let k = 0; k < l.times && !failed; k++) {
      const res = await runCmd(l.argv, { timeoutMs: 60_000, env: listEnv });
      if (!l.ok(res.code)) {
        failed = true;
        note(l.row, `exit ${res.code}: ${res.stderr.trim().split("\n").pop()?.slice(0, 120)}`);
      } else if (l.times === 1 && l.argv.includes("list")) {
        const lines = res.stdout.trim().split("\n").length - 1;
        if (lines !== LIST_SERVICES) note(l.row, `listed ${lines} services`);
      }
    }
    if (!failed) l.row.samples.push(performance.now() - t0);
  }
}

// ---- 32 at once ------------------------------------------------------------

const BURST_GROUP = `${BURST} simultaneous starts on one pid file`;
interface Burster {
  row: Row;
  instances: Row;
  argv(dir: string, mark: string): string[];
}
const bursters: Burster[] = [];
if (wanted(BURST_GROUP)) {
  const add = (name: string, kind: Kind, argv: (dir: string, mark: string) => string[]) =>
    bursters.push({
      row: row(BURST_GROUP, `${name}: wall time`, kind),
      instances: row(`${BURST_GROUP}: instances left running (must be 1)`, name, kind, "count"),
      argv,
    });
  for (const form of forms) {
    add(ours(form), "ours", (d, m) => [
      ...cliArgv(form),
      "start",
      "--pidfile",
      `${d}/d.pid`,
      "--",
      tools.sleep,
      "3600",
      m,
    ]);
  }
  if (tools.daemonize) {
    add("daemonize -p -l", "peer", (d, m) => [
      tools.daemonize!,
      "-p",
      `${d}/d.pid`,
      "-l",
      `${d}/d.lock`,
      tools.sleep,
      "3600",
      m,
    ]);
  }
  if (tools.ssd) {
    add("start-stop-daemon --start --background -m", "peer", (d, m) => [
      tools.ssd!,
      "--start",
      "--background",
      "--make-pidfile",
      "--pidfile",
      `${d}/d.pid`,
      "--exec",
      tools.sleep,
      "--",
      "3600",
      m,
    ]);
  }
  if (tools.daemon) {
    add("daemon --name --pidfiles", "peer", (d, m) => [
      tools.daemon!,
      "--name",
      "d",
      "--pidfiles",
      d,
      "--",
      tools.sleep,
      "3600",
      m,
    ]);
  }
}

async function burstRun(i: number): Promise<void> {
  for (const b of rotated(bursters, i)) {
    const dir = freshDir();
    const mark = marker();
    const argv = b.argv(dir, mark);
    const t0 = performance.now();
    const results = await Promise.all(
      Array.from({ length: BURST }, () => runCmd(argv, { timeoutMs: 60_000 })),
    );
    b.row.samples.push(performance.now() - t0);
    const codes = new Map<number, number>();
    for (const r of results) codes.set(r.code, (codes.get(r.code) ?? 0) + 1);
    note(
      b.row,
      `exit codes ${[...codes].sort((a, c) => a[0] - c[0]).map(([c, n]) => `${c}x${n}`).join(" ")}`,
    );
    await sleep(300); // a peer may return before its child has exec'd
    b.instances.samples.push(findInstances(mark).length);
    await cleanup(dir, mark);
  }
}

// ---- RSS -------------------------------------------------------------------

const RSS = "RSS that stays resident while the daemon runs";
interface Resident {
  row: Row;
  /** Start, return the pid whose RSS counts, and what to clean. */
  launch(dir: string, mark: string): Promise<number | undefined>;
}
const residents: Resident[] = [];
if (wanted(RSS)) {
  residents.push({
    row: row(RSS, "deno run (idle script): the Deno floor", "floor", "MiB"),
    async launch(dir) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", `${ROOT}/bench/fixtures/idle.ts`, dir],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      child.unref();
      child.status.catch(() => {});
      await sleep(400);
      return child.pid;
    },
  });
  const form = forms[0];
  if (form) {
    const r = row(RSS, `${ours(form)} run: the command after execve`, "ours", "MiB");
    residents.push({
      row: r,
      async launch(dir, mark) {
        const child = new Deno.Command(cliArgv(form)[0]!, {
          args: [
            ...cliArgv(form).slice(1),
            "run",
            "--pidfile",
            `${dir}/d.pid`,
            "--",
            tools.sleep,
            "3600",
            mark,
          ],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        child.unref();
        child.status.catch(() => {});
        const deadline = performance.now() + 5000;
        while (performance.now() < deadline) {
          if (findInstances(mark).includes(child.pid)) return child.pid;
          await sleep(10);
        }
        note(r, "run did not become the command within 5 s");
        return undefined;
      },
    });
    const sup = row(RSS, `${ours(form)} start --supervise: the supervisor`, "ours", "MiB");
    residents.push({
      row: sup,
      async launch(dir, mark) {
        const res = await runCmd([
          ...cliArgv(form),
          "start",
          "--supervise",
          "--pidfile",
          `${dir}/d.pid`,
          "--",
          tools.sleep,
          "3600",
          mark,
        ]);
        if (res.code !== 0) {
          note(sup, `start --supervise: exit ${res.code}: ${res.stderr.trim().split("\n").pop()}`);
          return undefined;
        }
        await sleep(300);
        // The supervisor: a deno process whose argv names the pid file, and the parent of the command.
        const child = findInstances(mark)[0];
        const parent = child === undefined ? undefined : statOf(child)?.ppid;
        if (parent !== undefined && argvOf(parent)?.some((a) => a.includes(dir))) return parent;
        note(sup, "could not find the supervisor as the command's parent");
        return undefined;
      },
    });
  }
  if (tools.daemon) {
    residents.push({
      row: row(RSS, "daemon --respawn: its supervisor process", "peer", "MiB"),
      async launch(dir, mark) {
        await runCmd([
          tools.daemon!,
          "--respawn",
          "--name",
          "d",
          "--pidfiles",
          dir,
          "--",
          tools.sleep,
          "3600",
          mark,
        ]);
        return await pidFromFile(`${dir}/d.pid`);
      },
    });
  }
}

async function rssRun(i: number): Promise<void> {
  for (const r of rotated(residents, i)) {
    const dir = freshDir();
    const mark = marker();
    const pid = await r.launch(dir, mark);
    if (pid !== undefined) {
      await sleep(100);
      const kib = rssKiB(pid);
      if (kib !== undefined) r.row.samples.push(kib / 1024);
    }
    if (pid !== undefined) killQuietly(pid, "SIGKILL");
    await cleanup(dir, mark);
    if (pid !== undefined) await waitGone(pid, 2000);
  }
}

// ---- in-process ------------------------------------------------------------

const INPROC = "in-process lock operations";
async function inProcess(): Promise<void> {
  const iterations = args.values.quick ? 500 : 3000;
  for (const [label, base] of [["tmpfs /dev/shm", "/dev/shm"], ["disk, ext4", work]] as const) {
    let dir: string;
    try {
      dir = Deno.makeTempDirSync({ dir: base, prefix: "sr-bench-" });
    } catch {
      skipped.push(`in-process on ${label}: cannot make a directory there`);
      continue;
    }
    try {
      const acq = row(INPROC, `PidFile.acquire + release (${label})`, "ours", "µs");
      const path = `${dir}/a.pid`;
      for (let i = 0; i < iterations; i++) {
        const t0 = performance.now();
        const lock = await PidFile.acquire(path);
        lock.release();
        acq.samples.push((performance.now() - t0) * 1000);
      }
      const heldPath = `${dir}/held.pid`;
      using _holder = await holdAsDaemon(heldPath);
      const probe = row(INPROC, `PidFile.probe of a file a daemon holds (${label})`, "ours", "µs");
      let wrong = 0;
      for (let i = 0; i < iterations; i++) {
        const t0 = performance.now();
        const found = await PidFile.probe(heldPath);
        probe.samples.push((performance.now() - t0) * 1000);
        if (found.state !== "running") wrong++;
      }
      if (wrong) note(probe, `${wrong} of ${iterations} probes said not running`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
  if (tools.flock) {
    const r = row(INPROC, "for scale: flock -n FILE true (a whole process)", "floor", "µs");
    for (let i = 0; i < Math.min(iterations, 50); i++) {
      const res = await runCmd([tools.flock, "-n", `${work}/scale.lock`, "true"]);
      r.samples.push(res.ms * 1000);
    }
  }
  const syslogRow = await syslogLine();
  if (syslogRow) rows.push(syslogRow);
}

/**
 * One syslog line through src/syslog/syslog.ts, to a real rsyslogd on a private
 * /dev/log (testing/rsyslog.ts: a mount namespace, so this machine's
 * /dev is never touched).
 */
async function syslogLine(): Promise<Row | undefined> {
  let startRsyslog;
  try {
    ({ startRsyslog } = await import("../testing/rsyslog.ts"));
  } catch (err) {
    skipped.push(`syslog line: testing/rsyslog.ts not loadable (${err})`);
    return undefined;
  }
  await using sl = await startRsyslog();
  if (sl.skipReason) {
    skipped.push(`syslog line: ${sl.skipReason}`);
    return undefined;
  }
  const res = await sl.run(
    [Deno.execPath(), "run", "--allow-all", `${ROOT}/bench/syslog_line.ts`, "2000"],
    { timeout: 60_000 },
  );
  const m = /^median_us=([0-9.]+)$/m.exec(res.stdout);
  if (res.code !== 0 || !m) {
    skipped.push(`syslog line: ${res.stderr.trim().split("\n").pop() ?? `exit ${res.code}`}`);
    return undefined;
  }
  return {
    group: INPROC,
    name: "syslog(3) line via src/syslog/syslog.ts, to rsyslogd",
    kind: "ours",
    unit: "µs",
    samples: [Number(m[1])],
    notes: ["median of 2000 lines (one sample: the median inside that run)"],
  };
}

// ---- run everything, interleaved ---------------------------------------------

const t0 = performance.now();
const log = (s: string) =>
  console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
try {
  log(`${RUNS} runs per row; working in ${work}`);
  for (let i = 0; i < RUNS; i++) {
    await floorRun(i);
    await startRun(i);
    await statusRun(i);
  }
  log("floor, start, status done");
  for (let i = 0; i < LIST_RUNS && listers.length > 0; i++) await listRun(i);
  if (listers.length > 0) log("list done");
  for (let i = 0; i < STOP_RUNS; i++) {
    if (stoppers.parent) await stopRun("parent", i);
    if (stoppers.orphan) await stopRun("orphan", i);
  }
  log("stop done");
  for (let i = 0; i < BURST_RUNS; i++) await burstRun(i);
  log("burst done");
  for (let i = 0; i < 3; i++) await rssRun(i);
  log("rss done");
  if (wanted(INPROC)) await inProcess();
  log("in-process done");
} finally {
  for (const pid of statusDaemonPids) killQuietly(pid, "SIGKILL");
  await killAll(listPids);
  // daemon(1)'s client does not mention our directory, only its marker.
  await cleanup(work, ...statusMarks);
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

// ---- ratios, table, targets ------------------------------------------------

for (const r of rows) r.median = median(r.samples);
for (const [r, base] of startBaselines) {
  if (!r.samples.length || !base.samples.length) continue;
  note(
    r,
    `${(r.median! / base.median!).toFixed(2)}x start ${NO_WAIT.join(" ")} (+${
      Math.round(r.median! - base.median!)
    } ms)`,
  );
}
const floorMs = denoFloor.median!;
for (const r of rows) {
  const peers = rows.filter((p) => p.group === r.group && p.kind === "peer" && p.samples.length);
  const fastest = Math.min(...peers.map((p) => p.median!));
  if (Number.isFinite(fastest) && fastest > 0) r.vsPeer = r.median! / fastest;
  if (r.unit === "ms" && !r.group.startsWith(BURST_GROUP)) r.vsFloor = r.median! / floorMs;
  for (const group of [RSS, STATUS_MEMORY, STATUS_CPU]) {
    if (r.group !== group) continue;
    const f = rows.find((x) => x.group === group && x.kind === "floor")?.median;
    if (f) r.vsFloor = r.median! / f;
  }
}

const fmt = (n: number | undefined, unit = "") =>
  n === undefined || !Number.isFinite(n)
    ? "-"
    : `${n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)}${unit}`;
const lines: string[] = [];
lines.push(
  `| group | tool | median | runs | x fastest peer | x floor | notes |`,
  `| --- | --- | ---: | ---: | ---: | ---: | --- |`,
);
for (const r of rows) {
  if (!r.samples.length && !r.notes.length) continue;
  lines.push(
    `| ${r.group} | ${r.kind === "ours" ? `**${r.name}**` : r.name} | ${
      fmt(r.median, r.unit === "count" ? "" : ` ${r.unit}`)
    } | ${r.samples.length} | ${fmt(r.vsPeer, "x")} | ${fmt(r.vsFloor, "x")} | ${
      r.notes.join("; ").replaceAll("|", "/")
    } |`,
  );
}

interface Target {
  readonly what: string;
  readonly met: boolean | undefined;
  readonly detail: string;
}
const targets: Target[] = [];
const byName = (group: string, form: CliForm) =>
  rows.find((r) => r.group === group && r.name === `${ours(form)} status` && r.samples.length);
for (const form of forms) {
  const r = byName(STATUS, form);
  targets.push({
    what: `status within 1.3x of the Deno floor (${ours(form)})`,
    met: r ? r.vsFloor! <= 1.3 : undefined,
    detail: r
      ? `${fmt(r.median)} ms vs floor ${fmt(floorMs)} ms = ${fmt(r.vsFloor, "x")}`
      : "not measured",
  });
  const cpuTimes = byName(STATUS_CPU, form);
  const cpuFloor = rows.find((r) => r.group === STATUS_CPU && r.kind === "floor");
  targets.push({
    what: `status CPU time within 1.3x of the Deno floor's (${ours(form)})`,
    met: cpuTimes ? cpuTimes.vsFloor! <= 1.3 : undefined,
    detail: cpuTimes
      ? `${fmt(cpuTimes.median)} ms vs floor ${fmt(cpuFloor?.median)} ms = ${
        fmt(cpuTimes.vsFloor, "x")
      }`
      : "not measured",
  });
  const memory = byName(STATUS_MEMORY, form);
  const memoryFloor = rows.find((r) => r.group === STATUS_MEMORY && r.kind === "floor");
  targets.push({
    what: `status peak memory within 1.25x of the Deno floor (${ours(form)})`,
    met: memory ? memory.vsFloor! <= 1.25 : undefined,
    detail: memory
      ? `${fmt(memory.median)} MiB vs floor ${fmt(memoryFloor?.median)} MiB = ${
        fmt(memory.vsFloor, "x")
      }`
      : "not measured",
  });
  const quick = rows.find((r) =>
    r.group === START && r.name === `${ours(form)} start ${NO_WAIT.join(" ")}`
  );
  if (quick?.samples.length) {
    targets.push({
      what: `start --ready-after 0 within 1.3x of the Deno floor (${ours(form)})`,
      met: quick.vsFloor! <= 1.3,
      detail: `${fmt(quick.median)} ms vs floor ${fmt(floorMs)} ms = ${fmt(quick.vsFloor, "x")}`,
    });
  }
  const stop = byName(STOP_PARENT, form);
  const ssdStop = rows.find((r) => r.group === STOP_PARENT && r.kind === "peer");
  const speedup = stop && ssdStop?.median ? ssdStop.median / stop.median! : undefined;
  targets.push({
    what: `stop of an unreaped daemon >= 20x faster than start-stop-daemon --retry (${ours(form)})`,
    met: speedup === undefined ? undefined : speedup >= 20,
    detail: speedup === undefined
      ? "not measured"
      : `${fmt(stop!.median)} ms vs ${fmt(ssdStop!.median)} ms = ${fmt(speedup, "x")} faster`,
  });
  const burst = rows.find((r) =>
    r.group.startsWith(`${BURST_GROUP}: instances`) && r.name === ours(form)
  );
  if (burst?.samples.length) {
    targets.push({
      what: `${BURST} simultaneous starts leave exactly 1 instance (${ours(form)})`,
      met: burst.samples.every((n) => n === 1),
      detail: `instances per run: ${burst.samples.join(", ")}`,
    });
  }
}
for (const form of forms) {
  const listed = rows.find((r) => r.group === LIST && r.name.startsWith(`${ours(form)} list`));
  const one = rows.find((r) => r.group === LIST && r.name === `${ours(form)} status (one service)`);
  if (!listed?.samples.length || !one?.samples.length) continue;
  const ratio = listed.median! / one.median!;
  targets.push({
    what: `list of ${LIST_SERVICES} services under 2x one status (${ours(form)})`,
    met: ratio < 2,
    detail: `${fmt(listed.median)} ms vs ${fmt(one.median)} ms = ${fmt(ratio, "x")}`,
  });
}
// The default readiness costs its rule and nothing more: a server is ready once it has served
// for DEFAULT_READY_SERVING_MS (plus its own start-up and one look), anything else once it
// has lived DEFAULT_READY_AFTER_MS.
for (const [r, base] of startBaselines) {
  if (r.name.includes("--ready-after") || !r.samples.length || !base.samples.length) continue;
  const rule = r.group === START_SERVER ? DEFAULT_READY_SERVING_MS : DEFAULT_READY_AFTER_MS;
  const slack = r.group === START_SERVER ? 500 : 250;
  const cost = r.median! - base.median!;
  targets.push({
    what: `${r.name}, ${r.group}: within ${rule + slack} ms of start ${NO_WAIT.join(" ")}`,
    met: cost <= rule + slack,
    detail: `${fmt(r.median)} ms vs ${fmt(base.median)} ms = +${fmt(cost)} ms, ${
      fmt(r.median! / base.median!, "x")
    } the baseline`,
  });
}
for (
  const r of rows.filter((r) =>
    r.group === INPROC && r.kind === "ours" && r.name.startsWith("PidFile")
  )
) {
  targets.push({
    what: `in-process under 50 µs: ${r.name}`,
    met: r.median! < 50,
    detail: `${fmt(r.median)} µs`,
  });
}

const cpu = (() => {
  try {
    return /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "?";
  } catch {
    return "?";
  }
})();
const machine =
  `${cpu}, ${navigator.hardwareConcurrency} CPUs, Linux ${Deno.osRelease()}, Deno ${Deno.version.deno}`;
const date = new Date().toISOString();
console.log(`singleton-run bench, ${date}, ${machine}\n`);
console.log(lines.join("\n"));
console.log("\nTargets:");
for (const t of targets) {
  console.log(
    `- ${t.met === undefined ? "NOT MEASURED" : t.met ? "met" : "MISSED"}: ${t.what}: ${t.detail}`,
  );
}
if (skipped.length) {
  console.log("\nSkipped:");
  for (const s of skipped) console.log(`- ${s}`);
}

await Deno.writeTextFile(
  args.values.json!,
  JSON.stringify(
    { date, machine, runs: RUNS, rows, targets, skipped },
    null,
    2,
  ) +
    "\n",
);
await Deno.writeTextFile(args.values.svg!, renderSvg(rows, `${machine}; ${date}`));
console.error(`wrote ${args.values.json} and ${args.values.svg}`);
