/**
 * One instance across hosts, against real servers: a 3-member etcd and a
 * PostgreSQL started here, and "hosts" that are network namespaces joined
 * by a veth whose link a test cuts. Each case checks the order of events by
 * timestamps: the holder's program is dead before another holder's program
 * starts, every trial.
 */

import assert from "node:assert/strict";
import { Etcd, installed, Netns, Postgres } from "../../testing/cluster.ts";
import { processState } from "../../testing/process.ts";
import {
  marker as uniqueMarker,
  Sandbox,
  SOURCE,
  sr,
  srSpawn,
  startFine,
  STARTS_FINE,
  waitFor,
} from "./harness.ts";

const marker = () => uniqueMarker(400);

const ETCD = installed("etcd");
const ETCDCTL = installed("etcdctl");
const PG = Postgres.bin() !== undefined && installed("setpriv");
const NETNS = Netns.supported();
const HOST = Deno.hostname();

/** Short leases keep the suite quick; the schedule leaves room for them (see checkTtl). */
const TTL = "4";
const FAST_STOP = ["--stop-schedule", "TERM/1/KILL/1"];

/** The program every holder runs: it writes when it started (ns) and its token, then sleeps. */
function program(sb: Sandbox, tag: string, m: string): string[] {
  const at = sb.path(`${tag}.started`);
  const token = sb.path(`${tag}.token`);
  return [
    "bash",
    "-c",
    `date +%s%N > ${at}; echo "$SINGLETON_RUN_FENCING_TOKEN" > ${token}; exec sleep ${m}`,
  ];
}

/** When the program `tag` started, in ms since the epoch. */
function startedAt(sb: Sandbox, tag: string): number {
  return Number(BigInt(Deno.readTextFileSync(sb.path(`${tag}.started`)).trim()) / 1_000_000n);
}

function tokenOf(sb: Sandbox, tag: string): bigint {
  return BigInt(Deno.readTextFileSync(sb.path(`${tag}.token`)).trim());
}

/** Whether a process is gone (a zombie counts as gone: it runs nothing). */
function gone(pid: number): boolean {
  const state = processState(pid);
  return state === undefined || state === "Z";
}

/** Poll until `pid` is gone; the time it was first seen gone (ms since the epoch). */
async function deathTime(pid: number, withinMs: number): Promise<number> {
  const end = performance.now() + withinMs;
  while (performance.now() < end) {
    if (gone(pid)) return Date.now();
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`pid ${pid} still runs after ${withinMs} ms`);
}

interface Holder {
  readonly program: number;
  readonly keeper: number;
}

/** Start a holder through the CLI (optionally inside a network namespace). */
async function hold(
  sb: Sandbox,
  tag: string,
  url: string,
  m: string,
  options: { readonly prefix?: string[]; readonly extra?: string[] } = {},
): Promise<Holder> {
  const pidfile = sb.path(`${tag}.pid`);
  const r = await startFine(SOURCE, pidfile, [
    "--lock",
    url,
    "--lock-ttl",
    TTL,
    ...FAST_STOP,
    ...(options.extra ?? []),
    "--",
    ...program(sb, tag, m),
  ], options.prefix ? { prefix: options.prefix } : {});
  assert.equal(r.code, 0, `${tag}: ${r.stderr}`);
  const program_ = Number(r.stdout.trim());
  sb.track(program_);
  const st = await sr(SOURCE, ["status", "--json", "--pidfile", pidfile]);
  const keeper = JSON.parse(st.stdout).keeper as number;
  assert.ok(keeper > 0, `${tag}: no keeper in ${st.stdout}`);
  sb.track(keeper);
  await wrote(sb, tag);
  return { program: program_, keeper };
}

/** A start while another host holds the lock: exit 3, nothing started. */
async function refusedStart(sb: Sandbox, url: string) {
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.path("refused.pid"),
    "--lock",
    url,
    "--",
    "sleep",
    marker(),
  ]);
  assert.equal(r.code, 3, r.stderr);
  return r;
}

