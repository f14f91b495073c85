/**
 * The supervisor: one small process that holds the PID lock, runs COMMAND
 * with posix_spawn, and brings it back when it exits, with exponential
 * backoff and a crash-loop limit. It forwards signals, stops the child (and
 * with `killGroup` its whole process group) before it exits itself, copies
 * the child's output line by line to a file or to syslog (`output.ts`), and
 * reaps every orphan that is reparented to it (it is a child subreaper, or
 * PID 1 in a container).
 *
 * Everything runs in one loop around one `poll(2)`: a wake-up pipe that the
 * signal listeners write to, the child's output pipes and its readiness
 * channel, with the nearest deadline (backoff, stop schedule, readiness) as
 * the timeout. A single `waitpid(-1, WNOHANG)` reaper serves both the child
 * and adopted orphans, so an orphan reaper never steals the child's status.
 *
 * Its own messages go where the child's output goes (the file, syslog, or
 * its stderr). Not through LogTape: the supervisor imports no npm package,
 * so it starts from source as any user (`--user`, whose npm cache may be
 * unreadable) and stays close to an empty Deno process in memory.
 *
 * @module
 */

import {
  becomeSubreaper,
  C,
  close,
  type ExitReason,
  ids,
  kill,
  parseSignal,
  pidfdOpen,
  pidfdSendSignal,
  pipe,
  type PollFd,
  pollWait,
  quote,
  read,
  readNow,
  reap,
  reapAny,
  recvNow,
  signalName,
  writeNow,
} from "../ffi/mod.ts";
import { childrenOf, procStat } from "../ffi/proc.ts";
import { describeExit } from "../launch/exit.ts";
import {
  findMain,
  type MainSearch,
  namedByDaemonPidfile,
  severalMessage,
} from "../launch/forked.ts";
import { fileIdentity, liveTargets, openHolders, type Target } from "../lock/holders.ts";
import { type NotifySocket, openNotifySocket, parseNotify } from "../launch/readiness.ts";
import { parseSchedule, type Schedule } from "../launch/schedule.ts";
import { type Child, childLockFd, descriptorFits, startChild } from "./child.ts";
import type { ChildReadiness, RestartPolicy, SuperviseSettings } from "./settings.ts";
import {
  DEFAULT_CHILD_READY_AFTER_MS,
  DEFAULT_CHILD_READY_TIMEOUT_MS,
  DEFAULT_CHILD_STOP_SCHEDULE,
  DEFAULT_RESTART_POLICY,
  REOPEN_SIGNAL,
} from "./defaults.ts";
import {
  type LineLevel,
  type LineReader,
  openSink,
  type OutputTarget,
  sayOwn,
  type Sink,
  writeStderr,
} from "./output.ts";
import { Backoff, wantsRestart } from "./restart.ts";
import { type ClusterLockState, type SupervisorState, writeStateFile } from "./state.ts";
import { StopWalk } from "./stopping.ts";

export { CHILD_LOCK_FD, childLockFd } from "./child.ts";
export type { OutputTarget } from "./output.ts";
export type { ChildReadiness, RestartPolicy } from "./settings.ts";

/** How a run ends whose program forked away to processes nobody can tell apart. */
const FORK_FAILED: ExitReason = { exited: true, code: 1 };
/** How the state file records a child that could not be spawned. */
const SPAWN_FAILED = "spawn failed: ";
/**
 * Options of {@link Supervisor}: the {@link SuperviseSettings}, with the stop
 * schedule and the output parsed, and the command to run.
 */
export interface SuperviseOptions extends Omit<SuperviseSettings, "stopSchedule" | "output"> {
  /** The program, an absolute path. */
  readonly path: string;
  /** Its argv, `argv[0]` included. */
  readonly argv: readonly string[];
  /** Its environment. */
  readonly env: Readonly<Record<string, string>>;
  /** Its working directory. */
  readonly cwd?: string;
  /** Its umask. */
  readonly umask?: number;
  /** How to stop the child; @default {DEFAULT_CHILD_STOP_SCHEDULE} */
  readonly stopSchedule?: Schedule;
  /** Where the child's output goes; @default {{kind: "inherit"}} */
  readonly output?: OutputTarget;
  /** Where to keep the JSON state (replaced on each change). */
  readonly statePath?: string;
  /**
   * A descriptor on the locked pid file (the supervisor's own): each child
   * inherits a duplicate as {@link CHILD_LOCK_FD}, so the lock stays held
   * while any child lives, even if the supervisor is SIGKILLed.
   */
  readonly lockFd?: number;
  /** Called once, when the first child is ready (e.g. to release `start`). */
  readonly onReady?: (childPid: number) => void;
  /**
   * Keep mode (the keeper): no restart; the run ends when the main process
   * exits, and `onMain` names it in the pid file.
   */
  readonly keep?: boolean;
  /**
   * Keep mode only: follow this running process (started before the keeper)
   * as the main process instead of starting COMMAND. The pidfd names it.
   */
  readonly adopt?: { readonly pid: number; readonly pidfd: number };
  /** Called with the main process's pid each time it changes (a child, or a process it forked away to). */
  readonly onMain?: (pid: number) => void;
  /** The cluster lock's state, recorded in the state file (for `status --json`). */
  readonly lockState?: () => ClusterLockState | undefined;
  /**
   * The pid file: before a restart, any process still holding its lock
   * (what is left of the previous run) is stopped first.
   */
  readonly pidfile?: string;
}

