/**
 * Walking a stop schedule (start-stop-daemon's `--retry` grammar, parsed by
 * `src/launch/schedule.ts`) one step at a time from the supervisor's loop:
 * send the signals up to the next wait, then come back when it is over.
 *
 * @module
 */

import { nextStep, type Schedule } from "../launch/schedule.ts";

/** Where a schedule stands for one process (or process group) being stopped. */
export class StopWalk {
  /** The step last done; -1 before the first. */
  #index = -1;
  /** When the current wait ends (`performance.now()` time); Infinity to wait without end. */
  until = 0;
  /** The signal sent last, undefined before the first. */
  lastSignal: number | undefined;
  constructor(readonly schedule: Schedule) {}

  /**
   * Send the signals up to the next wait and start that wait.
   *
   * @param send sends one signal
   * @returns false when the schedule has run out (the process is still alive)
   */
  advance(send: (signal: number) => void): boolean {
    for (;;) {
      const next = nextStep(this.schedule, this.#index);
      if (next === Infinity) {
        this.until = Infinity; // `forever` at the end: wait without limit
        return true;
      }
      if (next < 0) {
        this.until = Infinity;
        return false;
      }
      this.#index = next;
      const step = this.schedule.steps[next]!;
      if ("signal" in step) {
        this.lastSignal = step.signal;
        send(step.signal);
      } else {
        this.until = performance.now() + step.waitMs;
        return true;
      }
    }
  }
}
