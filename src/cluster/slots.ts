/**
 * A job's slots (`run --lock URL --once-per DUR`): the same crontab on
 * several hosts, and the job's success recorded at most once per slot of
 * DUR across all of them. A slot is the multiple of DUR, from the epoch
 * (UTC), nearest to the moment the run starts (halves round up), so hosts
 * whose clocks or cron daemons differ by less than DUR/2 agree on it. The
 * record is written by the lock's holder, fenced by its token, before it
 * lets go of the lock (see `HeldLock.recordSlot`).
 *
 * @module
 */

/**
 * A test hook, never meant for production: milliseconds added to this
 * host's clock where a slot is counted, so one machine can play hosts whose
 * clocks differ. Read nowhere else.
 */
export const CLOCK_OFFSET_ENV = "SINGLETON_RUN_CLOCK_OFFSET_MS";

/** The environment variable that tells the job its slot. */
export const SLOT_ENV = "SINGLETON_RUN_SLOT";

/**
 * The slot a run that started at `startedAt` belongs to.
 *
 * @param startedAt when the run started, ms since the epoch (this host's clock)
 * @param periodMs the slot's length
 * @returns the slot: the multiple of `periodMs` nearest to the start, divided by it
 * @example
 * ```ts
 * import { slotOf } from "./slots.ts";
 * slotOf(10_499, 1000); // 10
 * slotOf(10_500, 1000); // 11: halves round up
 * ```
 */
export function slotOf(startedAt: number, periodMs: number): number {
  return Math.floor((startedAt + clockOffsetMs()) / periodMs + 0.5);
}

/** The test hook's offset, or 0. */
function clockOffsetMs(): number {
  let text: string | undefined;
  try {
    text = Deno.env.get(CLOCK_OFFSET_ENV);
  } catch {
    return 0; // no permission to read the environment: no hook
  }
  const ms = Number(text);
  return text !== undefined && Number.isFinite(ms) ? ms : 0;
}