const FORWARDED = ["SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGWINCH"] as const;

/** The most often the state file is rewritten only because the dropped-line count moved. */
const DROPPED_STATE_INTERVAL_MS = 1000;

/**
 * Run COMMAND under supervision until it is stopped (SIGTERM), exits for good
 * under the restart policy, or crash-loops past the limit.
 *
 * @param options what to run and how to supervise it
 * @returns the exit code the supervisor should exit with: 0 after a stop or a
 *   successful last exit, 1 after giving up (crash loop, first child never
 *   ready), the child's status under `restart: "never"`
 * @throws {SystemError} when the output file or the syslog socket cannot be opened
 */
export function supervise(options: SuperviseOptions): Promise<number> {
  return new Supervisor(options).run();
}

/** The supervisor's state and loop; {@link supervise} runs one. */
export class Supervisor {
  readonly o: SuperviseOptions;
  readonly name: string;
  readonly policy: RestartPolicy;
  readonly schedule: Schedule;
  readonly readiness: ChildReadiness;
  /** Where the child's output goes; undefined when the child shares ours. */
  readonly sink: Sink | undefined;
  readonly backoff: Backoff;
  readonly startedWall = new Date();
  readonly wake: [number, number];
  /** Where each child gets the lock, or undefined when it gets none. */
  readonly lockTarget: number | undefined;
  readonly signals: number[] = [];
  readonly listeners: [Deno.Signal, () => void][] = [];
  notify: NotifySocket | undefined;
  child: Child | undefined;
  readers: LineReader[] = [];
  restarts = 0;
  restartAt: number | undefined;
  lastExit: string | null = null;
  lastExitAt: string | null = null;
  stopping = false;
  everReady = false;
  exitCode: number | undefined;
  /** Set when a child will not die even after the stop schedule: exit without it. */
  abandon = false;
  sinkRetryAt: number | undefined;
  /** The phase last written to the state file, and when, and with how many dropped lines. */
  phase = "starting";
  stateWrittenAt = -Infinity;
  stateDropped = 0;
  stateWarned = false;
  /** The last error the supervisor said, for `start` when the first child fails. */
  lastError: string | undefined;
  /** When SIGINT was last forwarded: a child that dies of it soon after was interrupted, not crashed. */
  interruptedAt = -Infinity;
  /** The leader's process group, stopped by the rest of the schedule after the leader is gone. */
  groupWatch: { pgid: number; walk: StopWalk; final: boolean } | undefined;
  /** What is left of a run (its other processes, lock holders), stopped before the next start. */
  leftovers: { targets: Target[]; walk: StopWalk; final: boolean } | undefined;
  /** Whether the leftovers were looked for since the last exit. */
  leftoversChecked = false;
  /** Why the program was fenced (the cluster lock is lost or about to expire); no restart after. */
  fenced: string | undefined;
  /** A child that exited 0 leaving processes, while the daemon's pid file names none yet. */
  forkWait:
    | { child: Child; reason: ExitReason; until: number; why: string; quiet: number }
    | undefined;

  constructor(o: SuperviseOptions) {
    this.o = o;
    this.name = o.name ?? o.path.slice(o.path.lastIndexOf("/") + 1);
    this.policy = o.keep ? "never" : o.restart ?? DEFAULT_RESTART_POLICY;
    this.schedule = o.stopSchedule ?? parseSchedule(DEFAULT_CHILD_STOP_SCHEDULE);
    this.readiness = o.readiness ?? { kind: "alive", afterMs: DEFAULT_CHILD_READY_AFTER_MS };
    this.backoff = new Backoff(o);
    this.sink = openSink(o.output ?? { kind: "inherit" }, this.name, (why) => {
      this.say("err", why);
      this.writeState(this.phase);
    });
    this.wake = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
    let lockTarget = o.lockFd === undefined ? undefined : childLockFd(this.readiness);
    if (lockTarget !== undefined && !descriptorFits(lockTarget + 8)) {
      writeStderr(
        `the descriptor limit (RLIMIT_NOFILE) is too low to hand the lock to ${this.name} ` +
          `on fd ${lockTarget}: only the supervisor holds it`,
      );
      lockTarget = undefined;
    }
    this.lockTarget = lockTarget;
  }

