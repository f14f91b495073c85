/**
 * `stop`, `signal` and `reload`: find the running daemon (the process that
 * holds the pid file's lock), name it for good with a pidfd, and signal it;
 * `stop` then waits, per its schedule, until the lock is free and empties
 * the file.
 *
 * @module
 */

import {
  C,
  close,
  type FileStat,
  kill,
  lstat,
  parseSignal,
  pidfdOpen,
  pidfdSendSignal,
  pollWait,
  quote,
  signalName,
} from "../ffi/mod.ts";
import { processRuns } from "../ffi/proc.ts";
import { PidFile, probeIdentified, probeSync } from "../lock/pidfile.ts";
import {
  type FileIdentity,
  ForeignHolderError,
  holderFacts,
  holdsLockInFdinfo,
  isOurs,
  liveTargets,
  type LockContext,
  lockContext,
  lockHolders,
  onlyForeignHolder,
  openHolders,
  type Target,
} from "../lock/holders.ts";
import { stillRuns } from "../lock/identity.ts";
import { readRecord } from "../lock/record.ts";
import { nextStep, parseSchedule, type Schedule } from "../launch/schedule.ts";
import { UsageError } from "../errors.ts";
import { NotRunningError, StopFailedError } from "./errors.ts";
import { withGuard } from "./guard.ts";
import {
  checkWaits,
  DEFAULT_SCHEDULE,
  type GuardOptions,
  type SignalOptions,
  type StopOptions,
  type StopResult,
  type TrustOptions,
} from "./options.ts";
import { checkTrusted, trustedUid } from "./exec.ts";
import { keeperOf } from "./kept.ts";
import { unlockedMessage } from "./status.ts";
import { checkDirectoriesTrusted, checkPathsDiffer, precheckPidfileForRead } from "./paths.ts";

/** What stop and signal act on. */
interface Targets {
  /** The pid the pid file names, if any. */
  readonly named: number | undefined;
  /** True: `list` is the named process; false: the lock's holders found in /proc. */
  readonly isNamed: boolean;
  /** The pid file's device and inode. */
  readonly st: FileIdentity;
  /** Its owner and record: who is ours. */
  readonly ctx: LockContext;
  readonly list: Target[];
  /**
   * The named process holds no lock and was trusted by `--exec` (a daemon
   * singleton-run did not start): its exit, not a released lock, ends the
   * stop, and its pid file is never written.
   */
  readonly foreign?: boolean;
}

/**
 * Find the running daemon and open a pidfd on it, checking after the open
 * that the lock is still held, the file still names that pid and (where /proc
 * lets us see) the process holds the lock: the pidfd then names the daemon
 * for good, and a recycled pid is never signalled. When the named process is
 * gone or does not hold the lock while the lock is still held (a supervisor
 * SIGKILLed while its child runs on, a daemon whose forked child kept the
 * inherited descriptor), the targets are the processes that hold it, found
 * in /proc and each re-checked after its pidfd is open.
 */
async function findTargets(
  pidfile: string,
  trust: TrustOptions & { readonly group?: boolean },
): Promise<Targets> {
  const found = await findTargetsUnchecked(pidfile, trust);
  if ((trust.exec !== undefined || trust.runsAs !== undefined) && !found.foreign) {
    for (const t of found.list) {
      const check = checkTrusted(t.pid, { ...trust, pidfile, unlocked: false });
      if (check.ok) continue;
      for (const u of found.list) close(u.pidfd);
      throw new StopFailedError(`${check.why}; not signalling it`, t.pid);
    }
  }
  return found;
}

