/**
 * Starting one child: its output pipes (when the output is captured), its
 * readiness channel, the pid file's lock on {@link CHILD_LOCK_FD}, and the
 * spawn itself.
 *
 * @module
 */

import { C, close, getrlimit, pipe, recvNow, setNonblocking } from "../ffi/mod.ts";
import type { NotifySocket } from "../launch/readiness.ts";
import { spawn } from "../launch/spawn.ts";
import { LineReader } from "./output.ts";
import type { StopWalk } from "./stopping.ts";

import type { ChildReadiness } from "./settings.ts";

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
export function childLockFd(readiness: ChildReadiness): number {
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

/** A running child, as the supervisor follows it. */
export interface Child {
  readonly pid: number;
  /** Its process group, when the whole group is signalled (`killGroup`). */
  readonly pgid: number | undefined;
  /** When it started (`performance.now()`). */
  readonly startedAt: number;
  readonly startedWall: Date;
  ready: boolean;
  readyDeadline: number;
  /** With the program's own pid file: when the wait for it to name a process of this run ends. */
  namedBy?: number;
  /** Our end of its notification fd; -1 when none. */
  readyFd: number;
  /**
   * A pidfd that tells when it ends, for a process that is not our child
   * (the keeper's adopted daemon); our children are reaped instead.
   */
  readonly pidfd?: number;
  /** Set while it is being stopped: the schedule's walk and why. */
  stop?: { readonly walk: StopWalk; readonly why: string };
}

/** What {@link startChild} needs. */
export interface ChildSpec {
  readonly path: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd?: string;
  readonly umask?: number;
  readonly killGroup: boolean;
  readonly readiness: ChildReadiness;
  /** How long a notifying child may take, in ms. */
  readonly readyTimeout: number;
  /** Capture stdout and stderr (a sink exists), or share ours. */
  readonly capture: boolean;
  /** The lock's descriptor and where the child gets it, when it gets it. */
  readonly lock?: { readonly fd: number; readonly target: number };
  /** The NOTIFY_SOCKET the child reports to (`readiness.kind === "socket"`). */
  readonly notify?: NotifySocket;
  /**
   * SIGKILL the child when the supervisor dies (a parent-death signal, set
   * by util-linux's `setpriv --pdeathsig` just before it execs the program):
   * a keeper that holds a cluster lock must not leave its program running
   * once it cannot fence it any more.
   */
  readonly dieWithParent?: boolean;
}

/** util-linux's setpriv: sets the parent-death signal, then execs the program. */
export const SETPRIV = "/usr/bin/setpriv";

/**
 * Start a child.
 *
 * @param spec what to run and how to connect it
 * @returns the child and the readers of its output pipes
 * @throws {SystemError} when it cannot be started (every descriptor made here is closed)
 */
export function startChild(spec: ChildSpec): { child: Child; readers: LineReader[] } {
  const fds: Record<number, number | "null"> = {};
  const theirs: number[] = []; // the child's ends: closed here once it has them
  const ours: [number, "info" | "err"][] = [];
  let readyFd = -1;
  try {
    if (spec.capture) {
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
    const env = { ...spec.env };
    if (spec.readiness.kind === "fd") {
      const [r, w] = childPipe();
      fds[spec.readiness.fd] = w;
      theirs.push(w);
      readyFd = r;
      env.NOTIFY_FD = String(spec.readiness.fd);
    }
    if (spec.readiness.kind === "socket") {
      env.NOTIFY_SOCKET = spec.notify!.path;
      while (recvNow(spec.notify!.fd, 4096) !== undefined) { /* drop stale messages */ }
    }
    if (spec.lock) fds[spec.lock.target] = spec.lock.fd;
    const pid = spawn({
      ...(spec.dieWithParent
        ? {
          path: SETPRIV,
          argv: ["setpriv", "--pdeathsig", "KILL", "--", spec.path, ...spec.argv.slice(1)],
        }
        : { path: spec.path, argv: spec.argv }),
      env,
      fds,
      ...(spec.cwd === undefined ? {} : { cwd: spec.cwd }),
      ...(spec.umask === undefined ? {} : { umask: spec.umask }),
      newProcessGroup: spec.killGroup,
    });
    const now = performance.now();
    return {
      child: {
        pid,
        pgid: spec.killGroup ? pid : undefined,
        startedAt: now,
        startedWall: new Date(),
        ready: false,
        readyDeadline: now +
          (spec.readiness.kind === "alive" ? spec.readiness.afterMs : spec.readyTimeout),
        readyFd,
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