  /**
   * One of the supervisor's own messages, where its output goes.
   *
   * @param level `info` or `err`
   * @param message the text
   */
  say(level: LineLevel, message: string): void {
    if (level === "err") this.lastError = message;
    // A keeper stays quiet but for trouble: its program's output is the program's.
    if (level === "info" && this.o.keep) return;
    sayOwn(this.sink, level, message);
  }

  /**
   * Fence the program: the cluster lock is lost, or its lease is about to
   * expire, so another host may take it. SIGTERM starts the stop schedule;
   * SIGKILL ends the program's process group and whatever else is left of
   * the run at once. The run ends for good either way (no restart), and the
   * supervisor exits 1. Safe to call from outside the loop (a timer).
   *
   * @param sig 15 (the schedule) or 9 (at once)
   * @param why one line, for the log and for `start`
   */
  fence(sig: 15 | 9, why: string): void {
    if (this.fenced === undefined) {
      this.fenced = why;
      this.say("err", `fencing ${this.name}: ${why}`);
    }
    this.stopping = true;
    this.restartAt = undefined;
    this.exitCode ??= 1;
    const c = this.child;
    if (c && sig === 9) this.#signalChild(c, 9);
    else if (c) this.#stopChild(c, why);
    if (sig === 9) {
      for (const t of leftoverTargets(this.o.pidfile)) {
        signalTarget(t, 9);
        close(t.pidfd);
      }
    }
    this.writeState("fencing");
    this.#poke();
  }

