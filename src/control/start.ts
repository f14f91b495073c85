/**
 * `start`: lock the pid file, launch the daemon with the locked descriptor in
 * a new session, wait until it is ready, and hand the lock over to it; or,
 * when it fails first, kill it and everything it forked that holds the lock,
 * and say why.
 *
 * @module
 */

import {
  close,
  describeErrno,
  type ExitReason,
  fstat,
  openBeside,
  pidfdOpen,
  pread,
  quote,
} from "../ffi/mod.ts";
import { fileIdentity, holdsLockInFdinfo, lockHolders } from "../lock/holders.ts";
import { openOutputFile } from "../lock/output.ts";
import type { PidFile } from "../lock/pidfile.ts";
import { describeExit } from "../launch/exit.ts";
import type { DaemonPlan, LaunchedDaemon } from "../launch/plan.ts";
import { awaitStage, spawnStage } from "../launch/privilege.ts";
import { Readiness, type ReadinessMode, type ReadyResult } from "../launch/readiness.ts";
import { spawn } from "../launch/spawn.ts";
import { Aborted, StartingDaemon } from "../launch/starting.ts";
import {
  spawnKeeper,
  superviseLauncher,
  SUPERVISOR_READY_FD,
  SUPERVISOR_WRITE_FD,
} from "../supervisor/stage.ts";
import type { ChildReadiness, ClusterLockSettings } from "../supervisor/settings.ts";
import { HeldElsewhereError, InterruptedError, seconds, StartFailedError } from "./errors.ts";
import { withGuard } from "./guard.ts";
import {
  DEFAULT_CHDIR,
  DEFAULT_READY_AFTER_MS,
  DEFAULT_READY_TIMEOUT_MS,
  DEFAULT_UMASK,
  type StartOptions,
  type StartResult,
} from "./options.ts";
import { lockPidfile, type Prepared, prepareLaunch } from "./precheck.ts";

/**
 * The step that makes the daemon process: a new session leader with exactly
 * the plan's descriptors. With a user, it is this program re-executed as an
 * internal stage that drops privileges and then execs the command (same pid).
 * Supervise mode wraps it (see `superviseLauncher`).
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
export async function start(options: StartOptions): Promise<StartResult> {
  const prepared = prepareStart(options);
  await checkLockOf(options);
  return await withGuard(options, () => startLocked(options, prepared), options.signal);
}

/**
 * The cluster lock's checks, made before anything is created (they load the
 * cluster code, so only when a lock is asked for).
 *
 * @param options a start's options
 * @throws {UsageError} for a bad lock URL or a TTL too short
 */
export async function checkLockOf(options: StartOptions): Promise<void> {
  const lock = clusterLock(options);
  if (!lock) return;
  const { checkClusterLock } = await import("./cluster.ts");
  await checkClusterLock(
    lock,
    options.supervise?.stopSchedule ?? options.stopSchedule,
    options.user,
  );
}

/**
 * The checks of a start, made before anything is created.
 *
 * @param options what to start
 * @returns what the launch needs
 */
export function prepareStart(options: StartOptions): Prepared {
  return prepareLaunch(options, { cwd: DEFAULT_CHDIR, keepNotify: false });
}

/**
 * Start, with the guard held: lock, launch, wait, hand over.
 *
 * @param options what to start and how
 * @param prepared the checked command, user and directory
 * @returns the daemon's pid
 */
export async function startLocked(
  options: StartOptions,
  prepared: Prepared,
): Promise<StartResult> {
  using lock = await lockPidfile(options);
  if (options.signal?.aborted) {
    throw new InterruptedError(
      `interrupted (${String(options.signal.reason)}) before the daemon was started`,
    );
  }
  using readiness = Readiness.prepare(
    readinessMode(options),
    prepared.user ? { owner: prepared.user.user } : {},
  );
  await using daemon = await launchWithOutput(options, prepared, lock, readiness);
  const result = await waitUntilReady(daemon, readiness, options);
  const keeper = await keepIfDropped(daemon, lock, options);
  return handOver(daemon, result, options, keeper);
}

