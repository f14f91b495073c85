/**
 * A supervised run's liveness: its health check (Docker's HEALTHCHECK: a
 * shell command, an HTTP GET or a TCP connection, every interval, bounded by
 * a timeout, unhealthy after so many failures in a row, with a start period
 * whose failures do not count) and its watchdog (systemd's `WatchdogSec=`:
 * `WATCHDOG=1` on the notify socket at least once a period).
 *
 * It is driven from the supervisor's loop and never blocks it: the loop
 * asks {@link Liveness.tick} what is due and wakes for
 * {@link Liveness.deadline}; an HTTP or TCP check is a promise that wakes the
 * loop when it settles (no process of its own); a command check is a child,
 * reaped by the supervisor's one reaper, its output read from the loop's
 * poll. A check never overlaps the next: the next starts an interval after
 * the last one ended.
 *
 * The HTTP check speaks HTTP/1.1 over `Deno.connect` itself (one GET, the
 * status line read, the connection closed): measured in an idle Deno
 * script checking every 200 ms, `fetch` added 3.2 MiB of PSS (22%), this
 * request 1.6 MiB; `deno task bench` measures the supervisor with and
 * without a check.
 *
 * @module
 */

import {
  C,
  close,
  type ExitReason,
  ids,
  kill,
  pidfdOpen,
  pidfdSendSignal,
  pipe,
  readNow,
  setNonblocking,
} from "../ffi/mod.ts";
import { childrenOf, environHas, procStat } from "../ffi/proc.ts";
import { describeExit } from "../launch/exit.ts";
import { spawnStage } from "../launch/privilege.ts";
import type { NotifyRequest } from "../launch/readiness.ts";
import { spawn } from "../launch/spawn.ts";
import type { HealthSpec, LaunchSpec } from "../launch/spec.ts";
import type { HealthState } from "./state.ts";

/** The variable that names the run's main process to a command check. */
export const RUN_PID_ENV = "SINGLETON_RUN_PID";

/** How one check came out. */
type Outcome = { readonly ok: true } | { readonly ok: false; readonly why: string };

/**
 * An HTTP or TCP check in flight, a promise that sets `outcome`; or a check
 * whose outcome was known at once (a command that could not be started).
 */
interface NetCheck {
  readonly kind: "net";
  readonly started: number;
  readonly deadline: number;
  readonly abort: AbortController;
  outcome?: Outcome;
}

/** A command check in flight: a child of ours, leading its own process group. */
interface CmdCheck {
  readonly kind: "cmd";
  readonly started: number;
  readonly deadline: number;
  readonly pid: number;
  /** Its start time in clock ticks: what it leaves behind started no sooner. */
  readonly startTicks: number;
  /** The environment entry it and everything it starts carry: `SINGLETON_RUN_PID=N`. */
  readonly marker: string;
  /** Our ends of its output (and, with `user`, of the privilege stage's error pipe). */
  fds: number[];
  /** The end of its output. */
  tail: string;
  exit?: ExitReason;
}

type Check = NetCheck | CmdCheck;

/** How much of a command check's output is kept: its last lines go in the reason. */
const TAIL_CHARS = 2048;

/** What a supervisor's run has in place of liveness, in the loop's terms. */
export class Liveness {
  readonly #spec: LaunchSpec;
  readonly #health: HealthSpec | null;
  /** The HTTP check's URL, parsed once. */
  readonly #url: URL | undefined;
  readonly #env: Readonly<Record<string, string>>;
  readonly #wake: () => void;
  /** The watchdog's period for this run: the spec's, or what the program asked for. */
  #watchdogMs: number | null;
  /** Checks run (and the watchdog counts) while the run is ready, between begin and end. */
  #active = false;
  #runPid = 0;
  #nextAt = Infinity;
  #startPeriodEnds = -Infinity;
  #watchdogAt = Infinity;
  #triggered: string | undefined;
  #check: Check | undefined;
  #state: HealthState["state"] = "starting";
  #failures = 0;
  #lastCheck: string | null = null;
  #lastError: string | null = null;
  #restarts = 0;
  /** Whether there is anything to record: a health check, or a watchdog once there was one. */
  #shown: boolean;