/** A contender that waits for the lock in the background; resolves when its start returns. */
function contend(sb: Sandbox, tag: string, url: string, m: string, waitSecs: number) {
  const child = srSpawn(SOURCE, [
    "start",
    ...STARTS_FINE,
    "--pidfile",
    sb.path(`${tag}.pid`),
    "--lock",
    url,
    "--lock-ttl",
    TTL,
    "--lock-wait",
    String(waitSecs),
    ...FAST_STOP,
    "--",
    ...program(sb, tag, m),
  ]);
  return child.output().then(async (o) => {
    const pid = Number(new TextDecoder().decode(o.stdout).trim());
    if (pid > 0) sb.track(pid);
    if (o.code === 0) await wrote(sb, tag);
    return { code: o.code, pid, stderr: new TextDecoder().decode(o.stderr) };
  });
}

/**
 * Wait until the program `tag` wrote its token, its last file: start returns once the program
 * is ready (alive a moment after its exec), which a loaded machine can reach before bash ran.
 */
async function wrote(sb: Sandbox, tag: string): Promise<void> {
  await waitFor(() => {
    try {
      return Deno.readTextFileSync(sb.path(`${tag}.token`)).trim() !== "";
    } catch {
      return false;
    }
  });
}

Deno.test({
  name:
    "etcd: a second host gets 3 naming the holder, takes over well under a second after a release, with a greater token",
  ignore: !ETCD,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const url = etcd.url("nightly");
    const a = await hold(sb, "a", url, marker());
    const refused = await refusedStart(sb, url);
    assert.match(refused.stderr, new RegExp(`already running on ${HOST} \\(pid ${a.keeper}\\)`));
    const held = await sr(SOURCE, ["status", "--lock", url]);
    assert.equal(held.code, 0, held.stderr);
    assert.match(held.stdout, new RegExp(`^held by ${HOST} \\(pid ${a.keeper}\\)`));
    const waiting = contend(sb, "c", url, marker(), 15);
    await new Promise((r) => setTimeout(r, 500));
    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.path("a.pid")]);
    assert.equal(stop.code, 0, stop.stderr);
    const stoppedAt = Date.now();
    const c = await waiting;
    assert.equal(c.code, 0, c.stderr);
    const lag = startedAt(sb, "c") - stoppedAt;
    assert.ok(lag < 1000, `the waiting host started ${lag} ms after the release`);
    assert.ok(tokenOf(sb, "c") > tokenOf(sb, "a"), "tokens must grow");
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.path("c.pid")])).code, 0);
    const free = await sr(SOURCE, ["status", "--lock", url]);
    assert.equal(free.code, 3, free.stdout + free.stderr);
  },
});

Deno.test({
  name:
    "etcd: a holder SIGKILLed takes its program with it, and the other host takes over within TTL + 1 s",
  ignore: !ETCD,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const url = etcd.url("consumer");
    const a = await hold(sb, "a", url, marker());
    const waiting = contend(sb, "b", url, marker(), 20);
    await new Promise((r) => setTimeout(r, 300));
    const killedAt = Date.now();
    Deno.kill(a.keeper, "SIGKILL");
    const dead = await deathTime(a.program, 1000); // its parent-death signal
    const b = await waiting;
    assert.equal(b.code, 0, b.stderr);
    const took = startedAt(sb, "b") - killedAt;
    assert.ok(took <= Number(TTL) * 1000 + 1000, `took over after ${took} ms`);
    assert.ok(dead < startedAt(sb, "b"), "the old program was still running when b started");
    await sr(SOURCE, ["stop", "--pidfile", sb.path("b.pid")]);
  },
});

Deno.test({
  name:
    "etcd: a holder SIGSTOPed past its TTL is fenced the moment it runs again, and its status says the lease expired meanwhile; tokens differ and grow",
  ignore: !ETCD,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const url = etcd.url("leader");
    const a = await hold(sb, "a", url, marker());
    Deno.kill(a.keeper, "SIGSTOP");
    try {
      const b = await contend(sb, "b", url, marker(), 20);
      assert.equal(b.code, 0, b.stderr);
      // Another host holds the lock now: the paused keeper's status must not claim the lease.
      const text = await sr(SOURCE, ["status", "--pidfile", sb.path("a.pid")]);
      assert.match(text.stdout, /held etcd:\/\/\S+ \(token \d+\) until its lease expired \d/);
      assert.doesNotMatch(text.stdout, /s left on its lease/);
      const json = await sr(SOURCE, ["status", "--json", "--pidfile", sb.path("a.pid")]);
      const lock = JSON.parse(json.stdout).lock;
      assert.equal(lock.expired, true, json.stdout);
      assert.equal(lock.secondsLeft, 0);
      assert.ok(lock.expiredSecondsAgo > 0, json.stdout);
    } finally {
      Deno.kill(a.keeper, "SIGCONT");
    }
    const contAt = Date.now();
    const dead = await deathTime(a.program, 1000);
    assert.ok(dead - contAt < 1000, `fenced ${dead - contAt} ms after SIGCONT`);
    assert.ok(tokenOf(sb, "b") > tokenOf(sb, "a"));
    await waitFor(() => gone(a.keeper), 10_000, "the fenced keeper to exit");
    await sr(SOURCE, ["stop", "--pidfile", sb.path("b.pid")]);
  },
});

