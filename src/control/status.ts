/**
 * `status`: what the pid file says, without waiting for anything (no guard,
 * no lock), with facts about the running daemon from /proc. It imports only
 * what that needs: the probe, the holder scan, /proc readers and the
 * supervisor's state file reader, nothing that spawns or waits.
 *
 * @module
 */

import { cmdlineOf, openFdCount, processRuns, procStat, startedAt, vmRssKiB } from "../ffi/proc.ts";
import { probeIdentified, type ProbeResult, probeSync } from "../lock/pidfile.ts";
import {
  type FileIdentity,
  foreignLockers,
  holdsLockInFdinfo,
  isOurs,
  type LockContext,
  lockContext,
  lockHolders,
  topHolders,
} from "../lock/holders.ts";
import { stillRuns } from "../lock/identity.ts";
import { readSupervisorStatus } from "../supervisor/state.ts";
import { readRecord } from "../lock/record.ts";
import { checkTrusted, trustedUid } from "./exec.ts";
import { keeperOf } from "./kept.ts";
import type { StatusReport, TrustOptions } from "./options.ts";
import { checkPathTrusted } from "./trust.ts";

/**
 * What the pid file says, without waiting for anything (no guard, no lock),
 * and what the service record beside it adds.
 *
 * @param pidfile the pid file
 * @param options `exec` and `runsAs`: trust a process no lock covers
 * @returns the state, LSB code and, for a running daemon, facts from /proc
 */
export function status(pidfile: string, options: TrustOptions = {}): StatusReport {
  return withRecord(probeStatus(pidfile, options));
}

/**
 * What the pid file and its lock say. Only an exclusive lock held by a
 * process of ours (root's, the pid file owner's, or the recorded daemon's)
 * means running; other users' locks are listed (`foreignHolders`) and change
 * nothing. A pid the file names is the daemon only while it is the process
 * the record names (same start time): the same pid with another start time
 * was handed to someone else.
 */
function probeStatus(pidfile: string, options: TrustOptions): StatusReport {
  if (options.runsAs !== undefined) trustedUid(options.runsAs);
  // The identity of the file whose lock the probe saw: what /proc's
  // descriptors are compared with.
  let probed;
  try {
    // The trust start and stop ask of the path and the file: what another
    // user controls cannot tell whether root's daemon runs.
    checkPathTrusted(pidfile);
    probed = probeIdentified(pidfile);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { state: "unknown", code: 4, pid: null, pidfile, error: message };
  }
  const { found, identity: st, locks } = probed;
  if (!st) return { state: "stopped", code: 3, pid: null, pidfile };
  const ctx = lockContext(pidfile, st.uid);
  const report = judge(pidfile, found, st, ctx, options);
  // Another user's locks, listed when the kernel shows any lock that is not our daemon's one.
  const odd = locks !== undefined &&
    (locks.some((l) => !l.write) || locks.length > 1 || report.state !== "running" && locks.length);
  const foreign = odd ? foreignLockers(st, ctx, locks) : [];
  return foreign.length ? { ...report, foreignHolders: foreign } : report;
}

function judge(
  pidfile: string,
  found: ProbeResult,
  st: FileIdentity,
  ctx: LockContext,
  options: TrustOptions,
): StatusReport {
  if (found.state === "absent") return { state: "stopped", code: 3, pid: null, pidfile };
  if (found.state === "stale") return stale(pidfile, found.pid, ctx, options);
  const named = found.pid;
  // A keeper holds the lock for the daemon the file names (it closed its descriptors).
  const keeper = keeperOf(st, named, ctx);
  if (keeper !== undefined) {
    const kept = readSupervisorStatus(pidfile, keeper);
    return withTrust({
      state: "running",
      code: 0,
      pid: named!,
      pidfile,
      keeper,
      ...procFacts(named!),
      ...(kept?.lock ? { lock: kept.lock } : {}),
    }, options);
  }
  if (named === undefined || holdsLockInFdinfo(named, st) === false) {
    // The lock is held, but not by the pid the file names: say who holds it.
    const holders = lockHolders(st).filter((h) => isOurs(h, ctx));
    if (holders.length > 0) {
      const main = topHolders(holders)[0]!.pid;
      return withTrust({
        state: "running",
        code: 0,
        pid: main,
        pidfile,
        holders: holders.map((h) => h.pid).sort((a, b) => a - b),
        namedPid: named ?? null,
        namedPidGone: named === undefined || !processRuns(named),
        ...procFacts(main),
      }, options);
    }
    // Nobody in sight: the holder may have let go just now.
    try {
      const again = probeSync(pidfile);
      if (again.state === "absent") return { state: "stopped", code: 3, pid: null, pidfile };
      if (again.state === "stale") return stale(pidfile, again.pid, ctx, options);
    } catch {
      // Changed under us: report what the first look found.
    }
  }
  const pid = named ?? null;
  if (pid === null) return { state: "running", code: 0, pid, pidfile };
  const supervisor = readSupervisorStatus(pidfile, pid);
  return withTrust({
    state: "running",
    code: 0,
    pid,
    pidfile,
    ...procFacts(pid),
    ...(supervisor ? { supervisor } : {}),
    ...(supervisor?.lock ? { lock: supervisor.lock } : {}),
    ...(supervisor?.health ? { health: supervisor.health } : {}),
  }, options);
}

