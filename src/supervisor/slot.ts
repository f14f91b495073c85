/**
 * The keeper's side of a job's slot (`run --lock URL --once-per DUR`): once
 * the lock is held, whether the slot is done (then the job does not run);
 * once the job succeeded, its record, fenced by the lock's token, before the
 * lock is let go. A job that failed, was fenced, or whose host died before
 * the record leaves the slot open. Loaded with the cluster code only.
 *
 * @module
 */

import type { HeldLock } from "../cluster/lock.ts";
import { SLOT_ENV, slotOf } from "../cluster/slots.ts";
import type { LaunchSpec } from "../launch/spec.ts";

/** One run's slot. */
export class JobSlot {
  /** The slot. */
  readonly slot: number;
  readonly #periodMs: number;

  private constructor(slot: number, periodMs: number) {
    this.slot = slot;
    this.#periodMs = periodMs;
  }

  /**
   * The slot of a run, when it has one.
   *
   * @param spec the launch (its lock's `oncePerMs`)
   * @param startedAt when the run started, ms since the epoch
   * @returns the slot, or undefined without `oncePerMs`
   */
  static of(spec: LaunchSpec, startedAt: number): JobSlot | undefined {
    const period = spec.lock?.oncePerMs;
    return period === undefined ? undefined : new JobSlot(slotOf(startedAt, period), period);
  }

  /** What the job's environment gets: its slot. */
  env(): Record<string, string> {
    return { [SLOT_ENV]: String(this.slot) };
  }

  /**
   * Why the job is not to run, with the lock held: its slot is done.
   *
   * @param lock the held lock
   * @returns the line to say, or undefined when the slot is open
   * @throws {ClusterUnreachableError} when that cannot be told
   */
  async done(lock: HeldLock): Promise<string | undefined> {
    const found = await lock.slotRecord(this.slot);
    if (found === undefined) return undefined;
    const when = new Date(this.slot * this.#periodMs).toISOString();
    if (found.slot !== this.slot) {
      return `slot ${this.slot} (${when}) is older than the records kept (the latest is slot ` +
        `${found.slot}): counted as done; not running`;
    }
    return `slot ${this.slot} (${when}) is done: it ran on ${found.host} (token ${found.token}, ` +
      `recorded ${found.doneAt}); not running`;
  }

  /**
   * Record the job's success in its slot, fenced by the lock's token.
   *
   * @param lock the held lock
   * @param host this host's name
   * @returns undefined once recorded; else the line to say (the run then exits 1)
   */
  async record(lock: HeldLock, host: string): Promise<string | undefined> {
    try {
      await lock.recordSlot(this.slot, host);
      return undefined;
    } catch (err) {
      return `slot ${this.slot} ran but is not recorded (${
        (err as Error).message
      }): another host may run it again`;
    }
  }
}
