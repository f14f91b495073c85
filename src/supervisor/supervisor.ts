/**
 * The supervisor: one small process that holds the PID lock, runs COMMAND
 * with posix_spawn, and brings it back when it exits, with exponential
 * backoff and a crash-loop limit. It forwards signals, stops the child (and
 * with `killGroup` its whole process group) before it exits itself, copies
 * the child's output line by line to a file or to syslog (`output.ts`), and
 * reaps every orphan that is reparented to it (it is a child subreaper, or
 * PID 1 in a container). The keeper is the same loop with no restart.
 *
 * The loop is driven by one {@link Phase}: every event (a signal, the main
 * process's exit, its readiness, a deadline) is handled by what the phase
 * says, and every transition is made in one place. After every run, one
 * owner ({@link Supervisor} in its `clearing` phase) stops what is left of
 * it (its process group, processes reparented here, other holders of the
 * lock) by the stop schedule, before the next run or the exit.
 *
 * Everything runs around one `poll(2)`: a wake-up pipe that the signal
 * listeners write to, the child's output pipes and its readiness channel,
 * with the phase's deadline as the timeout. A single `waitpid(-1, WNOHANG)`
 * reaper serves both the child and adopted orphans, so an orphan reaper
 * never steals the child's status.
 *
 * Its own messages go where the child's output goes (the file, syslog, or
 * its stderr). Not through LogTape: the supervisor imports no npm package,
 * so it starts from source as any user and stays close to an empty Deno
 * process in memory.
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
import { childrenOf, descendsFrom, procStat } from "../ffi/proc.ts";
import { describeExit } from "../launch/exit.ts";
import { formatDuration } from "../launch/duration.ts";
import {
  findMain,
  type MainSearch,
  namedByDaemonPidfile,
  severalMessage,
} from "../launch/forked.ts";
import type { LaunchSpec, RestartSpec } from "../launch/spec.ts";
import { fileIdentity, liveTargets, openHolders, type Target } from "../lock/holders.ts";
import { type NotifySocket, openNotifySocket, parseNotify } from "../launch/readiness.ts";
import { ReadyClock } from "../launch/serving.ts";
import { childLockFd, descriptorFits, type Run, startRun } from "./child.ts";
import { REOPEN_SIGNAL } from "./defaults.ts";
import {
  type LineLevel,
  type LineReader,
  openSink,
  sayOwn,
  type Sink,
  writeStderr,
} from "./output.ts";
import { Liveness } from "./health.ts";
import { ManagerLink, type ManagerOrders } from "./manager.ts";
import { Backoff, wantsRestart } from "./restart.ts";
import { type ClusterLockState, type SupervisorState, writeStateFile } from "./state.ts";
import { StopWalk } from "./stopping.ts";

export { CHILD_LOCK_FD, childLockFd } from "./child.ts";

/** How a run ends whose program forked away to processes nobody can tell apart. */
const FORK_FAILED: ExitReason = { exited: true, code: 1 };
/** How the state file records a child that could not be spawned. */
const SPAWN_FAILED = "spawn failed: ";

/** What happens once what is left of a run is stopped. */
type Next =
  | { readonly kind: "restart"; readonly at: number }
  | { readonly kind: "exit"; readonly code: number };

/** What is left of a run, being stopped by the schedule. */
interface Leftovers {
  /** The run's process group, while it has members (`killGroup`). */
  pgid: number | undefined;
  /** Processes reparented here and other holders of the lock, each named by a pidfd. */
  readonly targets: Target[];
  readonly walk: StopWalk;
  /** SIGKILL was sent after the schedule ran out: the last wait. */
  final: boolean;
}

/**
 * Where the supervisor is. The phase is the loop's driver: what each event
 * does depends on it, and only the transitions below change it.
 */
type Phase =
  /** A run's main process was started and is not ready yet. */
  | { readonly name: "starting"; readonly run: Run }
  /** A run's main process is ready. */
  | { readonly name: "running"; readonly run: Run }
  /**
   * The main process exited 0 while processes it started run on: it forked
   * away; the process it forked away to is being looked for.
   */
  | {
    readonly name: "following";
    readonly run: Run;
    readonly exit: ExitReason;
    readonly until: number;
    readonly why: string;
    readonly quiet: number;
  }
  /** The main process is being stopped by the schedule. */
  | { readonly name: "stopping"; readonly run: Run; readonly walk: StopWalk }
  /** The main process ended: what is left of the run is being stopped, then `next`. */
  | { readonly name: "clearing"; readonly left: Leftovers; next: Next }
  /** Waiting to start the next run. */
  | { readonly name: "backoff"; readonly until: number }
  /** Finished: the supervisor exits with `code`. */
  | { readonly name: "done"; readonly code: number };

