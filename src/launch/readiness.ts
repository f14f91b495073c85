/**
 * The waiting side of readiness: how `start` knows its daemon is ready.
 *
 * - `alive` (the default): the exec succeeded (posix_spawn reports a failed
 *   exec synchronously) and the process is still alive `afterMs` later, or,
 *   with `servingMs`, it has served that long (`serving.ts`).
 * - `fd` (s6's notification-fd): the daemon writes a newline to descriptor N;
 *   end of file, or the process exiting first, is a failure.
 * - `socket` (systemd's sd_notify): the daemon sends `READY=1` to the datagram
 *   socket named by `NOTIFY_SOCKET`; `STATUS=`, `MAINPID=`,
 *   `EXTEND_TIMEOUT_USEC=` and `ERRNO=` are understood.
 *
 * Every wait is a poll on the daemon's pidfd and the pipe or socket, bounded
 * by a deadline; nothing spins. The daemon side lives in `notify.ts`.
 *
 * @module
 */

import {
  bindUnixDatagram,
  C,
  chown,
  close,
  ERRNO,
  pipe,
  pollNow,
  pollWait,
  quote,
  read,
  recvNow,
  sendUnixDatagram,
  SystemError,
} from "../ffi/mod.ts";
import { ReadyClock } from "./serving.ts";
import type { Readiness as SpecReadiness } from "./spec.ts";

/** The environment variable that names the notification descriptor (`--notify-fd N`). */
export const NOTIFY_FD_ENV = "NOTIFY_FD";
/** The environment variable that names the notification socket (sd_notify). */
export const NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET";
/** The watchdog's period a service manager gives, in microseconds (sd_watchdog_enabled). */
export const WATCHDOG_USEC_ENV = "WATCHDOG_USEC";
/** The process whose watchdog `WATCHDOG_USEC` is (absent: whoever reads it). */
export const WATCHDOG_PID_ENV = "WATCHDOG_PID";

/** How readiness is signalled: the launch spec's {@link Readiness}. */
export type ReadinessMode = SpecReadiness;

/** What a wait for readiness found. */
export type ReadyResult =
  | {
    readonly ready: true;
    /** The last `STATUS=` text, if the daemon sent one. */
    readonly status?: string;
    /** A `MAINPID=` the daemon announced, if any. */
    readonly mainPid?: number;
  }
  | {
    readonly ready: false;
    /** Why: the process ended, the wait timed out, or it closed the notification fd. */
    readonly reason: "exited" | "timeout" | "closed";
    /** The time waited, in milliseconds. */
    readonly waitedMs: number;
    /** The last `STATUS=` text, if any. */
    readonly status?: string;
    /** An `ERRNO=` the daemon reported, if any. */
    readonly errno?: number;
  };

/** Options of {@link Readiness.prepare}. */
export interface ReadinessOptions {
  /** Who runs the daemon (for `--user`): the socket directory is given to them. */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** A private `NOTIFY_SOCKET`: a datagram socket in a fresh directory only its owner may enter. */
export interface NotifySocket extends Disposable {
  /** The bound socket (non-blocking, close-on-exec). */
  readonly fd: number;
  /** Its path, for `NOTIFY_SOCKET`. */
  readonly path: string;
}

/**
 * Make a private `NOTIFY_SOCKET`. A path in a 0700 directory, not an abstract
 * name: abstract names are listed in /proc/net/unix and reachable by every
 * process, so another user could announce READY=1 or a MAINPID.
 *
 * @param owner the daemon's user, who must be able to send to it (`--user`)
 * @returns the socket; dispose to close it and remove the directory
 * @throws {SystemError} when the directory or the socket cannot be made
 */
export function openNotifySocket(
  owner?: { readonly uid: number; readonly gid: number },
): NotifySocket {
  const dir = Deno.makeTempDirSync({ prefix: "singleton-run-notify-" });
  const remove = () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Already gone.
    }
  };
  let fd = -1;
  try {
    Deno.chmodSync(dir, 0o700);
    const path = `${dir}/notify`;
    fd = bindUnixDatagram(path);
    if (owner) {
      chown(dir, owner.uid, owner.gid);
      chown(path, owner.uid, owner.gid);
    }
    const bound = fd;
    return {
      fd: bound,
      path,
      [Symbol.dispose]() {
        close(bound);
        remove();
      },
    };
  } catch (err) {
    if (fd >= 0) close(fd);
    remove();
    throw err;
  }
}

/**
 * One readiness channel, set up before the daemon is spawned and waited on
 * after. Dispose of it to close descriptors and remove the socket directory.
 */
export class Readiness implements Disposable {
  readonly #mode: ReadinessMode;
  #readFd = -1;
  #writeFd = -1;
  #socket: NotifySocket | undefined;
  #env: Record<string, string> = {};

  private constructor(mode: ReadinessMode) {
    this.#mode = mode;
  }

