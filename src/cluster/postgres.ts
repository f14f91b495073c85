/**
 * The lock on PostgreSQL: a session advisory lock (`pg_try_advisory_lock`)
 * on a 64-bit key made from the lock's name (the first 8 bytes of its
 * SHA-256, as a signed bigint, so any tool can take the same lock), over one
 * direct connection (not a transaction pooler: a session lock lives and dies
 * with its session).
 *
 * A session lock is freed when its session ends, and with default settings a
 * partitioned holder's session lives on for hours. So the session is opened
 * with `idle_session_timeout` = the TTL and short TCP keepalives and
 * `tcp_user_timeout`: a holder that stops pinging loses the session (and
 * the lock) within about the TTL, which is what the fence's deadline
 * assumes. A client library that reconnects silently would lose the lock
 * without an error, so every ping compares the backend's pid with the one
 * that took the lock. The fencing token is `pg_current_xact_id()`, read
 * after the lock is taken: transaction ids only grow.
 *
 * @module
 */

import { POSTGRES_CLIENT, type PostgresClient } from "../deps/postgres.ts";
import {
  type ClusterLockOptions,
  ClusterUnreachableError,
  type HeldLock,
  keepaliveIntervalMs,
  type LockBackend,
  LockHeldElsewhereError,
  type LockHolderReport,
  type LockTarget,
  redactUrl,
  SlotNotRecordedError,
  type SlotRecord,
} from "./lock.ts";
import { lockPassword } from "./password.ts";

/**
 * The advisory lock's key for a name: the first 8 bytes of SHA-256(name),
 * big-endian, as a signed 64-bit integer.
 *
 * @param name the lock's name
 * @returns the key
 */
export async function advisoryKey(name: string): Promise<bigint> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(name)),
  );
  return new DataView(digest.buffer).getBigInt64(0, false);
}

/** The key's two halves as pg_locks shows them (classid, objid). */
function lockIds(key: bigint): [string, string] {
  const unsigned = BigInt.asUintN(64, key);
  return [String(unsigned >> 32n), String(unsigned & 0xffffffffn)];
}

type Sql = ReturnType<PostgresClient>;

/** The client package, loaded on first use (see {@link POSTGRES_CLIENT}). */
let client: PostgresClient | undefined;

/**
 * One connection, settings that free a lost holder's session within the TTL.
 * The password is the file's or `PGPASSWORD`'s (never the URL's: refused).
 * `max_lifetime: null`: the package otherwise ends a connection after a
 * random 30 to 60 minutes and opens another on the next query, which frees a
 * session lock while the program still runs. `onClose` is called when the
 * session ends, whoever ended it.
 */
async function connect(
  target: LockTarget,
  options: ClusterLockOptions,
  onClose: () => void = () => {},
): Promise<Sql> {
  const pass = lockPassword(options.passwordFile);
  client ??= (await import(POSTGRES_CLIENT)).default as PostgresClient;
  const seconds = Math.max(1, Math.ceil(options.timeoutMs / 1000));
  return client(target.endpoints[0]!, {
    ...(pass === undefined ? {} : { pass }),
    max: 1,
    idle_timeout: 0,
    max_lifetime: null,
    onclose: () => onClose(),
    connect_timeout: seconds,
    onnotice: () => {},
    connection: {
      application_name: `singleton-run ${options.holder.host} ${options.holder.pid}`,
      idle_session_timeout: options.ttlMs,
      tcp_keepalives_idle: 1,
      tcp_keepalives_interval: 1,
      tcp_keepalives_count: 2,
      tcp_user_timeout: Math.max(1000, Math.floor(options.ttlMs / 2)),
    },
  });
}

/** A query bounded by the timeout; any failure is the cluster's. */
async function bounded<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${timeoutMs / 1000} s`)),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    if (err instanceof LockHeldElsewhereError) throw err;
    throw new ClusterUnreachableError(`${what}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** The holder of the advisory lock, from pg_locks and pg_stat_activity. */
async function findHolder(
  sql: Sql,
  key: bigint,
): Promise<{ host?: string; pid?: number; token?: string; backend: number } | undefined> {
  const [classid, objid] = lockIds(key);
  const rows = await sql`
    select a.pid, a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1
      and l.classid = ${classid}::oid and l.objid = ${objid}::oid
    limit 1`;
  const row = rows[0];
  if (!row) return undefined;
  const m = /^singleton-run (\S+) ([0-9]+)(?: ([0-9]+))?$/.exec(String(row.application_name ?? ""));
  return {
    backend: Number(row.pid),
    ...(m ? { host: m[1]!, pid: Number(m[2]) } : {}),
    ...(m?.[3] ? { token: m[3] } : {}),
  };
}

