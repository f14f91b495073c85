/**
 * `run --lock URL --once-per DUR` against real servers (a 3-member etcd, a
 * PostgreSQL): a job's success is recorded once per slot, fenced by the
 * lock's token; a run whose slot is done does not run the job; a failure
 * leaves the slot open; a success whose record could not be written says
 * so and exits 1; `status --lock --json` shows the last slot; a keeper
 * killed the moment it starts its job leaves no job running unfenced.
 */

import assert from "node:assert/strict";
import { Etcd, installed, Netns, Postgres } from "../../testing/cluster.ts";
import { childrenOf } from "../../src/ffi/proc.ts";
import { exists } from "../../testing/process.ts";
import { alive, readPid, Sandbox, SOURCE, sr, srSpawn, waitFor } from "./harness.ts";

const ETCD = installed("etcd");
const PG = Postgres.bin() !== undefined && installed("setpriv");
const NETNS = Netns.supported();
const STRACE = installed("strace");
const HOST = Deno.hostname();
const HOUR = 3_600_000;

/** The slot of now for a period (what the keeper counts, with no clock offset). */
function slotNow(periodMs: number, offsetMs = 0): number {
  return Math.floor((Date.now() + offsetMs) / periodMs + 0.5);
}

/** A job that writes its slot and token into FILE. */
function job(file: string, code = 0): string[] {
  return [
    "sh",
    "-c",
    `echo "$SINGLETON_RUN_SLOT $SINGLETON_RUN_FENCING_TOKEN" >> ${file}; exit ${code}`,
  ];
}

/** The lines a job wrote: [slot, token]. */
function runs(file: string): [number, string][] {
  try {
    return Deno.readTextFileSync(file).trim().split("\n").filter((l) => l !== "")
      .map((l) => l.split(" ") as [string, string]).map(([s, t]) => [Number(s), t]);
  } catch {
    return [];
  }
}

/** The once-per-slot behaviour any backend must show, through the CLI. */
async function oncePerSlot(sb: Sandbox, url: (name: string) => string): Promise<void> {
  const file = sb.path("ran");
  const run = (pid: string, extra: string[] = [], code = 0, env?: Record<string, string>) =>
    sr(SOURCE, [
      "run",
      "--pidfile",
      sb.path(`${pid}.pid`),
      "--lock",
      url("report"),
      "--once-per",
      "1h",
      ...extra,
      "--",
      ...job(file, code),
    ], env ? { env } : {});
  // A failure leaves the slot open: the next run in it runs the job.
  const failed = await run("report", [], 5);
  assert.equal(failed.code, 5, failed.stderr);
  const first = await run("report");
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stderr, "");
  const [[slot, token], [slot2, token2]] = runs(file) as [[number, string], [number, string]];
  assert.equal(slot, slotNow(HOUR));
  assert.equal(slot2, slot);
  assert.notEqual(token2, token, "each run held the lock anew");
  // Done: the job does not run again in this slot, from any pid file or host.
  const again = await run("elsewhere");
  assert.equal(again.code, 3, again.stderr);
  assert.match(
    again.stderr,
    new RegExp(
      `^singleton-run: slot ${slot} \\(\\S+\\) is done: it ran on ${HOST} \\(token ${token2}, ` +
        "recorded \\S+\\); not running\\n$",
    ),
  );
  const quiet = await run("report", ["--quiet", "--conflict-exit-code", "0"]);
  assert.deepEqual([quiet.code, quiet.stderr], [0, ""]);
  assert.equal(runs(file).length, 2, "the job ran twice in all: once failing, once recorded");
  // Another slot (a clock an hour ahead) runs again.
  const later = await run("report", [], 0, { SINGLETON_RUN_CLOCK_OFFSET_MS: String(HOUR) });
  assert.equal(later.code, 0, later.stderr);
  assert.equal(runs(file).at(-1)![0], slot + 1);
  const st = await sr(SOURCE, ["status", "--lock", url("report"), "--json"]);
  assert.equal(st.code, 3, st.stdout + st.stderr);
  const report = JSON.parse(st.stdout);
  assert.equal(report.state, "free");
  assert.equal(report.lastSlot.slot, slot + 1);
  assert.equal(report.lastSlot.host, HOST);
  assert.equal(report.lastSlot.token, runs(file).at(-1)![1]);
  const line = await sr(SOURCE, ["status", "--lock", url("report")]);
  assert.match(line.stdout, new RegExp(`^free; last slot done: ${slot + 1} on ${HOST} \\(token `));
}