/** A readiness wait that ended with the daemon ready. */
type Ready = Extract<ReadyResult, { ready: true }>;

/** How the daemon says it is ready: the supervisor's pipe, --notify-fd, sd_notify, or staying alive. */
function readinessMode(options: StartOptions): ReadinessMode {
  // The supervisor (or keeper) says so after its child's readiness.
  if (options.supervise || options.keeper || clusterLock(options)) {
    return { kind: "fd", fd: SUPERVISOR_READY_FD };
  }
  if (options.notifyFd !== undefined) return { kind: "fd", fd: options.notifyFd };
  if (options.notifySocket) return { kind: "socket" };
  return { kind: "alive", afterMs: options.readyAfter ?? DEFAULT_READY_AFTER_MS };
}

/** The daemon's descriptor number for the pid file lock: 3, or 4 when the notification fd is 3. */
function lockFdFor(options: StartOptions): number {
  return options.notifyFd === 3 ? 4 : 3;
}

/**
 * Open the output file (or use /dev/null), launch the daemon with it as
 * stdout and stderr, and close our copy.
 */
async function launchWithOutput(
  options: StartOptions,
  prepared: Prepared,
  lock: PidFile,
  readiness: Readiness,
): Promise<StartingDaemon> {
  const output = options.output === undefined
    ? -1
    : openOutputFile(options.output, prepared.user?.user.uid);
  try {
    // Where this run's output begins: a failure quotes only what was written since.
    const mark = output >= 0 ? outputMark(output, options.output!) : undefined;
    const plan = daemonPlan(options, prepared, lock, readiness, output);
    const launch = chooseLauncher(options);
    const daemon = await StartingDaemon.launch(lock, () => launch(plan));
    if (mark) outputMarks.set(daemon, mark);
    readiness.spawned();
    return daemon;
  } finally {
    if (output >= 0) close(output);
  }
}

/** What the daemon is: the command, its environment and descriptors. */
function daemonPlan(
  options: StartOptions,
  prepared: Prepared,
  lock: PidFile,
  readiness: Readiness,
  output: number,
): DaemonPlan {
  const stdio = output >= 0 ? output : "null";
  const fds: Record<number, number | "null"> = {
    0: "null",
    1: stdio,
    2: stdio,
    [lockFdFor(options)]: lock.fd, // read-only: the daemon holds the lock, cannot write the file
    ...readiness.childFds,
  };
  // The supervisor or keeper (singleton-run's own) writes the file; never the program.
  if (stagedIn(options)) fds[SUPERVISOR_WRITE_FD] = lock.writeFd;
  return {
    path: prepared.path,
    argv: prepared.argv,
    env: { ...prepared.env, ...readiness.env },
    cwd: prepared.cwd,
    umask: options.umask ?? DEFAULT_UMASK,
    fds,
    ...(prepared.user ? { user: prepared.user.user, gid: prepared.user.gid } : {}),
  };
}

/** The supervisor, or the command itself. */
function chooseLauncher(options: StartOptions): (plan: DaemonPlan) => LaunchedDaemon {
  const lock = clusterLock(options);
  if (options.supervise) {
    return superviseLauncher({ ...options.supervise, ...(lock ? { lock } : {}) }, {
      pidfile: options.pidfile,
      lockFd: lockFdFor(options),
      launch: launchDaemon,
    });
  }
  if (!options.keeper && !lock) return launchDaemon;
  // The keeper runs COMMAND once, with COMMAND's own readiness and output (and holds a cluster lock).
  return superviseLauncher({
    restart: "never",
    readiness: childReadiness(options),
    readyTimeout: options.readyTimeout ?? DEFAULT_READY_TIMEOUT_MS,
    ...(options.output === undefined ? {} : { output: options.output }),
    ...(options.daemonPidfile === undefined ? {} : { daemonPidfile: options.daemonPidfile }),
    ...(lock ? { lock } : {}),
    ...(options.stopSchedule === undefined ? {} : { stopSchedule: options.stopSchedule }),
  }, { pidfile: options.pidfile, lockFd: lockFdFor(options), launch: launchDaemon, keep: true });
}

