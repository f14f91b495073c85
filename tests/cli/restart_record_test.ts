/**
 * `restart` without `-- COMMAND` starts again what was recorded beside the
 * pid file: the recorded command (found again in PATH), in the caller's
 * environment plus the recorded `--env` values, with every option given to
 * the restart over the recorded one. With a command, the new launch replaces
 * the record. With neither a record nor a command, one line and exit 2.
 */

import assert from "node:assert/strict";
import { restart, stop } from "../../src/control/mod.ts";
import { STARTS_FINE, statOf } from "../../testing/process.ts";
import {
  assertCleanError,
  findProcesses,
  marker,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  waitFor,
} from "./harness.ts";

/** A program that writes what it sees (its variables A, B and C, its directory) to OUT, then sleeps. */
function reporter(out: string, mark: string): string[] {
  return ["sh", "-c", `echo "A=$A B=$B C=$C cwd=$(pwd)" > ${out}; exec sleep ${mark}`];
}

/** What the reporter wrote, once it has. */
async function reported(out: string): Promise<string> {
  let text = "";
  await waitFor(
    () => {
      try {
        text = Deno.readTextFileSync(out);
      } catch {
        return false;
      }
      return text.endsWith("\n");
    },
    5000,
    `${out} to be written`,
  );
  Deno.removeSync(out);
  return text.trim();
}

Deno.test("restart NAME replays the recorded launch: command, --env, --chdir; the caller's environment", async () => {
  await using sb = await Sandbox.create();
  await Deno.mkdir(sb.path("work"));
  const env = { SINGLETON_RUN_DIR: sb.path("services"), C: "from-caller" };
  const out = sb.path("seen");
  const mark = marker();
  const started = await sr(SOURCE, [
    "start",
    ...STARTS_FINE,
    "--name",
    "web",
    "--env",
    "A=1",
    "--chdir",
    sb.path("work"),
    "--",
    ...reporter(out, mark),
  ], { env: { ...env, C: "first" } });
  assert.equal(started.code, 0, started.stderr);
  sb.track(Number(started.stdout));
  assert.equal(await reported(out), `A=1 B= C=first cwd=${sb.path("work")}`);

  const again = await sr(SOURCE, ["restart", "web"], { env });
  assert.equal(again.code, 0, again.stderr);
  const pid = Number(again.stdout);
  sb.track(pid);
  assert.notEqual(pid, Number(started.stdout), "a new process");
  assert.equal(
    await reported(out),
    `A=1 B= C=from-caller cwd=${sb.path("work")}`,
    "the recorded --env and --chdir, the caller's own environment",
  );
  assert.equal(findProcesses(["sleep", mark]).length, 1, "one instance");

  // Options given override the record's; the rest stays as recorded.
  const overridden = await sr(SOURCE, ["restart", "web", "--env", "B=2", "--chdir", "/"], { env });
  assert.equal(overridden.code, 0, overridden.stderr);
  sb.track(Number(overridden.stdout));
  assert.equal(await reported(out), "A=1 B=2 C=from-caller cwd=/");
  // ...and are recorded: the next restart keeps them.
  const kept = await sr(SOURCE, ["restart", "web"], { env });
  assert.equal(kept.code, 0, kept.stderr);
  sb.track(Number(kept.stdout));
  assert.equal(await reported(out), "A=1 B=2 C=from-caller cwd=/");

  const st = JSON.parse((await sr(SOURCE, ["status", "web", "--json"], { env })).stdout);
  assert.deepEqual(st.spec.command, reporter(out, mark), "status shows the recorded command");
  assert.ok(Date.parse(st.spec.recordedAt) > 0);
  assert.equal((await sr(SOURCE, ["stop", "web"], { env })).code, 0);
  assert.deepEqual(findProcesses(["sleep", mark]), []);
});

Deno.test("restart with a command replaces the record; restart --pidfile without one replays it", async () => {
  await using sb = await Sandbox.create();
  const first = ["sleep", marker()];
  const second = ["sleep", marker()];
  const p = ["--pidfile", sb.pidfile];
  const a = await sr(SOURCE, ["start", ...STARTS_FINE, ...p, "--", ...first]);
  assert.equal(a.code, 0, a.stderr);
  sb.track(Number(a.stdout));
  const b = await sr(SOURCE, ["restart", ...p, "--", ...second]);
  assert.equal(b.code, 0, b.stderr);
  sb.track(Number(b.stdout));
  assert.deepEqual(findProcesses(first), []);
  const c = await sr(SOURCE, ["restart", ...p]);
  assert.equal(c.code, 0, c.stderr);
  sb.track(Number(c.stdout));
  assert.deepEqual(findProcesses(second), [Number(c.stdout)], "the new command was recorded");
  assert.equal((await sr(SOURCE, ["stop", ...p])).code, 0);
  // Not running: restart from the record starts it.
  const d = await sr(SOURCE, ["restart", ...p]);
  assert.equal(d.code, 0, d.stderr);
  sb.track(Number(d.stdout));
  assert.deepEqual(findProcesses(second), [Number(d.stdout)]);
  assert.equal((await sr(SOURCE, ["stop", ...p])).code, 0);
});

