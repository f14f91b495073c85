/**
 * The control API: start, stop, status, restart, reload, signal and run a
 * single-instance daemon from a Deno program, with the same options and
 * results as the `singleton-run` command, so a program can manage another
 * service without shelling out.
 *
 * The daemon holds its pid file flock-locked for its whole life; a guard
 * file beside it serializes the actions, so two controllers never act on one
 * daemon at once. Each function returns a typed result or throws a typed
 * error; nothing here prints.
 *
 * Only `status` is loaded with this module; each other action loads its own
 * code when first called, so a program that only asks for the status pays
 * for nothing else.
 *
 * @example Start a daemon, ask for its status, stop it
 * ```ts
 * import { start, status, stop } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const pidfile = `${dir}/sleeper.pid`;
 * const { pid } = await start({ pidfile, command: ["sleep", "30"] });
 * console.log(status(pidfile).state); // "running"
 * await stop({ pidfile });
 * console.log(status(pidfile).pid === null); // true
 * await Deno.remove(dir, { recursive: true });
 * console.log(pid > 0); // true
 * ```
 *
 * @module
 */

import type {
  GuardOptions,
  RestartOptions,
  RunOptions,
  SignalOptions,
  StartOptions,
  StartResult,
  StatusReport,
  StopOptions,
  StopResult,
  TrustOptions,
} from "./options.ts";
import { status as statusNow } from "./status.ts";
import type { LockStatusReport } from "./cluster.ts";
import type { ClusterLockSettings } from "../launch/spec.ts";

export {
  GuardTimeoutError,
  HeldElsewhereError,
  InterruptedError,
  NotRunningError,
  StartFailedError,
  StopFailedError,
} from "./errors.ts";
export { AlreadyRunningError } from "../lock/pidfile.ts";
export { SystemError } from "../ffi/errors.ts";
export { UsageError } from "../errors.ts";
export {
  DEFAULT_CHDIR,
  DEFAULT_GUARD_TIMEOUT_MS,
  DEFAULT_READY_AFTER_MS,
  DEFAULT_READY_SERVING_MS,
  DEFAULT_READY_TIMEOUT_MS,
  DEFAULT_SCHEDULE,
  DEFAULT_UMASK,
} from "./options.ts";
export type {
  GuardOptions,
  LaunchOptions,
  RestartOptions,
  RunOptions,
  SignalOptions,
  StartOptions,
  StartResult,
  StatusReport,
  StopOptions,
  StopResult,
  TrustOptions,
} from "./options.ts";
export type { ExitReason } from "../ffi/mod.ts";
export type { LockStatusReport } from "./cluster.ts";
export type { SuperviseSettings } from "./options.ts";
export type {
  ClusterLockSettings,
  Holder,
  LaunchSpec,
  OutputTarget,
  Readiness,
  RestartPolicy,
  RestartSpec,
} from "../launch/spec.ts";
/**
 * How a supervised child says it is ready.
 *
 * @deprecated Use {@link Readiness}, the same type.
 */
export type ChildReadiness = import("../launch/spec.ts").Readiness;
export type { ClusterLockState, ClusterLockStatus, SupervisorStatus } from "../supervisor/state.ts";
export {
  DEFAULT_CHILD_READY_AFTER_MS,
  DEFAULT_CHILD_READY_TIMEOUT_MS,
  DEFAULT_CHILD_STOP_SCHEDULE,
  DEFAULT_LOCK_TIMEOUT_MS,
  DEFAULT_LOCK_TTL_MS,
  DEFAULT_MAX_RESTARTS,
  DEFAULT_MIN_UPTIME_MS,
  DEFAULT_RESTART_DELAY_MAX_MS,
  DEFAULT_RESTART_DELAY_MS,
  DEFAULT_RESTART_POLICY,
  DEFAULT_RESTART_WINDOW_MS,
  DEFAULT_SYSLOG_FACILITY,
} from "../supervisor/defaults.ts";
export { parseSchedule, type Schedule, type ScheduleStep } from "../launch/schedule.ts";
export { parseSignal, parseUmask } from "./values.ts";

