/**
 * What `run` does when another copy runs: refuse (the default, exit 3), wait
 * for it (`wait`, flock(1)'s `-w`), or replace it (`replace`, run-one's
 * `run-this-one`, by the lock). Each ends holding the pid file's lock, or
 * throws the conflict.
 *
 * Waiters and replacers announce themselves with byte-range locks on the
 * guard file (open file description locks, which the kernel drops with the
 * process that held them, and which do not touch the guard's flock): a
 * waiter takes a ticket above every ticket held, and goes only once no
 * earlier ticket is held; a replacer holds a shared claim, by which the one
 * holding the guard sees that another replacer is still to come. So a
 * waiter holds no guard while it waits (a `stop` or a replace is never held
 * up by it), waiters run one at a time in the order they came, and a waiter
 * or replacer killed while it waits leaves nothing behind.
 *
 * @module
 */

import {
  close,
  describeUid,
  ERRNO,
  fchmod,
  ids,
  ofdConflict,
  ofdLock,
  quote,
  SystemError,
} from "../ffi/mod.ts";
import { AlreadyRunningError, PidFile, probeSync } from "../lock/pidfile.ts";
import { openLockFile } from "../lock/lockfile.ts";
import type { LaunchSpec } from "../launch/spec.ts";
import { JobSkippedError, NotRunningError, seconds } from "./errors.ts";
import { guardPath, takeGuard } from "./guard.ts";
import { DEFAULT_GUARD_TIMEOUT_MS, type RunOptions } from "./options.ts";
import { lockPidfile, refuseUnlockedDaemon } from "./precheck.ts";
import { stopLocked } from "./stop.ts";
import { MAX_WAIT_MS } from "./values.ts";

/** The byte of the guard file that replacers claim (shared). */
const REPLACE_BYTE = 1n << 40n;
/** Where the waiters' tickets start: one byte each, above this. */
const QUEUE_BASE = 1n << 41n;
/** The guard file's mode: its owner's alone (see {@link openGuardFile}). */
const GUARD_FILE_MODE = 0o600;
/** The most tickets looked through when a waiter takes one. */
const MAX_TICKETS = 1_000_000;

/**
 * Take the pid file's lock for a run, by its conflict policy.
 *
 * @param options the run's options (`wait`, `replace`, the guard)
 * @param spec the run's spec (its stop schedule and process group, for `replace`)
 * @returns the held lock
 * @throws {AlreadyRunningError} when another copy runs (and the wait, if
 *   any, ran out first)
 * @throws {JobSkippedError} when a later `replace` takes over from this one
 */
export async function takeRunLock(options: RunOptions, spec: LaunchSpec): Promise<PidFile> {
  if (options.replace) return await lockReplacing(options, spec);
  if (options.wait !== undefined) return await lockWaiting(options, options.wait);
  using _guard = await takeGuard(options);
  refuseUnlockedDaemon(options.pidfile);
  return await lockPidfile(options);
}

/**
 * Wait for the running copy to end, in line behind the waiters that came
 * earlier, then take the lock (under the guard, for that moment only).
 */
async function lockWaiting(options: RunOptions, wait: number | "forever"): Promise<PidFile> {
  const started = performance.now();
  const deadline = wait === "forever" ? Infinity : started + wait;
  const remaining = () => deadline - performance.now();
  const gaveUp = () => {
    const found = probeSync(options.pidfile);
    const pid = found.state === "running" ? found.pid : undefined;
    return new WaitedTooLongError(options.pidfile, pid, performance.now() - started);
  };
  using queue = await Ticket.take(options);
  let pause = 2;
  for (;;) {
    if (queue.behindOthers()) {
      if (remaining() <= 0) throw gaveUp();
      await sleep(Math.min(pause, remaining()));
      pause = Math.min(pause * 2, 50);
      continue;
    }
    const left = Math.min(remaining(), MAX_WAIT_MS);
    if (!await PidFile.waitForRelease(options.pidfile, { timeout: Math.max(0, left) })) {
      throw gaveUp();
    }
    {
      using _guard = await takeGuard({
        ...options,
        guardTimeout: Math.max(options.guardTimeout ?? DEFAULT_GUARD_TIMEOUT_MS, left),
      });
      refuseUnlockedDaemon(options.pidfile);
      try {
        return await lockPidfile(options);
      } catch (err) {
        // Another run took it between the release and our guard: wait for that one.
        if (!(err instanceof AlreadyRunningError)) throw err;
      }
    }
    if (remaining() <= 0) throw gaveUp();
  }
}

/**
 * Stop the running copy (by this run's stop schedule, as a group with
 * `killGroup`), then take the lock, all under one hold of the guard; give
 * way when another replacer waits for the guard.
 */
