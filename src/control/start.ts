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
  ids,
  openBeside,
  pidfdOpen,
  pread,
  quote,
} from "../ffi/mod.ts";
import { fileIdentity, holdsLockInFdinfo, lockHolders } from "../lock/holders.ts";
import { identify } from "../lock/identity.ts";
import { recordNeeded, writeRecord } from "../lock/record.ts";
import { openOutputFile } from "../lock/output.ts";
import type { PidFile } from "../lock/pidfile.ts";
import { describeExit } from "../launch/exit.ts";
import { awaitStage, spawnStage } from "../launch/privilege.ts";
import { Readiness, type ReadyResult, sendNotify, takeOuterManager } from "../launch/readiness.ts";
import { spawn } from "../launch/spawn.ts";
import { environmentFor, type LaunchSpec } from "../launch/spec.ts";
import { Aborted, type LaunchedDaemon, StartingDaemon } from "../launch/starting.ts";
import type { ManagerOrders } from "../supervisor/manager.ts";
import {
  spawnKeeper,
  spawnStageProcess,
  SUPERVISOR_READY_FD,
  SUPERVISOR_WRITE_FD,
} from "../supervisor/stage.ts";
import { HeldElsewhereError, InterruptedError, seconds, StartFailedError } from "./errors.ts";
import { withGuard } from "./guard.ts";
import type { StartOptions, StartResult } from "./options.ts";
import { lockPidfile, refuseUnlockedDaemon } from "./precheck.ts";
import { callerEnvironment, launchSpec } from "./spec.ts";
import { normalPath } from "./values.ts";

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
  const spec = launchSpec(options, "start");
  await checkLockOf(spec);
  return await withGuard(options, () => startLocked(spec, options), options.signal);
}

/**
 * The cluster lock's checks, made before anything is created (they load the
 * cluster code, so only when a lock is asked for).
 *
 * @param spec the launch
 * @throws {UsageError} for a bad lock URL or a TTL too short
 */
export async function checkLockOf(spec: LaunchSpec): Promise<void> {
  if (!spec.lock) return;
  const { checkClusterLock } = await import("./cluster.ts");
  await checkClusterLock(spec.lock, spec.stopSchedule);
}

/**
 * Start, with the guard held: lock, then the one path of the spec's holder.
 *
 * @param spec what to start, and who holds the lock
 * @param options where the pid file is, the abort signal, where warnings go
 * @returns the daemon's pid
 */
export async function startLocked(spec: LaunchSpec, options: StartOptions): Promise<StartResult> {
  refuseUnlockedDaemon(options.pidfile);
  using lock = await lockPidfile(options);
  if (options.signal?.aborted) {
    throw new InterruptedError(
      `interrupted (${String(options.signal.reason)}) before the daemon was started`,
    );
  }
  switch (spec.holder.kind) {
    case "self":
      return await startProgram(spec, lock, options);
    case "keeper":
      return await startKept(spec, lock, options);
    case "supervisor":
      return await startSupervised(spec, lock, options);
  }
}

/**
 * The program holds the lock itself: it is launched with the locked
 * descriptor in a new session, followed when it forks away, handed to a
 * keeper when it drops the lock, and named in the pid file.
 */
async function startProgram(
  spec: LaunchSpec,
  lock: PidFile,
  options: StartOptions,
): Promise<StartResult> {
  using readiness = Readiness.prepare(spec.readiness, spec.user ? { owner: spec.user } : {});
  await using daemon = await launchWithOutput(spec, lock, options, (stdio) => {
    const fds: Record<number, number | "null"> = {
      0: "null",
      1: stdio,
      2: stdio,
      [lockFdFor(spec)]: lock.fd, // read-only: the daemon holds the lock, cannot write the file
      ...readiness.childFds,
    };
    return launchProgram(spec, { ...programEnvironment(spec), ...readiness.env }, fds);
  });
  readiness.spawned();
  const result = await waitUntilReady(daemon, readiness, spec, options);
  const keeper = await keepIfDropped(daemon, lock, spec, options);
  let pid = daemon.pid;
  if (result.mainPid !== undefined && result.mainPid !== daemon.pid) {
    const named = fileIdentity(options.pidfile);
    if (named && holdsLockInFdinfo(result.mainPid, named) === true) {
      pid = result.mainPid;
    } else {
      options.onWarning?.(
        `warning: ignoring MAINPID=${result.mainPid}: that process does not hold the pid file`,
      );
    }
  }
  // A keeper records the service itself, once it holds the lock; the program does not.
  if (keeper === undefined) recordProgram(spec, options, pid);
  return handedOver(daemon, pid, result, keeper);
}

/**
 * Record the launch and the daemon (by pid and start time) beside the pid
 * file, while this process still holds the lock. A record that cannot be
 * written is said, and the daemon runs, unless only the record can tell
 * later commands that the daemon holds the lock (`--user`): then the start
 * fails, and the daemon is stopped as for any failed start.
 */
