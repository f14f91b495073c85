/**
 * Readiness as `start` waits for it: the default liveness check, the s6
 * notification fd, sd_notify's NOTIFY_SOCKET, and every way of failing before
 * ready (exit status, signal, timeout, closed fd) with the last output lines
 * and nothing left behind.
 */

import assert from "node:assert/strict";
import {
  alive,
  assertCleanError,
  FIXTURE_CMD,
  locked,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  srSpawn,
  waitFor,
} from "./harness.ts";

/** Start with these options and daemon steps, through the fixture daemon. */
function start(sb: Sandbox, options: string[], steps: string[]) {
  return sr(SOURCE, ["start", "--pidfile", sb.pidfile, ...options, "--", ...FIXTURE_CMD, ...steps]);
}

/** Nothing left behind: no process named by the file, no lock, an empty pid file. */
function assertNothingLeft(sb: Sandbox, pidSeen?: number) {
  assert.ok(!locked(sb.pidfile), "the lock is free");
  assert.equal(Deno.readTextFileSync(sb.pidfile), "", "the pid file is empty");
  if (pidSeen !== undefined) assert.ok(!alive(pidSeen), `pid ${pidSeen} is gone`);
  assert.ok(!sb.list().some((n) => n.includes("notify")), "no socket left in the sandbox");
}

function tmpNotifyDirs(): string[] {
  return [...Deno.readDirSync("/tmp")].map((e) => e.name).filter((n) =>
    n.startsWith("singleton-run-notify-")
  ).sort();
}

Deno.test("default readiness: a daemon that dies at once fails the start with its exit status", async () => {
  await using sb = await Sandbox.create();
  const out = sb.path("out.log");
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--output",
    out,
    "--",
    "sh",
    "-c",
    "echo starting; echo 'config error: no such file' >&2; exit 3",
  ]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /ended before it was ready \(exit status 3\)/);
  assert.match(
    r.stderr,
    /last lines of ".*out\.log" since this start:\n {2}starting\n {2}config error: no such file\n/,
  );
  assertNothingLeft(sb);
});

Deno.test("a failed start quotes only what this start wrote to --output, never an earlier run's last words", async () => {
  await using sb = await Sandbox.create();
  const out = sb.path("out.log");
  Deno.writeTextFileSync(out, "Received SIGTERM scheduling shutdown...\nbye bye\n");
  const failed = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--output",
    out,
    "--",
    "sh",
    "-c",
    "echo 'new run: bad config'; exit 1",
  ]);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /since this start:\n {2}new run: bad config\n/);
  assert.doesNotMatch(failed.stderr, /bye bye|SIGTERM/);
  const silent = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--output",
    out,
    "--",
    "false",
  ]);
  assert.equal(silent.code, 1);
  assert.match(silent.stderr, /has no output since this start/);
  assert.doesNotMatch(silent.stderr, /bye bye|bad config/);
  assertNothingLeft(sb);
});

Deno.test("default readiness: killed by a signal is reported by name; --ready-after widens the window", async () => {
  await using sb = await Sandbox.create();
  const r = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", "sh", "-c", "kill -SEGV $$"]);
  assertCleanError(r, 1, /killed by SIGSEGV/);
  assertNothingLeft(sb);
  // Dies after 150 ms: a 1000 ms window catches it (a 20 ms one, the old default, would not).
  const late = await sr(SOURCE, [
    "start",
    "--ready-after",
    "1000",
    "--pidfile",
    sb.pidfile,
    "--",
    "sh",
    "-c",
    "sleep 0.15; exit 4",
  ]);
  assertCleanError(late, 1, /exit status 4/);
  assert.ok(late.ms >= 150);
  assertNothingLeft(sb);
});

Deno.test("--notify-fd: closing the descriptor without a newline fails the start; the daemon is killed", async () => {
  await using sb = await Sandbox.create();
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--notify-fd",
    "3",
    "--",
    "sh",
    "-c",
    "exec 3>&-; exec sleep 1000",
  ]);
  assertCleanError(
    r,
    1,
    /closed its notification descriptor 3 without writing a newline; killed it/,
  );
  assertNothingLeft(sb);
});

