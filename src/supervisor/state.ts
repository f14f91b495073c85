/**
 * The supervisor's state file, `PIDFILE.state`: what `status --json` shows
 * of a supervised daemon (the child's pid, its phase, restarts, the last
 * exit, dropped output lines). Written by the supervisor, which holds the
 * pid file's lock, through an exclusively created temp file renamed into
 * place; read by `status` only when the file is a plain file owned by root,
 * the pid file's owner or the supervisor's user, and only about the
 * supervisor the pid file names.
 *
 * Small and light on purpose: `status` imports it.
 *
 * @module
 */

// The ffi modules, not their index (which also loads spawn and syslog): `status` imports this.
import { close, lstat } from "../ffi/sys.ts";
import { openBeside, readBounded } from "../ffi/files.ts";
import { replaceBeside } from "../lock/replace.ts";
import { holderFacts, holdsLockInFdinfo } from "../lock/holders.ts";

/** What the supervisor records in its state file on every change. */
export interface SupervisorState {
  /** The supervisor's own pid (the one the pid file names). */
  readonly supervisorPid: number;
  /** The child's pid, or null between children. */
  readonly childPid: number | null;
  /** `starting`, `running` (ready), `backoff`, `stopping`, `exited`. */
  readonly phase: string;
  /** How many times the command has been started again. */
  readonly restarts: number;
  /** How the last child ended, in words, or null before the first exit. */
  readonly lastExit: string | null;
  /** When the last child ended (ISO 8601), or null. */
  readonly lastExitAt: string | null;
  /** When the current child started (ISO 8601), or null. */
  readonly childStartedAt: string | null;
  /** When the supervisor started (ISO 8601). */
  readonly supervisorStartedAt: string;
  /** The command's argv. */
  readonly command: readonly string[];
  /** Output lines that could not be delivered (syslog unreachable) and were dropped. */
  readonly dropped: number;
  /** The output file the supervisor (or keeper) writes, absolute; null for none or syslog. */
  readonly output: string | null;
  /** The cluster lock held for the program, when there is one. */
  readonly lock?: ClusterLockState;
  /** The program's health, with a health check or a watchdog. */
  readonly health?: HealthState;
}

/** A supervised program's health, as its health check and watchdog found it. */
export interface HealthState {
  /**
   * `starting` from readiness to the first success, `healthy` after it,
   * `unhealthy` once it failed too often (or missed its watchdog), until the
   * next run is ready.
   */
  readonly state: "starting" | "healthy" | "unhealthy";
  /** Failures in a row that counted. */
  readonly failures: number;
  /** When the last check ended, or the last `WATCHDOG=1` came (ISO 8601); null before. */
  readonly lastCheck: string | null;
  /** Why the last failed check failed, or null when none has. */
  readonly lastError: string | null;
  /** How many times the program was restarted for being unhealthy. */
  readonly restarts: number;
}

/** The cluster lock as the state file records it. */
export interface ClusterLockState {
  /** The lock's URL. */
  readonly url: string;
  /** The key that holds it (etcd) or the advisory lock's key (PostgreSQL). */
  readonly key: string;
  /** The fencing token handed to the program. */
  readonly token: string;
  /** The lease's time to live, in ms. */
  readonly ttlMs: number;
  /** When the lease may expire (ISO 8601), as of the last acknowledged keepalive. */
  readonly expiresAt: string;
}

/** The largest state file read: a file swapped for something endless cannot grow a reader. */
const MAX_STATE_BYTES = 64 * 1024;

/**
 * The state file next to a pid file: `${pidfile}.state`.
 *
 * @param pidfile the pid file
 * @returns the state file's path
 */
export function statePath(pidfile: string): string {
  return `${pidfile}.state`;
}

/**
 * Replace the state file whole (see `replaceBeside`): a reader never sees
 * half of it, and a full disk leaves the old state and nothing else.
 *
 * @param path the state file
 * @param state what to record
 * @throws {SystemError} when it cannot be written (the old state stays)
 */
export function writeStateFile(path: string, state: SupervisorState): void {
  replaceBeside(path, JSON.stringify(state) + "\n", "state file", 0o644);
}

/** What `status --json` shows of a supervisor, from its state file. */
export interface SupervisorStatus {
  /** The supervised child's pid, or null between children. */
  readonly childPid: number | null;
  /** `starting`, `running`, `backoff`, `stopping` or `exited`. */
  readonly phase: string;
  /** How many times the command was started again. */
  readonly restarts: number;
  /** How the last child ended, or null. */
  readonly lastExit: string | null;
  /** When the current child started (ISO 8601), or null. */
  readonly childStartTime: string | null;
  /** The current child's uptime in seconds, or null. */
  readonly childUptimeSeconds: number | null;
  /** Output lines dropped because they could not be delivered. */
  readonly dropped: number;
  /** The output file it writes (what `reopen` reopens); null for none or syslog. */
  readonly output: string | null;
  /** The cluster lock held for the program, with the seconds left on its lease, if any. */
  readonly lock?: ClusterLockStatus;
  /** The program's health, with a health check or a watchdog. */
  readonly health?: HealthState;
}

