/**
 * The supervise options as a caller gives them (`start --supervise`, `run
 * --supervise`, the control API's `supervise`): plain data, durations in
 * milliseconds, the stop schedule and the output as text. Imports nothing.
 *
 * @module
 */

/** When to start the command again after it exits. */
export type RestartPolicy = "on-failure" | "always" | "never";

/** How the supervisor learns that a child is ready. */
export type ChildReadiness =
  /** Alive after `afterMs`. */
  | { readonly kind: "alive"; readonly afterMs: number }
  /** Writes a newline to descriptor `fd` (s6 style, `NOTIFY_FD`). */
  | { readonly kind: "fd"; readonly fd: number }
  /** Sends `READY=1` to `NOTIFY_SOCKET` (sd_notify). */
  | { readonly kind: "socket" };

/**
 * An outer lock on a cluster (etcd, PostgreSQL) held for the program, as a
 * caller gives it: taken before each run, kept alive, and the program fenced
 * (stopped) before the lock can pass to another host.
 */
export interface ClusterLockSettings {
  /** `etcd://HOST:PORT[,HOST:PORT...]/NAME`, `etcds://...`, `postgres://USER@HOST:PORT/DB?name=NAME`. */
  readonly url: string;
  /**
   * The lease's time to live, in ms.
   * @default {10000}
   */
  readonly ttlMs?: number;
  /**
   * How long to wait for a lock held elsewhere, in ms, or "forever".
   * @default {0} fail at once
   */
  readonly waitMs?: number | "forever";
  /**
   * The bound on every connect and request, in ms.
   * @default {5000}
   */
  readonly timeoutMs?: number;
  /** TLS files for `etcds://`. */
  readonly tls?: { readonly cacert?: string; readonly cert?: string; readonly key?: string };
  /**
   * PostgreSQL: a file whose first line is the password (owned by the
   * keeper's user or root, mode 0600); without it, `PGPASSWORD`. The URL
   * holds none.
   */
  readonly passwordFile?: string;
}

/** How to supervise the command. */
export interface SuperviseSettings {
  /**
   * The syslog ident and the name in the supervisor's messages.
   * @default {the program's basename}
   */
  readonly name?: string;
  /**
   * When to start the command again.
   * @default {"on-failure"}
   */
  readonly restart?: RestartPolicy;
  /**
   * The first restart delay, in ms; it doubles with each quick failure.
   * @default {1000}
   */
  readonly restartDelay?: number;
  /**
   * The longest restart delay, in ms.
   * @default {60000}
   */
  readonly restartDelayMax?: number;
  /**
   * A child that ran this long (ms) resets the backoff.
   * @default {10000}
   */
  readonly minUptime?: number;
  /**
   * Give up after this many restarts within `restartWindow`; 0 for never.
   * @default {5}
   */
  readonly maxRestarts?: number;
  /**
   * The crash-loop window, in ms.
   * @default {60000}
   */
  readonly restartWindow?: number;
  /** Signal the child's whole process group (it is started as a group leader). */
  readonly killGroup?: boolean;
  /**
   * How a child shows it is ready.
   * @default {{ kind: "alive", afterMs: 100 }}
   */
  readonly readiness?: ChildReadiness;
  /**
   * How long a notifying child may take to become ready, in ms.
   * @default {60000}
   */
  readonly readyTimeout?: number;
  /**
   * How to stop the child, in start-stop-daemon's `--retry` grammar.
   * @default {"TERM/5/KILL/2"}
   */
  readonly stopSchedule?: string;
  /**
   * `syslog`, `syslog:FACILITY` or a file path; absent: the child shares
   * the supervisor's stdout and stderr.
   */
  readonly output?: string;
  /**
   * The program's own pid file, for a program that forks away: its pid
   * names the main process of each run (read, never written). Without it,
   * the main process of a program that forked away is the one process left.
   */
  readonly daemonPidfile?: string;
  /** An outer lock on a cluster, held by the supervisor (or keeper) for the program. */
  readonly lock?: ClusterLockSettings;
}
