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
 * Only `status` and `list` are loaded with this module; each other action
 * loads its own code when first called, so a program that only asks for the
 * status pays for nothing else.
 *
 * A service may be named instead of its pid file: every action takes
 * `{ name: "web" }` in place of `pidfile`, which selects `DIR/web.pid` in the
 * directory of services ({@link serviceDir}: `$SINGLETON_RUN_DIR`, else
 * `/run/singleton-run` for root, else `$XDG_RUNTIME_DIR/singleton-run`, else
 * `/tmp/singleton-run-UID`); `start`, `run` and `restart` make that
 * directory when it is missing, and {@link list} reports on every service
 * in it.
 *
 * @example Start a daemon, ask for its status, stop it
 * ```ts
 * import { start, status, stop } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const pidfile = `${dir}/sleeper.pid`;
 * const { pid } = await start({ pidfile, command: ["sleep", "30"] });
 * console.log((await status({ pidfile })).state); // "running"
 * await stop({ pidfile });
 * console.log((await status({ pidfile })).pid === null); // true
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
  StatusOptions,
  StatusReport,
  StopOptions,
  StopResult,
  TrustOptions,
} from "./options.ts";
import { status as statusNow } from "./status.ts";
import { list as listNow, type ListOptions, type ServiceReport } from "./list.ts";
import { type Named, type ServiceName, withPidfile } from "./names.ts";
import type { LockStatusReport } from "./cluster.ts";
import type { ReloadOptions } from "./reload.ts";
import type { ClusterLockSettings } from "../launch/spec.ts";

export {
  GuardTimeoutError,
  HeldElsewhereError,
  InterruptedError,
  JobSkippedError,
  NotRunningError,
  ReloadRefusedError,
  StartFailedError,
  StopFailedError,
} from "./errors.ts";
export { AlreadyRunningError } from "../lock/pidfile.ts";
export { SystemError } from "../ffi/errors.ts";
export { exitCodeOf, UsageError } from "../errors.ts";
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
  StatusOptions,
  StatusReport,
  StopOptions,
  StopResult,
  TrustOptions,
} from "./options.ts";
export type { ExitReason } from "../ffi/mod.ts";
export type { ListOptions, ServiceReport } from "./list.ts";
export type { FailedState } from "../lock/record.ts";
export {
  checkServiceName,
  type Named,
  ROOT_SERVICE_DIR,
  SERVICE_DIR_ENV,
  serviceDir,
  type ServiceName,
  servicePidfile,
} from "./names.ts";
export type { LockStatusReport } from "./cluster.ts";
export type { HealthSettings, LivenessOptions, SuperviseSettings } from "./options.ts";
export type { ReloadOptions } from "./reload.ts";
export type {
  ClusterLockSettings,
  HealthCheck,
  HealthSpec,
  HealthTiming,
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
export type {
  ClusterLockState,
  ClusterLockStatus,
  HealthState,
  SupervisorStatus,
} from "../supervisor/state.ts";
export {
  DEFAULT_CHILD_READY_AFTER_MS,
  DEFAULT_CHILD_READY_TIMEOUT_MS,
  DEFAULT_CHILD_STOP_SCHEDULE,
  DEFAULT_HEALTH_INTERVAL_MS,
  DEFAULT_HEALTH_RETRIES,
  DEFAULT_HEALTH_START_PERIOD_MS,
  DEFAULT_HEALTH_TIMEOUT_MS,
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
export async function start(options: Named<StartOptions>): Promise<StartResult> {
  return await (await import("./start.ts")).start(withPidfile(options));
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
export async function stop(options: Named<StopOptions>): Promise<StopResult> {
  return await (await import("./stop.ts")).stop(withPidfile(options));
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
export async function reopen(options: Named<GuardOptions>): Promise<number> {
  return await (await import("./reopen.ts")).reopen(withPidfile(options));
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
 * What the pid file says: no guard, no lock, no wait. The code is the LSB
 * status code the CLI exits with (0 running, 1 stale, 3 stopped or failed,
 * 4 cannot tell).
 *
 * With a record beside the pid file, the report also gives the command it
 * launched (`spec`), and, for a service whose supervisor or keeper gave up,
 * the state `failed` (code 3) with when, after how many restarts and how its
 * last run ended (`failed`). Other users' locks on the pid file, which change
 * nothing, are listed as `foreignHolders`.
 *
 * @param options the pid file (or `{ name }` for a service in the directory
 *   of services); `exec`: trust a process no lock covers when it runs this
 *   file; `runsAs`: only a process of this user
 * @returns the state and, for a running daemon, facts from /proc
 * @throws {UsageError} when `runsAs` names no user, or for a bad name
 * @example
 * ```ts
 * import { status } from "./mod.ts";
 *
 * const report = await status({ pidfile: "/nonexistent/app.pid" });
 * console.log(report.state, report.code); // "stopped" 3
 * ```
 */
export function status(options: Named<StatusOptions>): Promise<StatusReport> {
  try {
    return Promise.resolve(statusSync(options));
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * {@link status}, synchronous: what the pid file says, at once.
 *
 * @param options the pid file (a path, or the options {@link status} takes)
 * @param trust with a path: `exec` and `runsAs`, as in {@link status}
 * @returns the state and, for a running daemon, facts from /proc
 * @throws {UsageError} when `runsAs` names no user, or for a bad name
 * @example
 * ```ts
 * import { statusSync } from "./mod.ts";
 *
 * console.log(statusSync("/nonexistent/app.pid").code); // 3
 * ```
 */
export function statusSync(
  options: string | ServiceName | Named<StatusOptions>,
  trust: TrustOptions = {},
): StatusReport {
  if (typeof options === "string") return statusNow(options, trust);
  const { pidfile, ...rest } = withPidfile(options as Named<StatusOptions>);
  return statusNow(pidfile, { ...trust, ...rest });
}

/**
 * The status of every service in the directory of services ({@link serviceDir}),
 * sorted by name, then of each pid file in `pidfiles`: for each, what
 * {@link status} reports, with its `name` (a pid file given is named by its
 * path). One process, no wait.
 *
 * @param options more pid files to report on
 * @returns the reports; none when the directory does not exist
 * @throws {SystemError} when the directory belongs to another user or cannot be read
 * @example Start a service by name, list the services, stop it by name
 * ```ts
 * import { list, start, stop } from "./mod.ts";
 *
 * const dir = await Deno.makeTempDir();
 * Deno.env.set("SINGLETON_RUN_DIR", `${dir}/services`); // else /run/singleton-run for root...
 * await start({ name: "web", command: ["sleep", "30"] }); // the pid file is DIR/web.pid
 * for (const s of await list()) console.log(s.name, s.state); // "web running"
 * await stop({ name: "web" });
 * Deno.env.delete("SINGLETON_RUN_DIR");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function list(options: ListOptions = {}): Promise<ServiceReport[]> {
  try {
    return Promise.resolve(listNow(options));
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Stop the daemon if it runs, then start it, under one hold of the guard.
 * Without `command`, the launch recorded beside the pid file (by `start`,
 * `run` or an earlier `restart`) is started again: in this process's
 * environment plus the recorded `env`, with every option given here over
 * the recorded one (the command is found again in PATH, the user looked up
 * again).
 *
 * @param options start's and stop's options; `command` may be left out
 * @returns the new daemon's pid
 * @throws {AlreadyRunningError} when another process took the lock meanwhile
 * @throws {StartFailedError} when the new daemon fails before it is ready
 * @throws {StopFailedError} when the old one would not stop
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} for bad paths, missing programs, permissions
 * @throws {UsageError} without `command` when there is no record to trust
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
export async function restart(options: Named<RestartOptions>): Promise<StartResult> {
  return await (await import("./restart.ts")).restart(withPidfile(options));
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
export async function signal(options: Named<SignalOptions>): Promise<number> {
  return await (await import("./stop.ts")).signal(withPidfile(options));
}

/**
 * The same as {@link signal}, under the name the CLI's handler used.
 *
 * @param options the pid file and the signal number
 * @returns the daemon's pid
 * @throws what {@link signal} throws
 */
export const sendSignal: (options: Named<SignalOptions>) => Promise<number> = signal;

/**
 * Ask the daemon to re-read its configuration: SIGHUP. Its signal masks are
 * read first (/proc/PID/status; under a supervisor, those of COMMAND's
 * current run): a program that neither catches, ignores nor blocks SIGHUP
 * would die of it, so nothing is sent unless `force` is set.
 *
 * @param options the pid file, and `force`
 * @returns the daemon's pid
 * @throws {NotRunningError} when it is not running
 * @throws {ReloadRefusedError} when SIGHUP would end the program (nothing was sent)
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
export async function reload(options: Named<ReloadOptions>): Promise<number> {
  return await (await import("./reload.ts")).reload(withPidfile(options));
}

/**
 * Take the lock in the foreground and become the command (execve): it keeps
 * this pid and the lock. With `supervise`, this process becomes the
 * command's supervisor instead, and resolves to its exit code; with `lock`,
 * its keeper. When another copy runs: `wait` for it, or `replace` it;
 * `maxRuntime` bounds the job's time (this process becomes the small
 * enforcer, and exits 124 when the job ran longer); `lock.oncePerMs` runs it
 * once per slot across hosts.
 *
 * @param options what to run
 * @returns with `supervise` or `lock`, the exit code; otherwise never (it execs)
 * @throws {AlreadyRunningError} when another process holds the pid file
 *   (after `wait`, if given)
 * @throws {HeldElsewhereError} when the cluster lock is held elsewhere
 * @throws {JobSkippedError} when a later `replace` took over, or the job's slot is done
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} when a check or the exec fails (the lock is released)
 * @throws {UsageError} for an empty command, or policies that exclude each other
 * @example Replace this process by the service (not run here: it would never return)
 * ```ts ignore
 * import { run } from "./mod.ts";
 *
 * await run({ pidfile: "/run/app.pid", command: ["/usr/sbin/app", "--foreground"] });
 * ```
 */
export async function run(options: Named<RunOptions>): Promise<number> {
  return await (await import("./run.ts")).run(withPidfile(options));
}
