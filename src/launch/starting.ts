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
 * @module
 */

import {
  C,
  close,
  type ExitReason,
  kill,
  listDirectory,
  pidfdOpen,
  pidfdSendSignal,
  pollNow,
  pollWait,
  reap,
} from "../ffi/mod.ts";
import { procStat } from "../ffi/proc.ts";
import { PidFile } from "../lock/pidfile.ts";
import { fileIdentity, openHolders } from "../lock/holders.ts";
import type { LaunchedDaemon } from "./plan.ts";

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

/** How an abandoned daemon ended. */
export interface Abandoned {
  /** It still ran when it was abandoned (so it was killed). */
  readonly wasRunning: boolean;
  /** How it ended, once reaped. */
  readonly exit: ExitReason | undefined;
}

/** A spawned daemon that does not have the lock to itself yet. */
export class StartingDaemon implements AsyncDisposable {
  /** The daemon's pid. */
  readonly pid: number;
  /** A pidfd on it; undefined when it had already gone when we looked. */
  readonly pidfd: number | undefined;
  /** With a --user stage: the pipe on which the stage reports a failure before its exec. */
  readonly stageErrorFd: number | undefined;
  readonly #lock: PidFile;
  #killed: Promise<ExitReason | undefined> | undefined;
  #abandoned: Promise<Abandoned> | undefined;
  #settled = false;

  private constructor(lock: PidFile, launched: LaunchedDaemon, pidfd: number | undefined) {
    this.#lock = lock;
    this.pid = launched.pid;
    this.stageErrorFd = launched.stageErrorFd;
    this.pidfd = pidfd;
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
    const launched = launch();
    try {
      // First thing: the daemon holds the lock from now on, and the file must name it.
      lock.writePid(launched.pid);
      return new StartingDaemon(lock, launched, pidfdOpen(launched.pid));
    } catch (err) {
      await new StartingDaemon(lock, launched, undefined).abandon();
      throw err;
    }
  }

  /** The pid file this daemon is to hold. */
  get pidfile(): string {
    return this.#lock.path;
  }

  /** Whether the daemon still runs (its pidfd is not readable yet). */
  get running(): boolean {
    return this.pidfd !== undefined && pollNow([{ fd: this.pidfd, events: C.POLLIN }])[0] === 0;
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
   * Kill the daemon and its process group, wait for it and reap it. Once only.
   *
   * @returns how it ended, when it could be reaped
   */
  kill(): Promise<ExitReason | undefined> {
    this.#killed ??= killAndReap(this.pid, this.pidfd);
    return this.#killed;
  }

  /**
   * The start failed: kill the daemon and its group, then what is left in
   * its session (a child moved to a group of its own), then any process
   * still holding the lock (a program that forked into a new session and
   * exited leaves its child holding the inherited descriptor), release the
   * lock and wait until it is free. Idempotent.
   *
   * @returns whether it still ran, and how it ended
   */
  abandon(): Promise<Abandoned> {
    this.#abandoned ??= (async () => {
      const wasRunning = this.running;
      const exit = await this.kill();
      killSession(this.pid);
      await killLockHolders(this.#lock.path);
      this.#settled = true;
      this.#lock.release();
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
  handOver(pid: number = this.pid): void {
    if (pid !== this.pid) this.#lock.writePid(pid);
    this.#settled = true;
    this.#lock.detach();
  }

  /** Abandon the daemon unless it was handed over; close the pidfd. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      if (!this.#settled) await this.abandon();
    } finally {
      if (this.pidfd !== undefined) close(this.pidfd);
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
