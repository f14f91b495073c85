/**
 * The lock on etcd, over etcd's own JSON gateway (`/v3/...`) with `fetch`:
 * nothing to import, and every request bounded by a timeout. The lock is
 * etcd's concurrency mutex, the one `etcdctl lock NAME` takes, so a fleet
 * can mix both: a key `NAME/<lease id in hex>` created under a lease, and
 * the key with the lowest create revision under `NAME/` holds the lock. A
 * waiter watches the key just below its own until it is deleted. The
 * fencing token is the holder key's create revision, which only grows.
 *
 * @module
 */

import {
  type ClusterLockOptions,
  ClusterUnreachableError,
  type HeldLock,
  keepaliveIntervalMs,
  type LockBackend,
  LockHeldElsewhereError,
  type LockHolderReport,
  type LockTarget,
  SlotNotRecordedError,
  type SlotRecord,
} from "./lock.ts";

/** One key-value, as the gateway returns it (base64 bytes, int64 as strings). */
interface KeyValue {
  readonly key: string;
  readonly value?: string;
  readonly create_revision?: string;
  readonly mod_revision?: string;
  readonly lease?: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function b64(text: string): string {
  let bin = "";
  for (const byte of encoder.encode(text)) bin += String.fromCharCode(byte);
  return btoa(bin);
}

function unb64(data: string | undefined): string {
  if (!data) return "";
  const bin = atob(data);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return decoder.decode(bytes);
}

/** The first key after every key that starts with `prefix` (etcd's range end for a prefix). */
function prefixEnd(prefix: string): string {
  const bytes = encoder.encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = bytes.slice(0, i + 1);
      end[i]!++;
      let bin = "";
      for (const byte of end) bin += String.fromCharCode(byte);
      return btoa(bin);
    }
  }
  return btoa("\0");
}

/** A client for one lock URL: its endpoints, tried in order, each request bounded. */
class Gateway {
  readonly #endpoints: readonly string[];
  readonly #timeoutMs: number;
  readonly #client: Deno.HttpClient | undefined;
  /** The endpoint that answered last: tried first next time. */
  #preferred = 0;
  /** Requests of ours each endpoint has not answered yet. */
  readonly #waiting: number[];

  constructor(target: LockTarget, options: ClusterLockOptions) {
    this.#endpoints = target.endpoints;
    this.#waiting = target.endpoints.map(() => 0);
    this.#timeoutMs = options.timeoutMs;
    this.#client = options.tls ? makeClient(options.tls) : undefined;
  }