  /**
   * Make the pipe or socket a mode needs.
   *
   * @param mode how the daemon will signal readiness
   * @param options the daemon's owner, for `--user`
   * @returns the channel
   * @throws {SystemError} when the pipe, socket or directory cannot be made
   */
  static prepare(mode: ReadinessMode, options: ReadinessOptions = {}): Readiness {
    const r = new Readiness(mode);
    try {
      if (mode.kind === "fd") {
        [r.#readFd, r.#writeFd] = pipe(C.O_CLOEXEC);
        r.#env = { [NOTIFY_FD_ENV]: String(mode.fd) };
      } else if (mode.kind === "socket") {
        r.#socket = openNotifySocket(options.owner);
        r.#readFd = r.#socket.fd;
        r.#env = { [NOTIFY_SOCKET_ENV]: r.#socket.path };
      }
    } catch (err) {
      r.close();
      throw err;
    }
    return r;
  }

  /** Variables to add to the daemon's environment. */
  get env(): Readonly<Record<string, string>> {
    return this.#env;
  }

  /** Descriptors the daemon must inherit: child fd number to ours. */
  get childFds(): Readonly<Record<number, number>> {
    return this.#mode.kind === "fd" && this.#writeFd >= 0 ? { [this.#mode.fd]: this.#writeFd } : {};
  }

  /**
   * Call once the daemon is spawned: close our copy of the pipe's write end,
   * so the daemon closing its copy reads as end of file.
   */
  spawned(): void {
    if (this.#writeFd >= 0) close(this.#writeFd);
    this.#writeFd = -1;
  }

  /**
   * Wait until the daemon is ready, exits, or the time is up.
   *
   * @param pidfd the daemon's pidfd (readable once it has exited)
   * @param timeoutMs the longest wait
   * @param pid the daemon's pid, for an `alive` readiness that may be met
   *   sooner by serving; without it, only the time alive counts
   * @returns ready (with any status), or why not
   */
  async wait(pidfd: number, timeoutMs: number, pid?: number): Promise<ReadyResult> {
    const started = performance.now();
    let deadline = started + timeoutMs;
    const waited = () => Math.round(performance.now() - started);
    const mode = this.#mode;
    if (mode.kind === "alive") {
      const alive = pid === undefined ? { kind: mode.kind, afterMs: mode.afterMs } : mode;
      const clock = new ReadyClock(alive, started, timeoutMs);
      const watch = [{ fd: pidfd, events: C.POLLIN }];
      for (;;) {
        const slice = clock.next - performance.now();
        const revents = slice <= 0 ? pollNow(watch) : await pollWait(watch, slice);
        if (revents[0] !== 0) return { ready: false, reason: "exited", waitedMs: waited() };
        if (!clock.look(pid ?? 0)) continue;
        // It may have ended since the poll: look once more, then believe it.
        if (pollNow(watch)[0] !== 0) return { ready: false, reason: "exited", waitedMs: waited() };
        return { ready: true };
      }
    }

    const state: { status?: string; mainPid?: number; errno?: number } = {};
    let pending = "";
    const watch = [{ fd: pidfd, events: C.POLLIN }, { fd: this.#readFd, events: C.POLLIN }];
    for (;;) {
      const remaining = deadline - performance.now();
      const revents = remaining > 0 ? await pollWait(watch, remaining) : pollNow(watch);
      if (revents[1] !== 0) {
        if (mode.kind === "fd") {
          const bytes = read(this.#readFd, 512);
          if (bytes.length === 0) {
            // Text without a newline before the close is why it gave up (the supervisor's
            // reason, which may have had nowhere else to go on a full disk).
            const why = pending.trim().slice(0, 512);
            if (why !== "") state.status = why;
            return { ready: false, reason: "closed", waitedMs: waited(), ...state };
          }
          pending += new TextDecoder().decode(bytes);
          if (pending.includes("\n")) {
            // A keeper names the daemon's main process on its line.
            const main = /^MAINPID=([0-9]{1,7})\n/.exec(pending)?.[1];
            return main === undefined ? { ready: true } : { ready: true, mainPid: Number(main) };
          }
        } else {
          let ready = false;
          for (let msg = recvNow(this.#readFd, 4096); msg; msg = recvNow(this.#readFd, 4096)) {
            const extend = parseNotify(new TextDecoder().decode(msg), state);
            if (extend.ready) ready = true;
            if (extend.extendMs !== undefined) {
              deadline = Math.max(deadline, performance.now() + extend.extendMs);
            }
          }
          if (ready) return { ready: true, ...pick(state, "status", "mainPid") };
        }
        continue;
      }
      if (revents[0] !== 0) return { ready: false, reason: "exited", waitedMs: waited(), ...state };
      if (performance.now() >= deadline) {
        return { ready: false, reason: "timeout", waitedMs: waited(), ...state };
      }
    }
  }

  /** Close the descriptors and remove the socket directory. Idempotent. */
  close(): void {
    if (this.#socket) {
      this.#socket[Symbol.dispose]();
      this.#socket = undefined;
      this.#readFd = -1;
    }
    for (const fd of [this.#readFd, this.#writeFd]) if (fd >= 0) close(fd);
    this.#readFd = this.#writeFd = -1;
  }

  /** Same as {@link Readiness.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function pick<T extends object, K extends keyof T>(obj: T, ...keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

/** What one sd_notify datagram asks of whoever reads it, besides what it leaves in the state. */
export interface NotifyRequest {
  /** It said `READY=1`. */
  readonly ready: boolean;
  /** `EXTEND_TIMEOUT_USEC=`, in milliseconds. */
  readonly extendMs?: number;
  /** `WATCHDOG=1` (a ping) or `WATCHDOG=trigger` (fail now). */
  readonly watchdog?: "ping" | "trigger";
  /** `WATCHDOG_USEC=`: the watchdog's new period, in milliseconds (0: none). */
  readonly watchdogMs?: number;
}

/**
 * Read one sd_notify datagram (`KEY=VALUE` lines) into `state`.
 *
 * @param text the datagram
 * @param state where STATUS, MAINPID and ERRNO are kept
 * @returns whether it said READY=1, any EXTEND_TIMEOUT_USEC in milliseconds,
 *   and what it said of the watchdog
 */
export function parseNotify(
  text: string,
  state: { status?: string; mainPid?: number; errno?: number },
): NotifyRequest {
  let ready = false;
  let extendMs: number | undefined;
  let watchdog: "ping" | "trigger" | undefined;
  let watchdogMs: number | undefined;
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    switch (key) {
      case "READY":
        if (value === "1") ready = true;
        break;
      case "STATUS":
        state.status = value;
        break;
      case "MAINPID":
        if (/^[0-9]{1,7}$/.test(value) && Number(value) > 0) state.mainPid = Number(value);
        break;
      case "ERRNO":
        if (/^[0-9]{1,4}$/.test(value)) state.errno = Number(value);
        break;
      case "EXTEND_TIMEOUT_USEC":
        if (/^[0-9]{1,15}$/.test(value)) extendMs = Number(value) / 1000;
        break;
      case "WATCHDOG":
        if (value === "1") watchdog ??= "ping";
        if (value === "trigger") watchdog = "trigger";
        break;
      case "WATCHDOG_USEC":
        if (/^[0-9]{1,15}$/.test(value)) watchdogMs = Number(value) / 1000;
        break;
    }
  }
  return {
    ready,
    ...(extendMs === undefined ? {} : { extendMs }),
    ...(watchdog === undefined ? {} : { watchdog }),
    ...(watchdogMs === undefined ? {} : { watchdogMs }),
  };
}

/**
 * Send `KEY=VALUE` lines to a service manager's notification socket: the
 * one sending side of sd_notify, for a service (`notify.ts`) and for a
 * supervisor that passes its program's readiness on.
 *
 * @param address the `NOTIFY_SOCKET` value: an absolute path or `@abstract`
 * @param state the lines, such as `READY=1\nSTATUS=up`
 * @throws {SystemError} when the address is neither, or the send fails
 */
export function sendNotify(address: string, state: string): void {
  if (!address.startsWith("/") && !address.startsWith("@")) {
    throw new SystemError("sendto", ERRNO.EINVAL, {
      path: address,
      message: `NOTIFY_SOCKET=${quote(address)} is neither an absolute path nor an @abstract name`,
    });
  }
  sendUnixDatagram(address, new TextEncoder().encode(state));
}

/**
 * The service manager above this process (systemd's `Type=notify`, or
 * anything that speaks sd_notify), as its environment names it.
 */
export interface OuterManager {
  /** Its `NOTIFY_SOCKET`. */
  readonly socket: string;
  /** The watchdog it keeps on this process (`WATCHDOG_USEC`), in ms; absent for none. */
  readonly watchdogMs?: number;
}

/**
 * Take the service manager's variables out of an environment, for a
 * supervisor that reports to the manager itself: its program never sees
 * them. The watchdog is this process's only when `WATCHDOG_PID` is absent
 * or names `self`.
 *
 * @param env the environment (the variables are deleted from it)
 * @param self the pid the manager knows this process by
 * @returns the manager, or undefined when none is named
 */
export function takeOuterManager(
  env: Record<string, string>,
  self: number,
): OuterManager | undefined {
  const socket = env[NOTIFY_SOCKET_ENV];
  const usec = env[WATCHDOG_USEC_ENV];
  const pid = env[WATCHDOG_PID_ENV];
  delete env[NOTIFY_SOCKET_ENV];
  delete env[WATCHDOG_USEC_ENV];
  delete env[WATCHDOG_PID_ENV];
  if (socket === undefined || socket === "") return undefined;
  const ours = pid === undefined || pid === String(self);
  const ms = usec !== undefined && /^[0-9]{1,15}$/.test(usec) ? Number(usec) / 1000 : 0;
  return ours && ms >= 1 ? { socket, watchdogMs: ms } : { socket };
}
