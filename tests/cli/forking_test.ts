/**
 * Programs that daemonize themselves or drop the lock, with small shell
 * programs: followed through a fork (and a double fork), named by their own
 * pid file, refused when several are left, kept by a keeper when they close
 * the lock's descriptor; under --supervise, followed too, and what is left
 * of a run stopped before the next. The real daemons are in
 * classic_daemons_test.ts.
 */

import assert from "node:assert/strict";
import { processState } from "../../testing/process.ts";
import {
  assertCleanError,
  findProcesses,
  locked,
  marker,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  waitFor,
} from "./harness.ts";

/** The pids of `sleep M`, tracked by the sandbox. */
function sleeps(sb: Sandbox, m: string): number[] {
  const pids = findProcesses(["sleep", m]);
  for (const pid of pids) sb.track(pid);
  return pids;
}

/** Stop through the CLI and check that nothing is left: no sleep, no lock, an empty pid file. */
async function stopAndCheck(sb: Sandbox, ...markers: string[]): Promise<void> {
  const r = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(r.code, 0, r.stderr);
  for (const m of markers) assert.deepEqual(findProcesses(["sleep", m]), [], `sleep ${m} runs on`);
  assert.equal(locked(sb.pidfile), false, "the lock is still held");
  assert.equal(Deno.readTextFileSync(sb.pidfile), "");
}

Deno.test("a double fork is followed to the grandchild", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `(setsid bash -c 'sleep ${m} & exit 0' &); exit 0`,
  ]);
  const [sleep] = sleeps(sb, m);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), String(sleep));
  assert.equal(readPid(sb.pidfile), sleep);
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 0);
  await stopAndCheck(sb, m);
});

Deno.test("--daemon-pidfile names the main process even while the launched one still runs", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const own = sb.path("own.pid");
  // Without the program's pid file, start --ready-after 20 would call the launcher
  // ready and name it; it exits 300 ms later.
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--daemon-pidfile",
    own,
    "--",
    "bash",
    "-c",
    `sleep 0.1; sleep ${m} & echo $! > ${own}; sleep 0.3; exit 0`,
  ]);
  const [sleep] = sleeps(sb, m);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), String(sleep));
  assert.equal(readPid(sb.pidfile), sleep);
  assert.equal(Deno.readTextFileSync(own).trim(), String(sleep), "the program's file is untouched");
  await stopAndCheck(sb, m);
  assert.equal(Deno.readTextFileSync(own).trim(), String(sleep), "stop left the program's file");
});

Deno.test("--daemon-pidfile naming a process this start did not launch is not believed", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const own = sb.path("own.pid");
  Deno.writeTextFileSync(own, `${Deno.pid}\n`); // a live process, but not the daemon
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--daemon-pidfile",
    own,
    "--ready-timeout",
    "1",
    "--",
    "bash",
    "-c",
    `sleep ${m} & exit 0`,
  ]);
  sleeps(sb, m);
  assertCleanError(r, 1, /--daemon-pidfile .* names pid [0-9]+, which this start did not launch/);
  assert.deepEqual(findProcesses(["sleep", m]), [], "what it started runs on");
  assert.equal(locked(sb.pidfile), false);
  assert.equal(Deno.readTextFileSync(own), `${Deno.pid}\n`);
});

Deno.test("a program that leaves two processes is refused, naming both, and both are stopped", async () => {
  await using sb = await Sandbox.create();
  const [m1, m2] = [marker(), marker()];
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `sleep ${m1} & sleep ${m2} & exit 0`,
  ]);
  const pids = [...sleeps(sb, m1), ...sleeps(sb, m2)];
  assertCleanError(r, 1, /left 2 processes \(pids [0-9]+, [0-9]+\).*--daemon-pidfile/);
  for (const pid of pids) assert.match(r.stderr, new RegExp(`\\b${pid}\\b`));
  assert.deepEqual([...findProcesses(["sleep", m1]), ...findProcesses(["sleep", m2])], []);
  assert.equal(locked(sb.pidfile), false);
});

