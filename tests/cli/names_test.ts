/**
 * Services by name: `--name NAME` without `--pidfile`, or NAME as the one
 * operand of status, stop, restart, reload and reopen (signal: NAME SIGNAL),
 * selects DIR/NAME.pid. DIR is `$SINGLETON_RUN_DIR`, else
 * `/run/singleton-run` for root, else `$XDG_RUNTIME_DIR/singleton-run`, else
 * `/tmp/singleton-run-UID`; only start, run and restart make it, and one
 * made by another user is refused. A bad name is a usage error that creates
 * nothing. Tests as `nobody` need root and say `skipped: ...` otherwise.
 */

import { STARTS_FINE } from "../../testing/process.ts";
import assert from "node:assert/strict";
import { start, statusSync, stop } from "../../src/control/mod.ts";
import { CAN_BE_NOBODY, NOBODY_UID, srAsNobody } from "./as_nobody.ts";
import {
  alive,
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

const ROOT = Deno.uid() === 0;

/** The command with `SINGLETON_RUN_DIR` set to `dir`. */
function inDir(dir: string) {
  return (args: readonly string[]) => sr(SOURCE, args, { env: { SINGLETON_RUN_DIR: dir } });
}

/** The entries of a directory, or undefined when it does not exist. */
function entries(dir: string): string[] | undefined {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return undefined;
  }
}

Deno.test("start --name makes DIR and DIR/NAME.pid; the name is every command's operand", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const run = inDir(dir);
  const sleep = ["sleep", marker()];
  const started = await run(["start", ...STARTS_FINE, "--name", "web", "--", ...sleep]);
  assert.equal(started.code, 0, started.stderr);
  const pid = Number(started.stdout);
  sb.track(pid);
  assert.equal(readPid(`${dir}/web.pid`), pid, "the name selects DIR/web.pid");
  assert.ok(locked(`${dir}/web.pid`));
  const st = Deno.statSync(dir);
  assert.equal(st.mode! & 0o777, ROOT ? 0o755 : 0o700, "DIR's mode");
  assert.equal(st.uid, Deno.uid());

  const again = await run(["start", ...STARTS_FINE, "--name", "web", "--", ...sleep]);
  assertCleanError(again, 3, new RegExp(`already running \\(pid ${pid}\\)`));

  const byOperand = await run(["status", "web"]);
  assert.equal(byOperand.code, 0, byOperand.stderr);
  assert.match(byOperand.stdout, new RegExp(`^running \\(pid ${pid}\\b`));
  const byOption = await run(["status", "--name", "web", "--json"]);
  assert.equal(JSON.parse(byOption.stdout).pidfile, `${dir}/web.pid`);
  assert.equal((await run(["signal", "web", "0"])).code, 0, "signal NAME SIGNAL");
  assert.equal((await run(["signal", "--name", "web", "0"])).code, 0, "signal --name NAME SIGNAL");
  assert.equal((await run(["signal", "--pidfile", `${dir}/web.pid`, "0"])).code, 0);
  // sleep does not catch SIGHUP: --force sends it anyway (what matters here is the operand).
  assert.equal((await run(["reload", "web", "--force"])).code, 0, "reload NAME");
  await waitFor(() => !alive(pid), 5000, "sleep to end on SIGHUP");
  assert.equal((await run(["status", "web"])).code, 1, "stale: the file names a dead pid");
  assert.equal((await run(["stop", "web"])).code, 3, "stop NAME: not running");

  const restarted = await run(["restart", "web"]);
  assert.equal(restarted.code, 0, restarted.stderr);
  sb.track(Number(restarted.stdout));
  const reopen = await run(["reopen", "web"]);
  assertCleanError(reopen, 1, /writes its output itself|no --output/);
  assert.equal((await run(["stop", "web"])).code, 0);
  assert.deepEqual(findProcesses(sleep), []);
  assert.deepEqual(entries(dir), ["web.pid", "web.pid.lock", "web.pid.record"]);
});

