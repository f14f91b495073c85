/**
 * The daemon control protocol behind the `singleton-run` command: start,
 * run, stop, status, restart, reload and signal, race-free.
 *
 * It follows LibUCW's protocol: a separate guard file, locked with flock(2),
 * serializes every action on one daemon (start, stop, restart, reload,
 * signal), while the daemon itself keeps the pid file flock-locked for its
 * whole life. `status` never takes the guard, so it answers at once even
 * while a stop waits. Where LibUCW admits a race (between the lock check and
 * kill(2)), this signals through a pidfd opened first and re-checks the lock
 * and the file's holder after, so a recycled pid is never signalled.
 *
 * Each function returns a typed result or throws a typed error; the CLI maps
 * them to exit codes. Nothing here prints.
 *
 * @module
 */

import {
  becomeUser,
  C,
  close,
  describeErrno,
  ERRNO,
  execve,
  type ExitReason,
  explainOpenError,
  fileKind,
  type FileStat,
  fstat,
  ids,
  kill,
  listDirectory,
  lookupGroup,
  lookupUser,
  lstat,
  open,
  pidfdOpen,
  pidfdSendSignal,
  platform,
  pollNow,
  pollWait,
  quote,
  reap,
  resetSignals,
  setCloexec,
  signalName,
  statfsType,
  SystemError,
  tryFlock,
  umask as setUmask,
  type User,
} from "../ffi/mod.ts";
import {
  AlreadyRunningError,
  checkPidFileStat,
  holdsLockInFdinfo,
  PidFile,
  probeSync,
} from "../lock/pidfile.ts";
import { cmdlineOf, processRuns, procStat, startedAt, vmRssKiB } from "../ffi/proc.ts";
import { type FdSource, resolveCommand, spawn } from "../launch/spawn.ts";
import {
  NOTIFY_FD_ENV,
  NOTIFY_SOCKET_ENV,
  Readiness,
  type ReadinessMode,
} from "../launch/readiness.ts";
import { awaitStage, spawnStage } from "../launch/privilege.ts";
import { describeExit } from "../launch/exit.ts";
import type { DaemonPlan, LaunchedDaemon } from "../launch/plan.ts";
import { parseSchedule, type Schedule } from "../launch/schedule.ts";
import { UsageError } from "../errors.ts";
// supervise mode (issue 5): the supervisor becomes the daemon
import {
  readSupervisorStatus,
  runSupervisor,
  superviseLauncher,
  type SuperviseSettings,
  SUPERVISOR_READY_FD,
  type SupervisorStatus,
} from "../supervisor/stage.ts";

export { AlreadyRunningError, parseSchedule, UsageError };
export type { DaemonPlan, LaunchedDaemon, Schedule };
export type { ScheduleStep } from "../launch/schedule.ts";

/** How long `start` waits, by default, to see that a daemon stays alive after its exec. */
export const DEFAULT_READY_AFTER_MS = 20;
/** The default bound on every readiness wait. */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;
/** The default bound on the wait for the guard lock. */
export const DEFAULT_GUARD_TIMEOUT_MS = 30_000;
/** The default stop schedule: TERM, wait 10 s, KILL, wait 5 s. */
export const DEFAULT_SCHEDULE = "TERM/10/KILL/5";

// ---------------------------------------------------------------- errors

/** Nothing to do: the daemon is not running (exit code 3 in the CLI). */
export class NotRunningError extends Error {
  /** The pid file. */
  readonly path: string;
  /** The pid a stale file named (it was not signalled; the file was emptied). */
  readonly stalePid: number | undefined;
  /**
   * @param path the pid file
   * @param stalePid the pid a stale file named, if any
   */
  constructor(path: string, stalePid?: number) {
    super(
      stalePid === undefined
        ? "not running"
        : `not running (the pid file named pid ${stalePid}, which does not hold its lock; not signalled)`,
    );
    this.name = "NotRunningError";
    this.path = path;
    this.stalePid = stalePid;
  }
}

/** Another controller kept the guard lock past the timeout. */
export class GuardTimeoutError extends Error {
  /** The guard file. */
  readonly path: string;
  /**
   * @param path the guard file
   * @param waitedMs how long we waited
   */
  constructor(path: string, waitedMs: number) {
    super(
      `another singleton-run holds the guard ${quote(path)}: gave up after ${seconds(waitedMs)} ` +
        `(raise --guard-timeout, or see who holds it in /proc/locks)`,
    );
    this.name = "GuardTimeoutError";
    this.path = path;
  }
}

/** The daemon failed before it was ready; it was killed and reaped, the lock freed. */
export class StartFailedError extends Error {
  /** The daemon's pid (now gone). */
  readonly pid: number;
  /** How it ended, when it ended by itself. */
  readonly exit: ExitReason | undefined;
  /** The last lines of `--output`, if one was given. */
  readonly outputTail: readonly string[];
  /** The output file, if any. */
  readonly output: string | undefined;
  /**
   * @param message why
   * @param pid the daemon's pid
   * @param exit how it ended
   * @param output the output file
   * @param outputTail its last lines
   */
  constructor(
    message: string,
    pid: number,
    exit: ExitReason | undefined,
    output: string | undefined,
    outputTail: readonly string[],
  ) {
    super(message);
    this.name = "StartFailedError";
    this.pid = pid;
    this.exit = exit;
    this.output = output;
    this.outputTail = outputTail;
  }
}

/** The daemon still ran when the stop schedule ran out, or could not be signalled safely. */
export class StopFailedError extends Error {
  /** The daemon's pid. */
  readonly pid: number | undefined;
  /**
   * @param message why
   * @param pid the pid
   */
  constructor(message: string, pid: number | undefined) {
    super(message);
    this.name = "StopFailedError";
    this.pid = pid;
  }
}

/** The caller aborted the action (the CLI: SIGINT, SIGTERM or SIGHUP) while it waited. */
export class InterruptedError extends Error {
  /** @param message what was interrupted */
  constructor(message: string) {
    super(message);
    this.name = "InterruptedError";
  }
}

// ---------------------------------------------------------------- options

/** Options every guarded action takes. */
export interface GuardOptions {
  /** The pid file. */
  readonly pidfile: string;
  /**
   * The guard file.
   * @default {`${pidfile}.lock`}
   */
  readonly guard?: string;
  /**
   * How long to wait for another controller's action, in milliseconds.
   * @default {30000}
   */
  readonly guardTimeout?: number;
  /** Called with a warning (e.g. a pid file on NFS); the action goes on. */
  readonly onWarning?: (message: string) => void;
}

