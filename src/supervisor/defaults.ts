/**
 * The supervisor's defaults, each defined once: the supervisor applies them,
 * the CLI prints them in its help. Imports nothing.
 *
 * @module
 */

/** When to start the command again: after a failure (non-zero exit, a signal). */
export const DEFAULT_RESTART_POLICY = "on-failure";
/** The first restart delay, in ms; it doubles with each quick failure. */
export const DEFAULT_RESTART_DELAY_MS = 1000;
/** The longest restart delay, in ms. */
export const DEFAULT_RESTART_DELAY_MAX_MS = 60_000;
/** A child that ran this long (ms) resets the backoff. */
export const DEFAULT_MIN_UPTIME_MS = 10_000;
/** Give up after this many restarts within the restart window. */
export const DEFAULT_MAX_RESTARTS = 5;
/** The crash-loop window, in ms. */
export const DEFAULT_RESTART_WINDOW_MS = 60_000;
/** How the supervisor stops its child, in start-stop-daemon's `--retry` grammar. */
export const DEFAULT_CHILD_STOP_SCHEDULE = "TERM/5/KILL/2";
/**
 * How long a program that does not say when it is ready must stay alive to
 * count as ready, in ms (`start`, a keeper's program and a supervisor's child
 * alike): long enough to see the start-up failures of the corpus it was
 * chosen from fail on a busy machine, the slowest being nginx, which retries
 * a busy port for 2.5 s before it exits (2.6 to 2.9 s after its exec here).
 */
export const DEFAULT_READY_AFTER_MS = 4000;
/**
 * With the default readiness, a program counts as ready sooner once it has
 * served for this long, in ms (supervisord's `startsecs`): listening all the
 * while, with a thread waiting for connections when the wait begins and when
 * it ends (see `src/launch/serving.ts`).
 */
export const DEFAULT_READY_SERVING_MS = 1000;
/** A supervised child's default readiness wait: the same as `start`'s. */
export const DEFAULT_CHILD_READY_AFTER_MS: number = DEFAULT_READY_AFTER_MS;
/** How long a child that notifies may take to become ready, in ms. */
export const DEFAULT_CHILD_READY_TIMEOUT_MS = 60_000;
/** The facility of `--output syslog` without one. */
export const DEFAULT_SYSLOG_FACILITY = "daemon";
/** A cluster lock's lease time to live, in ms. */
export const DEFAULT_LOCK_TTL_MS = 10_000;
/** The bound on every connect and request to a cluster, in ms. */
export const DEFAULT_LOCK_TIMEOUT_MS = 5_000;
/**
 * The signal that asks the supervisor (or keeper) to reopen its output file
 * and nothing else (`singleton-run reopen`): never forwarded, so a program
 * that does not handle SIGHUP survives a rotation; its default action is to
 * be ignored, so sent to a wrong process it does no harm.
 */
export const REOPEN_SIGNAL = 23; // SIGURG
/** From readiness to the first health check, and between checks, in ms (Docker's HEALTHCHECK). */
export const DEFAULT_HEALTH_INTERVAL_MS = 10_000;
/** A health check that takes longer (ms) failed. */
export const DEFAULT_HEALTH_TIMEOUT_MS = 5_000;
/** Failed health checks in a row that make the program unhealthy. */
export const DEFAULT_HEALTH_RETRIES = 3;
/** From readiness: failed health checks in this time (ms) do not count. */
export const DEFAULT_HEALTH_START_PERIOD_MS = 0;