  /**
   * POST a request to the first endpoint that answers, starting with the
   * one that answered last. With `spread`, endpoints that have a request
   * of ours still waiting go last: one that froze, or is cut off, holds
   * those until the timeout, and a keepalive must not queue behind them.
   *
   * @throws {ClusterUnreachableError} when none does, naming each failure
   */
  async call<T>(path: string, body: unknown, signal?: AbortSignal, spread = false): Promise<T> {
    const failures: string[] = [];
    const n = this.#endpoints.length;
    const order = Array.from({ length: n }, (_, i) => (this.#preferred + i) % n);
    if (spread) order.sort((a, b) => Number(this.#waiting[a]! > 0) - Number(this.#waiting[b]! > 0));
    for (const at of order) {
      const endpoint = this.#endpoints[at]!;
      this.#waiting[at]!++;
      try {
        const response = await fetch(`${endpoint}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
          signal: anySignal(AbortSignal.timeout(this.#timeoutMs), signal),
          ...(this.#client ? { client: this.#client } : {}),
        });
        const text = await response.text();
        if (!response.ok) {
          failures.push(`${endpoint}: ${response.status} ${errorText(text)}`);
          continue;
        }
        this.#preferred = at;
        // A stream endpoint answers one JSON object per line: the first is the answer.
        const first = text.split("\n").find((l) => l.trim() !== "") ?? "{}";
        const parsed = JSON.parse(first) as { result?: T; error?: { message?: string } } & T;
        if (parsed.error) {
          failures.push(`${endpoint}: ${parsed.error.message ?? "error"}`);
          continue;
        }
        return (parsed.result ?? parsed) as T;
      } catch (err) {
        if (signal?.aborted) throw err;
        failures.push(`${endpoint}: ${describeFetchError(err, this.#timeoutMs)}`);
      } finally {
        this.#waiting[at]!--;
      }
    }
    throw new ClusterUnreachableError(`cannot reach etcd: ${failures.join("; ")}`);
  }

  /**
   * Wait until `key` is deleted (or the watch breaks, or `signal` aborts),
   * watching from `revision`.
   *
   * @returns true when a delete was seen; false when the watch ended otherwise
   */
  async awaitDelete(key: string, revision: number, signal: AbortSignal): Promise<boolean> {
    for (let i = 0; i < this.#endpoints.length; i++) {
      const endpoint = this.#endpoints[(this.#preferred + i) % this.#endpoints.length]!;
      let response: Response;
      try {
        response = await fetch(`${endpoint}/v3/watch`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ create_request: { key: b64(key), start_revision: revision } }),
          signal,
          ...(this.#client ? { client: this.#client } : {}),
        });
      } catch {
        if (signal.aborted) return false;
        continue;
      }
      if (!response.ok || !response.body) {
        await response.body?.cancel();
        continue;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = "";
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return false;
          pending += value;
          let nl;
          while ((nl = pending.indexOf("\n")) >= 0) {
            const line = pending.slice(0, nl).trim();
            pending = pending.slice(nl + 1);
            if (line === "") continue;
            const msg = JSON.parse(line) as {
              result?: { events?: { type?: string }[]; canceled?: boolean };
            };
            if (msg.result?.events?.some((e) => e.type === "DELETE")) return true;
            if (msg.result?.canceled) return false;
          }
        }
      } catch {
        return false;
      } finally {
        reader.cancel().catch(() => {});
      }
    }
    return false;
  }

  /** How many endpoints there are. */
  get endpoints(): number {
    return this.#endpoints.length;
  }

  close(): void {
    this.#client?.close();
  }
}

function makeClient(tls: NonNullable<ClusterLockOptions["tls"]>): Deno.HttpClient {
  const read = (path: string | undefined) =>
    path === undefined ? undefined : Deno.readTextFileSync(path);
  const caCert = read(tls.cacert);
  const cert = read(tls.cert);
  const key = read(tls.key);
  return Deno.createHttpClient({
    ...(caCert ? { caCerts: [caCert] } : {}),
    ...(cert && key ? { cert, key } : {}),
  });
}

function anySignal(a: AbortSignal, b: AbortSignal | undefined): AbortSignal {
  return b ? AbortSignal.any([a, b]) : a;
}

function errorText(text: string): string {
  try {
    const parsed = JSON.parse(text) as { message?: string; error?: string };
    return parsed.message ?? parsed.error ?? text.trim().slice(0, 200);
  } catch {
    return text.trim().slice(0, 200);
  }
}

function describeFetchError(err: unknown, timeoutMs: number): string {
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return `no answer within ${timeoutMs / 1000} s`;
  }
  // fetch says only "fetch failed": the reason (refused, a certificate, DNS) is in its cause.
  let reason = err;
  while (reason instanceof Error && reason.cause instanceof Error) reason = reason.cause;
  const message = reason instanceof Error ? reason.message : String(reason);
  return message
    .replace(/^error sending request .*?\): /, "")
    .replace(/^client error \(\w+\): /, "")
    .slice(0, 200);
}

/** The holder's value: host and pid, so a contender can name it. */
function holderValue(holder: ClusterLockOptions["holder"]): string {
  return JSON.stringify({ host: holder.host, pid: holder.pid });
}

function parseHolder(value: string): { host?: string; pid?: number } {
  try {
    const v = JSON.parse(value) as { host?: unknown; pid?: unknown };
    return {
      ...(typeof v.host === "string" ? { host: v.host } : {}),
      ...(typeof v.pid === "number" ? { pid: v.pid } : {}),
    };
  } catch {
    return {};
  }
}

/** The range request for the oldest key under the prefix (the holder). */
function ownerRange(prefix: string) {
  return {
    key: b64(prefix),
    range_end: prefixEnd(prefix),
    sort_order: "ASCEND",
    sort_target: "CREATE",
    limit: 1,
  };
}

interface TxnResponse {
  readonly header?: { readonly revision?: string };
  readonly succeeded?: boolean;
  readonly responses?: {
    readonly response_range?: { readonly kvs?: KeyValue[] };
  }[];
}

/**
 * Where a name's slot records live: keys that start with `/`, which no lock's
 * prefix (`NAME/`, NAME without `/` and not empty) covers, so a record is
 * never taken for a contender of any lock.
 */
function slotPrefix(name: string): string {
  return `/singleton-run/slots/${name}/`;
}

/** A slot's key: its number padded to 20 digits, so keys sort as numbers. */
function slotKey(name: string, slot: number): string {
  return `${slotPrefix(name)}${String(slot).padStart(20, "0")}`;
}

/**
 * How many slots' records are kept: older ones are deleted as a new one is
 * written (etcd keeps every key in memory), and a slot older than the latest
 * record by more than this counts as done.
 */
const SLOTS_KEPT = 1000;

/** A slot record from its key-value. */
function slotOf(kv: KeyValue | undefined): SlotRecord | undefined {
  if (!kv) return undefined;
  const key = unb64(kv.key);
  const slot = Number(key.slice(key.lastIndexOf("/") + 1));
  try {
    const v = JSON.parse(unb64(kv.value)) as { token?: unknown; host?: unknown; doneAt?: unknown };
    return {
      slot,
      token: String(v.token ?? ""),
      host: String(v.host ?? ""),
      doneAt: String(v.doneAt ?? ""),
    };
  } catch {
    return { slot, token: "", host: "", doneAt: "" };
  }
}

/** The range request for the latest slot record of a name. */
function lastSlotRange(name: string) {
  return {
    key: b64(slotPrefix(name)),
    range_end: prefixEnd(slotPrefix(name)),
    sort_order: "DESCEND",
    sort_target: "KEY",
    limit: 1,
  };
}

interface RangeResponse {
  readonly header?: { readonly revision?: string };
  readonly kvs?: KeyValue[];
  readonly count?: string;
}

/** Take the lock: the etcd mutex, waiting as asked. */
async function acquire(target: LockTarget, options: ClusterLockOptions): Promise<HeldLock> {
  const gw = new Gateway(target, options);
  const prefix = `${target.name}/`;
  let leaseId: string | undefined;
  const revoke = async () => {
    if (leaseId === undefined) return;
    await gw.call("/v3/lease/revoke", { ID: leaseId }).catch(() => {});
  };
  try {
    const ttlSeconds = Math.max(1, Math.ceil(options.ttlMs / 1000));
    const grantSent = performance.now();
    const grant = await gw.call<{ ID?: string; TTL?: string }>("/v3/lease/grant", {
      TTL: ttlSeconds,
    });
    leaseId = grant.ID;
    if (!leaseId) throw new ClusterUnreachableError("etcd granted no lease");
    const grantedMs = Number(grant.TTL ?? ttlSeconds) * 1000;
    const myKey = `${prefix}${BigInt(leaseId).toString(16)}`;
    const txn = await gw.call<TxnResponse>("/v3/kv/txn", {
      compare: [{ key: b64(myKey), target: "CREATE", result: "EQUAL", create_revision: "0" }],
      success: [
        {
          request_put: { key: b64(myKey), value: b64(holderValue(options.holder)), lease: leaseId },
        },
        { request_range: ownerRange(prefix) },
      ],
      failure: [{ request_range: { key: b64(myKey) } }, { request_range: ownerRange(prefix) }],
    });
    const myRev = txn.succeeded
      ? Number(txn.header?.revision)
      : Number(txn.responses?.[0]?.response_range?.kvs?.[0]?.create_revision);
    let owner = txn.responses?.[1]?.response_range?.kvs?.[0];
    const waitUntil = options.waitMs === "forever" ? Infinity : performance.now() + options.waitMs;
    let deadline = grantSent + grantedMs;
    // The lease must outlive a long wait: keep it alive while waiting.
    const keepWaiting = setInterval(() => {
      const sent = performance.now();
      gw.call<{ TTL?: string }>("/v3/lease/keepalive", { ID: leaseId }).then((r) => {
        if (Number(r.TTL ?? 0) > 0) deadline = sent + Number(r.TTL) * 1000;
      }).catch(() => {});
    }, keepaliveIntervalMs(grantedMs));
    try {
      while (Number(owner?.create_revision) !== myRev) {
        if (!owner) break; // our own key is gone: the lease expired meanwhile
        if (performance.now() >= waitUntil) {
          const who = parseHolder(unb64(owner.value));
          throw new LockHeldElsewhereError(unb64(owner.key), who.host, who.pid);
        }
        // Wait for the key just below ours to go (etcd's waitDeletes), then look again.
        const below = await gw.call<RangeResponse>("/v3/kv/range", {
          ...ownerRange(prefix),
          sort_order: "DESCEND",
          max_create_revision: String(myRev - 1),
        });
        const last = below.kvs?.[0];
        if (last) {
          const remaining = waitUntil - performance.now();
          const stop = AbortSignal.any([
            ...(Number.isFinite(remaining) ? [AbortSignal.timeout(Math.max(1, remaining))] : []),
            ...(options.signal ? [options.signal] : []),
            AbortSignal.timeout(keepaliveIntervalMs(grantedMs)),
          ]);
          await gw.awaitDelete(unb64(last.key), Number(below.header?.revision) + 1, stop);
          if (options.signal?.aborted) throw new Error("interrupted while waiting for the lock");
        }
        const now = await gw.call<RangeResponse>("/v3/kv/range", ownerRange(prefix));
        owner = now.kvs?.[0];
        const mine = await gw.call<RangeResponse>("/v3/kv/range", { key: b64(myKey) });
        if (!mine.kvs?.length) {
          throw new ClusterUnreachableError("the lock's lease expired while waiting for it");
        }
      }
    } finally {
      clearInterval(keepWaiting);
    }
    if (Number(owner?.create_revision) !== myRev) {
      throw new ClusterUnreachableError("the lock's key vanished while it was taken");
    }
    const held = new EtcdLock(
      gw,
      target,
      leaseId,
      myKey,
      myRev,
      grantedMs,
      deadline,
      options.timeoutMs,
    );
    leaseId = undefined; // the held lock revokes it from now on
    return held;
  } catch (err) {
    await revoke();
    gw.close();
    throw err;
  }
}

/** The lock, held: keeps the lease alive and says when it is lost. */
class EtcdLock implements HeldLock {
  readonly url: string;
  readonly key: string;
  readonly token: string;
  readonly ttlMs: number;
  readonly lost: Promise<string>;
  readonly #gw: Gateway;
  readonly #leaseId: string;
  #deadline: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lose: (why: string) => void = () => {};
  #released = false;
  /** Keepalives sent and not yet answered (or failed). */
  #inFlight = 0;
  /** Cuts the keepalives still waiting when the lock is released. */
  readonly #stopped = new AbortController();
  readonly #timeoutMs: number;
  readonly #name: string;

  constructor(
    gw: Gateway,
    target: LockTarget,
    leaseId: string,
    key: string,
    revision: number,
    ttlMs: number,
    deadline: number,
    timeoutMs: number,
  ) {
    this.#gw = gw;
    this.#timeoutMs = timeoutMs;
    this.#name = target.name;
    this.url = target.url;
    this.key = key;
    this.token = String(revision);
    this.ttlMs = ttlMs;
    this.#leaseId = leaseId;
    this.#deadline = deadline;
    this.lost = new Promise((resolve) => {
      this.#lose = (why) => {
        this.#stopTimer();
        resolve(why);
        this.#lose = () => {};
      };
    });
    this.#timer = setInterval(() => this.#keepalive(), keepaliveIntervalMs(ttlMs));
  }

  env(): Record<string, string> {
    return {
      SINGLETON_RUN_LOCK_URL: this.url,
      SINGLETON_RUN_LOCK_KEY: this.key,
      SINGLETON_RUN_FENCING_TOKEN: this.token,
      ETCD_LOCK_KEY: this.key,
      ETCD_LOCK_REV: this.token,
    };
  }

  deadline(): number {
    return this.#deadline;
  }

  /** One keepalive: the deadline moves to its send time + the TTL granted, once answered. */
  async #keepalive(): Promise<void> {
    // One that has not been answered yet (a member that froze or is cut off
    // holds it until the timeout) does not hold back the next, which goes to
    // another member. At most one per endpoint at a time.
    if (this.#released || this.#inFlight >= this.#gw.endpoints) return;
    this.#inFlight++;
    const sent = performance.now();
    // Not answered within half an interval: the member froze or is cut off, and
    // the next keepalive goes to another member now, not at the next tick. With
    // the shortest TTL allowed, the fence acts two intervals after the last
    // answer, and a keepalive that waited for the tick would race it.
    const hedge = setTimeout(() => this.#keepalive(), keepaliveIntervalMs(this.ttlMs) / 2);
    try {
      const r = await this.#gw.call<{ TTL?: string }>(
        "/v3/lease/keepalive",
        { ID: this.#leaseId },
        this.#stopped.signal,
        true,
      );
      clearTimeout(hedge);
      const ttl = Number(r.TTL ?? 0);
      if (!(ttl > 0)) return this.#lose("the lease is gone (it expired or was revoked)");
      this.#deadline = Math.max(this.#deadline, sent + ttl * 1000);
      const mine = await this.#gw.call<RangeResponse>(
        "/v3/kv/range",
        { key: b64(this.key) },
        this.#stopped.signal,
        true,
      );
      if (!mine.kvs?.length) this.#lose("the lock's key was deleted");
    } catch {
      // No answer: the deadline stays where it was, and the fence acts on it.
    } finally {
      clearTimeout(hedge);
      this.#inFlight--;
    }
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async slotRecord(slot: number): Promise<SlotRecord | undefined> {
    const r = await this.#gw.call<TxnResponse>("/v3/kv/txn", {
      compare: [],
      success: [
        { request_range: { key: b64(slotKey(this.#name, slot)) } },
        { request_range: lastSlotRange(this.#name) },
      ],
    });
    const found = slotOf(r.responses?.[0]?.response_range?.kvs?.[0]);
    if (found) return found;
    const last = slotOf(r.responses?.[1]?.response_range?.kvs?.[0]);
    // Too old to have its record kept: it counts as done, and the latest record is the answer.
    return last && slot <= last.slot - SLOTS_KEPT ? last : undefined;
  }

  async recordSlot(slot: number, host: string): Promise<void> {
    const key = slotKey(this.#name, slot);
    const value = JSON.stringify({ token: this.token, host, doneAt: new Date().toISOString() });
    const prune = slot > SLOTS_KEPT
      ? [{
        request_delete_range: {
          key: b64(slotPrefix(this.#name)),
          range_end: b64(slotKey(this.#name, slot - SLOTS_KEPT)),
        },
      }]
      : [];
    let r: TxnResponse;
    try {
      r = await this.#gw.call<TxnResponse>("/v3/kv/txn", {
        // Fenced: only while this holder's key is still there, as it was created.
        compare: [
          { key: b64(this.key), target: "CREATE", result: "EQUAL", create_revision: this.token },
          { key: b64(key), target: "CREATE", result: "EQUAL", create_revision: "0" },
        ],
        success: [{ request_put: { key: b64(key), value: b64(value) } }, ...prune],
        failure: [{ request_range: { key: b64(this.key) } }, { request_range: { key: b64(key) } }],
      });
    } catch (err) {
      throw new SlotNotRecordedError((err as Error).message);
    }
    if (r.succeeded) return;
    const mine = r.responses?.[0]?.response_range?.kvs?.[0];
    const other = slotOf(r.responses?.[1]?.response_range?.kvs?.[0]);
    if (other) {
      throw new SlotNotRecordedError(
        `it was recorded already, by token ${other.token} on ${other.host}`,
      );
    }
    throw new SlotNotRecordedError(
      mine
        ? `the lock's key ${this.key} is another holder's now`
        : `the lock was lost (its key ${this.key} is gone)`,
    );
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    this.#stopTimer();
    this.#stopped.abort();
    this.#lose("released");
    // One timeout in all, whatever the number of endpoints: a lease nobody revokes expires anyway.
    await withinMs(
      this.#gw.call("/v3/lease/revoke", { ID: this.#leaseId }).catch(() => {}),
      this.#timeoutMs,
    );
    this.#gw.close();
  }
}

/** Who holds the lock now. */
async function holder(target: LockTarget, options: ClusterLockOptions): Promise<LockHolderReport> {
  const gw = new Gateway(target, options);
  try {
    const r = await gw.call<RangeResponse>("/v3/kv/range", ownerRange(`${target.name}/`));
    const owner = r.kvs?.[0];
    if (!owner) return { state: "free" };
    const who = parseHolder(unb64(owner.value));
    let ttlLeftMs: number | undefined;
    if (owner.lease) {
      const t = await gw.call<{ TTL?: string }>("/v3/lease/timetolive", { ID: owner.lease })
        .catch(() => undefined);
      if (t && Number(t.TTL) >= 0) ttlLeftMs = Number(t.TTL) * 1000;
    }
    return {
      state: "held",
      key: unb64(owner.key),
      token: String(owner.create_revision),
      ...who,
      ...(ttlLeftMs === undefined ? {} : { ttlLeftMs }),
    };
  } finally {
    gw.close();
  }
}

/** Wait for `work`, at most `ms`. */
async function withinMs(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([work, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** The latest slot recorded for a name. */
async function lastSlot(
  target: LockTarget,
  options: ClusterLockOptions,
): Promise<SlotRecord | undefined> {
  const gw = new Gateway(target, options);
  try {
    const r = await gw.call<RangeResponse>("/v3/kv/range", lastSlotRange(target.name));
    return slotOf(r.kvs?.[0]);
  } finally {
    gw.close();
  }
}

/** The etcd backend. */
export const etcdBackend: LockBackend = { acquire, holder, lastSlot };
