/**
 * A daemon between its spawn and its readiness, for `start` and for
 * `daemonize()` alike: it inherited the pid file's locked descriptor, the
 * file names it, and this process still holds its own descriptor, so the
 * start can still fail cleanly. It ends one of two ways: handed over (the
 * daemon is ready and keeps the lock alone) or abandoned (the daemon, its
 * process group and any process left holding the lock are killed and reaped,
 * and the lock is free again). Disposing of it without a hand-over abandons
 * it: a start that fails in any way leaves nothing behind.
 *
 * While it starts, this process is a child subreaper: a program that forks
 * away (its launched process exits 0 while its child runs on) leaves its
 * processes reparented here, so the main process can be found and followed
 * (`followFork`), and a failed start can stop all of them, even one that
 * left the session and closed the lock descriptor.
 *
 * @module
 */

import {
  C,
  close,
  type ExitReason,
  ids,
  isSubreaper,
  kill,
  listDirectory,
  pidfdOpen,
  pidfdSendSignal,
  pollNow,
  pollWait,
  reap,
  setSubreaper,
} from "../ffi/mod.ts";
import { childrenOf, descendsFrom, procStat } from "../ffi/proc.ts";
import { PidFile } from "../lock/pidfile.ts";
import { fileIdentity, openHolders } from "../lock/holders.ts";
import { findMain, namedByDaemonPidfile, severalMessage } from "./forked.ts";

/** What {@link StartingDaemon.unlessAborted} returns when the caller aborted first. */
export class Aborted {
  // Private, so that no plain object (a ready result with a `reason`) passes for one.
  readonly #aborted = true;
  /** The abort reason, as text (the CLI's is the signal's name). */
  readonly reason: string;
  /** @param reason why */
  constructor(reason: string) {
    this.reason = reason;
  }
}

/** The process launched to become the daemon. */
export interface LaunchedDaemon {
  /** Its pid: the pid file names it. */
  readonly pid: number;
  /** With a user: the privilege stage's error pipe, end of file once it has exec'd the command. */
  readonly stageErrorFd?: number;
}

/** How an abandoned daemon ended. */
export interface Abandoned {
  /** It still ran when it was abandoned (so it was killed). */
  readonly wasRunning: boolean;
  /** How it ended, once reaped. */
  readonly exit: ExitReason | undefined;
}

/** How many more scans must find nothing left before a launch counts as ended. */
const NONE_CONFIRMATIONS = 2;

/** What {@link StartingDaemon.followFork} found after the main process ended. */
export type ForkOutcome =
  /** It had forked away: this process is the main process now, and the pid file names it. */
  | { readonly kind: "adopted"; readonly pid: number }
  /** It ended and nothing it started runs on (or it failed: `exit` says how). */
  | { readonly kind: "ended"; readonly exit: ExitReason | undefined }
  /** It forked away, but the main process cannot be told: why. */
  | { readonly kind: "failed"; readonly why: string };

/** A spawned daemon that does not have the lock to itself yet. */
export class StartingDaemon implements AsyncDisposable {
  /** The process launched (the program, or its --user stage, or the supervisor). */
  readonly launchedPid: number;
  /** With a --user stage: the pipe on which the stage reports a failure before its exec. */
  readonly stageErrorFd: number | undefined;
  readonly #lock: PidFile;
  /** The main process: the launched one until it forks away. */
  #pid: number;
  #pidfd: number | undefined;
  /** Every pidfd opened here, closed at the end. */
  readonly #pidfds: number[] = [];
  /** This process's children before the launch: never part of it. */
  readonly #before: ReadonlySet<number>;
  /** How processes of this launch ended, once reaped here. */
  readonly #exits = new Map<number, ExitReason>();
  /** Whether this process was a child subreaper before the launch. */
  readonly #wasSubreaper: boolean | undefined;
  #killed: Promise<ExitReason | undefined> | undefined;
  #abandoned: Promise<Abandoned> | undefined;
  #settled = false;

  private constructor(
    lock: PidFile,
    launched: LaunchedDaemon,
    pidfd: number | undefined,
    before: ReadonlySet<number>,
    wasSubreaper: boolean | undefined,
  ) {
    this.#lock = lock;
    this.launchedPid = this.#pid = launched.pid;
    this.stageErrorFd = launched.stageErrorFd;
    this.#pidfd = pidfd;
    if (pidfd !== undefined) this.#pidfds.push(pidfd);
    this.#before = before;
    this.#wasSubreaper = wasSubreaper;
  }

