/**
 * The cluster lock's pieces without a cluster: the lock URL, the TTL check,
 * the fencing clock on a fake clock, and the etcd client's lease protocol
 * against a scripted JSON gateway (where a real etcd cannot be made to
 * answer late, or not at all, on cue).
 */

import assert from "node:assert/strict";
import { UsageError } from "../src/errors.ts";
import {
  checkTtl,
  ClusterUnreachableError,
  fenceMarginMs,
  LockHeldElsewhereError,
  parseLockUrl,
  redactUrl,
} from "../src/cluster/lock.ts";
import { Fence } from "../src/cluster/fence.ts";
import { etcdBackend } from "../src/cluster/etcd.ts";
import { freePort } from "../testing/cluster.ts";
import { staticallyLoaded } from "../testing/graph.ts";

Deno.test("start, run, restart and the supervisor and keeper stage load no cluster code without --lock", async () => {
  const paths = [
    "src/cli/commands/start.ts",
    "src/cli/commands/run.ts",
    "src/cli/commands/restart.ts",
    "src/cli/commands/status.ts",
    "src/supervisor/stage.ts",
  ];
  for (const entry of paths) {
    const loaded = await staticallyLoaded(entry);
    const cluster = loaded.filter((u) =>
      u.startsWith("src/cluster/") || u === "src/supervisor/fencing.ts" || u.includes("postgres")
    );
    assert.deepEqual(cluster, [], `${entry} loads cluster code statically`);
  }
});

Deno.test("parseLockUrl() reads etcd, etcds and postgres URLs", () => {
  const e = parseLockUrl("etcd://10.0.0.1:2379,node-2:2379,[::1]:2379/jobs.nightly%20run");
  assert.equal(e.backend, "etcd");
  assert.deepEqual(e.endpoints, [
    "http://10.0.0.1:2379",
    "http://node-2:2379",
    "http://[::1]:2379",
  ]);
  assert.equal(e.name, "jobs.nightly run");
  const s = parseLockUrl("etcds://a:2379/x");
  assert.deepEqual(s.endpoints, ["https://a:2379"]);
  assert.equal(parseLockUrl("postgres://app@my_db,db-2:5433/main?name=x").backend, "postgres");
  const p = parseLockUrl("postgres://app@db:5432/main?name=import&sslmode=require");
  assert.equal(p.backend, "postgres");
  assert.equal(p.name, "import");
  assert.deepEqual(p.endpoints, ["postgres://app@db:5432/main?sslmode=require"]);
});

Deno.test("parseLockUrl() refuses a password in the URL without showing it; etcd takes no user", () => {
  const cases: [string, string, RegExp][] = [
    ["postgres://app:s3cret@db/main?name=x", "postgres://app:***@db/main?name=x", /PGPASSWORD/],
    ["postgres://app:s3/cr@et@db/main?name=x", "postgres://app:***@db/main?name=x", /./],
    ["etcd://root:s3cret@a:2379/x", "etcd://root:***@a:2379/x", /takes no USER/],
    ["etcd://root@a:2379/x", "etcd://root@a:2379/x", /takes no USER/],
  ];
  for (const [url, shown, why] of cases) {
    assert.throws(() => parseLockUrl(url), (err: unknown) => {
      assert.ok(err instanceof UsageError, `${url}: ${err}`);
      assert.ok(err.message.startsWith(`bad --lock ${JSON.stringify(shown)}: `), err.message);
      assert.match(err.message, why);
      assert.ok(!/s3|cr|et@/.test(err.message.replace(shown, "")), err.message);
      return true;
    });
  }
  assert.equal(redactUrl("postgres://app:pw@db/x"), "postgres://app:***@db/x");
  assert.equal(redactUrl("etcd://a:2379/x"), "etcd://a:2379/x");
});