Deno.test({
  name:
    "etcd: one member killed changes nothing; two killed fence the program before its TTL, and nobody acquires",
  ignore: !ETCD,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const url = etcd.url("quorum");
    const a = await hold(sb, "a", url, marker());
    // A follower: losing the leader costs an election (a keepalive gap of 1-3 s measured), which
    // a TTL with as little slack as this test's would take for a lost lock (see docs/cluster.md).
    const follower = await etcd.follower();
    await etcd.kill(follower);
    await new Promise((r) => setTimeout(r, Number(TTL) * 1000 + 1000));
    assert.ok(!gone(a.program), "the program was fenced with a quorum left");
    const st = await sr(SOURCE, ["status", "--lock", url, "--lock-timeout", "2"]);
    assert.equal(st.code, 0, st.stdout + st.stderr);
    const lostAt = Date.now();
    await etcd.kill(etcd.members.findIndex((m) => m.process !== undefined));
    const dead = await deathTime(a.program, Number(TTL) * 1000 + 1000);
    assert.ok(
      dead - lostAt < Number(TTL) * 1000,
      `fenced ${dead - lostAt} ms after the quorum was lost`,
    );
    const c = await sr(SOURCE, [
      "start",
      "--pidfile",
      sb.path("c.pid"),
      "--lock",
      url,
      "--lock-timeout",
      "1",
      "--",
      "sleep",
      marker(),
    ]);
    assert.equal(c.code, 1, c.stderr);
    assert.match(c.stderr, /cannot reach etcd/);
    await waitFor(() => gone(a.keeper), 15_000, "the fenced keeper to exit");
  },
});

Deno.test({
  name: "etcd: etcdctl lock and singleton-run hand the same lock over in both directions",
  ignore: !ETCD || !ETCDCTL,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const etcdctl = (seconds: number) =>
      new Deno.Command("etcdctl", {
        args: [
          "--endpoints",
          etcd.endpoints,
          "lock",
          "mixed",
          "--",
          "sh",
          "-c",
          `date +%s%N; sleep ${seconds}`,
        ],
        env: { ETCDCTL_API: "3" },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    const first = etcdctl(2);
    await new Promise((r) => setTimeout(r, 800));
    await refusedStart(sb, etcd.url("mixed"));
    const ours = await contend(sb, "a", etcd.url("mixed"), marker(), 10);
    assert.equal(ours.code, 0, ours.stderr);
    const theirs = await first.output();
    assert.ok(theirs.success);
    const theirEnd = Date.now();
    assert.ok(startedAt(sb, "a") <= theirEnd + 50);
    const second = etcdctl(0);
    await new Promise((r) => setTimeout(r, 500));
    const stoppedAt = Date.now();
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.path("a.pid")])).code, 0);
    const out = await second.output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const gotAt = Number(BigInt(new TextDecoder().decode(out.stdout).trim()) / 1_000_000n);
    assert.ok(
      gotAt >= stoppedAt && gotAt - stoppedAt < 1000,
      `etcdctl got it ${gotAt - stoppedAt} ms after the stop`,
    );
  },
});