/**
 * Start a command as a daemon that holds the pid file's lock, and wait until
 * it is ready (by default: alive 4 s after its exec, or serving for 1 s; or `notifyFd`,
 * `notifySocket`, or a supervisor's word with `supervise`). When it fails
 * first, it is killed with everything it forked that holds the lock, and the
 * error says why.
 *
 * @param options what to start and how
 * @returns the daemon's pid (and its last sd_notify STATUS=)
 * @throws {AlreadyRunningError} when another process holds the pid file
 * @throws {StartFailedError} when the daemon ends or times out before it is ready
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {InterruptedError} when `signal` aborts before the daemon is started
 * @throws {SystemError} for bad paths, missing programs, permissions
 * @throws {UsageError} for an empty command or paths that collide
 * @example Start a daemon that says when it is ready, then stop it
 * ```ts
 * import { start, stop } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const pidfile = `${dir}/app.pid`;
 * const script = 'echo >&"$NOTIFY_FD"; exec sleep 30';
 * const started = await start({ pidfile, command: ["sh", "-c", script], notifyFd: 3 });
 * console.log(started.pid > 0); // true
 * await stop({ pidfile });
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function start(options: StartOptions): Promise<StartResult> {
  return await (await import("./start.ts")).start(options);
}

/**
 * Stop the daemon: signal it through a pidfd per the schedule (by default
 * TERM, 10 s, KILL, 5 s) and wait until its lock is free; the pid file is
 * left empty. A stale pid file is emptied, never signalled.
 *
 * @param options the pid file and the schedule
 * @returns the pid stopped, the signals sent, how long it took
 * @throws {NotRunningError} when it is not running
 * @throws {StopFailedError} when it still runs after the schedule
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} for unreadable files and refused signals (EPERM)
 * @example Stop, where not running is fine
 * ```ts
 * import { NotRunningError, stop } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * try {
 *   const done = await stop({ pidfile: `${dir}/app.pid` });
 *   console.log(`stopped pid ${done.pid}`);
 * } catch (err) {
 *   if (!(err instanceof NotRunningError)) throw err;
 *   console.log(err.message); // "not running"
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function stop(options: StopOptions): Promise<StopResult> {
  return await (await import("./stop.ts")).stop(options);
}

/**
 * Make the process that writes `--output` (the supervisor, or the keeper of
 * a daemon started with `keeper` and `output`) reopen the file, without
 * signalling the program: the step after a rotation that renamed the file
 * away (logrotate's `create` mode).
 *
 * @param options the pid file
 * @returns the pid of the process that reopened it
 * @throws {NotRunningError} when nothing runs
 * @throws {StopFailedError} when no supervisor or keeper writes an output
 *   file (the program writes its output itself, or there is no `output`),
 *   or when the writer has not reopened the file within 5 s
 * @example
 * ```ts
 * import { NotRunningError, reopen } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await reopen({ pidfile: `${dir}/app.pid` }).catch((err) => {
 *   if (!(err instanceof NotRunningError)) throw err;
 * });
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function reopen(options: GuardOptions): Promise<number> {
  return await (await import("./reopen.ts")).reopen(options);
}

/**
 * Who holds a cluster lock now (`status --lock`), from any host: no pid
 * file involved. The cluster code is loaded only by this call.
 *
 * @param lock the lock's URL (and timeout, TLS files)
 * @returns held (code 0, with the holder's host, pid, key and token), free
 *   (3), or cannot tell (4, with why)
 * @throws {UsageError} for a malformed URL
 * @example
 * ```ts ignore
 * import { lockStatus } from "./mod.ts";
 *
 * const r = await lockStatus({ url: "etcd://127.0.0.1:2379/nightly-report" });
 * console.log(r.state, r.host, r.pid);
 * ```
 */
export async function lockStatus(lock: ClusterLockSettings): Promise<LockStatusReport> {
  return await (await import("./cluster.ts")).lockStatus(lock);
}