/** Whether COMMAND runs under a supervisor or a keeper (this program's own stage). */
function stagedIn(options: StartOptions): boolean {
  return options.supervise !== undefined || options.keeper === true ||
    clusterLock(options) !== undefined;
}

/** The cluster lock asked for, in start's options or in its supervise settings. */
function clusterLock(options: StartOptions): ClusterLockSettings | undefined {
  return options.lock ?? options.supervise?.lock;
}

/** COMMAND's readiness, as start's options give it, for the keeper to wait on. */
function childReadiness(options: StartOptions): ChildReadiness {
  if (options.notifyFd !== undefined) return { kind: "fd", fd: options.notifyFd };
  if (options.notifySocket) return { kind: "socket" };
  return { kind: "alive", afterMs: options.readyAfter ?? DEFAULT_READY_AFTER_MS };
}

/**
 * When nothing but this process holds the lock any more (the daemon closed
 * its descriptors, as the classic rules say), hand the lock to a keeper that
 * holds it until the daemon's main process exits.
 *
 * @returns the keeper's pid, or undefined when the daemon holds the lock itself
 */
async function keepIfDropped(
  daemon: StartingDaemon,
  lock: PidFile,
  options: StartOptions,
): Promise<number | undefined> {
  if (options.supervise || options.keeper || clusterLock(options)) return undefined;
  const st = fileIdentity(options.pidfile);
  // The usual case first, and the cheap one: the main process holds it; else any process.
  if (!st || holdsLockInFdinfo(daemon.pid, st) === true || lockHolders(st).length > 0) {
    return undefined;
  }
  if (daemon.pidfd === undefined) return undefined;
  using ready = Readiness.prepare({ kind: "fd", fd: SUPERVISOR_READY_FD });
  let keeper: number;
  let keeperFd: number | undefined;
  try {
    keeper = spawnKeeper({
      pidfile: options.pidfile,
      lockFd: lock.fd,
      writeFd: lock.writeFd,
      pid: daemon.pid,
      pidfd: daemon.pidfd,
      ready: { fd: ready.childFds[SUPERVISOR_READY_FD]!, target: SUPERVISOR_READY_FD },
    });
    ready.spawned();
    keeperFd = pidfdOpen(keeper);
  } catch (err) {
    throw await fail(
      daemon,
      `it closed the lock's descriptor, and no keeper could be started: ${
        (err as Error).message
      }; killed it`,
      true,
      options,
    );
  }
  try {
    const up = keeperFd === undefined
      ? { ready: false as const }
      : await ready.wait(keeperFd, KEEPER_START_TIMEOUT_MS);
    if (!up.ready) {
      throw await fail(
        daemon,
        "it closed the lock's descriptor, and the keeper that was to hold the lock for it failed; killed it",
        true,
        options,
      );
    }
  } finally {
    if (keeperFd !== undefined) close(keeperFd);
  }
  options.onWarning?.(
    `pid ${daemon.pid} closed the pid file's lock descriptor: keeper pid ${keeper} holds the lock until it exits (start with --keeper to have one from the start)`,
  );
  return keeper;
}

/** How long a keeper may take to start (a Deno process). */
const KEEPER_START_TIMEOUT_MS = 10_000;

/**
 * Wait for the privilege stage's exec (with --user), then for readiness;
 * throw StartFailedError, with the daemon abandoned, when either fails or the
 * caller aborts.
 */