async function findTargetsUnchecked(
  pidfile: string,
  trust: TrustOptions & { readonly group?: boolean },
): Promise<Targets> {
  for (let attempt = 0;; attempt++) {
    const retry = attempt < 20;
    const found = probeSync(pidfile);
    if (found.state === "absent") throw new NotRunningError(pidfile);
    if (found.state === "stale" && processRuns(found.pid) && !reused(pidfile, found.pid)) {
      // A live process no lock covers: never signalled, and its file never touched, unless
      // --exec proves it is the daemon.
      const foreign = trustUnlocked(pidfile, found.pid, trust);
      if (foreign) return foreign;
      if (retry) continue;
    }
    if (found.state === "stale") {
      // Taking the lock to empty the file also proves nobody holds it (a probe can miss).
      if (!emptyPidfile(pidfile) && retry) continue;
      throw new NotRunningError(pidfile, found.pid);
    }
    let st: FileStat;
    try {
      st = lstat(pidfile);
    } catch {
      if (retry) continue;
      throw new NotRunningError(pidfile);
    }
    const ctx = lockContext(pidfile, st.uid);
    const named = found.pid;
    if (named !== undefined) {
      const pidfd = pidfdOpen(named);
      if (pidfd !== undefined) {
        const again = probeSync(pidfile);
        if (again.state !== "running" || again.pid !== named) {
          close(pidfd);
          if (retry) continue;
          throw new StopFailedError(`pid file ${quote(pidfile)} keeps changing; try again`, named);
        }
        // The daemon holds the lock, or a keeper holds it for the daemon.
        if (namedHolds(named, st, ctx) || keeperOf(st, named, ctx) !== undefined) {
          const group = trust.group === true; // signalled as a group only when it leads one
          return { named, isNamed: true, st, ctx, list: [{ pid: named, pidfd, group }] };
        }
        close(pidfd);
      }
    }
    const list = openHolders(st, (h) => isOurs(h, ctx));
    if (list.length > 0) return { named, isNamed: false, st, ctx, list };
    const foreign = onlyForeignHolder(st, ctx);
    if (foreign) throw new ForeignHolderError(pidfile, foreign);
    // No holder in sight: it may have let go just now (look again), or /proc hides it.
    if (retry) {
      await new Promise((r) => setTimeout(r, 10));
      continue;
    }
    throw new StopFailedError(
      `pid file ${quote(pidfile)} is locked, but ${
        named === undefined ? "names no pid" : `pid ${named} it names does not hold it`
      }, and no process that holds it can be seen in /proc; not signalling anything`,
      named,
    );
  }
}

/**
 * A live process the pid file names while no lock covers the file: a target
 * only when `--exec` proves it runs the daemon's executable, as root, the
 * pid file's owner, the caller or `--user` (checked once a pidfd names it
 * for good, and with the file still naming it).
 *
 * @returns the target, or undefined when it ended or the file changed meanwhile
 * @throws {StopFailedError} without `--exec`, or when it is not to be trusted
 */
function trustUnlocked(
  pidfile: string,
  pid: number,
  trust: TrustOptions,
): Targets | undefined {
  if (trust.exec === undefined) {
    throw new StopFailedError(`${unlockedMessage(pid)}; not signalling it`, pid);
  }
  const pidfd = pidfdOpen(pid);
  if (pidfd === undefined) return undefined;
  const { found: again, identity: st } = probeIdentified(pidfile);
  if (again.state !== "stale" || again.pid !== pid || !st) {
    close(pidfd);
    return undefined;
  }
  const check = checkTrusted(pid, { ...trust, pidfile, unlocked: true });
  if (!check.ok) {
    close(pidfd);
    throw new StopFailedError(`${check.why}; not signalling it`, pid);
  }
  return {
    named: pid,
    isNamed: true,
    st,
    ctx: lockContext(pidfile, st.uid),
    list: [{ pid, pidfd, group: false }],
    foreign: true,
  };
}

/**
 * Whether the named process holds the lock as ours: an exclusive lock, and
 * a process of ours (where /proc does not let us look, the probe's word
 * that the lock is ours stands).
 */
function namedHolds(named: number, st: FileIdentity, ctx: LockContext): boolean {
  const holds = holdsLockInFdinfo(named, st);
  if (holds === undefined) return true;
  const facts = holds ? holderFacts(named) : undefined;
  return facts !== undefined && isOurs(facts, ctx);
}

/**
 * Whether the pid the file names was handed to another process since the
 * daemon ended: the record names that pid with another start time.
 */
function reused(pidfile: string, pid: number): boolean {
  const daemon = readRecord(pidfile)?.daemon;
  return daemon?.pid === pid && !stillRuns(daemon);
}

/**
 * pidfds on the top holders of the lock (see {@link topHolders}), each
 * re-checked after the open: a pid reused between the scan and the open does

/**
 * A signal given by name or number, as a number.
 *
 * @throws {UsageError} for a name that is no signal
 */
function signalNumber(signal: Deno.Signal | number): number {
  if (typeof signal === "number") return signal;
  const n = parseSignal(signal);
  if (n === undefined) throw new UsageError(`unknown signal ${quote(signal)}`);
  return n;
}

/**
 * Signal one target through its pidfd; a group leader found as a holder gets
 * the signal as a group (its pgid cannot be reused while the leader lives,
 * and we hold its pidfd).
 *
 * @returns false when it was already gone
 */
function signalTarget(t: Target, sig: number): boolean {
  if (t.group && liveTargets([t]).length === 1) {
    try {
      if (kill(-t.pid, sig)) return true;
    } catch {
      // EPERM for a member: the leader itself still gets it below.
    }
  }
  return pidfdSendSignal(t.pidfd, sig, `pid ${t.pid}`);
}

/** "the pid file names pid N, which is gone", for a message about holders. */
function describeNamed(named: number | undefined): string {
  if (named === undefined) return "the pid file names no pid";
  return processRuns(named)
    ? `the pid file names pid ${named}, which does not hold its lock`
    : `the pid file names pid ${named}, which is gone`;
}

