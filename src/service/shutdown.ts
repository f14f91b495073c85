/**
 * Graceful shutdown and reload for a service: SIGTERM
 * and SIGINT run the cleanup handlers in reverse order of registration within
 * a deadline (5 s by default: init sends SIGKILL after that), release every
 * PID lock this process holds, then exit; SIGHUP runs the reload handlers
 * and the service keeps running.
 *
 * @example
 * ```ts
 * import { onReload, onShutdown } from "./shutdown.ts";
 *
 * const server = Deno.serve({ port: 0, onListen() {} }, () => new Response("ok"));
 * using _stop = onShutdown(() => server.shutdown(), { timeout: 3000 });
 * using _reload = onReload(() => console.log("re-reading the configuration"));
 * await server.shutdown(); // in a real service, SIGTERM does this
 * ```
 *
 * @module
 */

import { quote } from "../ffi/mod.ts";
import { heldPidFiles } from "../lock/pidfile.ts";
import { notifyReady, notifyReloading, notifyStopping } from "./notify.ts";
import { literal, logger } from "../log.ts";

const log = logger("shutdown");

/** A cleanup or reload handler; it may return a promise. */
export type ShutdownHandler = () => void | Promise<void>;

/** Options of {@link onShutdown}. */
export interface ShutdownOptions {
  /**
   * The deadline of the whole shutdown in milliseconds, counted from the
   * signal. When handlers name different deadlines, the shortest wins.
   * @default {5000}
   */
  readonly timeout?: number;
}

/** What {@link onShutdown} and {@link onReload} return: unregisters the handler. */
export interface Registration extends Disposable {
  /** Remove the handler (idempotent). */
  unregister(): void;
}

/** The deadline used when no handler names one: the init-to-SIGKILL window. */
export const DEFAULT_SHUTDOWN_TIMEOUT = 5000;

interface Entry {
  readonly handler: ShutdownHandler;
  readonly timeout: number | undefined;
}

const shutdownHandlers: Entry[] = [];
const reloadHandlers: ShutdownHandler[] = [];
let shuttingDown = false;
let listening = false;
let hupListening = false;
let reloading: Promise<void> | undefined;
let reloadAgain = false;

const SHUTDOWN_SIGNALS = ["SIGTERM", "SIGINT"] as const;
const SIGNAL_NUMBERS: Readonly<Record<string, number>> = { SIGTERM: 15, SIGINT: 2, SIGHUP: 1 };

function onShutdownSignal(signal: "SIGTERM" | "SIGINT"): () => void {
  return () => {
    if (shuttingDown) {
      // A second signal while cleaning up: the operator means it. Exit now.
      log.warn(literal(`${signal} during shutdown: exiting at once`));
      releaseLocks();
      Deno.exit(128 + SIGNAL_NUMBERS[signal]!);
    }
    void shutdown(0, signal);
  };
}

const listeners = {
  SIGTERM: onShutdownSignal("SIGTERM"),
  SIGINT: onShutdownSignal("SIGINT"),
};