Deno.test("--notify-fd 3 moves the lock to fd 4; NOTIFY_FD names the descriptor", async () => {
  await using sb = await Sandbox.create();
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--notify-fd",
    "3",
    "--",
    "sh",
    "-c",
    'echo >&"$NOTIFY_FD"; exec sleep 1000',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const pid = Number(r.stdout);
  sb.track(pid);
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/4`), sb.pidfile);
  assert.match(Deno.readLinkSync(`/proc/${pid}/fd/3`), /^pipe:/);
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test("--ready-timeout: a daemon never ready is killed after the timeout, with its last output", async () => {
  await using sb = await Sandbox.create();
  const out = sb.path("out.log");
  const r = await start(sb, ["--notify-fd", "4", "--ready-timeout", "0.8", "--output", out], [
    "print:still loading",
    "forever",
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not ready after 0\.8 s; killed it/);
  assert.match(r.stderr, / {2}still loading/);
  assert.ok(r.ms >= 800 && r.ms < 5000, `${r.ms} ms`);
  assertNothingLeft(sb);
});

Deno.test("--notify-socket: READY=1 with STATUS, after EXTEND_TIMEOUT_USEC pushes the deadline", async () => {
  await using sb = await Sandbox.create();
  const before = tmpNotifyDirs();
  // The first deadline leaves room for a slow start-up on a loaded machine.
  const r = await start(sb, ["--notify-socket", "--ready-timeout", "1"], [
    "send:STATUS=warming up\\nEXTEND_TIMEOUT_USEC=5000000",
    "sleep:1500",
    "ready:serving",
    "forever",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const pid = Number(r.stdout);
  sb.track(pid);
  assert.ok(r.ms >= 1500, "waited past the first deadline, as extended");
  assert.match(r.stderr, /ready: serving/);
  assert.equal(readPid(sb.pidfile), pid);
  const env = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0");
  assert.ok(env.some((e) => e.startsWith("NOTIFY_SOCKET=/")));
  assert.deepEqual(tmpNotifyDirs(), before, "the socket directory was removed");
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test("--notify-socket: a daemon that reports ERRNO and exits fails with both", async () => {
  await using sb = await Sandbox.create();
  const before = tmpNotifyDirs();
  const r = await start(sb, ["--notify-socket"], [
    "send:STATUS=cannot open database\\nERRNO=13",
    "sleep:100",
    "exit:2",
  ]);
  assertCleanError(
    r,
    1,
    /ended before it was ready \(exit status 2\).*cannot open database.*ERRNO=13/,
  );
  assertNothingLeft(sb);
  assert.deepEqual(tmpNotifyDirs(), before);
});

Deno.test("a daemon that fails before ready leaves no process of its group behind", async () => {
  await using sb = await Sandbox.create();
  const marker = `1000.${Math.floor(Math.random() * 1e6)}`;
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--notify-fd",
    "5",
    "--ready-timeout",
    "0.5",
    "--",
    "sh",
    "-c",
    `sleep ${marker} & wait`,
  ]);
  assert.equal(r.code, 1);
  // The background child inherited the lock; it was killed with the group.
  await new Promise((res) => setTimeout(res, 100));
  const { findProcesses } = await import("./harness.ts");
  assert.deepEqual(findProcesses(["sleep", marker]), []);
  assertNothingLeft(sb);
});

Deno.test("an interrupted start (SIGINT, SIGTERM) kills the half-started daemon and says so", async () => {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    await using sb = await Sandbox.create();
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
      () => {
        const pid = readPid(sb.pidfile);
        return pid !== undefined && pid !== ctl.pid;
      },
      10_000,
      "the daemon to be spawned",
    );
    const daemon = readPid(sb.pidfile)!;
    sb.track(daemon);
    ctl.kill(sig);
    const out = await ctl.output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(
      stderr,
      new RegExp(`interrupted \\(${sig}\\) before the daemon was ready; killed it`),
    );
    assert.ok(!alive(daemon));
    assertNothingLeft(sb);
  }
});

Deno.test("--notify-socket MAINPID=: the pid file moves to the announced process when it holds the file", async () => {
  if (!new Deno.Command("sh", { args: ["-c", "command -v systemd-notify"] }).outputSync().success) {
    console.log("skipped: MAINPID test (systemd-notify is not installed)");
    return;
  }
  await using sb = await Sandbox.create();
  const marker = `1000.${Math.floor(Math.random() * 1e6)}`;
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--notify-socket",
    "--",
    "sh",
    "-c",
    // The shell hands over to its child and exits, as a forking daemon does.
    `sleep ${marker} & systemd-notify READY=1 MAINPID=$!; exit 0`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const shell = Number(r.stdout);
  sb.track(shell);
  const { findProcesses } = await import("./harness.ts");
  const [child] = findProcesses(["sleep", marker]);
  assert.ok(child !== undefined);
  sb.track(child);
  assert.equal(shell, child, "start prints the main pid");
  assert.equal(readPid(sb.pidfile), child, "the pid file names the main pid");
  const stopped = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stopped.code, 0, `stop signals the main pid: ${stopped.stderr}`);
});