function recordProgram(spec: LaunchSpec, options: StartOptions, pid: number): void {
  try {
    writeRecord(options.pidfile, {
      by: "start",
      spec,
      daemon: identify(pid) ?? null,
      holder: null,
    });
  } catch (err) {
    const why = `cannot write the service record: ${(err as Error).message}`;
    if (!recordNeeded(spec)) {
      options.onWarning?.(`warning: ${why}`);
      return;
    }
    throw new StartFailedError(
      `${why}; without it no later command would know that ${
        quote(spec.user?.name ?? "")
      }'s daemon holds the lock, so it was stopped`,
      pid,
      undefined,
      undefined,
      [],
    );
  }
}

/**
 * A keeper holds the lock (and a cluster lock): it runs the program once
 * and names its main process, which the pid file names.
 */
async function startKept(
  spec: LaunchSpec,
  lock: PidFile,
  options: StartOptions,
): Promise<StartResult> {
  const { daemon, result } = await startStage(spec, lock, options);
  await using _daemon = daemon;
  return handedOver(daemon, result.mainPid ?? daemon.pid, result, daemon.pid);
}

/**
 * A supervisor holds the lock, runs the program and restarts it: the pid
 * file names it. Under a service manager (`NOTIFY_SOCKET`: systemd's
 * `Type=notify`), the supervisor reports to it from then on, and this start
 * tells it, once the supervisor is ready, to follow the supervisor
 * (`MAINPID=`) and that the service is ready, in one datagram: this process
 * is still the manager's main process when it arrives.
 */
async function startSupervised(
  spec: LaunchSpec,
  lock: PidFile,
  options: StartOptions,
): Promise<StartResult> {
  const outer = takeOuterManager(Deno.env.toObject(), ids.pid());
  const manager = outer && { ...outer, sendsReady: false };
  const { daemon, result } = await startStage(spec, lock, options, manager);
  await using _daemon = daemon;
  const started = handedOver(daemon, daemon.pid, result, undefined);
  if (manager) {
    try {
      sendNotify(manager.socket, `MAINPID=${daemon.pid}\nREADY=1`);
    } catch (err) {
      options.onWarning?.(
        `warning: cannot notify the service manager: ${(err as Error).message}`,
      );
    }
  }
  return started;
}

/**
 * Launch the supervisor or keeper stage with the locked descriptors and
 * wait until it says the program's first run is ready.
 */
async function startStage(
  spec: LaunchSpec,
  lock: PidFile,
  options: StartOptions,
  manager?: ManagerOrders,
): Promise<{ daemon: StartingDaemon; result: Ready }> {
  using readiness = Readiness.prepare({ kind: "fd", fd: SUPERVISOR_READY_FD });
  const daemon = await launchWithOutput(spec, lock, options, (stdio) => ({
    pid: spawnStageProcess({
      spec,
      pidfile: normalPath(options.pidfile),
      lockFd: STAGE_LOCK_FD,
      writeFd: SUPERVISOR_WRITE_FD,
      readyFd: SUPERVISOR_READY_FD,
      ...(manager ? { manager } : {}),
    }, {
      env: programEnvironment(spec),
      ...(spec.umask === null ? {} : { umask: spec.umask }),
      fds: {
        0: "null",
        1: stdio,
        2: stdio,
        [STAGE_LOCK_FD]: lock.fd,
        [SUPERVISOR_WRITE_FD]: lock.writeFd,
        ...readiness.childFds,
      },
    }),
  }));
  try {
    readiness.spawned();
    return { daemon, result: await waitUntilReady(daemon, readiness, spec, options) };
  } catch (err) {
    await daemon[Symbol.asyncDispose]();
    throw err;
  }
}

/** Where the stage inherits the lock. */
const STAGE_LOCK_FD = 3;

/** The program's whole environment: the caller's (less its readiness channels) and the spec's. */
function programEnvironment(spec: LaunchSpec): Record<string, string> {
  return environmentFor(spec, callerEnvironment("start"));
}

/**
 * The step that makes the daemon process: a new session leader with exactly
 * these descriptors. With a user, it is this program re-executed as the
 * privilege stage, which drops privileges and then execs the command (same pid).
 */
function launchProgram(
  spec: LaunchSpec,
  env: Record<string, string>,
  fds: Record<number, number | "null">,
): LaunchedDaemon {
  const umask = spec.umask ?? undefined;
  if (spec.user) {
    const stage = spawnStage({ spec, env }, {
      fds,
      session: "new",
      ...(umask === undefined ? {} : { umask }),
    });
    return { pid: stage.pid, stageErrorFd: stage.errorFd };
  }
  return {
    pid: spawn({
      path: spec.path,
      argv: spec.command,
      env,
      cwd: spec.cwd,
      ...(umask === undefined ? {} : { umask }),
      newSession: true,
      fds,
    }),
  };
}

/** A readiness wait that ended with the daemon ready. */
type Ready = Extract<ReadyResult, { ready: true }>;

/** The daemon's descriptor number for the pid file lock: 3, or 4 when the notification fd is 3. */
function lockFdFor(spec: LaunchSpec): number {
  return spec.readiness.kind === "fd" && spec.readiness.fd === 3 ? 4 : 3;
}

