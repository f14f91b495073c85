/**
 * The default readiness's look at a program (src/launch/serving.ts), on
 * real processes: a server that listens and waits for connections serves;
 * one that listens but is busy or asleep (redis loading its data, nginx
 * retrying a busy port) does not; nor does a program that waits for events
 * without listening. The clock is driven with chosen times, so nothing here
 * depends on how fast the machine is.
 */

import assert from "node:assert/strict";
import { ReadyClock, serving } from "../src/launch/serving.ts";
import { processTree } from "../src/ffi/proc.ts";
import { eventually, killQuietly, sleep } from "../testing/process.ts";

/** A Deno program from source text, with only the network permission. */
function program(source: string, via?: string[]): Deno.ChildProcess {
  const argv = [Deno.execPath(), "eval", source];
  const [cmd, ...args] = via ? [...via, ...argv] : argv;
  return new Deno.Command(cmd!, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
}

/** The program, killed with what it started (a shell's child) and reaped at the end of the scope. */
function running(source: string, via?: string[]): Deno.ChildProcess & AsyncDisposable {
  const child = program(source, via);
  return Object.assign(child, {
    async [Symbol.asyncDispose]() {
      for (const pid of processTree(child.pid)) killQuietly(pid, "SIGKILL");
      await child.status;
    },
  });
}

const LISTEN = `const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });`;
const SERVER = `${LISTEN} for await (const c of l) c.close();`;
/** Listens, then sleeps without waiting for events (futex), as a retry loop does. */
const ASLEEP = `${LISTEN} Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);`;
/** Listens, then computes, as a server loading its data does. */
const BUSY = `${LISTEN} for (;;) {}`;
/** Waits for events (a timer), listening on nothing. */
const IDLE = `setInterval(() => {}, 1000);`;

/** Look until the answer is `want`, or fail after 20 s (a slow start-up on a loaded machine). */
async function seen(pid: number, want: string): Promise<void> {
  await eventually(`serving(${pid}) to be ${want}`, () => serving(pid) === want, 20_000);
}

Deno.test("serving(): a server that listens and waits for connections is waiting", async () => {
  await using p = running(SERVER);
  await seen(p.pid, "waiting");
});

Deno.test("serving(): a listener that sleeps or computes is listening, never waiting", async () => {
  for (const source of [ASLEEP, BUSY]) {
    await using p = running(source);
    await seen(p.pid, "listening");
    for (let i = 0; i < 10; i++) {
      assert.equal(serving(p.pid), "listening");
      await sleep(20);
    }
  }
});

Deno.test("serving(): a program that waits for events on no listening socket serves nothing", async () => {
  await using p = running(IDLE);
  // Give it the time to start its event loop, then look: never more than none.
  await sleep(1000);
  for (let i = 0; i < 10; i++) {
    assert.equal(serving(p.pid), "none");
    await sleep(20);
  }
});

Deno.test("serving(): a server started by the main process counts (its descendants are looked at)", async () => {
  await using p = running(SERVER, ["sh", "-c", '"$@"; true', "sh"]);
  await seen(p.pid, "waiting");
});

Deno.test("ReadyClock: a server is ready once it has served for servingMs, long before afterMs", async () => {
  await using p = running(SERVER);
  await seen(p.pid, "waiting");
  const clock = new ReadyClock({ kind: "alive", afterMs: 60_000, servingMs: 1000 }, 0);
  assert.equal(clock.look(p.pid, 10), false, "the window opens");
  assert.equal(clock.look(p.pid, 500), false);
  assert.equal(clock.look(p.pid, 1010), true, "served 1000 ms");
  assert.equal(clock.look(p.pid, 1020), true, "and stays ready");
});

Deno.test("ReadyClock: a listener that never waits is ready only once alive afterMs", async () => {
  await using p = running(ASLEEP);
  await seen(p.pid, "listening");
  const clock = new ReadyClock({ kind: "alive", afterMs: 4000, servingMs: 1000 }, 0);
  for (const t of [10, 500, 1010, 2000, 3990]) assert.equal(clock.look(p.pid, t), false, `${t}`);
  assert.equal(clock.next, 4000, "the next look is the alive deadline");
  assert.equal(clock.look(p.pid, 4000), true);
});

Deno.test("ReadyClock: a server that stops listening starts its window again", async () => {
  const clock = new ReadyClock({ kind: "alive", afterMs: 60_000, servingMs: 1000 }, 0);
  let gone: number;
  {
    await using p = running(SERVER);
    await seen(p.pid, "waiting");
    assert.equal(clock.look(p.pid, 10), false);
    assert.equal(clock.look(p.pid, 900), false);
    gone = p.pid;
  }
  // Gone (its sockets with it): the window closes.
  assert.equal(serving(gone), "none");
  assert.equal(clock.look(gone, 950), false);
  await using again = running(SERVER);
  await seen(again.pid, "waiting");
  assert.equal(clock.look(again.pid, 1010), false, "1000 ms since the first look, but not served");
  assert.equal(clock.look(again.pid, 2009), false);
  assert.equal(clock.look(again.pid, 2010), true);
});

Deno.test("ReadyClock: without servingMs only the time alive counts, bounded by the ready timeout", () => {
  const plain = new ReadyClock({ kind: "alive", afterMs: 20 }, 100);
  assert.equal(plain.next, 120);
  assert.equal(plain.look(Deno.pid, 119), false);
  assert.equal(plain.look(Deno.pid, 120), true);
  const bounded = new ReadyClock({ kind: "alive", afterMs: 4000, servingMs: 1000 }, 0, 300);
  assert.equal(bounded.look(Deno.pid, 300), true, "alive as long as the timeout allows");
});