Deno.test("parseLockUrl() refuses a bad URL with one line naming the option and what is wrong", () => {
  const cases: [string, RegExp][] = [
    ["etcd://a:2379", /no lock NAME/],
    ["etcd://a:2379/", /no lock NAME/],
    ["etcd://a:2379/x/", /no lock NAME/],
    ["etcd:///x", /no HOST:PORT/],
    ["etcd://a/x", /"a" is not HOST:PORT/],
    ["etcd://a:2379,,b:2379/x", /"" is not HOST:PORT/],
    ["etcd://a:70000/x", /port 70000 is out of range/],
    ["etcd://a:2379/x?y=1", /takes no query/],
    ["postgres://u@db:5432/main", /no \?name=NAME/],
    ["postgres://u@db:5432/main?name=", /no \?name=NAME/],
    ["etcd://a:2379/x/y", /the lock NAME "x\/y" holds "\/"/],
    ["etcd://a:2379/%zz", /not valid percent-encoding/],
    ["postgres://u@db:5432:1/main?name=x", /"db:5432:1" is not HOST\[:PORT\]/],
    ["consul://a:8500/x", /unknown scheme "consul"/],
    ["nightly", /expected etcd:\/\/HOST:PORT\/NAME/],
  ];
  for (const [url, why] of cases) {
    assert.throws(() => parseLockUrl(url), (err: unknown) => {
      assert.ok(err instanceof UsageError, `${url}: ${err}`);
      assert.ok(err.message.startsWith(`bad --lock ${JSON.stringify(url)}: `), err.message);
      assert.match(err.message, why);
      assert.ok(!err.message.includes("\n"), err.message);
      return true;
    });
  }
});

Deno.test("checkTtl() refuses a TTL that leaves no room for a keepalive, the grace and the margin", () => {
  checkTtl(10_000, 5000); // the defaults: 2 x 1 s + 5 s + 1 s <= 10 s
  checkTtl(8000, 5000);
  assert.throws(() => checkTtl(7000, 5000), UsageError);
  checkTtl(4000, 1000); // the tests' TTL with TERM/1/KILL/1
  assert.throws(() => checkTtl(3000, 1000), UsageError);
  assert.throws(() => checkTtl(3000, 5000), (err: unknown) => {
    assert.ok(err instanceof UsageError);
    assert.match(err.message, /^--lock-ttl 3 is too short: .* use at least (\d+)/);
    const least = Number(/use at least (\d+)/.exec(err.message)![1]);
    checkTtl(least * 1000, 5000); // the TTL it names works
    return true;
  });
});

/** A lock whose deadline the test moves, read by a fence on the test's clock. */
function fakeFence(deadline: number, ttlMs: number, graceMs: number) {
  const clock = { now: 0 };
  const lock = { deadline: () => deadline, ttlMs };
  const calls: string[] = [];
  const fence = new Fence(lock, {
    graceMs,
    onTerm: () => calls.push(`term@${clock.now}`),
    onKill: () => calls.push(`kill@${clock.now}`),
    now: () => clock.now,
  });
  return {
    fence,
    calls,
    at(ms: number) {
      clock.now = ms;
      return fence.check();
    },
    move(to: number) {
      deadline = to;
    },
  };
}

Deno.test("Fence terms at deadline - margin - grace and kills at deadline - margin", () => {
  const f = fakeFence(10_000, 10_000, 2000);
  assert.equal(fenceMarginMs(10_000), 1000);
  assert.equal(f.fence.killAt(), 9000);
  assert.equal(f.fence.termAt(), 7000);
  assert.equal(f.at(6999), "armed");
  assert.equal(f.at(7000), "termed");
  assert.equal(f.at(8000), "termed");
  assert.equal(f.at(9000), "killed");
  assert.equal(f.at(20_000), "killed");
  assert.deepEqual(f.calls, ["term@7000", "kill@9000"]);
});

Deno.test("Fence margin is 10% of a long TTL", () => {
  const f = fakeFence(60_000, 60_000, 5000);
  assert.equal(f.fence.killAt(), 54_000);
  assert.equal(f.fence.termAt(), 49_000);
});

Deno.test("Fence re-arms when an acknowledged keepalive moves the deadline", () => {
  const f = fakeFence(4000, 4000, 1000);
  assert.equal(f.at(1500), "armed");
  f.move(5500); // an ack: sent at 1500, TTL 4000
  assert.equal(f.at(2500), "armed", "the old term time is past, the new one is not");
  assert.equal(f.at(3499), "armed");
  assert.equal(f.at(3500), "termed");
  assert.equal(f.at(4500), "killed");
  assert.deepEqual(f.calls, ["term@3500", "kill@4500"]);
});

Deno.test("Fence kills at once, without a term first, when the keeper wakes past the kill time", () => {
  const f = fakeFence(4000, 4000, 1000);
  assert.equal(f.at(100), "armed");
  assert.equal(f.at(7000), "killed"); // SIGSTOPed from 100 to 7000
  assert.deepEqual(f.calls, ["kill@7000"]);
});

