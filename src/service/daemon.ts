/**
 * `daemonize()` for a Deno program: the same call runs in the foreground
 * process a user starts and in the daemon it becomes. JavaScript cannot
 * survive `fork()` (the runtime's threads do not come along), so the
 * foreground re-executes this program through `posix_spawn` in a new session
 * and waits until the daemon says it is ready:
 *
 * 1. foreground: lock the PID file first ("already running (pid N)" is
 *    reported at once), open a socketpair for readiness, spawn the program
 *    again with the locked descriptor as fd 3 and the socket as fd 4, stdio
 *    on /dev/null (or the `output` file), a umask and no other descriptor;
 *    write the daemon's pid into the file; wait for `READY` (exit 0) or an
 *    error, an early exit or the timeout (exit 1 with the reason).
 * 2. daemon: recognise its role by a one-time nonce that the environment and
 *    the inherited socket must both carry (the variable is deleted at once, so
 *    no child of the daemon sees it, and a stale copy does not match), adopt
 *    the lock, change to `/` (or `chdir`), and return a {@link Daemon}.
 *
 * @module
 */

import {
  C,
  close,
  type ExitReason,
  fstat,
  pollNow,
  pollWait,
  quote,
  read,
  recv,
  setCloexec,
  socketpair,
  SystemError,
  writeAll,
} from "../ffi/mod.ts";
import { AlreadyRunningError, PidFile } from "../lock/pidfile.ts";
import { openOutputFile } from "../lock/output.ts";
import { describeExit } from "../launch/exit.ts";
import { spawn } from "../launch/spawn.ts";
import { selfCommand } from "../launch/internal.ts";
import { Aborted, StartingDaemon } from "../launch/starting.ts";
import { notifyReady } from "./notify.ts";
import { shutdown } from "./shutdown.ts";
import { literal, logger } from "../log.ts";
import { exitCodeOf, UsageError } from "../errors.ts";

/** The environment variable that carries `<fd>:<nonce>` to the daemon, once. */
const ROLE_VARIABLE = "SINGLETON_RUN_DAEMONIZE";
/** The daemon's descriptor holding the pid file lock. */
const LOCK_FD = 3;
/** The daemon's end of the readiness socket. */
const READY_FD = 4;

/** Options of {@link daemonize}. */
export interface DaemonizeOptions {
  /** The PID lock file (a relative path is relative to the starting directory). */
  readonly pidfile?: string;
  /**
   * The PID lock file.
   *
   * @deprecated Use {@link DaemonizeOptions.pidfile}, the spelling of every other call.
   */
  readonly pidFile?: string;
  /**
   * The daemon's working directory.
   * @default {"/"} so no file system is kept busy
   */
  readonly chdir?: string;
  /**
   * The daemon's file mode creation mask.
   * @default {0o022}
   */
  readonly umask?: number;
  /**
   * A file that receives the daemon's stdout and stderr, appended to
   * (created with mode 0640). Uncaught errors are printed there.
   * @default {undefined} both go to /dev/null
   */
  readonly output?: string;
  /** Variables added to (or replacing in) the daemon's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * How long the foreground waits for {@link Daemon.ready}, in ms; the
   * daemon is killed when the time runs out.
   * @default {30000}
   */
  readonly readyTimeout?: number;
}