  /** Wake the loop (from a signal listener or a timer). */
  #poke(): void {
    try {
      writeNow(this.wake[1], new Uint8Array([1])); // full: already awake
    } catch {
      // closed at exit
    }
  }

  writeState(phase: string): void {
    this.phase = phase;
    if (!this.o.statePath) return;
    const c = this.child;
    const dropped = this.sink?.dropped ?? 0;
    const state: SupervisorState = {
      supervisorPid: ids.pid(),
      childPid: c?.pid ?? null,
      phase,
      restarts: this.restarts,
      lastExit: this.lastExit,
      lastExitAt: this.lastExitAt,
      childStartedAt: c ? c.startedWall.toISOString() : null,
      supervisorStartedAt: this.startedWall.toISOString(),
      command: this.o.argv,
      dropped,
      ...(this.o.lockState ? { lock: this.o.lockState() } : {}),
    };
    this.stateWrittenAt = performance.now();
    this.stateDropped = dropped;
    try {
      writeStateFile(this.o.statePath, state);
    } catch (err) {
      if (this.stateWarned) return;
      this.stateWarned = true; // once: status --json then shows no child, the rest works
      this.say("err", `cannot write the state file: ${(err as Error).message}`);
    }
  }

  /** Rewrite the state when only the dropped-line count moved, at most once a second. */
  #noteDropped(): void {
    const dropped = this.sink?.dropped ?? 0;
    if (dropped === this.stateDropped) return;
    if (performance.now() - this.stateWrittenAt < DROPPED_STATE_INTERVAL_MS) return;
    this.writeState(this.phase);
  }

  #listen(): void {
    const poke = () => this.#poke();
    for (const name of [...FORWARDED, "SIGTERM", "SIGCHLD", "SIGURG"] as const) {
      const fn = () => {
        this.signals.push(name === "SIGCHLD" ? 17 : parseSignal(name)!);
        poke();
      };
      Deno.addSignalListener(name, fn);
      this.listeners.push([name, fn]);
    }
  }

  #unlisten(): void {
    for (const [name, fn] of this.listeners) Deno.removeSignalListener(name, fn);
    this.listeners.length = 0;
  }

  /**
   * Supervise until done.
   *
   * @returns the exit code (see {@link supervise})
   */
  async run(): Promise<number> {
    becomeSubreaperQuietly();
    if (this.readiness.kind === "socket") this.notify = openNotifySocket();
    this.#listen();
    try {
      if (!this.#start()) return 1;
      while (!this.#finished()) await this.#turn();
      return this.exitCode ?? 1;
    } finally {
      this.#unlisten();
      await this.#drainAll(1000);
      for (const r of this.readers) r.close();
      this.readers = [];
      if (this.sink?.dropped !== this.stateDropped) this.writeState(this.phase);
      this.sink?.close();
      close(this.wake[0]);
      close(this.wake[1]);
      this.notify?.[Symbol.dispose]();
    }
  }

  #finished(): boolean {
    if (this.exitCode === undefined) return false;
    return this.abandon ||
      (this.child === undefined && this.groupWatch === undefined && this.leftovers === undefined &&
        this.forkWait === undefined);
  }

  /** Spawn a child; false (with exitCode set) when even the first spawn fails. */
  #start(): boolean {
    if (this.o.adopt && this.restarts === 0) return this.#adoptGiven(this.o.adopt);
    let started;
    try {
      started = startChild({
        path: this.o.path,
        argv: this.o.argv,
        env: this.o.env,
        ...(this.o.cwd === undefined ? {} : { cwd: this.o.cwd }),
        ...(this.o.umask === undefined ? {} : { umask: this.o.umask }),
        // Under a cluster lock the program is fenced as a group, and dies with its keeper.
        killGroup: (this.o.killGroup ?? false) || this.o.lock !== undefined,
        dieWithParent: this.o.lock !== undefined,
        readiness: this.readiness,
        readyTimeout: this.o.readyTimeout ?? DEFAULT_CHILD_READY_TIMEOUT_MS,
        capture: this.sink !== undefined,
        ...(this.lockTarget === undefined
          ? {}
          : { lock: { fd: this.o.lockFd!, target: this.lockTarget } }),
        ...(this.notify === undefined ? {} : { notify: this.notify }),
      });
    } catch (err) {
      this.say("err", `cannot start ${this.name}: ${(err as Error).message}`);
      this.lastExit = `${SPAWN_FAILED}${(err as Error).message}`;
      this.lastExitAt = new Date().toISOString();
      return this.#afterExit(undefined);
    }
    this.readers.push(...started.readers);
    this.child = started.child;
    this.restartAt = undefined;
    this.o.onMain?.(started.child.pid);
    if (this.readiness.kind === "alive" && this.readiness.afterMs <= 0) {
      this.#becameReady(this.child);
    } else this.writeState("starting");
    return true;
  }

  /** One poll and what follows from it. */
  async #turn(): Promise<void> {
    const now = performance.now();
    const c = this.child;
    const deadlines: number[] = [];
    if (this.restartAt !== undefined) deadlines.push(this.restartAt);
    if (c && !c.ready && !c.stop) deadlines.push(c.readyDeadline);
    if (c?.stop) deadlines.push(c.stop.walk.until);
    if (this.groupWatch) deadlines.push(Math.min(this.groupWatch.walk.until, now + 50));
    if (this.leftovers) deadlines.push(Math.min(this.leftovers.walk.until, now + 50));
    if (this.forkWait) deadlines.push(now + 10);
    if (this.sinkRetryAt !== undefined) deadlines.push(this.sinkRetryAt);
    if (this.sink && this.sink.dropped !== this.stateDropped) {
      deadlines.push(this.stateWrittenAt + DROPPED_STATE_INTERVAL_MS);
    }
    const timeout = deadlines.length ? Math.max(0, Math.min(...deadlines) - now) : 5000;

    const fds: PollFd[] = [{ fd: this.wake[0], events: C.POLLIN }];
    const readers = this.sinkRetryAt === undefined ? this.readers.filter((r) => !r.eof) : [];
    for (const r of readers) fds.push({ fd: r.fd, events: C.POLLIN });
    const readyIndex = fds.length;
    if (c && !c.ready && c.readyFd >= 0) fds.push({ fd: c.readyFd, events: C.POLLIN });
    if (c && !c.ready && this.notify) {
      fds.push({ fd: this.notify.fd, events: C.POLLIN });
    }
    const watchIndex = fds.length;
    if (c?.pidfd !== undefined) fds.push({ fd: c.pidfd, events: C.POLLIN });
    const revents = await pollWait(fds, Math.min(timeout, 5000));

    if (revents[0]) drain(this.wake[0]);
    // Output first, so a child's last lines come before the news of its exit.
    readers.forEach((r, i) => {
      if (revents[i + 1]) r.readOnce(this.sink!);
    });
    this.#flushReaders();
    if (revents[readyIndex]) this.#readyInput();
    for (const sig of this.signals.splice(0)) this.#onSignal(sig);
    this.#reap();
    if (revents[watchIndex] && c?.pidfd !== undefined && this.child === c) {
      // An adopted process that is not our child ended: no status to read.
      this.#childExited(c, reap(c.pid) ?? { exited: true, code: 0 });
    }
    this.#timers();
    this.#noteDropped();
  }

  #flushReaders(): void {
    if (!this.sink) return;
    const now = performance.now();
    if (this.sinkRetryAt !== undefined && now < this.sinkRetryAt) return;
    this.sinkRetryAt = undefined;
    for (const r of this.readers) {
      if (!r.flush(this.sink)) {
        this.sinkRetryAt = now + 10;
        return;
      }
    }
    this.sink.flush();
    const done = this.readers.filter((r) => r.eof && !r.blocked);
    if (done.length) {
      for (const r of done) r.close();
      this.readers = this.readers.filter((r) => !done.includes(r));
    }
  }

  /**
   * Read what is left in the pipes at exit, for at most `ms`. A pipe that
   * stays open but quiet (a writer that outlives the child) is not waited on.
   */
  async #drainAll(ms: number): Promise<void> {
    if (!this.sink) return;
    const until = performance.now() + ms;
    while (this.readers.length && performance.now() < until) {
      const live = this.readers.filter((r) => !r.eof);
      if (live.length && this.sinkRetryAt === undefined) {
        const rev = await pollWait(live.map((r) => ({ fd: r.fd, events: C.POLLIN })), 20);
        if (rev.every((r) => r === 0)) break;
        live.forEach((r, i) => rev[i] && r.readOnce(this.sink!));
      }
      this.#flushReaders();
      if (this.sinkRetryAt !== undefined) await new Promise((r) => setTimeout(r, 10));
      else if (!live.length) break;
    }
    for (const r of this.readers) {
      r.finish();
      r.flush(this.sink);
    }
  }

  #readyInput(): void {
    const c = this.child;
    if (!c || c.ready) return;
    if (c.readyFd >= 0) {
      let bytes: Uint8Array;
      try {
        bytes = read(c.readyFd, 512);
      } catch {
        return;
      }
      if (bytes.length === 0) {
        close(c.readyFd);
        c.readyFd = -1;
        this.say("err", `${this.name} (pid ${c.pid}) closed its notification fd before ready`);
        this.#failReadiness(c, "closed its notification fd without writing a newline");
        return;
      }
      if (bytes.includes(10)) this.#becameReady(c);
      return;
    }
    for (;;) {
      const msg = recvNow(this.notify!.fd, 4096);
      if (msg === undefined) return;
      if (parseNotify(new TextDecoder().decode(msg), {}).ready) return this.#becameReady(c);
    }
  }

  #becameReady(c: Child): void {
    c.ready = true;
    if (c.readyFd >= 0) {
      close(c.readyFd);
      c.readyFd = -1;
    }
    this.writeState("running");
    if (!this.everReady) {
      this.everReady = true;
      this.say("info", `${this.name} started (pid ${c.pid}) and is ready`);
      this.o.onReady?.(c.pid);
    } else {
      this.say("info", `${this.name} restarted (pid ${c.pid}) and is ready`);
    }
  }

  #failReadiness(c: Child, why: string): void {
    if (!this.everReady) {
      this.say("err", `giving up: ${this.name} (pid ${c.pid}) ${why} on its first start`);
      this.exitCode = 1;
      this.stopping = true;
    }
    this.#stopChild(c, `${why}; stopping it`);
  }

  #onSignal(sig: number): void {
    if (sig === 17) return; // SIGCHLD: the reaper runs after every turn
    if (sig === REOPEN_SIGNAL) return this.#reopen();
    if (sig === 15) {
      if (this.stopping) return;
      this.stopping = true;
      this.restartAt = undefined;
      const c = this.child;
      if (c) {
        this.say("info", `SIGTERM received: stopping ${this.name} (pid ${c.pid})`);
        this.#stopChild(c, "stop requested");
      } else {
        this.say("info", "SIGTERM received: exiting");
        this.exitCode = 0;
      }
      this.writeState("stopping");
      return;
    }
    if (sig === 2) this.interruptedAt = performance.now();
    if (sig === 1 || sig === 10) this.#reopen();
    const c = this.child;
    if (c) this.#signalChild(c, sig);
  }

  /** Reopen the output file (after a rotation renamed it away). */
  #reopen(): void {
    try {
      this.sink?.reopen();
    } catch (err) {
      // Said in the file still open (the one just rotated), where a reader of the log looks.
      sayOwn(
        this.sink,
        "err",
        `cannot reopen output: ${(err as Error).message}; still writing to the file open before`,
      );
    }
  }

  #signalChild(c: Child, sig: number): void {
    try {
      if (c.pgid !== undefined) kill(-c.pgid, sig);
      else if (c.pidfd !== undefined) pidfdSendSignal(c.pidfd, sig); // not our child: its pid may be reused
      else kill(c.pid, sig);
    } catch (err) {
      writeStderr(`cannot send ${signalName(sig)} to ${c.pid}: ${(err as Error).message}`);
    }
  }

  #stopChild(c: Child, why: string): void {
    if (c.stop) return;
    c.stop = { walk: new StopWalk(this.schedule), why };
    this.#advanceStop(c);
  }

  /** Run schedule steps until one is a wait. */
  #advanceStop(c: Child): void {
    if (c.stop!.walk.advance((sig) => this.#signalChild(c, sig))) return;
    this.say("err", `${this.name} (pid ${c.pid}) is still running after the stop schedule`);
    if (this.stopping) {
      this.exitCode = 1;
      this.abandon = true;
    }
  }

  #reap(): void {
    for (;;) {
      const ended = reapAny();
      if (!ended) return;
      const c = this.child;
      if (c && ended.pid === c.pid) this.#childExited(c, ended.reason);
      // Any other pid: an orphan reparented to us (subreaper or PID 1); reaped, nothing else to do.
    }
  }

  #childExited(c: Child, reason: ExitReason): void {
    this.child = undefined;
    const fork = this.#followFork(c, reason);
    if (fork === "following") return;
    this.#ended(c, fork === "failed" ? FORK_FAILED : reason);
  }

  /** The run's main process ended for good: decide what comes next. */
  #ended(c: Child, reason: ExitReason): void {
    if (c.readyFd >= 0) close(c.readyFd);
    if (c.pidfd !== undefined) close(c.pidfd);
    const uptime = performance.now() - c.startedAt;
    this.lastExit = describeExit(reason);
    this.lastExitAt = new Date().toISOString();
    if (c.pgid !== undefined && groupExists(c.pgid)) {
      // The leader is gone but its workers remain: they go with it, by the
      // rest of the stop schedule (mid-stop: the rest of the current wait
      // first), or all of it, before any restart.
      const walk = c.stop?.walk ?? new StopWalk(this.schedule);
      this.groupWatch = { pgid: c.pgid, walk, final: false };
      if (!c.stop) this.#advanceGroup();
    }
    const who = `${this.name} (pid ${c.pid})`;
    if (!this.stopping && performance.now() - this.interruptedAt < 10_000) {
      // Ctrl-C in `run --supervise` (or `signal INT`): the child ended on an interrupt; so do we.
      this.say("info", `${who} ${this.lastExit} after SIGINT: not restarting`);
      this.stopping = true;
      return this.#exit(130);
    }
    if (this.stopping) {
      this.say("info", `${who} stopped: ${this.lastExit}`);
      return this.#exit(this.exitCode ?? 0);
    }
    if (!c.ready && !this.everReady && !c.stop) {
      this.say("err", `giving up: ${who} ${this.lastExit} before it was ready`);
      return this.#exit(1);
    }
    if (!wantsRestart(this.policy, reason, c.stop !== undefined)) {
      this.say("info", `${who} ${this.lastExit}: not restarting`);
      const code = reason.exited ? reason.code : 128 + reason.signal;
      return this.#exit(this.policy === "never" ? code : 0);
    }
    this.#afterExit(uptime, c.pid);
  }

  #exit(code: number): void {
    this.exitCode = code;
    this.writeState("exited");
  }

  /**
   * Decide the next start after an exit, or a failed spawn (`uptime` undefined).
   *
   * @returns false when giving up
   */
  #afterExit(uptime: number | undefined, pid?: number): boolean {
    const who = pid === undefined ? this.name : `${this.name} (pid ${pid})`;
    if (!this.everReady && pid === undefined) {
      const why = this.lastExit?.startsWith(SPAWN_FAILED)
        ? `: ${this.lastExit.slice(SPAWN_FAILED.length)}`
        : "";
      this.say("err", `giving up: ${this.name} could not be started${why}`);
      this.#exit(1);
      return false;
    }
    const next = this.backoff.next(uptime);
    if ("limit" in next) {
      const window = this.backoff.window / 1000;
      this.say(
        "err",
        `giving up: ${who} ${this.lastExit}; it was restarted ${next.limit} times within ` +
          `${window} s (--max-restarts ${this.backoff.max} --restart-window ${window}s)`,
      );
      this.#exit(1);
      return false;
    }
    this.restartAt = performance.now() + next.delay;
    this.say("err", `${who} ${this.lastExit}; restarting in ${round(next.delay / 1000)} s`);
    this.writeState("backoff");
    return true;
  }

  #advanceGroup(): void {
    const g = this.groupWatch!;
    if (g.walk.advance((sig) => kill(-g.pgid, sig))) return;
    // Nothing left in the schedule: make sure, then stop watching.
    kill(-g.pgid, 9);
    g.walk.until = performance.now() + 1000;
    g.final = true;
  }

  #timers(): void {
    const now = performance.now();
    const c = this.child;
    const g = this.groupWatch;
    if (g) {
      if (!groupExists(g.pgid)) {
        this.groupWatch = undefined;
      } else if (now >= g.walk.until) {
        if (g.final) {
          this.say("err", `process group ${g.pgid} survived SIGKILL`);
          this.groupWatch = undefined;
        } else this.#advanceGroup();
      }
    }
    const l = this.leftovers;
    if (l) {
      if (liveTargets(l.targets).length === 0) {
        this.#endLeftovers();
      } else if (now >= l.walk.until) {
        if (l.final) {
          this.say(
            "err",
            `pids ${liveTargets(l.targets).map((t) => t.pid).join(", ")} survived SIGKILL`,
          );
          this.#endLeftovers();
        } else this.#advanceLeftovers();
      }
    }
    const f = this.forkWait;
    if (f) {
      if (now >= f.until) {
        this.forkWait = undefined;
        this.say("err", `${this.name}: ${f.why}; stopping what it left`);
        this.#stopLeftovers();
        this.#ended(f.child, FORK_FAILED);
      } else {
        const fork = this.#followFork(f.child, f.reason);
        if (fork !== "following") this.#ended(f.child, fork === "failed" ? FORK_FAILED : f.reason);
      }
    }
    if (c?.stop && now >= c.stop.walk.until) this.#advanceStop(c);
    if (c && !c.ready && !c.stop && now >= c.readyDeadline) {
      if (this.readiness.kind === "alive") this.#aliveLongEnough(c, now);
      else {
        this.say("err", `${this.name} (pid ${c.pid}) was not ready within the ready timeout`);
        this.#failReadiness(c, "was not ready in time");
      }
    }
    const waiting = this.restartAt !== undefined && now >= this.restartAt;
    if (waiting && !this.stopping && !this.groupWatch) {
      // What is left of the previous run goes first, or the new run would fight it.
      if (!this.leftoversChecked) this.#stopLeftovers();
      if (this.leftovers) return;
      this.leftoversChecked = false;
      this.restarts++;
      this.#start();
    }
  }
  /**
   * A child alive for `afterMs` is ready; with the program's own pid file,
   * only once that file names a process of this run (a forking daemon that
   * takes longer to fork is not taken for its parent), which then is the
   * run's main process. A file that names nothing of ours by the ready
   * timeout fails the run.
   */
  #aliveLongEnough(c: Child, now: number): void {
    if (this.o.daemonPidfile === undefined) return this.#becameReady(c);
    let named: number | undefined;
    try {
      named = namedByDaemonPidfile({ parent: ids.pid(), daemonPidfile: this.o.daemonPidfile });
    } catch (err) {
      this.say("err", `${this.name}: ${(err as Error).message}`);
      return this.#failReadiness(c, "has a --daemon-pidfile that cannot be read");
    }
    if (named === undefined) {
      c.namedBy ??= now + (this.o.readyTimeout ?? DEFAULT_CHILD_READY_TIMEOUT_MS);
      if (now < c.namedBy) {
        c.readyDeadline = now + 10;
        return;
      }
      return this.#failReadiness(
        c,
        `was not named by --daemon-pidfile ${quote(this.o.daemonPidfile)} within the ready timeout`,
      );
    }
    if (named === c.pid) return this.#becameReady(c);
    const next: Child = { ...c, pid: named, pidfd: undefined };
    this.child = next;
    this.o.onMain?.(named);
    this.#becameReady(next);
  }

  /** The keeper's first run: the process `start` launched, followed through its pidfd. */
  #adoptGiven(adopt: { readonly pid: number; readonly pidfd: number }): boolean {
    const now = performance.now();
    const c: Child = {
      pid: adopt.pid,
      pgid: undefined,
      startedAt: now,
      startedWall: new Date(),
      ready: false,
      readyDeadline: now,
      readyFd: -1,
      pidfd: adopt.pidfd,
    };
    this.child = c;
    this.#becameReady(c); // start saw it ready before it handed it over
    return true;
  }

  /**
   * A child that exits 0 while processes it started run on has forked away:
   * follow its main process (the daemon's pid file names it, or it is the
   * one process left) as the run's child, and name it (`onMain`).
   *
   * @returns following (a main process is followed, or the daemon's pid
   *   file is awaited), ended (nothing left), or failed (it left processes
   *   but no main process can be told: they are being stopped)
   */
  #followFork(c: Child, reason: ExitReason): "following" | "ended" | "failed" {
    const previous = this.forkWait;
    this.forkWait = undefined;
    if (this.stopping || c.stop || !reason.exited || reason.code !== 0) return "ended";
    let found: MainSearch;
    try {
      found = findMain({
        parent: ids.pid(),
        ...(this.o.daemonPidfile === undefined ? {} : { daemonPidfile: this.o.daemonPidfile }),
      });
    } catch (err) {
      this.say("err", `${this.name}: ${(err as Error).message}`);
      this.#stopLeftovers();
      return "failed";
    }
    const wait = (why: string, quiet: number): "following" => {
      this.forkWait = {
        child: c,
        reason,
        until: previous?.until ??
          performance.now() + (this.o.readyTimeout ?? DEFAULT_CHILD_READY_TIMEOUT_MS),
        why,
        quiet,
      };
      return "following";
    };
    switch (found.kind) {
      case "none": {
        // A scan of /proc can miss a child forked just after its listing by a
        // parent that exited just before its look: believe "none" three times.
        const quiet = (previous?.quiet ?? 0) + 1;
        return quiet < 3 ? wait("", quiet) : "ended";
      }
      case "several":
        this.say("err", `${this.name}: ${severalMessage(found.pids)}; stopping them`);
        this.#stopLeftovers();
        return "failed";
      case "waiting":
        return wait(found.why, 0);
      case "found":
        break;
    }
    const now = performance.now();
    const next: Child = {
      ...c,
      pid: found.pid,
      // Signalled as a group only when it leads one (a daemon that called setsid does).
      pgid: c.pgid === undefined
        ? undefined
        : procStat(found.pid)?.pgid === found.pid
        ? found.pid
        : undefined,
      readyDeadline: this.readiness.kind === "alive"
        ? now + this.readiness.afterMs
        : c.readyDeadline,
      pidfd: undefined,
    };
    this.child = next;
    this.say(
      "info",
      `${this.name} (pid ${c.pid}) forked away: following its main process (pid ${found.pid})`,
    );
    this.o.onMain?.(found.pid);
    this.writeState(next.ready ? "running" : "starting");
    return "following";
  }

  /**
   * Look for what is left of the last run (processes reparented to us, and
   * any process holding the pid file's lock) and stop it by the stop schedule.
   */
  #stopLeftovers(): void {
    this.leftoversChecked = true;
    const targets = leftoverTargets(this.o.pidfile);
    if (targets.length === 0) return;
    this.say(
      "info",
      `stopping what is left of the last run first: pids ${targets.map((t) => t.pid).join(", ")}`,
    );
    this.leftovers = { targets, walk: new StopWalk(this.schedule), final: false };
    this.#advanceLeftovers();
  }

  #advanceLeftovers(): void {
    const l = this.leftovers!;
    const send = (sig: number) => {
      for (const t of liveTargets(l.targets)) signalTarget(t, sig);
    };
    if (l.walk.advance(send)) return;
    send(9);
    l.walk.until = performance.now() + 1000;
    l.final = true;
  }

  #endLeftovers(): void {
    for (const t of this.leftovers?.targets ?? []) close(t.pidfd);
    this.leftovers = undefined;
  }
}

