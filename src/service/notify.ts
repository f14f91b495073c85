/**
 * Readiness, the service's side: tell whoever started this process that it
 * is ready, reloading or stopping. Two protocols are spoken, whichever the
 * environment names:
 *
 * - `NOTIFY_FD=N` (s6 style, set by `singleton-run start --notify-fd N`): a
 *   newline written to descriptor N, which is then closed. Readiness only.
 * - `NOTIFY_SOCKET=/path` or `@abstract` (systemd `Type=notify`): datagrams
 *   such as `READY=1` sent to that unix socket.
 *
 * With neither set, every call is a no-op that returns false, so a service
 * can call them unconditionally.
 *
 * @example
 * ```ts
 * import { notifyReady } from "./notify.ts";
 * // Started from a shell, nothing is listening: this sends nothing.
 * const sent = notifyReady("listening on :8080");
 * console.log(sent);
 * ```
 *
 * @module
 */

import {
  close,
  ERRNO,
  getCloexec,
  monotonicMicros,
  quote,
  SystemError,
  writeAll,
} from "../ffi/mod.ts";
import { sendNotify } from "../launch/readiness.ts";

const encoder = new TextEncoder();

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: nothing was asked of us that we could see
  }
}

/**
 * Send `key=value` lines to `NOTIFY_SOCKET`, if set.
 *
 * @param state the lines, such as `READY=1\nSTATUS=up`
 * @returns true when sent, false when `NOTIFY_SOCKET` is not set
 * @throws {SystemError} when the socket is set but the send fails
 */
function sendState(state: string): boolean {
  const address = env("NOTIFY_SOCKET");
  if (address === undefined) return false;
  sendNotify(address, state);
  return true;
}

function statusLine(text: string): string {
  return `STATUS=${text.replaceAll("\n", " ")}`;
}

/**
 * Write the s6 readiness newline to `NOTIFY_FD`, close that descriptor and
 * remove the variable, so a second call (or a child) cannot write again.
 */
function notifyFd(): boolean {
  const raw = env("NOTIFY_FD");
  if (raw === undefined) return false;
  Deno.env.delete("NOTIFY_FD");
  const fd = /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(fd) || fd < 3) {
    throw new SystemError("write", ERRNO.EBADF, {
      path: `NOTIFY_FD=${raw}`,
      message: `NOTIFY_FD=${quote(raw)} is not a descriptor number above 2`,
    });
  }
  try {
    getCloexec(fd); // EBADF when it is not open: say so instead of writing elsewhere
  } catch (err) {
    if (err instanceof SystemError) {
      throw new SystemError("write", err.errno, {
        path: `fd ${fd}`,
        message: `NOTIFY_FD=${fd} is not an open descriptor`,
      });
    }
    throw err;
  }
  try {
    writeAll(fd, encoder.encode("\n"), `NOTIFY_FD=${fd}`);
  } finally {
    close(fd);
  }
  return true;
}

/**
 * Tell the supervisor this service is ready: a newline on `NOTIFY_FD` (then
 * closed and removed from the environment) and/or `READY=1` on
 * `NOTIFY_SOCKET`. A no-op when neither is set.
 *
 * @param status an optional human-readable status (`STATUS=` for systemd)
 * @returns true when a notification was sent
 * @throws {SystemError} when a notification target is set but unusable:
 *   `NOTIFY_FD` not an open descriptor, `NOTIFY_SOCKET` not listening
 * @example
 * ```ts
 * import { notifyReady } from "./notify.ts";
 * if (!notifyReady("accepting connections")) console.log("no supervisor to tell");
 * ```
 */
export function notifyReady(status?: string): boolean {
  const byFd = notifyFd();
  const bySocket = sendState(status === undefined ? "READY=1" : `READY=1\n${statusLine(status)}`);
  return byFd || bySocket;
}

/**
 * Tell systemd a one-line status (`STATUS=`), shown by `systemctl status`.
 * The s6 protocol has no status: with only `NOTIFY_FD`, nothing is sent.
 *
 * @param text the status; newlines become spaces
 * @returns true when sent
 * @throws {SystemError} when `NOTIFY_SOCKET` is set but the send fails
 * @example
 * ```ts
 * import { notifyStatus } from "./notify.ts";
 * notifyStatus("42 clients connected");
 * ```
 */
export function notifyStatus(text: string): boolean {
  return sendState(statusLine(text));
}

/**
 * Tell systemd the service is stopping (`STOPPING=1`). {@link onShutdown}'s
 * signal handling sends it before the cleanup handlers run.
 *
 * @returns true when sent
 * @throws {SystemError} when `NOTIFY_SOCKET` is set but the send fails
 * @example
 * ```ts
 * import { notifyStopping } from "./notify.ts";
 * notifyStopping();
 * ```
 */
export function notifyStopping(): boolean {
  return sendState("STOPPING=1");
}

/**
 * Tell systemd the service is reloading its configuration (`RELOADING=1`
 * with `MONOTONIC_USEC=`, as `Type=notify-reload` requires); send
 * {@link notifyReady} when done. {@link onReload}'s SIGHUP handling does both.
 *
 * @returns true when sent
 * @throws {SystemError} when `NOTIFY_SOCKET` is set but the send fails
 * @example
 * ```ts
 * import { notifyReady, notifyReloading } from "./notify.ts";
 * notifyReloading();
 * // ... re-read the configuration ...
 * notifyReady();
 * ```
 */
export function notifyReloading(): boolean {
  if (env("NOTIFY_SOCKET") === undefined) return false;
  return sendState(`RELOADING=1\nMONOTONIC_USEC=${monotonicMicros()}`);
}