/**
 * A success whose record cannot be written: the job cuts its host's link as
 * it ends. The run says the slot ran but is not recorded and exits 1; once
 * the link is back, the slot runs again.
 */
async function notRecorded(sb: Sandbox, ns: Netns, url: string): Promise<void> {
  const file = sb.path("cut");
  const started = sb.path("started");
  const child = srSpawn(SOURCE, [
    "run",
    "--pidfile",
    sb.path("cut.pid"),
    "--lock",
    url,
    "--lock-ttl",
    "6",
    "--lock-timeout",
    "1",
    "--stop-schedule",
    "TERM/1/KILL/1",
    "--once-per",
    "1h",
    "--",
    "sh",
    "-c",
    `touch ${started}; sleep 1; echo "$SINGLETON_RUN_SLOT" >> ${file}`,
  ], { prefix: ns.exec });
  await waitFor(
    () => {
      try {
        return Deno.statSync(started).isFile;
      } catch {
        return false;
      }
    },
    15_000,
    "the job to start",
  );
  ns.cut();
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, stderr);
  const slot = slotNow(HOUR);
  assert.match(stderr, new RegExp(`slot ${slot} ran but is not recorded \\(`));
  assert.equal(Deno.readTextFileSync(file), `${slot}\n`, "the job itself succeeded");
  ns.heal();
  const again = await sr(SOURCE, [
    "run",
    "--pidfile",
    sb.path("cut.pid"),
    "--lock",
    url,
    "--lock-wait",
    "15",
    "--once-per",
    "1h",
    "--",
    "sh",
    "-c",
    `echo "$SINGLETON_RUN_SLOT" >> ${file}`,
  ], { prefix: ns.exec });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(Deno.readTextFileSync(file), `${slot}\n${slot}\n`);
}

/** {@link notRecorded} as a step: skipped where no network namespace can be made. */
function notRecordedStep(
  ns: Netns | undefined,
  url: (ns: Netns) => string,
): Deno.TestStepDefinition {
  return {
    name:
      "a success whose record cannot be written (the link cut) exits 1, slot ran but is not recorded; it runs again",
    ignore: ns === undefined,
    async fn() {
      await using sb = await Sandbox.create();
      await notRecorded(sb, ns!, url(ns!));
    },
  };
}

/**
 * A role that may not create the table is told the statement to ask an
 * administrator for; once it is made (and granted), the job runs.
 */
