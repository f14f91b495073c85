/**
 * `--exec` and `--user` on status, stop and signal, between real processes:
 * a removed binary is told by its link count, never by the text of
 * /proc/PID/exe; the caller itself and its parents are never acted on; and
 * a process no lock covers is trusted only when it runs as root, the pid
 * file's owner or the caller, or as the user `--user` names.
 */

import assert from "node:assert/strict";
import {
  alive,
  assertCleanError,
  marker,
  Sandbox,
  SOURCE,
  sr,
  startFine,
  STARTS_FINE,
  waitFor,
} from "./harness.ts";

const ROOT = Deno.uid() === 0;

/** Start `argv` in the background (its own pid, tracked), and write its pid to the pid file. */
function spawnNamed(sb: Sandbox, argv: string[]): number {
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.status.catch(() => {});
  sb.track(child.pid);
  Deno.writeTextFileSync(sb.pidfile, `${child.pid}\n`);
  return child.pid;
}

/** A copy of sleep(1) at `path`. */
function sleepAt(path: string): string {
  Deno.copyFileSync(Deno.realPathSync("/bin/sleep"), path);
  Deno.chmodSync(path, 0o755);
  return path;
}

Deno.test("--exec: a binary named 'app (deleted)' is not the removed 'app'; a binary really removed is", async () => {
  await using sb = await Sandbox.create();
  const fake = spawnNamed(sb, [sleepAt(sb.path("app (deleted)")), marker()]);
  await waitFor(() => alive(fake));
  const exec = sb.path("app");
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--exec", exec]);
  assert.equal(st.code, 4, st.stdout + st.stderr);
  assert.match(st.stderr, /runs ".*app \(deleted\)", not ".*app"/);
  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--exec", exec]);
  assertCleanError(stop, 1, /not ".*\/app"; not signalling it/);
  assert.ok(alive(fake), "the fake was signalled");
  Deno.kill(fake, "SIGKILL");
  await waitFor(() => !alive(fake));

  // The real thing: the file it runs is removed (link count 0), and its old path is trusted.
  const real = spawnNamed(sb, [sleepAt(exec), marker()]);
  await waitFor(() => alive(real));
  Deno.removeSync(exec);
  const running = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--exec", exec]);
  assert.equal(running.code, 0, running.stdout + running.stderr);
  const stopped = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--exec", exec]);
  assert.equal(stopped.code, 0, stopped.stderr);
  await waitFor(() => !alive(real));
});

Deno.test("--exec never acts on the caller's own parents: a pid file naming the shell that runs the stop", async () => {
  await using sb = await Sandbox.create();
  const cli = SOURCE.cmd.map((a) => `'${a}'`).join(" ");
  const script = `echo $$ > '${sb.pidfile}'
${cli} status --pidfile '${sb.pidfile}' --exec /bin/bash; echo "status=$?"
${cli} stop --pidfile '${sb.pidfile}' --exec /bin/bash; echo "stop=$?"
${cli} signal --pidfile '${sb.pidfile}' --exec /bin/bash KILL; echo "signal=$?"`;
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `the shell was killed: ${stdout} ${stderr}`);
  assert.match(stdout, /status=4\nstop=1\nsignal=1\n$/, stdout + stderr);
  assert.match(stderr, /is this command itself or one of its parents/);
});

Deno.test({
  name:
    "--exec trusts nobody's copy of the daemon's binary only with --user nobody; --user narrows a locked daemon too",
  ignore: !ROOT,
  async fn() {
    await using sb = await Sandbox.create();
    const theirs = spawnNamed(sb, [
      "setpriv",
      "--reuid=nobody",
      "--regid=nogroup",
      "--clear-groups",
      "--",
      "sleep",
      marker(),
    ]);
    await waitFor(() => alive(theirs));
    const sleep = Deno.realPathSync("/bin/sleep");
    const asked = ["--pidfile", sb.pidfile, "--exec", sleep];
    const st = await sr(SOURCE, ["status", ...asked]);
    assert.equal(st.code, 4, st.stdout + st.stderr);
    assert.match(st.stderr, /runs as user "nobody" \(uid \d+\), who is neither root/);
    for (const args of [["stop", ...asked], ["signal", ...asked, "TERM"], ["reload", ...asked]]) {
      const r = await sr(SOURCE, args);
      assertCleanError(r, 1, /runs as user "nobody".*give --user/);
      assert.ok(alive(theirs), `${args[0]} signalled nobody's process`);
    }
    const wrong = await sr(SOURCE, ["status", ...asked, "--user", "root"]);
    assert.equal(wrong.code, 4, wrong.stdout + wrong.stderr);
    const named = await sr(SOURCE, ["status", ...asked, "--user", "nobody"]);
    assert.equal(named.code, 0, named.stdout + named.stderr);
    const stop = await sr(SOURCE, ["stop", ...asked, "--user", "nobody"]);
    assert.equal(stop.code, 0, stop.stderr);
    await waitFor(() => !alive(theirs));

    // A daemon that holds its lock: --user narrows it as start-stop-daemon's does.
    const started = await startFine(SOURCE, sb.pidfile, ["--", "sleep", marker()]);
    assert.equal(started.code, 0, started.stderr);
    const daemon = Number(started.stdout.trim());
    sb.track(daemon);
    const notTheirs = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--user", "nobody"]);
    assertCleanError(notTheirs, 1, /runs as user "root" \(uid 0\), not "nobody"/);
    assert.ok(alive(daemon));
    const bad = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--user", "no-such-user-x"]);
    assertCleanError(bad, 2, /bad --user "no-such-user-x": no such user/);
    const group = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--user", "root:root"]);
    assertCleanError(group, 2, /no GROUP/);
    const ours = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile, "--user", "root"]);
    assert.equal(ours.code, 0, ours.stderr);
  },
});

Deno.test({
  name: "restart --user names whom the new daemon runs as, not whose old daemon it may stop",
  ignore: !ROOT,
  async fn() {
    await using sb = await Sandbox.create();
    Deno.chmodSync(sb.dir, 0o755);
    const first = await startFine(SOURCE, sb.pidfile, ["--", "sleep", marker()]);
    assert.equal(first.code, 0, first.stderr);
    sb.track(Number(first.stdout.trim()));
    const again = await sr(SOURCE, [
      "restart",
      ...STARTS_FINE,
      "--pidfile",
      sb.pidfile,
      "--user",
      "nobody",
      "--",
      "sleep",
      marker(),
    ]);
    assert.equal(again.code, 0, again.stderr);
    const second = Number(again.stdout.trim());
    sb.track(second);
    await waitFor(() => !alive(Number(first.stdout.trim())));
    const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--user", "nobody"]);
    assert.equal(st.code, 0, st.stdout + st.stderr);
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  },
});