Deno.test("restart of a supervised service from its record keeps the supervisor and its policy", async () => {
  await using sb = await Sandbox.create();
  const env = { SINGLETON_RUN_DIR: sb.path("services") };
  const sleep = ["sleep", marker()];
  const r = await sr(SOURCE, [
    "start",
    ...STARTS_FINE,
    "--supervise",
    "--max-restarts",
    "7",
    "--name",
    "api",
    "--",
    ...sleep,
  ], { env });
  assert.equal(r.code, 0, r.stderr);
  sb.track(Number(r.stdout));
  const again = await sr(SOURCE, ["restart", "api", "--supervise", "--restart-delay", "3s"], {
    env,
  });
  assert.equal(again.code, 0, again.stderr);
  const supervisor = Number(again.stdout);
  sb.track(supervisor);
  let child = 0;
  await waitFor(() => (child = findProcesses(sleep)[0] ?? 0) !== 0, 5000, "the child");
  sb.track(child);
  assert.equal(statOf(child)?.ppid, supervisor, "the pid file names the supervisor, its parent");
  const record = JSON.parse(Deno.readTextFileSync(sb.path("services/api.pid.record")));
  assert.equal(record.spec.holder.restart.maxRestarts, 7, "recorded");
  assert.equal(record.spec.holder.restart.delayMs, 3000, "given");
  assert.equal(record.spec.name, "api");
  assert.equal((await sr(SOURCE, ["stop", "api"], { env })).code, 0);
});

Deno.test("restart without a command and without a record: one line, exit 2, nothing started", async () => {
  await using sb = await Sandbox.create();
  const env = { SINGLETON_RUN_DIR: sb.path("services") };
  assertCleanError(
    await sr(SOURCE, ["restart", "web"], { env }),
    2,
    /no record of how ".*web\.pid" was started .* is missing\): give -- COMMAND/,
  );
  assertCleanError(await sr(SOURCE, ["restart", "--pidfile", sb.pidfile]), 2, /give -- COMMAND/);
  assert.deepEqual(sb.list(), [], "nothing made");
  // A running service started by a program singleton-run does not record: the same.
  Deno.writeTextFileSync(sb.pidfile, "");
  assertCleanError(await sr(SOURCE, ["restart", "--pidfile", sb.pidfile]), 2, /is missing/);
});

Deno.test({
  name: "root never replays a record another user owns",
  ignore: Deno.uid() !== 0,
  async fn() {
    await using sb = await Sandbox.create();
    const sleep = ["sleep", marker()];
    const r = await sr(SOURCE, ["start", ...STARTS_FINE, "--pidfile", sb.pidfile, "--", ...sleep]);
    assert.equal(r.code, 0, r.stderr);
    sb.track(Number(r.stdout));
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
    // nobody's pid file and record, as if nobody wrote the command root would run: the
    // record's own checks trust the pid file's owner, this check does not.
    Deno.chownSync(sb.pidfile, 65534, 65534);
    Deno.chownSync(`${sb.pidfile}.record`, 65534, 65534);
    const again = await sr(SOURCE, ["restart", "--pidfile", sb.pidfile]);
    assertCleanError(again, 2, /cannot be trusted\): give -- COMMAND/);
    assert.deepEqual(findProcesses(sleep), []);
    assert.equal(readPid(sb.pidfile), undefined);
  },
});

Deno.test("the control API's restart without a command replays the record", async () => {
  await using sb = await Sandbox.create();
  const sleep = ["sleep", marker()];
  const first = await restart({ pidfile: sb.pidfile, command: sleep, env: { A: "1" } });
  sb.track(first.pid);
  const second = await restart({ pidfile: sb.pidfile });
  sb.track(second.pid);
  assert.notEqual(first.pid, second.pid);
  assert.deepEqual(findProcesses(sleep), [second.pid]);
  const environ = Deno.readTextFileSync(`/proc/${second.pid}/environ`).split("\0");
  assert.ok(environ.includes("A=1"), "the recorded env");
  await stop({ pidfile: sb.pidfile });
  await assert.rejects(restart({ pidfile: sb.path("none.pid") }), /give -- COMMAND/);
});