Deno.test("a program that closes the lock's descriptor gets a keeper, and the pid file names the program", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `exec 3>&-; exec sleep ${m}`,
  ]);
  const [sleep] = sleeps(sb, m);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /closed the pid file's lock descriptor: keeper pid [0-9]+ holds the lock/);
  const keeper = Number(/keeper pid ([0-9]+)/.exec(r.stderr)![1]);
  sb.track(keeper);
  assert.equal(r.stdout.trim(), String(sleep));
  assert.equal(readPid(sb.pidfile), sleep);
  assert.ok(locked(sb.pidfile), "the keeper holds the lock");
  const second = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", "sleep", m]);
  assert.equal(second.code, 3, second.stderr);
  // The program ends by itself: the keeper lets go of the lock and leaves.
  Deno.kill(sleep!, "SIGKILL");
  await waitFor(() => !locked(sb.pidfile), 5000, "the keeper to let go");
  await waitFor(() => processState(keeper) === undefined, 5000, "the keeper to exit");
});

Deno.test("--keeper holds the lock for a program that closes its descriptors later, and writes its output", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const out = sb.path("out.log");
  const r = await sr(SOURCE, [
    "start",
    "--keeper",
    "--output",
    out,
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `echo first line; sleep 0.3; for fd in /proc/$$/fd/*; do n=\${fd##*/}; [ $n -gt 2 ] && eval "exec $n>&-"; done; exec sleep ${m}`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(() => sleeps(sb, m).length === 1, 5000, "the program to close its descriptors");
  const [sleep] = sleeps(sb, m); // bash exec'd sleep: the same pid
  assert.equal(r.stdout.trim(), String(sleep), "start prints the program's pid, not the keeper's");
  assert.equal(readPid(sb.pidfile), sleep);
  assert.ok(locked(sb.pidfile), "the lock is still held after the program closed its descriptors");
  assert.match(Deno.readTextFileSync(out), /first line/);
  await stopAndCheck(sb, m);
});

Deno.test("--supervise follows a program that forks away, and restarts it when its main process dies", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const r = await sr(SOURCE, [
    "start",
    "--supervise",
    "--restart-delay",
    "100ms",
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `setsid sleep ${m} & exit 0`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const supervisor = Number(r.stdout.trim());
  sb.track(supervisor);
  await waitFor(() => sleeps(sb, m).length === 1, 5000, "the forked program");
  const [first] = sleeps(sb, m);
  await new Promise((res) => setTimeout(res, 300)); // the supervisor notices the fork
  Deno.kill(first!, "SIGKILL");
  await waitFor(
    () => sleeps(sb, m).some((pid) => pid !== first),
    5000,
    "a new run after the main process was killed",
  );
  assert.equal(sleeps(sb, m).length, 1, "one run at a time");
  assert.equal(readPid(sb.pidfile), supervisor);
  await stopAndCheck(sb, m);
});

Deno.test("--supervise stops what is left of a run (a worker holding the lock) before the next run", async () => {
  await using sb = await Sandbox.create();
  const [main, worker] = [marker(), marker()];
  const r = await sr(SOURCE, [
    "start",
    "--supervise",
    "--restart-delay",
    "100ms",
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `sleep ${worker} & exec sleep ${main}`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  sb.track(Number(r.stdout.trim()));
  await waitFor(() => sleeps(sb, main).length === 1 && sleeps(sb, worker).length === 1);
  const [oldMain] = sleeps(sb, main);
  const [oldWorker] = sleeps(sb, worker);
  Deno.kill(oldMain!, "SIGKILL"); // the worker runs on, holding the lock
  await waitFor(
    () => sleeps(sb, main).some((pid) => pid !== oldMain),
    5000,
    "the next run",
  );
  // Stopped before the next run began: gone by the time its main process runs.
  assert.ok(!findProcesses(["sleep", worker]).includes(oldWorker!), "the old worker runs on");
  // The new run's worker is forked before its main process execs, but may exec after it.
  await waitFor(() => sleeps(sb, worker).length > 0, 5000, "the new run's worker");
  assert.equal(sleeps(sb, worker).length, 1, "exactly the new run's worker");
  await stopAndCheck(sb, main, worker);
});
