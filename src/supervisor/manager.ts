/**
 * The service manager above a supervisor (systemd's `Type=notify`, or
 * anything that speaks sd_notify on a `NOTIFY_SOCKET`): the supervisor tells
 * it that COMMAND is ready (`READY=1`), how it goes (`STATUS=` on restarts
 * and health changes) and that it stops (`STOPPING=1`); and when the manager
 * keeps a watchdog on the supervisor (`WATCHDOG_USEC`), it is pinged
 * (`WATCHDOG=1`, at half the period) for as long as the supervisor's own loop
 * runs. That watchdog is the supervisor's liveness, not COMMAND's: the
 * supervisor restarts an unhealthy COMMAND itself, and the manager must not
 * kill the whole unit first.
 *
 * @module
 */

import { type OuterManager, sendNotify } from "../launch/readiness.ts";

/** What a supervisor is told of its manager, and who announces readiness. */
export interface ManagerOrders extends OuterManager {
  /**
   * The supervisor sends `READY=1` itself (`run --supervise`: it is the
   * manager's main process); false when `start` announces it, with the
   * supervisor's pid as `MAINPID=`, once the supervisor said COMMAND is ready.
   */
  readonly sendsReady: boolean;
}

/** The supervisor's link to its manager. */
export class ManagerLink {
  readonly #orders: ManagerOrders;
  readonly #warn: (message: string) => void;
  #pingAt: number;
  /**
   * Whether the manager hears the supervisor: at once when the supervisor
   * announces readiness itself; under `start`, only once COMMAND was ready
   * and `start` sent `MAINPID=`: until then the manager refuses its messages
   * (systemd's `NotifyAccess=main`).
   */
  #speaking: boolean;
  #warned = false;
  #stopping = false;

  /**
   * @param orders the manager's socket and watchdog
   * @param warn says a failed send, once
   */
  constructor(orders: ManagerOrders, warn: (message: string) => void) {
    this.#orders = orders;
    this.#warn = warn;
    this.#speaking = orders.sendsReady;
    this.#pingAt = orders.watchdogMs === undefined || !orders.sendsReady
      ? Infinity
      : performance.now();
  }

  /**
   * COMMAND is ready: the first time, `READY=1` (when the supervisor
   * announces it, else nothing: `start` does), and a status line each time.
   *
   * @param first whether it is the first run to be ready
   * @param status what to show
   */
  ready(first: boolean, status: string): void {
    const ms = this.#orders.watchdogMs;
    if (first && !this.#orders.sendsReady) {
      // `start` announces this one; the supervisor speaks from then on, pinging from half a
      // period later (by when `start` has sent MAINPID=).
      this.#speaking = true;
      if (ms !== undefined) this.#pingAt = performance.now() + ms / 2;
      return;
    }
    this.#send(`${first ? "READY=1\n" : ""}${statusLine(status)}`);
  }

  /**
   * A status line (`systemctl status` shows it).
   *
   * @param text what to show
   */
  status(text: string): void {
    this.#send(statusLine(text));
  }

  /**
   * The supervisor stops (once).
   *
   * @param text what to show
   */
  stopping(text: string): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#send(`STOPPING=1\n${statusLine(text)}`);
  }

  /** @returns when the next watchdog ping is due (`performance.now()` time), or Infinity */
  deadline(): number {
    return this.#pingAt;
  }

  /**
   * Ping the manager's watchdog when it is due.
   *
   * @param now `performance.now()`
   */
  tick(now: number): void {
    const ms = this.#orders.watchdogMs;
    if (ms === undefined || now < this.#pingAt) return;
    this.#pingAt = now + ms / 2;
    this.#send("WATCHDOG=1");
  }

  #send(state: string): void {
    if (!this.#speaking) return;
    try {
      sendNotify(this.#orders.socket, state);
    } catch (err) {
      if (this.#warned) return;
      this.#warned = true;
      this.#warn(`cannot notify the service manager: ${(err as Error).message}`);
    }
  }
}

function statusLine(text: string): string {
  return `STATUS=${text.replaceAll("\n", " ")}`;
}