/**
 * pidfds on what is left of a run: this process's children (a supervisor's
 * only children are its runs' processes, and orphans reparented to it) and
 * the pid file's other lock holders, each re-checked after the open.
 */
function leftoverTargets(pidfile: string | undefined): Target[] {
  const self = ids.pid();
  const out: Target[] = [];
  const st = pidfile === undefined ? undefined : fileIdentity(pidfile);
  if (st) out.push(...openHolders(st));
  for (const pid of childrenOf(self)) {
    if (out.some((t) => t.pid === pid)) continue;
    let pidfd: number | undefined;
    try {
      pidfd = pidfdOpen(pid);
    } catch {
      continue;
    }
    if (pidfd === undefined) continue;
    const ps = procStat(pid);
    if (ps?.ppid !== self) {
      close(pidfd);
      continue;
    }
    out.push({ pid, pidfd, group: ps.pgid === pid && ps.pgid !== procStat(self)?.pgid });
  }
  return out;
}

/** Signal a leftover through its pidfd, and its group when it leads one of its own. */
function signalTarget(t: Target, sig: number): void {
  try {
    if (t.group) kill(-t.pid, sig);
  } catch {
    // EPERM for a member: the leader still gets it below.
  }
  try {
    pidfdSendSignal(t.pidfd, sig);
  } catch {
    // Gone meanwhile.
  }
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function becomeSubreaperQuietly(): void {
  try {
    becomeSubreaper();
  } catch {
    // Not fatal: orphans then go to init instead of being reaped here.
  }
}

function groupExists(pgid: number): boolean {
  try {
    return kill(-pgid, 0);
  } catch {
    return true; // EPERM: it exists, we just may not signal it
  }
}

function drain(fd: number): void {
  const buf = new Uint8Array(256);
  for (;;) {
    const n = readNow(fd, buf);
    if (n === undefined || n === 0) return;
  }
}