Deno.test("Fence does nothing once stopped", () => {
  const f = fakeFence(4000, 4000, 1000);
  f.fence.stop();
  assert.equal(f.at(10_000), "stopped");
  assert.deepEqual(f.calls, []);
});

Deno.test("Fence.start() checks on a tick with the real clock", async () => {
  const calls: string[] = [];
  const deadline = performance.now() + 1000 + 150; // kill 150 ms from now (margin 1 s)
  const fence = new Fence({ deadline: () => deadline, ttlMs: 4000 }, {
    graceMs: 100,
    onTerm: () => calls.push("term"),
    onKill: () => calls.push("kill"),
  });
  fence.start();
  try {
    const end = performance.now() + 2000;
    while (!calls.includes("kill") && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    fence.stop();
  }
  assert.deepEqual(calls, ["term", "kill"]);
});

// --- The etcd client against a scripted gateway -------------------------------------------

const b64 = (s: string) => btoa(s);

/** How the scripted gateway answers a keepalive. */
type KeepaliveMode = "ack" | "hang" | "gone";

/**
 * A fake etcd JSON gateway: one lease (ID 0x1da3, TTL 3), a key created at
 * revision 42 and, when `otherHolder`, an older key held by host h2, pid 77.
 */
class FakeGateway implements AsyncDisposable {
  readonly port = freePort();
  mode: KeepaliveMode = "ack";
  /** How long a keepalive answer is delayed, in ms. */
  ackDelayMs = 0;
  ownKey = true;
  readonly calls: string[] = [];
  /** performance.now() when each acknowledged keepalive was answered. */
  readonly acks: number[] = [];
  readonly #server: Deno.HttpServer;
  readonly #hanging = new Set<() => void>();

  constructor(readonly otherHolder = false) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: this.port, onListen: () => {} },
      (req) => this.#answer(req),
    );
  }

  get url(): string {
    return `etcd://127.0.0.1:${this.port}/job`;
  }

  async #answer(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    await req.body?.cancel();
    this.calls.push(path);
    const mine = { key: b64("job/1da3"), create_revision: "42", lease: "7587" };
    const other = {
      key: b64("job/aa"),
      create_revision: "10",
      value: b64(JSON.stringify({ host: "h2", pid: 77 })),
    };
    const owner = this.otherHolder ? other : mine;
    switch (path) {
      case "/v3/lease/grant":
        return Response.json({ ID: "7587", TTL: "3" });
      case "/v3/kv/txn":
        return Response.json({
          header: { revision: "42" },
          succeeded: true,
          responses: [{ response_put: {} }, { response_range: { kvs: [owner] } }],
        });
      case "/v3/kv/range":
        return Response.json({ header: { revision: "43" }, kvs: this.ownKey ? [mine] : [] });
      case "/v3/lease/keepalive": {
        if (this.mode === "hang") {
          await new Promise<void>((resolve) => this.#hanging.add(resolve));
          return new Response("gone", { status: 503 });
        }
        await new Promise((r) => setTimeout(r, this.ackDelayMs));
        const ttl = this.mode === "gone" ? "0" : "3";
        if (this.mode === "ack") this.acks.push(performance.now());
        return Response.json({ result: { ID: "7587", TTL: ttl } });
      }
      case "/v3/lease/revoke":
        return Response.json({});
      default:
        return new Response("no such path", { status: 404 });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const resolve of this.#hanging) resolve();
    await this.#server.shutdown();
  }
}

const OPTIONS = {
  ttlMs: 3000,
  waitMs: 0,
  timeoutMs: 500,
  holder: { host: "h1", pid: 11 },
} as const;