  private constructor(spec: LaunchSpec, env: Readonly<Record<string, string>>, wake: () => void) {
    this.#spec = spec;
    this.#health = spec.health;
    this.#url = spec.health?.kind === "http" ? new URL(spec.health.url) : undefined;
    this.#env = env;
    this.#wake = wake;
    this.#watchdogMs = spec.watchdogMs;
    this.#shown = spec.health !== null || spec.watchdogMs !== null;
  }

  /**
   * The liveness of a supervisor's runs: with a health check, or with a
   * notify socket (whose program may ask for a watchdog itself).
   *
   * @param spec the launch
   * @param env the program's environment (a command check's, plus {@link RUN_PID_ENV})
   * @param wake wakes the supervisor's loop (a check settled)
   * @returns undefined when nothing can be watched
   */
  static of(
    spec: LaunchSpec,
    env: Readonly<Record<string, string>>,
    wake: () => void,
  ): Liveness | undefined {
    if (spec.holder.kind !== "supervisor") return undefined; // a keeper never restarts
    if (spec.health === null && spec.readiness.kind !== "socket") return undefined;
    return new Liveness(spec, env, wake);
  }

  /** The health state now. */
  get state(): HealthState["state"] {
    return this.#state;
  }

  /**
   * The run is ready: its first check is an interval away, its start period
   * begins, its watchdog starts counting.
   *
   * @param pid the run's main process
   * @param now `performance.now()`
   */
  begin(pid: number, now: number): void {
    this.end();
    this.#active = true;
    this.#runPid = pid;
    this.#state = "starting";
    this.#failures = 0;
    if (this.#health) {
      this.#nextAt = now + this.#health.intervalMs;
      this.#startPeriodEnds = now + this.#health.startPeriodMs;
    }
    if (this.#watchdogMs !== null) this.#watchdogAt = now + this.#watchdogMs;
  }

  /**
   * The run's main process changed (it forked away): checks name the new one.
   *
   * @param pid the main process now
   */
  follow(pid: number): void {
    this.#runPid = pid;
  }

  /**
   * The run is no longer ready (stopped, ended): a check in flight is
   * abandoned (a command check killed with everything it started), nothing
   * more is due. The state stays as it was, for `status`.
   */
  end(): void {
    const check = this.#check;
    this.#check = undefined;
    if (check?.kind === "net") check.abort.abort();
    if (check?.kind === "cmd") this.#finish(check);
    this.#active = false;
    this.#nextAt = Infinity;
    this.#watchdogAt = Infinity;
    this.#triggered = undefined;
  }

  /**
   * A new run starts: what the last program asked of the watchdog is forgotten.
   */
  reset(): void {
    this.end();
    this.#watchdogMs = this.#spec.watchdogMs;
  }

  /** @returns the next time the loop must look (`performance.now()` time), or Infinity */
  deadline(): number {
    if (!this.#active) return Infinity;
    if (this.#triggered !== undefined) return 0;
    const check = this.#check;
    const due = check === undefined
      ? this.#nextAt
      : check.kind === "net" && check.outcome
      ? 0
      : check.kind === "cmd" && check.exit
      ? 0
      : check.deadline;
    return Math.min(due, this.#watchdogAt);
  }

  /** @returns the descriptors to poll: a command check's output */
  fds(): readonly number[] {
    const check = this.#check;
    return check?.kind === "cmd" && check.exit === undefined ? check.fds : [];
  }

  /**
   * A polled descriptor of a command check is readable.
   *
   * @param fd one of {@link Liveness.fds}
   */
  readOutput(fd: number): void {
    const check = this.#check;
    if (check?.kind !== "cmd") return;
    readInto(check, fd);
  }

  /**
   * A child was reaped: when it is the command check, its exit is its outcome.
   *
   * @param pid the child
   * @param reason how it ended
   * @returns true when it was the check
   */
  reaped(pid: number, reason: ExitReason): boolean {
    const check = this.#check;
    if (check?.kind !== "cmd" || check.pid !== pid || check.exit) return false;
    check.exit = reason;
    return true;
  }

  /**
   * What the program said on the notify socket of its watchdog.
   *
   * @param request one datagram's requests
   * @param now `performance.now()`
   */
  notified(request: NotifyRequest, now: number): void {
    if (request.watchdogMs !== undefined) {
      // WATCHDOG_USEC=: the program sets (or, with 0, turns off) its own period from now.
      this.#watchdogMs = request.watchdogMs > 0 ? Math.max(1, request.watchdogMs) : null;
      if (this.#watchdogMs !== null) this.#shown = true;
      if (this.#active) {
        this.#watchdogAt = this.#watchdogMs === null ? Infinity : now + this.#watchdogMs;
      }
    }
    if (!this.#active) return;
    if (request.watchdog === "trigger") this.#triggered = "it sent WATCHDOG=trigger";
    if (request.watchdog === "ping" && this.#watchdogMs !== null) {
      this.#watchdogAt = now + this.#watchdogMs;
      if (this.#health === null) {
        // The watchdog alone says how the program is.
        this.#lastCheck = new Date().toISOString();
        this.#state = "healthy";
      }
    }
  }

  /**
   * Do what is due: judge a check that ended or timed out, start the next
   * one, look at the watchdog.
   *
   * @param now `performance.now()`
   * @returns why the run is unhealthy, once it is; undefined otherwise
   */
  tick(now: number): string | undefined {
    if (!this.#active) return undefined;
    if (this.#triggered !== undefined) return this.#unhealthy(this.#triggered);
    if (now >= this.#watchdogAt) {
      return this.#unhealthy(`it sent no WATCHDOG=1 within ${seconds(this.#watchdogMs!)}`);
    }
    const health = this.#health;
    if (!health) return undefined;
    let check = this.#check;
    if (check === undefined && now >= this.#nextAt) {
      check = this.#start(now, health);
      this.#check = check;
    }
    if (check === undefined) return undefined;
    const outcome = this.#outcome(check, now, health);
    if (outcome === undefined) return undefined;
    this.#check = undefined;
    this.#nextAt = now + health.intervalMs;
    return this.#judge(check, outcome, health);
  }

  /** @returns the health for the state file, or undefined with nothing to show */
  record(): HealthState | undefined {
    if (!this.#shown) return undefined;
    return {
      state: this.#state,
      failures: this.#failures,
      lastCheck: this.#lastCheck,
      lastError: this.#lastError,
      restarts: this.#restarts,
    };
  }

  /** A check's outcome once it has one: settled, exited, or past its timeout (then killed). */
  #outcome(check: Check, now: number, health: HealthSpec): Outcome | undefined {
    if (check.kind === "net") {
      if (check.outcome) return check.outcome;
      if (now < check.deadline) return undefined;
      check.abort.abort();
      return { ok: false, why: `no answer within ${seconds(health.timeoutMs)}` };
    }
    if (check.exit === undefined && now < check.deadline) return undefined;
    const exit = check.exit;
    this.#finish(check);
    if (exit === undefined) {
      return {
        ok: false,
        why: `timed out after ${seconds(health.timeoutMs)}${lastLines(check.tail)}`,
      };
    }
    if (exit.exited && exit.code === 0) return { ok: true };
    return { ok: false, why: `${describeExit(exit)}${lastLines(check.tail)}` };
  }

  /** Count an outcome; the run is unhealthy after `retries` failures in a row that count. */
  #judge(check: Check, outcome: Outcome, health: HealthSpec): string | undefined {
    this.#lastCheck = new Date().toISOString();
    if (outcome.ok) {
      this.#failures = 0;
      this.#startPeriodEnds = -Infinity; // the start period ends at the first success
      this.#state = "healthy";
      return undefined;
    }
    this.#lastError = outcome.why;
    // A check begun within the start period does not count, whenever it ends.
    if (check.started < this.#startPeriodEnds) return undefined;
    this.#failures++;
    if (this.#failures < health.retries) return undefined;
    const times = health.retries === 1 ? "its health check" : `${health.retries} health checks`;
    return this.#unhealthy(
      `${times} failed${health.retries === 1 ? "" : " in a row"}: ${outcome.why}`,
    );
  }

  #unhealthy(why: string): string {
    this.#state = "unhealthy";
    this.#lastError = why;
    this.#restarts++;
    this.end();
    return why;
  }

  /** Start a check; a command that cannot even be started is a failed check at once. */
  #start(now: number, health: HealthSpec): Check {
    const deadline = now + health.timeoutMs;
    if (health.kind === "cmd") {
      try {
        return this.#spawnCheck(health.command, now, deadline);
      } catch (err) {
        return {
          kind: "net",
          started: now,
          deadline,
          abort: new AbortController(),
          outcome: { ok: false, why: `cannot start it: ${(err as Error).message}` },
        };
      }
    }
    const abort = new AbortController();
    const check: NetCheck = { kind: "net", started: now, deadline, abort };
    const probe = health.kind === "http"
      ? probeHttp(this.#url!, abort.signal)
      : probeTcp(health.host, health.port, abort.signal);
    probe.then((outcome) => {
      if (abort.signal.aborted) return; // judged (timed out) or abandoned already
      check.outcome = outcome;
      this.#wake();
    });
    return check;
  }

  /**
   * `/bin/sh -c COMMAND` as the program runs (its directory, user, umask and
   * environment, plus the run's pid), leading a process group of its own,
   * its stdout and stderr on one pipe of ours.
   */
  #spawnCheck(command: string, now: number, deadline: number): CmdCheck {
    const spec = this.#spec;
    const [r, w] = pipe(C.O_CLOEXEC | C.O_NONBLOCK);
    setNonblocking(w, false);
    const marker = `${RUN_PID_ENV}=${this.#runPid}`;
    const env = { ...this.#env, [RUN_PID_ENV]: String(this.#runPid) };
    const argv = ["sh", "-c", command];
    const umask = spec.umask ?? undefined;
    const fds = { 1: w, 2: w };
    try {
      if (spec.user) {
        const stage = spawnStage({ spec: { ...spec, path: "/bin/sh", command: argv }, env }, {
          fds,
          session: "group",
          ...(umask === undefined ? {} : { umask }),
        });
        return cmdCheck(stage.pid, [r, stage.errorFd], marker, now, deadline);
      }
      const pid = spawn({
        path: "/bin/sh",
        argv,
        env,
        cwd: spec.cwd,
        ...(umask === undefined ? {} : { umask }),
        newProcessGroup: true,
        fds,
      });
      return cmdCheck(pid, [r], marker, now, deadline);
    } catch (err) {
      close(r);
      throw err;
    } finally {
      close(w);
    }
  }

  /**
   * A command check is over (it exited, timed out, or its run ended): what
   * is left in its process group is killed, and when it did not end by
   * itself, what left the group too (below it, or orphaned to us, carrying
   * its run's pid); its output is read to here.
   */
  #finish(check: CmdCheck): void {
    // What a check that ended by itself left outside its group is a run's leftover like any other.
    const left = check.exit === undefined ? checkLeftovers(check) : [];
    // Not reaped yet (or reaped just now, its group still named by its members): the number is ours.
    quietly(() => kill(-check.pid, 9));
    if (check.exit === undefined) quietly(() => kill(check.pid, 9));
    for (const pidfd of left) {
      quietly(() => pidfdSendSignal(pidfd, 9));
      close(pidfd);
    }
    for (const fd of check.fds) {
      readInto(check, fd);
      close(fd);
    }
    check.fds = [];
  }
}

function cmdCheck(
  pid: number,
  fds: number[],
  marker: string,
  now: number,
  deadline: number,
): CmdCheck {
  const startTicks = procStat(pid)?.startTicks ?? 0;
  return { kind: "cmd", started: now, deadline, pid, startTicks, marker, fds, tail: "" };
}

/**
 * pidfds on what a command check started outside its process group: the
 * processes below it, and this process's adopted children that started no
 * sooner and carry the check's {@link RUN_PID_ENV} (their parent exited,
 * and as a subreaper we became theirs), with everything below them. Each is
 * re-checked by its start time once its pidfd is open.
 */
function checkLeftovers(check: CmdCheck): number[] {
  const roots = [check.pid];
  for (const pid of childrenOf(ids.pid())) {
    if (pid === check.pid) continue;
    const st = procStat(pid);
    if (st && st.startTicks >= check.startTicks && environHas(pid, check.marker)) roots.push(pid);
  }
  const out: number[] = [];
  const seen = new Set<number>();
  const walk = (pid: number, top: boolean) => {
    if (seen.has(pid)) return;
    seen.add(pid);
    const children = childrenOf(pid);
    if (!top) {
      const ticks = procStat(pid)?.startTicks;
      const pidfd = ticks === undefined ? undefined : openQuietly(pid);
      if (pidfd !== undefined && procStat(pid)?.startTicks === ticks) out.push(pidfd);
      else if (pidfd !== undefined) close(pidfd);
    }
    for (const child of children) walk(child, false);
  };
  // The check itself is signalled by pid (our child, not reaped), the adopted roots by pidfd.
  walk(check.pid, true);
  for (const root of roots.slice(1)) walk(root, false);
  return out;
}

function openQuietly(pid: number): number | undefined {
  try {
    return pidfdOpen(pid);
  } catch {
    return undefined;
  }
}

function quietly(fn: () => unknown): void {
  try {
    fn();
  } catch {
    // Gone already.
  }
}

/** Read what a check's pipe holds now into its tail; close nothing. */
function readInto(check: CmdCheck, fd: number): void {
  const buf = new Uint8Array(4096);
  for (;;) {
    let n: number | undefined;
    try {
      n = readNow(fd, buf);
    } catch {
      return;
    }
    if (n === undefined || n === 0) return;
    check.tail = (check.tail + new TextDecoder().decode(buf.subarray(0, n))).slice(-TAIL_CHARS);
  }
}

/** The last lines of a check's output, for its reason: `: line; line`. */
function lastLines(tail: string): string {
  const lines = tail.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines.length === 0) return "";
  return `: ${lines.slice(-3).join("; ").slice(-300)}`;
}

function seconds(ms: number): string {
  return `${Math.round(ms) / 1000} s`;
}

/** A TCP connection opens: the program's listener is there (its accept queue not full). */
async function probeTcp(host: string, port: number, signal: AbortSignal): Promise<Outcome> {
  try {
    const conn = await Deno.connect({ hostname: host, port, signal });
    conn.close();
    return { ok: true };
  } catch (err) {
    return { ok: false, why: `cannot connect to ${address(host, port)}: ${netError(err)}` };
  }
}

/** The most of an HTTP answer read for its status line. */
const MAX_STATUS_LINE = 4096;

/**
 * One HTTP/1.1 GET: healthy on a 2xx or 3xx status line (redirects are
 * not followed). The connection is closed once the status line is read.
 */
async function probeHttp(url: URL, signal: AbortSignal): Promise<Outcome> {
  const https = url.protocol === "https:";
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port || (https ? 443 : 80));
  let conn: Deno.Conn | undefined;
  const drop = () => quietly(() => conn?.close());
  signal.addEventListener("abort", drop);
  try {
    const tcp = await Deno.connect({ hostname: host, port, signal });
    conn = tcp;
    if (https) conn = await Deno.startTls(tcp, { hostname: host });
    const request = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      "User-Agent: singleton-run-health\r\nAccept: */*\r\nConnection: close\r\n\r\n";
    const bytes = new TextEncoder().encode(request);
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    const line = await statusLine(conn);
    if (line === undefined) return { ok: false, why: "the connection closed without an answer" };
    const m = /^HTTP\/[0-9](?:\.[0-9])? ([0-9]{3})(?: (.*))?$/.exec(line);
    if (!m) return { ok: false, why: `not an HTTP answer: ${JSON.stringify(line.slice(0, 80))}` };
    const code = Number(m[1]);
    if (code >= 200 && code < 400) return { ok: true };
    return { ok: false, why: `HTTP ${code}${m[2] ? ` ${m[2].slice(0, 80)}` : ""}` };
  } catch (err) {
    return { ok: false, why: `cannot get ${url.href}: ${netError(err)}` };
  } finally {
    signal.removeEventListener("abort", drop);
    drop();
  }
}

/** The first line of an answer, without its end; undefined when it closed first. */
async function statusLine(conn: Deno.Conn): Promise<string | undefined> {
  const buf = new Uint8Array(MAX_STATUS_LINE);
  let got = 0;
  while (got < buf.length) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) break;
    got += n;
    const end = buf.subarray(0, got).indexOf(10);
    if (end >= 0) return new TextDecoder().decode(buf.subarray(0, end)).replace(/\r$/, "");
  }
  return got === 0 ? undefined : new TextDecoder().decode(buf.subarray(0, got));
}

function address(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** An error from Deno's net API as a short reason: `connection refused`. */
function netError(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const plain = text.replace(/ \(os error [0-9]+\)$/, "");
  return plain.charAt(0).toLowerCase() + plain.slice(1);
}
