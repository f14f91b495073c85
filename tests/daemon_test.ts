import assert from "node:assert/strict";
import { PidFile } from "../src/pidfile.ts";
import { DAEMON_ROLE_VARIABLE } from "../src/daemon.ts";
import { serviceDir } from "./helpers/service.ts";

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

Deno.test("daemonize(): a second run exits 1 at once naming the first pid", async () => {
  await using dir = await serviceDir();
  assert.equal((await dir.start("ready")).code, 0);
  const pid = dir.pid();
  const second = await dir.start("ready");
  assert.equal(second.code, 1);
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