Deno.test("etcd: the deadline is the send time of the last acknowledged keepalive + the granted TTL", async () => {
  await using gw = new FakeGateway();
  gw.ackDelayMs = 300;
  const before = performance.now();
  const held = await etcdBackend.acquire(parseLockUrl(gw.url), OPTIONS);
  try {
    assert.equal(held.key, "job/1da3", "NAME/<lease id in hex>, as etcdctl lock names it");
    assert.equal(held.token, "42", "the key's create revision");
    assert.equal(held.env().ETCD_LOCK_REV, "42");
    assert.equal(held.ttlMs, 3000);
    assert.ok(held.deadline() >= before + 3000 && held.deadline() <= performance.now() + 3000);
    // A keepalive every second, each answered 300 ms after it was sent.
    await waitUntil(() => gw.acks.length >= 2, 4000);
    const ackedAt = gw.acks[gw.acks.length - 1]!;
    await new Promise((r) => setTimeout(r, 50));
    const d = held.deadline();
    assert.ok(
      d <= ackedAt - 250 + 3000 && d >= ackedAt - 450 + 3000,
      `deadline ${d - ackedAt} ms after the ack: it must count from the send, 300 ms before`,
    );
    // No answers now: the deadline stays where the last ack put it.
    gw.mode = "hang";
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(held.deadline(), d);
  } finally {
    gw.mode = "ack";
    await held.release();
  }
  assert.ok(gw.calls.includes("/v3/lease/revoke"));
});

Deno.test("etcd: lost resolves when a keepalive says the lease is gone", async () => {
  await using gw = new FakeGateway();
  const held = await etcdBackend.acquire(parseLockUrl(gw.url), OPTIONS);
  try {
    gw.mode = "gone";
    const why = await withinMs(held.lost, 3000);
    assert.match(why, /the lease is gone/);
  } finally {
    await held.release();
  }
});

Deno.test("etcd: lost resolves when the lock's key is deleted under a live lease", async () => {
  await using gw = new FakeGateway();
  const held = await etcdBackend.acquire(parseLockUrl(gw.url), OPTIONS);
  try {
    gw.ownKey = false;
    const why = await withinMs(held.lost, 3000);
    assert.match(why, /key was deleted/);
  } finally {
    await held.release();
  }
});

Deno.test("etcd: held elsewhere names the holder from its key's value and revokes the lease taken", async () => {
  await using gw = new FakeGateway(true);
  await assert.rejects(
    () => etcdBackend.acquire(parseLockUrl(gw.url), OPTIONS),
    (err: unknown) => {
      assert.ok(err instanceof LockHeldElsewhereError, String(err));
      assert.equal(err.host, "h2");
      assert.equal(err.pid, 77);
      assert.equal(err.key, "job/aa");
      assert.equal(err.message, "already running on h2 (pid 77): the lock is held there");
      return true;
    },
  );
  assert.equal(gw.calls.at(-1), "/v3/lease/revoke");
});

Deno.test("etcd: a keepalive stuck on a frozen member does not hold back the next, sent to another", async () => {
  await using frozen = new FakeGateway();
  await using live = new FakeGateway();
  frozen.mode = "hang"; // it granted the lease; its keepalives now go unanswered
  const url = `etcd://127.0.0.1:${frozen.port},127.0.0.1:${live.port}/job`;
  const held = await etcdBackend.acquire(parseLockUrl(url), { ...OPTIONS, timeoutMs: 5000 });
  const acquired = performance.now();
  try {
    const first = held.deadline();
    // One keepalive a second: the first waits on the frozen member (for up to 5 s); the next
    // goes to the live one.
    await waitUntil(() => live.acks.length > 0, 2800);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(held.deadline() > first + 1500, "the live member's answer moved the deadline");
    assert.ok(live.acks[0]! - acquired < 2500, `answered ${live.acks[0]! - acquired} ms in`);
  } finally {
    frozen.mode = "ack";
    await held.release();
  }
});

Deno.test("etcd: a dead endpoint is skipped; none answering is one line naming each", async () => {
  await using gw = new FakeGateway();
  const dead = freePort();
  const url = `etcd://127.0.0.1:${dead},127.0.0.1:${gw.port}/job`;
  const held = await etcdBackend.acquire(parseLockUrl(url), OPTIONS);
  await held.release();
  const dead2 = freePort();
  await assert.rejects(
    () =>
      etcdBackend.acquire(parseLockUrl(`etcd://127.0.0.1:${dead},127.0.0.1:${dead2}/j`), OPTIONS),
    (err: unknown) => {
      assert.ok(err instanceof ClusterUnreachableError, String(err));
      assert.match(
        err.message,
        new RegExp(
          `^cannot reach etcd: http://127.0.0.1:${dead}: tcp connect error: Connection refused.*; ` +
            `http://127.0.0.1:${dead2}: tcp connect error: Connection refused`,
        ),
      );
      assert.ok(!err.message.includes("\n"), err.message);
      return true;
    },
  );
});

async function waitUntil(check: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function withinMs<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
