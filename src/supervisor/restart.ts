/**
 * When to start the command again: the restart policy, exponential backoff
 * (reset by a child that ran long enough) and the crash-loop limit.
 *
 * @module
 */

import type { ExitReason } from "../ffi/mod.ts";
import type { RestartPolicy, RestartSpec } from "../launch/spec.ts";

/**
 * Whether the policy asks for another start after this exit.
 *
 * @param policy the restart policy
 * @param reason how the child ended
 * @param stopped whether the supervisor had been stopping it (a failure too)
 * @returns true to start it again
 */
export function wantsRestart(policy: RestartPolicy, reason: ExitReason, stopped: boolean): boolean {
  const failed = !reason.exited || reason.code !== 0 || stopped;
  return policy === "always" || (policy === "on-failure" && failed);
}

/** Exponential backoff between restarts, with a limit on restarts within a window. */
export class Backoff {
  #recent: number[] = [];
  #consecutive = 0;
  readonly delay: number;
  readonly delayMax: number;
  readonly minUptime: number;
  readonly max: number;
  readonly window: number;
  constructor(o: RestartSpec) {
    this.delay = o.delayMs;
    this.delayMax = o.delayMaxMs;
    this.minUptime = o.minUptimeMs;
    this.max = o.maxRestarts;
    this.window = o.windowMs;
  }

  /**
   * The delay before the next start, or how many restarts exhausted the
   * limit within the window.
   *
   * @param uptime how long the child ran, in ms (undefined: it could not be started)
   * @returns `{ delay }` in ms, or `{ limit }`: the restarts counted in the window
   */
  next(uptime: number | undefined): { delay: number } | { limit: number } {
    const now = performance.now();
    this.#recent = this.#recent.filter((t) => now - t < this.window);
    if (this.max > 0 && this.#recent.length >= this.max) return { limit: this.#recent.length };
    const stable = uptime !== undefined && uptime >= this.minUptime;
    this.#consecutive = stable ? 1 : this.#consecutive + 1;
    const delay = Math.min(
      this.delay * 2 ** Math.min(this.#consecutive - 1, 30),
      this.delayMax,
    );
    this.#recent.push(now);
    return { delay };
  }
}