Deno.test("start --supervise --name: the name selects the pid file and is the supervisor's ident", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const run = inDir(dir);
  const sleep = ["sleep", marker()];
  const r = await run(["start", ...STARTS_FINE, "--supervise", "--name", "api", "--", ...sleep]);
  assert.equal(r.code, 0, r.stderr);
  sb.track(Number(r.stdout));
  const record = JSON.parse(Deno.readTextFileSync(`${dir}/api.pid.record`));
  assert.equal(record.spec.name, "api", "the ident");
  assert.equal(record.spec.holder.kind, "supervisor");
  const st = JSON.parse((await run(["status", "api", "--json"])).stdout);
  assert.equal(st.state, "running");
  assert.ok(st.supervisor.childPid > 0);
  assert.equal((await run(["stop", "api"])).code, 0);
  await waitFor(() => findProcesses(sleep).length === 0, 5000, "the child to end");
});

Deno.test("run --name takes DIR/NAME.pid in the foreground", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const r = await inDir(dir)([
    "run",
    "--name",
    "job",
    "--",
    "sh",
    "-c",
    'cat "$1"; echo $$',
    "sh",
    `${dir}/job.pid`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const [named, own] = r.stdout.trim().split("\n");
  assert.equal(named, own, "DIR/job.pid names the program run exec'd");
});

Deno.test("without DIR, the other commands answer as for a missing pid file and make nothing", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const run = inDir(dir);
  assert.equal((await run(["status", "web"])).code, 3);
  assert.equal((await run(["status", "web", "--json"])).stdout.includes('"stopped"'), true);
  for (
    const args of [["stop", "web"], ["signal", "web", "TERM"], ["reload", "web"], ["reopen", "web"]]
  ) {
    const r = await run(args);
    assertCleanError(r, 3, /not running/);
  }
  const listed = await run(["list"]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal(listed.stdout, "");
  assert.equal((await run(["stop", "web", "--oknodo"])).code, 0);
  assert.equal(entries(dir), undefined, "DIR was not made");
  assert.deepEqual(sb.list(), []);
});

Deno.test("a bad name is a usage error that makes nothing: not DIR, not a process", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const run = inDir(dir);
  const sleep = ["sleep", marker()];
  const bad = ["..", ".", "a/b", "../x", "", "x y", "tab\tname", "é", "x".repeat(201)];
  for (const name of bad) {
    for (
      const args of [
        ["start", ...STARTS_FINE, "--name", name, "--", ...sleep],
        ["run", "--name", name, "--", ...sleep],
        ["restart", "--name", name, "--", ...sleep],
        ["status", "--name", name],
      ]
    ) {
      const r = await run(args);
      assertCleanError(r, 2, name === "" ? /bad --name ""/ : /bad service name/);
    }
    if (name === "") continue; // an empty operand is no operand
    for (const args of [["status", name], ["stop", name], ["signal", name, "TERM"]]) {
      assertCleanError(await run(args), 2, /bad service name/);
    }
  }
  assert.deepEqual(findProcesses(sleep), []);
  assert.equal(entries(dir), undefined, "DIR was not made");
  // The longest name is fine.
  assert.equal((await run(["status", "x".repeat(200)])).code, 3);
  assert.equal((await run(["status", "a.b@c_d-1"])).code, 3);
});

