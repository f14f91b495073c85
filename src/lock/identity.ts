/**
 * A process named for good: its pid and its start time (field 22 of
 * `/proc/PID/stat`, in clock ticks since boot), which together name one
 * process for the life of the boot. A pid alone may have been handed to
 * another process since it was written down; with its start time it cannot.
 * This is the one place that decides whether a process is the one meant:
 * it is acted on only through a pidfd opened and then checked against that
 * start time, so the pid cannot be reused between the check and the act.
 *
 * @module
 */

import { close, pidfdOpen } from "../ffi/sys.ts";
import { procStat } from "../ffi/proc.ts";

/** A process: its pid and when it started (clock ticks since boot). */
export interface Identity {
  readonly pid: number;
  readonly start: number;
}

/**
 * The identity of a running process.
 *
 * @param pid the process
 * @returns its identity, or undefined when it is gone or a zombie
 */
export function identify(pid: number): Identity | undefined {
  const st = procStat(pid);
  if (!st || st.state === "Z" || st.state === "X" || !Number.isFinite(st.startTicks)) {
    return undefined;
  }
  return { pid, start: st.startTicks };
}

/**
 * Whether the process still runs: its pid runs and started when it did.
 *
 * @param id the process
 * @returns false when it is gone, a zombie, or its pid now names another
 */
export function stillRuns(id: Identity): boolean {
  return identify(id.pid)?.start === id.start;
}

/**
 * A pidfd on the process, checked after the open to be the one meant: a
 * pid reused before the open fails the check, and once the pidfd is open the
 * pid cannot be reused behind it.
 *
 * @param id the process
 * @returns the pidfd (the caller closes it), or undefined when it is not running
 */
export function openIdentified(id: Identity): number | undefined {
  let pidfd: number | undefined;
  try {
    pidfd = pidfdOpen(id.pid);
  } catch {
    return undefined;
  }
  if (pidfd === undefined) return undefined;
  if (stillRuns(id)) return pidfd;
  close(pidfd);
  return undefined;
}

/**
 * Whether a value read from a file is an identity.
 *
 * @param value anything
 * @returns true for `{ pid, start }` with whole positive numbers
 */
export function isIdentity(value: unknown): value is Identity {
  if (typeof value !== "object" || value === null) return false;
  const { pid, start } = value as Record<string, unknown>;
  return Number.isInteger(pid) && (pid as number) > 0 && Number.isInteger(start) &&
    (start as number) >= 0;
}
