/**
 * The outer lock across hosts: what a backend (etcd, PostgreSQL) gives the
 * keeper, the lock URL, and the errors. The backends are loaded by a dynamic
 * import when a lock is asked for, and only the one asked for.
 *
 * The holder's guarantee rests on a deadline, not on news from the server:
 * `deadline()` is the local monotonic time at which the last acknowledged
 * keepalive was *sent*, plus the lease's TTL. The server cannot have let the
 * lease expire before it, so a program stopped before it is dead before
 * anyone else can be granted the lock (clocks run at the same rate; a paused
 * keeper is caught by the fence, which kills at once when the deadline has
 * passed). The fencing token covers the rest: a holder paused past its
 * lease can still act, and only the guarded resource, checking the token,
 * can refuse it.
 *
 * @module
 */

import { UsageError } from "../errors.ts";

/** A parsed lock URL. */
export interface LockTarget {
  /** The URL as given. */
  readonly url: string;
  /** Which backend. */
  readonly backend: "etcd" | "postgres";
  /** etcd: the endpoints, `http(s)://host:port`; PostgreSQL: the connection URL without `name`. */
  readonly endpoints: readonly string[];
  /** The lock's name (etcd: the key prefix; PostgreSQL: hashed into the advisory lock's key). */
  readonly name: string;
}

/** How to take and keep the lock. */
export interface ClusterLockOptions {
  /** The lease's time to live, in ms. */
  readonly ttlMs: number;
  /** How long to wait for a lock held elsewhere, in ms, or "forever". */
  readonly waitMs: number | "forever";
  /** The bound on every connect and request, in ms. */
  readonly timeoutMs: number;
  /** TLS files for `etcds://`. */
  readonly tls?: { readonly cacert?: string; readonly cert?: string; readonly key?: string };
  /** PostgreSQL: the file that holds the password (else `PGPASSWORD`). */
  readonly passwordFile?: string;
  /** Who holds it: written where other contenders read it. */
  readonly holder: { readonly host: string; readonly pid: number };
  /** Abort a wait for the lock. */
  readonly signal?: AbortSignal;
}

/** The lock, held. */
export interface HeldLock {
  /** The lock's URL. */
  readonly url: string;
  /** The key that holds it (etcd: `NAME/<lease hex>`; PostgreSQL: the advisory key). */
  readonly key: string;
  /** The fencing token, decimal: strictly greater for every later holder. */
  readonly token: string;
  /** The lease's time to live, in ms, as granted. */
  readonly ttlMs: number;
  /** What the program's environment gets. */
  env(): Record<string, string>;
  /** The `performance.now()` time by which the lease may have expired on the server. */
  deadline(): number;
  /** Resolves once, with one line, when the lock is known to be lost. */
  readonly lost: Promise<string>;
  /** Let go of the lock, bounded by the timeout; never throws. */
  release(): Promise<void>;
  /**
   * The record of a job's slot (`oncePerMs`), when its success was recorded.
   *
   * @param slot the slot
   * @throws {ClusterUnreachableError} when that cannot be told
   */
  slotRecord(slot: number): Promise<SlotRecord | undefined>;
  /**
   * Record a job's success in its slot, fenced by this lock's token: only
   * while the lock is still this holder's (etcd: a transaction that compares
   * the lock key's create revision; PostgreSQL: in the session that holds the
   * advisory lock, which it checks).
   *
   * @param slot the slot
   * @param host this host's name, for the record
   * @throws {SlotNotRecordedError} saying why it could not be recorded (or confirmed)
   */
  recordSlot(slot: number, host: string): Promise<void>;
}

/** A job's slot whose success was recorded (`run --once-per`). */
export interface SlotRecord {
  /** The slot: the multiple of the period, from the epoch, nearest the run's start. */
  readonly slot: number;
  /** The fencing token of the holder that recorded it. */
  readonly token: string;
  /** The host it ran on. */
  readonly host: string;
  /** When it was recorded (ISO 8601). */
  readonly doneAt: string;
}

/** A slot's success could not be recorded, or its record was not confirmed. */
export class SlotNotRecordedError extends Error {
  /** @param reason one line: why */
  constructor(reason: string) {
    super(reason);
    this.name = "SlotNotRecordedError";
  }
}

/** Who holds a lock, for `status --lock`. */
export type LockHolderReport =
  | {
    readonly state: "held";
    readonly key: string;
    readonly token: string;
    readonly host?: string;
    readonly pid?: number;
    readonly ttlLeftMs?: number;
  }
  | { readonly state: "free" };

