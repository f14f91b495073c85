/**
 * `deno task bench` (its jobs part): what `run`'s job policies cost, each
 * row a median over repeated runs, next to its baseline in the same run.
 *
 * - **--wait hand-over**: the time from the running job's exit to the
 *   waiter's job running, next to `flock -w` doing the same.
 * - **--max-runtime accuracy**: when the job gets its SIGTERM, against the
 *   limit (aim: within 100 ms), the job's own clock from its first command.
 * - **--max-runtime memory**: the PSS of what stays to keep the time (the
 *   shell, its timer and its one `sleep`), next to a Deno process that would
 *   do the same (a `run --supervise` supervisor of the same job).
 * - **--once-per**: the extra wall time of `run --lock --once-per` (the done
 *   check and the fenced record) over `run --lock`, on etcd and PostgreSQL,
 *   and the time to refuse a done slot.
 *
 * Prints a markdown table and the aims met or missed. Options: `--runs N`
 * (default 7), `--json PATH` (default bench/jobs.json).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Etcd, installed, Postgres } from "../testing/cluster.ts";
import { processTree } from "../src/ffi/proc.ts";
import { isAlive, killQuietly, memory, ROOT, runCmd, sleep, waitGone } from "../testing/process.ts";
import { cli, fmt, Table } from "./table.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "7" },
    json: { type: "string", default: `${ROOT}/bench/jobs.json` },
  },
});
const RUNS = Number(args.values.runs);
const LIMIT_MS = 1000;

const table = new Table();
const row = (name: string, unit: string) => table.row(name, unit);

/** A `date +%s%N` stamp a job wrote, in ms; waits for it a while. */
async function stamp(path: string, withinMs = 30_000): Promise<number> {
  const end = performance.now() + withinMs;
  for (;;) {
    try {
      const t = Deno.readTextFileSync(path).trim();
      if (t !== "") return Number(BigInt(t) / 1000n) / 1000;
    } catch {
      // not yet
    }
    if (performance.now() > end) throw new Error(`no stamp in ${path}`);
    await sleep(5);
  }
}