async function lockReplacing(options: RunOptions, spec: LaunchSpec): Promise<PidFile> {
  using claim = ReplaceClaim.take(options);
  using _guard = await takeGuard(options);
  claim.giveWayToOthers();
  refuseUnlockedDaemon(options.pidfile);
  if (probeSync(options.pidfile).state === "running") {
    try {
      await stopLocked({
        pidfile: options.pidfile,
        ...(options.guard === undefined ? {} : { guard: options.guard }),
        schedule: spec.stopSchedule,
        group: spec.killGroup,
        ...(options.onWarning ? { onWarning: options.onWarning } : {}),
      });
    } catch (err) {
      if (!(err instanceof NotRunningError)) throw err;
    }
    claim.giveWayToOthers();
  }
  return await lockPidfile(options);
}

/**
 * The guard file, opened for its byte-range locks (a description of its own:
 * not the guard's flock). Whoever may open it may hold a claim or a ticket
 * forever, and every replace would give way to it, every waiter wait behind
 * it; so it must be this user's or root's, and no one else's to read.
 *
 * @throws {SystemError} EPERM for another user's guard file
 */
function openGuardFile(options: RunOptions): { fd: number; path: string } {
  const path = guardPath(options);
  const { fd, stat } = openLockFile(path, { what: "guard file", mode: GUARD_FILE_MODE });
  try {
    if (stat.uid !== ids.euid() && stat.uid !== 0) {
      throw new SystemError("open", ERRNO.EPERM, {
        path,
        message: `guard file ${quote(path)} belongs to ${describeUid(stat.uid)}, whose ` +
          "processes could hold its byte-range locks and keep every --wait and --replace " +
          "from running: remove it, or name one of yours with --guard FILE",
      });
    }
    if ((stat.mode & 0o077) !== 0 && stat.uid === ids.euid()) fchmod(fd, GUARD_FILE_MODE, path);
    return { fd, path };
  } catch (err) {
    close(fd);
    throw err;
  }
}

/** A waiter's place in line: a shared lock on one byte above every other ticket held. */
class Ticket implements Disposable {
  readonly #fd: number;
  readonly #at: bigint;

  private constructor(fd: number, at: bigint) {
    this.#fd = fd;
    this.#at = at;
  }

  /** Take the next ticket, under the guard (two waiters never take the same one). */
  static async take(options: RunOptions): Promise<Ticket> {
    const { fd, path } = openGuardFile(options);
    try {
      using _guard = await takeGuard(options);
      let at = QUEUE_BASE;
      for (let n = 0;; n++) {
        const held = ofdConflict(fd, at, 0n);
        if (held === undefined) break;
        if (n >= MAX_TICKETS) {
          throw new Error(`more than ${MAX_TICKETS} waiters on the guard ${quote(path)}`);
        }
        at = (held.start > at ? held.start : at) + 1n;
      }
      ofdLock(fd, "read", at, 1n);
      return new Ticket(fd, at);
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /** Whether a waiter that came earlier still waits (or a killed one's place is not yet free). */
  behindOthers(): boolean {
    return this.#at > QUEUE_BASE && ofdConflict(this.#fd, QUEUE_BASE, this.#at - QUEUE_BASE) !==
        undefined;
  }

  /** Leave the line. */
  [Symbol.dispose](): void {
    close(this.#fd);
  }
}

/** A replacer's claim: a shared lock on one byte, which every replacer holds while it is to come. */
class ReplaceClaim implements Disposable {
  readonly #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Claim, before waiting for the guard. */
  static take(options: RunOptions): ReplaceClaim {
    const { fd } = openGuardFile(options);
    try {
      ofdLock(fd, "read", REPLACE_BYTE, 1n);
      return new ReplaceClaim(fd);
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /**
   * With the guard held: when another replacer has claimed too, it takes the
   * guard after this one and runs; this one gives way.
   *
   * @throws {JobSkippedError} when another replacer is to come
   */
  giveWayToOthers(): void {
    if (ofdConflict(this.#fd, REPLACE_BYTE, 1n) === undefined) return;
    throw new JobSkippedError(
      "not run: another run --replace came meanwhile and takes over (the last one runs)",
    );
  }

  /** Withdraw the claim. */
  [Symbol.dispose](): void {
    close(this.#fd);
  }
}

/** The running copy did not end within the wait. */
export class WaitedTooLongError extends AlreadyRunningError {
  /**
   * @param path the pid file
   * @param pid the pid it names, if any
   * @param waitedMs how long this run waited
   */
  constructor(path: string, pid: number | undefined, waitedMs: number) {
    super(path, pid);
    this.name = "WaitedTooLongError";
    this.message = `${this.message}: still running after waiting ${seconds(waitedMs)}`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