/**
 * The cluster lock as `status` shows it: what the state file recorded, and
 * how that stands now. A keeper rewrites the file well within every TTL, so
 * a deadline already past means a keeper that was paused or is stuck: the
 * lease has expired, and another host may hold the lock now.
 */
export interface ClusterLockStatus extends ClusterLockState {
  /** The seconds left on the lease; 0 once it has expired. */
  readonly secondsLeft: number;
  /** The lease's deadline has passed: the lock is no longer this keeper's. */
  readonly expired: boolean;
  /** Once expired: how many seconds ago. */
  readonly expiredSecondsAgo?: number;
}

/**
 * Read the supervisor's state file, if the pid file's holder is the
 * supervisor that wrote it, as facts another user cannot forge say: `pid`
 * runs as root or the pid file's owner and holds an exclusive lock on the pid
 * file (where /proc lets us look), the state file is a regular file with one
 * name owned by root or the pid file's owner, and it names `pid` as its
 * supervisor. Never its argv: anyone can run a process that claims to be a
 * supervisor. Never blocks, never reads more than 64 KiB.
 *
 * @param pidfile the pid file
 * @param pid the pid the pid file names (and that holds its lock)
 * @returns the supervisor's view, or undefined when not supervised (or not to be trusted)
 */
export function readSupervisorStatus(pidfile: string, pid: number): SupervisorStatus | undefined {
  if (!supervisorOf(pidfile, pid)) return undefined;
  let state: Partial<SupervisorState>;
  try {
    const { fd, stat } = openBeside(statePath(pidfile), { what: "state file", access: "read" });
    try {
      if (!trustedOwner(stat.uid, pidfile, pid)) return undefined;
      state = JSON.parse(new TextDecoder().decode(readBounded(fd, MAX_STATE_BYTES)));
    } finally {
      close(fd);
    }
  } catch {
    return undefined;
  }
  if (state?.supervisorPid !== pid) return undefined;
  const started = typeof state.childStartedAt === "string" ? Date.parse(state.childStartedAt) : NaN;
  return {
    childPid: typeof state.childPid === "number" ? state.childPid : null,
    phase: String(state.phase ?? "unknown"),
    restarts: typeof state.restarts === "number" ? state.restarts : 0,
    lastExit: typeof state.lastExit === "string" ? state.lastExit : null,
    childStartTime: Number.isFinite(started) ? state.childStartedAt! : null,
    childUptimeSeconds: Number.isFinite(started)
      ? Math.max(0, Math.round((Date.now() - started) / 10) / 100)
      : null,
    dropped: typeof state.dropped === "number" ? state.dropped : 0,
    output: typeof state.output === "string" && state.output.startsWith("/") ? state.output : null,
    ...lockStatus(state.lock),
    ...healthStatus(state.health),
  };
}

/** The health as the state file has it, checked field by field. */
function healthStatus(health: Partial<HealthState> | undefined): { health?: HealthState } {
  if (typeof health !== "object" || health === null) return {};
  const { state, failures, lastCheck, lastError, restarts } = health;
  if (state !== "starting" && state !== "healthy" && state !== "unhealthy") return {};
  const text = (v: unknown) => typeof v === "string" ? v : null;
  const count = (v: unknown) => typeof v === "number" && v >= 0 ? v : 0;
  return {
    health: {
      state,
      failures: count(failures),
      lastCheck: text(lastCheck),
      lastError: text(lastError),
      restarts: count(restarts),
    },
  };
}

/** The lock as the state file has it, checked field by field, with the time left. */
function lockStatus(
  lock: Partial<ClusterLockState> | undefined,
): { lock?: ClusterLockStatus } {
  if (typeof lock !== "object" || lock === null) return {};
  const { url, key, token, ttlMs, expiresAt } = lock;
  if (
    typeof url !== "string" || typeof key !== "string" || typeof token !== "string" ||
    typeof ttlMs !== "number" || typeof expiresAt !== "string"
  ) return {};
  const left = (Date.parse(expiresAt) - Date.now()) / 1000;
  const tenths = (s: number) => Math.round(s * 10) / 10;
  const expired = !(left > 0);
  return {
    lock: {
      url,
      key,
      token,
      ttlMs,
      expiresAt,
      secondsLeft: expired ? 0 : tenths(left),
      expired,
      ...(expired && Number.isFinite(left) ? { expiredSecondsAgo: tenths(-left) } : {}),
    },
  };
}

/** Whether a state file's owner may speak for the supervisor: root, or the pid file's owner. */
function trustedOwner(uid: number, pidfile: string, _pid: number): boolean {
  if (uid === 0) return true;
  try {
    return uid === lstat(pidfile).uid;
  } catch {
    return false;
  }
}

/**
 * Whether `pid` may be the supervisor (or keeper) of this pid file: root's
 * process or the pid file owner's, holding an exclusive lock on it.
 */
function supervisorOf(pidfile: string, pid: number): boolean {
  let st;
  try {
    st = lstat(pidfile);
  } catch {
    return false;
  }
  const facts = holderFacts(pid);
  if (!facts || (!facts.root && facts.uid !== st.uid)) return false;
  return holdsLockInFdinfo(pid, st) !== false;
}