/** The daemon's view of itself, returned by {@link daemonize} in the daemon. */
export interface Daemon {
  /** This process's pid, the one in the pid file. */
  readonly pid: number;
  /** The pid file's absolute path. */
  readonly pidfile: string;
  /**
   * The pid file's absolute path.
   *
   * @deprecated Use {@link Daemon.pidfile}.
   */
  readonly pidFile: string;
  /** The held lock (released by {@link Daemon.stop} and by shutdown). */
  readonly lock: PidFile;
  /**
   * Tell the foreground process that the daemon is ready, so it exits 0
   * (and tell `NOTIFY_SOCKET`, when set). Idempotent.
   *
   * @param status a status line for systemd
   */
  ready(status?: string): void;
  /**
   * Stop as SIGTERM would: run the {@link onShutdown} handlers, release the
   * lock, exit with `code`.
   *
   * @param code the exit status
   */
  stop(code?: number): Promise<never>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function message(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim() || "unknown error";
}

function absolute(path: string | undefined, base: string): string {
  if (path === undefined || path === "") throw new UsageError("daemonize needs a pidfile");
  return path.startsWith("/") ? path : `${base.replace(/\/$/, "")}/${path}`;
}

/**
 * Recognise the daemon role: the variable names a descriptor that is a
 * socket whose first bytes are the same nonce. The variable is deleted in
 * any case. The nonce is peeked before it is taken, so a process that
 * inherited a stale variable leaves its own descriptor's data alone.
 *
 * @returns the readiness descriptor, now close-on-exec, or undefined
 */
function claimDaemonRole(): number | undefined {
  let raw: string | undefined;
  try {
    raw = Deno.env.get(ROLE_VARIABLE);
    if (raw !== undefined) Deno.env.delete(ROLE_VARIABLE);
  } catch {
    return undefined; // no --allow-env: not started by daemonize()
  }
  const m = raw === undefined ? null : /^([0-9]{1,9}):([0-9a-f]{32})$/.exec(raw);
  if (!m) return undefined;
  const fd = Number(m[1]);
  const expected = encoder.encode(`${m[2]}\n`);
  try {
    if ((fstat(fd).mode & C.S_IFMT) !== C.S_IFSOCK) return undefined;
  } catch {
    return undefined;
  }
  const got = new Uint8Array(expected.length);
  let n: number | undefined;
  try {
    n = recv(fd, got, C.MSG_PEEK | C.MSG_DONTWAIT);
  } catch {
    return undefined;
  }
  if (n !== expected.length || !got.every((b, i) => b === expected[i])) return undefined;
  recv(fd, got, C.MSG_DONTWAIT);
  setCloexec(fd, true);
  return fd;
}

/**
 * Become a daemon. Call it early, before opening anything the daemon needs:
 * the foreground process runs the program only up to this call, then
 * re-executes it as the daemon and exits (0 once the daemon calls
 * `ready()`, 1 with the reason if it fails first, 1 with "already running
 * (pid N)" if another instance holds the lock). In the daemon, the same call
 * returns the {@link Daemon} handle.
 *
 * Needs `--allow-ffi`, `--allow-env`, `--allow-read`, `--allow-write`; the
 * daemon is started with the same `deno run` flags (or the same compiled
 * binary) and the same arguments.
 *
 * @param options the pid file, working directory, umask, output file,
 *   environment and readiness timeout
 * @returns in the daemon, its handle; in the foreground, never (the process exits)
 * @throws {SystemError} in the daemon, when the inherited lock descriptor is
 *   not the pid file (never expected)
 * @throws {TypeError} for an empty pid file path
 * @example Daemonize only when asked to (the test runner must not daemonize)
 * ```ts
 * import { daemonize } from "./daemon.ts";
 *
 * if (Deno.args.includes("--daemon")) {
 *   const daemon = await daemonize({ pidfile: "/run/my-service.pid" });
 *   // open listeners, read configuration, then:
 *   daemon.ready();
 * }
 * ```
 */
export async function daemonize(options: DaemonizeOptions): Promise<Daemon> {
  if (current) return current; // a second call in the daemon: it already is one
  const pidFile = absolute(options.pidfile ?? options.pidFile, Deno.cwd());
  const readyFd = claimDaemonRole();
  if (readyFd === undefined) return await runForeground(options, pidFile);
  current = becomeDaemon(options, pidFile, readyFd);
  return current;
}

let current: Daemon | undefined;

function becomeDaemon(options: DaemonizeOptions, pidFile: string, readyFd: number): Daemon {
  let channel = readyFd;
  const send = (line: string): void => {
    if (channel < 0) return;
    try {
      writeAll(channel, encoder.encode(`${line}\n`), "readiness socket");
    } catch {
      // the foreground is gone (killed, or timed out): nobody to tell
    }
    close(channel);
    channel = -1;
  };
  const onError = (e: ErrorEvent): void => send(`ERROR ${oneLine(message(e.error ?? e.message))}`);
  const onRejection = (e: PromiseRejectionEvent): void =>
    send(`ERROR ${oneLine(message(e.reason))}`);
  const unlisten = (): void => {
    removeEventListener("error", onError);
    removeEventListener("unhandledrejection", onRejection);
  };
  let lock: PidFile;
  try {
    lock = PidFile.adopt(LOCK_FD, pidFile);
    const dir = options.chdir ?? "/";
    try {
      Deno.chdir(dir);
    } catch (err) {
      throw new Error(`cannot change to directory ${quote(dir)}: ${describeFsError(err)}`);
    }
  } catch (err) {
    send(`ERROR ${oneLine(message(err))}`);
    throw err;
  }
  addEventListener("error", onError);
  addEventListener("unhandledrejection", onRejection);
  return {
    pid: Deno.pid,
    pidfile: pidFile,
    pidFile,
    lock,
    ready(status?: string): void {
      if (channel < 0) return;
      unlisten();
      send("READY");
      try {
        notifyReady(status);
      } catch (err) {
        logger("daemonize").warn(literal(`cannot notify the supervisor: ${message(err)}`));
      }
    },
    stop(code = 0): Promise<never> {
      unlisten();
      send("ERROR stopped before it was ready");
      return shutdown(code, "stop requested");
    },
  };
}

function describeFsError(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "it does not exist";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (err instanceof Deno.errors.NotADirectory) return "it is not a directory";
  return message(err);
}

/** Say why the start failed, and exit with the command's code for it (3: already running). */
function die(text: string, err?: unknown): never {
  console.error(text);
  Deno.exit(exitCodeOf(err) ?? 1);
}

async function runForeground(options: DaemonizeOptions, pidFile: string): Promise<never> {
  const timeout = options.readyTimeout ?? 30_000;
  if (!(timeout > 0)) die(`readyTimeout must be a positive number of ms, got ${timeout}`);
  if (options.chdir !== undefined) checkDirectory(options.chdir);
  // Listen before anything is started: a Ctrl-C (or TERM, HUP) between the
  // spawn and the wait would otherwise kill this process by default and leave
  // the half-started daemon running, unwatched, with the lock.
  using interrupts = catchInterrupts();
  let lock: PidFile;
  try {
    lock = await PidFile.acquire(pidFile);
  } catch (err) {
    if (err instanceof AlreadyRunningError || err instanceof SystemError) die(err.message, err);
    throw err;
  }
  if (interrupts.signal.aborted) {
    lock.release();
    die(`interrupted by ${interrupts.signal.reason} before the daemon was started`);
  }
  const cannotStart = (err: unknown): never => {
    lock.release();
    die(`cannot start the daemon: ${message(err)}`);
  };
  let ours: number;
  let theirs: number;
  try {
    [ours, theirs] = socketpair();
  } catch (err) {
    return cannotStart(err);
  }
  try {
    await using daemon = await launchSelf(options, lock, ours, theirs).catch(cannotStart)
      .finally(() => close(theirs));
    const outcome = await daemon.unlessAborted(
      readReadiness(ours, daemon.pidfd, timeout),
      interrupts.signal,
    );
    if (outcome instanceof Aborted) {
      await daemon.abandon();
      die(`interrupted by ${outcome.reason} before the daemon was ready; it was stopped`);
    }
    if (outcome.ready) {
      daemon.handOver(); // the daemon holds the lock now
      forwardReadiness();
      Deno.exit(0);
    }
    const { exit } = await daemon.abandon();
    const where = options.output === undefined
      ? ""
      : ` (its output is in ${quote(options.output)})`;
    die(`${notReadyText(outcome, exit, timeout)}${where}`);
  } finally {
    close(ours);
  }
}

function checkDirectory(dir: string): void {
  let isDir = false;
  try {
    isDir = Deno.statSync(dir).isDirectory;
  } catch (err) {
    die(`cannot start the daemon: directory ${quote(dir)}: ${describeFsError(err)}`);
  }
  if (!isDir) die(`cannot start the daemon: ${quote(dir)} is not a directory`);
}

/**
 * Spawn this program again, in a new session, as the daemon: the locked
 * descriptor as fd 3, its end of the readiness socket (which carries the
 * nonce) as fd 4, stdio on /dev/null or the output file.
 */
async function launchSelf(
  options: DaemonizeOptions,
  lock: PidFile,
  ourEnd: number,
  childEnd: number,
): Promise<StartingDaemon> {
  const nonce = Array.from(crypto.getRandomValues(new Uint8Array(16)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  // Waiting in the socket before the spawn, so the daemon finds it at once.
  writeAll(ourEnd, encoder.encode(`${nonce}\n`), "readiness socket");
  const env: Record<string, string> = { ...Deno.env.toObject(), ...options.env };
  delete env.NOTIFY_FD; // that descriptor is not passed on; the foreground answers it
  env[ROLE_VARIABLE] = `${READY_FD}:${nonce}`;
  const argv = [...selfCommand(), ...Deno.args];
  const out = options.output === undefined ? "null" : openOutputFile(options.output);
  try {
    return await StartingDaemon.launch(lock, () => ({
      pid: spawn({
        path: argv[0]!,
        argv,
        env,
        cwd: Deno.cwd(),
        umask: options.umask ?? 0o022,
        newSession: true,
        fds: { 1: out, 2: out, [LOCK_FD]: lock.fd, [READY_FD]: childEnd },
      }),
    }));
  } finally {
    if (out !== "null") close(out);
  }
}

/** Started with `--notify-fd`: the daemon is ready, so this process is. */
function forwardReadiness(): void {
  if (Deno.env.get("NOTIFY_FD") === undefined) return;
  Deno.env.delete("NOTIFY_SOCKET"); // the daemon speaks to that one itself
  try {
    notifyReady();
  } catch (err) {
    console.error(`cannot notify the supervisor: ${message(err)}`);
  }
}

/** What the wait on the readiness socket found. */
type Readiness =
  | { readonly ready: true }
  | {
    readonly ready: false;
    /** The daemon's `ERROR` line, if it sent one. */
    readonly error: string | undefined;
    /** It closed its end of the socket. */
    readonly closed: boolean;
    /** The time ran out. */
    readonly timedOut: boolean;
  };

function notReadyText(
  outcome: Readiness & { ready: false },
  exit: ExitReason | undefined,
  timeout: number,
): string {
  if (outcome.error !== undefined) return `daemon failed before it was ready: ${outcome.error}`;
  if (outcome.timedOut) {
    return outcome.closed
      ? "daemon closed its readiness socket before it was ready; it was killed"
      : `daemon was not ready within ${timeout} ms; it was killed`;
  }
  if (exit === undefined) return "daemon closed its readiness socket before it was ready";
  if (exit.exited) return `daemon exited with status ${exit.code} before it was ready`;
  return `daemon was ${describeExit(exit)} before it was ready`;
}

/**
 * Wait for `READY` on the socket, an `ERROR` line, the daemon's exit, or
 * the deadline (cut to 2 s after an error or the socket's end, for the
 * daemon to exit by itself).
 */
async function readReadiness(
  fd: number,
  pidfd: number | undefined,
  timeout: number,
): Promise<Readiness> {
  let deadline = performance.now() + timeout;
  let text = "";
  let error: string | undefined;
  let closed = false;
  const notReady = (timedOut: boolean): Readiness => ({ ready: false, error, closed, timedOut });
  if (pidfd === undefined) return notReady(false);
  for (;;) {
    const remaining = deadline - performance.now();
    if (remaining <= 0) return notReady(true);
    const watch = [{ fd: pidfd, events: C.POLLIN }];
    if (!closed) watch.push({ fd, events: C.POLLIN });
    const revents = await pollWait(watch, remaining);
    if (!closed && (revents[1] ?? 0) !== 0) {
      while (!closed && pollNow([{ fd, events: C.POLLIN }])[0] !== 0) {
        const chunk = read(fd, 4096);
        if (chunk.length === 0) closed = true;
        text += decoder.decode(chunk);
      }
      for (;;) {
        const nl = text.indexOf("\n");
        if (nl < 0) break;
        const line = text.slice(0, nl);
        text = text.slice(nl + 1);
        if (line === "READY") return { ready: true };
        if (line.startsWith("ERROR ")) error ??= line.slice(6);
      }
      if (error !== undefined || closed) deadline = Math.min(deadline, performance.now() + 2000);
    }
    if ((revents[0] ?? 0) !== 0) return notReady(false);
  }
}

/** SIGINT, SIGTERM and SIGHUP, caught until disposed: the first aborts `signal`. */
interface Interrupts extends Disposable {
  readonly signal: AbortSignal;
}

/**
 * Catch SIGINT, SIGTERM and SIGHUP from now until disposed, so that none of
 * them ends this process before it has stopped what it started.
 */
function catchInterrupts(): Interrupts {
  const controller = new AbortController();
  const handlers = (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((name) =>
    [name, () => controller.abort(name)] as const
  );
  for (const [name, handler] of handlers) Deno.addSignalListener(name, handler);
  return {
    signal: controller.signal,
    [Symbol.dispose]() {
      for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}

/** @internal for tests: the variable name, to check it never leaks. */
export const DAEMON_ROLE_VARIABLE: string = ROLE_VARIABLE;
