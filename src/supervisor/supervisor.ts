/**
 * The supervisor: one small process that holds the PID lock, runs COMMAND
 * with posix_spawn, and brings it back when it exits, with exponential
 * backoff and a crash-loop limit. It forwards signals, stops the child (and
 * with `killGroup` its whole process group) before it exits itself, copies
 * the child's output line by line to a file (reopened on SIGHUP/SIGUSR1) or
 * to syslog with the child's pid, and reaps every orphan that is reparented
 * to it (it is a child subreaper, or PID 1 in a container).
 *
 * Everything runs in one loop around one `poll(2)`: a wake-up pipe that the
 * signal listeners write to, the child's output pipes and its readiness
 * channel, with the nearest deadline (backoff, stop schedule, readiness) as
 * the timeout. A single `waitpid(-1, WNOHANG)` reaper serves both the child
 * and adopted orphans, so an orphan reaper never steals the child's status.
 *
 * Only `src/ffi`, `spawn.ts` and this file's own helpers are imported: the
 * supervisor's memory stays close to an empty Deno process.
 *
 * @module
 */

import {
  becomeSubreaper,
  C,
  close,
  decodeWaitStatus,
  dupCloexec,
  ERRNO,
  errno,
  type ExitReason,
  fstat,
  getrlimit,
  ids,
  kill,
  libc,
  open,
  parseSignal,
  pipe,
  type PollFd,
  pollWait,
  quote,
  read,
  recvNow,
  signalName,
  SystemError,
  writeAll,
} from "../ffi/mod.ts";
import { type NotifySocket, openNotifySocket, parseNotify } from "../launch/readiness.ts";
import { spawn } from "../launch/spawn.ts";

/** When to start the command again after it exits. */
export type RestartPolicy = "on-failure" | "always" | "never";

/** Where the child's stdout and stderr go. */
export type OutputTarget =
  | { readonly kind: "inherit" }
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "syslog"; readonly facility: number; readonly socket?: string };

/** How the supervisor learns that a child is ready. */
export type ChildReadiness =
  | { readonly kind: "alive"; readonly afterMs: number }
  | { readonly kind: "fd"; readonly fd: number }
  | { readonly kind: "socket" };

/** One step of a stop schedule: send a signal, or wait up to some time. */
export type StopStep = { readonly signal: number } | { readonly waitMs: number };

/** What the supervisor records in its state file on every change. */
export interface SupervisorState {
  /** The supervisor's own pid (the one the pid file names). */
  readonly supervisorPid: number;
  /** The child's pid, or null between children. */
  readonly childPid: number | null;
  /** `starting`, `running` (ready), `backoff`, `stopping`, `exited`. */
  readonly phase: string;
  /** How many times the command has been started again. */
  readonly restarts: number;
  /** How the last child ended, in words, or null before the first exit. */
  readonly lastExit: string | null;
  /** When the last child ended (ISO 8601), or null. */
  readonly lastExitAt: string | null;
  /** When the current child started (ISO 8601), or null. */
  readonly childStartedAt: string | null;
  /** When the supervisor started (ISO 8601). */
  readonly supervisorStartedAt: string;
  /** The command's argv. */
  readonly command: readonly string[];
}

/** Options of {@link supervise}. */
export interface SuperviseOptions {
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
  /** The syslog ident and the name in log lines; @default the program's basename */
  readonly name?: string;
  /** When to restart the child; @default {"on-failure"} */
  readonly restart?: RestartPolicy;
  /** The first restart delay, in ms; @default {1000} */
  readonly restartDelay?: number;
  /** The longest restart delay, in ms; @default {60000} */
  readonly restartDelayMax?: number;
  /** A child that ran this long (ms) resets the backoff; @default {10000} */
  readonly minUptime?: number;
  /** Give up after this many restarts within `restartWindow`; 0 for never; @default {5} */
  readonly maxRestarts?: number;
  /** The crash-loop window, in ms; @default {60000} */
  readonly restartWindow?: number;
  /** Signal the child's whole process group (it is started as a group leader). */
  readonly killGroup?: boolean;
  /** How to stop the child; @default TERM, 5 s, KILL, 2 s */
  readonly stopSchedule?: readonly StopStep[];
  /** Where the child's output goes; @default {{kind: "inherit"}} */
  readonly output?: OutputTarget;
  /** How a child shows it is ready; @default {{kind: "alive", afterMs: 100}} */
  readonly readiness?: ChildReadiness;
  /** How long a child may take to become ready, in ms; @default {60000} */
  readonly readyTimeout?: number;
  /** Where to keep the JSON state (written atomically on each change). */
  readonly statePath?: string;
  /**
   * A descriptor on the locked pid file (the supervisor's own): each child
   * inherits a duplicate as {@link CHILD_LOCK_FD}, so the lock stays held
   * while any child lives, even if the supervisor is SIGKILLed.
   */
  readonly lockFd?: number;
  /** Called once, when the first child is ready (e.g. to release `start`). */
  readonly onReady?: (childPid: number) => void;
  /** Where the supervisor's own messages go; @default stderr, and the output sink */
  readonly log?: (level: "info" | "err", message: string) => void;
}

