/**
 * The fencing clock: from the lease's deadline (see `HeldLock.deadline`),
 * the times at which the program is told to stop (SIGTERM) and killed
 * (SIGKILL), so that it is dead a margin before the lease can expire. It is
 * re-armed whenever the deadline moves (an acknowledged keepalive), and it
 * also checks on a short tick, because a timer is late after the process
 * was paused (SIGSTOP, a frozen VM): when the kill time has already passed,
 * it kills at once.
 *
 * @module
 */

import { fenceMarginMs, type HeldLock } from "./lock.ts";

/** What the fence does when its times come. */
export interface FenceActions {
  /** The time the program gets between SIGTERM and SIGKILL, in ms. */
  readonly graceMs: number;
  /** Stop the program (SIGTERM, then the rest of its stop schedule). */
  readonly onTerm: () => void;
  /** Kill the program's process group at once. */
  readonly onKill: () => void;
  /** The clock, `performance.now()` by default (tests pass their own). */
  readonly now?: () => number;
}

/** How often the fence looks at the clock besides its timers, in ms. */
const TICK_MS = 100;

/** The fence for one held lock. */
export class Fence {
  readonly #lock: Pick<HeldLock, "deadline" | "ttlMs">;
  readonly #actions: FenceActions;
  #timer: ReturnType<typeof setInterval> | undefined;
  #state: "armed" | "termed" | "killed" | "stopped" = "armed";

  /**
   * @param lock the held lock (its deadline and TTL)
   * @param actions what to do, and the grace
   */
  constructor(lock: Pick<HeldLock, "deadline" | "ttlMs">, actions: FenceActions) {
    this.#lock = lock;
    this.#actions = actions;
  }

  /** The time to send SIGKILL: the deadline less the margin. */
  killAt(): number {
    return this.#lock.deadline() - fenceMarginMs(this.#lock.ttlMs);
  }

  /** The time to send SIGTERM: the kill time less the grace. */
  termAt(): number {
    return this.killAt() - this.#actions.graceMs;
  }

  /** Start watching the clock. */
  start(): void {
    if (this.#state !== "armed" || this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.check(), TICK_MS);
    this.check();
  }

  /**
   * Look at the clock now: SIGKILL when the kill time has passed (at once,
   * even when SIGTERM never went out: the keeper was paused), SIGTERM when
   * the stop time has.
   *
   * @returns the state after the look
   */
  check(): "armed" | "termed" | "killed" | "stopped" {
    if (this.#state === "killed" || this.#state === "stopped") return this.#state;
    const now = (this.#actions.now ?? (() => performance.now()))();
    if (now >= this.killAt()) {
      this.#state = "killed";
      this.#actions.onKill();
      this.#clear();
    } else if (this.#state === "armed" && now >= this.termAt()) {
      this.#state = "termed";
      this.#actions.onTerm();
    }
    return this.#state;
  }

  /** Stop watching (the lock was released, or the program is gone). */
  stop(): void {
    if (this.#state !== "killed") this.#state = "stopped";
    this.#clear();
  }

  #clear(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
