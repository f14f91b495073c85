/**
 * Stop schedules, in start-stop-daemon's `--retry` grammar, for every place
 * that stops a process: `stop --retry` and the supervisor's
 * `--stop-schedule` alike.
 *
 * - `SIGNAL/TIMEOUT/SIGNAL/TIMEOUT...`: send, wait up to TIMEOUT for the
 *   process to end, go on; a signal may be written `TERM`, `SIGTERM`, `-15`
 *   or `-TERM`; a TIMEOUT is a duration (`10`, `500ms`, `2m`: a bare number
 *   is seconds, see {@link durationMs});
 * - a bare TIMEOUT N: `TERM/N/KILL/N`;
 * - `forever`: repeat what follows it without end (at the very end: wait
 *   without limit after the last signal).
 *
 * It must start with a signal and end with a timeout or `forever`, and what
 * `forever` repeats must wait longer than 0 somewhere.
 *
 * @module
 */

import { quote } from "../ffi/errors.ts";
import { parseSignal } from "../ffi/signals.ts";
import { UsageError } from "../errors.ts";
import { durationMs } from "./duration.ts";

/** One step of a stop schedule. */
export type ScheduleStep =
  | { readonly signal: number }
  | { readonly waitMs: number };

/** A parsed stop schedule. */
export interface Schedule {
  /** The steps in order. */
  readonly steps: readonly ScheduleStep[];
  /** Where `forever` repeats from: -1 for no repeat; `steps.length` to wait without end. */
  readonly repeatAt: number;
}

/**
 * Parse a stop schedule.
 *
 * @param text the schedule, e.g. `TERM/10/KILL/5`, `5`, `TERM/500ms/KILL/2s`,
 *   `HUP/2/forever/TERM/1`
 * @param option the option it came from, for the message
 * @returns the schedule
 * @throws {UsageError} naming the option and what is wrong
 * @example
 * ```ts
 * import { parseSchedule } from "./schedule.ts";
 * parseSchedule("5").steps.length; // 4: TERM, 5 s, KILL, 5 s
 * ```
 */
export function parseSchedule(text: string, option = "--retry"): Schedule {
  // "--retry" alone does not say that it takes a schedule; "--stop-schedule" does.
  const what = option === "--retry" ? `${option} schedule` : option;
  const bad = (why: string) => new UsageError(`bad ${what} ${quote(text)}: ${why}`);
  if (text === "") throw bad("it is empty");
  const ms = durationMs(text);
  if (ms !== undefined) {
    return {
      steps: [{ signal: 15 }, { waitMs: ms }, { signal: 9 }, { waitMs: ms }],
      repeatAt: -1,
    };
  }
  const steps: ScheduleStep[] = [];
  let repeatAt = -1;
  for (const item of text.split("/")) {
    if (item === "") throw bad("empty item");
    if (item === "forever") {
      if (repeatAt >= 0) throw bad('"forever" appears more than once');
      repeatAt = steps.length;
      continue;
    }
    const waitMs = durationMs(item);
    if (waitMs !== undefined) {
      steps.push({ waitMs });
      continue;
    }
    const signal = parseSignal(item.startsWith("-") ? item.slice(1) : item);
    if (signal === undefined) {
      throw bad(`${quote(item)} is neither a signal nor a duration`);
    }
    steps.push({ signal });
  }
  if (steps.length === 0 || !("signal" in steps[0]!)) throw bad("it must start with a signal");
  const last = steps[steps.length - 1]!;
  if ("signal" in last && repeatAt !== steps.length) {
    throw bad("it must end with a timeout (or forever)");
  }
  const repeated = repeatAt >= 0 ? steps.slice(repeatAt) : [];
  if (repeated.length > 0 && !repeated.some((step) => "waitMs" in step && step.waitMs > 0)) {
    // Without a wait, the repeat would send signals in a busy loop.
    throw bad('what follows "forever" repeats without end, so it needs a wait longer than 0');
  }
  return { steps, repeatAt };
}

/**
 * The step after `index` (follows `forever`'s repeat).
 *
 * @param schedule the schedule
 * @param index the step just done, -1 before the first
 * @returns the next step's index, `Infinity` to wait without end, or -1 when
 *   the schedule has run out
 */
export function nextStep(schedule: Schedule, index: number): number {
  const next = index + 1;
  if (next < schedule.steps.length) return next;
  if (schedule.repeatAt === schedule.steps.length) return Infinity;
  if (schedule.repeatAt >= 0) return schedule.repeatAt;
  return -1;
}

/**
 * How long a schedule lets a process go after its first signal: its first
 * wait (the grace a fence gives a program between SIGTERM and SIGKILL).
 *
 * @param schedule the schedule
 * @returns the first wait, in ms; 0 when there is none
 */
export function firstWaitMs(schedule: Schedule): number {
  for (let i = nextStep(schedule, -1); i >= 0 && i !== Infinity; i = nextStep(schedule, i)) {
    const step = schedule.steps[i]!;
    if ("waitMs" in step) return step.waitMs;
  }
  return 0;
}
