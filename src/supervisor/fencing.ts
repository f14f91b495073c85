/**
 * The supervisor (or keeper) under a cluster lock: take the lock before the
 * program starts, keep it alive, and fence the program (stop its process
 * group) before the lease can expire, so it is dead before another host can
 * take the lock over. Loaded only when a lock is asked for: nothing of the
 * cluster code is loaded, and nothing is slower, without one.
 *
 * One lock epoch is one {@link Supervisor}: restarts within it keep the
 * lock. When the lock is lost, the program is fenced and the epoch ends;
 * with supervise mode and a lock wait, the lock is waited for again and a
 * new epoch starts; otherwise the supervisor exits 1.
 *
 * @module
 */

import { describeExit } from "../launch/exit.ts";
import { firstWaitMs } from "../launch/schedule.ts";
import type { LaunchSpec } from "../launch/spec.ts";
import { DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_LOCK_TTL_MS } from "./defaults.ts";
import type { ClusterLockState } from "./state.ts";
import type { Supervisor } from "./supervisor.ts";
import { JobSlot } from "./slot.ts";
import type { HeldLock } from "../cluster/lock.ts";

/** Where an epoch's outcome is told: `start`'s readiness channel. */
export interface EpochChannel {
  failed(reason: string): void;
  /**
   * A conflict, said by the caller instead of here (`run`, which applies
   * `--quiet` and `--conflict-exit-code`): the lock held elsewhere, or the
   * job's slot done. It throws.
   */
  conflict?(reason: string, kind: "held" | "done"): never;
}

/**
 * Supervise under the cluster lock until done.
 *
 * @param spec the launch: its lock, and its stop schedule (whose first wait is the fence's grace)
 * @param waitAgain after a lost lock, wait for it again and start a new epoch
 * @param make a supervisor for one epoch, with the lock's environment and state
 * @param start where a failure to take the lock is told
 * @param startedAt when the run started (ms since the epoch): its slot, with `oncePerMs`
 * @returns the exit code: 3 when the lock is held elsewhere or the slot is
 *   done, 1 when it cannot be taken or was lost (or a success could not be
 *   recorded), else the supervisor's
 */
export async function superviseLocked(
  spec: LaunchSpec,
  waitAgain: boolean,
  make: (env: Record<string, string>, state: () => ClusterLockState) => Supervisor,
  start: EpochChannel,
  startedAt: number = Date.now(),
): Promise<number> {
  const { backendFor, ClusterUnreachableError, LockHeldElsewhereError, parseLockUrl } =
    await import("../cluster/lock.ts");
  const { Fence } = await import("../cluster/fence.ts");
  const settings = spec.lock!;
  const target = parseLockUrl(settings.url);
  const backend = await backendFor(target);
  const options = {
    ttlMs: settings.ttlMs ?? DEFAULT_LOCK_TTL_MS,
    waitMs: settings.waitMs ?? 0,
    timeoutMs: settings.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS,
    ...(settings.tls ? { tls: settings.tls } : {}),
    ...(settings.passwordFile ? { passwordFile: settings.passwordFile } : {}),
    holder: { host: Deno.hostname(), pid: Deno.pid },
  };
  const graceMs = firstWaitMs(spec.stopSchedule);
  const slot = JobSlot.of(spec, startedAt);
  for (let epoch = 0;; epoch++) {
    let held;
    let said = "";
    for (;;) {
      try {
        held = await backend.acquire(
          target,
          epoch === 0 ? options : { ...options, waitMs: "forever" },
        );
        break;
      } catch (err) {
        const message = (err as Error).message;
        if (epoch > 0 && err instanceof ClusterUnreachableError) {
          // Waiting for the lock again after a loss: the partition or the lost quorum that
          // cost it may still be there. Say so once, and keep trying.
          if (message !== said) writeErr(`${message}; trying again`);
          said = message;
          await new Promise((r) => setTimeout(r, Math.min(options.ttlMs / 3, 2000)));
          continue;
        }
        start.failed(message);
        if (err instanceof LockHeldElsewhereError) start.conflict?.(message, "held");
        writeErr(message);
        return err instanceof LockHeldElsewhereError ? 3 : 1;
      }
    }
    const lock = held;
    const skip = slot && await slotDone(slot, lock);
    if (skip) {
      await lock.release();
      start.failed(skip.why);
      if (skip.code === 3) start.conflict?.(skip.why, "done");
      writeErr(skip.why);
      return skip.code;
    }
    const state = (): ClusterLockState => ({
      url: lock.url,
      key: lock.key,
      token: lock.token,
      ttlMs: lock.ttlMs,
      expiresAt: new Date(Date.now() + (lock.deadline() - performance.now())).toISOString(),
    });
    const supervisor = make({ ...lock.env(), ...slot?.env() }, state);
    const fence = new Fence(lock, {
      graceMs,
      onTerm: () =>
        supervisor.fence(15, "the lock's lease may expire soon (no keepalive answered)"),
      onKill: () =>
        supervisor.fence(9, "the lock's lease may have expired (no keepalive answered)"),
    });
    fence.start();
    // The state file shows when the lease may expire: rewritten as keepalives move it.
    const refresh = setInterval(() => supervisor.writeState(), lock.ttlMs / 3);
    let lost: string | undefined;
    let done = false;
    lock.lost.then((why: string) => {
      if (done) return; // our own release at the end of the run
      lost = why;
      supervisor.fence(9, `lost the lock: ${why}`);
    });
    let code: number;
    /** Whether the job's success was recorded in its slot; undefined when it did not succeed. */
    let recorded: boolean | undefined;
    try {
      code = await supervisor.run();
      // A job's success is recorded before the lock is let go. The record is fenced by the
      // token, so it is tried even when the fence fired once the job had ended.
      if (slot && supervisor.lastExit === describeExit({ exited: true, code: 0 })) {
        const unrecorded = await slot.record(lock, options.holder.host);
        if (unrecorded) writeErr(unrecorded);
        recorded = unrecorded === undefined;
      }
    } finally {
      done = true;
      clearInterval(refresh);
      fence.stop();
      // The program is gone; a stop's late SIGTERM must not cut the release short.
      const ignore = () => {};
      Deno.addSignalListener("SIGTERM", ignore);
      try {
        await lock.release();
      } finally {
        Deno.removeSignalListener("SIGTERM", ignore);
      }
    }
    if (recorded !== undefined) return recorded ? 0 : 1;
    if (supervisor.fenced === undefined) return code;
    const why = lost ?? supervisor.fenced;
    if (!waitAgain) {
      start.failed(`the lock was lost: ${why}`);
      writeErr(`the lock was lost; ${supervisor.name} was stopped: ${why}`);
      return 1;
    }
    writeErr(`the lock was lost (${why}); waiting for it again`);
  }
}

/** Whether a run's slot is done (3), or cannot be told (1); undefined when it is open. */
async function slotDone(
  slot: JobSlot,
  lock: HeldLock,
): Promise<{ code: 1 | 3; why: string } | undefined> {
  try {
    const why = await slot.done(lock);
    return why === undefined ? undefined : { code: 3, why };
  } catch (err) {
    return {
      code: 1,
      why: `cannot tell whether slot ${slot.slot} is done: ${(err as Error).message}`,
    };
  }
}

function writeErr(message: string): void {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(`singleton-run: ${message}\n`));
  } catch {
    // no stderr
  }
}