/** The table of slot records (`run --once-per`), in the session's first schema. */
export const SLOTS_TABLE = "singleton_run_slots";

/** The statement that makes it: what an administrator runs when the lock's role may not. */
export const SLOTS_DDL = `create table ${SLOTS_TABLE} (name text not null, slot bigint not null, ` +
  "token text not null, host text not null, done_at timestamptz not null default now(), " +
  "primary key (name, slot))";

/** Whether the table of slot records is there. */
async function slotsTableExists(sql: Sql): Promise<boolean> {
  const [row] = await sql`select to_regclass(${SLOTS_TABLE}) is not null as present`;
  return row?.present === true;
}

/**
 * Make the table of slot records when it is missing; a role that may not
 * (it needs CREATE on the schema) is told the statement to ask for.
 */
async function ensureSlotsTable(sql: Sql, timeoutMs: number): Promise<void> {
  if (await bounded(slotsTableExists(sql), timeoutMs, "cannot reach PostgreSQL")) return;
  try {
    await bounded(
      sql.unsafe(SLOTS_DDL.replace("create table", "create table if not exists")),
      timeoutMs,
      `cannot create table ${SLOTS_TABLE}`,
    );
  } catch (err) {
    throw new ClusterUnreachableError(
      `${(err as Error).message}; an administrator can make it: ${SLOTS_DDL}; ` +
        `grant select, insert on ${SLOTS_TABLE} to the lock's role`,
    );
  }
}

/** A slot record from a row. */
function slotRow(row: Record<string, unknown> | undefined): SlotRecord | undefined {
  if (!row) return undefined;
  const at = row.done_at;
  return {
    slot: Number(row.slot),
    token: String(row.token),
    host: String(row.host),
    doneAt: at instanceof Date ? at.toISOString() : String(at),
  };
}