/**
 * What the pid file says, at once: no guard, no lock, no wait. The code is
 * the LSB status code the CLI exits with (0 running, 1 stale, 3 stopped, 4
 * cannot tell).
 *
 * @param pidfile the pid file
 * @param options `exec`: trust a process no lock covers when it runs this file;
 *   `runsAs`: only a process of this user
 * @returns the state and, for a running daemon, facts from /proc
 * @throws {UsageError} when `runsAs` names no user
 * @example
 * ```ts
 * import { status } from "./mod.ts";
 *
 * const report = status("/nonexistent/app.pid");
 * console.log(report.state, report.code); // "stopped" 3
 * ```
 */
export function status(pidfile: string, options: TrustOptions = {}): StatusReport {
  return statusNow(pidfile, options);
}

/**
 * Stop the daemon if it runs, then start it, under one hold of the guard.
 *
 * @param options start's and stop's options
 * @returns the new daemon's pid
 * @throws {AlreadyRunningError} when another process took the lock meanwhile
 * @throws {StartFailedError} when the new daemon fails before it is ready
 * @throws {StopFailedError} when the old one would not stop
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} for bad paths, missing programs, permissions
 * @example
 * ```ts
 * import { restart, stop } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const pidfile = `${dir}/app.pid`;
 * const first = await restart({ pidfile, command: ["sleep", "30"] }); // not running: starts
 * const second = await restart({ pidfile, command: ["sleep", "30"] });
 * console.log(first.pid !== second.pid); // true
 * await stop({ pidfile });
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function restart(options: RestartOptions): Promise<StartResult> {
  return await (await import("./restart.ts")).restart(options);
}

/**
 * Send a signal to the running daemon through a pidfd, after checking that
 * it holds the lock (a recycled pid is never signalled). Signal 0 sends
 * nothing: it checks that the daemon runs and may be signalled.
 *
 * @param options the pid file and the signal number
 * @returns the daemon's pid
 * @throws {NotRunningError} when it is not running
 * @throws {StopFailedError} when the lock is held but no holder can be seen
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} EPERM and the like
 * @example Is it running, and may I signal it?
 * ```ts
 * import { NotRunningError, signal } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * try {
 *   await signal({ pidfile: `${dir}/app.pid`, signal: 0 });
 * } catch (err) {
 *   console.log(err instanceof NotRunningError); // true
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function signal(options: SignalOptions): Promise<number> {
  return await (await import("./stop.ts")).signal(options);
}

/**
 * The same as {@link signal}, under the name the CLI's handler used.
 *
 * @param options the pid file and the signal number
 * @returns the daemon's pid
 * @throws what {@link signal} throws
 */
export const sendSignal: (options: SignalOptions) => Promise<number> = signal;

/**
 * Ask the daemon to re-read its configuration: SIGHUP.
 *
 * @param options the pid file
 * @returns the daemon's pid
 * @throws {NotRunningError} when it is not running
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} EPERM and the like
 * @example
 * ```ts
 * import { NotRunningError, reload } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * await reload({ pidfile: `${dir}/app.pid` }).catch((err) => {
 *   if (!(err instanceof NotRunningError)) throw err;
 * });
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function reload(options: GuardOptions & TrustOptions): Promise<number> {
  return await (await import("./stop.ts")).reload(options);
}

/**
 * Take the lock in the foreground and become the command (execve): it keeps
 * this pid and the lock. With `supervise`, this process becomes the
 * command's supervisor instead, and resolves to its exit code.
 *
 * @param options what to run
 * @returns with `supervise`, the supervisor's exit code; otherwise never (it execs)
 * @throws {AlreadyRunningError} when another process holds the pid file
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} when a check or the exec fails (the lock is released)
 * @throws {UsageError} for an empty command
 * @example Replace this process by the service (not run here: it would never return)
 * ```ts ignore
 * import { run } from "./mod.ts";
 *
 * await run({ pidfile: "/run/app.pid", command: ["/usr/sbin/app", "--foreground"] });
 * ```
 */
export async function run(options: RunOptions): Promise<number> {
  return await (await import("./run.ts")).run(options);
}
