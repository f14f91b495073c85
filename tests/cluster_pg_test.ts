/**
 * The PostgreSQL lock backend driven directly, against a throwaway server:
 * the key other tools compute in SQL, a session that ends under the holder,
 * the holder and its token as contenders and status read them.
 */

import assert from "node:assert/strict";
import { installed, Postgres } from "../testing/cluster.ts";
import { type ClusterLockOptions, parseLockUrl } from "../src/cluster/lock.ts";
import { advisoryKey, postgresBackend } from "../src/cluster/postgres.ts";
import { LockHeldElsewhereError } from "../src/cluster/lock.ts";

const PG = Postgres.bin() !== undefined && installed("setpriv");

function options(pid: number, ttlMs = 30_000): ClusterLockOptions {
  return { ttlMs, waitMs: 0, timeoutMs: 3000, holder: { host: "test-host", pid } };
}

/** One query over the server's own psql, as another tool would run it. */
async function psql(pg: Postgres, query: string): Promise<string> {
  const out = await new Deno.Command(`${Postgres.bin()}/psql`, {
    args: [
      "-h",
      "127.0.0.1",
      "-p",
      String(pg.port),
      "-U",
      "postgres",
      "-d",
      "postgres",
      "-XAtc",
      query,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test({
  name:
    "PostgreSQL: the documented SQL gives the same key, and the session that ends frees it and says lost at once",
  ignore: !PG,
  sanitizeResources: false,
  async fn() {
    await using pg = await Postgres.start();
    const target = parseLockUrl(pg.url("nightly-report"));
    const key = await advisoryKey("nightly-report");
    const inSql = await psql(
      pg,
      "select ('x' || left(encode(sha256('nightly-report'), 'hex'), 16))::bit(64)::bigint",
    );
    assert.equal(inSql, String(key));

    const held = await postgresBackend.acquire(target, options(101));
    try {
      assert.match(held.token, /^[0-9]+$/);
      assert.equal(held.env().SINGLETON_RUN_FENCING_TOKEN, held.token);
      // Another tool taking the lock by the documented key is refused.
      assert.equal(await psql(pg, `select pg_try_advisory_lock(${key})`), "f");
      const seen = await postgresBackend.holder(target, options(102));
      assert.deepEqual(seen, {
        state: "held",
        key: String(key),
        token: held.token,
        host: "test-host",
        pid: 101,
      });
      await assert.rejects(
        postgresBackend.acquire(target, options(103)),
        (err: unknown) =>
          err instanceof LockHeldElsewhereError && err.host === "test-host" && err.pid === 101,
      );

      // The session ends on the server: lost as the connection closes, not
      // at the next ping (which would reconnect and see another backend pid).
      const ended = performance.now();
      await psql(
        pg,
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name like 'singleton-run test-host 101 %'",
      );
      const why = await Promise.race([
        held.lost,
        new Promise<string>((r) => setTimeout(() => r("no news"), 3000)),
      ]);
      assert.match(why, /session ended/);
      assert.ok(performance.now() - ended < 3000);
    } finally {
      await held.release();
    }

    // The next holder's token is greater; the lock is free after a release.
    const next = await postgresBackend.acquire(target, options(104));
    const token = next.token;
    await next.release();
    assert.deepEqual(await postgresBackend.holder(target, options(105)), { state: "free" });
    const third = await postgresBackend.acquire(target, options(106));
    await third.release();
    assert.ok(BigInt(third.token) > BigInt(token));
  },
});