Deno.test({
  name: "etcd: a holder cut off by a network partition is dead before the other side acquires",
  ignore: !ETCD || !NETNS,
  async fn() {
    await using ns = Netns.create();
    await using etcd = await Etcd.start(ns.outside);
    await using sb = await Sandbox.create();
    const url = etcd.url("partition");
    const a = await hold(sb, "a", url, marker(), { prefix: ns.exec });
    const waiting = contend(sb, "b", url, marker(), 20);
    await new Promise((r) => setTimeout(r, 300));
    ns.cut();
    const dead = await deathTime(a.program, Number(TTL) * 1000 + 1000);
    const b = await waiting;
    assert.equal(b.code, 0, b.stderr);
    assert.ok(
      dead < startedAt(sb, "b"),
      `the cut-off program died ${dead - startedAt(sb, "b")} ms after the other side started`,
    );
    await sr(SOURCE, ["stop", "--pidfile", sb.path("b.pid")]);
    await waitFor(() => gone(a.keeper), 15_000, "the fenced keeper to exit");
  },
});

Deno.test({
  name:
    "PostgreSQL: contention names the holder; a SIGKILLed holder's lock is free at once and its program dies",
  ignore: !PG,
  async fn() {
    await using pg = await Postgres.start();
    await using sb = await Sandbox.create();
    const url = pg.url("import");
    const a = await hold(sb, "a", url, marker());
    const refused = await refusedStart(sb, url);
    assert.match(refused.stderr, new RegExp(`already running on ${HOST} \\(pid ${a.keeper}\\)`));
    const waiting = contend(sb, "b", url, marker(), 15);
    await new Promise((r) => setTimeout(r, 300));
    Deno.kill(a.keeper, "SIGKILL");
    const dead = await deathTime(a.program, 1000);
    const b = await waiting;
    assert.equal(b.code, 0, b.stderr);
    assert.ok(dead < startedAt(sb, "b"));
    assert.ok(tokenOf(sb, "b") > tokenOf(sb, "a"));
    await sr(SOURCE, ["stop", "--pidfile", sb.path("b.pid")]);
  },
});

Deno.test({
  name: "PostgreSQL: a holder whose connection is cut is dead before the server frees its lock",
  ignore: !PG || !NETNS,
  async fn() {
    await using ns = Netns.create();
    await using pg = await Postgres.start(ns.outside);
    await using sb = await Sandbox.create();
    const a = await hold(sb, "a", pg.url("cut", ns.outside), marker(), { prefix: ns.exec });
    const waiting = contend(sb, "b", pg.url("cut"), marker(), 30);
    await new Promise((r) => setTimeout(r, 300));
    ns.cut();
    const dead = await deathTime(a.program, Number(TTL) * 1000 + 1000);
    const b = await waiting;
    assert.equal(b.code, 0, b.stderr);
    assert.ok(dead < startedAt(sb, "b"), "the cut-off program still ran when the other started");
    await sr(SOURCE, ["stop", "--pidfile", sb.path("b.pid")]);
    await waitFor(() => gone(a.keeper), 15_000, "the fenced keeper to exit");
  },
});

Deno.test({
  name:
    "etcd: run --lock runs a job to its end under the lock and exits with its status; a second host's run gets 3",
  ignore: !ETCD,
  async fn() {
    await using etcd = await Etcd.start();
    await using sb = await Sandbox.create();
    const url = etcd.url("cron");
    const job = srSpawn(SOURCE, [
      "run",
      "--pidfile",
      sb.path("a.pid"),
      "--lock",
      url,
      "--",
      "sh",
      "-c",
      `echo "$SINGLETON_RUN_FENCING_TOKEN" > ${sb.path("token")}; sleep 1; exit 7`,
    ]);
    await waitFor(() => {
      try {
        return Deno.readTextFileSync(sb.path("token")).trim() !== "";
      } catch {
        return false;
      }
    });
    const other = await sr(SOURCE, [
      "run",
      "--pidfile",
      sb.path("b.pid"),
      "--lock",
      url,
      "--",
      "true",
    ]);
    assert.equal(other.code, 3, other.stderr);
    assert.match(other.stderr, /already running on /);
    const done = await job.output();
    assert.equal(done.code, 7, new TextDecoder().decode(done.stderr));
    assert.equal(new TextDecoder().decode(done.stderr), "", "the keeper said more than trouble");
    const after = await sr(SOURCE, [
      "run",
      "--pidfile",
      sb.path("b.pid"),
      "--lock",
      url,
      "--",
      "true",
    ]);
    assert.equal(after.code, 0, after.stderr);
  },
});
