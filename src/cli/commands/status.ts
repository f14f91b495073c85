/**
 * `status`: the daemon's state as one line on stdout (or JSON), the LSB
 * code as the exit code. It never waits and loads only what it reads.
 *
 * @module
 */

// The status module itself, not the control index, which loads the other
// actions' error classes and defaults that a status never needs.
import { status } from "../../control/status.ts";
import type { StatusReport } from "../../control/options.ts";
import { complain, out } from "../output.ts";
import type { Invocation } from "../parse.ts";

/** Run `status`. */
export function statusCommand(inv: Invocation): number | Promise<number> {
  if (inv.values.lock !== undefined && inv.values.pidfile === undefined) return lockCommand(inv);
  const { exec, user } = inv.values;
  const r = status(inv.values.pidfile!, {
    ...(exec === undefined ? {} : { exec }),
    ...(user === undefined ? {} : { runsAs: user }),
  });
  if (inv.values.json) out(JSON.stringify(r));
  else if (r.state === "unknown") complain(`cannot tell: ${r.error}`);
  else out(describe(r));
  return r.code;
}

/** `status --lock URL`: who holds a cluster lock. */
async function lockCommand(inv: Invocation): Promise<number> {
  const { lockStatus } = await import("../../control/mod.ts");
  const { lockSettings } = await import("./common.ts");
  const r = await lockStatus(lockSettings(inv.values)!);
  const last = r.lastSlot === undefined
    ? ""
    : `; last slot done: ${r.lastSlot.slot} on ${r.lastSlot.host} (token ${r.lastSlot.token}, ${r.lastSlot.doneAt})`;
  if (inv.values.json) out(JSON.stringify(r));
  else if (r.state === "unknown") complain(`cannot tell: ${r.error}`);
  else if (r.state === "free") out(`free${last}`);
  else {
    const who = r.host === undefined
      ? ""
      : ` by ${r.host}${r.pid === undefined ? "" : ` (pid ${r.pid})`}`;
    const token = r.token === undefined ? "" : `, fencing token ${r.token}`;
    const left = r.secondsLeft === undefined ? "" : `, ${r.secondsLeft} s left on its lease`;
    out(`held${who}: key ${r.key}${token}${left}${last}`);
  }
  return r.code;
}

/** The state in words. */
function describe(r: StatusReport): string {
  if (r.state === "failed") return failedText(r.failed);
  if (r.state === "stale") return `not running, but the pid file names pid ${r.pid} (stale)`;
  if (r.state === "stopped") return "not running";
  const up = r.uptimeSeconds === undefined ? "" : `, up ${formatUptime(r.uptimeSeconds)}`;
  const kept = r.keeper === undefined ? "" : `; kept by keeper pid ${r.keeper}`;
  const cluster = r.lock === undefined ? "" : lockText(r.lock);
  return `running (pid ${r.pid ?? "unknown"}${up}${supervisorText(r)}${kept}${cluster}${
    holdersText(r)
  })`;
}

/** A service whose supervisor or keeper gave up: when, after how many restarts, how it ended. */
function failedText(failed: StatusReport["failed"]): string {
  if (failed === undefined) return "failed";
  const last = failed.lastExit === null ? "" : `, last: ${failed.lastExit}`;
  return `failed (gave up at ${failed.at} after ${failed.restarts} restart(s)${last})`;
}

/** The cluster lock the keeper holds, or held until its lease expired (a paused keeper). */
function lockText(lock: NonNullable<StatusReport["lock"]>): string {
  if (!lock.expired) {
    return `; holds ${lock.url} (token ${lock.token}, ${lock.secondsLeft} s left on its lease)`;
  }
  const ago = lock.expiredSecondsAgo === undefined ? "" : ` ${lock.expiredSecondsAgo} s ago`;
  return `; held ${lock.url} (token ${lock.token}) until its lease expired${ago}: ` +
    "the keeper renewed nothing since (paused?), and another host may hold the lock now";
}

/** For a supervisor: its child, restarts and the last exit. */
function supervisorText(r: StatusReport): string {
  const sv = r.supervisor;
  if (!sv) return "";
  const child = sv.childPid === null ? `no child (${sv.phase})` : `pid ${sv.childPid}`;
  const health = sv.health?.state === "unhealthy" ? ` (unhealthy: ${sv.health.lastError})` : "";
  return `; supervising ${child}${health}, ${sv.restarts} restart(s)${
    sv.lastExit ? `, last: ${sv.lastExit}` : ""
  }`;
}

/** For a lock held by another process than the one the pid file names: who and why. */
function holdersText(r: StatusReport): string {
  if (r.holders === undefined) return "";
  const named = r.namedPid === null || r.namedPid === undefined
    ? "the pid file names no pid"
    : `the pid file names pid ${r.namedPid}, which ${
      r.namedPidGone ? "is gone" : "does not hold its lock"
    }`;
  const all = r.holders.length > 1 ? `; held by pids ${r.holders.join(", ")}` : "";
  return `; ${named}${all}`;
}

/**
 * An uptime in words: 42s, 3m5s, 2h7m, 4d3h.
 *
 * @param s seconds
 * @returns the text
 */
export function formatUptime(s: number): string {
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