/** How the supervisor is wired into its process (what the spec does not say). */
export interface SupervisorWiring {
  /** The program's environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The pid file: its other lock holders are part of what a run leaves. */
  readonly pidfile?: string;
  /** Where to keep the JSON state (replaced on each change). */
  readonly statePath?: string;
  /**
   * A descriptor on the locked pid file (the supervisor's own): each child
   * inherits a duplicate as {@link CHILD_LOCK_FD}, so the lock stays held
   * while any child lives, even if the supervisor is SIGKILLed.
   */
  readonly lockFd?: number;
  /** Called once, when the first run is ready (e.g. to release `start`). */
  readonly onReady?: (pid: number) => void;
  /** Called with the main process's pid each time it changes (the keeper names it in the file). */
  readonly onMain?: (pid: number) => void;
  /** The cluster lock's state, recorded in the state file (for `status --json`). */
  readonly lockState?: () => ClusterLockState | undefined;
  /**
   * A keeper's first run: this running process (started before the keeper)
   * instead of a new one. The pidfd names it.
   */
  readonly adopt?: { readonly pid: number; readonly pidfd: number };
  /** The service manager above the supervisor (an outer `NOTIFY_SOCKET`), told how COMMAND goes. */
  readonly manager?: ManagerOrders;
}

const FORWARDED = ["SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGWINCH"] as const;

/** The most often the state file is rewritten only because the dropped-line count moved. */
const DROPPED_STATE_INTERVAL_MS = 1000;

/** A keeper never restarts: its program runs once. */
const KEEP: RestartSpec = {
  policy: "never",
  delayMs: 0,
  delayMaxMs: 0,
  minUptimeMs: 0,
  maxRestarts: 0,
  windowMs: 0,
};

/** The supervisor's loop; {@link Supervisor.run} runs it to its end. */
export class Supervisor {
  readonly spec: LaunchSpec;
  readonly wiring: SupervisorWiring;
  readonly name: string;
  readonly restart: RestartSpec;
  /** Keep mode: one run, and the pid file names the program. */
  readonly keep: boolean;
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
  /** The program's health check and watchdog, when it has either (or may ask for a watchdog). */
  readonly liveness: Liveness | undefined;
  /** The outer service manager, when there is one. */
  readonly manager: ManagerLink | undefined;
  phase: Phase = { name: "backoff", until: 0 };
  /**
   * Set once the supervisor is to exit after the current run (a stop, a
   * fence, giving up): the code it exits with. No restart after that.
   */
  ending: number | undefined;
  readers: LineReader[] = [];
  restarts = 0;
  everReady = false;
  lastExit: string | null = null;
  lastExitAt: string | null = null;
  sinkRetryAt: number | undefined;
  /** The phase name last written to the state file, and when, and with how many dropped lines. */
  stateWrittenAt = -Infinity;
  stateDropped = 0;
  stateWarned = false;
  stateFenced = false;
  /** The health check's last end as last written to the state file. */
  stateCheck: string | null = null;
  /** The last error the supervisor said, for `start` when the first child fails. */
  lastError: string | undefined;
  /** When SIGINT was last forwarded: a child that dies of it soon after was interrupted, not crashed. */
  interruptedAt = -Infinity;
  /** Why the program was fenced (the cluster lock is lost or about to expire); no restart after. */
  fenced: string | undefined;
  /** Asked to stop (SIGTERM, or an interrupt the program died of): an end, not a failure. */
  stopRequested = false;
  /**
   * The last process of the current run other than its main process that
   * ended in failure (reaped here as an orphan): when the main process forked
   * away and nothing runs on, it is why the run ended (a daemon whose child
   * could not bind), not the parent's exit 0.
   */
  forkFailed: { readonly pid: number; readonly reason: ExitReason } | undefined;