async function acquire(target: LockTarget, options: ClusterLockOptions): Promise<HeldLock> {
  const key = await advisoryKey(target.name);
  let ended = false;
  let closed = (): void => {
    ended = true;
  };
  const sql = await connect(target, options, () => closed());
  try {
    const where = `PostgreSQL at ${redactUrl(target.endpoints[0]!)}`;
    const waitUntil = options.waitMs === "forever" ? Infinity : performance.now() + options.waitMs;
    for (;;) {
      const sent = performance.now();
      const [row] = await bounded(
        sql`select pg_try_advisory_lock(${String(key)}::bigint) as ok, pg_backend_pid() as pid`,
        options.timeoutMs,
        `cannot reach ${where}`,
      );
      if (row?.ok) {
        // The token, and the holder and token where contenders and status read
        // them, in one statement; the same backend pid shows it ran in the
        // session that holds the lock (the package reconnects silently).
        const label = `singleton-run ${options.holder.host} ${options.holder.pid} `;
        const [tx] = await bounded(
          sql`select pg_current_xact_id()::text as token, pg_backend_pid() as pid,
            set_config('application_name', ${label} || pg_current_xact_id()::text, false)`,
          options.timeoutMs,
          `cannot reach ${where}`,
        );
        if (Number(tx?.pid) !== Number(row.pid) || ended) {
          throw new ClusterUnreachableError(`${where}: the session ended as the lock was taken`);
        }
        const token = String(tx?.token);
        const lock = new PostgresLock(sql, target, key, token, Number(row.pid), options, sent);
        closed = () => lock.sessionEnded();
        return lock;
      }
      if (performance.now() >= waitUntil || options.signal?.aborted) {
        const who = await findHolder(sql, key).catch(() => undefined);
        throw new LockHeldElsewhereError(String(key), who?.host, who?.pid);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw err;
  }
}

/** The lock, held: pings the session and says when it is lost. */
class PostgresLock implements HeldLock {
  readonly url: string;
  readonly key: string;
  readonly token: string;
  readonly ttlMs: number;
  readonly lost: Promise<string>;
  readonly #sql: Sql;
  readonly #name: string;
  readonly #lockKey: bigint;
  readonly #backend: number;
  readonly #timeoutMs: number;
  #deadline: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lose: (why: string) => void = () => {};
  #released = false;
  #inFlight = false;

  constructor(
    sql: Sql,
    target: LockTarget,
    key: bigint,
    token: string,
    backend: number,
    options: ClusterLockOptions,
    sent: number,
  ) {
    this.#sql = sql;
    this.#name = target.name;
    this.url = target.url;
    this.key = String(key);
    this.#lockKey = key;
    this.token = token;
    this.ttlMs = options.ttlMs;
    this.#backend = backend;
    this.#timeoutMs = options.timeoutMs;
    this.#deadline = sent + options.ttlMs;
    this.lost = new Promise((resolve) => {
      this.#lose = (why) => {
        if (this.#timer !== undefined) clearInterval(this.#timer);
        this.#timer = undefined;
        resolve(why);
        this.#lose = () => {};
      };
    });
    this.#timer = setInterval(() => this.#ping(), keepaliveIntervalMs(options.ttlMs));
  }

  env(): Record<string, string> {
    return {
      SINGLETON_RUN_LOCK_URL: this.url,
      SINGLETON_RUN_LOCK_KEY: this.key,
      SINGLETON_RUN_FENCING_TOKEN: this.token,
    };
  }

  deadline(): number {
    return this.#deadline;
  }

  /** The connection closed (terminated, timed out, cut): the lock went with it. */
  sessionEnded(): void {
    if (!this.#released) this.#lose("the PostgreSQL session ended, and its lock with it");
  }

  async #ping(): Promise<void> {
    if (this.#inFlight || this.#released) return;
    this.#inFlight = true;
    const sent = performance.now();
    try {
      const [row] = await bounded(
        this.#sql`select pg_backend_pid() as pid`,
        this.#timeoutMs,
        "ping",
      );
      if (Number(row?.pid) !== this.#backend) {
        return this.#lose(
          "the connection to PostgreSQL was made again: the session's lock is gone",
        );
      }
      this.#deadline = Math.max(this.#deadline, sent + this.ttlMs);
    } catch {
      // No answer: the deadline stays, and the fence acts on it.
    } finally {
      this.#inFlight = false;
    }
  }

  async slotRecord(slot: number): Promise<SlotRecord | undefined> {
    await ensureSlotsTable(this.#sql, this.#timeoutMs);
    const rows = await bounded(
      this.#sql`select slot, token, host, done_at from singleton_run_slots
        where name = ${this.#name} and slot = ${slot}`,
      this.#timeoutMs,
      "cannot reach PostgreSQL",
    );
    return slotRow(rows[0]);
  }

  async recordSlot(slot: number, host: string): Promise<void> {
    const [classid, objid] = lockIds(this.#lockKey);
    let rows;
    try {
      // Fenced: written only by the session that holds the advisory lock, which this checks.
      rows = await bounded(
        this.#sql`insert into singleton_run_slots (name, slot, token, host)
          select ${this.#name}, ${slot}, ${this.token}, ${host}
          where pg_backend_pid() = ${this.#backend} and exists (
            select 1 from pg_locks where locktype = 'advisory' and granted
              and pid = pg_backend_pid() and classid = ${classid}::oid
              and objid = ${objid}::oid and objsubid = 1)
          returning slot`.catch((err: { code?: string }) => {
          if (err.code === "23505") return "recorded already";
          throw err;
        }),
        this.#timeoutMs,
        "no answer from PostgreSQL",
      );
    } catch (err) {
      throw new SlotNotRecordedError((err as Error).message);
    }
    if (rows === "recorded already") throw new SlotNotRecordedError("it was recorded already");
    if (rows.length !== 1) {
      throw new SlotNotRecordedError("the lock was lost (this session no longer holds it)");
    }
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    this.#lose("released");
    await bounded(
      this.#sql`select pg_advisory_unlock(${String(this.#lockKey)}::bigint)`,
      this.#timeoutMs,
      "unlock",
    ).catch(() => {});
    await this.#sql.end({ timeout: 1 }).catch(() => {});
  }
}

async function holder(target: LockTarget, options: ClusterLockOptions): Promise<LockHolderReport> {
  const key = await advisoryKey(target.name);
  const sql = await connect(target, options);
  try {
    const who = await bounded(findHolder(sql, key), options.timeoutMs, "cannot reach PostgreSQL");
    if (!who) return { state: "free" };
    return {
      state: "held",
      key: String(key),
      token: who.token ?? "",
      ...(who.host === undefined ? {} : { host: who.host }),
      ...(who.pid === undefined ? {} : { pid: who.pid }),
    };
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** The latest slot recorded for a name; none while the table is missing. */
async function lastSlot(
  target: LockTarget,
  options: ClusterLockOptions,
): Promise<SlotRecord | undefined> {
  const sql = await connect(target, options);
  try {
    return await bounded(
      (async () => {
        if (!await slotsTableExists(sql)) return undefined;
        const rows = await sql`select slot, token, host, done_at from singleton_run_slots
          where name = ${target.name} order by slot desc limit 1`;
        return slotRow(rows[0]);
      })(),
      options.timeoutMs,
      "cannot reach PostgreSQL",
    );
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** The PostgreSQL backend. */
export const postgresBackend: LockBackend = { acquire, holder, lastSlot };
