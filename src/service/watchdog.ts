/**
 * Watch this process for leaks: resident memory from
 * `/proc/self/status` (`VmRSS`) and the number of open descriptors in
 * `/proc/self/fd`, with a warning when a limit is crossed or when either
 * grows steadily. Also the descriptor helpers of APUE Figure 13.9.
 *
 * @example
 * ```ts
 * import { openFdCount, rssKiB } from "./watchdog.ts";
 * console.log(`${rssKiB()} KiB resident, ${openFdCount()} descriptors open`);
 * ```
 *
 * @module
 */

import { ERRNO, getCloexec, listDirectory, readLink, setCloexec, SystemError } from "../ffi/mod.ts";
import { vmRssKiB } from "../ffi/proc.ts";
import { literal, logger } from "../log.ts";

const log = logger("watchdog");

/**
 * This process's resident set size (`VmRSS` in /proc/self/status).
 *
 * @returns kibibytes
 * @throws {Error} when /proc is not mounted or has no `VmRSS` line
 * @example
 * ```ts
 * import { rssKiB } from "./watchdog.ts";
 * console.log(rssKiB() > 0); // true
 * ```
 */
export function rssKiB(): number {
  const kib = vmRssKiB("self");
  if (!kib) throw new Error("cannot read VmRSS from /proc/self/status");
  return kib;
}

/** One open descriptor, as {@link listOpenFds} reports it. */
export interface OpenFd {
  /** The descriptor number. */
  readonly fd: number;
  /** What it refers to: a path, `socket:[inode]`, `pipe:[inode]`, `anon_inode:...`. */
  readonly target: string;
  /** Whether it is closed on exec (not inherited by a program this process runs). */
  readonly closeOnExec: boolean;
}

/** The descriptors open now: listed, then checked, so the listing's own is left out. */
function openFds(): number[] {
  const listed: number[] = [];
  for (const name of listDirectory("/proc/self/fd")) listed.push(Number(name));
  return listed.filter((fd) => {
    try {
      getCloexec(fd);
      return true;
    } catch {
      return false;
    }
  }).sort((a, b) => a - b);
}

/**
 * How many descriptors this process has open (entries of /proc/self/fd,
 * without the one used to read it).
 *
 * @returns the count
 * @throws {Error} when /proc is not mounted
 * @example
 * ```ts
 * import { openFdCount } from "./watchdog.ts";
 * console.log(openFdCount() >= 3); // stdin, stdout, stderr at least
 * ```
 */
export function openFdCount(): number {
  return openFds().length;
}

/**
 * Every descriptor open in this process, with what it refers to and its
 * close-on-exec flag: what to look at when {@link watchResources} reports a
 * descriptor leak.
 *
 * @returns the descriptors, lowest first
 * @throws {Error} when /proc is not mounted
 * @example
 * ```ts
 * import { listOpenFds } from "./watchdog.ts";
 * for (const { fd, target, closeOnExec } of listOpenFds()) {
 *   console.log(fd, target, closeOnExec ? "cloexec" : "inherited by children");
 * }
 * ```
 */
export function listOpenFds(): OpenFd[] {
  const out: OpenFd[] = [];
  for (const fd of openFds()) {
    let target: string;
    let closeOnExec: boolean;
    try {
      target = readLink(`/proc/self/fd/${fd}`);
      closeOnExec = getCloexec(fd);
    } catch {
      continue; // closed meanwhile
    }
    out.push({ fd, target, closeOnExec });
  }
  return out;
}

/**
 * Set or clear the close-on-exec flag of a descriptor (APUE Figure 13.9,
 * `set_cloexec`), so a program this process starts does not inherit it.
 *
 * @param fd the descriptor
 * @param on true to close it on exec, false to let children inherit it
 * @throws {SystemError} EBADF when the descriptor is not open
 * @example
 * ```ts
 * import { setCloseOnExec } from "./watchdog.ts";
 * setCloseOnExec(0); // stdin is not passed to programs started from now on
 * setCloseOnExec(0, false); // and back
 * ```
 */
export function setCloseOnExec(fd: number, on = true): void {
  if (!Number.isSafeInteger(fd) || fd < 0) {
    throw new SystemError("fcntl(F_SETFD)", ERRNO.EBADF, {
      path: `fd ${fd}`,
      message: `not a descriptor: ${fd}`,
    });
  }
  setCloexec(fd, on);
}

/** What {@link watchResources} tells `onWarn`. */
export interface ResourceWarning {
  /** Which resource: resident memory or open descriptors. */
  readonly resource: "rss" | "fds";
  /** A limit was crossed, or the value grew at every one of the last samples. */
  readonly reason: "limit" | "growth";
  /** The value now (KiB for rss, a count for fds). */
  readonly value: number;
  /** The limit, for a `limit` warning. */
  readonly limit?: number;
  /** The samples that showed the growth, oldest first, for a `growth` warning. */
  readonly samples?: readonly number[];
  /** One line for a log. */
  readonly message: string;
}