/**
 * Open the output file (or use /dev/null), launch the daemon with it as
 * stdout and stderr, and close our copy.
 */
async function launchWithOutput(
  spec: LaunchSpec,
  lock: PidFile,
  options: StartOptions,
  launch: (stdio: number | "null") => LaunchedDaemon,
): Promise<StartingDaemon> {
  const file = spec.output?.kind === "file" ? spec.output.path : undefined;
  const output = file === undefined ? -1 : openOutputFile(file, spec.user?.uid);
  try {
    // Where this run's output begins: a failure quotes only what was written since.
    const mark = output >= 0 ? outputMark(output, file!) : undefined;
    const daemon = await StartingDaemon.launch(lock, () => launch(output >= 0 ? output : "null"));
    if (mark) outputMarks.set(daemon, { ...mark, path: file!, given: outputGiven(options) });
    return daemon;
  } finally {
    if (output >= 0) close(output);
  }
}

/** The output file as the caller wrote it, for messages. */
function outputGiven(options: StartOptions): string | undefined {
  const given = options.supervise?.output ?? options.output;
  return typeof given === "string" ? given : given?.kind === "file" ? given.path : undefined;
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
  spec: LaunchSpec,
  options: StartOptions,
): Promise<number | undefined> {
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
    keeper = spawnKeeper(spec, {
      pidfile: normalPath(options.pidfile),
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
  spec: LaunchSpec,
  options: StartOptions,
): Promise<Ready> {
  const started = performance.now();
  const timeout = options.readyTimeout ?? spec.readyTimeoutMs;
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
    : await daemon.unlessAborted(readiness.wait(daemon.pidfd, left(), daemon.pid), options.signal);
  // A program that forks away: follow its main process, and wait for readiness again.
  const follows = spec.holder.kind === "self";
  const daemonPidfile = spec.daemonPidfile ?? undefined;
  for (;;) {
    if (result instanceof Aborted) throw await interrupted(daemon, result, options);
    if (result.ready) {
      if (!follows || daemonPidfile === undefined) return result;
      const named = await daemon.unlessAborted(
        daemon.awaitDaemonPidfile(deadline, daemonPidfile),
        options.signal,
      );
      if (named instanceof Aborted) throw await interrupted(daemon, named, options);
      if (named === "named") return result;
      if (named === "timeout") {
        throw await notReadyInTime(
          daemon,
          timeout,
          `; --daemon-pidfile ${quote(daemonPidfile)} named no process it started`,
          options,
        );
      }
      result = { ready: false, reason: "exited", waitedMs: Math.round(timeout - left()) };
    }
    if (!follows || result.reason !== "exited") break;
    const fork = await daemon.unlessAborted(
      daemon.followFork(deadline, daemonPidfile),
      options.signal,
    );
    if (fork instanceof Aborted) throw await interrupted(daemon, fork, options);
    if (fork.kind === "failed") {
      throw await fail(daemon, `${fork.why}; stopped them`, true, options);
    }
    if (fork.kind === "ended") break;
    result = await daemon.unlessAborted(
      readiness.wait(daemon.pidfd!, left(), daemon.pid),
      options.signal,
    );
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
      if (spec.holder.kind !== "self") {
        // Its fd closes as it exits (let it finish); 3 is its word for a cluster lock held
        // elsewhere.
        await daemon.exited(2000);
        const { exit } = await daemon.abandon();
        if (spec.lock && exit?.exited && exit.code === 3) {
          throw new HeldElsewhereError(result.status ?? "already running elsewhere");
        }
        throw await fail(
          daemon,
          spec.holder.kind === "supervisor"
            ? "the supervisor ended before its first child was ready"
            : "the keeper ended before the daemon was ready",
          false,
          options,
          extra,
        );
      }
      throw await fail(
        daemon,
        `the daemon closed its notification descriptor ${
          spec.readiness.kind === "fd" ? spec.readiness.fd : ""
        } ` +
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
  _options: StartOptions,
  extra = "",
): Promise<StartFailedError> {
  const { wasRunning, exit } = await daemon.abandon();
  const how = killedByUs ? "" : wasRunning ? "; killed it" : exitText(exit);
  const mark = outputMarks.get(daemon);
  return new StartFailedError(
    `${why}${how}${extra}`,
    daemon.pid,
    killedByUs ? undefined : exit,
    mark?.given,
    mark ? linesSince(mark, 10) : [],
  );
}

function exitText(exit: ExitReason | undefined): string {
  return exit ? ` (${describeExit(exit)})` : "";
}

/** The daemon is ready: it keeps the lock alone, and the file names `pid`. */
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
  /** The file, absolute. */
  readonly path: string;
  /** The file as the caller named it, for the message. */
  readonly given: string | undefined;
}

/** Where each starting daemon's output began. */
const outputMarks = new WeakMap<StartingDaemon, OutputMark>();

function outputMark(fd: number, path: string): Omit<OutputMark, "path" | "given"> {
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
function linesSince(mark: OutputMark, count: number): string[] {
  const path = mark.path;
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
