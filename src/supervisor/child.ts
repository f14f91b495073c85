/**
 * Starting one run of the program: its output pipes (when the output is
 * captured), its readiness channel, the pid file's lock on
 * {@link CHILD_LOCK_FD}, and the spawn itself, as the launch spec says
 * (with `user`, through the privilege stage, so the program alone drops
 * privileges, never the supervisor or keeper).
 *
 * @module
 */

import { C, close, getrlimit, ids, pipe, recvNow, setNonblocking } from "../ffi/mod.ts";
import type { NotifySocket } from "../launch/readiness.ts";
import type { LaunchSpec, Readiness } from "../launch/spec.ts";
import { spawnStage } from "../launch/privilege.ts";
import { ReadyClock } from "../launch/serving.ts";
import { spawn } from "../launch/spawn.ts";
import { LineReader } from "./output.ts";

/**
 * The descriptor on which each child inherits the pid file's lock (a
 * duplicate of the supervisor's, so the same flock): while any child lives
 * the lock stays held, and a `start` cannot run a second instance even after
 * the supervisor itself was SIGKILLed. The child need not do anything with
 * it; it closes when the child exits. 62 instead when `--notify-fd` is 63.
 */
export const CHILD_LOCK_FD = 63;

/**
 * Where a child gets the lock: {@link CHILD_LOCK_FD}, unless its notification fd is there.
 *
 * @param readiness how the child shows it is ready
 * @returns the descriptor number
 */
export function childLockFd(readiness: Readiness): number {
  return readiness.kind === "fd" && readiness.fd === CHILD_LOCK_FD
    ? CHILD_LOCK_FD - 1
    : CHILD_LOCK_FD;
}

/**
 * Whether descriptor number `fd` is below the soft RLIMIT_NOFILE (spawn
 * moves sources above its targets, so a few more are needed).
 *
 * @param fd the highest descriptor a child is given
 * @returns false when the limit is too low
 */
export function descriptorFits(fd: number): boolean {
  try {
    return getrlimit(C.RLIMIT_NOFILE)[0] > BigInt(fd);
  } catch {
    return true;
  }
}

/** One run of the program, as the supervisor follows it: its main process. */
export interface Run {
  readonly pid: number;
  /** Its process group, when the whole group is signalled (`killGroup`). */
  readonly pgid: number | undefined;
  /** When it started (`performance.now()`). */
  readonly startedAt: number;
  readonly startedWall: Date;
  ready: boolean;
  /** When to look at its readiness next (for `alive`: its clock's next look). */
  readyDeadline: number;
  /** The `alive` readiness's clock, from its exec (or from when it was followed to). */
  clock?: ReadyClock;
  /** With the program's own pid file: when the wait for it to name a process of this run ends. */
  namedBy?: number;
  /** Our end of its notification fd; -1 when none. */
  readyFd: number;
  /**
   * A pidfd that tells when it ends, for a process that is not our child
   * (the keeper's adopted daemon, a process a program forked away to); our
   * children are reaped instead.
   */
  readonly pidfd?: number;
  /** With `user`: the privilege stage's error pipe, until the program is exec'd; -1 after. */
  stageErrorFd: number;
}

/** How a run is wired to the supervisor (what the spec does not say). */
export interface RunWiring {
  /** The program's whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** Capture stdout and stderr (a sink exists), or share ours. */
  readonly capture: boolean;
  /** The lock's descriptor and where the child gets it, when it gets it. */
  readonly lock?: { readonly fd: number; readonly target: number };
  /** The NOTIFY_SOCKET the child reports to (`readiness.kind === "socket"`). */
  readonly notify?: NotifySocket;
  /**
   * SIGKILL the program when the supervisor dies (a parent-death signal):
   * a keeper that holds a cluster lock must not leave its program running
   * once it cannot fence it any more.
   */
  readonly dieWithParent: boolean;
}

/** util-linux's setpriv: sets the parent-death signal, then execs the program. */
export const SETPRIV = "/usr/bin/setpriv";

/**
 * Run after setpriv has set the parent-death signal: a parent that died
 * before it was set sent none, and the program would run on unfenced; so
 * the shell checks that its parent is still the one that spawned it ($0)
 * before it execs the program.
 */
