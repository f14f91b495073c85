import assert from "node:assert/strict";
import { PidFile } from "../src/lock/pidfile.ts";
import { onReload, onShutdown } from "../src/service/shutdown.ts";
import { until } from "../testing/process.ts";
import { serviceDir } from "../testing/service.ts";

async function started(mode: string) {
  const dir = await serviceDir();
  const run = await dir.start(mode);
  assert.equal(run.code, 0, run.err);
  const pid = dir.pid();
  assert.ok(pid !== undefined);
  return { dir, pid };
}

/** Send a signal and measure how long until the pid file's lock is free. */
async function stopWith(
  pid: number,
  pidFile: string,
  limit: number,
  signal: Deno.Signal = "SIGTERM",
): Promise<number> {
  const t0 = performance.now();
  Deno.kill(pid, signal);
  const released = await PidFile.waitForRelease(pidFile, { timeout: limit });
  const ms = performance.now() - t0;
  assert.ok(released, `lock still held ${ms} ms after ${signal}`);
  return ms;
}

Deno.test("SIGTERM runs async cleanups last-registered first, then releases the lock and exits", async () => {
  const { dir, pid } = await started("ready");
  await using _ = dir;
  const ms = await stopWith(pid, dir.pidFile, 5000);
  assert.deepEqual(dir.events(), [
    "ready",
    "cleanup-2 start",
    "cleanup-2 end",
    "cleanup-1 start",
    "cleanup-1 end",
  ]);
  assert.ok(ms >= 300, `both 150 ms cleanups ran before the lock was let go (${ms} ms)`);
  assert.equal(await Deno.readTextFile(dir.pidFile), "", "the pid file was emptied");
  assert.ok(await until(() => dir.processes().length === 0, 3000), "the daemon exited");
  assert.match(dir.output(), /SIGTERM: stopping \(deadline 5000 ms\)/);
});

Deno.test("a hanging cleanup is cut off at the deadline and the lock is still released", async () => {
  const { dir, pid } = await started("hang");
  await using _ = dir;
  const ms = await stopWith(pid, dir.pidFile, 4000);
  // Not before the deadline; that it was the deadline that let go (and not
  // the hanging handler ending) is the log line and the missing end event.
  assert.ok(ms >= 900, `released after ${ms} ms, before the 1000 ms deadline`);
  assert.deepEqual(dir.events(), ["ready", "hanging start"]);
  assert.match(
    dir.output(),
    /shutdown deadline of 1000 ms passed: a cleanup handler is still running, 1 more skipped/,
  );
  assert.ok(await until(() => dir.processes().length === 0, 3000));
});

Deno.test("a second SIGTERM during cleanup exits at once", async () => {
  const { dir, pid } = await started("hang");
  await using _ = dir;
  Deno.kill(pid, "SIGTERM");
  assert.ok(await until(() => dir.events().includes("hanging start"), 2000));
  Deno.kill(pid, "SIGTERM");
  assert.ok(await PidFile.waitForRelease(dir.pidFile, { timeout: 3000 }));
  assert.match(dir.output(), /SIGTERM during shutdown: exiting at once/);
  // It exited on the second signal, not at the deadline.
  assert.doesNotMatch(dir.output(), /shutdown deadline of 1000 ms passed/);
});

Deno.test("SIGINT too: a cleanup that throws is logged and the others still run", async () => {
  const { dir, pid } = await started("fail-cleanup");
  await using _ = dir;
  await stopWith(pid, dir.pidFile, 5000, "SIGINT");
  assert.deepEqual(dir.events(), ["ready", "cleanup-2 start", "cleanup-1 start", "cleanup-1 end"]);
  assert.match(dir.output(), /SIGINT: stopping/);
  assert.match(dir.output(), /cleanup handler failed: cleanup-2 broke/);
});

Deno.test("SIGHUP runs the reload handlers and the service keeps running", async () => {
  const { dir, pid } = await started("ready");
  await using _ = dir;
  Deno.kill(pid, "SIGHUP");
  assert.ok(await until(() => dir.events().filter((e) => e === "reload").length === 1, 3000));
  Deno.kill(pid, "SIGHUP");
  assert.ok(await until(() => dir.events().filter((e) => e === "reload").length === 2, 3000));
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(await PidFile.probe(dir.pidFile), { state: "running", pid });
  assert.deepEqual(dir.processes(), [pid]);
  await stopWith(pid, dir.pidFile, 5000);
  assert.deepEqual(dir.events().slice(-4), [
    "cleanup-2 start",
    "cleanup-2 end",
    "cleanup-1 start",
    "cleanup-1 end",
  ]);
});

Deno.test("Daemon.stop() runs the cleanups and releases the lock like SIGTERM", async () => {
  const { dir } = await started("self-stop");
  await using _ = dir;
  assert.ok(await PidFile.waitForRelease(dir.pidFile, { timeout: 3000 }));
  assert.deepEqual(dir.events(), [
    "ready",
    "cleanup-2 start",
    "cleanup-2 end",
    "cleanup-1 start",
    "cleanup-1 end",
  ]);
  assert.match(dir.output(), /stop requested: stopping/);
  assert.ok(await until(() => dir.processes().length === 0, 3000));
});

Deno.test("onShutdown() and onReload() return disposable registrations and check the timeout", () => {
  assert.throws(() => onShutdown(() => {}, { timeout: -1 }), RangeError);
  assert.throws(() => onShutdown(() => {}, { timeout: Infinity }), RangeError);
  const a = onShutdown(() => {});
  const b = onReload(() => {});
  a.unregister();
  a.unregister(); // idempotent
  b[Symbol.dispose]();
});
