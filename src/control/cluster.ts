/**
 * The control layer's side of a cluster lock: the checks a start makes
 * before anything is created, and `status --lock`. The cluster code is
 * loaded here, by a dynamic import, only when a lock is asked for.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { ids } from "../ffi/sys.ts";
import { checkPathTrusted } from "./trust.ts";
import { firstWaitMs, type Schedule } from "../launch/schedule.ts";
import type { ClusterLockSettings } from "../launch/spec.ts";
import { DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_LOCK_TTL_MS } from "../supervisor/defaults.ts";

/**
 * Check a cluster lock's settings before anything is created: the URL, the
 * TLS and password files, and a TTL long enough for a keepalive interval,
 * the program's grace between SIGTERM and SIGKILL (the first wait of its
 * stop schedule) and the margin.
 *
 * @param lock the settings
 * @param stopSchedule the program's stop schedule
 * @throws {UsageError} naming what is wrong
 */
export async function checkClusterLock(
  lock: ClusterLockSettings,
  stopSchedule: Schedule,
): Promise<void> {
  const { checkTtl, parseLockUrl } = await import("../cluster/lock.ts");
  parseLockUrl(lock.url);
  checkLockTls(lock);
  await checkLockPassword(lock);
  checkTtl(lock.ttlMs ?? DEFAULT_LOCK_TTL_MS, firstWaitMs(stopSchedule));
}

/**
 * Check the TLS files now, where a mistake is one line and exit 2, rather
 * than in the keeper after the start has begun: they go with `etcds://`
 * only, a certificate with its key, and each must be a readable regular
 * file holding what it should.
 *
 * @param lock the settings
 * @throws {UsageError} naming the option and what is wrong
 */
function checkLockTls(lock: ClusterLockSettings): void {
  const tls = lock.tls ?? {};
  const given = (["cacert", "cert", "key"] as const).filter((k) => tls[k] !== undefined);
  if (given.length === 0) return;
  if (!lock.url.startsWith("etcds://")) {
    throw new UsageError(`--lock-${given[0]} needs an etcds:// --lock URL`);
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new UsageError(
      tls.cert === undefined ? "--lock-key needs --lock-cert" : "--lock-cert needs --lock-key",
    );
  }
  const text: Partial<Record<(typeof given)[number], string>> = {};
  for (const what of given) {
    const path = tls[what]!;
    try {
      // A FIFO or a device would block the read: only a regular file is read.
      if (!Deno.statSync(path).isFile) throw new Error("not a regular file");
      text[what] = Deno.readTextFileSync(path);
    } catch (err) {
      // Deno's message repeats the path ("...: stat '/x'"): keep the reason only.
      const why = (err as Error).message.replace(/: [a-z]+ '.*'$/, "");
      throw new UsageError(`cannot read --lock-${what} ${JSON.stringify(path)}: ${why}`);
    }
  }
  if (text.cacert !== undefined && !text.cacert.includes("-----BEGIN CERTIFICATE-----")) {
    throw new UsageError(`--lock-cacert ${JSON.stringify(tls.cacert)} holds no PEM certificate`);
  }
  if (text.cert !== undefined && text.key !== undefined) {
    try {
      Deno.createHttpClient({ cert: text.cert, key: text.key }).close();
    } catch (err) {
      throw new UsageError(`--lock-cert and --lock-key: ${(err as Error).message}`);
    }
  }
}

/**
 * Check the password file now, where a mistake is one line and exit 2: it
 * goes with a `postgres://` URL only, its path must be one no other user can
 * redirect (as root), and it must be a regular file of one name, owned by
 * this user or root, that no group or other user can read. The keeper runs
 * as this user (with `user`, only the program drops privileges) and reads
 * the file again itself.
 *
 * @param lock the settings
 * @throws {UsageError} naming the file and what is wrong, never its content
 */
async function checkLockPassword(lock: ClusterLockSettings): Promise<void> {
  if (lock.passwordFile === undefined) return;
  if (!/^postgres(ql)?:\/\//.test(lock.url)) {
    throw new UsageError("--lock-password-file needs a postgres:// --lock URL");
  }
  const path = lock.passwordFile;
  try {
    checkPathTrusted(path);
  } catch (err) {
    throw new UsageError(`--lock-password-file: ${(err as Error).message}`);
  }
  const { readPasswordFile } = await import("../cluster/password.ts");
  readPasswordFile(path, [ids.euid()]);
}

/** Who holds a cluster lock, as `status --lock` reports it. */
export interface LockStatusReport {
  /** held (0), free (3), or unknown (4: cannot tell). */
  readonly state: "held" | "free" | "unknown";
  /** The LSB-style code: 0 held, 3 free, 4 cannot tell. */
  readonly code: 0 | 3 | 4;
  /** The lock's URL. */
  readonly url: string;
  /** The holder's key. */
  readonly key?: string;
  /** The holder's fencing token (etcd: its key's create revision). */
  readonly token?: string;
  /** The holder's host, when it said. */
  readonly host?: string;
  /** The holder's pid on that host, when it said. */
  readonly pid?: number;
  /** The seconds left on the holder's lease, when the cluster tells. */
  readonly secondsLeft?: number;
  /** Why it cannot tell. */
  readonly error?: string;
  /**
   * The latest slot whose job's success was recorded under this lock's name
   * (`run --once-per`): the slot, the token and host that recorded it, and
   * when; absent when none was.
   */
  readonly lastSlot?: {
    readonly slot: number;
    readonly token: string;
    readonly host: string;
    readonly doneAt: string;
  };
}

/**
 * Who holds a cluster lock now, from any host.
 *
 * @param lock the lock's URL, timeout and TLS files
 * @returns held, free, or cannot tell (with why)
 * @throws {UsageError} for a malformed URL
 */
export async function lockStatus(lock: ClusterLockSettings): Promise<LockStatusReport> {
  const { backendFor, parseLockUrl } = await import("../cluster/lock.ts");
  const target = parseLockUrl(lock.url);
  checkLockTls(lock);
  await checkLockPassword(lock);
  try {
    const backend = await backendFor(target);
    const options = {
      ttlMs: lock.ttlMs ?? DEFAULT_LOCK_TTL_MS,
      waitMs: 0,
      timeoutMs: lock.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS,
      ...(lock.tls ? { tls: lock.tls } : {}),
      ...(lock.passwordFile ? { passwordFile: lock.passwordFile } : {}),
      holder: { host: Deno.hostname(), pid: Deno.pid },
    };
    const [found, last] = await Promise.all([
      backend.holder(target, options),
      backend.lastSlot(target, options).catch(() => undefined), // a role that may not read it
    ]);
    const lastSlot = last === undefined ? {} : { lastSlot: last };
    if (found.state === "free") return { state: "free", code: 3, url: lock.url, ...lastSlot };
    return {
      ...lastSlot,
      state: "held",
      code: 0,
      url: lock.url,
      key: found.key,
      ...(found.token === "" ? {} : { token: found.token }),
      ...(found.host === undefined ? {} : { host: found.host }),
      ...(found.pid === undefined ? {} : { pid: found.pid }),
      ...(found.ttlLeftMs === undefined ? {} : { secondsLeft: found.ttlLeftMs / 1000 }),
    };
  } catch (err) {
    return { state: "unknown", code: 4, url: lock.url, error: (err as Error).message };
  }
}
