/**
 * stop, status, restart, reload and signal in detail: the unreaped zombie,
 * retry schedules, the JSON report, signals delivered, a lock held by another
 * process than the one named, --oknodo.
 */

import assert from "node:assert/strict";
import { staticallyLoaded } from "../../testing/graph.ts";
import {
  alive,
  assertCleanError,
  findProcesses,
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

Deno.test("stop of a daemon whose parent never reaps it: done as soon as the lock goes, zombie or not", async () => {
  await using sb = await Sandbox.create();
  const cli = SOURCE.cmd.map((a) => `'${a}'`).join(" ");
  // The daemon (run, exec'd into sleep) is the child of a `sleep` that never waits.
  const parent = new Deno.Command("sh", {
    args: ["-c", `${cli} run --pidfile '${sb.pidfile}' -- sleep 1000 & exec sleep 1000`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(
      () => {
        const pid = readPid(sb.pidfile);
        return pid !== undefined && locked(sb.pidfile) &&
          Deno.readTextFileSync(`/proc/${pid}/cmdline`).startsWith("sleep");
      },
      10_000,
      "the daemon",
    );
    const pid = readPid(sb.pidfile)!;
    sb.track(pid);
    // A stop that waited for the pid to be reaped would run its whole schedule and exit 1.
    const stop = await sr(SOURCE, ["stop", "--retry", "TERM/3", "--pidfile", sb.pidfile]);
    assert.equal(stop.code, 0, `stop waited for a reap that never comes: ${stop.stderr}`);
    assert.equal(procState(pid), "Z", "the daemon is a zombie nobody reaped");
    assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 3);
    assert.equal(Deno.readTextFileSync(sb.pidfile), "");
  } finally {
    parent.kill("SIGKILL");
    await parent.status;
  }
});

Deno.test("stop --retry: TERM ignored then KILL; a schedule that runs out exits 1; a bare number", async () => {
  await using sb = await Sandbox.create();
  const stubborn = ["--", "sh", "-c", "trap '' TERM; exec sleep 1000"];
  let r = await startFine(SOURCE, sb.pidfile, [...stubborn]);
  let pid = Number(r.stdout);
  sb.track(pid);

  const short = await sr(SOURCE, ["stop", "--retry", "TERM/0.3", "--pidfile", sb.pidfile]);
  assertCleanError(
    short,
    1,
    new RegExp(`pid ${pid} still holds .* after the stop schedule \\(SIGTERM sent\\)`),
  );
  assert.ok(alive(pid));

  const full = await sr(SOURCE, ["stop", "--retry", "TERM/0.3/KILL/5", "--pidfile", sb.pidfile]);
  assert.equal(full.code, 0, full.stderr);
  assert.ok(full.ms >= 300, "waited the TERM window first");
  assert.ok(!alive(pid));

  r = await startFine(SOURCE, sb.pidfile, [...stubborn]);
  pid = Number(r.stdout);
  sb.track(pid);
  const bare = await sr(SOURCE, ["stop", "--retry", "1", "--pidfile", sb.pidfile]);
  assert.equal(bare.code, 0, bare.stderr);
  assert.ok(bare.ms >= 1000 && bare.ms < 4000, `TERM/1/KILL/1 (${bare.ms} ms)`);
  assert.ok(!alive(pid));
});

Deno.test("status --json: state, pid, pidfile, code, start time, uptime, RSS, descriptors, cmdline", async () => {
  await using sb = await Sandbox.create();
  const t0 = Date.now();
  const r = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  const pid = Number(r.stdout);
  sb.track(pid);
  const st = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
  assert.equal(st.code, 0);
  assert.equal(st.stdout.trim().split("\n").length, 1, "one object on one line");
  const j = JSON.parse(st.stdout);
  assert.deepEqual(Object.keys(j).sort(), [
    "cmdline",
    "code",
    "fds",
    "pid",
    "pidfile",
    "rssKiB",
    "spec",
    "startTime",
    "state",
    "uptimeSeconds",
  ]);
  assert.deepEqual(j.spec.command, ["sleep", "1000"], "the recorded command");
  assert.equal(j.state, "running");
  assert.equal(j.pid, pid);
  assert.equal(j.pidfile, sb.pidfile);
  const started = Date.parse(j.startTime);
  assert.ok(
    Math.abs(started - t0) < 3000,
    `start time ${j.startTime} near ${new Date(t0).toISOString()}`,
  );
  assert.ok(j.uptimeSeconds >= 0 && j.uptimeSeconds < 10);
  assert.ok(j.rssKiB > 0);
  assert.equal(j.fds, 4, "0, 1, 2 and the lock");
  assert.deepEqual(j.cmdline, ["sleep", "1000"]);
  await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  const stopped = JSON.parse(
    (await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout,
  );
  assert.deepEqual(stopped, {
    state: "stopped",
    code: 3,
    pid: null,
    pidfile: sb.pidfile,
    spec: j.spec, // the record stays: what was launched last
  });
});

Deno.test("reload sends SIGHUP, signal sends a named or numbered signal; not running exits 3", async () => {
  await using sb = await Sandbox.create();
  const log = sb.path("signals.log");
  const r = await startFine(SOURCE, sb.pidfile, [
    "--",
    "sh",
    "-c",
    `trap 'echo HUP >> ${log}' HUP; trap 'echo USR1 >> ${log}' USR1; ` +
    `trap 'echo USR2 >> ${log}' USR2; while :; do sleep 0.02; done`,
  ]);
  const pid = Number(r.stdout);
  sb.track(pid);
  const read = () => {
    try {
      return Deno.readTextFileSync(log);
    } catch {
      return "";
    }
  };
  assert.equal((await sr(SOURCE, ["reload", "--pidfile", sb.pidfile])).code, 0);
  await waitFor(() => read() === "HUP\n", 5000, "HUP");
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "USR1"])).code, 0);
  await waitFor(() => read() === "HUP\nUSR1\n", 5000, "USR1");
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "12"])).code, 0);
  await waitFor(() => read() === "HUP\nUSR1\nUSR2\n", 5000, "USR2 by number");
  assert.ok(alive(pid));
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "SIGKILL"])).code, 0);
  await waitFor(() => !locked(sb.pidfile));
  assertCleanError(await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]), 3, /not running/);
  assertCleanError(await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "TERM"]), 3, /not running/);
});

