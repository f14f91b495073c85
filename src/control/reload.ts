/**
 * `reload`: SIGHUP to the daemon, unless SIGHUP would end it. A program that
 * neither catches, ignores nor blocks SIGHUP (a signalfd program blocks it)
 * dies of it, its default action; `reload` reads the program's signal masks
 * in /proc/PID/status first and refuses then, unless forced. Under a
 * supervisor, the program is COMMAND's current run, which the supervisor
 * forwards SIGHUP to. `signal HUP` stays a plain signal.
 *
 * @module
 */

import { procStat, procStatus } from "../ffi/proc.ts";
import { cmdlineOf } from "../ffi/proc.ts";
import { liveTargets, type Target } from "../lock/holders.ts";
import { readSupervisorStatus } from "../supervisor/state.ts";
import { ReloadRefusedError } from "./errors.ts";
import type { GuardOptions, TrustOptions } from "./options.ts";
import { signal } from "./stop.ts";

/** SIGHUP's number, and its bit in a /proc signal mask. */
const SIGHUP = 1;
const HUP_BIT = 1n << BigInt(SIGHUP - 1);

/** What {@link reload} takes. */
export interface ReloadOptions extends GuardOptions, TrustOptions {
  /**
   * Send SIGHUP even to a program it would end.
   * @default {false}
   */
  readonly force?: boolean;
}

/**
 * Ask the daemon to re-read its configuration: SIGHUP, when it would not
 * end the program (or `force`).
 *
 * @param options the pid file, and `force`
 * @returns the daemon's pid
 * @throws {NotRunningError} when it is not running
 * @throws {ReloadRefusedError} when SIGHUP would end the program (nothing sent)
 */
export function reload(options: ReloadOptions): Promise<number> {
  return signal(
    { ...options, signal: SIGHUP },
    options.force ? undefined : (targets) => refuseFatalHangup(options.pidfile, targets),
  );
}

/**
 * Throw when SIGHUP would end a program it reaches: a target itself, or,
 * for a supervisor, COMMAND's current run.
 *
 * @throws {ReloadRefusedError} naming the first such program
 */
function refuseFatalHangup(pidfile: string, targets: readonly Target[]): void {
  for (const target of targets) {
    const run = currentRun(pidfile, target.pid);
    if (run === undefined) continue; // A supervisor between runs: SIGHUP only reopens its output.
    const masks = procStatus(run.pid);
    // The masks were the program's only if it still runs as that one afterwards.
    if (!masks || !run.stillOurs() || liveTargets([target]).length === 0) continue;
    if ((masks.caught | masks.ignored | masks.blocked) & HUP_BIT) continue;
    const name = cmdlineOf(run.pid)?.[0]?.split("/").pop();
    throw new ReloadRefusedError(
      `SIGHUP would end ${run.what} ${run.pid}${name ? ` (${name})` : ""}, ` +
        "which neither catches, ignores nor blocks it: not sent (--force sends it anyway)",
      run.pid,
    );
  }
}

/** The program SIGHUP is meant for, and how to tell it is still that one. */
interface Run {
  readonly pid: number;
  /** "pid", or "COMMAND's current run, pid" under a supervisor. */
  readonly what: string;
  readonly stillOurs: () => boolean;
}

/**
 * The program a target stands for: a supervisor's current child (from its
 * state file, while it is still that supervisor's child), or the target.
 *
 * @returns the program, or undefined for a supervisor with no child now
 */
function currentRun(pidfile: string, pid: number): Run | undefined {
  const supervised = readSupervisorStatus(pidfile, pid);
  if (supervised === undefined) return { pid, what: "pid", stillOurs: () => true };
  const child = supervised.childPid;
  if (child === null) return undefined;
  // A forking program's main process is the supervisor's too (a child subreaper adopts it).
  const ours = () => procStat(child)?.ppid === pid;
  return ours() ? { pid: child, what: "COMMAND's current run, pid", stillOurs: ours } : undefined;
}
