/**
 * The representative subset of the contract, run against every packaging of
 * the command: `deno run -A cli.ts`, `deno run -A dist/singleton-run.js`, and
 * the compiled `dist/compiled/singleton-run` when it can be built here.
 */

import assert from "node:assert/strict";
import {
  alive,
  allVariants,
  assertCleanError,
  FIXTURE_CMD,
  locked,
  readPid,
  ROOT,
  Sandbox,
  sr,
  startFine,
  waitFor,
} from "./harness.ts";

const variants = await allVariants();

for (const v of variants) {
  Deno.test(`[${v.name}] start prints the pid, refuses a second start, status, reload, stop`, async () => {
    await using sb = await Sandbox.create();
    const p = sb.pidfile;
    const started = await startFine(v, p, ["--", "sleep", "1000"]);
    assert.deepEqual(started.code, 0, started.stderr);
    const pid = Number(started.stdout.trim());
    sb.track(pid);
    assert.deepEqual(started.stdout, `${pid}\n`, "the pid alone on stdout");
    assert.deepEqual(readPid(p), pid, "the pid file names the daemon");
    assert(locked(p), "the pid file is locked");
    assert(alive(pid));

    const second = await sr(v, ["start", "--pidfile", p, "--", "sleep", "1000"]);
    assertCleanError(second, 3, new RegExp(`already running \\(pid ${pid}\\)`));

    const st = await sr(v, ["status", "--pidfile", p]);
    assert.deepEqual(st.code, 0);
    assert.match(st.stdout, new RegExp(`running \\(pid ${pid}`));
    const json = JSON.parse((await sr(v, ["status", "--json", "--pidfile", p])).stdout);
    assert.deepEqual(json.state, "running");
    assert.deepEqual(json.pid, pid);
    assert.deepEqual(json.code, 0);
    assert.deepEqual(json.cmdline, ["sleep", "1000"]);

    const stopped = await sr(v, ["stop", "--pidfile", p]);
    assert.deepEqual(stopped.code, 0, stopped.stderr);
    assert.deepEqual(stopped.stdout, "");
    assert(!alive(pid), "the daemon is gone");
    assert.deepEqual(Deno.readTextFileSync(p), "", "the pid file is left empty");
    const after = await sr(v, ["status", "--pidfile", p]);
    assert.deepEqual(after.code, 3, "status reads 3 (not running), not 1 (stale)");
    assertCleanError(await sr(v, ["stop", "--pidfile", p]), 3, /not running/);
    assert.deepEqual((await sr(v, ["stop", "--oknodo", "--pidfile", p])).code, 0);
  });

  Deno.test(`[${v.name}] usage errors: one line, a pointer to --help, exit 2`, async () => {
    await using sb = await Sandbox.create();
    assertCleanError(await sr(v, ["start", "--pidfile", sb.pidfile]), 2, /missing -- COMMAND/);
    assertCleanError(
      await sr(v, ["start", "--bogus", "--pidfile", sb.pidfile, "--", "true"]),
      2,
      /--bogus/,
    );
    assertCleanError(await sr(v, ["status"]), 2, /--pidfile/);
    assertCleanError(await sr(v, ["frobnicate"]), 2, /unknown command/);
    assert.deepEqual(sb.list(), [], "nothing left behind");
    const help = await sr(v, ["--help"]);
    assert.deepEqual(help.code, 0);
    assert.match(help.stdout, /singleton-run start/);
    const { version } = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
    assert.deepEqual((await sr(v, ["--version"])).stdout, `singleton-run ${version}\n`);
    assert.match((await sr(v, ["help", "stop"])).stdout, /--retry SCHEDULE/);
  });

  Deno.test(`[${v.name}] --notify-fd: start returns once the daemon writes its newline`, async () => {
    await using sb = await Sandbox.create();
    const r = await sr(v, [
      "start",
      "--pidfile",
      sb.pidfile,
      "--notify-fd",
      "5",
      "--",
      ...FIXTURE_CMD,
      "sleep:400",
      "ready",
      "forever",
    ]);
    assert.deepEqual(r.code, 0, r.stderr);
    const pid = Number(r.stdout.trim());
    sb.track(pid);
    assert(r.ms >= 400, `waited for the newline (${r.ms} ms)`);
    assert.deepEqual(readPid(sb.pidfile), pid);
    assert.deepEqual((await sr(v, ["stop", "--pidfile", sb.pidfile])).code, 0);
  });

  Deno.test(`[${v.name}] run: exec keeps the pid and the lock; the exit status is the command's`, async () => {
    await using sb = await Sandbox.create();
    const p = sb.pidfile;
    const r = await sr(v, [
      "run",
      "--pidfile",
      p,
      "--",
      "sh",
      "-c",
      `echo "$$ $(cat '${p}')"; exit 7`,
    ]);
    assert.deepEqual(r.code, 7, r.stderr);
    const [shellPid, filePid] = r.stdout.trim().split(" ");
    assert.deepEqual(shellPid, filePid, "the pid file names the exec'd command (same pid)");
    assert(!locked(p), "the lock went with the process");

    const holder = await startFine(v, p, ["--", "sleep", "1000"]);
    sb.track(Number(holder.stdout));
    assertCleanError(await sr(v, ["run", "--pidfile", p, "--", "true"]), 3, /already running/);
    const custom = await sr(v, ["run", "--conflict-exit-code", "0", "--pidfile", p, "--", "false"]);
    assert.deepEqual(custom.code, 0, "--conflict-exit-code replaces 3");
    await sr(v, ["stop", "--pidfile", p]);
    await waitFor(() => !locked(p));
  });
}

for (const v of variants) {
  Deno.test({
    name: `[${v.name}] start --user nobody: the re-executed stage works from this packaging`,
    ignore: Deno.uid() !== 0,
    async fn() {
      await using sb = await Sandbox.create();
      const r = await startFine(v, sb.pidfile, ["--user", "nobody", "--", "sleep", "1000"]);
      assert.equal(r.code, 0, r.stderr);
      const pid = Number(r.stdout);
      sb.track(pid);
      assert.match(Deno.readTextFileSync(`/proc/${pid}/status`), /^Uid:\s+65534\s/m);
      assert.equal(Deno.readTextFileSync(`/proc/${pid}/cmdline`), "sleep\x001000\x00");
      assert.equal((await sr(v, ["stop", "--pidfile", sb.pidfile])).code, 0);
    },
  });
}