Deno.test("operands: NAME or --pidfile, one of each at most; signal takes NAME SIGNAL", async () => {
  await using sb = await Sandbox.create();
  const run = inDir(sb.path("services"));
  const p = sb.pidfile;
  const cases: [string[], RegExp][] = [
    [["status", "web", "--pidfile", p], /a NAME \("web"\) and --pidfile exclude each other/],
    [["stop", "web", "extra"], /unexpected argument "extra"/],
    [["status", "web", "--name", "api"], /two names/],
    [["stop", "--pidfile", p, "--name", "web"], /--name and --pidfile exclude each other/],
    [["start", "--pidfile", p, "--name", "web", "--", "true"], /--name with --pidfile needs/],
    [["signal", "web"], /missing --pidfile PATH or NAME/],
    [["signal", "web", "USR1", "extra"], /unexpected argument "extra"/],
    [["signal", "--name", "web", "web", "USR1"], /unexpected argument "USR1"/],
    [["start", "web", "--", "true"], /missing --pidfile PATH or --name NAME/],
    [["start", "--name", "web", "x", "--", "true"], /unexpected argument "x" \(put COMMAND/],
    [["start", "--", "true"], /missing --pidfile PATH or --name NAME/],
    [["stop"], /missing --pidfile PATH or NAME/],
  ];
  for (const [args, message] of cases) assertCleanError(await run(args), 2, message);
  assert.deepEqual(sb.list(), []);
  // With --pidfile and --supervise, --name is only the ident, as it always was.
  const r = await run([
    "start",
    "--pidfile",
    p,
    "--supervise",
    "--name",
    "x",
    "--",
    "sleep",
    marker(),
  ]);
  assert.equal(r.code, 0, r.stderr);
  sb.track(Number(r.stdout));
  assert.equal(JSON.parse(Deno.readTextFileSync(`${p}.record`)).spec.name, "x");
  assert.deepEqual(sb.list().filter((f) => f === "services"), [], "DIR was not made");
  assert.equal((await run(["stop", "--pidfile", p])).code, 0);
});

Deno.test("the control API takes { name } in place of pidfile", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const before = Deno.env.get("SINGLETON_RUN_DIR");
  Deno.env.set("SINGLETON_RUN_DIR", dir);
  try {
    const sleep = ["sleep", marker()];
    const r = await start({ name: "web", command: sleep });
    sb.track(r.pid);
    assert.equal(readPid(`${dir}/web.pid`), r.pid);
    assert.equal(statusSync({ name: "web" }).state, "running");
    await stop({ name: "web" });
    assert.equal(statusSync({ name: "web" }).state, "stopped");
    await assert.rejects(start({ name: "../web", command: sleep }), /bad service name/);
  } finally {
    if (before === undefined) Deno.env.delete("SINGLETON_RUN_DIR");
    else Deno.env.set("SINGLETON_RUN_DIR", before);
  }
});