/** What is started and how. */
export interface LaunchOptions {
  /** The command and its arguments; `command[0]` is searched in PATH. */
  readonly command: readonly string[];
  /**
   * The daemon's working directory.
   * @default {"/"} for start; the current directory for run
   */
  readonly chdir?: string;
  /**
   * The daemon's umask.
   * @default {0o022} for start; unchanged for run
   */
  readonly umask?: number;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
  /** `USER[:GROUP]`, name or number: run as that account (root only). */
  readonly user?: string;
}

/** Options of {@link start}. */
export interface StartOptions extends GuardOptions, LaunchOptions {
  /** Append the daemon's stdout and stderr to this file (mode 0640) instead of /dev/null. */
  readonly output?: string;
  /**
   * The bound on every wait for readiness, in milliseconds.
   * @default {60000}
   */
  readonly readyTimeout?: number;
  /**
   * Default readiness: how long the daemon must stay alive after its exec, in ms.
   * @default {20}
   */
  readonly readyAfter?: number;
  /** s6-style readiness: the daemon writes a newline to this descriptor. */
  readonly notifyFd?: number;
  /** sd_notify readiness: the daemon sends READY=1 to NOTIFY_SOCKET. */
  readonly notifySocket?: boolean;
  /**
   * What becomes the daemon (supervise mode replaces it).
   * @default {launchDaemon}
   */
  readonly launch?: (plan: DaemonPlan) => LaunchedDaemon;
  /**
   * Supervise mode: the daemon is a supervisor that runs COMMAND, restarts
   * it, and tells `start` it is ready once COMMAND's first run is ready
   * (COMMAND's own readiness is in these settings).
   */
  readonly supervise?: SuperviseSettings;
  /**
   * Abort the wait for readiness (the CLI wires SIGINT, SIGTERM and SIGHUP to
   * it): the daemon is killed and the start fails, leaving nothing behind.
   */
  readonly signal?: AbortSignal;
}

/** What {@link start} did. */
export interface StartResult {
  /** The daemon's pid, as the pid file names it. */
  readonly pid: number;
  /** The last STATUS= the daemon sent, if any. */
  readonly status?: string;
}

/** Options of {@link stop}. */
export interface StopOptions extends GuardOptions {
  /**
   * The signals to send and how long to wait after each.
   * @default {parseSchedule("TERM/10/KILL/5")}
   */
  readonly schedule?: Schedule;
}

/** What {@link stop} did. */
export interface StopResult {
  /** The pid that was stopped. */
  readonly pid: number;
  /** The signals sent, in order. */
  readonly signals: readonly number[];
  /** How long until the lock was free, in milliseconds. */
  readonly waitedMs: number;
  /**
   * Only when the pid file named a process that was gone or did not hold the
   * lock: the processes that held it, which were signalled instead.
   */
  readonly holders?: readonly number[];
}

/** Options of {@link restart}. */
export interface RestartOptions extends StartOptions, StopOptions {}

/** Options of {@link run}. */
export interface RunOptions extends GuardOptions, LaunchOptions {
  /** Supervise COMMAND in the foreground instead of exec'ing it. */
  readonly supervise?: SuperviseSettings;
}

/** Options of {@link sendSignal}. */
export interface SignalOptions extends GuardOptions {
  /** The signal number. */
  readonly signal: number;
}

/** What {@link status} found. */
export interface StatusReport {
  /** running, stale (unlocked but names a pid), stopped, or unknown (cannot tell). */
  readonly state: "running" | "stale" | "stopped" | "unknown";
  /** The LSB status code: 0 running, 1 stale, 3 stopped, 4 unknown. */
  readonly code: 0 | 1 | 3 | 4;
  /**
   * The pid the file names, or null; for a running daemon, the process that
   * holds the lock: when the named one is gone or does not hold it, the
   * oldest holder found in /proc (see `holders`).
   */
  readonly pid: number | null;
  /** The pid file. */
  readonly pidfile: string;
  /**
   * Only when the lock's holder is not the pid the file names (a supervisor
   * SIGKILLed while its child runs on, a daemon whose forked child kept the
   * inherited descriptor): every process that holds the lock.
   */
  readonly holders?: readonly number[];
  /** With `holders`: the pid the file names, or null when it names none. */
  readonly namedPid?: number | null;
  /** With `holders`: true when the named pid no longer runs (or none is named). */
  readonly namedPidGone?: boolean;
  /** When the daemon started (ISO 8601), for a running daemon. */
  readonly startTime?: string;
  /** Seconds since it started. */
  readonly uptimeSeconds?: number;
  /** Its resident set size in KiB. */
  readonly rssKiB?: number;
  /** Its open descriptors; null when /proc does not let us count them. */
  readonly fds?: number | null;
  /** Its command line. */
  readonly cmdline?: readonly string[];
  /** Why the state is unknown. */
  readonly error?: string;
  /** For a supervisor (start --supervise): its child, restarts and last exit. */
  readonly supervisor?: SupervisorStatus;
}

// ---------------------------------------------------------------- parsing helpers

/**
 * Parse a umask: octal digits, `022` or `0o022`.
 *
 * @param text the umask
 * @returns its value
 * @throws {UsageError} when malformed
 */
export function parseUmask(text: string): number {
  const m = /^(?:0o)?([0-7]{1,4})$/.exec(text);
  if (!m) throw new UsageError(`bad --umask ${quote(text)}: expected octal digits, such as 022`);
  const value = parseInt(m[1]!, 8);
  if (value > 0o777) throw new UsageError(`bad --umask ${quote(text)}: at most 0777`);
  return value;
}

// ---------------------------------------------------------------- the guard

/**
 * The guard lock: one flock'd descriptor held for a whole action (a second
 * open of the same file would deadlock against the first).
 */