function pidList(pids: readonly number[]): string {
  return pids.length === 1 ? `pid ${pids[0]}` : `pids ${pids.join(", ")}`;
}

/**
 * Stop the daemon: signal it through a pidfd per the schedule and wait for its
 * lock to be released; then leave the pid file empty. When the pid file names
 * a process that is gone or does not hold the lock, the processes that hold
 * it are stopped instead (found in /proc, each re-checked after its pidfd is
 * open); when every process signalled is gone but the lock is still held, the
 * processes left holding it get the last signal and the rest of the schedule.
 *
 * @param options the pid file and the schedule
 * @returns the pid stopped and the signals sent
 * @throws {NotRunningError} when it is not running (a stale file is emptied, never signalled)
 * @throws {StopFailedError} when it still runs after the schedule, or the lock
 *   is held but no process that holds it can be seen in /proc
 * @throws {GuardTimeoutError} when another controller keeps the guard
 * @throws {SystemError} for unreadable files and refused signals (EPERM)
 */
export function stop(options: StopOptions): Promise<StopResult> {
  precheckSignal(options);
  return withGuard(options, () => stopLocked(options));
}

/**
 * The checks of stop, signal, reload and reopen before the guard is taken: the paths
 * must differ, the pid file must be readable; and with no pid file (never
 * started, or a /run cleared by a reboot), nothing can run: not running, as
 * status says, and nothing is created to find that out (not even the guard).
 *
 * @throws {NotRunningError} when there is no pid file
 */
export function precheckSignal(options: GuardOptions & TrustOptions): void {
  if (options.runsAs !== undefined) trustedUid(options.runsAs);
  checkPathsDiffer(options);
  checkWaits(options);
  checkDirectoriesTrusted(options);
  if (!precheckPidfileForRead(options.pidfile)) throw new NotRunningError(options.pidfile);
}

/**
 * Leave the pid file empty once nobody holds it.
 *
 * @returns false when the lock is still held; true once emptied, or when we
 *   may not open the file to check (what the probe said stands)
 */
function emptyPidfile(pidfile: string): boolean {
  try {
    // Another user's lock (the probe found none of ours) does not keep the file from us.
    return PidFile.empty(pidfile) ||
      probeSync(pidfile).state !== "running" && PidFile.empty(pidfile, { evenIfLocked: true });
  } catch {
    return true;
  }
}

/**
 * Stop, with the guard held (restart holds it across the stop and the start).
 *
 * @param options the pid file and the schedule
 * @returns the pid stopped and the signals sent
 */
export async function stopLocked(options: StopOptions): Promise<StopResult> {
  const schedule = options.schedule ?? parseSchedule(DEFAULT_SCHEDULE);
  const found = await findTargets(options.pidfile, options);
  if (!found.isNamed) {
    const pids = found.list.map((t) => t.pid);
    options.onWarning?.(
      `${describeNamed(found.named)}; stopping ${pidList(pids)}, which hold${
        pids.length === 1 ? "s" : ""
      } the lock`,
    );
  }
  using stopping = new Stopping(options.pidfile, found);
  const started = performance.now();
  if (!await stopping.follow(schedule)) throw stopping.stillHeld();
  return {
    pid: stopping.pid,
    signals: stopping.sent,
    waitedMs: Math.round(performance.now() - started),
    ...(found.isNamed ? {} : { holders: stopping.pids() }),
  };
}

/** One stop in progress: the processes signalled so far, and the signals sent. */
class Stopping implements Disposable {
  readonly #pidfile: string;
  readonly #found: Targets;
  readonly #targets: Target[];
  /** The signals sent, in order. */
  readonly sent: number[] = [];

  constructor(pidfile: string, found: Targets) {
    this.#pidfile = pidfile;
    this.#found = found;
    this.#targets = [...found.list];
  }

  /** The process stopped: the first one signalled. */
  get pid(): number {
    return this.#targets[0]!.pid;
  }