/**
 * No lock of ours, and the file names a pid. When that pid runs, it is the
 * recorded daemon still running without its lock (its keeper died: cannot
 * tell, unless `--exec` trusts it), a pid handed to another process since
 * the daemon ended (the record's start time differs: stale), or a process
 * no record speaks of (cannot tell). A job that `run` ran and that ended
 * leaves its pid behind: not running.
 */
function stale(
  pidfile: string,
  pid: number,
  ctx: LockContext,
  options: TrustOptions,
): StatusReport {
  const record = ctx.record();
  const recorded = record?.daemon?.pid === pid ? record.daemon : undefined;
  if (processRuns(pid) && (recorded === undefined || stillRuns(recorded))) {
    if (record?.by !== "run" || recorded !== undefined) return unlocked(pidfile, pid, options);
  }
  if (record?.by === "run") return { state: "stopped", code: 3, pid: null, pidfile };
  return { state: "stale", code: 1, pid, pidfile };
}

/**
 * What the service record adds to a report: the command it launched, and,
 * for a service that is not running because its supervisor or keeper gave
 * up, the failed state (LSB 3: what it left was stopped, so no lock is
 * held). Nothing is read beside a pid file that cannot be trusted.
 */
function withRecord(report: StatusReport): StatusReport {
  if (report.state === "unknown") return report;
  const record = readRecord(report.pidfile);
  if (record === undefined) return report;
  const spec = { command: record.spec.command, recordedAt: record.recordedAt };
  if (record.failed !== undefined && (report.state === "stopped" || report.state === "stale")) {
    return { ...report, state: "failed", code: 3, spec, failed: record.failed };
  }
  return { ...report, spec };
}

/**
 * The pid file names a live process that holds no lock on it: running when
 * `--exec` proves it is the daemon (and it runs as root, the pid file's
 * owner, the caller or `--user`), else cannot tell, saying why.
 */
function unlocked(pidfile: string, pid: number, options: TrustOptions): StatusReport {
  if (options.exec === undefined) {
    return {
      state: "unknown",
      code: 4,
      pid,
      pidfile,
      error: unlockedMessage(pid),
    };
  }
  const report: StatusReport = { state: "running", code: 0, pid, pidfile, ...procFacts(pid) };
  return withTrust(report, options, true);
}

/**
 * The one line for a pid file that names a live process no lock covers.
 *
 * @param pid the process
 * @returns why nothing is known of it, and what to do
 */
export function unlockedMessage(pid: number): string {
  return `the pid file names pid ${pid}, which runs but holds no lock on it: a program ` +
    `singleton-run did not start (give --exec PATH to trust it), a pid reused since the ` +
    `daemon ended, or a daemon that closed the lock's descriptor (start it with --keeper)`;
}

/**
 * With `--exec` or `--user`, or no lock to prove it (`unlocked`): a running
 * daemon must pass {@link checkTrusted}, else cannot tell, saying why.
 */
function withTrust(report: StatusReport, options: TrustOptions, unlocked = false): StatusReport {
  if (report.pid === null) return report;
  if (options.exec === undefined && options.runsAs === undefined && !unlocked) return report;
  const check = checkTrusted(report.pid, { ...options, pidfile: report.pidfile, unlocked });
  if (check.ok) return report;
  return { state: "unknown", code: 4, pid: report.pid, pidfile: report.pidfile, error: check.why };
}

function procFacts(pid: number): Partial<StatusReport> {
  const started = startedAt(procStat(pid)?.startTicks ?? NaN);
  const rss = vmRssKiB(pid);
  const cmdline = cmdlineOf(pid);
  const fds = openFdCount(pid) ?? null;
  return {
    ...(started.time ? { startTime: isoTime(started.time.getTime()) } : {}),
    ...(started.uptimeSeconds === undefined ? {} : { uptimeSeconds: started.uptimeSeconds }),
    ...(rss === undefined ? {} : { rssKiB: rss }),
    fds,
    ...(cmdline ? { cmdline } : {}),
  };
}

/**
 * `Date.prototype.toISOString` for the years 1970 to 9999, by arithmetic:
 * the first toISOString in a process costs ~1 MiB of peak memory, a fifth
 * of what `status` may spend above an empty `deno run`.
 *
 * @param ms milliseconds since the epoch
 * @returns the same text as `new Date(ms).toISOString()`
 */
export function isoTime(ms: number): string {
  const t = Math.trunc(ms);
  const days = Math.floor(t / 86_400_000);
  if (!(days >= 0 && days < 2_932_897)) return new Date(t).toISOString(); // 1970..9999 only
  let rest = t - days * 86_400_000;
  // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = Math.floor(rest / 1000);
  const millis = rest - seconds * 1000;
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(year, 4)}-${p(month)}-${p(day)}T${p(hours)}:${p(minutes)}:${p(seconds)}.${
    p(millis, 3)
  }Z`;
}