export class Guard implements Disposable {
  #fd: number;
  /** The guard file. */
  readonly path: string;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /**
   * Lock the guard file, creating it, waiting at most `timeoutMs`.
   *
   * @param path the guard file
   * @param timeoutMs the longest wait
   * @param signal gives up the wait when aborted (throws its reason)
   * @returns the held guard
   * @throws {GuardTimeoutError} when another controller keeps it
   * @throws {SystemError} when it cannot be opened (or is not a regular file)
   */
  static async take(path: string, timeoutMs: number, signal?: AbortSignal): Promise<Guard> {
    let fd: number;
    try {
      fd = open(
        path,
        C.O_RDWR | C.O_CREAT | C.O_CLOEXEC | C.O_NOCTTY | platform().O_NOFOLLOW,
        0o644,
      );
    } catch (err) {
      throw describePathError(err, path, "guard file");
    }
    try {
      const st = fstatKind(fd, path);
      if (st !== C.S_IFREG) {
        throw new SystemError("open", ERRNO.EINVAL, {
          path,
          message: `guard file ${quote(path)} is a ${fileKind(st)}, not a regular file`,
        });
      }
      const started = performance.now();
      let sleep = 1;
      while (!tryFlock(fd, C.LOCK_EX, path)) {
        const waited = performance.now() - started;
        if (waited >= timeoutMs) throw new GuardTimeoutError(path, waited);
        if (signal?.aborted) {
          throw new InterruptedError(
            `interrupted (${String(signal.reason)}) while waiting for the guard ${quote(path)}`,
          );
        }
        await new Promise((r) => setTimeout(r, Math.min(sleep, timeoutMs - waited)));
        sleep = Math.min(sleep * 2, 25);
      }
      return new Guard(path, fd);
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /** Let go of the guard. Idempotent. */
  release(): void {
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }

  /** Same as {@link Guard.release}. */
  [Symbol.dispose](): void {
    this.release();
  }
}

function fstatKind(fd: number, path: string): number {
  return fstat(fd, path).mode & C.S_IFMT;
}

function describePathError(err: unknown, path: string, what: string): unknown {
  if (!(err instanceof SystemError)) return err;
  return explainOpenError(
    err,
    path,
    what,
    what === "guard file" ? { EACCES: "name a writable one with --guard FILE" } : {},
  );
}

function guardPath(options: GuardOptions): string {
  return options.guard ?? `${options.pidfile}.lock`;
}

async function withGuard<T>(
  options: GuardOptions,
  action: () => Promise<T>,
  abort?: AbortSignal,
): Promise<T> {
  using _guard = await Guard.take(
    guardPath(options),
    options.guardTimeout ?? DEFAULT_GUARD_TIMEOUT_MS,
    abort,
  );
  return await action();
}

// ---------------------------------------------------------------- checks made before anything is created

/**
 * Refuse a pid file path that can never work, before the guard file is made:
 * a symlink, a directory or other non-regular file, a missing directory, and
 * (as root) a file owned by another user or writable by all.
 */
function precheckPidfile(path: string): void {
  let st;
  try {
    st = lstat(path);
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) {
      const dir = dirname(path);
      try {
        const d = lstat(dir);
        if ((d.mode & C.S_IFMT) === C.S_IFDIR) return;
        // A symlink to a directory is fine as a directory.
        if (Deno.statSync(dir).isDirectory) return;
      } catch {
        // Fall through.
      }
      throw new SystemError("open", ERRNO.ENOENT, {
        path,
        message: `cannot open pid file ${quote(path)}: its directory ${quote(dir)} does not exist`,
      });
    }
    throw describePathError(err, path, "pid file");
  }
  const kind = st.mode & C.S_IFMT;
  if (kind === C.S_IFLNK) {
    throw new SystemError("open", ERRNO.ELOOP, {
      path,
      message: `cannot open pid file ${
        quote(path)
      }: it is a symbolic link, which is never followed`,
    });
  }
  checkPidFileStat(st, path);
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return path.slice(0, i);
}

function warnIfRemote(path: string, warn: ((m: string) => void) | undefined): void {
  if (!warn) return;
  let type: number;
  try {
    type = statfsType(dirname(path));
  } catch {
    return;
  }
  const name = type === C.NFS_SUPER_MAGIC
    ? "NFS"
    : type === C.SMB_SUPER_MAGIC || type === C.CIFS_MAGIC_NUMBER
    ? "SMB/CIFS"
    : type === C.FUSE_SUPER_MAGIC
    ? "FUSE"
    : undefined;
  if (name) {
    warn(
      `warning: pid file ${
        quote(path)
      } is on ${name}; flock(2) may not exclude processes on other hosts`,
    );
  }
}

/** A user spec resolved: the account and the group to run as. */
interface ResolvedUser {
  readonly user: User;
  readonly gid: number;
}

function resolveUser(spec: string): ResolvedUser {
  if (ids.euid() !== 0) {
    throw new SystemError("setuid", ERRNO.EPERM, {
      message: `--user needs root (this runs as uid ${ids.euid()})`,
    });
  }
  const [name, group] = spec.split(":", 2) as [string, string | undefined];
  const user = lookupUser(name);
  if (!user) {
    throw new SystemError("getpwnam", ERRNO.ENOENT, { message: `no such user: ${quote(name)}` });
  }
  let gid = user.gid;
  if (group !== undefined && group !== "") {
    const g = lookupGroup(group);
    if (g === undefined) {
      throw new SystemError("getgrnam", ERRNO.ENOENT, {
        message: `no such group: ${quote(group)}`,
      });
    }
    gid = g;
  }
  return { user, gid };
}

function checkDirectory(dir: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch {
    throw new SystemError("chdir", ERRNO.ENOENT, {
      path: dir,
      message: `cannot change directory to ${quote(dir)}: no such directory`,
    });
  }
  if (!info.isDirectory) {
    throw new SystemError("chdir", ERRNO.ENOTDIR, {
      path: dir,
      message: `cannot change directory to ${quote(dir)}: not a directory`,
    });
  }
}

/** The controller's environment with the extra variables, minus any readiness channel of its own. */
function daemonEnv(
  extra: Readonly<Record<string, string>> | undefined,
  user: User | undefined,
  keepNotify: boolean,
): Record<string, string> {
  const env = Deno.env.toObject();
  if (!keepNotify) {
    delete env[NOTIFY_SOCKET_ENV];
    delete env[NOTIFY_FD_ENV];
  }
  if (user) {
    env.HOME = user.home;
    env.USER = user.name;
    env.LOGNAME = user.name;
  }
  return { ...env, ...extra };
}

interface Prepared {
  readonly path: string;
  readonly argv: readonly string[];
  readonly env: Record<string, string>;
  readonly cwd: string;
  readonly user?: ResolvedUser;
}

function prepareLaunch(
  options: LaunchOptions & GuardOptions,
  defaults: { cwd: string; keepNotify: boolean },
): Prepared {
  if (options.command.length === 0) throw new UsageError("missing COMMAND");
  const user = options.user === undefined ? undefined : resolveUser(options.user);
  const env = daemonEnv(options.env, user?.user, defaults.keepNotify);
  const path = resolveCommand(options.command[0]!, env, Deno.cwd());
  const cwd = options.chdir ?? defaults.cwd;
  checkDirectory(cwd);
  precheckPidfile(options.pidfile);
  return {
    path,
    argv: options.command,
    env,
    cwd,
    ...(user ? { user } : {}),
  };
}

// ---------------------------------------------------------------- start

/**
 * The step that makes the daemon process: a new session leader with exactly
 * the plan's descriptors. With a user, it is this program re-executed as an
 * internal stage that drops privileges and then execs the command (same pid).
 * Supervise mode passes its own function as `StartOptions.launch`.
 *
 * @param plan what to run and how
 * @returns the daemon's pid (and the stage's error pipe, with a user)
 * @throws {SystemError} when the program cannot be started
 */
export function launchDaemon(plan: DaemonPlan): LaunchedDaemon {
  if (plan.user) {
    const stage = spawnStage({
      path: plan.path,
      argv: plan.argv,
      env: plan.env,
      cwd: plan.cwd,
      user: plan.user,
      ...(plan.gid === undefined ? {} : { gid: plan.gid }),
    }, { umask: plan.umask, fds: plan.fds });
    return { pid: stage.pid, stageErrorFd: stage.errorFd };
  }
  return {
    pid: spawn({
      path: plan.path,
      argv: plan.argv,
      env: plan.env,
      cwd: plan.cwd,
      umask: plan.umask,
      newSession: true,
      fds: plan.fds,
    }),
  };
}

/**
 * Start a command as a daemon that holds the pid file's lock, and wait until
 * it is ready.
 *
 * @param options what to start and how
 * @returns the daemon's pid
 * @throws {AlreadyRunningError} when another process holds the pid file
 * @throws {StartFailedError} when the daemon ends or times out before ready
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} for bad paths, missing programs, permissions
 * @throws {UsageError} for an empty command
 */
export function start(options: StartOptions): Promise<StartResult> {
  const prepared = prepareLaunch(options, { cwd: "/", keepNotify: false });
  return withGuard(options, () => startLocked(options, prepared), options.signal);
}

async function startLocked(options: StartOptions, prepared: Prepared): Promise<StartResult> {
  warnIfRemote(options.pidfile, options.onWarning);
  const lock = await PidFile.acquire(options.pidfile).catch((err) => {
    throw withRealHolder(err);
  });
  let output = -1;
  let readiness: Readiness | undefined;
  let pidfd: number | undefined;
  let launchedPid: number | undefined;
  try {
    if (options.output !== undefined) {
      try {
        output = open(
          options.output,
          C.O_WRONLY | C.O_APPEND | C.O_CREAT | C.O_CLOEXEC | C.O_NOCTTY,
          0o640,
        );
      } catch (err) {
        throw describePathError(err, options.output, "output file");
      }
    }
    const mode: ReadinessMode = options.supervise
      ? { kind: "fd", fd: SUPERVISOR_READY_FD } // the supervisor's own word, after its child's
      : options.notifyFd !== undefined
      ? { kind: "fd", fd: options.notifyFd }
      : options.notifySocket
      ? { kind: "socket" }
      : { kind: "alive", afterMs: options.readyAfter ?? DEFAULT_READY_AFTER_MS };
    readiness = Readiness.prepare(mode, prepared.user ? { owner: prepared.user.user } : {});
    const stdio: FdSource = output >= 0 ? output : "null";
    const plan: DaemonPlan = {
      path: prepared.path,
      argv: prepared.argv,
      env: { ...prepared.env, ...readiness.env },
      cwd: prepared.cwd,
      umask: options.umask ?? 0o022,
      fds: { 0: "null", 1: stdio, 2: stdio, [lockFdFor(options)]: lock.fd, ...readiness.childFds },
      ...(prepared.user ? { user: prepared.user.user, gid: prepared.user.gid } : {}),
    };
    const launch = options.launch ?? (options.supervise
      ? superviseLauncher(options.supervise, {
        pidfile: options.pidfile,
        lockFd: lockFdFor(options),
        launch: launchDaemon,
      })
      : launchDaemon);
    const launched = launch(plan);
    const pid = launched.pid;
    // First thing: the daemon holds the lock from now on, and the file must name it.
    lock.writePid(pid);
    launchedPid = pid;
    readiness.spawned();
    if (output >= 0) close(output);
    output = -1;
    pidfd = pidfdOpen(pid);
    const started = performance.now();
    const timeout = options.readyTimeout ?? DEFAULT_READY_TIMEOUT_MS;

    const fail = async (why: string, killedByUs: boolean, extra = "") => {
      const alive = pidfd !== undefined && pollNow([{ fd: pidfd, events: C.POLLIN }])[0] === 0;
      const exit = await killAndReap(pid, pidfd);
      const how = killedByUs ? "" : alive ? "; killed it" : exitText(exit);
      const text = `${why}${how}${extra}`;
      lock.release();
      await PidFile.waitForRelease(options.pidfile, { timeout: 2000 });
      const tail = options.output === undefined ? [] : lastLines(options.output, 10);
      return new StartFailedError(text, pid, killedByUs ? undefined : exit, options.output, tail);
    };

    // Wait for `work`, unless the caller aborts first: then kill the daemon,
    // let `work` finish (the daemon's death ends it at once), and fail.
    const abortable = async <T>(work: Promise<T>): Promise<T> => {
      const signal = options.signal;
      if (!signal) return await work;
      let onAbort = () => {};
      const aborted = new Promise<"aborted">((resolve) => {
        onAbort = () => resolve("aborted");
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      });
      try {
        const first = await Promise.race([work, aborted]);
        if (first !== "aborted") return first as T;
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
      const reason = String(signal.reason);
      const err = await fail(
        `interrupted (${reason}) before the daemon was ready; killed it`,
        true,
      );
      await work.catch(() => {});
      throw err;
    };

    if (launched.stageErrorFd !== undefined) {
      const message = await abortable(awaitStage(launched.stageErrorFd, pidfd ?? -1, timeout));
      if (message === "timeout") {
        throw await fail(`the daemon was not ready after ${seconds(timeout)}; killed it`, true);
      }
      if (message !== undefined) throw await fail(message, true);
    }
    const remaining = Math.max(0, timeout - (performance.now() - started));
    const result = pidfd === undefined
      ? { ready: false as const, reason: "exited" as const, waitedMs: 0 }
      : await abortable(readiness.wait(pidfd, remaining));
    if (!result.ready) {
      const extra = [
        result.status === undefined ? "" : `; its last status: ${quote(result.status)}`,
        result.errno === undefined
          ? ""
          : `; it reported ERRNO=${result.errno} (${describeErrno(result.errno)})`,
      ].join("");
      switch (result.reason) {
        case "timeout":
          throw await fail(
            `the daemon was not ready after ${seconds(timeout)}; killed it`,
            true,
            extra,
          );
        case "closed":
          if (options.supervise) { // supervise mode: its fd closes when it exits
            throw await fail("the supervisor ended before its first child was ready", false, extra);
          }
          throw await fail(
            `the daemon closed its notification descriptor ${options.notifyFd} ` +
              `without writing a newline`,
            false,
            extra,
          );
        case "exited":
          throw await fail("the daemon ended before it was ready", false, extra);
      }
    }
    let finalPid = pid;
    if (result.mainPid !== undefined && result.mainPid !== pid) {
      const named = fileIdentity(options.pidfile);
      if (named && holdsLockInFdinfo(result.mainPid, named) === true) {
        lock.writePid(result.mainPid);
        finalPid = result.mainPid;
      } else {
        options.onWarning?.(
          `warning: ignoring MAINPID=${result.mainPid}: that process does not hold the pid file`,
        );
      }
    }
    lock.detach();
    launchedPid = undefined;
    return { pid: finalPid, ...(result.status === undefined ? {} : { status: result.status }) };
  } catch (err) {
    // Anything unexpected after the spawn (a failed write of the pid file, say):
    // the daemon must not outlive the start that failed.
    if (launchedPid !== undefined && !(err instanceof StartFailedError)) {
      await killAndReap(launchedPid, pidfd);
    }
    throw err;
  } finally {
    if (output >= 0) close(output);
    if (pidfd !== undefined) close(pidfd);
    readiness?.close();
    lock.release(); // a no-op once detached
  }
}

/** The daemon's descriptor number for the pid file lock: 3, or 4 when the notification fd is 3. */
function lockFdFor(options: StartOptions): number {
  return options.notifyFd === 3 ? 4 : 3;
}

/** Kill the daemon and its process group, wait for it, reap it: how it ended. */
async function killAndReap(
  pid: number,
  pidfd: number | undefined,
): Promise<ExitReason | undefined> {
  const already = reap(pid);
  if (already) {
    killGroup(pid);
    return already;
  }
  // The leader is our unreaped child, so its pid (and group id) cannot be reused yet.
  killGroup(pid);
  if (pidfd !== undefined) {
    pidfdSendSignal(pidfd, 9);
    const watch = [{ fd: pidfd, events: C.POLLIN }];
    if (pollNow(watch)[0] === 0) await pollWait(watch, 5000);
  } else {
    kill(pid, 9);
  }
  for (let i = 0; i < 50; i++) {
    const r = reap(pid);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 10));
  }
  return undefined;
}