function spawn(argv: readonly string[], stdin: "null" | "piped" = "null"): Deno.ChildProcess {
  return new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin,
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** A job that sleeps, then stamps the moment it ends into A. */
const ending = (a: string) => ["sh", "-c", `sleep 2; date +%s%N > ${a}`];
/** A job that stamps the moment it starts into B. */
const starting = (b: string) => ["sh", "-c", `date +%s%N > ${b}`];

const waitOurs = row(
  "--wait: the running job's exit to the waiter's job (singleton-run run)",
  "ms",
);
const waitFlock = row("--wait: the same with flock -w (util-linux)", "ms");
const waitRatio = row("  run --wait / flock -w", "x");

async function handOver(dir: string, i: number): Promise<void> {
  const ours = async () => {
    const [a, b, pid] = [`${dir}/ra${i}`, `${dir}/rb${i}`, `${dir}/r${i}.pid`];
    const holder = spawn([...cli, "run", "--pidfile", pid, "--", ...ending(a)]);
    await sleep(300);
    const waiter = spawn([...cli, "run", "--pidfile", pid, "--wait", "30s", "--", ...starting(b)]);
    const ms = (await stamp(b)) - (await stamp(a));
    await Promise.all([holder.status, waiter.status]);
    return ms;
  };
  const flock = async () => {
    const [a, b, lock] = [`${dir}/fa${i}`, `${dir}/fb${i}`, `${dir}/f${i}.lock`];
    const holder = spawn(["flock", lock, ...ending(a)]);
    await sleep(300);
    const waiter = spawn(["flock", "-w", "30", lock, ...starting(b)]);
    const ms = (await stamp(b)) - (await stamp(a));
    await Promise.all([holder.status, waiter.status]);
    return ms;
  };
  const [o, f] = [await ours(), await flock()];
  waitOurs.samples.push(o);
  waitFlock.samples.push(f);
  waitRatio.samples.push(o / f);
}

const late = row(
  `--max-runtime ${LIMIT_MS / 1000}s: SIGTERM after the job's start, less the limit`,
  "ms",
);

async function accuracy(dir: string, i: number): Promise<void> {
  const [s, t] = [`${dir}/s${i}`, `${dir}/t${i}`];
  // The job waits on its stdin (a pipe nobody writes): a trapped TERM ends the read at once.
  const job = spawn([
    ...cli,
    "run",
    "--pidfile",
    `${dir}/m${i}.pid`,
    "--max-runtime",
    `${LIMIT_MS}ms`,
    "--stop-schedule",
    "TERM/1/KILL/1",
    "--",
    "sh",
    "-c",
    `date +%s%N > ${s}; trap 'date +%s%N > ${t}; exit 0' TERM; read x`,
  ], "piped");
  const code = (await job.status).code;
  await job.stdin.close().catch(() => {});
  if (code !== 124) return console.error(`--max-runtime run exited ${code}, not 124`);
  late.samples.push((await stamp(t)) - (await stamp(s)) - LIMIT_MS);
}

const pssEnforcer = row(
  "--max-runtime: PSS of what keeps the time (sh, its timer, its sleep)",
  "MiB",
);
const pssDeno = row("  a Deno process that would (run --supervise of the same job)", "MiB");
const pssRatio = row("  enforcer / Deno", "x");

async function footprint(dir: string, i: number): Promise<void> {
  const job = ["sleep", `30.${i}`];
  const limited = spawn([
    ...cli,
    "run",
    "--pidfile",
    `${dir}/e${i}.pid`,
    "--max-runtime",
    "1h",
    "--",
    ...job,
  ]);
  const supervised = spawn([
    ...cli,
    "run",
    "--pidfile",
    `${dir}/d${i}.pid`,
    "--supervise",
    "--",
    ...job,
  ]);
  try {
    await sleep(3000); // both settled: the job stage gone, the supervisor past its start-up
    const jobPid = Number(Deno.readTextFileSync(`${dir}/e${i}.pid`).trim());
    const jobTree = processTree(jobPid);
    const enforcer = processTree(limited.pid).filter((p) => !jobTree.includes(p));
    const kib = enforcer.reduce((sum, p) => sum + memory(p).pss, 0);
    const deno = memory(supervised.pid).pss;
    pssEnforcer.samples.push(kib / 1024);
    pssDeno.samples.push(deno / 1024);
    pssRatio.samples.push(kib / deno);
  } finally {
    for (const p of [limited, supervised]) {
      for (const pid of processTree(p.pid).reverse()) killQuietly(pid, "SIGKILL");
      await p.status;
    }
    for (const pid of processTree(limited.pid)) if (isAlive(pid)) await waitGone(pid, 2000);
  }
}

/** The once-per rows of one backend. */
function oncePerRows(backend: string) {
  return {
    plain: row(`${backend}: run --lock -- true`, "ms"),
    once: row(`${backend}: run --lock --once-per -- true (check, run, fenced record)`, "ms"),
    extra: row(`  ${backend}: the extra of --once-per`, "ms"),
    done: row(`${backend}: run --lock --once-per refused, its slot done (exit 3)`, "ms"),
  };
}

async function oncePer(
  dir: string,
  r: ReturnType<typeof oncePerRows>,
  url: (name: string) => string,
  i: number,
): Promise<void> {
  const run = (name: string, extra: string[]) =>
    runCmd([
      ...cli,
      "run",
      "--pidfile",
      `${dir}/${name}.pid`,
      "--lock",
      url(name),
      ...extra,
      "--",
      "true",
    ]);
  const plain = await run(`p${i}`, []);
  const once = await run(`o${i}`, ["--once-per", "1h"]);
  const done = await run(`o${i}`, ["--once-per", "1h"]);
  if (plain.code !== 0 || once.code !== 0 || done.code !== 3) {
    return console.error(`once-per run: ${plain.code} ${once.code} ${done.code}: ${once.stderr}`);
  }
  r.plain.samples.push(plain.ms);
  r.once.samples.push(once.ms);
  r.extra.samples.push(once.ms - plain.ms);
  r.done.samples.push(done.ms);
}

const work = await Deno.makeTempDir({ prefix: "sr-bench-jobs-" });
try {
  for (let i = 0; i < RUNS; i++) {
    await handOver(work, i);
    await accuracy(work, i);
    await footprint(work, i);
    console.error(`jobs bench: run ${i + 1} of ${RUNS} done`);
  }
  if (installed("etcd")) {
    await using etcd = await Etcd.start();
    const r = oncePerRows("etcd");
    for (let i = 0; i < RUNS; i++) await oncePer(work, r, (n) => etcd.url(`bench-${n}`), i);
  } else console.error("skipped: --once-per on etcd (no etcd here)");
  if (Postgres.bin() !== undefined && installed("setpriv")) {
    await using pg = await Postgres.start();
    const r = oncePerRows("PostgreSQL");
    for (let i = 0; i < RUNS; i++) await oncePer(work, r, (n) => pg.url(`bench-${n}`), 100 + i);
  } else console.error("skipped: --once-per on PostgreSQL (no PostgreSQL here)");
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

table.settle();
const worst = Math.max(...late.samples.map(Math.abs));
const targets = [
  {
    what: "--max-runtime: SIGTERM within 100 ms of the limit, every run",
    met: worst <= 100,
    detail: `median ${fmt(late.median)} ms, worst ${fmt(worst)} ms`,
  },
  {
    what: "--max-runtime: what keeps the time is under a tenth of a Deno process",
    met: pssRatio.median! < 0.1,
    detail: `${fmt(pssEnforcer.median)} vs ${fmt(pssDeno.median)} MiB PSS = ${
      fmt(pssRatio.median)
    }x`,
  },
];
await table.report("jobs bench", targets, args.values.json!);
