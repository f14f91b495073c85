/**
 * The errors the control actions throw, each for one outcome the CLI maps to
 * an exit code: not running (3), a guard held too long, a start or a stop
 * that failed, an action interrupted (1).
 *
 * @module
 */

import type { ExitReason } from "../ffi/mod.ts";
import { quote } from "../ffi/errors.ts";

/** Nothing to do: the daemon is not running (exit code 3 in the CLI). */
export class NotRunningError extends Error {
  /** The command's exit code for it: 3, nothing to do. */
  readonly exitCode: 3 = 3;
  /** The pid file. */
  readonly path: string;
  /** The pid a stale file named (it was not signalled; the file was emptied). */
  readonly stalePid: number | undefined;
  /**
   * Make the error for a daemon that is not running.
   *
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

/**
 * The cluster lock is held by another host or process (exit code 3 in the
 * CLI, as for a local instance already running).
 */
export class HeldElsewhereError extends Error {
  /** The command's exit code for it: 3, nothing to do. */
  readonly exitCode: 3 = 3;
  /**
   * Make the error.
   *
   * @param message one line naming the holder (host and pid when known)
   */
  constructor(message: string) {
    super(message);
    this.name = "HeldElsewhereError";
  }
}

/**
 * `run` did not run its job, and nothing went wrong: a later `replace` took
 * over from it, or the job's slot was already done (`oncePerMs`). A conflict,
 * as "already running" is (exit code 3 in the CLI, or `--conflict-exit-code`).
 */
export class JobSkippedError extends Error {
  /** The command's exit code for it: 3, nothing to do. */
  readonly exitCode: 3 = 3;
  /**
   * Make the error.
   *
   * @param message one line saying why the job did not run
   */
  constructor(message: string) {
    super(message);
    this.name = "JobSkippedError";
  }
}

/** Another controller kept the guard lock past the timeout. */
export class GuardTimeoutError extends Error {
  /** The command's exit code for it: 1, failed. */
  readonly exitCode: 1 = 1;
  /** The guard file. */
  readonly path: string;
  /**
   * Make the error for a guard held too long.
   *
   * @param path the guard file
   * @param waitedMs how long we waited
   * @param holder who holds it ("pid 123 of user \"root\""), when that could be found
   */
  constructor(path: string, waitedMs: number, holder?: string) {
    super(
      holder === undefined
        ? `another singleton-run holds the guard ${quote(path)}: gave up after ${
          seconds(waitedMs)
        } (raise --guard-timeout, or see who holds it in /proc/locks)`
        : `another singleton-run holds the guard ${quote(path)} (${holder}): gave up after ${
          seconds(waitedMs)
        } (raise --guard-timeout)`,
    );
    this.name = "GuardTimeoutError";
    this.path = path;
  }
}

/** The daemon failed before it was ready; it was killed and reaped, the lock freed. */
export class StartFailedError extends Error {
  /** The command's exit code for it: 1, failed. */
  readonly exitCode: 1 = 1;
  /** The daemon's pid (now gone). */
  readonly pid: number;
  /** How it ended, when it ended by itself. */
  readonly exit: ExitReason | undefined;
  /** The last lines of `--output`, if one was given. */
  readonly outputTail: readonly string[];
  /** The output file, if any. */
  readonly output: string | undefined;
  /**
   * Make the error for a start that failed.
   *
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
  /** The command's exit code for it: 1, failed. */
  readonly exitCode: 1 = 1;
  /** The daemon's pid. */
  readonly pid: number | undefined;
  /**
   * Make the error for a stop that failed.
   *
   * @param message why
   * @param pid the pid
   */
  constructor(message: string, pid: number | undefined) {
    super(message);
    this.name = "StopFailedError";
    this.pid = pid;
  }
}

/**
 * reload sent nothing: SIGHUP would end the program, which neither catches,
 * ignores nor blocks it (`force` sends it anyway).
 */
export class ReloadRefusedError extends StopFailedError {
  /**
   * Make the error for a reload refused.
   *
   * @param message why, naming the process
   * @param pid the process SIGHUP would end
   */
  constructor(message: string, pid: number) {
    super(message, pid);
    this.name = "ReloadRefusedError";
  }
}

/** The caller aborted the action (the CLI: SIGINT, SIGTERM or SIGHUP) while it waited. */
export class InterruptedError extends Error {
  /** The command's exit code for it: 1, failed. */
  readonly exitCode: 1 = 1;
  /**
   * Make the error for an interrupted action.
   *
   * @param message what was interrupted
   */
  constructor(message: string) {
    super(message);
    this.name = "InterruptedError";
  }
}

/**
 * A duration for messages: "10 s", "1.5 s".
 *
 * @param ms milliseconds
 * @returns the text
 */
export function seconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}
