/**
 * Cluster locks against a real 3-member etcd, next to `etcdctl lock` in the
 * same run: the time from process start to holding the lock (the program
 * running), and the failover after a SIGKILL of the holder and after a
 * network partition, as multiples of the TTL; for singleton-run also the
 * margin by which the old program was dead before the new one started.
 * Prints a Markdown table. Skips (saying so) without etcd or root.
 *
 *   deno run -A bench/cluster.ts [--trials N]
 *
 * @module
 */

import { Etcd, installed, Netns } from "../testing/cluster.ts";

const TRIALS = Number(Deno.args[Deno.args.indexOf("--trials") + 1] || 3);
const TTL_S = 4;
const ROOT = new URL("../", import.meta.url).pathname;
const CLI = [Deno.execPath(), "run", "-A", `${ROOT}cli.ts`];

async function readStamp(path: string, withinMs: number): Promise<number> {
  const end = performance.now() + withinMs;
  for (;;) {
    try {
      const t = Deno.readTextFileSync(path).trim();
      if (t !== "") return Number(BigInt(t) / 1_000_000n);
    } catch {
      // not yet
    }
    if (performance.now() > end) throw new Error(`no stamp in ${path}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function gone(pid: number): boolean {
  try {
    const st = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return st.slice(st.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** When `pid` was first seen gone (ms since the epoch), polling every 5 ms. */
async function seenGone(pid: number): Promise<number> {
  while (!gone(pid)) await new Promise((r) => setTimeout(r, 5));
  return Date.now();
}

/** A program that stamps when it starts, then waits. */
function stamper(file: string, seconds = 300): string[] {
  return ["sh", "-c", `date +%s%N > ${file}; exec sleep ${seconds}`];
}

async function cli(args: string[], prefix: string[] = []): Promise<string> {
  const argv = [...prefix, ...CLI, ...args];
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

function spawnCli(args: string[], prefix: string[] = []): Deno.ChildProcess {
  const argv = [...prefix, ...CLI, ...args];
  return new Deno.Command(argv[0]!, { args: argv.slice(1), stdout: "null", stderr: "null" })
    .spawn();
}

function etcdctl(etcd: Etcd, name: string, program: string[], prefix: string[] = []) {
  const argv = [
    ...prefix,
    "etcdctl",
    "--endpoints",
    etcd.endpoints,
    "lock",
    "--ttl",
    String(TTL_S),
    name,
    "--",
    ...program,
  ];
  return new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: { ETCDCTL_API: "3" },
    stdout: "null",
    stderr: "null",
  }).spawn();
}

const lockArgs = (url: string) => [
  "--lock",
  url,
  "--lock-ttl",
  String(TTL_S),
  "--stop-schedule",
  "TERM/1/KILL/1",
];

async function keeperOf(pidfile: string): Promise<number> {
  return JSON.parse(await cli(["status", "--json", "--pidfile", pidfile])).keeper;
}

interface Row {
  what: string;
  ours: number[];
  theirs: number[];
  margins?: number[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  if (!installed("etcd") || !installed("etcdctl")) {
    console.log("cluster bench skipped: etcd and etcdctl are not installed");
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "singleton-run-bench-cluster-" });
  const rows: Row[] = [];
  try {
    await using etcd = await Etcd.start();
    // Acquire: process start to the program running, lock free.
    const acquire: Row = { what: "start to holding the lock (ms)", ours: [], theirs: [] };
    for (let i = 0; i < TRIALS; i++) {
      const stamp = `${dir}/acq${i}`;
      const t0 = Date.now();
      await cli([
        "run",
        "--pidfile",
        `${dir}/acq${i}.pid`,
        ...lockArgs(etcd.url(`acq${i}`)),
        "--",
        "sh",
        "-c",
        `date +%s%N > ${stamp}`,
      ]);
      acquire.ours.push((await readStamp(stamp, 5000)) - t0);
      const theirStamp = `${dir}/acqe${i}`;
      const t1 = Date.now();
      await etcdctl(etcd, `acqe${i}`, ["sh", "-c", `date +%s%N > ${theirStamp}`]).status;
      acquire.theirs.push((await readStamp(theirStamp, 5000)) - t1);
    }
    rows.push(acquire);

    // Failover after SIGKILL of the holder, as multiples of the TTL.
    const killed: Row = {
      what: "failover after SIGKILL (× TTL)",
      ours: [],
      theirs: [],
      margins: [],
    };
    for (let i = 0; i < TRIALS; i++) {
      const url = etcd.url(`kill${i}`);
      const a = `${dir}/k${i}a`;
      const program = Number(
        await cli([
          "start",
          "--pidfile",
          `${a}.pid`,
          ...lockArgs(url),
          "--",
          ...stamper(`${a}.stamp`),
        ]),
      );
      const keeper = await keeperOf(`${a}.pid`);
      const b = spawnCli([
        "start",
        "--pidfile",
        `${dir}/k${i}b.pid`,
        ...lockArgs(url),
        "--lock-wait",
        "30",
        "--",
        ...stamper(`${dir}/k${i}b.stamp`),
      ]);
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      Deno.kill(keeper, "SIGKILL");
      const dead = await seenGone(program);
      await b.status;
      const started = await readStamp(`${dir}/k${i}b.stamp`, 30_000);
      killed.ours.push((started - t0) / (TTL_S * 1000));
      killed.margins!.push(started - dead);
      await cli(["stop", "--pidfile", `${dir}/k${i}b.pid`]);
      // etcdctl: the holder SIGKILLed; its child is orphaned, the other waits for the lease.
      const ea = etcdctl(etcd, `killE${i}`, [
        "sh",
        "-c",
        `echo $$ > ${dir}/ke${i}.pid; exec sleep 300`,
      ]);
      await readStamp(`${dir}/ke${i}.pid`, 10_000); // it holds the lock
      const eb = etcdctl(etcd, `killE${i}`, ["sh", "-c", `date +%s%N > ${dir}/ke${i}`]);
      await new Promise((r) => setTimeout(r, 300));
      const t1 = Date.now();
      ea.kill("SIGKILL");
      await ea.status;
      await eb.status;
      killed.theirs.push(((await readStamp(`${dir}/ke${i}`, 30_000)) - t1) / (TTL_S * 1000));
      // etcdctl's child outlived it, next to the new holder: end it.
      const orphan = Number(Deno.readTextFileSync(`${dir}/ke${i}.pid`).trim());
      if (!gone(orphan)) Deno.kill(orphan, "SIGKILL");
    }
    rows.push(killed);
  } catch (err) {
    console.log(`cluster bench failed: ${(err as Error).message}`);
  }

  if (Netns.supported()) {
    const cut: Row = {
      what: "failover after a partition (× TTL)",
      ours: [],
      theirs: [],
      margins: [],
    };
    try {
      for (let i = 0; i < TRIALS; i++) {
        await using ns = Netns.create();
        await using etcd = await Etcd.start(ns.outside);
        const url = etcd.url("cut");
        const a = `${dir}/c${i}a`;
        const program = Number(
          await cli([
            "start",
            "--pidfile",
            `${a}.pid`,
            ...lockArgs(url),
            "--",
            ...stamper(`${a}.stamp`),
          ], ns.exec),
        );
        const b = spawnCli([
          "start",
          "--pidfile",
          `${dir}/c${i}b.pid`,
          ...lockArgs(url),
          "--lock-wait",
          "30",
          "--",
          ...stamper(`${dir}/c${i}b.stamp`),
        ]);
        await new Promise((r) => setTimeout(r, 300));
        const t0 = Date.now();
        ns.cut();
        const dead = await seenGone(program);
        await b.status;
        const started = await readStamp(`${dir}/c${i}b.stamp`, 30_000);
        cut.ours.push((started - t0) / (TTL_S * 1000));
        cut.margins!.push(started - dead);
        await cli(["stop", "--pidfile", `${dir}/c${i}b.pid`]);
        ns.heal();
        await etcd.healthy();
        // etcdctl in the namespace, cut off: the other side takes over; etcdctl's child runs on.
        const ea = etcdctl(
          etcd,
          "cutE",
          ["sh", "-c", `echo $$ > ${dir}/ce${i}.pid; exec sleep 300`],
          ns.exec,
        );
        try {
          await readStamp(`${dir}/ce${i}.pid`, 10_000); // it holds the lock
          const eb = etcdctl(etcd, "cutE", ["sh", "-c", `date +%s%N > ${dir}/ce${i}`]);
          await new Promise((r) => setTimeout(r, 300));
          const t1 = Date.now();
          ns.cut();
          await eb.status;
          cut.theirs.push(((await readStamp(`${dir}/ce${i}`, 30_000)) - t1) / (TTL_S * 1000));
        } finally {
          // etcdctl's child runs on after the other side took over: end it, and etcdctl.
          try {
            const orphan = Number(Deno.readTextFileSync(`${dir}/ce${i}.pid`).trim());
            if (!gone(orphan)) Deno.kill(orphan, "SIGKILL");
          } catch {
            // never started
          }
          try {
            ea.kill("SIGKILL");
          } catch {
            // gone
          }
          await ea.status;
        }
      }
      rows.push(cut);
    } catch (err) {
      console.log(`partition bench failed: ${(err as Error).message}`);
    }
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});

  console.log(`\ncluster locks, etcd 3 members, TTL ${TTL_S} s, median of ${TRIALS} trials\n`);
  console.log(
    "| measure | singleton-run | etcdctl lock | old program dead before the new one started by |",
  );
  console.log("| --- | --- | --- | --- |");
  for (const r of rows) {
    const fmt = (xs: number[]) =>
      xs.length ? (median(xs) < 20 ? median(xs).toFixed(2) : String(Math.round(median(xs)))) : "-";
    const margin = r.margins
      ? `${Math.round(Math.min(...r.margins))} ms (least of ${r.margins.length})`
      : "";
    console.log(`| ${r.what} | ${fmt(r.ours)} | ${fmt(r.theirs)} | ${margin} |`);
  }
}

await main();
