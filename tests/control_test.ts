/**
 * The pure parts of the control layer: stop schedules, umasks, sd_notify
 * datagrams, and the guard lock's bound across two processes.
 */

import assert from "node:assert/strict";
import {
  GuardTimeoutError,
  NotRunningError,
  parseSchedule,
  parseUmask,
  run,
  signal,
  start,
  statusSync,
  stop,
  StopFailedError,
  UsageError,
} from "../src/control/mod.ts";
import { Guard } from "../src/control/guard.ts";
import { parseNotify } from "../src/launch/readiness.ts";
import { parseStopSchedule } from "../src/control/values.ts";

Deno.test("parseSchedule() reads start-stop-daemon's --retry syntax", () => {
  assert.deepEqual(parseSchedule("TERM/10/KILL/5"), {
    steps: [{ signal: 15 }, { waitMs: 10_000 }, { signal: 9 }, { waitMs: 5_000 }],
    repeatAt: -1,
  });
  assert.deepEqual(parseSchedule("7"), {
    steps: [{ signal: 15 }, { waitMs: 7_000 }, { signal: 9 }, { waitMs: 7_000 }],
    repeatAt: -1,
  });
  assert.deepEqual(parseSchedule("-HUP/0.5/SIGUSR1/1"), {
    steps: [{ signal: 1 }, { waitMs: 500 }, { signal: 10 }, { waitMs: 1000 }],
    repeatAt: -1,
  });
  assert.deepEqual(parseSchedule("TERM/5/forever/KILL/1").repeatAt, 2);
  assert.deepEqual(parseSchedule("TERM/forever"), {
    steps: [{ signal: 15 }],
    repeatAt: 1,
  });
});

Deno.test("parseSchedule() rejects malformed schedules with the reason", () => {
  for (
    const [text, why] of [
      ["", /it is empty/],
      ["TERM//5", /empty item/],
      ["5/TERM/5", /must start with a signal/],
      ["TERM/5/KILL", /must end with a timeout/],
      ["TERM/x", /"x" is neither a signal/],
      ["TERM/5/forever/KILL", /must end with a timeout/],
      ["TERM/forever/5/forever/1", /more than once/],
      ["TERM/-5", /must end with a timeout/],
    ] as const
  ) {
    assert.throws(() => parseSchedule(text), (e: unknown) => {
      assert.ok(e instanceof UsageError, String(e));
      assert.match(e.message, why);
      return true;
    }, text);
  }
});

Deno.test("parseSchedule() refuses a repeat without a wait, which would spin", () => {
  for (const text of ["forever/TERM/0", "TERM/5/forever/KILL/0", "TERM/1/forever/HUP/0/USR1/0"]) {
    assert.throws(
      () => parseSchedule(`${text.startsWith("forever") ? "TERM/" : ""}${text}`),
      (e: unknown) => {
        assert.ok(e instanceof UsageError, String(e));
        assert.match(e.message, /"forever" repeats without end, so it needs a wait longer than 0/);
        return true;
      },
      text,
    );
  }
  assert.equal(parseSchedule("TERM/0/forever/KILL/0.5").repeatAt, 2);
});

Deno.test("parseStopSchedule() names --stop-schedule once in its message", () => {
  assert.throws(() => parseStopSchedule("TERM/99999999", "--stop-schedule"), (e: unknown) => {
    assert.ok(e instanceof UsageError, String(e));
    assert.match(e.message, /^bad --stop-schedule "TERM\/99999999": a wait may be at most/);
    return true;
  });
  assert.throws(() => parseStopSchedule("TERM/99999999"), (e: unknown) => {
    assert.match((e as Error).message, /^bad --retry schedule "/);
    return true;
  });
});

Deno.test("parseUmask() takes octal digits only", () => {
  assert.equal(parseUmask("022"), 0o22);
  assert.equal(parseUmask("0o077"), 0o77);
  assert.equal(parseUmask("0"), 0);
  for (const bad of ["8", "0x22", "abc", "", "-1", "07777"]) {
    assert.throws(() => parseUmask(bad), UsageError, bad);
  }
});

Deno.test("parseNotify() reads READY, STATUS, MAINPID, ERRNO and EXTEND_TIMEOUT_USEC", () => {
  const state: { status?: string; mainPid?: number; errno?: number } = {};
  assert.deepEqual(parseNotify("STATUS=loading\nEXTEND_TIMEOUT_USEC=2500000", state), {
    ready: false,
    extendMs: 2500,
  });
  assert.deepEqual(parseNotify("READY=1\nSTATUS=up = fine\nMAINPID=42\nERRNO=2\n", state), {
    ready: true,
  });
  assert.deepEqual(state, { status: "up = fine", mainPid: 42, errno: 2 });
  assert.deepEqual(parseNotify("READY=0\nMAINPID=x\ngarbage", {}), { ready: false });
});

Deno.test("Guard.take() waits for another process's hold, bounded by its timeout", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/g.lock`;
  Deno.writeTextFileSync(path, "");
  const holder = new Deno.Command("flock", {
    args: [path, "sh", "-c", "echo locked; sleep 0.6"],
    stdout: "piped",
  }).spawn();
  try {
    const reader = holder.stdout.getReader();
    await reader.read();
    reader.releaseLock();
    const t0 = performance.now();
    await assert.rejects(Guard.take(path, 150), GuardTimeoutError);
    assert.ok(performance.now() - t0 >= 150);
    const guard = await Guard.take(path, 5000);
    assert.ok(performance.now() - t0 >= 500, "got it once flock(1) let go");
    guard.release();
    guard.release();
  } finally {
    try {
      holder.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await holder.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("run() refuses supervise with a user before it creates anything", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      run({ pidfile: `${dir}/p.pid`, command: ["true"], user: "nobody", supervise: {} }),
      UsageError,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("signal() with signal 0 resolves to the pid while the daemon runs, NotRunningError after", async () => {
  const dir = await Deno.makeTempDir();
  const pidfile = `${dir}/p.pid`;
  try {
    const { pid } = await start({ pidfile, command: ["sleep", "30"] });
    assert.equal(await signal({ pidfile, signal: 0 }), pid);
    assert.equal(statusSync(pidfile).state, "running", "signal 0 sent nothing");
    await stop({ pidfile });
    await assert.rejects(signal({ pidfile, signal: 0 }), NotRunningError);
  } finally {
    await stop({ pidfile }).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stop() follows its schedule: repeats after forever, and fails naming the holder when it runs out", async () => {
  const dir = await Deno.makeTempDir();
  const pidfile = `${dir}/p.pid`;
  // SIGTERM stays ignored across the exec, so only the later signals end it.
  const command = ["sh", "-c", `trap "" TERM; exec sleep 30`];
  try {
    const first = await start({ pidfile, command });
    await assert.rejects(
      stop({ pidfile, schedule: parseSchedule("TERM/0.1") }),
      (e: unknown) => {
        assert.ok(e instanceof StopFailedError, String(e));
        assert.match(e.message, new RegExp(`^pid ${first.pid} still holds .* \\(SIGTERM sent\\)$`));
        return true;
      },
    );
    const done = await stop({ pidfile, schedule: parseSchedule("TERM/0.1/forever/HUP/0.1") });
    assert.equal(done.pid, first.pid);
    assert.deepEqual(done.signals, [15, 1]);
    assert.equal(statusSync(pidfile).state, "stopped");
  } finally {
    await stop({ pidfile, schedule: parseSchedule("KILL/5") }).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