async function waitUntilReady(
  daemon: StartingDaemon,
  readiness: Readiness,
  options: StartOptions,
): Promise<Ready> {
  const started = performance.now();
  const timeout = options.readyTimeout ?? DEFAULT_READY_TIMEOUT_MS;
  if (daemon.stageErrorFd !== undefined) {
    const message = await daemon.unlessAborted(
      awaitStage(daemon.stageErrorFd, daemon.pidfd ?? -1, timeout),
      options.signal,
    );
    if (message instanceof Aborted) throw await interrupted(daemon, message, options);
    if (message === "timeout") throw await notReadyInTime(daemon, timeout, "", options);
    if (message !== undefined) throw await fail(daemon, message, true, options);
  }
  const deadline = started + timeout;
  const left = () => Math.max(0, deadline - performance.now());
  let result: ReadyResult | Aborted = daemon.pidfd === undefined
    ? { ready: false, reason: "exited", waitedMs: 0 }
    : await daemon.unlessAborted(readiness.wait(daemon.pidfd, left()), options.signal);
  // A program that forks away: follow its main process, and wait for readiness again.
  const follows = !options.supervise && !options.keeper && !clusterLock(options);
  for (;;) {
    if (result instanceof Aborted) throw await interrupted(daemon, result, options);
    if (result.ready) {
      if (!follows || options.daemonPidfile === undefined) return result;
      const named = await daemon.unlessAborted(
        daemon.awaitDaemonPidfile(deadline, options.daemonPidfile),
        options.signal,
      );
      if (named instanceof Aborted) throw await interrupted(daemon, named, options);
      if (named === "named") return result;
      if (named === "timeout") {
        throw await notReadyInTime(
          daemon,
          timeout,
          `; --daemon-pidfile ${quote(options.daemonPidfile)} named no process it started`,
          options,
        );
      }
      result = { ready: false, reason: "exited", waitedMs: Math.round(timeout - left()) };
    }
    if (!follows || result.reason !== "exited") break;
    const fork = await daemon.unlessAborted(
      daemon.followFork(deadline, options.daemonPidfile),
      options.signal,
    );
    if (fork instanceof Aborted) throw await interrupted(daemon, fork, options);
    if (fork.kind === "failed") {
      throw await fail(daemon, `${fork.why}; stopped them`, true, options);
    }
    if (fork.kind === "ended") break;
    result = await daemon.unlessAborted(readiness.wait(daemon.pidfd!, left()), options.signal);
  }
  if (result.ready) return result;
  const extra = [
    result.status === undefined ? "" : `; its last status: ${quote(result.status)}`,
    result.errno === undefined
      ? ""
      : `; it reported ERRNO=${result.errno} (${describeErrno(result.errno)})`,
  ].join("");
  switch (result.reason) {
    case "timeout":
      throw await notReadyInTime(daemon, timeout, extra, options);
    case "closed":
      if (options.supervise || options.keeper || clusterLock(options)) {
        // Its fd closes as it exits (let it finish); 3 is its word for a cluster lock held
        // elsewhere.
        await daemon.exited(2000);
        const { exit } = await daemon.abandon();
        if (clusterLock(options) && exit?.exited && exit.code === 3) {
          throw new HeldElsewhereError(result.status ?? "already running elsewhere");
        }
        throw await fail(
          daemon,
          options.supervise
            ? "the supervisor ended before its first child was ready"
            : "the keeper ended before the daemon was ready",
          false,
          options,
          extra,
        );
      }
      throw await fail(
        daemon,
        `the daemon closed its notification descriptor ${options.notifyFd} ` +
          `without writing a newline`,
        false,
        options,
        extra,
      );
    case "exited":
      throw await fail(daemon, "the daemon ended before it was ready", false, options, extra);
  }
}

function interrupted(
  daemon: StartingDaemon,
  aborted: Aborted,
  options: StartOptions,
): Promise<StartFailedError> {
  return fail(
    daemon,
    `interrupted (${aborted.reason}) before the daemon was ready; killed it`,
    true,
    options,
  );
}

