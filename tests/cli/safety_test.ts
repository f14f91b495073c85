/**
 * The safety promises, across real processes: racing
 * starts, a hammering of every command at once, killed daemons, unrelated
 * pids, controllers killed halfway, and what the daemon inherits.
 */

import assert from "node:assert/strict";
import {
  alive,
  bundleVariant,
  findProcesses,
  holds,
  locked,
  procState,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  srSpawn,
  startFine,
  STARTS_FINE,
  waitFor,
} from "./harness.ts";

const dec = new TextDecoder();

async function collect(child: Deno.ChildProcess) {
  const out = await child.output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

for (const v of [SOURCE, await bundleVariant()]) {
  Deno.test(`[${v.name}] twenty starts at once: one daemon, one exit 0, the rest exit 3 naming it`, async () => {
    await using sb = await Sandbox.create();
    const marker = `1000.${Math.floor(Math.random() * 1e6)}`;
    const children = Array.from(
      { length: 20 },
      () => srSpawn(v, ["start", ...STARTS_FINE, "--pidfile", sb.pidfile, "--", "sleep", marker]),
    );
    const results = await Promise.all(children.map(collect));
    const winners = results.filter((r) => r.code === 0);
    assert.equal(winners.length, 1, results.map((r) => `${r.code} ${r.stderr}`).join("\n"));
    const pid = Number(winners[0]!.stdout.trim());
    sb.track(pid);
    for (const r of results.filter((r) => r.code !== 0)) {
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stderr.trim(), `singleton-run: already running (pid ${pid})`);
      assert.equal(r.stdout, "");
    }
    assert.deepEqual(findProcesses(["sleep", marker]), [pid], "exactly one daemon");
    assert.equal(readPid(sb.pidfile), pid);
    assert.equal((await sr(v, ["stop", "--pidfile", sb.pidfile])).code, 0);
    assert.deepEqual(findProcesses(["sleep", marker]), []);
  });
}