Deno.test("restart prints the new pid, leaves one instance; starts when nothing runs", async () => {
  await using sb = await Sandbox.create();
  const marker = `1000.${Math.floor(Math.random() * 1e6)}`;
  const cmd = ["--pidfile", sb.pidfile, "--", "sleep", marker];
  const first = await sr(SOURCE, ["restart", ...STARTS_FINE, ...cmd]);
  assert.equal(first.code, 0, first.stderr);
  const a = Number(first.stdout);
  sb.track(a);
  const second = await sr(SOURCE, ["restart", ...STARTS_FINE, ...cmd]);
  assert.equal(second.code, 0, second.stderr);
  const b = Number(second.stdout);
  sb.track(b);
  assert.notEqual(a, b);
  assert.ok(!alive(a));
  assert.deepEqual(findProcesses(["sleep", marker]), [b]);
  assert.equal(readPid(sb.pidfile), b);
  await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
});

Deno.test("start --oknodo: exit 0 and the running pid; stop --oknodo: exit 0 when not running", async () => {
  await using sb = await Sandbox.create();
  const r = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  const pid = Number(r.stdout);
  sb.track(pid);
  const again = await sr(SOURCE, [
    "start",
    "--oknodo",
    "--pidfile",
    sb.pidfile,
    "--",
    "sleep",
    "1000",
  ]);
  assert.equal(again.code, 0);
  assert.equal(again.stdout, `${pid}\n`);
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  const none = await sr(SOURCE, ["stop", "--oknodo", "--pidfile", sb.pidfile]);
  assert.equal(none.code, 0);
  assert.match(none.stderr, /not running/);
});

