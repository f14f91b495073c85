/**
 * `deno task bench` (its health part): what liveness costs and buys, in one
 * run on this machine, each row a median over repeated runs.
 *
 * - **Replacement**: a supervised `python3 -m http.server`-like server with
 *   `--health-http` is stopped (SIGSTOP); the time until a new pid answers,
 *   as a multiple of interval x retries. The aim: within interval x retries,
 *   plus the stop schedule's first wait, plus 1 s.
 * - **Memory**: two supervisors side by side, one with `--health-http`
 *   (checking every second) and one without, each supervising the same
 *   server; their PSS (from /proc/PID/smaps_rollup) and private memory after
 *   the checks have run a while. The aim: the health check costs within 10%.
 *
 * Prints a markdown table and the aims met or missed. Options: `--runs N`
 * (default 5), `--json PATH` (default bench/health.json).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { answeringPid, freePort, HEALTH_SERVER, PYTHON } from "../testing/health.ts";
import { isAlive, killQuietly, memory, ROOT, runCmd, sleep, waitGone } from "../testing/process.ts";
import { cli, fmt, Table } from "./table.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "5" },
    json: { type: "string", default: `${ROOT}/bench/health.json` },
  },
});
const RUNS = Number(args.values.runs);
const SERVER = HEALTH_SERVER;
/** The health check's timing in the replacement rows: interval x retries = 2 s. */
const INTERVAL_MS = 1000;
const RETRIES = 2;
const TIMEOUT_MS = 500;
/** The default stop schedule's first wait (TERM/5/KILL/2). */
const FIRST_WAIT_MS = 5000;

const table = new Table();
const row = (name: string, unit: string) => table.row(name, unit);

/** The supervisor's state file, or an empty object before it is written. */
function stateOf(pidfile: string): { childPid?: number; health?: { state: string } } {
  try {
    return JSON.parse(Deno.readTextFileSync(`${pidfile}.state`));
  } catch {
    return {};
  }
}
const childOf = (pidfile: string) => stateOf(pidfile).childPid ?? undefined;
const healthOf = (pidfile: string) => stateOf(pidfile).health?.state;

/** A supervised server: the supervisor's pid, or undefined (with the reason printed). */
async function startServer(dir: string, name: string, port: number, health: string[]) {
  const pidfile = `${dir}/${name}.pid`;
  const r = await runCmd([
    ...cli,
    "start",
    "--pidfile",
    pidfile,
    "--supervise",
    ...health,
    "--",
    PYTHON,
    SERVER,
    "--port",
    String(port),
  ]);
  if (r.code !== 0) {
    console.error(`start --supervise failed: ${r.stderr.trim()}`);
    return undefined;
  }
  return { pid: Number(r.stdout.trim()), pidfile };
}

async function stopServer(s: { pid: number; pidfile: string } | undefined): Promise<void> {
  if (!s) return;
  const child = childOf(s.pidfile);
  await runCmd([...cli, "stop", "--pidfile", s.pidfile]);
  for (const pid of [s.pid, child]) {
    if (pid !== undefined && isAlive(pid)) {
      killQuietly(pid, "SIGKILL");
      await waitGone(pid, 2000);
    }
  }
}

const replaced = row(
  `SIGSTOP to a serving replacement (--health-http, interval ${
    INTERVAL_MS / 1000
  } s x ${RETRIES} retries)`,
  "s",
);
const ratio = row("  the same, as a multiple of interval x retries", "x");

async function replacementRun(dir: string): Promise<void> {
  const port = freePort();
  const s = await startServer(dir, `r${replaced.samples.length}`, port, [
    "--health-http",
    `http://127.0.0.1:${port}/`,
    "--health-interval",
    `${INTERVAL_MS}ms`,
    "--health-retries",
    String(RETRIES),
    "--health-timeout",
    `${TIMEOUT_MS}ms`,
    "--health-start-period",
    "60s",
  ]);
  try {
    if (!s) return;
    let first: number | undefined;
    const until = performance.now() + 30_000;
    while ((first = await answeringPid(port, 500)) === undefined && performance.now() < until) {
      await sleep(50);
    }
    if (first === undefined) return console.error("the server never answered");
    // A success first: the start period is over, failures count from now.
    while (healthOf(s.pidfile) !== "healthy" && performance.now() < until) await sleep(50);
    const t0 = performance.now();
    Deno.kill(first, "SIGSTOP");
    for (;;) {
      const now = await answeringPid(port, 500);
      if (now !== undefined && now !== first) break;
      if (performance.now() - t0 > 60_000) return console.error("no replacement within 60 s");
      await sleep(20);
    }
    const ms = performance.now() - t0;
    replaced.samples.push(ms / 1000);
    ratio.samples.push(ms / (INTERVAL_MS * RETRIES));
    killQuietly(first, "SIGKILL");
  } finally {
    await stopServer(s);
  }
}

const pssWith = row("supervisor PSS with --health-http (a check every 1 s)", "MiB");
const pssWithout = row("supervisor PSS without a health check", "MiB");
const pssRatio = row("  PSS with / without", "x");
const privWith = row("supervisor private memory with --health-http", "MiB");
const privWithout = row("supervisor private memory without", "MiB");
const privRatio = row("  private with / without", "x");

async function memoryRun(dir: string, i: number): Promise<void> {
  const [p1, p2] = [freePort(), freePort()];
  const checked = await startServer(dir, `m${i}a`, p1, [
    "--health-http",
    `http://127.0.0.1:${p1}/`,
    "--health-interval",
    "1s",
    "--health-start-period",
    "60s",
  ]);
  const plain = await startServer(dir, `m${i}b`, p2, []);
  try {
    if (!checked || !plain) return;
    await sleep(15_000); // a dozen checks, and both past their start-up
    const a = memory(checked.pid);
    const b = memory(plain.pid);
    if (healthOf(checked.pidfile) !== "healthy") console.error("the checked server is unhealthy");
    pssWith.samples.push(a.pss / 1024);
    pssWithout.samples.push(b.pss / 1024);
    pssRatio.samples.push(a.pss / b.pss);
    privWith.samples.push(a.anon / 1024);
    privWithout.samples.push(b.anon / 1024);
    privRatio.samples.push(a.anon / b.anon);
  } finally {
    await stopServer(checked);
    await stopServer(plain);
  }
}

const work = await Deno.makeTempDir({ prefix: "sr-bench-health-" });
try {
  for (let i = 0; i < RUNS; i++) {
    await replacementRun(work);
    await memoryRun(work, i);
    console.error(`health bench: run ${i + 1} of ${RUNS} done`);
  }
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

table.settle();
const aimS = (INTERVAL_MS * RETRIES + FIRST_WAIT_MS + 1000) / 1000;
const targets = [
  {
    what:
      `replacement within interval x retries + the stop schedule's first wait + 1 s (${aimS} s)`,
    met: replaced.median! <= aimS,
    detail: `${fmt(replaced.median)} s = ${fmt(ratio.median)}x interval x retries`,
  },
  {
    what: "supervisor PSS with --health-http within 10% of without",
    met: pssRatio.median! <= 1.1,
    detail: `${fmt(pssWith.median)} vs ${fmt(pssWithout.median)} MiB = ${fmt(pssRatio.median)}x`,
  },
];
await table.report("health bench", targets, args.values.json!);