  /**
   * Launch the daemon with the locked descriptor and name it in the pid file.
   * If that fails after the spawn, the daemon is killed before this throws.
   *
   * @param lock the held pid file (its descriptor is in the plan `launch` runs)
   * @param launch spawns the daemon
   * @returns the starting daemon
   * @throws {SystemError} when the spawn or the write of the pid file fails
   */
  static async launch(lock: PidFile, launch: () => LaunchedDaemon): Promise<StartingDaemon> {
    const before = new Set(childrenOf(ids.pid()));
    const wasSubreaper = becomeSubreaper();
    let launched: LaunchedDaemon;
    try {
      launched = launch();
    } catch (err) {
      restoreSubreaper(wasSubreaper);
      throw err;
    }
    try {
      // First thing: the daemon holds the lock from now on, and the file must name it.
      lock.writePid(launched.pid);
      return new StartingDaemon(lock, launched, pidfdOpen(launched.pid), before, wasSubreaper);
    } catch (err) {
      await new StartingDaemon(lock, launched, undefined, before, wasSubreaper).abandon();
      throw err;
    }
  }

  /** The main process: the launched one, or the one it forked away to. */
  get pid(): number {
    return this.#pid;
  }

  /** A pidfd on the main process; undefined when it had already gone when we looked. */
  get pidfd(): number | undefined {
    return this.#pidfd;
  }

  /** The pid file this daemon is to hold. */
  get pidfile(): string {
    return this.#lock.path;
  }

  /** Whether the main process still runs (its pidfd is not readable yet). */
  get running(): boolean {
    return this.#pidfd !== undefined && pollNow([{ fd: this.#pidfd, events: C.POLLIN }])[0] === 0;
  }