  /** Every process signalled. */
  pids(): number[] {
    return [...new Set(this.#targets.map((t) => t.pid))];
  }

  /**
   * Follow the schedule: send each signal, wait each timeout for the lock
   * to be free.
   *
   * @returns true once the lock is free, false when the schedule ran out first
   */
  async follow(schedule: Schedule): Promise<boolean> {
    for (let i = nextStep(schedule, -1); i >= 0; i = nextStep(schedule, i)) {
      if (i === Infinity) {
        while (!await this.waitReleased(60_000));
        return true;
      }
      const step = schedule.steps[i]!;
      if ("signal" in step) this.signal(step.signal);
      else if (await this.waitReleased(step.waitMs)) return true;
    }
    return false;
  }

  /** Send a signal to every target still alive (or to those left holding the lock). */
  signal(sig: number): void {
    if (!this.#retarget(sig)) {
      for (const t of liveTargets(this.#targets)) signalTarget(t, sig);
    }
    this.sent.push(sig);
  }

  /**
   * When every process we signalled is gone but the lock is still held, the
   * processes left holding it (a worker that inherited the descriptor, the
   * child of a supervisor that was killed) get the last signal too.
   *
   * @returns true when there were such processes
   */
  #retarget(sig: number): boolean {
    if (this.#found.foreign || liveTargets(this.#targets).length > 0) return false;
    const { st, ctx } = this.#found;
    // A keeper lets go by itself once its daemon is gone (after it released a cluster lock).
    const keeper = ctx.record()?.spec.holder.kind === "keeper" ? ctx.record()?.holder : undefined;
    const fresh = openHolders(
      st,
      (h) => isOurs(h, ctx) && !(h.pid === keeper?.pid && h.startTicks === keeper.start),
    );
    this.#targets.push(...fresh);
    for (const t of fresh) signalTarget(t, sig);
    return fresh.length > 0;
  }

  /**
   * Wait up to `ms` for the lock to be free (and then empty the file),
   * waking when a target exits.
   */
  async waitReleased(ms: number): Promise<boolean> {
    const deadline = performance.now() + ms;
    let slice = 2;
    for (;;) {
      if (this.#found.foreign) {
        // Not ours: done when it has exited; its file is its own to remove.
        if (liveTargets(this.#targets).length === 0) return true;
      } else if (probeSync(this.#pidfile).state !== "running" && emptyPidfile(this.#pidfile)) {
        return true;
      }
      const remaining = deadline - performance.now();
      if (remaining <= 0) return false;
      const wait = Math.max(1, Math.min(slice, remaining));
      slice = Math.min(slice * 2, 100);
      const last = this.sent[this.sent.length - 1];
      if (last !== undefined && this.#retarget(last)) continue;
      const live = liveTargets(this.#targets);
      if (live.length === 0) await new Promise((r) => setTimeout(r, wait));
      else await pollWait(live.map((t) => ({ fd: t.pidfd, events: C.POLLIN })), wait);
    }
  }

  /** The error for a lock still held when the schedule ran out, naming who holds it. */
  stillHeld(): StopFailedError {
    if (this.#found.foreign) {
      return new StopFailedError(
        `pid ${this.pid} still runs after the stop schedule (${
          this.sent.map(signalName).join(", ")
        } sent)`,
        this.pid,
      );
    }
    const left = lockHolders(this.#found.st).filter((h) => isOurs(h, this.#found.ctx))
      .map((h) => h.pid);
    const who = left.length > 0 ? left : liveTargets(this.#targets).map((t) => t.pid);
    return new StopFailedError(
      `${who.length > 0 ? pidList(who) : `pid ${this.pid}`} still hold${
        who.length > 1 ? "" : "s"
      } ${quote(this.#pidfile)} after the stop schedule (${
        this.sent.map(signalName).join(", ")
      } sent)`,
      who[0] ?? this.pid,
    );
  }

  /** Close the pidfds. */
  [Symbol.dispose](): void {
    for (const t of this.#targets) close(t.pidfd);
  }
}

/**
 * Send a signal to the running daemon through a pidfd (after the same
 * re-check as stop). When the pid file names a process that is gone or does
 * not hold the lock, the signal goes to the processes that hold it.
 *
 * @param options the pid file and the signal
 * @param vet looks at the processes about to be signalled, each named by
 *   its pidfd, and throws to send nothing (reload's check)
 * @returns the daemon's pid (the first holder's, when the named one is not)
 * @throws {NotRunningError} when it is not running
 * @throws {StopFailedError} when the lock is held but no holder can be found
 * @throws {SystemError} EPERM and the like
 */
export function signal(
  options: SignalOptions,
  vet?: (targets: readonly Target[]) => void,
): Promise<number> {
  precheckSignal(options);
  const sig = signalNumber(options.signal);
  return withGuard(options, async () => {
    const found = await findTargets(options.pidfile, options);
    try {
      vet?.(found.list);
      if (!found.isNamed) {
        options.onWarning?.(
          `${describeNamed(found.named)}; signalling ${
            pidList(found.list.map((t) => t.pid))
          }, which hold${found.list.length === 1 ? "s" : ""} the lock`,
        );
      }
      let delivered = false;
      for (const t of found.list) {
        if (signalTarget(t, sig)) delivered = true;
      }
      if (!delivered) throw new NotRunningError(options.pidfile);
      return found.list[0]!.pid;
    } finally {
      for (const t of found.list) close(t.pidfd);
    }
  });
}