Deno.test({
  name: "as root, DIR is /run/singleton-run (0755) by default",
  ignore: !ROOT,
  async fn() {
    const dir = "/run/singleton-run";
    const made = entries(dir) === undefined;
    const name = `names-test-${Deno.pid}`;
    const pidfile = `${dir}/${name}.pid`;
    const sleep = ["sleep", marker()];
    const env = { ...Deno.env.toObject() };
    delete env.SINGLETON_RUN_DIR;
    const run = async (args: string[]) => {
      const out = await new Deno.Command(SOURCE.cmd[0]!, {
        args: [...SOURCE.cmd.slice(1), ...args],
        env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
    };
    try {
      const r = await run(["start", ...STARTS_FINE, "--name", name, "--", ...sleep]);
      assert.equal(r.code, 0);
      assert.equal(readPid(pidfile), Number(r.stdout));
      if (made) assert.equal(Deno.statSync(dir).mode! & 0o777, 0o755);
      assert.equal((await run(["status", name])).code, 0);
      assert.match((await run(["list"])).stdout, new RegExp(`^${name} +running`, "m"));
      assert.equal((await run(["stop", name])).code, 0);
    } finally {
      for (const pid of findProcesses(sleep)) Deno.kill(pid, "SIGKILL");
      for (const suffix of ["", ".lock", ".record", ".state"]) {
        await Deno.remove(`${pidfile}${suffix}`).catch(() => {});
      }
      if (made) await Deno.remove(dir).catch(() => {});
    }
  },
});

Deno.test({
  name: "as nobody without XDG_RUNTIME_DIR, DIR is /tmp/singleton-run-UID (0700, nobody's)",
  ignore: !CAN_BE_NOBODY,
  async fn() {
    const dir = `/tmp/singleton-run-${NOBODY_UID}`;
    const made = entries(dir) === undefined;
    const name = `names-test-${Deno.pid}`;
    const sleep = ["sleep", marker()];
    try {
      const r = await srAsNobody(["start", ...STARTS_FINE, "--name", name, "--", ...sleep]);
      assert.equal(r.code, 0, r.stderr);
      const st = Deno.statSync(dir);
      assert.equal(st.uid, NOBODY_UID);
      if (made) assert.equal(st.mode! & 0o777, 0o700);
      assert.equal(readPid(`${dir}/${name}.pid`), Number(r.stdout));
      const listed = await srAsNobody(["list", "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      const mine = JSON.parse(listed.stdout).find((s: { name: string }) => s.name === name);
      assert.equal(mine.state, "running");
      assert.equal((await srAsNobody(["stop", name])).code, 0);
    } finally {
      for (const pid of findProcesses(sleep)) Deno.kill(pid, "SIGKILL");
      for (const suffix of ["", ".lock", ".record", ".state"]) {
        await Deno.remove(`${dir}/${name}.pid${suffix}`).catch(() => {});
      }
      if (made) await Deno.remove(dir).catch(() => {});
    }
  },
});

Deno.test({
  name: "as nobody with XDG_RUNTIME_DIR, DIR is $XDG_RUNTIME_DIR/singleton-run",
  ignore: !CAN_BE_NOBODY,
  async fn() {
    await using sb = await Sandbox.create();
    Deno.chownSync(sb.dir, NOBODY_UID, NOBODY_UID);
    const env = { XDG_RUNTIME_DIR: sb.dir };
    const r = await srAsNobody(
      ["start", ...STARTS_FINE, "--name", "web", "--", "sleep", marker()],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    sb.track(Number(r.stdout));
    assert.equal(readPid(sb.path("singleton-run/web.pid")), Number(r.stdout));
    assert.equal(Deno.statSync(sb.path("singleton-run")).mode! & 0o777, 0o700);
    assert.equal((await srAsNobody(["stop", "web"], env)).code, 0);
  },
});

Deno.test({
  name: "as nobody, a DIR another user made (or a link another user owns) is refused",
  ignore: !CAN_BE_NOBODY,
  async fn() {
    await using sb = await Sandbox.create();
    await Deno.chmod(sb.dir, 0o755);
    // Made by user "daemon" (uid 1) and writable by all: it could swap nobody's pid files.
    const theirs = sb.path("theirs");
    Deno.mkdirSync(theirs);
    Deno.chmodSync(theirs, 0o777);
    Deno.chownSync(theirs, 1, 1);
    // nobody's own directory, reached through a link that user "daemon" owns.
    const own = sb.path("own");
    Deno.mkdirSync(own);
    Deno.chownSync(own, NOBODY_UID, NOBODY_UID);
    const link = sb.path("link");
    Deno.symlinkSync(own, link);
    assert.ok((await new Deno.Command("chown", { args: ["-h", "1:1", link] }).output()).success);
    const sleep = ["sleep", marker()];
    for (const dir of [theirs, link]) {
      const env = { SINGLETON_RUN_DIR: dir };
      const r = await srAsNobody(["start", ...STARTS_FINE, "--name", "web", "--", ...sleep], env);
      assertCleanError(r, 1, /refusing the directory of services .*belongs to user "daemon"/);
      assertCleanError(await srAsNobody(["list"], env), 1, /refusing the directory of services/);
    }
    assert.deepEqual(findProcesses(sleep), []);
    assert.deepEqual(entries(theirs), [], "nothing made in it");
    assert.deepEqual(entries(own), []);
  },
});