function notReadyInTime(
  daemon: StartingDaemon,
  timeout: number,
  extra: string,
  options: StartOptions,
): Promise<StartFailedError> {
  return fail(
    daemon,
    `the daemon was not ready after ${seconds(timeout)}; killed it`,
    true,
    options,
    extra,
  );
}

/**
 * Abandon the daemon (killed, reaped, the lock free) and make the error that
 * says why, how it ended, and the last lines of its output.
 *
 * @param why the reason
 * @param killedByUs we decided to kill it (a timeout, an abort): its end is no news
 */
async function fail(
  daemon: StartingDaemon,
  why: string,
  killedByUs: boolean,
  options: StartOptions,
  extra = "",
): Promise<StartFailedError> {
  const { wasRunning, exit } = await daemon.abandon();
  const how = killedByUs ? "" : wasRunning ? "; killed it" : exitText(exit);
  const mark = outputMarks.get(daemon);
  const tail = options.output === undefined || !mark ? [] : linesSince(options.output, mark, 10);
  return new StartFailedError(
    `${why}${how}${extra}`,
    daemon.pid,
    killedByUs ? undefined : exit,
    options.output,
    tail,
  );
}

function exitText(exit: ExitReason | undefined): string {
  return exit ? ` (${describeExit(exit)})` : "";
}

/**
 * The daemon is ready: hand the lock over to it, or to the MAINPID it named
 * when that process holds the lock.
 */
function handOver(
  daemon: StartingDaemon,
  result: Ready,
  options: StartOptions,
  keeper: number | undefined,
): StartResult {
  let pid = daemon.pid;
  if ((options.keeper || clusterLock(options)) && result.mainPid !== undefined) {
    // Our keeper named its program's main process (and wrote it in the file).
    return handedOver(daemon, result.mainPid, result, daemon.pid);
  }
  if (result.mainPid !== undefined && result.mainPid !== pid) {
    const named = fileIdentity(options.pidfile);
    if (named && holdsLockInFdinfo(result.mainPid, named) === true) {
      pid = result.mainPid;
    } else {
      options.onWarning?.(
        `warning: ignoring MAINPID=${result.mainPid}: that process does not hold the pid file`,
      );
    }
  }
  return handedOver(daemon, pid, result, keeper);
}

function handedOver(
  daemon: StartingDaemon,
  pid: number,
  result: Ready,
  keeper: number | undefined,
): StartResult {
  daemon.handOver(pid);
  return {
    pid,
    ...(result.status === undefined ? {} : { status: result.status }),
    ...(keeper === undefined ? {} : { keeper }),
    ...(daemon.launchedPid === pid || keeper === daemon.launchedPid
      ? {}
      : { launched: daemon.launchedPid }),
  };
}

/** The output file as this start found it: which file, and how long it was. */
interface OutputMark {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: number;
}

/** Where each starting daemon's output began. */
const outputMarks = new WeakMap<StartingDaemon, OutputMark>();

function outputMark(fd: number, path: string): OutputMark {
  const st = fstat(fd, path);
  return { dev: st.dev, ino: st.ino, size: Number(st.size) };
}

/**
 * The last `count` lines written to the output file since this start
 * began (reading at most 64 KiB of them): an appended file holds earlier
 * runs' last words, which would mislead. Opened like every file beside the
 * pid file; a file replaced or cut since then shows nothing rather than
 * another file's content.
 */
function linesSince(path: string, mark: OutputMark, count: number): string[] {
  let fd: number;
  let stat;
  try {
    ({ fd, stat } = openBeside(path, { what: "output file", access: "read" }));
  } catch {
    return [];
  }
  try {
    const size = Number(stat.size);
    if (stat.dev !== mark.dev || stat.ino !== mark.ino || size < mark.size) return [];
    const from = Math.max(mark.size, size - 65536);
    const lines = new TextDecoder().decode(pread(fd, size - from, from, path)).split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    return lines.slice(-count);
  } catch {
    return [];
  } finally {
    close(fd);
  }
}