  /**
   * The main process has ended: when it exited 0 while processes it started
   * run on, it forked away. Find the new main process (the program's pid file
   * names it, or it is the one process left), name it in the pid file and
   * follow it from now on.
   *
   * @param until the `performance.now()` time after which a pid file that
   *   names nothing of ours yet is a failure
   * @param daemonPidfile the program's own pid file, if the user named it
   * @returns adopted, ended (with how, when it could be reaped here), or failed
   * @throws {SystemError} when the program's pid file cannot be read safely
   */
  async followFork(until: number, daemonPidfile?: string): Promise<ForkOutcome> {
    const exit = this.#reapMain();
    if (exit && !(exit.exited && exit.code === 0)) return { kind: "ended", exit };
    const search = {
      parent: ids.pid(),
      ignore: this.#before,
      ...(daemonPidfile === undefined ? {} : { daemonPidfile }),
    };
    let quiet = 0;
    for (;;) {
      const found = findMain(search);
      if (found.kind === "none" && quiet < NONE_CONFIRMATIONS) {
        // A scan of /proc can miss a child forked just after its listing by a
        // parent that exited just before its look: believe "none" twice in a row.
        quiet++;
        await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      switch (found.kind) {
        case "none":
          return { kind: "ended", exit: this.#endedFork() ?? exit };
        case "several":
          return { kind: "failed", why: severalMessage(found.pids) };
        case "waiting":
          if (performance.now() >= until) return { kind: "failed", why: found.why };
          await new Promise((r) => setTimeout(r, 10));
          continue;
        case "found":
          if (this.#adopt(found.pid)) return { kind: "adopted", pid: found.pid };
          continue; // it ended between the look and the pidfd: look again
      }
    }
  }

  /**
   * Wait until the program's own pid file names a process this launch
   * started, and follow that one as the main process (a forking daemon
   * writes its file once its child is set up; a program that stays in the
   * foreground names itself).
   *
   * @param until the `performance.now()` time to give up at
   * @param daemonPidfile the program's pid file
   * @returns named (the main process is the one it names), exited (the main
   *   process ended first), or timeout
   * @throws {SystemError} when the program's pid file cannot be read safely
   */
  async awaitDaemonPidfile(
    until: number,
    daemonPidfile: string,
  ): Promise<"named" | "exited" | "timeout"> {
    const search = { parent: ids.pid(), ignore: this.#before, daemonPidfile };
    for (;;) {
      const named = namedByDaemonPidfile(search);
      if (named !== undefined && (named === this.#pid || this.#adopt(named))) return "named";
      if (!this.running) return "exited";
      if (performance.now() >= until) return "timeout";
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Follow `pid` as the main process when it still descends from this
   * process once a pidfd names it, and name it in the pid file.
   *
   * @returns false when it was gone or not ours by then
   */
  #adopt(pid: number): boolean {
    let pidfd: number | undefined;
    try {
      pidfd = pidfdOpen(pid);
    } catch {
      return false;
    }
    if (pidfd === undefined) return false;
    this.#pidfds.push(pidfd);
    if (!descendsFrom(pid, ids.pid())) return false;
    this.#pid = pid;
    this.#pidfd = pidfd;
    this.#lock.writePid(pid);
    return true;
  }

  /**
   * The main process exited 0 and nothing it started runs on: when it had
   * forked away to one process that has ended since (a daemon whose child
   * failed), that child is the main process, and how it ended is how the
   * launch ended (reaped here: it was reparented to this subreaper).
   *
   * @returns how that child ended, or undefined when there was none, or several
   */
  #endedFork(): ExitReason | undefined {
    const ended = childrenOf(ids.pid(), { zombies: true }).filter((pid) =>
      !this.#before.has(pid) && pid !== this.#pid && procStat(pid)?.state === "Z"
    );
    if (ended.length !== 1) return undefined;
    const exit = reap(ended[0]!);
    if (!exit) return undefined;
    this.#pid = ended[0]!;
    this.#exits.set(this.#pid, exit);
    return exit;
  }

  /** Reap the main process when it is our child and has ended: how it ended. */
  #reapMain(): ExitReason | undefined {
    const known = this.#exits.get(this.#pid);
    if (known) return known;
    const exit = reap(this.#pid);
    if (exit) this.#exits.set(this.#pid, exit);
    return exit;
  }

  /**
   * Wait up to `ms` for the main process to exit by itself (a supervisor
   * that said why it gives up exits right after).
   *
   * @param ms the longest wait
   * @returns whether it has exited
   */
  async exited(ms: number): Promise<boolean> {
    if (this.#pidfd === undefined) return true;
    const watch = [{ fd: this.#pidfd, events: C.POLLIN }];
    if (pollNow(watch)[0] !== 0) return true;
    return (await pollWait(watch, ms))[0] !== 0;
  }

  /**
   * Wait for `work` unless `signal` aborts first: then kill the daemon, let
   * `work` finish (the daemon's death ends any wait on it at once), and
   * return {@link Aborted}. An abort that came before this call counts.
   *
   * @param work a wait on the daemon
   * @param signal the caller's abort
   * @returns what `work` resolved to, or Aborted
   */
  async unlessAborted<T>(work: Promise<T>, signal?: AbortSignal): Promise<T | Aborted> {
    if (!signal) return await work;
    let onAbort = () => {};
    const aborted = new Promise<Aborted>((resolve) => {
      onAbort = () => resolve(new Aborted(String(signal.reason)));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
    const first = await Promise.race([work, aborted]).finally(() =>
      signal.removeEventListener("abort", onAbort)
    );
    if (!(first instanceof Aborted)) return first;
    await this.kill();
    await work.catch(() => {});
    return first;
  }

  /**
   * Kill the main process and its process group (and the launched process,
   * when it is another), wait for it and reap it. Once only.
   *
   * @returns how the main process ended, when it could be reaped
   */
  kill(): Promise<ExitReason | undefined> {
    this.#killed ??= (async () => {
      const launched = this.#exits.get(this.launchedPid) ??
        await killAndReap(this.launchedPid, this.#pidfds[0]);
      if (launched) this.#exits.set(this.launchedPid, launched);
      if (this.#pid === this.launchedPid) return launched;
      const main = this.#exits.get(this.#pid) ?? await killAndReap(this.#pid, this.#pidfd);
      if (main) this.#exits.set(this.#pid, main);
      return main;
    })();
    return this.#killed;
  }

  /**
   * The start failed: kill the daemon and its group, then what is left in
   * its session (a child moved to a group of its own), then every process
   * this launch left reparented here (a program that forked away), then any
   * process still holding the lock (a program that forked into a new
   * session and exited leaves its child holding the inherited descriptor),
   * release the lock and wait until it is free. Idempotent.
   *
   * @returns whether it still ran, and how it ended
   */
  abandon(): Promise<Abandoned> {
    this.#abandoned ??= (async () => {
      const wasRunning = this.running;
      const exit = await this.kill();
      killSession(this.launchedPid);
      if (this.#pid !== this.launchedPid) killSession(this.#pid);
      await killChildren(this.#before);
      await killLockHolders(this.#lock.path);
      this.#settled = true;
      this.#lock.release();
      restoreSubreaper(this.#wasSubreaper);
      await PidFile.waitForRelease(this.#lock.path, { timeout: 2000 });
      return { wasRunning, exit };
    })();
    return this.#abandoned;
  }

  /**
   * The daemon is ready: it keeps the lock alone, and the file names `pid`.
   *
   * @param pid the process that holds the lock from now on (sd_notify's MAINPID)
   */
  handOver(pid: number = this.#pid): void {
    if (pid !== this.#pid) this.#lock.writePid(pid);
    this.#settled = true;
    this.#lock.detach();
    restoreSubreaper(this.#wasSubreaper);
    this.#reapEnded();
  }

  /**
   * Reap what the launch left that has ended (the parents of a program that
   * forked away): left unreaped, they would go to PID 1, which in many
   * containers never reaps.
   */
  #reapEnded(): void {
    for (const pid of childrenOf(ids.pid(), { zombies: true })) {
      if (!this.#before.has(pid) && procStat(pid)?.state === "Z") reap(pid);
    }
  }

  /** Abandon the daemon unless it was handed over; close the pidfds. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      if (!this.#settled) await this.abandon();
    } finally {
      for (const fd of this.#pidfds) close(fd);
      this.#pidfds.length = 0;
    }
  }
}

/**
 * Make this process a child subreaper for the launch.
 *
 * @returns whether it was one already; undefined when it cannot tell or set
 *   it (a forked-away daemon then goes to init and is not found)
 */
function becomeSubreaper(): boolean | undefined {
  try {
    const was = isSubreaper();
    if (!was) setSubreaper(true);
    return was;
  } catch {
    return undefined;
  }
}

/** Put the subreaper setting back as it was before the launch. */
function restoreSubreaper(was: boolean | undefined): void {
  if (was !== false) return;
  try {
    setSubreaper(false);
  } catch {
    // Left on: orphans of the caller's own children come here instead of to init.
  }
}

/**
 * SIGKILL every child this process has now and did not have before the
 * launch (what a forked-away program left reparented here), with its process
 * group when it leads one, then reap them. Each is named by a pidfd checked
 * to be still our child, so a recycled pid is never signalled.
 */
async function killChildren(before: ReadonlySet<number>): Promise<void> {
  const self = ids.pid();
  for (let round = 0; round < 3; round++) {
    const left = childrenOf(self).filter((pid) => !before.has(pid));
    if (left.length === 0) return;
    for (const pid of left) {
      let pidfd: number | undefined;
      try {
        pidfd = pidfdOpen(pid);
        if (pidfd === undefined) continue;
        const st = procStat(pid);
        if (st?.ppid !== self) continue;
        if (st.pgid === pid) killGroup(pid);
        pidfdSendSignal(pidfd, 9);
        const watch = [{ fd: pidfd, events: C.POLLIN }];
        if (pollNow(watch)[0] === 0) await pollWait(watch, 1000);
        reap(pid);
      } catch {
        // Gone, or no longer ours to signal.
      } finally {
        if (pidfd !== undefined) close(pidfd);
      }
    }
  }
}

/** Kill the daemon and its process group, wait for it, reap it: how it ended. */
async function killAndReap(
  pid: number,
  pidfd: number | undefined,
): Promise<ExitReason | undefined> {
  const already = reap(pid);
  if (already) {
    killGroup(pid);
    return already;
  }
  // The leader is our unreaped child, so its pid (and group id) cannot be reused yet.
  killGroup(pid);
  if (pidfd !== undefined) {
    pidfdSendSignal(pidfd, 9);
    const watch = [{ fd: pidfd, events: C.POLLIN }];
    if (pollNow(watch)[0] === 0) await pollWait(watch, 5000);
  } else {
    kill(pid, 9);
  }
  for (let i = 0; i < 50; i++) {
    const r = reap(pid);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 10));
  }
  return undefined;
}

function killGroup(pgid: number): void {
  try {
    kill(-pgid, 9);
  } catch {
    // EPERM: a member changed user; nothing more we can do.
  }
}

/**
 * SIGKILL every process left in the daemon's session. The daemon led a new
 * session, and Linux does not hand out its pid again while any process is in
 * that session, so the session id names only what the daemon started.
 */
function killSession(sid: number): void {
  let entries: string[];
  try {
    entries = listDirectory("/proc");
  } catch {
    return;
  }
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 1 || pid === sid) continue;
    if (procStat(pid)?.sid !== sid) continue;
    let pidfd: number | undefined;
    try {
      pidfd = pidfdOpen(pid);
      // Checked again through the pidfd's process: the pid may have been reused.
      if (pidfd !== undefined && procStat(pid)?.sid === sid) pidfdSendSignal(pidfd, 9);
    } catch {
      // Gone, or no longer ours to signal.
    } finally {
      if (pidfd !== undefined) close(pidfd);
    }
  }
}

/**
 * SIGKILL every process that holds the lock through its own descriptor.
 * This process held the lock when it spawned the daemon, so any other holder
 * inherited the descriptor from the daemon: it is part of the failed start.
 * Each is named by a pidfd re-checked to hold the lock, so a recycled pid is
 * never signalled.
 */
async function killLockHolders(pidfile: string): Promise<void> {
  const st = fileIdentity(pidfile);
  if (!st) return;
  for (let round = 0; round < 3; round++) {
    const holders = openHolders(st);
    if (holders.length === 0) return;
    for (const h of holders) {
      try {
        if (h.group) killGroup(h.pid);
        pidfdSendSignal(h.pidfd, 9);
        const watch = [{ fd: h.pidfd, events: C.POLLIN }];
        if (pollNow(watch)[0] === 0) await pollWait(watch, 1000);
      } catch {
        // EPERM (it changed user): it cannot be stopped from here.
      } finally {
        close(h.pidfd);
      }
    }
  }
}