  constructor(spec: LaunchSpec, wiring: SupervisorWiring) {
    this.spec = spec;
    this.wiring = wiring;
    this.name = spec.name;
    this.keep = spec.holder.kind === "keeper";
    this.restart = spec.holder.kind === "supervisor" ? spec.holder.restart : KEEP;
    this.backoff = new Backoff(this.restart);
    this.sink = openSink(spec.output, this.name, (why) => {
      this.say("err", why);
      this.writeState();
    }, spec.user?.uid);
    this.wake = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
    let lockTarget = wiring.lockFd === undefined ? undefined : childLockFd(spec.readiness);
    if (lockTarget !== undefined && !descriptorFits(lockTarget + 8)) {
      writeStderr(
        `the descriptor limit (RLIMIT_NOFILE) is too low to hand the lock to ${this.name} ` +
          `on fd ${lockTarget}: only the supervisor holds it`,
      );
      lockTarget = undefined;
    }
    this.lockTarget = lockTarget;
    this.liveness = Liveness.of(spec, wiring.env, () => this.#poke());
    this.manager = wiring.manager
      ? new ManagerLink(wiring.manager, (why) => this.say("err", why))
      : undefined;
  }

  /** The current run's main process, in the phases that have one. */
  get current(): Run | undefined {
    const p = this.phase;
    return "run" in p ? p.run : undefined;
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
    if (level === "info" && this.keep) return;
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
    this.ending ??= 1;
    this.stateFenced = true;
    const p = this.phase;
    if (sig === 9) {
      const run = this.current;
      if (run) this.#signal(run, 9);
      for (const t of leftoverTargets(this.wiring.pidfile)) {
        signalTarget(t, 9);
        close(t.pidfd);
      }
    }
    if (p.name === "starting" || p.name === "running") this.#stop(p.run);
    else if (p.name === "following") this.#clear(p.run, { kind: "exit", code: 1 });
    else if (p.name === "clearing") p.next = { kind: "exit", code: this.ending };
    else if (p.name === "backoff") this.#to({ name: "done", code: this.ending });
    this.writeState();
    this.#poke();
  }

  /**
   * The job ran past its time limit (`run --max-runtime` under a keeper):
   * stop it by the schedule, and exit 124 once it is gone, whatever ended it.
   * Safe to call from outside the loop (a timer).
   *
   * @param limitMs the limit, for the message
   */
  expire(limitMs: number): void {
    if (this.ending !== undefined) return;
    this.ending = 124;
    const p = this.phase;
    const run = this.current;
    this.say(
      "err",
      `${this.name}${run ? ` (pid ${run.pid})` : ""} ran longer than --max-runtime ${
        formatDuration(limitMs)
      }: stopping it, exit 124`,
    );
    if (p.name === "starting" || p.name === "running") this.#stop(p.run);
    else if (p.name === "following") this.#clear(p.run, { kind: "exit", code: 124 });
    else if (p.name === "backoff") this.#to({ name: "done", code: 124 });
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

  /** The phase's name in the state file: starting, running, backoff, stopping, fencing, exited. */
  phaseName(): string {
    const p = this.phase;
    if (p.name === "done") return "exited";
    if (this.stateFenced) return "fencing";
    switch (p.name) {
      case "starting":
        return "starting";
      case "running":
        return "running";
      case "following":
        return p.run.ready ? "running" : "starting";
      case "stopping":
        return "stopping";
      case "clearing":
        return p.next.kind === "restart" ? "backoff" : "stopping";
      case "backoff":
        return "backoff";
    }
  }

  /** Record the state for `status --json`. */
  writeState(): void {
    if (!this.wiring.statePath) return;
    const run = this.current;
    const dropped = this.sink?.dropped ?? 0;
    const state: SupervisorState = {
      supervisorPid: ids.pid(),
      childPid: run?.pid ?? null,
      phase: this.phaseName(),
      restarts: this.restarts,
      lastExit: this.lastExit,
      lastExitAt: this.lastExitAt,
      childStartedAt: run ? run.startedWall.toISOString() : null,
      supervisorStartedAt: this.startedWall.toISOString(),
      command: this.spec.command,
      dropped,
      output: this.spec.output?.kind === "file" ? this.spec.output.path : null,
      ...(this.wiring.lockState ? { lock: this.wiring.lockState() } : {}),
      ...(this.liveness?.record() ? { health: this.liveness.record()! } : {}),
    };
    this.stateWrittenAt = performance.now();
    this.stateDropped = dropped;
    try {
      writeStateFile(this.wiring.statePath, state);
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
    this.writeState();
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
   * @returns the exit code: 0 after a stop or a successful last exit, 1
   *   after giving up (crash loop, first child never ready) or a fence, the
   *   child's status under `restart: "never"`, 130 after an interrupt
   */
  async run(): Promise<number> {
    becomeSubreaperQuietly();
    if (this.spec.readiness.kind === "socket") {
      this.notify = openNotifySocket(this.spec.user ?? undefined);
    }
    this.#listen();
    try {
      if (this.wiring.adopt) this.#adopt(this.wiring.adopt);
      else this.#startRun();
      while (this.phase.name !== "done") await this.#turn();
      return this.phase.code;
    } finally {
      this.liveness?.end();
      this.manager?.stopping(`${this.name}: the supervisor exits`);
      this.#unlisten();
      await this.#drainAll(1000);
      for (const r of this.readers) r.close();
      this.readers = [];
      if (this.sink?.dropped !== this.stateDropped) this.writeState();
      this.sink?.close();
      close(this.wake[0]);
      close(this.wake[1]);
      this.notify?.[Symbol.dispose]();
    }
  }

  /** Change phase, and record it. Checks run only while the run is ready. */
  #to(phase: Phase): void {
    this.phase = phase;
    if (phase.name !== "running" && phase.name !== "following") this.liveness?.end();
    this.writeState();
  }

  /** Start a run; when even that fails, decide as after an exit. */
  #startRun(): void {
    this.liveness?.reset();
    this.forkFailed = undefined;
    let started;
    try {
      started = startRun(this.spec, {
        env: this.wiring.env,
        capture: this.sink !== undefined,
        // Under a cluster lock the program dies with its keeper.
        dieWithParent: this.spec.lock !== null,
        ...(this.lockTarget === undefined
          ? {}
          : { lock: { fd: this.wiring.lockFd!, target: this.lockTarget } }),
        ...(this.notify === undefined ? {} : { notify: this.notify }),
      });
    } catch (err) {
      this.say("err", `cannot start ${this.name}: ${(err as Error).message}`);
      this.lastExit = `${SPAWN_FAILED}${(err as Error).message}`;
      this.lastExitAt = new Date().toISOString();
      return this.#decide(undefined, undefined);
    }
    this.readers.push(...started.readers);
    const run = started.run;
    this.wiring.onMain?.(run.pid);
    const alive = this.spec.readiness.kind === "alive";
    if (alive && this.spec.readiness.afterMs <= 0 && run.stageErrorFd < 0) {
      this.#becameReady(run);
    } else this.#to({ name: "starting", run });
  }

  /** The keeper's first run: the process `start` launched, followed through its pidfd. */
  #adopt(adopt: { readonly pid: number; readonly pidfd: number }): void {
    const now = performance.now();
    this.#becameReady({
      pid: adopt.pid,
      pgid: undefined,
      startedAt: now,
      startedWall: new Date(),
      ready: false,
      readyDeadline: now,
      readyFd: -1,
      pidfd: adopt.pidfd,
      stageErrorFd: -1,
    }); // start saw it ready before it handed it over
  }

  /** One poll and what follows from it. */
  async #turn(): Promise<void> {
    const now = performance.now();
    const run = this.current;
    const timeout = Math.max(0, Math.min(this.#deadline(now), now + 5000) - now);

    const fds: PollFd[] = [{ fd: this.wake[0], events: C.POLLIN }];
    const readers = this.sinkRetryAt === undefined ? this.readers.filter((r) => !r.eof) : [];
    for (const r of readers) fds.push({ fd: r.fd, events: C.POLLIN });
    const readyIndex = fds.length;
    const waitingReady = run && !run.ready && this.phase.name === "starting";
    if (waitingReady && run.stageErrorFd >= 0) {
      fds.push({ fd: run.stageErrorFd, events: C.POLLIN });
    } else if (waitingReady && run.readyFd >= 0) {
      fds.push({ fd: run.readyFd, events: C.POLLIN });
    } else if (waitingReady && this.notify) fds.push({ fd: this.notify.fd, events: C.POLLIN });
    // No channel for `alive` readiness: the next entry is the pidfd, not readiness input.
    const readyWatched = fds.length > readyIndex;
    const watchIndex = fds.length;
    // The main process's pidfd, while it is the one followed (not once it has exited).
    const watched = this.phase.name === "following" ? undefined : run?.pidfd;
    if (watched !== undefined) fds.push({ fd: watched, events: C.POLLIN });
    // Once ready: the notify socket (the watchdog) and a command check's output.
    const notifyIndex = fds.length;
    const listening = this.notify !== undefined && this.phase.name === "running";
    if (listening) fds.push({ fd: this.notify!.fd, events: C.POLLIN });
    const healthIndex = fds.length;
    const healthFds = this.liveness?.fds() ?? [];
    for (const fd of healthFds) fds.push({ fd, events: C.POLLIN });
    const revents = await pollWait(fds, timeout);

    if (revents[0]) drain(this.wake[0]);
    // Output first, so a child's last lines come before the news of its exit.
    readers.forEach((r, i) => {
      if (revents[i + 1]) r.readOnce(this.sink!);
    });
    this.#flushReaders();
    if (readyWatched && revents[readyIndex] && this.current === run) this.#readyInput();
    if (listening && revents[notifyIndex]) this.#notifyInput();
    healthFds.forEach((fd, i) => {
      if (revents[healthIndex + i]) this.liveness!.readOutput(fd);
    });
    for (const sig of this.signals.splice(0)) this.#onSignal(sig);
    this.#reap();
    if (revents[watchIndex] && run && watched !== undefined && this.current === run) {
      // A process that is not our child ended: no status to read.
      this.#mainExited(run, reap(run.pid) ?? { exited: true, code: 0 });
    }
    this.#timers();
    this.#checkLiveness();
    this.manager?.tick(performance.now());
    this.#noteDropped();
  }

  /** The nearest deadline of the phase (and of the output and state), as a `performance.now()` time. */
  #deadline(now: number): number {
    const p = this.phase;
    const times: number[] = [];
    switch (p.name) {
      case "starting":
        times.push(p.run.readyDeadline);
        break;
      case "following":
        times.push(now + 10);
        break;
      case "stopping":
        times.push(p.walk.until);
        break;
      case "clearing":
        times.push(Math.min(p.left.walk.until, now + 50));
        if (p.next.kind === "restart") times.push(p.next.at);
        break;
      case "backoff":
        times.push(p.until);
        break;
    }
    if (p.name === "running" && this.liveness) times.push(this.liveness.deadline());
    if (this.manager) times.push(this.manager.deadline());
    if (this.sinkRetryAt !== undefined) times.push(this.sinkRetryAt);
    if (this.sink && this.sink.dropped !== this.stateDropped) {
      times.push(this.stateWrittenAt + DROPPED_STATE_INTERVAL_MS);
    }
    return times.length ? Math.min(...times) : now + 5000;
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

  /** Something arrived on the starting run's channel: the stage's word, or readiness. */
  #readyInput(): void {
    const p = this.phase;
    if (p.name !== "starting") return;
    const run = p.run;
    if (run.stageErrorFd >= 0) return this.#stageInput(run);
    if (run.readyFd >= 0) {
      let bytes: Uint8Array;
      try {
        bytes = read(run.readyFd, 512);
      } catch {
        return;
      }
      if (bytes.length === 0) {
        close(run.readyFd);
        run.readyFd = -1;
        this.say("err", `${this.name} (pid ${run.pid}) closed its notification fd before ready`);
        this.#failReadiness(run, "closed its notification fd without writing a newline");
        return;
      }
      if (bytes.includes(10)) this.#becameReady(run);
      return;
    }
    for (;;) {
      const msg = recvNow(this.notify!.fd, 4096);
      if (msg === undefined) return;
      const request = parseNotify(new TextDecoder().decode(msg), {});
      this.liveness?.notified(request, performance.now());
      if (request.ready) return this.#becameReady(run);
    }
  }

  /** Datagrams on the notify socket once the run is ready: its watchdog. */
  #notifyInput(): void {
    for (;;) {
      const msg = recvNow(this.notify!.fd, 4096);
      if (msg === undefined) return;
      this.liveness?.notified(parseNotify(new TextDecoder().decode(msg), {}), performance.now());
    }
  }

  /**
   * While the run is ready: what its health check and watchdog say. An
   * unhealthy run is stopped by the stop schedule, then restarted under the
   * restart policy (a stop counts as a failure) with the same backoff.
   */
  #checkLiveness(): void {
    const p = this.phase;
    if (p.name !== "running" || !this.liveness) return;
    const before = this.liveness.state;
    const why = this.liveness.tick(performance.now());
    const who = `${this.name} (pid ${p.run.pid})`;
    if (why !== undefined) {
      this.say("err", `${who} is unhealthy: ${why}; stopping it`);
      this.manager?.status(`${who} is unhealthy: ${why}; restarting it`);
      return this.#stop(p.run);
    }
    if (this.liveness.state !== before) this.manager?.status(`${who} is ${this.liveness.state}`);
    const checked = this.liveness.record()?.lastCheck ?? null;
    if (this.liveness.state !== before || checked !== this.stateCheck) {
      this.stateCheck = checked;
      this.writeState();
    }
  }

  /**
   * The privilege stage's pipe (`user`): its error before the exec, or end
   * of file once the program runs, from when its readiness is counted.
   */
  #stageInput(run: Run): void {
    let bytes: Uint8Array;
    try {
      bytes = read(run.stageErrorFd, 4096);
    } catch {
      return;
    }
    if (bytes.length > 0) {
      this.say("err", `cannot start ${this.name}: ${new TextDecoder().decode(bytes).trim()}`);
      return;
    }
    close(run.stageErrorFd);
    run.stageErrorFd = -1;
    const readiness = this.spec.readiness;
    if (readiness.kind !== "alive") return;
    if (readiness.afterMs <= 0) return this.#becameReady(run);
    run.clock = new ReadyClock(readiness);
    run.readyDeadline = run.clock.next;
  }

  #becameReady(run: Run): void {
    run.ready = true;
    if (run.readyFd >= 0) {
      close(run.readyFd);
      run.readyFd = -1;
    }
    this.liveness?.begin(run.pid, performance.now());
    this.#to({ name: "running", run });
    const first = !this.everReady;
    const line = `${this.name} ${first ? "started" : "restarted"} (pid ${run.pid}) and is ready`;
    this.say("info", line);
    this.manager?.ready(first, line);
    if (first) {
      this.everReady = true;
      this.wiring.onReady?.(run.pid);
    }
  }

  /** The run is not ready as it should be: stop it (and give up when no run ever was). */
  #failReadiness(run: Run, why: string): void {
    if (!this.everReady) {
      this.say("err", `giving up: ${this.name} (pid ${run.pid}) ${why} on its first start`);
      this.ending ??= 1;
    }
    this.#stop(run);
  }

  #onSignal(sig: number): void {
    if (sig === 17) return; // SIGCHLD: the reaper runs after every turn
    if (sig === REOPEN_SIGNAL) return this.#reopen();
    if (sig === 15) return this.#terminate();
    if (sig === 2) this.interruptedAt = performance.now();
    if (sig === 1 || sig === 10) this.#reopen();
    const run = this.current;
    if (run && this.phase.name !== "following") this.#signal(run, sig);
  }

  /** SIGTERM: stop the run, then exit 0 (or with the code an earlier end gave). */
  #terminate(): void {
    this.stopRequested = true;
    if (this.ending !== undefined) return;
    this.ending = 0;
    this.manager?.stopping(`${this.name}: stopping`);
    const p = this.phase;
    switch (p.name) {
      case "starting":
      case "running":
        this.say("info", `SIGTERM received: stopping ${this.name} (pid ${p.run.pid})`);
        this.#stop(p.run);
        return;
      case "following":
        this.say("info", `SIGTERM received: stopping what ${this.name} left`);
        this.#clear(p.run, { kind: "exit", code: 0 });
        return;
      case "clearing":
        this.say("info", "SIGTERM received: exiting once what is left is stopped");
        p.next = { kind: "exit", code: 0 };
        this.writeState();
        return;
      case "backoff":
        this.say("info", "SIGTERM received: exiting");
        this.#to({ name: "done", code: 0 });
        return;
    }
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

  #signal(run: Run, sig: number): void {
    try {
      if (run.pgid !== undefined) kill(-run.pgid, sig);
      else if (run.pidfd !== undefined) pidfdSendSignal(run.pidfd, sig); // not our child: its pid may be reused
      else kill(run.pid, sig);
    } catch (err) {
      if (sig === 18) return; // the SIGCONT after a stop signal: it may have ended of that one
      writeStderr(`cannot send ${signalName(sig)} to ${run.pid}: ${(err as Error).message}`);
    }
  }

  /** Stop the run's main process by the schedule. */
  #stop(run: Run): void {
    if (this.phase.name === "stopping") return;
    const walk = new StopWalk(this.spec.stopSchedule);
    this.#to({ name: "stopping", run, walk });
    this.#advanceStop(run, walk);
  }

  /** Run schedule steps until one is a wait. */
  #advanceStop(run: Run, walk: StopWalk): void {
    if (walk.advance((sig) => withContinue(sig, (s) => this.#signal(run, s)))) return;
    this.say("err", `${this.name} (pid ${run.pid}) is still running after the stop schedule`);
    if (this.ending !== undefined) this.#to({ name: "done", code: 1 }); // exit without it
  }

  #reap(): void {
    for (;;) {
      const ended = reapAny();
      if (!ended) return;
      if (this.liveness?.reaped(ended.pid, ended.reason)) continue;
      const run = this.current;
      if (run && ended.pid === run.pid) this.#mainExited(run, ended.reason);
      else if (run && !(ended.reason.exited && ended.reason.code === 0)) {
        // An orphan reparented to us (subreaper or PID 1) that failed: kept in case it was the
        // process the main one forked away to.
        this.forkFailed = ended;
      }
    }
  }

  /** The run's main process exited. */
  #mainExited(run: Run, reason: ExitReason): void {
    if (run.readyFd >= 0) {
      close(run.readyFd);
      run.readyFd = -1;
    }
    if (run.stageErrorFd >= 0) {
      this.#stageInput(run); // its last word, if it could not exec
      if (run.stageErrorFd >= 0) close(run.stageErrorFd);
      run.stageErrorFd = -1;
    }
    const p = this.phase;
    const stopped = p.name === "stopping";
    if (!stopped && this.ending === undefined && reason.exited && reason.code === 0) {
      this.#to({
        name: "following",
        run,
        exit: reason,
        until: performance.now() + this.spec.readyTimeoutMs,
        why: "",
        quiet: 0,
      });
      return this.#follow();
    }
    this.#ended(run, reason, stopped);
  }

  /**
   * The main process exited 0 while processes it started may run on: follow
   * the main process it forked away to (the daemon's pid file names it, or
   * it is the one process left) as the run's main process, and name it.
   */
  #follow(): void {
    const p = this.phase;
    if (p.name !== "following") return;
    let found: MainSearch;
    try {
      found = findMain({
        parent: ids.pid(),
        ...(this.spec.daemonPidfile === null ? {} : { daemonPidfile: this.spec.daemonPidfile }),
      });
    } catch (err) {
      this.say("err", `${this.name}: ${(err as Error).message}`);
      return this.#ended(p.run, FORK_FAILED, false);
    }
    switch (found.kind) {
      case "none":
        // A scan of /proc can miss a child forked just after its listing by a
        // parent that exited just before its look: believe "none" three times.
        if (p.quiet + 1 < 3) {
          this.phase = { ...p, quiet: p.quiet + 1 };
          return;
        }
        if (this.forkFailed) {
          return this.#ended({ ...p.run, pid: this.forkFailed.pid }, this.forkFailed.reason, false);
        }
        return this.#ended(p.run, p.exit, false);
      case "several":
        this.say("err", `${this.name}: ${severalMessage(found.pids)}; stopping them`);
        return this.#ended(p.run, FORK_FAILED, false);
      case "waiting":
        if (performance.now() >= p.until) {
          this.say("err", `${this.name}: ${found.why}; stopping what it left`);
          return this.#ended(p.run, FORK_FAILED, false);
        }
        this.phase = { ...p, why: found.why, quiet: 0 };
        return;
      case "found":
        break;
    }
    const pidfd = watchDescendant(found.pid);
    if (pidfd === undefined) return; // gone, or not ours, by then: look again
    const now = performance.now();
    const old = p.run;
    if (old.pidfd !== undefined) close(old.pidfd);
    const next: Run = {
      ...old,
      pid: found.pid,
      // Signalled as a group only when it leads one (a daemon that called setsid does).
      pgid: old.pgid === undefined
        ? undefined
        : procStat(found.pid)?.pgid === found.pid
        ? found.pid
        : undefined,
      pidfd,
    };
    // Readiness counts again from the fork: the main process is another one.
    if (this.spec.readiness.kind === "alive" && !old.ready) {
      next.clock = new ReadyClock(this.spec.readiness, now);
      next.readyDeadline = next.clock.next;
    }
    this.say(
      "info",
      `${this.name} (pid ${old.pid}) forked away: following its main process (pid ${found.pid})`,
    );
    this.wiring.onMain?.(found.pid);
    this.liveness?.follow(found.pid);
    this.#to(next.ready ? { name: "running", run: next } : { name: "starting", run: next });
  }

  /**
   * A child alive for `afterMs` is ready; with the program's own pid file,
   * only once that file names a process of this run (a forking daemon that
   * takes longer to fork is not taken for its parent), which then is the
   * run's main process. A file that names nothing of ours by the ready
   * timeout fails the run.
   */
  #aliveLongEnough(run: Run, now: number): void {
    if (this.spec.daemonPidfile === null) return this.#becameReady(run);
    let named: number | undefined;
    try {
      named = namedByDaemonPidfile({ parent: ids.pid(), daemonPidfile: this.spec.daemonPidfile });
    } catch (err) {
      this.say("err", `${this.name}: ${(err as Error).message}`);
      return this.#failReadiness(run, "has a --daemon-pidfile that cannot be read");
    }
    if (named === undefined) {
      run.namedBy ??= now + this.spec.readyTimeoutMs;
      if (now < run.namedBy) {
        run.readyDeadline = now + 10;
        return;
      }
      return this.#failReadiness(
        run,
        `was not named by --daemon-pidfile ${
          quote(this.spec.daemonPidfile)
        } within the ready timeout`,
      );
    }
    if (named === run.pid) return this.#becameReady(run);
    // Followed through a pidfd: it may be a grandchild whose parent lives on, never reaped here.
    const pidfd = watchDescendant(named);
    if (pidfd === undefined) {
      run.readyDeadline = now + 10;
      return;
    }
    if (run.pidfd !== undefined) close(run.pidfd);
    const next: Run = { ...run, pid: named, pidfd };
    this.wiring.onMain?.(named);
    this.#becameReady(next);
  }

  /**
   * The run's main process ended for good: decide what comes next, then
   * stop what is left of the run first.
   *
   * @param stopped it was being stopped by the schedule
   */
  #ended(run: Run, reason: ExitReason, stopped: boolean): void {
    if (run.pidfd !== undefined) close(run.pidfd);
    const uptime = performance.now() - run.startedAt;
    this.lastExit = describeExit(reason);
    this.lastExitAt = new Date().toISOString();
    const who = `${this.name} (pid ${run.pid})`;
    if (this.ending === undefined && performance.now() - this.interruptedAt < 10_000) {
      // Ctrl-C in `run --supervise` (or `signal INT`): the child ended on an interrupt; so do we.
      this.say("info", `${who} ${this.lastExit} after SIGINT: not restarting`);
      this.ending = 130;
      this.stopRequested = true;
    }
    if (this.ending !== undefined) {
      if (this.ending !== 130) this.say("info", `${who} stopped: ${this.lastExit}`);
      return this.#clear(run, { kind: "exit", code: this.ending });
    }
    if (!run.ready && !this.everReady && !stopped) {
      this.say("err", `giving up: ${who} ${this.lastExit} before it was ready`);
      return this.#clear(run, { kind: "exit", code: 1 });
    }
    if (!wantsRestart(this.restart.policy, reason, stopped)) {
      this.say("info", `${who} ${this.lastExit}: not restarting`);
      const code = reason.exited ? reason.code : 128 + reason.signal;
      return this.#clear(run, { kind: "exit", code: this.restart.policy === "never" ? code : 0 });
    }
    this.#decide(uptime, run);
  }

  /**
   * After an exit (or a spawn that failed: `run` undefined), restart after
   * the backoff, or give up at the crash-loop limit.
   */
  #decide(uptime: number | undefined, run: Run | undefined): void {
    const who = run === undefined ? this.name : `${this.name} (pid ${run.pid})`;
    if (!this.everReady && run === undefined) {
      const why = this.lastExit?.startsWith(SPAWN_FAILED)
        ? `: ${this.lastExit.slice(SPAWN_FAILED.length)}`
        : "";
      this.say("err", `giving up: ${this.name} could not be started${why}`);
      return this.#clear(undefined, { kind: "exit", code: 1 });
    }
    const next = this.backoff.next(uptime);
    if ("limit" in next) {
      const window = this.backoff.window / 1000;
      this.say(
        "err",
        `giving up: ${who} ${this.lastExit}; it was restarted ${next.limit} times within ` +
          `${window} s (--max-restarts ${this.backoff.max} --restart-window ${window}s)`,
      );
      return this.#clear(run, { kind: "exit", code: 1 });
    }
    const line = `${who} ${this.lastExit}; restarting in ${round(next.delay / 1000)} s`;
    this.say("err", line);
    this.manager?.status(line);
    this.#clear(run, { kind: "restart", at: performance.now() + next.delay });
  }

  /**
   * The one owner of what a run leaves: its process group, the processes
   * reparented here, and other holders of the pid file's lock are stopped by
   * the schedule (mid-stop: the rest of the current wait first), then
   * `next`: the next run (no sooner than its time) or the exit.
   */
  #clear(run: Run | undefined, next: Next): void {
    const p = this.phase;
    const walk = p.name === "stopping" ? p.walk : new StopWalk(this.spec.stopSchedule);
    const pgid = run?.pgid !== undefined && groupExists(run.pgid) ? run.pgid : undefined;
    const left: Leftovers = {
      pgid,
      targets: leftoverTargets(this.wiring.pidfile),
      walk,
      final: false,
    };
    if (left.pgid === undefined && liveTargets(left.targets).length === 0) {
      closeTargets(left.targets);
      return this.#next(next);
    }
    if (left.targets.length > 0) {
      this.say(
        "info",
        `stopping what is left of the last run: pids ${left.targets.map((t) => t.pid).join(", ")}`,
      );
    }
    this.#to({ name: "clearing", left, next });
    if (p.name !== "stopping") return this.#advanceClearing(left);
    // Mid-stop: the rest of the current wait first; what was not signalled yet gets its signal.
    const sig = walk.lastSignal;
    if (sig !== undefined) {
      withContinue(sig, (s) => {
        for (const t of liveTargets(left.targets)) signalTarget(t, s);
      });
    }
  }

  /** Signal what is left up to the schedule's next wait; SIGKILL when it has run out. */
  #advanceClearing(left: Leftovers): void {
    const send = (sig: number) =>
      withContinue(sig, (s) => {
        if (left.pgid !== undefined) killQuietly(-left.pgid, s);
        for (const t of liveTargets(left.targets)) signalTarget(t, s);
      });
    if (left.walk.advance(send)) return;
    send(9);
    left.walk.until = performance.now() + 1000;
    left.final = true;
  }

  /** What is left is gone (or survived SIGKILL): the next run, or the exit. */
  #next(next: Next): void {
    if (next.kind === "exit") return this.#to({ name: "done", code: next.code });
    if (performance.now() < next.at) return this.#to({ name: "backoff", until: next.at });
    this.restarts++;
    this.#startRun();
  }

  #timers(): void {
    const now = performance.now();
    const p = this.phase;
    switch (p.name) {
      case "starting": {
        const run = p.run;
        if (now < run.readyDeadline || run.stageErrorFd >= 0) return;
        if (this.spec.readiness.kind === "alive") {
          if (run.clock && !run.clock.look(run.pid, now)) {
            run.readyDeadline = run.clock.next;
            return;
          }
          return this.#aliveLongEnough(run, now);
        }
        this.say("err", `${this.name} (pid ${run.pid}) was not ready within the ready timeout`);
        return this.#failReadiness(run, "was not ready in time");
      }
      case "following":
        return this.#follow();
      case "stopping":
        if (now >= p.walk.until) this.#advanceStop(p.run, p.walk);
        return;
      case "clearing": {
        const left = p.left;
        if (left.pgid !== undefined && !groupExists(left.pgid)) left.pgid = undefined;
        const live = liveTargets(left.targets);
        if (left.pgid === undefined && live.length === 0) {
          closeTargets(left.targets);
          return this.#next(p.next);
        }
        if (now < left.walk.until) return;
        if (!left.final) return this.#advanceClearing(left);
        const who = [
          ...(left.pgid === undefined ? [] : [`process group ${left.pgid}`]),
          ...(live.length ? [`pids ${live.map((t) => t.pid).join(", ")}`] : []),
        ].join(" and ");
        this.say("err", `${who} survived SIGKILL`);
        closeTargets(left.targets);
        return this.#next(p.next);
      }
      case "backoff":
        if (now >= p.until) {
          this.restarts++;
          this.#startRun();
        }
        return;
    }
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