const STILL_OURS = '[ "$PPID" = "$0" ] && exec "$@"; exit 137';

/**
 * Start a run.
 *
 * @param spec what to run
 * @param how its environment and descriptors
 * @returns the run and the readers of its output pipes
 * @throws {SystemError} when it cannot be started (every descriptor made here is closed)
 */
export function startRun(spec: LaunchSpec, how: RunWiring): { run: Run; readers: LineReader[] } {
  const fds: Record<number, number | "null"> = {};
  const theirs: number[] = []; // the child's ends: closed here once it has them
  const ours: [number, "info" | "err"][] = [];
  let readyFd = -1;
  try {
    if (how.capture) {
      for (const [target, level] of [[1, "info"], [2, "err"]] as const) {
        const [r, w] = childPipe();
        fds[target] = w;
        theirs.push(w);
        ours.push([r, level]);
      }
    } else {
      fds[1] = 1;
      fds[2] = 2;
    }
    const env = { ...how.env };
    if (spec.readiness.kind === "fd") {
      const [r, w] = childPipe();
      fds[spec.readiness.fd] = w;
      theirs.push(w);
      readyFd = r;
      env.NOTIFY_FD = String(spec.readiness.fd);
    }
    if (spec.readiness.kind === "socket") {
      env.NOTIFY_SOCKET = how.notify!.path;
      while (recvNow(how.notify!.fd, 4096) !== undefined) { /* drop stale messages */ }
      // Its pid is not known before the spawn: WATCHDOG_PID only where it is (the privilege stage).
      if (spec.watchdogMs !== null) env.WATCHDOG_USEC = String(Math.round(spec.watchdogMs * 1000));
    }
    if (how.lock) fds[how.lock.target] = how.lock.fd;
    const umask = spec.umask ?? undefined;
    let pid: number;
    let stageErrorFd = -1;
    if (spec.user) {
      const dying = how.dieWithParent ? { dieWithParent: true, parent: ids.pid() } : {};
      const stage = spawnStage({ spec, env, ...dying }, {
        fds,
        session: spec.killGroup ? "group" : "same",
        ...(umask === undefined ? {} : { umask }),
      });
      pid = stage.pid;
      stageErrorFd = stage.errorFd;
    } else {
      pid = spawn({
        ...(how.dieWithParent
          ? {
            path: SETPRIV,
            argv: [
              "setpriv",
              "--pdeathsig",
              "KILL",
              "--",
              "/bin/sh",
              "-c",
              STILL_OURS,
              String(ids.pid()),
              spec.path,
              ...spec.command.slice(1),
            ],
          }
          : { path: spec.path, argv: spec.command }),
        env,
        fds,
        cwd: spec.cwd,
        ...(umask === undefined ? {} : { umask }),
        newProcessGroup: spec.killGroup,
      });
    }
    const now = performance.now();
    const alive = spec.readiness.kind === "alive" ? spec.readiness : undefined;
    // With a stage, readiness counts from its exec (the supervisor starts the clock then).
    const clock = alive && stageErrorFd < 0 ? new ReadyClock(alive, now) : undefined;
    return {
      run: {
        pid,
        pgid: spec.killGroup ? pid : undefined,
        startedAt: now,
        startedWall: new Date(),
        ready: false,
        readyDeadline: clock?.next ?? now + (alive ? alive.afterMs : spec.readyTimeoutMs),
        ...(clock ? { clock } : {}),
        readyFd,
        stageErrorFd,
      },
      readers: ours.map(([fd, level]) => new LineReader(fd, level, pid)),
    };
  } catch (err) {
    for (const [fd] of ours) close(fd);
    if (readyFd >= 0) close(readyFd);
    throw err;
  } finally {
    for (const fd of theirs) close(fd);
  }
}

/** A pipe whose read end (ours) does not block and whose write end (the child's) does. */
function childPipe(): [number, number] {
  const [r, w] = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
  // The child's end must block: a daemon's writes wait for us instead of failing.
  setNonblocking(w, false);
  return [r, w];
}
