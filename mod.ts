/**
 * singleton-run: exactly one instance of a program, a PID file kept locked
 * with flock(2) for the daemon's whole life, proper daemonization, and
 * race-free start, stop, status and reload, for Linux, through libc.
 *
 * @example Hold the single-instance lock for as long as this program runs
 * ```ts
 * import { AlreadyRunningError, PidFile } from "./mod.ts";
 *
 * const path = await Deno.makeTempFile({ suffix: ".pid" });
 * try {
 *   using lock = await PidFile.acquire(path);
 *   console.log(`running as pid ${lock.pid}`);
 * } catch (err) {
 *   if (err instanceof AlreadyRunningError) console.error(err.message);
 *   else throw err;
 * }
 * ```
 *
 * @module
 */

export {
  type AcquireOptions,
  AlreadyRunningError,
  PidFile,
  type ProbeResult,
} from "./src/pidfile.ts";
export { SystemError } from "./src/ffi/errors.ts";