function updateListeners(): void {
  const want = shutdownHandlers.length > 0 || shuttingDown;
  if (want && !listening) {
    for (const s of SHUTDOWN_SIGNALS) Deno.addSignalListener(s, listeners[s]);
  } else if (!want && listening) {
    for (const s of SHUTDOWN_SIGNALS) Deno.removeSignalListener(s, listeners[s]);
  }
  listening = want;
  const wantHup = reloadHandlers.length > 0;
  if (wantHup && !hupListening) Deno.addSignalListener("SIGHUP", onHangup);
  else if (!wantHup && hupListening) Deno.removeSignalListener("SIGHUP", onHangup);
  hupListening = wantHup;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function releaseLocks(): void {
  for (const lock of heldPidFiles()) {
    try {
      lock.release();
    } catch (err) {
      log.error(literal(`cannot release pid file ${quote(lock.path)}: ${message(err)}`));
    }
  }
}

function checkTimeout(timeout: number | undefined): void {
  if (timeout !== undefined && !(timeout >= 0 && Number.isFinite(timeout))) {
    throw new RangeError(`shutdown timeout must be a finite number of ms >= 0, got ${timeout}`);
  }
}

/**
 * Run a cleanup handler when this process is asked to stop (SIGTERM or
 * SIGINT). Handlers run one after another, the last registered first,
 * awaited, until the deadline; one that throws is logged (to the LogTape
 * logger `["singleton-run", "shutdown"]`) and the rest still run. Then every PID lock
 * this process holds is released and the process exits: 0 when every handler
 * finished, 1 when one failed or the deadline cut the cleanup short. A second
 * SIGTERM or SIGINT during cleanup exits at once (128 + signal).
 *
 * @param handler the cleanup; may be async
 * @param options the deadline of the whole shutdown
 * @returns a registration; dispose it or call `unregister()` to remove the handler
 * @throws {RangeError} for a negative or infinite timeout
 * @example
 * ```ts
 * import { onShutdown } from "./shutdown.ts";
 * const stop = onShutdown(async () => {
 *   // flush, close, unlink: no network calls, the deadline is short
 * }, { timeout: 2000 });
 * stop.unregister();
 * ```
 */
export function onShutdown(handler: ShutdownHandler, options: ShutdownOptions = {}): Registration {
  checkTimeout(options.timeout);
  const entry: Entry = { handler, timeout: options.timeout };
  shutdownHandlers.push(entry);
  updateListeners();
  const unregister = (): void => {
    const i = shutdownHandlers.indexOf(entry);
    if (i >= 0) shutdownHandlers.splice(i, 1);
    updateListeners();
  };
  return { unregister, [Symbol.dispose]: unregister };
}

/**
 * Run a handler when this process receives SIGHUP (re-read the
 * configuration, reopen log files), without stopping. Handlers run in the
 * order registered, awaited one after another; one that throws is logged
 * and the rest still run. A SIGHUP during a reload runs one more reload
 * afterwards. A supervisor listening on `NOTIFY_SOCKET` is told `RELOADING=1`
 * before and `READY=1` after.
 *
 * @param handler the reload step; may be async
 * @returns a registration; dispose it or call `unregister()` to remove the handler
 * @example
 * ```ts
 * import { onReload } from "./shutdown.ts";
 * using _reload = onReload(async () => {
 *   // const config = JSON.parse(await Deno.readTextFile("/etc/my-service.json"));
 * });
 * ```
 */
export function onReload(handler: ShutdownHandler): Registration {
  reloadHandlers.push(handler);
  updateListeners();
  const unregister = (): void => {
    const i = reloadHandlers.indexOf(handler);
    if (i >= 0) reloadHandlers.splice(i, 1);
    updateListeners();
  };
  return { unregister, [Symbol.dispose]: unregister };
}

function tellSupervisor(send: () => boolean): void {
  try {
    send();
  } catch (err) {
    log.warn(literal(`cannot notify the supervisor: ${message(err)}`));
  }
}

function onHangup(): void {
  if (reloading) {
    reloadAgain = true;
    return;
  }
  reloading = (async () => {
    do {
      reloadAgain = false;
      await reload();
    } while (reloadAgain);
  })().finally(() => reloading = undefined);
}

/**
 * Run the reload handlers now, as SIGHUP does.
 *
 * @returns true when every handler succeeded
 */
export async function reload(): Promise<boolean> {
  tellSupervisor(notifyReloading);
  let ok = true;
  for (const handler of [...reloadHandlers]) {
    try {
      await handler();
    } catch (err) {
      ok = false;
      log.error(literal(`reload handler failed: ${message(err)}`));
    }
  }
  tellSupervisor(() => notifyReady());
  return ok;
}

/**
 * Stop this process as SIGTERM would: run the cleanup handlers (last
 * registered first) within the deadline, release every PID lock, exit. A
 * second call while shutting down does nothing more.
 *
 * @param code the exit status after a clean shutdown
 * @param reason what asked for it, for the log
 * @returns never; the process exits
 */
export async function shutdown(code = 0, reason = "shutdown requested"): Promise<never> {
  if (shuttingDown) return await new Promise<never>(() => {});
  shuttingDown = true;
  updateListeners(); // keep listening: a second signal must exit at once
  tellSupervisor(notifyStopping);
  const timeouts = shutdownHandlers.flatMap((e) => e.timeout === undefined ? [] : [e.timeout]);
  const timeout = timeouts.length > 0 ? Math.min(...timeouts) : DEFAULT_SHUTDOWN_TIMEOUT;
  log.info(literal(`${reason}: stopping (deadline ${timeout} ms)`));
  let clean = true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"deadline">((resolve) => {
    timer = setTimeout(() => resolve("deadline"), timeout);
  });
  const handlers = [...shutdownHandlers].reverse();
  for (const [i, { handler }] of handlers.entries()) {
    let outcome: unknown;
    try {
      outcome = await Promise.race([Promise.resolve().then(handler), deadline]);
    } catch (err) {
      clean = false;
      log.error(literal(`cleanup handler failed: ${message(err)}`));
      continue;
    }
    if (outcome === "deadline") {
      clean = false;
      const skipped = handlers.length - i - 1;
      log.error(literal(
        `shutdown deadline of ${timeout} ms passed: a cleanup handler is still running` +
          (skipped > 0 ? `, ${skipped} more skipped` : ""),
      ));
      break;
    }
  }
  clearTimeout(timer);
  releaseLocks();
  Deno.exit(clean ? code : 1);
}