Deno.test("start, stop, restart and status hammered from four shells: never two instances, the locked file names its holder", async () => {
  await using sb = await Sandbox.create();
  const p = sb.pidfile;
  const marker = `1000.${Math.floor(Math.random() * 1e6)}`;
  const violations: string[] = [];
  let maxInstances = 0;
  let checking = true;
  Deno.writeTextFileSync(p, "");
  const checker = (async () => {
    while (checking) {
      const n = findProcesses(["sleep", marker]);
      maxInstances = Math.max(maxInstances, n.length);
      for (const pid of n) sb.track(pid);
      const before = Deno.readTextFileSync(p).trim();
      if (before !== "" && locked(p)) {
        const pid = Number(before);
        const holding = holds(pid, p);
        const after = Deno.readTextFileSync(p).trim();
        if (!holding && after === before && locked(p) && alive(pid)) {
          violations.push(`pid file names ${pid}, which does not hold it`);
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const ops = ["start", "stop", "restart", "status", "start", "stop"];
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const shells = Array.from({ length: 4 }, async () => {
    for (let i = 0; i < 10; i++) {
      const op = ops[Math.floor(random() * ops.length)]!;
      const args = op === "status"
        ? ["status", "--pidfile", p]
        : op === "stop"
        ? ["stop", "--retry", "TERM/2/KILL/2", "--pidfile", p]
        : [op, "--pidfile", p, "--", "sleep", marker];
      const r = await sr(SOURCE, args);
      if (op === "start" || op === "restart") {
        if (r.code === 0) sb.track(Number(r.stdout));
        else if (r.code !== 3) violations.push(`${op} exit ${r.code}: ${r.stderr}`);
      } else if (op === "stop" && r.code !== 0 && r.code !== 3) {
        violations.push(`stop exit ${r.code}: ${r.stderr}`);
      }
    }
  });
  await Promise.all(shells);
  checking = false;
  await checker;
  assert.deepEqual(violations, []);
  assert.ok(maxInstances <= 1, `at most one instance at any time (saw ${maxInstances})`);
  await sr(SOURCE, ["stop", "--pidfile", p]);
  assert.deepEqual(findProcesses(["sleep", marker]), [], "no orphan left");
  assert.ok(!locked(p));
});

Deno.test("the daemon killed with SIGKILL: status stops saying running, the next start succeeds", async () => {
  await using sb = await Sandbox.create();
  const first = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  const pid = Number(first.stdout);
  sb.track(pid);
  Deno.kill(pid, "SIGKILL");
  await waitFor(() => !locked(sb.pidfile), 5000, "the lock to go");
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(st.code, 1, `stale: ${st.stderr}`);
  const again = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  assert.equal(again.code, 0, again.stderr);
  sb.track(Number(again.stdout));
  assert.notEqual(Number(again.stdout), pid);
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test("a pid file naming a live unrelated process: status cannot tell, stop neither signals it nor touches the file, start starts", async () => {
  await using sb = await Sandbox.create();
  const unrelated = new Deno.Command("sleep", { args: ["1000"] }).spawn();
  try {
    Deno.writeTextFileSync(sb.pidfile, `${unrelated.pid}\n`);
    const before = Deno.statSync(sb.pidfile).mtime?.getTime();
    const st = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
    assert.equal(st.code, 4);
    const report = JSON.parse(st.stdout);
    assert.equal(report.state, "unknown");
    assert.equal(report.pid, unrelated.pid);
    assert.match(report.error, /runs but holds no lock on it.*--exec PATH/);
    for (const args of [["stop"], ["reload"], ["signal", "USR1"]]) {
      const r = await sr(SOURCE, [...args, "--pidfile", sb.pidfile]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /holds no lock on it.*not signalling it/);
    }
    assert.ok(alive(unrelated.pid), "the unrelated process was not signalled");
    assert.equal(Deno.readTextFileSync(sb.pidfile), `${unrelated.pid}\n`, "the file was changed");
    assert.equal(Deno.statSync(sb.pidfile).mtime?.getTime(), before, "the file was written");
    const start = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
    assert.equal(start.code, 0, start.stderr);
    sb.track(Number(start.stdout));
    assert.ok(alive(unrelated.pid));
  } finally {
    unrelated.kill("SIGKILL");
    await unrelated.status;
  }
});

Deno.test("--exec trusts a live process no lock covers when it runs that file, and only then", async () => {
  await using sb = await Sandbox.create();
  const sleepPath = Deno.realPathSync("/bin/sleep");
  const other = new Deno.Command("sleep", { args: ["1000"] }).spawn();
  try {
    Deno.writeTextFileSync(sb.pidfile, `${other.pid}\n`);
    const wrong = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--exec", "/bin/true"]);
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /runs ".*sleep", not "\/bin\/true"; not signalling it/);
    assert.ok(alive(other.pid));
    const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--exec", sleepPath]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`^running \\(pid ${other.pid}`));
    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--exec", sleepPath]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal((await other.status).signal, "SIGTERM");
    assert.equal(Deno.readTextFileSync(sb.pidfile), `${other.pid}\n`, "stop wrote another's file");
  } finally {
    try {
      other.kill("SIGKILL");
    } catch {
      // Stopped already.
    }
    await other.status.catch(() => {});
  }
});

Deno.test("the controller killed with SIGKILL halfway through start: nothing is wedged", async () => {
  await using sb = await Sandbox.create();
  // The daemon never becomes ready, so the controller waits (holding the guard).
  const ctl = srSpawn(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--notify-fd",
    "4",
    "--",
    "sleep",
    "1000",
  ]);
  await waitFor(
    () =>
      readPid(sb.pidfile) !== undefined && procState(readPid(sb.pidfile)!) !== undefined &&
      readPid(sb.pidfile) !== ctl.pid,
    10_000,
    "the daemon's pid",
  );
  const daemon = readPid(sb.pidfile)!;
  sb.track(daemon);
  ctl.kill("SIGKILL");
  await ctl.output();
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile], { timeoutMs: 5000 });
  assert.equal(st.code, 0, "the daemon holds the lock; status says so");
  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile], { timeoutMs: 10_000 });
  assert.equal(stop.code, 0, `the guard freed itself: ${stop.stderr}`);
  assert.ok(!alive(daemon));
  const start = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  assert.equal(start.code, 0, start.stderr);
  sb.track(Number(start.stdout));
});

Deno.test("the controller killed with SIGKILL halfway through stop: status never blocks, the next stop works", async () => {
  await using sb = await Sandbox.create();
  // A daemon that ignores SIGTERM (an ignored disposition survives exec).
  const r = await startFine(SOURCE, sb.pidfile, [
    "--",
    "sh",
    "-c",
    "trap '' TERM; exec sleep 1000",
  ]);
  const pid = Number(r.stdout);
  sb.track(pid);
  const stopper = srSpawn(SOURCE, ["stop", "--retry", "TERM/30/KILL/5", "--pidfile", sb.pidfile]);
  await waitFor(() => locked(`${sb.pidfile}.lock`), 5000, "the stop to hold the guard");
  await new Promise((res) => setTimeout(res, 200));
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(st.code, 0);
  // The stop holds the guard for its TERM step's 30 s: a status that waited
  // for the guard would have come back only once it was let go.
  assert.ok(locked(`${sb.pidfile}.lock`), "status came back only once the stop let go");
  const blocked = await sr(SOURCE, [
    "start",
    "--guard-timeout",
    "0.3",
    "--pidfile",
    sb.pidfile,
    "--",
    "true",
  ]);
  assert.equal(blocked.code, 1);
  assert.match(blocked.stderr, /another singleton-run holds the guard/);
  stopper.kill("SIGKILL");
  await stopper.output();
  assert.ok(alive(pid), "the daemon ignored TERM and still runs");
  const stop = await sr(SOURCE, ["stop", "--retry", "TERM/0.3/KILL/5", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.ok(!alive(pid));
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 3);
});

Deno.test("the daemon really is one: own session, no tty, cwd, umask, fds 0-2 and the lock only, signals reset", async () => {
  await using sb = await Sandbox.create();
  const work = sb.path("work");
  Deno.mkdirSync(work);
  const out = sb.path("out.log");
  // An inherited descriptor without close-on-exec (7) must not reach the daemon.
  const shell = await new Deno.Command("sh", {
    args: [
      "-c",
      `trap '' USR1; exec 7</dev/null; exec "$@"`,
      "sh",
      ...SOURCE.cmd,
      "start",
      "--pidfile",
      sb.pidfile,
      "--chdir",
      work,
      "--umask",
      "027",
      "--output",
      out,
      "--env",
      "GREETING=hello world",
      "--",
      "sleep",
      "1000",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(shell.code, 0, dec.decode(shell.stderr));
  const pid = Number(dec.decode(shell.stdout));
  sb.track(pid);
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  assert.equal(Number(f[3]), pid, "session id = pid (setsid)");
  assert.equal(Number(f[2]), pid, "process group = pid");
  assert.equal(Number(f[4]), 0, "no controlling terminal");
  assert.equal(Deno.readLinkSync(`/proc/${pid}/cwd`), work);
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  assert.match(status, /^Umask:\s+0027$/m);
  // glibc's posix_spawn leaves its two internal signals (32, 33) ignored in the
  // child; glibc programs reinstall them at start-up. Nothing else may be ignored.
  const ignored = BigInt(`0x${/^SigIgn:\s+([0-9a-f]+)$/m.exec(status)![1]}`);
  assert.equal(ignored & ~0x180000000n, 0n, `no ignored signals (SigIgn ${ignored.toString(16)})`);
  assert.match(status, /^SigBlk:\s+0+$/m, "no blocked signals");
  const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name)).sort();
  assert.deepEqual(fds, [0, 1, 2, 3]);
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/0`), "/dev/null");
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/1`), out);
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/2`), out);
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/3`), sb.pidfile);
  assert.equal(Deno.statSync(out).mode! & 0o777, 0o640);
  const env = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0");
  assert.ok(env.includes("GREETING=hello world"));
  assert.ok(
    !env.some((e) => e.startsWith("NOTIFY_")),
    "no readiness variable without a notify option",
  );

  const dflt = await startFine(SOURCE, sb.path("b.pid"), ["--", "sleep", "1000"]);
  const pid2 = Number(dflt.stdout);
  sb.track(pid2);
  assert.equal(Deno.readLinkSync(`/proc/${pid2}/cwd`), "/", "cwd / by default");
  assert.match(Deno.readTextFileSync(`/proc/${pid2}/status`), /^Umask:\s+0022$/m);
  assert.equal(Deno.readLinkSync(`/proc/${pid2}/fd/1`), "/dev/null");
  await sr(SOURCE, ["stop", "--pidfile", sb.path("b.pid")]);
  await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
});
