/**
 * reload refuses a SIGHUP that would end the program: one that neither
 * catches, ignores nor blocks it (its default action is to die). Each case
 * is a real program whose signal masks say what it does with SIGHUP; the
 * check is made on the program itself, on COMMAND's current run under a
 * supervisor, and on the program a keeper holds the lock for.
 */

import assert from "node:assert/strict";
import { exists } from "../../testing/process.ts";
import {
  alive,
  assertCleanError,
  locked,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  startTracked,
  waitFor,
} from "./harness.ts";

/** A Python that is the interpreter itself (not a shim script that would be the daemon). */
const PYTHON = ["/usr/bin/python3", "/usr/local/bin/python3"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

/** A file's text, or "" while it is missing. */
function text(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

Deno.test("reload of a program that does not handle SIGHUP (sleep) refuses, exit 1, and it runs on; --force sends it", async () => {
  await using sb = await Sandbox.create();
  const pid = await startTracked(sb, [], ["sleep", "300"]);
  const r = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
  assertCleanError(
    r,
    1,
    new RegExp(
      `SIGHUP would end pid ${pid} \\(sleep\\), which neither catches, ignores nor blocks it: not sent \\(--force`,
    ),
  );
  assert.ok(alive(pid), "sleep was sent SIGHUP");
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 0);
  const forced = await sr(SOURCE, ["reload", "--force", "--pidfile", sb.pidfile]);
  assert.equal(forced.code, 0, forced.stderr);
  await waitFor(() => !alive(pid), 5000, "sleep to die of SIGHUP");
});

Deno.test("signal HUP stays a plain signal: no check, the program dies of it", async () => {
  await using sb = await Sandbox.create();
  const pid = await startTracked(sb, [], ["sleep", "300"]);
  const r = await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "HUP"]);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(() => !alive(pid), 5000, "sleep to die of SIGHUP");
});

Deno.test("reload of a program that catches SIGHUP (a shell trap) sends it", async () => {
  await using sb = await Sandbox.create();
  const log = sb.path("hup.log");
  const pid = await startTracked(sb, [], [
    "sh",
    "-c",
    `trap 'echo hup >> ${log}' HUP; while :; do sleep 0.05; done`,
  ]);
  const r = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  await waitFor(() => text(log) === "hup\n", 5000, "the trap to run");
  assert.ok(alive(pid));
});

Deno.test("reload of a program that ignores SIGHUP (nohup) sends it, and it runs on", async () => {
  await using sb = await Sandbox.create();
  const pid = await startTracked(sb, [], ["nohup", "sleep", "300"]);
  await waitFor(
    () => Deno.readLinkSync(`/proc/${pid}/exe`).endsWith("/sleep"),
    5000,
    "nohup's exec of sleep",
  );
  const r = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(alive(pid));
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test({
  name: "reload of a program that blocks SIGHUP (as a signalfd reader does) sends it",
  ignore: PYTHON === undefined,
  async fn() {
    await using sb = await Sandbox.create();
    const ready = sb.path("blocked");
    const pid = await startTracked(sb, [], [
      PYTHON!,
      "-c",
      "import signal, time\n" +
      "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])\n" +
      `open(${JSON.stringify(ready)}, "w").close()\n` +
      "time.sleep(300)\n",
    ]);
    await waitFor(() => exists(ready), 5000, "the mask");
    const r = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(alive(pid), "the blocked SIGHUP killed it");
  },
});

Deno.test("under --supervise the check is made on COMMAND's current run: refused for sleep, sent to a trap", async () => {
  await using sb = await Sandbox.create();
  const supervisor = await startTracked(sb, ["--supervise"], ["sleep", "300"]);
  const childOf = async () => {
    const st = JSON.parse((await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout);
    return st.supervisor?.childPid as number | undefined;
  };
  const child = await childOf();
  assert.ok(child !== undefined && child !== supervisor, "a child runs");
  const r = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
  assertCleanError(
    r,
    1,
    new RegExp(`SIGHUP would end COMMAND's current run, pid ${child} \\(sleep\\)`),
  );
  assert.ok(alive(child!), "the child was sent SIGHUP");
  assert.equal(await childOf(), child, "the child was restarted");
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);

  const log = sb.path("hup.log");
  await startTracked(sb, ["--supervise"], [
    "sh",
    "-c",
    `trap 'echo hup >> ${log}' HUP; while :; do sleep 0.05; done`,
  ]);
  const again = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
  assert.equal(again.code, 0, again.stderr);
  await waitFor(() => text(log) === "hup\n", 5000, "the forwarded SIGHUP");
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test("with a keeper, the pid file names the program itself, and that is what is checked", async () => {
  await using sb = await Sandbox.create();
  const pid = await startTracked(sb, ["--keeper"], ["sleep", "300"]);
  assertCleanError(
    await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]),
    1,
    new RegExp(`SIGHUP would end pid ${pid} \\(sleep\\)`),
  );
  assert.ok(alive(pid));
  assert.equal(readPid(sb.pidfile), pid);
  assert.ok(locked(sb.pidfile));
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});