async function tableRefused(sb: Sandbox, pg: Postgres): Promise<void> {
  await pg.psql("create role cron login");
  const run = () =>
    sr(SOURCE, [
      "run",
      "--pidfile",
      sb.pidfile,
      "--lock",
      pg.url("nightly", "127.0.0.1", "cron"),
      "--once-per",
      "1h",
      "--",
      "true",
    ]);
  const refused = await run();
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(
    refused.stderr,
    /cannot tell whether slot \d+ is done: cannot create table singleton_run_slots: .*permission denied.*an administrator can make it: create table singleton_run_slots \(name text not null, slot bigint not null/,
  );
  const ddl = refused.stderr.match(/make it: (create table [^;]+);/)![1]!;
  await pg.psql(`${ddl}; grant select, insert on singleton_run_slots to cron`);
  const ran = await run();
  assert.equal(ran.code, 0, ran.stderr);
  assert.equal(await pg.psql("select count(*) from singleton_run_slots"), "1");
}

/**
 * A keeper killed the moment it starts its job, before the job's
 * parent-death signal is set (strace holds back the first prctl of each of
 * its processes), takes the job with it: the job never runs.
 */
async function keeperKilled(sb: Sandbox, url: string): Promise<void> {
  const locked = (pidfile: string, extra: string[], command: string) =>
    srSpawn(SOURCE, [
      "run",
      "--pidfile",
      sb.path(pidfile),
      "--lock",
      url,
      ...extra,
      "--",
      "sh",
      "-c",
      command,
    ]);
  const holding = sb.path("holding");
  const holder = locked("a.pid", [], `touch ${holding}; exec sleep 60`);
  await waitFor(() => exists(holding), 15_000, "the first holder's job");
  const ran = sb.path("ran");
  const keeper = locked("b.pid", ["--lock-wait", "60"], `echo ran > ${ran}`);
  await waitFor(() => readPid(sb.path("b.pid")) === keeper.pid, 15_000);
  // Hold back the first prctl of each of its processes: the job's parent-death signal comes late.
  const strace = new Deno.Command("strace", {
    args: [
      "-f",
      "-qq",
      "-o",
      "/dev/null",
      "-p",
      String(keeper.pid),
      "-e",
      "trace=prctl",
      "-e",
      "inject=prctl:delay_enter=1500000:when=1",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const traced = (pid: number) =>
    Deno.readDirSync(`/proc/${pid}/task`).every((t) =>
      !/TracerPid:\s+0\n/.test(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`))
    );
  await waitFor(() => traced(keeper.pid), 10_000, "strace to attach to every thread");
  Deno.kill(holder.pid, "SIGTERM");
  await holder.output();
  let started: number[] = [];
  await waitFor(() => (started = childrenOf(keeper.pid)).length > 0, 30_000, "the job's start");
  keeper.kill("SIGKILL");
  await keeper.output();
  await strace.status;
  assert.ok(started.every((pid) => !alive(pid)), "what the keeper started is gone");
  assert.throws(() => Deno.statSync(ran), Deno.errors.NotFound, "the job never ran");
}

// One server per backend for all its steps (each start costs seconds); the steps use names of
// their own, and the table's own step comes first, before the table exists.
Deno.test({
  name: "etcd: run --once-per",
  ignore: !ETCD,
  async fn(t) {
    await using ns = NETNS ? Netns.create() : undefined;
    await using etcd = await Etcd.start("127.0.0.1", { anyAddress: true });
    await t.step(
      "records a success once per slot; a done slot exits 3; status shows the last slot",
      async () => {
        await using sb = await Sandbox.create();
        await oncePerSlot(sb, (name) => etcd.url(name));
      },
    );
    await t.step(notRecordedStep(ns, (ns) => etcd.urlVia(ns.outside, "cut")));
    await t.step({
      name:
        "a keeper killed the moment it starts its job takes the job with it, even before the job's parent-death signal is set",
      ignore: !STRACE,
      async fn() {
        await using sb = await Sandbox.create();
        await keeperKilled(sb, etcd.url("pdeath"));
      },
    });
  },
});

Deno.test({
  name: "PostgreSQL: run --once-per",
  ignore: !PG,
  async fn(t) {
    await using ns = NETNS ? Netns.create() : undefined;
    await using pg = await Postgres.start(ns === undefined ? "127.0.0.1" : ns.outside);
    await t.step(
      "a role that may not make the table is told the statement to ask for; with it made, the job runs",
      async () => {
        await using sb = await Sandbox.create();
        await tableRefused(sb, pg);
      },
    );
    await t.step(
      "records a success once per slot; a done slot exits 3; status shows the last slot",
      async () => {
        await using sb = await Sandbox.create();
        await oncePerSlot(sb, (name) => pg.url(name));
        const rows = await pg.psql(
          "select count(*) from singleton_run_slots where name = 'report'",
        );
        assert.equal(rows, "2");
      },
    );
    await t.step(notRecordedStep(ns, (ns) => pg.url("cut", ns.outside)));
  },
});