/**
 * The descriptor on which each child inherits the pid file's lock (a
 * duplicate of the supervisor's, so the same flock): while any child lives
 * the lock stays held, and a `start` cannot run a second instance even after
 * the supervisor itself was SIGKILLed. The child need not do anything with
 * it; it closes when the child exits. 62 instead when `--notify-fd` is 63.
 */
export const CHILD_LOCK_FD = 63;

/** The longest line copied as one record; a longer line is cut into pieces of this size. */
export const MAX_LINE = 8192;
/** What one read from an output pipe takes at most (bounds memory under a flood). */
const READ_CHUNK = 65536;

const DEFAULT_SCHEDULE: readonly StopStep[] = [
  { signal: 15 },
  { waitMs: 5000 },
  { signal: 9 },
  { waitMs: 2000 },
];

const FORWARDED = ["SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGWINCH"] as const;
const encoder = new TextEncoder();

/**
 * Describe how a process ended, for logs and the state file.
 *
 * @param reason from waitpid
 * @returns `exit status 1`, `killed by SIGKILL`, ...
 */
export function describeExit(reason: ExitReason): string {
  if (reason.exited) return `exit status ${reason.code}`;
  return `killed by ${signalName(reason.signal)}${reason.coreDumped ? " (core dumped)" : ""}`;
}

/**
 * Parse start-stop-daemon's schedule syntax: `TERM/10/KILL/5`, or a bare
 * number N meaning `TERM/N/KILL/N`.
 *
 * @param text the schedule
 * @returns its steps
 * @throws {TypeError} naming what is wrong
 */
export function parseStopSchedule(text: string): StopStep[] {
  if (/^[0-9]+(\.[0-9]+)?$/.test(text)) {
    const ms = Number(text) * 1000;
    return [{ signal: 15 }, { waitMs: ms }, { signal: 9 }, { waitMs: ms }];
  }
  const steps: StopStep[] = [];
  for (const part of text.split("/")) {
    if (/^[0-9]+(\.[0-9]+)?$/.test(part)) {
      steps.push({ waitMs: Number(part) * 1000 });
      continue;
    }
    const signal = parseSignal(part);
    if (signal === undefined) {
      throw new TypeError(`bad stop schedule ${quote(text)}: ${quote(part)}`);
    }
    steps.push({ signal });
  }
  if (steps.length === 0 || !steps.some((s) => "signal" in s)) {
    throw new TypeError(`bad stop schedule ${quote(text)}: no signal`);
  }
  return steps;
}

/**
 * Parse a duration: `500ms`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
 *
 * @param text the duration
 * @returns milliseconds
 * @throws {TypeError} when it is not a duration
 */
