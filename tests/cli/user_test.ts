/**
 * `--user`: the daemon runs as that user with its groups, keeps the pid the
 * pid file names (the internal stage execs in place), and no stage marker
 * reaches it. Needs root; says plainly that it skipped otherwise.
 */

import assert from "node:assert/strict";
import {
  assertCleanError,
  FIXTURE_CMD,
  ROOT,
  Sandbox,
  SOURCE,
  sr,
  STARTS_FINE,
} from "./harness.ts";

const root = Deno.uid() === 0;
if (!root) console.log("skipped: --user tests (need root)");

function ids(pid: number) {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) =>
    /^(\S+):\s+(.*)$/m.exec(status.split("\n").find((l) => l.startsWith(name + ":"))!)![2]!.trim()
      .split(/\s+/);
  return { uid: field("Uid"), gid: field("Gid"), groups: field("Groups") };
}

Deno.test({
  name: "start --user nobody: uid, gid and groups of nobody, same pid, no marker, HOME set",
  ignore: !root,
  async fn() {
    await using sb = await Sandbox.create();
    // The stage runs from the controller's cwd with a relative script path.
    const r = await sr(
      { name: "relative", cmd: [Deno.execPath(), "run", "-A", "cli.ts"] },
      ["start", ...STARTS_FINE, "--user", "nobody", "--pidfile", sb.pidfile, "--", "sleep", "1000"],
      { cwd: ROOT },
    );
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(r.stdout);
    sb.track(pid);
    assert.equal(Deno.readTextFileSync(sb.pidfile), `${pid}\n`);
    const { uid, gid, groups } = ids(pid);
    assert.deepEqual(uid, ["65534", "65534", "65534", "65534"]);
    assert.deepEqual(gid, ["65534", "65534", "65534", "65534"]);
    assert.deepEqual(groups, ["65534"], "nobody's groups only (initgroups), not root's");
    assert.equal(Deno.readTextFileSync(`/proc/${pid}/cmdline`), "sleep\x001000\x00");
    const env = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0");
    assert.ok(env.includes("USER=nobody"));
    assert.ok(env.includes("HOME=/nonexistent"));
    assert.ok(!env.some((e) => /singleton-run-internal/i.test(e)), "no stage marker");
    const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name)).sort();
    assert.deepEqual(fds, [0, 1, 2, 3], "the stage's pipes are gone");
    assert.equal(Deno.readLinkSync(`/proc/${pid}/cwd`), "/");
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  },
});

Deno.test({
  name: "start --user nobody:GROUP with --notify-socket: the socket is reachable by the user",
  ignore: !root,
  async fn() {
    await using sb = await Sandbox.create();
    const denoDir = await Deno.makeTempDir({ prefix: "singleton-run-nobody-" });
    Deno.chownSync(denoDir, 65534, 65534);
    let r;
    try {
      r = await sr(SOURCE, [
        "start",
        "--user",
        "nobody:daemon",
        "--notify-socket",
        "--ready-timeout",
        "20",
        "--env",
        `DENO_DIR=${denoDir}`,
        "--pidfile",
        sb.pidfile,
        "--",
        ...FIXTURE_CMD,
        "ready:as nobody",
        "forever",
      ]);
    } finally {
      await Deno.remove(denoDir, { recursive: true }).catch(() => {});
    }
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(r.stdout);
    sb.track(pid);
    assert.match(r.stderr, /ready: as nobody/);
    const daemonGid = /^daemon:x:(\d+):/m.exec(Deno.readTextFileSync("/etc/group"))![1]!;
    assert.equal(ids(pid).gid[0], daemonGid);
    assert.equal(ids(pid).uid[0], "65534");
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  },
});

Deno.test({
  name: "start --user: a failure in the stage (chdir as the user) is reported, nothing left behind",
  ignore: !root,
  async fn() {
    await using sb = await Sandbox.create();
    const r = await sr(SOURCE, [
      "start",
      "--user",
      "nobody",
      "--chdir",
      sb.dir, // 0700 root: nobody cannot enter it
      "--pidfile",
      sb.pidfile,
      "--",
      "sleep",
      "1000",
    ]);
    assertCleanError(r, 1, /cannot change directory to ".*" as user "nobody": permission denied/);
    assert.equal(Deno.readTextFileSync(sb.pidfile), "");
    assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 3);
  },
});

Deno.test({
  name: "run --user nobody: drops privileges in place before the exec",
  ignore: !root,
  async fn() {
    await using sb = await Sandbox.create();
    const r = await sr(SOURCE, [
      "run",
      "--user",
      "nobody",
      "--pidfile",
      sb.pidfile,
      "--",
      "sh",
      "-c",
      "id -u; id -G",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "65534\n65534\n");
  },
});
