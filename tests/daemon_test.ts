import assert from "node:assert/strict";
import { PidFile } from "../src/lock/pidfile.ts";
import { DAEMON_ROLE_VARIABLE } from "../src/service/daemon.ts";
import { until } from "../testing/process.ts";
import { serviceDir, serviceFixture } from "../testing/service.ts";
import { startRsyslog } from "../testing/rsyslog.ts";

function fdInfoFlags(pid: number, fd: number): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
  return parseInt(/^flags:\s+([0-7]+)/m.exec(text)![1]!, 8);
}

Deno.test("daemonize(): the foreground exits 0 after ready(); the daemon leads a session in / and holds the lock", async () => {
  await using dir = await serviceDir();
  const run = await dir.start("ready");
  assert.equal(run.code, 0, run.err);
  assert.equal(run.err, "");
  const pid = dir.pid();
  assert.ok(pid !== undefined, "pid file names the daemon");
  assert.deepEqual(dir.events(), ["ready"], "ready() came after the daemon's setup");
  const info = JSON.parse(await Deno.readTextFile(`${dir.path}/info.json`));
  assert.equal(info.pid, pid, "the pid in the file is the daemon's");
  assert.equal(info.handlePid, pid);
  assert.equal(info.sid, pid, "session leader");
  assert.equal(info.pgid, pid, "process group leader");
  assert.equal(info.cwd, "/");
  assert.equal(info.extra, "yes", "options.env reached the daemon");
  assert.deepEqual(info.marker, [], "the role variable was deleted in the daemon");
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "running", pid });
  // Descriptors: stdin on /dev/null, output appended to the file, the lock
  // close-on-exec on fd 3, the readiness socket closed after ready().
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/0`), "/dev/null");
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/1`), `${dir.path}/output.log`);
  assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/3`), dir.pidFile);
  assert.ok(fdInfoFlags(pid, 3) & 0o2000000, "lock fd is O_CLOEXEC");
  assert.ok(fdInfoFlags(pid, 1) & 0o2000, "output is O_APPEND");
  assert.throws(() => Deno.readLinkSync(`/proc/${pid}/fd/4`), Deno.errors.NotFound);
  assert.equal(
    (Deno.readTextFileSync(`/proc/${pid}/status`).match(/^Umask:\s+(\d+)/m) ?? [])[1],
    "0022",
  );
});

Deno.test("daemonize(): a second run exits 3 at once naming the first pid, as the command would", async () => {
  await using dir = await serviceDir();
  assert.equal((await dir.start("ready")).code, 0);
  const pid = dir.pid();
  const second = await dir.start("ready");
  assert.equal(second.code, 3);
  assert.equal(second.err, `already running (pid ${pid})\n`);
  assert.equal(dir.pid(), pid, "the pid file still names the first daemon");
  assert.deepEqual(dir.processes(), [pid], "no second daemon was started");
});

Deno.test("daemonize(): a daemon that throws before ready() fails the foreground with its message", async () => {
  await using dir = await serviceDir();
  const run = await dir.start("throw");
  assert.equal(run.code, 1);
  assert.match(run.err, /^daemon failed before it was ready: config file is broken: 100% bad/);
  assert.match(run.err, /its output is in/);
  assert.match(
    dir.output(),
    /config file is broken/,
    "the daemon's stderr went to the output file",
  );
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" }, "lock released");
  assert.deepEqual(dir.processes(), [], "no daemon left");
});

Deno.test("daemonize(): an uncaught error in a callback before ready() fails the foreground too", async () => {
  await using dir = await serviceDir();
  const run = await dir.start("throw-later");
  assert.equal(run.code, 1);
  assert.match(run.err, /^daemon failed before it was ready: listener failed: port 100% busy/);
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
  assert.deepEqual(dir.processes(), []);
});

Deno.test("daemonize(): a daemon that exits before ready() fails the foreground with its status", async () => {
  await using dir = await serviceDir();
  const run = await dir.start("exit");
  assert.equal(run.code, 1);
  assert.match(run.err, /^daemon exited with status 3 before it was ready/);
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
  assert.deepEqual(dir.processes(), []);
});

Deno.test("daemonize(): a daemon never ready is killed at readyTimeout", async () => {
  await using dir = await serviceDir();
  const run = await dir.start("never-ready");
  assert.equal(run.code, 1);
  assert.match(run.err, /^daemon was not ready within 1500 ms; it was killed/);
  assert.ok(run.ms < 6000, `took ${run.ms} ms`);
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
  assert.deepEqual(dir.processes(), []);
});

Deno.test("daemonize(): Ctrl-C in the foreground while it waits stops the half-started daemon", async () => {
  await using dir = await serviceDir();
  const fg = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", serviceFixture, dir.path, "never-ready"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  assert.ok(await until(() => dir.pid() !== undefined && dir.pid() !== fg.pid, 10_000));
  const daemon = dir.pid()!;
  fg.kill("SIGINT");
  const out = await fg.output();
  assert.equal(out.code, 1);
  assert.match(
    new TextDecoder().decode(out.stderr),
    /^interrupted by SIGINT before the daemon was ready; it was stopped/,
  );
  assert.ok(await until(() => !dir.processes().includes(daemon), 5000), "the daemon is gone");
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
});

Deno.test("daemonize(): a signal the moment the pid file names the child never leaves a daemon behind", async () => {
  // The window between spawn() and the readiness wait is a few milliseconds
  // wide; poll the file tightly and signal at once, many times, with each of
  // the three signals the foreground promises to handle.
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (let round = 0; round < 15; round++) {
    await using dir = await serviceDir();
    const signal = signals[round % signals.length]!;
    const fg = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", serviceFixture, dir.path, "never-ready"],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const deadline = performance.now() + 10_000;
    while (dir.pid() === undefined || dir.pid() === fg.pid) {
      assert.ok(performance.now() < deadline, "the pid file never named the child");
      await new Promise((r) => setTimeout(r, 0));
    }
    const daemon = dir.pid()!;
    fg.kill(signal);
    const out = await fg.output();
    const err = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, `round ${round} (${signal}): ${err}`);
    assert.match(err, new RegExp(`^interrupted by ${signal} before the daemon was`));
    assert.ok(await until(() => !dir.processes().includes(daemon), 5000), "the daemon is gone");
    assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
  }
});

Deno.test("daemonize(): the role marker does not reach a grandchild, and a stale one is ignored", async () => {
  await using dir = await serviceDir();
  // A process that inherited a stale marker (right shape, wrong nonce) is a foreground caller.
  const stale = `4:${"ab".repeat(16)}`;
  const run = await dir.start("ready", { [DAEMON_ROLE_VARIABLE]: stale });
  assert.equal(run.code, 0, run.err);
  const pid = dir.pid()!;
  const info = JSON.parse(await Deno.readTextFile(`${dir.path}/info.json`));
  assert.equal(info.sid, pid, "the stale marker did not make the foreground act as the daemon");
  const env = await Deno.readTextFile(`${dir.path}/grandchild.env`);
  assert.match(env, /^FIXTURE_EXTRA=yes$/m, "the grandchild's environment was captured");
  assert.ok(!env.includes(DAEMON_ROLE_VARIABLE), `marker leaked:\n${env}`);
  // The lock and the readiness socket are close-on-exec in the daemon: a
  // program it runs (started before ready()) inherits neither.
  const fds = await Deno.readTextFile(`${dir.path}/grandchild.fds`);
  assert.match(fds, / 0 -> \/dev\/null/, "the grandchild's descriptors were captured");
  assert.ok(!fds.includes("app.pid"), `lock inherited:\n${fds}`);
  assert.ok(!fds.includes("socket:"), `readiness socket inherited:\n${fds}`);
});

Deno.test("daemonize(): the chdir and umask options reach the daemon; a missing chdir fails clearly", async () => {
  await using dir = await serviceDir();
  const run = await dir.start("ready", { FIXTURE_CHDIR: dir.path, FIXTURE_UMASK: "077" });
  assert.equal(run.code, 0, run.err);
  const pid = dir.pid()!;
  const info = JSON.parse(await Deno.readTextFile(`${dir.path}/info.json`));
  assert.equal(info.cwd, dir.path);
  assert.match(Deno.readTextFileSync(`/proc/${pid}/status`), /^Umask:\s+0077$/m);
  Deno.kill(pid, "SIGTERM");
  assert.ok(await PidFile.waitForRelease(dir.pidFile, { timeout: 5000 }));

  const missing = await dir.start("ready", { FIXTURE_CHDIR: `${dir.path}/nowhere` });
  assert.equal(missing.code, 1);
  assert.equal(missing.err.split("\n").filter((l) => l).length, 1, missing.err);
  assert.match(
    missing.err,
    /^cannot start the daemon: directory ".*\/nowhere": it does not exist$/m,
  );
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
});

Deno.test("daemonize(): an unusable pid file is one clear line and exit 1", async () => {
  await using dir = await serviceDir();
  await Deno.mkdir(dir.pidFile);
  const run = await dir.start("ready");
  assert.equal(run.code, 1);
  assert.equal(run.err.split("\n").filter((l) => l).length, 1, run.err);
  assert.match(run.err, /directory/);
  assert.deepEqual(dir.processes(), []);
  await Deno.remove(dir.pidFile);
});

Deno.test("the example service: starts as a daemon, serves, reloads on SIGHUP, stops; logs reach syslog", async () => {
  const example = new URL("../examples/http_service.ts", import.meta.url).pathname;
  const task = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))).tasks
    .example as string;
  const flags = task.split(" ").filter((a) => a.startsWith("--allow-"));
  await using sl = await startRsyslog();
  if (sl.skipReason) console.log(`syslog part skipped: ${sl.skipReason}`);
  await using dir = await serviceDir();
  const config = `${dir.path}/config.json`;
  await Deno.writeTextFile(config, JSON.stringify({ greeting: "first" }));
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const args = ["--pid-file", dir.pidFile, "--config", config, "--port", String(port)];
  const run = async (...extra: string[]) => {
    const argv = [Deno.execPath(), "run", ...flags, example, ...args, ...extra];
    if (!sl.skipReason) return await sl.run(argv);
    const out = await new Deno.Command(argv[0]!, { args: argv.slice(1), stderr: "piped" }).output();
    return { code: out.code, stdout: "", stderr: new TextDecoder().decode(out.stderr) };
  };
  const get = async () => await (await fetch(`http://127.0.0.1:${port}/`)).text();

  const start = await run();
  assert.equal(start.code, 0, start.stderr);
  const pid = dir.pid()!;
  assert.equal(await get(), "first\n");
  assert.equal((await run()).stderr, `already running (pid ${pid})\n`);
  await Deno.writeTextFile(config, JSON.stringify({ greeting: "second, 100%" }));
  assert.equal((await run("reload")).code, 0);
  let body = "";
  for (const t0 = performance.now(); performance.now() - t0 < 3000;) {
    body = await get();
    if (body !== "first\n") break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(body, "second, 100%\n", "SIGHUP re-read the configuration");
  const stop = await run("stop");
  assert.equal(stop.code, 0, stop.stderr);
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "absent" });
  await assert.rejects(get());
  if (sl.skipReason) return;
  const lines = (await sl.lines({ match: /example: stopped$/ })).filter((l) =>
    l.includes(`example-service ${pid} `)
  );
  assert.deepEqual(lines, [
    `daemon.info example-service ${pid} example: listening on 127.0.0.1:${port}`,
    `daemon.info example-service ${pid} example: configuration reloaded: second, 100%`,
    `daemon.info example-service ${pid} singleton-run.shutdown: SIGTERM: stopping (deadline 4000 ms)`,
    `daemon.info example-service ${pid} example: stopping: draining connections`,
    `daemon.info example-service ${pid} example: stopped`,
  ]);
});