/** One backend. */
export interface LockBackend {
  /**
   * Take the lock, waiting as the options say.
   *
   * @throws {LockHeldElsewhereError} when it is held elsewhere and the wait ran out
   * @throws {ClusterUnreachableError} when the cluster cannot be reached or has no quorum
   */
  acquire(target: LockTarget, options: ClusterLockOptions): Promise<HeldLock>;
  /**
   * Who holds the lock now.
   *
   * @throws {ClusterUnreachableError} when that cannot be told
   */
  holder(target: LockTarget, options: ClusterLockOptions): Promise<LockHolderReport>;
  /**
   * The latest slot recorded for this lock's name (`run --once-per`), if any.
   *
   * @throws {ClusterUnreachableError} when that cannot be told
   */
  lastSlot(target: LockTarget, options: ClusterLockOptions): Promise<SlotRecord | undefined>;
}

/** The lock is held by another host or process. */
export class LockHeldElsewhereError extends Error {
  /** The holder's host, when it said. */
  readonly host: string | undefined;
  /** The holder's pid, when it said. */
  readonly pid: number | undefined;
  /** The key that holds it. */
  readonly key: string;
  /**
   * @param key the holder's key
   * @param host its host, if known
   * @param pid its pid, if known
   */
  constructor(key: string, host?: string, pid?: number) {
    const who = host === undefined
      ? `key ${key}`
      : `${host}${pid === undefined ? "" : ` (pid ${pid})`}`;
    super(`already running on ${who}: the lock is held there`);
    this.name = "LockHeldElsewhereError";
    this.key = key;
    this.host = host;
    this.pid = pid;
  }
}

/** The cluster cannot be reached, or cannot answer (no quorum). */
export class ClusterUnreachableError extends Error {
  /** @param message one line naming what was tried */
  constructor(message: string) {
    super(message);
    this.name = "ClusterUnreachableError";
  }
}

/**
 * A URL with its password masked, for every message that quotes a lock URL
 * (`postgres://app:***@db/...`). Whatever lies between the first `:` after
 * `//` and the last `@` is masked, so a password holding `/`, `?` or `@`
 * (not percent-encoded) is masked whole too.
 *
 * @param text a URL, well formed or not
 * @returns the same text, the password replaced by `***`
 */
export function redactUrl(text: string): string {
  const start = text.indexOf("//");
  const at = text.lastIndexOf("@");
  if (start < 0 || at < start) return text;
  const colon = text.indexOf(":", start + 2);
  if (colon < 0 || colon > at || text.slice(start + 2, colon).includes("/")) return text;
  return `${text.slice(0, colon)}:***${text.slice(at)}`;
}

/**
 * Parse a lock URL: `etcd://HOST:PORT[,HOST:PORT...]/NAME`,
 * `etcds://...` (TLS), or `postgres://USER@HOST:PORT/DB?name=NAME` (also
 * `postgresql://`).
 *
 * A password in the URL is refused: the URL is in the command's argv, which
 * every user on the host can read (`ps`). PostgreSQL's comes from
 * `PGPASSWORD` or a password file instead; the etcd client takes no user. An
 * etcd NAME is percent-decoded and may not hold `/`: etcd's lock is the key
 * prefix `NAME/`, so a NAME with `/` would nest under another (holding `a/b`
 * would block `a`).
 *
 * @param text the URL
 * @param option the option's name, for the message
 * @returns the target
 * @throws {UsageError} for anything else; the message never shows a password
 */