Deno.test("a lock held by another process than the one named: status and stop name the holder, never signal the named pid", async () => {
  await using sb = await Sandbox.create();
  const unrelated = new Deno.Command("sleep", { args: ["1000"] }).spawn();
  Deno.writeTextFileSync(sb.pidfile, `${unrelated.pid}\n`);
  // flock(1) holds the lock on the file (-o: its child does not), but the file names `unrelated`.
  const marker = `1000.${Math.floor(Math.random() * 1e6)}`;
  const holder = new Deno.Command("flock", { args: ["-o", sb.pidfile, "sleep", marker] }).spawn();
  try {
    await waitFor(() => locked(sb.pidfile), 5000, "flock(1) to lock");
    const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--json"]);
    assert.equal(st.code, 0, "locked reads as running");
    const report = JSON.parse(st.stdout);
    assert.equal(report.pid, holder.pid, "status names the holder");
    assert.deepEqual(report.holders, [holder.pid]);
    assert.equal(report.namedPid, unrelated.pid);
    assert.equal(report.namedPidGone, false);
    const start = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", "sleep", "1000"]);
    assertCleanError(start, 3, new RegExp(`already running \\(pid ${holder.pid}\\)`));
    // The holder is the running instance: stop signals it (through a pidfd), never the named pid.
    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(
      stop.stderr,
      new RegExp(
        `names pid ${unrelated.pid}, which does not hold its lock; stopping pid ${holder.pid}`,
      ),
    );
    assert.equal((await holder.status).signal, "SIGTERM");
    assert.ok(alive(unrelated.pid), "the named process was not signalled");
    assert.equal(Deno.readTextFileSync(sb.pidfile), "", "stop leaves the pid file empty");
  } finally {
    try {
      holder.kill("SIGKILL");
    } catch {
      // Stopped by the test.
    }
    unrelated.kill("SIGKILL");
    await holder.status;
    await unrelated.status;
    // flock(1)'s own child, orphaned by the kill: ours, found by its unique argv.
    for (const pid of findProcesses(["sleep", marker])) Deno.kill(pid, "SIGKILL");
  }
});

Deno.test("a stop waiting on the guard is served after the first: serialized, both succeed or say not running", async () => {
  await using sb = await Sandbox.create();
  const r = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  sb.track(Number(r.stdout));
  const a = srSpawn(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  const b = srSpawn(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  const codes = (await Promise.all([a.output(), b.output()])).map((o) => o.code).sort();
  assert.deepEqual(codes, [0, 3]);
});

Deno.test("as a shell script would use it (dax): pid=$(start), status code, stop", async () => {
  const { $ } = await import("dax");
  await using sb = await Sandbox.create();
  const sr$ = SOURCE.cmd;
  const pid = Number(await $`${sr$} start --pidfile ${sb.pidfile} -- sleep 1000`.text());
  sb.track(pid);
  assert.equal(readPid(sb.pidfile), pid);
  const st = await $`${sr$} status --pidfile ${sb.pidfile}`.noThrow().stderr("piped");
  assert.equal(st.code, 0);
  const again = await $`${sr$} start --pidfile ${sb.pidfile} -- sleep 1000`.noThrow()
    .stdout("piped").stderr("piped");
  assert.equal(again.code, 3);
  assert.equal(again.stderr.trim(), `singleton-run: already running (pid ${pid})`);
  await $`${sr$} stop --pidfile ${sb.pidfile}`;
  const after = await $`${sr$} status --json --pidfile ${sb.pidfile}`.noThrow().json();
  assert.equal(after.state, "stopped");
});

Deno.test("signal 0 checks that the daemon could be signalled (0, or 3 when not running); RTMIN+N, SIGRTMIN+N and RTMAX-N are real-time signals", async () => {
  await using sb = await Sandbox.create();
  const log = sb.path("signals.log");
  // bash names real-time signals as kill -l does; 35 = SIGRTMIN+1 and 63 = SIGRTMAX-1 with glibc.
  const r = await startFine(SOURCE, sb.pidfile, [
    "--",
    "bash",
    "-c",
    `trap 'echo RT1 >> ${log}' RTMIN+1; trap 'echo RTMAX1 >> ${log}' RTMAX-1; ` +
    `while :; do sleep 0.02; done`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const pid = Number(r.stdout);
  sb.track(pid);
  const read = () => {
    try {
      return Deno.readTextFileSync(log);
    } catch {
      return "";
    }
  };
  const check = await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "0"]);
  assert.equal(check.code, 0, check.stderr);
  assert.equal(check.stdout + check.stderr, "", "the check prints nothing");
  assert.ok(alive(pid), "signal 0 sends nothing");
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "SIGRTMIN+1"])).code, 0);
  await waitFor(() => read() === "RT1\n", 5000, "SIGRTMIN+1");
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "rtmin+1"])).code, 0);
  await waitFor(() => read() === "RT1\nRT1\n", 5000, "rtmin+1");
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "RTMAX-1"])).code, 0);
  await waitFor(() => read() === "RT1\nRT1\nRTMAX1\n", 5000, "RTMAX-1");
  assert.equal((await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "KILL"])).code, 0);
  await waitFor(() => !locked(sb.pidfile));
  assertCleanError(await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "0"]), 3, /not running/);
});