export function parseDuration(text: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new TypeError(`bad duration ${quote(text)} (try 500ms, 2s, 1m)`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
  return n * unit;
}

/** Syslog facility codes by name (RFC 3164 numbering times 8). */
export const FACILITIES: Readonly<Record<string, number>> = {
  kern: 0,
  user: 8,
  mail: 16,
  daemon: 24,
  auth: 32,
  syslog: 40,
  lpr: 48,
  news: 56,
  uucp: 64,
  cron: 72,
  authpriv: 80,
  ftp: 88,
  local0: 128,
  local1: 136,
  local2: 144,
  local3: 152,
  local4: 160,
  local5: 168,
  local6: 176,
  local7: 184,
};

/**
 * Parse `--output`: `syslog`, `syslog:FACILITY`, or a file path.
 *
 * @param text the option's value
 * @returns the target
 * @throws {TypeError} for an unknown facility
 */
export function parseOutput(text: string): OutputTarget {
  if (text === "syslog" || text.startsWith("syslog:")) {
    const name = text === "syslog" ? "daemon" : text.slice(7).toLowerCase();
    const facility = FACILITIES[name];
    if (facility === undefined) {
      throw new TypeError(
        `unknown syslog facility ${quote(name)} (one of ${Object.keys(FACILITIES).join(", ")})`,
      );
    }
    return { kind: "syslog", facility };
  }
  if (text === "") throw new TypeError("empty --output");
  return { kind: "file", path: text };
}

// ---------------------------------------------------------------------------
// Output sinks

interface Sink {
  /** Write one line (no newline). Returns false when it must be retried later. */
  line(text: Uint8Array, level: "info" | "err", pid: number): boolean;
  reopen(): void;
  /** Write out what is buffered. */
  flush(): void;
  close(): void;
}

class FileSink implements Sink {
  #fd = -1;
  /** Lines waiting for one write(2); flushed at the end of every loop turn. */
  readonly #buf = new Uint8Array(2 * READ_CHUNK);
  #len = 0;
  constructor(readonly path: string) {
    try {
      this.reopen();
    } catch (err) {
      // start --user: root opened the file for us as stderr; use that descriptor if it is this file.
      const inherited = sameFileAs(2, path);
      if (inherited === undefined) throw err;
      this.#fd = inherited;
    }
  }
  reopen(): void {
    this.flush();
    const flags = C.O_WRONLY | C.O_APPEND | C.O_CREAT | C.O_CLOEXEC | C.O_NOCTTY;
    const fd = open(this.path, flags, 0o640);
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = fd;
  }
  line(text: Uint8Array): boolean {
    if (this.#len + text.length + 1 > this.#buf.length) this.flush();
    this.#buf.set(text, this.#len);
    this.#buf[this.#len + text.length] = 10;
    this.#len += text.length + 1;
    return true;
  }
  flush(): void {
    if (this.#len === 0 || this.#fd < 0) return;
    const len = this.#len;
    this.#len = 0;
    writeAll(this.#fd, this.#buf.subarray(0, len), this.path);
  }
  close(): void {
    this.flush();
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }
}

/** A close-on-exec duplicate of `fd` when it is open on `path` (same device and inode). */
function sameFileAs(fd: number, path: string): number | undefined {
  try {
    const a = fstat(fd);
    const b = Deno.statSync(path);
    if (BigInt(b.dev) !== a.dev || BigInt(b.ino ?? -1) !== a.ino) return undefined;
    return dupCloexec(fd, 3);
  } catch {
    return undefined;
  }
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** An RFC 3164 header as glibc's syslog(3) writes it: `<PRI>Mmm dd hh:mm:ss ident[pid]: `. */
export function syslogHeader(pri: number, ident: string, pid: number, now = new Date()): string {
  const p2 = (n: number) => String(n).padStart(2, "0");
  const day = String(now.getDate()).padStart(2, " ");
  const time = `${p2(now.getHours())}:${p2(now.getMinutes())}:${p2(now.getSeconds())}`;
  return `<${pri}>${MONTHS[now.getMonth()]} ${day} ${time} ${ident}[${pid}]: `;
}

/**
 * Datagrams straight to /dev/log, so the pid in each record is the child's
 * (libc's LOG_PID would name the supervisor). Non-blocking: when syslogd's
 * queue is full the line is kept and retried, and the pipes are not read
 * meanwhile, so the child slows down instead of lines being dropped.
 */
class SyslogSink implements Sink {
  #fd: number;
  readonly #addr: Uint8Array<ArrayBuffer>;
  readonly #addrLen: number;
  /** One buffer for every datagram: header (ident is cut to 64 bytes) and a line. */
  readonly #msg = new Uint8Array(MAX_LINE + 128);
  #dropped = 0;
  #warnedAt = -Infinity;
  constructor(
    readonly facility: number,
    readonly ident: string,
    readonly socketPath = "/dev/log",
    readonly warn: (msg: string) => void = () => {},
  ) {
    const path = encoder.encode(socketPath);
    this.#addr = new Uint8Array(C.SIZEOF_SOCKADDR_UN);
    new DataView(this.#addr.buffer).setUint16(0, C.AF_UNIX, true);
    this.#addr.set(path, 2);
    this.#addrLen = 2 + path.length + 1;
    this.ident = ident.slice(0, 64);
    this.#fd = this.#socket();
  }
  #socket(): number {
    const fd = libc().socket(C.AF_UNIX, C.SOCK_DGRAM | C.SOCK_CLOEXEC | C.SOCK_NONBLOCK, 0);
    if (fd < 0) throw new SystemError("socket", errno(), { path: this.socketPath });
    return fd;
  }
  reopen(): void {}
  flush(): void {}
  line(text: Uint8Array, level: "info" | "err", pid: number): boolean {
    const pri = this.facility | (level === "err" ? 3 : 6);
    const head = encoder.encodeInto(syslogHeader(pri, this.ident, pid), this.#msg).written;
    this.#msg.set(text, head);
    const msg = this.#msg.subarray(0, head + text.length);
    for (;;) {
      const n = Number(
        libc().sendto(this.#fd, msg, BigInt(msg.length), C.MSG_NOSIGNAL, this.#addr, this.#addrLen),
      );
      if (n >= 0) return true;
      const e = errno();
      if (e === ERRNO.EINTR) continue;
      if (e === ERRNO.EAGAIN || e === 105 /* ENOBUFS */) return false;
      // No syslog daemon (ENOENT, ECONNREFUSED) or a refused message: drop it, say so now and then.
      this.#dropped++;
      const now = performance.now();
      if (now - this.#warnedAt > 60_000) {
        this.#warnedAt = now;
        this.warn(
          `cannot log to ${quote(this.socketPath)}: ${new SystemError("sendto", e).message}` +
            ` (${this.#dropped} line(s) dropped so far)`,
        );
      }
      return true;
    }
  }
  close(): void {
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }
}

const chunkBuffer = new Uint8Array(READ_CHUNK);

/** One output pipe of one child, read a chunk at a time and cut into lines. */
class Stream {
  /** The unterminated end of the last read; allocated only when one is left over. */
  #partial: Uint8Array | undefined;
  #partialLen = 0;
  /** Complete lines read but not yet accepted by the sink (syslog back-pressure). */
  #pending: Uint8Array[] = [];
  eof = false;
  constructor(readonly fd: number, readonly level: "info" | "err", readonly pid: number) {}

  get blocked(): boolean {
    return this.#pending.length > 0;
  }

  /**
   * Read once and hand the complete lines to the sink. Lines are passed as
   * views into one shared buffer and copied only when the sink pushes back:
   * the hot path allocates nothing (ArrayBuffers that V8 collects late were
   * measured at +75 MB of RSS over 5,000 restarts).
   *
   * @returns false at end of file
   */
  readOnce(sink: Sink): boolean {
    const n = Number(libc().read(this.fd, chunkBuffer, BigInt(READ_CHUNK)));
    if (n < 0) {
      const e = errno();
      if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) return true;
      throw new SystemError("read", e, { path: `output pipe of pid ${this.pid}` });
    }
    if (n === 0) {
      this.eof = true;
      this.finish();
      return false;
    }
    const chunk = chunkBuffer.subarray(0, n);
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const end = nl < 0 ? chunk.length : nl;
      let piece = chunk.subarray(start, end);
      // A line longer than MAX_LINE is cut into MAX_LINE pieces.
      while (this.#partialLen + piece.length >= MAX_LINE) {
        const take = MAX_LINE - this.#partialLen;
        this.#emit(sink, this.#joined(piece.subarray(0, take)));
        piece = piece.subarray(take);
      }
      if (nl < 0) {
        this.#partial ??= new Uint8Array(MAX_LINE);
        this.#partial.set(piece, this.#partialLen);
        this.#partialLen += piece.length;
        return true;
      }
      const line = this.#joined(piece);
      this.#emit(sink, line.at(-1) === 13 ? line.subarray(0, -1) : line);
      start = nl + 1;
    }
    return true;
  }

  /** The partial line followed by `piece` (a view when there is no partial); clears the partial. */
  #joined(piece: Uint8Array): Uint8Array {
    if (this.#partialLen === 0) return piece;
    const line = new Uint8Array(this.#partialLen + piece.length);
    line.set(this.#partial!.subarray(0, this.#partialLen));
    line.set(piece, this.#partialLen);
    this.#partialLen = 0;
    return line;
  }

  #emit(sink: Sink, line: Uint8Array): void {
    if (this.#pending.length === 0 && sink.line(line, this.level, this.pid)) return;
    this.#pending.push(line.slice());
  }

  /** Hand pending lines to the sink; false when the sink pushed back. */
  flush(sink: Sink): boolean {
    while (this.#pending.length > 0) {
      if (!sink.line(this.#pending[0]!, this.level, this.pid)) return false;
      this.#pending.shift();
    }
    return true;
  }

  /** Take a last unterminated line as a line. */
  finish(): void {
    if (this.#partialLen > 0) this.#pending.push(this.#partial!.slice(0, this.#partialLen));
    this.#partialLen = 0;
  }

  close(): void {
    close(this.fd);
  }
}

// ---------------------------------------------------------------------------
// The supervisor

interface Child {
  readonly pid: number;
  readonly pgid: number | undefined;
  readonly startedAt: number; // performance.now()
  readonly startedWall: Date;
  ready: boolean;
  readyDeadline: number;
  readyFd: number; // -1 when none
  /** Set while the child is being stopped: the schedule's position and next deadline. */
  stop?: { steps: readonly StopStep[]; index: number; until: number; why: string };
}

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

class Supervisor {
  readonly o: SuperviseOptions;
  readonly name: string;
  readonly policy: RestartPolicy;
  readonly schedule: readonly StopStep[];
  readonly readiness: ChildReadiness;
  readonly sink: Sink | undefined;
  readonly startedWall = new Date();
  readonly wake: [number, number];
  /** Where each child gets the lock, or undefined when it gets none. */
  readonly lockTarget: number | undefined;
  readonly signals: number[] = [];
  readonly listeners: [Deno.Signal, () => void][] = [];
  notify: NotifySocket | undefined;
  child: Child | undefined;
  streams: Stream[] = [];
  restarts = 0;
  consecutive = 0;
  recent: number[] = [];
  restartAt: number | undefined;
  lastExit: string | null = null;
  lastExitAt: string | null = null;
  stopping = false;
  everReady = false;
  exitCode: number | undefined;
  /** Set when a child will not die even after the stop schedule: exit without it. */
  abandon = false;
  sinkRetryAt: number | undefined;
  stateWarned = false;
  /** When SIGINT was last forwarded: a child that dies of it soon after was interrupted, not crashed. */
  interruptedAt = -Infinity;
  groupWatch:
    | { pgid: number; steps: readonly StopStep[]; index: number; until: number }
    | undefined;

  constructor(o: SuperviseOptions) {
    this.o = o;
    this.name = o.name ?? o.path.slice(o.path.lastIndexOf("/") + 1);
    this.policy = o.restart ?? "on-failure";
    this.schedule = o.stopSchedule ?? DEFAULT_SCHEDULE;
    this.readiness = o.readiness ?? { kind: "alive", afterMs: 100 };
    const out = o.output ?? { kind: "inherit" };
    this.sink = out.kind === "file"
      ? new FileSink(out.path)
      : out.kind === "syslog"
      ? new SyslogSink(out.facility, this.name, out.socket, (m) => this.#stderr(m))
      : undefined;
    this.wake = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
    this.lockTarget = o.lockFd === undefined ? undefined : childLockFd(this.readiness);
    if (this.lockTarget !== undefined && !descriptorFits(this.lockTarget + 8)) {
      this.#stderr(
        `the descriptor limit (RLIMIT_NOFILE) is too low to hand the lock to ${this.name} ` +
          `on fd ${this.lockTarget}: only the supervisor holds it`,
      );
      this.lockTarget = undefined;
    }
  }

  #stderr(message: string): void {
    try {
      writeAll(2, encoder.encode(`singleton-run[${ids.pid()}]: ${message}\n`));
    } catch {
      // stderr closed: nowhere to say it
    }
  }

  log(level: "info" | "err", message: string): void {
    if (this.o.log) return this.o.log(level, message);
    // With a file, the supervisor's stderr is that same file (as start opened it): say it once.
    if (!(this.sink instanceof FileSink)) this.#stderr(message);
    if (this.sink instanceof FileSink) {
      this.sink.line(encoder.encode(`singleton-run[${ids.pid()}]: ${message}`));
      this.sink.flush();
    } else if (this.sink instanceof SyslogSink) {
      this.sink.line(encoder.encode(`singleton-run: ${message}`), level, ids.pid());
    }
  }

  writeState(phase: string): void {
    if (!this.o.statePath) return;
    const c = this.child;
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
    };
    const tmp = `${this.o.statePath}.${ids.pid()}.tmp`;
    try {
      Deno.writeTextFileSync(tmp, JSON.stringify(state) + "\n");
      Deno.renameSync(tmp, this.o.statePath);
    } catch (err) {
      if (this.stateWarned) return;
      this.stateWarned = true; // once: status --json then shows no child, the rest works
      this.log(
        "err",
        `cannot write state file ${quote(this.o.statePath)}: ${(err as Error).message}`,
      );
    }
  }

  #listen(): void {
    const poke = () => {
      const b = new Uint8Array([1]);
      libc().write(this.wake[1], b, 1n);
    };
    for (const name of [...FORWARDED, "SIGTERM", "SIGCHLD"] as const) {
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
      for (const s of this.streams) s.close();
      this.streams = [];
      this.sink?.close();
      close(this.wake[0]);
      close(this.wake[1]);
      this.notify?.[Symbol.dispose]();
    }
  }

  #finished(): boolean {
    if (this.exitCode === undefined) return false;
    return this.abandon || (this.child === undefined && this.groupWatch === undefined);
  }

  /** Spawn a child; false (with exitCode set) when even the first spawn fails. */
  #start(): boolean {
    const fds: Record<number, number | "null"> = {};
    const toClose: number[] = [];
    const newStreams: [number, "info" | "err"][] = [];
    if (this.sink) {
      for (const [target, level] of [[1, "info"], [2, "err"]] as const) {
        const [r, w] = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
        // The child's end must block: a daemon's writes wait for us instead of failing.
        setBlocking(w);
        fds[target] = w;
        toClose.push(w);
        newStreams.push([r, level]);
      }
    } else {
      fds[1] = 1;
      fds[2] = 2;
    }
    let readyFd = -1;
    if (this.readiness.kind === "fd") {
      const [r, w] = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
      setBlocking(w);
      fds[this.readiness.fd] = w;
      toClose.push(w);
      readyFd = r;
    }
    if (this.lockTarget !== undefined) fds[this.lockTarget] = this.o.lockFd!;
    const env = { ...this.o.env };
    if (this.readiness.kind === "socket") {
      env.NOTIFY_SOCKET = this.notify!.path;
      while (recvNow(this.notify!.fd, 4096) !== undefined) { /* drop stale messages */ }
    }
    if (this.readiness.kind === "fd") env.NOTIFY_FD = String(this.readiness.fd);
    let pid: number;
    try {
      pid = spawn({
        path: this.o.path,
        argv: this.o.argv,
        env,
        fds,
        ...(this.o.cwd === undefined ? {} : { cwd: this.o.cwd }),
        ...(this.o.umask === undefined ? {} : { umask: this.o.umask }),
        newProcessGroup: this.o.killGroup ?? false,
      });
    } catch (err) {
      for (const fd of toClose) close(fd);
      for (const [fd] of newStreams) close(fd);
      if (readyFd >= 0) close(readyFd);
      this.log("err", `cannot start ${this.name}: ${(err as Error).message}`);
      this.lastExit = `spawn failed: ${(err as Error).message}`;
      this.lastExitAt = new Date().toISOString();
      return this.#afterExit(false);
    } finally {
      for (const fd of toClose) close(fd);
    }
    for (const [fd, level] of newStreams) this.streams.push(new Stream(fd, level, pid));
    const now = performance.now();
    this.child = {
      pid,
      pgid: this.o.killGroup ? pid : undefined,
      startedAt: now,
      startedWall: new Date(),
      ready: false,
      readyDeadline: this.readiness.kind === "alive"
        ? now + this.readiness.afterMs
        : now + (this.o.readyTimeout ?? 60_000),
      readyFd,
    };
    this.restartAt = undefined;
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
    if (c?.stop) deadlines.push(c.stop.until);
    if (this.groupWatch) deadlines.push(Math.min(this.groupWatch.until, now + 50));
    if (this.sinkRetryAt !== undefined) deadlines.push(this.sinkRetryAt);
    const timeout = deadlines.length ? Math.max(0, Math.min(...deadlines) - now) : 5000;

    const fds: PollFd[] = [{ fd: this.wake[0], events: C.POLLIN }];
    const streams = this.sinkRetryAt === undefined ? this.streams.filter((s) => !s.eof) : [];
    for (const s of streams) fds.push({ fd: s.fd, events: C.POLLIN });
    const readyIndex = fds.length;
    if (c && !c.ready && c.readyFd >= 0) fds.push({ fd: c.readyFd, events: C.POLLIN });
    if (c && !c.ready && this.notify) {
      fds.push({ fd: this.notify.fd, events: C.POLLIN });
    }
    const revents = await pollWait(fds, Math.min(timeout, 5000));

    if (revents[0]) drain(this.wake[0]);
    // Output first, so a child's last lines come before the news of its exit.
    streams.forEach((s, i) => {
      if (revents[i + 1]) s.readOnce(this.sink!);
    });
    this.#flushStreams();
    if (revents[readyIndex]) this.#readyInput();
    for (const sig of this.signals.splice(0)) this.#onSignal(sig);
    this.#reap();
    this.#timers();
  }

  #flushStreams(): void {
    if (!this.sink) return;
    const now = performance.now();
    if (this.sinkRetryAt !== undefined && now < this.sinkRetryAt) return;
    this.sinkRetryAt = undefined;
    for (const s of this.streams) {
      if (!s.flush(this.sink)) {
        this.sinkRetryAt = now + 10;
        return;
      }
    }
    this.sink.flush();
    const done = this.streams.filter((s) => s.eof && !s.blocked);
    if (done.length) {
      for (const s of done) s.close();
      this.streams = this.streams.filter((s) => !done.includes(s));
    }
  }

  /**
   * Read what is left in the pipes at exit, for at most `ms`. A pipe that
   * stays open but quiet (a writer that outlives the child) is not waited on.
   */
  async #drainAll(ms: number): Promise<void> {
    if (!this.sink) return;
    const until = performance.now() + ms;
    while (this.streams.length && performance.now() < until) {
      const live = this.streams.filter((s) => !s.eof);
      if (live.length && this.sinkRetryAt === undefined) {
        const rev = await pollWait(live.map((s) => ({ fd: s.fd, events: C.POLLIN })), 20);
        if (rev.every((r) => r === 0)) break;
        live.forEach((s, i) => rev[i] && s.readOnce(this.sink!));
      }
      this.#flushStreams();
      if (this.sinkRetryAt !== undefined) await new Promise((r) => setTimeout(r, 10));
      else if (!live.length) break;
    }
    for (const s of this.streams) {
      s.finish();
      s.flush(this.sink);
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
        this.log("err", `${this.name} (pid ${c.pid}) closed its notification fd before ready`);
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
      this.log("info", `${this.name} started (pid ${c.pid}) and is ready`);
      this.o.onReady?.(c.pid);
    } else {
      this.log("info", `${this.name} restarted (pid ${c.pid}) and is ready`);
    }
  }

  #failReadiness(c: Child, why: string): void {
    if (!this.everReady) {
      this.log("err", `giving up: ${this.name} (pid ${c.pid}) ${why} on its first start`);
      this.exitCode = 1;
      this.stopping = true;
    }
    this.#stopChild(c, `${why}; stopping it`);
  }

  #onSignal(sig: number): void {
    if (sig === 17) return; // SIGCHLD: the reaper runs after every turn
    if (sig === 15) {
      if (this.stopping) return;
      this.stopping = true;
      this.restartAt = undefined;
      const c = this.child;
      if (c) {
        this.log("info", `SIGTERM received: stopping ${this.name} (pid ${c.pid})`);
        this.#stopChild(c, "stop requested");
      } else {
        this.log("info", "SIGTERM received: exiting");
        this.exitCode = 0;
      }
      this.writeState("stopping");
      return;
    }
    if (sig === 2) this.interruptedAt = performance.now();
    if (sig === 1 || sig === 10) {
      try {
        this.sink?.reopen();
      } catch (err) {
        this.#stderr(`cannot reopen output: ${(err as Error).message}`);
      }
    }
    const c = this.child;
    if (c) this.#signalChild(c, sig);
  }

  #signalChild(c: Child, sig: number): void {
    try {
      if (c.pgid !== undefined) kill(-c.pgid, sig);
      else kill(c.pid, sig);
    } catch (err) {
      this.#stderr(`cannot send ${signalName(sig)} to ${c.pid}: ${(err as Error).message}`);
    }
  }

  #stopChild(c: Child, why: string): void {
    if (c.stop) return;
    c.stop = { steps: this.schedule, index: 0, until: 0, why };
    this.#advanceStop(c);
  }

  /** Run schedule steps until one is a wait. */
  #advanceStop(c: Child): void {
    const st = c.stop!;
    while (st.index < st.steps.length) {
      const step = st.steps[st.index++]!;
      if ("signal" in step) this.#signalChild(c, step.signal);
      else {
        st.until = performance.now() + step.waitMs;
        return;
      }
    }
    // Schedule exhausted and still alive.
    st.until = Infinity;
    this.log("err", `${this.name} (pid ${c.pid}) is still running after the stop schedule`);
    if (this.stopping) {
      this.exitCode = 1;
      this.abandon = true;
    }
  }

  #reap(): void {
    for (;;) {
      const status = new Int32Array(1);
      const pid = libc().waitpid(-1, status, C.WNOHANG);
      if (pid <= 0) return;
      const c = this.child;
      if (c && pid === c.pid) this.#childExited(c, decodeWaitStatus(status[0]!));
      // Any other pid: an orphan reparented to us (subreaper or PID 1); reaped, nothing else to do.
    }
  }

  #childExited(c: Child, reason: ExitReason): void {
    this.child = undefined;
    if (c.readyFd >= 0) close(c.readyFd);
    const now = performance.now();
    const uptime = now - c.startedAt;
    this.lastExit = describeExit(reason);
    this.lastExitAt = new Date().toISOString();
    if (c.pgid !== undefined && groupExists(c.pgid)) {
      // The leader is gone but its workers remain: they go with it, by the
      // rest of the stop schedule (or all of it), before any restart.
      if (c.stop) {
        // Mid-stop: the group gets the rest of the current wait, then the rest of the schedule.
        const { steps, index, until } = c.stop;
        this.groupWatch = { pgid: c.pgid, steps, index, until };
      } else {
        this.groupWatch = { pgid: c.pgid, steps: this.schedule, index: 0, until: 0 };
        this.#advanceGroup();
      }
    }
    if (!this.stopping && now - this.interruptedAt < 10_000) {
      // Ctrl-C in `run --supervise` (or `signal INT`): the child ended on an interrupt; so do we.
      this.log("info", `${this.name} (pid ${c.pid}) ${this.lastExit} after SIGINT: not restarting`);
      this.stopping = true;
      this.exitCode = 130;
      this.writeState("exited");
      return;
    }
    if (this.stopping) {
      this.log("info", `${this.name} (pid ${c.pid}) stopped: ${this.lastExit}`);
      this.exitCode ??= 0;
      this.writeState("exited");
      return;
    }
    if (!c.ready && !this.everReady && !c.stop) {
      this.log(
        "err",
        `giving up: ${this.name} (pid ${c.pid}) ${this.lastExit} before it was ready`,
      );
      this.exitCode = 1;
      this.writeState("exited");
      return;
    }
    const failed = !reason.exited || reason.code !== 0 || c.stop !== undefined;
    const again = this.policy === "always" || (this.policy === "on-failure" && failed);
    if (!again) {
      this.log("info", `${this.name} (pid ${c.pid}) ${this.lastExit}: not restarting`);
      this.exitCode = this.policy === "never"
        ? (reason.exited ? reason.code : 128 + reason.signal)
        : 0;
      this.writeState("exited");
      return;
    }
    this.#afterExit(uptime >= (this.o.minUptime ?? 10_000), c.pid);
  }

  /** Decide the next start after an exit (or a failed spawn). */
  #afterExit(stable: boolean, pid?: number): boolean {
    const now = performance.now();
    const window = this.o.restartWindow ?? 60_000;
    const max = this.o.maxRestarts ?? 5;
    this.recent = this.recent.filter((t) => now - t < window);
    const who = pid === undefined ? this.name : `${this.name} (pid ${pid})`;
    if (!this.everReady && pid === undefined) {
      this.log("err", `giving up: ${this.name} could not be started`);
      this.exitCode = 1;
      this.writeState("exited");
      return false;
    }
    if (max > 0 && this.recent.length >= max) {
      this.log(
        "err",
        `giving up: ${who} ${this.lastExit}; it was restarted ${this.recent.length} times within ` +
          `${window / 1000} s (--max-restarts ${max} --restart-window ${window / 1000}s)`,
      );
      this.exitCode = 1;
      this.writeState("exited");
      return false;
    }
    this.consecutive = stable ? 1 : this.consecutive + 1;
    const base = this.o.restartDelay ?? 1000;
    const delay = Math.min(
      base * 2 ** Math.min(this.consecutive - 1, 30),
      this.o.restartDelayMax ?? 60_000,
    );
    this.recent.push(now);
    this.restartAt = now + delay;
    this.log("err", `${who} ${this.lastExit}; restarting in ${round(delay / 1000)} s`);
    this.writeState("backoff");
    return true;
  }

  #advanceGroup(): void {
    const g = this.groupWatch!;
    while (g.index < g.steps.length) {
      const step = g.steps[g.index++]!;
      if ("signal" in step) kill(-g.pgid, step.signal);
      else {
        g.until = performance.now() + step.waitMs;
        return;
      }
    }
    // Nothing left in the schedule: make sure, then stop watching.
    kill(-g.pgid, 9);
    g.until = performance.now() + 1000;
    g.index = g.steps.length + 1;
  }

  #timers(): void {
    const now = performance.now();
    const c = this.child;
    if (this.groupWatch) {
      if (!groupExists(this.groupWatch.pgid)) {
        this.groupWatch = undefined;
      } else if (now >= this.groupWatch.until) {
        if (this.groupWatch.index > this.groupWatch.steps.length) {
          this.log("err", `process group ${this.groupWatch.pgid} survived SIGKILL`);
          this.groupWatch = undefined;
        } else this.#advanceGroup();
      }
    }
    if (c?.stop && now >= c.stop.until) this.#advanceStop(c);
    if (c && !c.ready && !c.stop && now >= c.readyDeadline) {
      if (this.readiness.kind === "alive") this.#becameReady(c);
      else {
        this.log("err", `${this.name} (pid ${c.pid}) was not ready within the ready timeout`);
        this.#failReadiness(c, "was not ready in time");
      }
    }
    const waiting = this.restartAt !== undefined && now >= this.restartAt;
    if (waiting && !this.stopping && !this.groupWatch) {
      this.restarts++;
      if (!this.#start()) return;
    }
  }
}

/** Where a child gets the lock: {@link CHILD_LOCK_FD}, unless its notification fd is there. */
export function childLockFd(readiness: ChildReadiness): number {
  return readiness.kind === "fd" && readiness.fd === CHILD_LOCK_FD
    ? CHILD_LOCK_FD - 1
    : CHILD_LOCK_FD;
}

/** Whether descriptor number `fd` is below the soft RLIMIT_NOFILE (spawn moves sources above its targets). */
function descriptorFits(fd: number): boolean {
  try {
    return getrlimit(C.RLIMIT_NOFILE)[0] > BigInt(fd);
  } catch {
    return true;
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
  while (Number(libc().read(fd, buf, 256n)) > 0) { /* empty */ }
}

function setBlocking(fd: number): void {
  const flags = libc().fcntl(fd, C.F_GETFL, 0n);
  if (flags >= 0) libc().fcntl(fd, C.F_SETFL, BigInt(flags & ~C.O_NONBLOCK));
}