export function parseLockUrl(text: string, option = "--lock"): LockTarget {
  const bad = (why: string) =>
    new UsageError(`bad ${option} ${JSON.stringify(redactUrl(text))}: ${why}`);
  const m = /^([a-z]+):\/\/([^/?#]*)(\/[^?#]*)?(\?[^#]*)?$/.exec(text);
  if (!m) throw bad("expected etcd://HOST:PORT/NAME or postgres://USER@HOST:PORT/DB?name=NAME");
  const [, scheme, whole = "", path = "", query = ""] = m;
  const at = whole.lastIndexOf("@");
  const userinfo = at < 0 ? undefined : whole.slice(0, at);
  const authority = whole.slice(at + 1);
  const etcd = scheme === "etcd" || scheme === "etcds";
  if (userinfo !== undefined && (etcd || userinfo.includes(":"))) {
    throw bad(
      etcd
        ? "etcd's client here takes no USER[:PASSWORD]@ (use etcds:// with a client certificate)"
        : "a password in the URL can be read by every user (ps); give it in PGPASSWORD or " +
          "--lock-password-file FILE",
    );
  }
  // A part of the URL is quoted only when nothing in the URL could be a password.
  const quoted = (part: string) =>
    redactUrl(text) === text ? JSON.stringify(part) : "the host part";
  const hostPorts = (portRequired: boolean) =>
    authority.split(",").map((hp) => {
      // etcd's port is required; PostgreSQL's host may be percent-encoded (a socket's
      // directory) or hold "_" (a container's service name).
      const [chars, port] = portRequired ? ["A-Za-z0-9.-", ":[0-9]{1,5}"] : [
        "A-Za-z0-9._%-",
        "(:[0-9]{1,5})?",
      ];
      if (!new RegExp(`^(\\[[0-9a-fA-F:.]+\\]|[${chars}]+)${port}$`).test(hp)) {
        throw bad(`${quoted(hp)} is not HOST${portRequired ? ":PORT" : "[:PORT]"}`);
      }
      const colon = hp.lastIndexOf(":");
      const number = hp.endsWith("]") || colon < 0 ? undefined : Number(hp.slice(colon + 1));
      if (number !== undefined && (number < 1 || number > 65535)) {
        throw bad(`port ${number} is out of range`);
      }
      return hp;
    });
  if (etcd) {
    if (authority === "") throw bad("no HOST:PORT");
    const endpoints = hostPorts(true).map((hp) =>
      `${scheme === "etcds" ? "https" : "http"}://${hp}`
    );
    const raw = path.replace(/^\//, "");
    if (raw === "" || raw.endsWith("/")) throw bad("no lock NAME after the hosts");
    if (query !== "") throw bad("an etcd lock URL takes no query");
    const name = percentDecoded(raw);
    if (name === undefined) {
      throw bad("the lock NAME is not valid percent-encoding (write % as %25)");
    }
    if (name.includes("/")) {
      throw bad(
        `the lock NAME ${JSON.stringify(name)} holds "/": on etcd a lock is the key prefix ` +
          `NAME/, so it would nest under another lock's; use another character`,
      );
    }
    return { url: text, backend: "etcd", endpoints, name };
  }
  if (scheme === "postgres" || scheme === "postgresql") {
    const params = new URLSearchParams(query.slice(1));
    const name = params.get("name");
    if (name === null || name === "") throw bad("no ?name=NAME for the lock");
    if (authority === "") throw bad("no HOST");
    hostPorts(false);
    params.delete("name");
    const rest = params.toString();
    return {
      url: text,
      backend: "postgres",
      endpoints: [`${scheme}://${whole}${path}${rest === "" ? "" : `?${rest}`}`],
      name,
    };
  }
  throw bad(`unknown scheme ${JSON.stringify(scheme)} (etcd, etcds, postgres)`);
}

/** `decodeURIComponent`, or undefined for a malformed `%` sequence. */
function percentDecoded(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/**
 * The backend for a target, loaded now.
 *
 * @param target the parsed URL
 * @returns the backend
 */
export async function backendFor(target: LockTarget): Promise<LockBackend> {
  if (target.backend === "etcd") return (await import("./etcd.ts")).etcdBackend;
  return (await import("./postgres.ts")).postgresBackend;
}

/**
 * The margin by which the program must be dead before the lease may
 * expire: max(1 s, 10% of the TTL).
 *
 * @param ttlMs the lease's TTL
 * @returns the margin, in ms
 */
export function fenceMarginMs(ttlMs: number): number {
  return Math.max(1000, ttlMs / 10);
}

/**
 * How often a keepalive is sent: every second, or a third of the TTL when
 * that is shorter. Often, so that one that goes unanswered (a member that
 * froze, a leader election) costs little of the time before the fence; a
 * keepalive still waiting does not hold back the next, which is sent to
 * another member.
 *
 * @param ttlMs the lease's TTL
 * @returns the interval, in ms
 */
export function keepaliveIntervalMs(ttlMs: number): number {
  return Math.max(200, Math.min(1000, Math.floor(ttlMs / 3)));
}

/** Whether a TTL leaves two keepalive intervals, the grace and the margin. */
function ttlFits(ttlMs: number, graceMs: number): boolean {
  return ttlMs - fenceMarginMs(ttlMs) - graceMs >= 2 * keepaliveIntervalMs(ttlMs);
}

/**
 * Refuse a TTL too short for two keepalive intervals, the program's grace
 * (SIGTERM to SIGKILL) and the margin: with less, a single keepalive left
 * unanswered (one etcd member frozen) would fence a healthy program.
 *
 * @param ttlMs the TTL
 * @param graceMs the time the program gets between SIGTERM and SIGKILL
 * @throws {UsageError} when it is too short, naming the smallest that works
 */
export function checkTtl(ttlMs: number, graceMs: number): void {
  if (ttlFits(ttlMs, graceMs)) return;
  let least = Math.ceil(ttlMs / 1000);
  while (!ttlFits(least * 1000, graceMs)) least++;
  throw new UsageError(
    `--lock-ttl ${ttlMs / 1000} is too short: the program must be stopped ` +
      `(${graceMs / 1000} s from SIGTERM to SIGKILL) at least ${
        fenceMarginMs(ttlMs) / 1000
      } s before the lease can expire, with room for two keepalives (one every ${
        keepaliveIntervalMs(ttlMs) / 1000
      } s); use at least ${least}, or a shorter --stop-schedule`,
  );
}
