/**
 * `restart`: stop the daemon if it runs, then start it, under one hold of
 * the guard, so no other controller acts in between. Without a command, the
 * launch recorded beside the pid file is started again.
 *
 * @module
 */

import { NotRunningError } from "./errors.ts";
import { withGuard } from "./guard.ts";
import type { RestartOptions, StartResult } from "./options.ts";
import { launchSpec, recordedSpec } from "./spec.ts";
import { checkLockOf, startLocked } from "./start.ts";
import { stopLocked } from "./stop.ts";

/**
 * Stop (if running) then start, under one hold of the guard.
 *
 * @param options start's and stop's options
 * @returns the new daemon's pid
 * @throws what `start` and `stop` throw, except NotRunningError
 */
export async function restart(options: RestartOptions): Promise<StartResult> {
  const base = options.command === undefined ? recordedSpec(options.pidfile) : undefined;
  const spec = launchSpec(options, "start", base);
  await checkLockOf(spec);
  return await withGuard(options, async () => {
    try {
      await stopLocked(options);
    } catch (err) {
      if (!(err instanceof NotRunningError)) throw err;
    }
    return await startLocked(spec, { ...options, command: spec.command });
  }, options.signal);
}