/**
 * A pidfd on a process this one started (directly or not), checked to
 * descend from this process once the pidfd names it: a pid reused meanwhile
 * is never followed.
 *
 * @returns the pidfd, or undefined when it is gone or not ours
 */
function watchDescendant(pid: number): number | undefined {
  let pidfd: number | undefined;
  try {
    pidfd = pidfdOpen(pid);
  } catch {
    return undefined;
  }
  if (pidfd === undefined) return undefined;
  if (descendsFrom(pid, ids.pid())) return pidfd;
  close(pidfd);
  return undefined;
}

function closeTargets(targets: readonly Target[]): void {
  for (const t of targets) close(t.pidfd);
}

/** Signal a leftover through its pidfd, and its group when it leads one of its own. */
function signalTarget(t: Target, sig: number): void {
  if (t.group) killQuietly(-t.pid, sig); // EPERM for a member: the leader still gets it below
  try {
    pidfdSendSignal(t.pidfd, sig);
  } catch {
    // Gone meanwhile.
  }
}

/**
 * Send a stop schedule's signal, then SIGCONT (as runit and s6 do): a
 * stopped process (SIGSTOP, a debugger) acts on its signal only once it
 * runs again. SIGKILL needs none.
 */
function withContinue(sig: number, send: (sig: number) => void): void {
  send(sig);
  if (sig !== 9 && sig !== 18) send(18);
}

function killQuietly(pid: number, sig: number): void {
  try {
    kill(pid, sig);
  } catch {
    // Gone, or not ours to signal.
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