Deno.test("status prints its line on stdout, so `status | grep running` works; nothing on stderr", async () => {
  await using sb = await Sandbox.create();
  const stopped = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(stopped.code, 3);
  assert.equal(stopped.stdout, "not running\n");
  assert.equal(stopped.stderr, "");
  const r = await startFine(SOURCE, sb.pidfile, ["--", "sleep", "1000"]);
  const pid = Number(r.stdout);
  sb.track(pid);
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(st.code, 0);
  assert.match(st.stdout, new RegExp(`^running \\(pid ${pid}, up [0-9]+s\\)\\n$`));
  assert.equal(st.stderr, "");
  Deno.kill(pid, "SIGKILL");
  await waitFor(() => !locked(sb.pidfile));
  const stale = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(stale.code, 1);
  assert.equal(stale.stdout, `not running, but the pid file names pid ${pid} (stale)\n`);
});

Deno.test("the status path loads neither LogTape nor the supervisor runtime nor the spawn code", async () => {
  // What `status` loads: the entry's static imports, then the status handler's
  // (loaded on demand); dynamic imports are followed only where the command goes.
  const local = await staticallyLoaded("src/cli/commands/status.ts");
  for (const heavy of ["logtape", "src/supervisor/supervisor.ts", "src/launch/spawn.ts"]) {
    assert.ok(
      !local.some((u) => u.includes(heavy)),
      `${heavy} is loaded by status: ${local.join(", ")}`,
    );
  }
});

Deno.test("help shows each default as its mode uses it, from the control layer's constants", async () => {
  const control = await import("../../src/control/mod.ts");
  const flat = (text: string) => text.replace(/\s+/g, " ");
  const start = flat((await sr(SOURCE, ["help", "start"])).stdout);
  assert.match(
    start,
    new RegExp(
      `--ready-after DUR .*?\\(default ${control.DEFAULT_READY_AFTER_MS / 1000}s, or once it has ` +
        `listened and waited for connections for ${control.DEFAULT_READY_SERVING_MS / 1000}s\\)`,
    ),
  );
  assert.match(
    start,
    new RegExp(`--stop-schedule SCHED .*?\\(default ${control.DEFAULT_CHILD_STOP_SCHEDULE}\\)`),
  );
  assert.match(
    start,
    new RegExp(`--max-restarts N .*?\\(default ${control.DEFAULT_MAX_RESTARTS}\\)`),
  );
  const run = flat((await sr(SOURCE, ["help", "run"])).stdout);
  assert.match(
    run,
    new RegExp(
      `--ready-after DUR with --supervise: .*?\\(default ${
        control.DEFAULT_CHILD_READY_AFTER_MS / 1000
      }s, `,
    ),
  );
  const stop = flat((await sr(SOURCE, ["help", "stop"])).stdout);
  assert.match(stop, new RegExp(`\\(default ${control.DEFAULT_SCHEDULE}\\)`));
});

Deno.test("start --supervise --output syslog with nothing at /dev/log: started, and one line says the output is dropped", async () => {
  let present = false;
  try {
    Deno.lstatSync("/dev/log");
    present = true;
  } catch {
    // Missing: the case under test.
  }
  if (present) {
    console.log("skipped: /dev/log exists here; this checks the start without a syslog daemon");
    return;
  }
  await using sb = await Sandbox.create();
  const r = await startFine(SOURCE, sb.pidfile, [
    "--supervise",
    "--output",
    "syslog",
    "--",
    "sleep",
    "1000",
  ]);
  assert.equal(r.code, 0, r.stderr);
  sb.track(Number(r.stdout));
  assert.match(
    r.stderr,
    /^singleton-run: warning: \/dev\/log is not a socket, so COMMAND's output will be dropped/,
  );
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
  const s = JSON.parse((await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout);
  assert.equal(s.state, "running");
  for (const pid of [s.pid, s.supervisor?.childPid]) sb.track(pid);
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});
