/**
 * A lock held by another process than the one the pid file names: the
 * daemon's own child kept the inherited lock descriptor after the daemon
 * died (a shell killed while its command runs on, a daemon that forked and
 * exited). status, start, signal and stop must find that holder in /proc and
 * act on it, never on the named pid, and never let a second instance start.
 */

import assert from "node:assert/strict";
import {
  alive,
  findProcesses,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  startFine,
  waitFor,
} from "./harness.ts";

/** A unique argv for `sleep`, so the test finds exactly its own processes. */
function uniqueSleep(): string[] {
  return ["sleep", `1000.${String(Math.floor(Math.random() * 1e9)).padStart(9, "0")}`];
}

Deno.test("a daemon killed while its child runs on with the lock: status, start, signal and stop act on the child", async () => {
  await using sb = await Sandbox.create();
  const sleep = uniqueSleep();
  // `; true` keeps sh from exec'ing sleep: sh is the daemon, sleep its child with fd 3.
  const r = await startFine(SOURCE, sb.pidfile, ["--", "sh", "-c", `${sleep.join(" ")}; true`]);
  assert.equal(r.code, 0, r.stderr);
  const daemon = Number(r.stdout);
  sb.track(daemon);
  let child = 0;
  await waitFor(() => (child = findProcesses(sleep)[0] ?? 0) !== 0, 5000, "the daemon's child");
  sb.track(child);

  Deno.kill(daemon, "SIGKILL");
  await waitFor(() => !alive(daemon), 5000, "the daemon to die");
  assert.equal(readPid(sb.pidfile), daemon, "the pid file still names the dead daemon");

  const status = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--json"]);
  assert.equal(status.code, 0, `the child holds the lock: running; ${status.stderr}`);
  const s = JSON.parse(status.stdout);
  assert.equal(s.pid, child);
  assert.deepEqual(s.holders, [child]);
  assert.equal(s.namedPid, daemon);
  assert.equal(s.namedPidGone, true);
  assert.deepEqual(s.cmdline, sleep, "the facts are the holder's");

  const again = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", ...uniqueSleep()]);
  if (again.code === 0) sb.track(Number(again.stdout));
  assert.equal(again.code, 3, again.stderr);
  assert.equal(again.stderr, `singleton-run: already running (pid ${child})\n`);
  const oknodo = await sr(SOURCE, ["start", "--oknodo", "--pidfile", sb.pidfile, "--", "true"]);
  assert.equal(oknodo.code, 0);
  assert.equal(oknodo.stdout, `${child}\n`, "--oknodo prints the holder's pid");

  // signal goes to the holder (CONT: harmless), saying why.
  const sig = await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "CONT"]);
  assert.equal(sig.code, 0, sig.stderr);
  assert.match(
    sig.stderr,
    new RegExp(`names pid ${daemon}, which is gone; signalling pid ${child}, which holds the lock`),
  );
  assert.ok(alive(child));

  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.match(stop.stderr, new RegExp(`stopping pid ${child}, which holds the lock`));
  assert.ok(!alive(child), "stop stopped the holder");
  assert.equal(Deno.readTextFileSync(sb.pidfile), "", "the pid file is left empty");
  const after = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(after.code, 3, after.stderr);
  // And the next start works.
  const next = await startFine(SOURCE, sb.pidfile, ["--", ...uniqueSleep()]);
  assert.equal(next.code, 0, next.stderr);
  sb.track(Number(next.stdout));
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test("the holder's workers: stop signals the top holder, then whatever still holds the lock after it is gone", async () => {
  await using sb = await Sandbox.create();
  const master = uniqueSleep();
  const worker = uniqueSleep();
  // The daemon (sh) runs the master, which starts a worker that ignores TERM: all inherit fd 3.
  const r = await startFine(SOURCE, sb.pidfile, [
    "--",
    "sh",
    "-c",
    `sh -c '(trap "" TERM; exec ${worker.join(" ")}) & exec ${master.join(" ")}'; true`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const daemon = Number(r.stdout);
  sb.track(daemon);
  let m = 0;
  let w = 0;
  await waitFor(
    () => {
      m = findProcesses(master)[0] ?? 0;
      w = findProcesses(worker)[0] ?? 0;
      return m !== 0 && w !== 0;
    },
    5000,
    "the master and the worker",
  );
  sb.track(m);
  sb.track(w);
  Deno.kill(daemon, "SIGKILL");
  await waitFor(() => !alive(daemon), 5000, "the daemon to die");

  const s = JSON.parse((await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--json"])).stdout);
  assert.deepEqual(s.holders, [m, w].sort((a, b) => a - b));
  assert.equal(s.pid, m, "the top holder (the worker's parent holds the lock too)");

  // TERM/1/KILL/2: TERM goes to the master alone, which dies of it; the worker, left holding the
  // lock, gets TERM too, ignores it, and gets KILL after 1 s.
  const started = performance.now();
  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--retry", "TERM/1/KILL/2"]);
  const took = performance.now() - started;
  assert.equal(stop.code, 0, stop.stderr);
  assert.ok(!alive(m) && !alive(w), "both holders are gone");
  assert.ok(took >= 900 && took < 3000, `stop took ${took.toFixed(0)} ms`);
  assert.equal(Deno.readTextFileSync(sb.pidfile), "");
});