function killGroup(pgid: number): void {
  try {
    kill(-pgid, 9);
  } catch {
    // EPERM: a member changed user; nothing more we can do.
  }
}

function exitText(exit: ExitReason | undefined): string {
  return exit ? ` (${describeExit(exit)})` : "";
}

function seconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

/** The last `count` lines of a file (reading at most its last 64 KiB). */
function lastLines(path: string, count: number): string[] {
  try {
    using file = Deno.openSync(path, { read: true });
    const size = file.statSync().size;
    const take = Math.min(size, 65536);
    file.seekSync(size - take, Deno.SeekMode.Start);
    const buf = new Uint8Array(take);
    let got = 0;
    while (got < take) {
      const n = file.readSync(buf.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
    const lines = new TextDecoder().decode(buf.subarray(0, got)).split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    return lines.slice(-count);
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------- lock holders

/**
 * A process that holds the pid file's lock through one of its own
 * descriptors: the daemon, or (when the pid file names a process that is
 * gone or does not hold it) a child that inherited the locked descriptor,
 * such as a supervised COMMAND whose supervisor was SIGKILLed.
 */
interface Holder {
  readonly pid: number;
  readonly ppid: number;
  /** Its process group. */
  readonly pgid: number;
  /** When it started, in clock ticks since boot (field 22 of /proc/PID/stat). */
  readonly startTicks: number;
}

/** The device and inode of the pid file, or undefined when it is gone. */
function fileIdentity(path: string): Pick<FileStat, "dev" | "ino"> | undefined {
  try {
    return lstat(path);
  } catch {
    return undefined;
  }
}

/** ppid, process group and start time of a running process; undefined when gone or a zombie. */
function holderFacts(pid: number): Holder | undefined {
  const st = procStat(pid);
  if (!st || st.state === "Z" || st.state === "X") return undefined;
  return { pid, ppid: st.ppid, pgid: st.pgid, startTicks: st.startTicks };
}

/**
 * Every process that holds the lock on the file, found by scanning
 * /proc/*\/fd (through libc: Deno's own API would need --allow-all for
 * /proc). Processes /proc hides from us (another user's, as non-root) are
 * not found. This process and its ancestors are never listed: a controller
 * run from inside the daemon's own tree (a shell that inherited the
 * descriptor) must not signal the shell that runs it.
 */
function lockHolders(st: Pick<FileStat, "dev" | "ino">): Holder[] {
  let entries: string[];
  try {
    entries = listDirectory("/proc");
  } catch {
    return [];
  }
  const skip = selfAndAncestors();
  const out: Holder[] = [];
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0 || skip.has(pid)) continue;
    if (holdsLockInFdinfo(pid, st) !== true) continue;
    const facts = holderFacts(pid);
    if (facts) out.push(facts);
  }
  return out;
}

/** This process's pid and its ancestors' (up to init). */
function selfAndAncestors(): Set<number> {
  const out = new Set([ids.pid()]);
  let pid = ids.ppid();
  while (pid > 1 && !out.has(pid) && out.size < 256) {
    out.add(pid);
    const facts = holderFacts(pid);
    if (!facts) break;
    pid = facts.ppid;
  }
  return out;
}

/**
 * The holders that are not descendants of another holder (a worker that
 * inherited the descriptor from its master is not one), oldest first: the
 * processes to act on, as a supervisor or a parent would.
 */
function topHolders(holders: readonly Holder[]): Holder[] {
  const pids = new Set(holders.map((h) => h.pid));
  return holders.filter((h) => !pids.has(h.ppid))
    .sort((a, b) => a.startTicks - b.startTicks || a.pid - b.pid);
}

/**
 * Who holds a locked pid file: the pid it names when that process holds it
 * (or /proc does not let us tell), else the oldest top holder found in /proc
 * (the named pid again when none can be seen).
 *
 * @param path the pid file
 * @param named the pid the file names, if any
 */
function lockHolder(path: string, named: number | undefined): number | undefined {
  const st = fileIdentity(path);
  if (!st) return named;
  if (named !== undefined && holdsLockInFdinfo(named, st) !== false) return named;
  return topHolders(lockHolders(st))[0]?.pid ?? named;
}

/**
 * An AlreadyRunningError naming the process that really holds the lock,
 * when the pid file names one that is gone or does not hold it.
 */
function withRealHolder(err: unknown): unknown {
  if (!(err instanceof AlreadyRunningError)) return err;
  const holder = lockHolder(err.path, err.pid);
  return holder === err.pid ? err : new AlreadyRunningError(err.path, holder);
}

// ---------------------------------------------------------------- stop, signal

/** A process that stop or signal acts on, named for good by a pidfd. */
interface Target {
  readonly pid: number;
  readonly pidfd: number;
  /** It was found as a holder and leads its own process group: signal the group (--kill-group). */
  readonly group: boolean;
}

/** What stop and signal act on. */
interface Targets {
  /** The pid the pid file names, if any. */
  readonly named: number | undefined;
  /** True: `list` is the named process; false: the lock's holders found in /proc. */
  readonly isNamed: boolean;
  /** The pid file's device and inode. */
  readonly st: Pick<FileStat, "dev" | "ino">;
  readonly list: Target[];
}

/**
 * Find the running daemon and open a pidfd on it, checking after the open
 * that the lock is still held, the file still names that pid and (where /proc
 * lets us see) the process holds the lock: the pidfd then names the daemon
 * for good, and a recycled pid is never signalled. When the named process is
 * gone or does not hold the lock while the lock is still held (a supervisor
 * SIGKILLed while its child runs on, a daemon whose forked child kept the
 * inherited descriptor), the targets are the processes that hold it, found
 * in /proc and each re-checked after its pidfd is open.
 */
async function findTargets(pidfile: string): Promise<Targets> {
  for (let attempt = 0;; attempt++) {
    const retry = attempt < 20;
    const found = probeSync(pidfile);
    if (found.state === "absent") throw new NotRunningError(pidfile);
    if (found.state === "stale") {
      // Taking the lock to empty the file also proves nobody holds it (a probe can miss).
      if (!await emptyPidfile(pidfile) && retry) continue;
      throw new NotRunningError(pidfile, found.pid);
    }
    const st = fileIdentity(pidfile);
    if (!st) {
      if (retry) continue;
      throw new NotRunningError(pidfile);
    }
    const named = found.pid;
    if (named !== undefined) {
      const pidfd = pidfdOpen(named);
      if (pidfd !== undefined) {
        const again = probeSync(pidfile);
        if (again.state !== "running" || again.pid !== named) {
          close(pidfd);
          if (retry) continue;
          throw new StopFailedError(`pid file ${quote(pidfile)} keeps changing; try again`, named);
        }
        if (holdsLockInFdinfo(named, st) !== false) {
          return { named, isNamed: true, st, list: [{ pid: named, pidfd, group: false }] };
        }
        close(pidfd);
      }
    }
    const list = openHolders(st);
    if (list.length > 0) return { named, isNamed: false, st, list };
    // No holder in sight: it may have let go just now (look again), or /proc hides it.
    if (retry) {
      await new Promise((r) => setTimeout(r, 10));
      continue;
    }
    throw new StopFailedError(
      `pid file ${quote(pidfile)} is locked, but ${
        named === undefined ? "names no pid" : `pid ${named} it names does not hold it`
      }, and no process that holds it can be seen in /proc; not signalling anything`,
      named,
    );
  }
}

/**
 * pidfds on the top holders of the lock (see {@link topHolders}), each
 * re-checked after the open: a pid reused between the scan and the open does
 * not hold the lock, so it is dropped, never signalled.
 */
function openHolders(st: Pick<FileStat, "dev" | "ino">): Target[] {
  const out: Target[] = [];
  for (const h of topHolders(lockHolders(st))) {
    let pidfd: number | undefined;
    try {
      pidfd = pidfdOpen(h.pid);
    } catch {
      continue; // EMFILE and the like: leave this one
    }
    if (pidfd === undefined) continue;
    if (holdsLockInFdinfo(h.pid, st) !== true) {
      close(pidfd);
      continue;
    }
    out.push({ pid: h.pid, pidfd, group: h.pgid === h.pid });
  }
  return out;
}

/** The targets whose process has not exited (its pidfd is not readable yet). */
function liveTargets(targets: readonly Target[]): Target[] {
  if (targets.length === 0) return [];
  const revents = pollNow(targets.map((t) => ({ fd: t.pidfd, events: C.POLLIN })));
  return targets.filter((_, i) => revents[i] === 0);
}

/**
 * Signal one target through its pidfd; a group leader found as a holder gets
 * the signal as a group (its pgid cannot be reused while the leader lives,
 * and we hold its pidfd).
 *
 * @returns false when it was already gone
 */
function signalTarget(t: Target, sig: number): boolean {
  if (t.group && liveTargets([t]).length === 1) {
    try {
      if (kill(-t.pid, sig)) return true;
    } catch {
      // EPERM for a member: the leader itself still gets it below.
    }
  }
  return pidfdSendSignal(t.pidfd, sig, `pid ${t.pid}`);
}

/** "the pid file names pid N, which is gone", for a message about holders. */
function describeNamed(named: number | undefined): string {
  if (named === undefined) return "the pid file names no pid";
  return processRuns(named)
    ? `the pid file names pid ${named}, which does not hold its lock`
    : `the pid file names pid ${named}, which is gone`;
}

function pidList(pids: readonly number[]): string {
  return pids.length === 1 ? `pid ${pids[0]}` : `pids ${pids.join(", ")}`;
}

/**
 * Stop the daemon: signal it through a pidfd per the schedule and wait for its
 * lock to be released; then leave the pid file empty. When the pid file names
 * a process that is gone or does not hold the lock, the processes that hold
 * it are stopped instead (found in /proc, each re-checked after its pidfd is
 * open); when every process signalled is gone but the lock is still held, the
 * processes left holding it get the last signal and the rest of the schedule.
 *
 * @param options the pid file and the schedule
 * @returns the pid stopped and the signals sent
 * @throws {NotRunningError} when it is not running (a stale file is emptied, never signalled)
 * @throws {StopFailedError} when it still runs after the schedule, or the lock
 *   is held but no process that holds it can be seen in /proc
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} for unreadable files and refused signals (EPERM)
 */
export function stop(options: StopOptions): Promise<StopResult> {
  precheckPidfileForRead(options.pidfile);
  return withGuard(options, () => stopLocked(options));
}

function precheckPidfileForRead(path: string): void {
  let st;
  try {
    st = lstat(path);
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) return;
    throw describePathError(err, path, "pid file");
  }
  if ((st.mode & C.S_IFMT) === C.S_IFLNK) {
    throw new SystemError("open", ERRNO.ELOOP, {
      path,
      message: `cannot open pid file ${
        quote(path)
      }: it is a symbolic link, which is never followed`,
    });
  }
  if ((st.mode & C.S_IFMT) !== C.S_IFREG) {
    throw new SystemError("open", ERRNO.EINVAL, {
      path,
      message: `pid file ${quote(path)} is a ${fileKind(st.mode)}, not a regular file`,
    });
  }
}

/**
 * Leave the pid file empty once nobody holds it: take the lock and release it
 * (which truncates).
 *
 * @returns false when the lock is still held; true once emptied, or when we
 *   may not open the file to check (what the probe said stands)
 */
async function emptyPidfile(pidfile: string): Promise<boolean> {
  try {
    const lock = await PidFile.acquire(pidfile);
    lock.release();
    return true;
  } catch (err) {
    // Held again (or still: a /proc/locks miss), or we may not write it: leave it.
    return !(err instanceof AlreadyRunningError);
  }
}

async function stopLocked(options: StopOptions): Promise<StopResult> {
  const schedule = options.schedule ?? parseSchedule(DEFAULT_SCHEDULE);
  const pidfile = options.pidfile;
  const found = await findTargets(pidfile);
  const targets = found.list;
  if (!found.isNamed) {
    options.onWarning?.(
      `${describeNamed(found.named)}; stopping ${pidList(targets.map((t) => t.pid))}, which hold${
        targets.length === 1 ? "s" : ""
      } the lock`,
    );
  }
  const started = performance.now();
  const sent: number[] = [];

  /**
   * When every process we signalled is gone but the lock is still held, the
   * processes left holding it (a worker that inherited the descriptor, the
   * child of a supervisor that was killed) get the last signal too.
   */
  const retarget = (sig: number): boolean => {
    if (liveTargets(targets).length > 0) return false;
    const fresh = openHolders(found.st);
    targets.push(...fresh);
    for (const t of fresh) signalTarget(t, sig);
    return fresh.length > 0;
  };

  /** Wait up to `ms` for the lock to be free, waking when a target exits. */
  const waitReleased = async (ms: number): Promise<boolean> => {
    const deadline = performance.now() + ms;
    let slice = 2;
    for (;;) {
      if (probeSync(pidfile).state !== "running" && await emptyPidfile(pidfile)) return true;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return false;
      const wait = Math.max(1, Math.min(slice, remaining));
      slice = Math.min(slice * 2, 100);
      if (sent.length > 0 && retarget(sent[sent.length - 1]!)) continue;
      const live = liveTargets(targets);
      if (live.length === 0) await new Promise((r) => setTimeout(r, wait));
      else await pollWait(live.map((t) => ({ fd: t.pidfd, events: C.POLLIN })), wait);
    }
  };

  try {
    let i = 0;
    let released = false;
    for (;;) {
      if (i >= schedule.steps.length) {
        if (schedule.repeatAt === schedule.steps.length) {
          while (!await waitReleased(60_000));
          released = true;
          break;
        }
        if (schedule.repeatAt < 0) break;
        i = schedule.repeatAt;
      }
      const step = schedule.steps[i++]!;
      if ("signal" in step) {
        if (!retarget(step.signal)) {
          for (const t of liveTargets(targets)) signalTarget(t, step.signal);
        }
        sent.push(step.signal);
      } else if (await waitReleased(step.waitMs)) {
        released = true;
        break;
      }
    }
    const pid = targets[0]!.pid;
    if (!released) {
      const left = lockHolders(found.st).map((h) => h.pid);
      const who = left.length > 0 ? left : liveTargets(targets).map((t) => t.pid);
      throw new StopFailedError(
        `${who.length > 0 ? pidList(who) : `pid ${pid}`} still hold${who.length > 1 ? "" : "s"} ${
          quote(pidfile)
        } after the stop schedule (${sent.map(signalName).join(", ")} sent)`,
        who[0] ?? pid,
      );
    }
    return {
      pid,
      signals: sent,
      waitedMs: Math.round(performance.now() - started),
      ...(found.isNamed ? {} : { holders: [...new Set(targets.map((t) => t.pid))] }),
    };
  } finally {
    for (const t of targets) close(t.pidfd);
  }
}

/**
 * Send a signal to the running daemon through a pidfd (after the same
 * re-check as stop). When the pid file names a process that is gone or does
 * not hold the lock, the signal goes to the processes that hold it.
 *
 * @param options the pid file and the signal
 * @returns the daemon's pid (the first holder's, when the named one is not)
 * @throws {NotRunningError} when it is not running
 * @throws {StopFailedError} when the lock is held but no holder can be found
 * @throws {SystemError} EPERM and the like
 */
export function sendSignal(options: SignalOptions): Promise<number> {
  precheckPidfileForRead(options.pidfile);
  return withGuard(options, async () => {
    const found = await findTargets(options.pidfile);
    try {
      if (!found.isNamed) {
        options.onWarning?.(
          `${describeNamed(found.named)}; signalling ${
            pidList(found.list.map((t) => t.pid))
          }, which hold${found.list.length === 1 ? "s" : ""} the lock`,
        );
      }
      let delivered = false;
      for (const t of found.list) {
        if (signalTarget(t, options.signal)) delivered = true;
      }
      if (!delivered) throw new NotRunningError(options.pidfile);
      return found.list[0]!.pid;
    } finally {
      for (const t of found.list) close(t.pidfd);
    }
  });
}

/**
 * Ask the daemon to re-read its configuration: SIGHUP.
 *
 * @param options the pid file
 * @returns the daemon's pid
 * @throws {NotRunningError} when it is not running
 */
export function reload(options: GuardOptions): Promise<number> {
  return sendSignal({ ...options, signal: 1 });
}

/**
 * Stop (if running) then start, under one hold of the guard.
 *
 * @param options start's and stop's options
 * @returns the new daemon's pid
 * @throws what {@link start} and {@link stop} throw, except NotRunningError
 */
export function restart(options: RestartOptions): Promise<StartResult> {
  const prepared = prepareLaunch(options, { cwd: "/", keepNotify: false });
  return withGuard(options, async () => {
    try {
      await stopLocked(options);
    } catch (err) {
      if (!(err instanceof NotRunningError)) throw err;
    }
    return await startLocked(options, prepared);
  }, options.signal);
}

// ---------------------------------------------------------------- status

/**
 * What the pid file says, without waiting for anything (no guard, no lock).
 *
 * @param pidfile the pid file
 * @returns the state, LSB code and, for a running daemon, facts from /proc
 */
export function status(pidfile: string): StatusReport {
  let found;
  try {
    found = probeSync(pidfile);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { state: "unknown", code: 4, pid: null, pidfile, error: message };
  }
  if (found.state === "absent") return { state: "stopped", code: 3, pid: null, pidfile };
  if (found.state === "stale") return { state: "stale", code: 1, pid: found.pid, pidfile };
  const named = found.pid;
  const st = fileIdentity(pidfile);
  if (st && (named === undefined || holdsLockInFdinfo(named, st) === false)) {
    // The lock is held, but not by the pid the file names: say who holds it.
    const holders = lockHolders(st);
    if (holders.length > 0) {
      const main = topHolders(holders)[0]!.pid;
      return {
        state: "running",
        code: 0,
        pid: main,
        pidfile,
        holders: holders.map((h) => h.pid).sort((a, b) => a - b),
        namedPid: named ?? null,
        namedPidGone: named === undefined || !processRuns(named),
        ...procFacts(main),
      };
    }
    // Nobody in sight: the holder may have let go just now.
    try {
      const again = probeSync(pidfile);
      if (again.state === "absent") return { state: "stopped", code: 3, pid: null, pidfile };
      if (again.state === "stale") return { state: "stale", code: 1, pid: again.pid, pidfile };
    } catch {
      // Changed under us: report what the first look found.
    }
  }
  const pid = named ?? null;
  if (pid === null) return { state: "running", code: 0, pid, pidfile };
  const supervisor = readSupervisorStatus(pidfile, pid);
  return {
    state: "running",
    code: 0,
    pid,
    pidfile,
    ...procFacts(pid),
    ...(supervisor ? { supervisor } : {}),
  };
}

function procFacts(pid: number): Partial<StatusReport> {
  const started = startedAt(procStat(pid)?.startTicks ?? NaN);
  const rss = vmRssKiB(pid);
  const cmdline = cmdlineOf(pid);
  let fds: number | null;
  try {
    fds = listDirectory(`/proc/${pid}/fd`).length;
  } catch {
    fds = null;
  }
  return {
    ...(started.time ? { startTime: started.time.toISOString() } : {}),
    ...(started.uptimeSeconds === undefined ? {} : { uptimeSeconds: started.uptimeSeconds }),
    ...(rss === undefined ? {} : { rssKiB: rss }),
    fds,
    ...(cmdline ? { cmdline } : {}),
  };
}

// ---------------------------------------------------------------- run

/**
 * Take the lock in the foreground and execve into the command, which keeps
 * this pid and the lock (the descriptor is left open across the exec).
 *
 * @param options what to run
 * @returns never: it execs; with `supervise`, the supervisor's exit code
 * @throws {AlreadyRunningError} when another process holds the pid file
 * @throws {SystemError} when the exec or a check fails (the lock is released)
 */
export async function run(options: RunOptions): Promise<number> {
  const prepared = prepareLaunch(options, { cwd: Deno.cwd(), keepNotify: true });
  let lock: PidFile;
  {
    using _guard = await Guard.take(
      guardPath(options),
      options.guardTimeout ?? DEFAULT_GUARD_TIMEOUT_MS,
    );
    warnIfRemote(options.pidfile, options.onWarning);
    lock = await PidFile.acquire(options.pidfile).catch((err) => {
      throw withRealHolder(err);
    });
  }
  if (options.supervise) {
    // supervise mode: this process is the supervisor; it keeps the lock and its pid.
    if (prepared.user) {
      lock.release();
      throw new UsageError("--user with run --supervise is not supported (start --supervise is)");
    }
    return await runSupervisor(
      {
        ...options.supervise,
        pidfile: options.pidfile,
        path: prepared.path,
        argv: prepared.argv,
        cwd: prepared.cwd,
        ...(options.umask === undefined ? {} : { umask: options.umask }),
      },
      lock,
      prepared.env,
    );
  }
  try {
    setCloexec(lock.fd, false);
    if (options.umask !== undefined) setUmask(options.umask);
    if (prepared.user) {
      try {
        becomeUser(prepared.user.user, prepared.user.gid);
      } catch (err) {
        throw new SystemError("setuid", err instanceof SystemError ? err.errno : ERRNO.EPERM, {
          message: `cannot become user ${quote(prepared.user.user.name)}: ${
            err instanceof Error ? err.message : err
          }`,
        });
      }
    }
    if (options.chdir !== undefined) Deno.chdir(prepared.cwd);
    resetSignals();
    execve(prepared.path, prepared.argv, prepared.env);
  } catch (err) {
    lock.release();
    throw err;
  }
}