/** Options of {@link watchResources}. */
export interface WatchOptions {
  /**
   * Milliseconds between samples.
   * @default {60000}
   */
  readonly interval?: number;
  /** Warn when the resident set exceeds this many KiB. */
  readonly maxRssKiB?: number;
  /** Warn when more descriptors than this are open. */
  readonly maxFds?: number;
  /**
   * Warn when a value grew at each of this many consecutive samples (0
   * turns the growth check off).
   * @default {10}
   */
  readonly samples?: number;
  /**
   * Receives each warning.
   * @default {} a warning to the `["singleton-run", "watchdog"]` LogTape logger
   */
  readonly onWarn?: (warning: ResourceWarning) => void;
}

/** The last reading of a running watch. */
export interface ResourceSample {
  /** Resident set, KiB. */
  readonly rssKiB: number;
  /** Open descriptors. */
  readonly fds: number;
}

/** A running resource watch; dispose it (or call `stop()`) to end it. */
export interface ResourceWatch extends Disposable {
  /** Take a sample now (also checks limits and growth). */
  sample(): ResourceSample;
  /** Stop sampling. Idempotent. */
  stop(): void;
}

/** Tracks one value: a limit crossed once per excursion, growth once per run. */
class Tracker {
  readonly #history: number[] = [];
  #over = false;

  constructor(
    readonly resource: "rss" | "fds",
    readonly limit: number | undefined,
    readonly window: number,
  ) {}

  update(value: number): ResourceWarning[] {
    const out: ResourceWarning[] = [];
    const unit = this.resource === "rss" ? " KiB resident" : " descriptors open";
    if (this.limit !== undefined) {
      const over = value > this.limit;
      if (over && !this.#over) {
        out.push({
          resource: this.resource,
          reason: "limit",
          value,
          limit: this.limit,
          message: `${this.resource} warning: ${value}${unit}, above the limit of ${this.limit}` +
            " (possible leak)",
        });
      }
      this.#over = over;
    }
    if (this.window > 0) {
      const h = this.#history;
      if (h.length > 0 && value <= h[h.length - 1]!) h.length = 0;
      h.push(value);
      if (h.length > this.window) {
        const samples = [...h];
        out.push({
          resource: this.resource,
          reason: "growth",
          value,
          samples,
          message: `${this.resource} warning: grew at each of the last ${this.window} samples, ` +
            `${samples[0]} to ${value}${unit} (possible leak)`,
        });
        h.splice(0, h.length - 1); // warn again only after another full run of growth
      }
    }
    return out;
  }
}

function positive(value: number | undefined, what: string, integer = true): void {
  if (value === undefined) return;
  if (!(value >= 0) || (integer && !Number.isInteger(value))) {
    throw new RangeError(`${what} must be a non-negative ${integer ? "integer" : "number"}`);
  }
}

/**
 * Sample this process's resident memory and open descriptors every
 * `interval` ms; warn when one goes above its limit (once per excursion) or
 * grows at each of `samples` consecutive samples. The timer never keeps the
 * program alive.
 *
 * @param options the interval, limits, growth window and warning callback
 * @returns the running watch, disposable
 * @throws {RangeError} for a negative or fractional limit or sample count,
 *   or an interval under 10 ms
 * @example
 * ```ts
 * import { watchResources } from "./watchdog.ts";
 * using watch = watchResources({
 *   interval: 60_000,
 *   maxRssKiB: 512 * 1024,
 *   maxFds: 900,
 *   onWarn: (w) => console.warn(w.message),
 * });
 * console.log(watch.sample().fds > 0); // true
 * ```
 */
export function watchResources(options: WatchOptions = {}): ResourceWatch {
  const interval = options.interval ?? 60_000;
  if (!(interval >= 10)) throw new RangeError("interval must be at least 10 ms");
  positive(options.maxRssKiB, "maxRssKiB", false);
  positive(options.maxFds, "maxFds");
  positive(options.samples, "samples");
  const window = options.samples ?? 10;
  const onWarn = options.onWarn ?? ((w: ResourceWarning) => log.warn(literal(w.message)));
  const rss = new Tracker("rss", options.maxRssKiB, window);
  const fds = new Tracker("fds", options.maxFds, window);
  let timer: ReturnType<typeof setInterval> | undefined;

  const sample = (): ResourceSample => {
    const now = { rssKiB: rssKiB(), fds: openFdCount() };
    for (const w of [...rss.update(now.rssKiB), ...fds.update(now.fds)]) {
      try {
        onWarn(w);
      } catch (err) {
        log.error(literal(
          `resource watch: onWarn failed: ${err instanceof Error ? err.message : err}`,
        ));
      }
    }
    return now;
  };
  const stop = (): void => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };
  const running = setInterval(() => {
    try {
      sample();
    } catch (err) {
      stop();
      log.error(literal(`resource watch stopped: ${err instanceof Error ? err.message : err}`));
    }
  }, interval);
  Deno.unrefTimer(running);
  timer = running;
  return { sample, stop, [Symbol.dispose]: stop };
}
