/**
 * Option values as an administrator writes them, parsed and bounded once for
 * the command line and the library alike: durations, whole numbers,
 * umasks, environment entries, signals, stop schedules and output targets.
 * Each parser throws {@link UsageError} naming the option and what is wrong,
 * before anything is created.
 *
 * This module stays light (no libc, no supervisor, no logging): the CLI
 * loads it for every command, `status` included.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { quote } from "../ffi/errors.ts";
import { parseSignal, SIGNALS, SIGRTMAX, SIGRTMIN } from "../ffi/signals.ts";
import { parseSchedule, type Schedule } from "../launch/schedule.ts";
import { durationMs, type DurationUnit, formatDuration } from "../launch/duration.ts";
import { FACILITIES, isFacility } from "../syslog/codes.ts";
import { DEFAULT_SYSLOG_FACILITY } from "../supervisor/defaults.ts";
import type { OutputTarget, RestartPolicy } from "../launch/spec.ts";

export type { OutputTarget, RestartPolicy };

export { formatDuration, parseSignal, quote, SIGNALS, SIGRTMAX, SIGRTMIN };

/**
 * The longest wait any option may ask for, in milliseconds: what one poll(2)
 * timeout can hold (a signed 32-bit count of milliseconds, about 24.8 days).
 */
export const MAX_WAIT_MS = 2_147_483_647;

/**
 * Check a wait given to the library in milliseconds (`readyTimeout`,
 * `guardTimeout`, a supervise duration): the command line's parsers bound
 * theirs; a program calling the library directly gets the same bound.
 *
 * @param ms the value
 * @param name the option's name, for the message
 * @returns the value
 * @throws {UsageError} when not a number from 0 to {@link MAX_WAIT_MS}
 */
export function checkWaitMs(ms: number, name: string): number {
  if (!(ms >= 0 && ms <= MAX_WAIT_MS)) {
    throw new UsageError(`bad ${name} ${ms}: expected milliseconds from 0 to ${MAX_WAIT_MS}`);
  }
  return ms;
}

function bad(option: string, text: string, expected: string): UsageError {
  return new UsageError(`bad ${option} ${quote(text)}: expected ${expected}`);
}

/** The bounds of one duration option (see {@link parseDuration}). */
export interface DurationBounds {
  /** 0 is refused. */
  readonly positive?: boolean;
  /** The unit of a bare number: seconds unless named. */
  readonly bare?: DurationUnit;
  /** The longest allowed, in milliseconds. @default {MAX_WAIT_MS} */
  readonly maxMs?: number;
}

/**
 * A duration option: `500ms`, `1.5s`, `2m`, `1h`, or a bare number (of
 * seconds unless `bounds.bare` says otherwise), the grammar of every
 * duration the command takes (see {@link durationMs}).
 *
 * @param text the value
 * @param option the option it came from, such as `--guard-timeout`
 * @param bounds whether 0 is allowed, the unit of a bare number, the longest
 * @returns milliseconds, at most `bounds.maxMs`
 * @throws {UsageError} when malformed, 0 where refused, or too long
 */
export function parseDuration(
  text: string,
  option: string,
  bounds: DurationBounds = {},
): number {
  const bare = bounds.bare ?? "s";
  const max = bounds.maxMs ?? MAX_WAIT_MS;
  const ms = durationMs(text, bare);
  if (ms === undefined) {
    throw bad(
      option,
      text,
      `a duration such as 500ms, 5s, 2m or 1h (a bare number is ${
        bare === "ms" ? "milliseconds" : "seconds"
      })`,
    );
  }
  if (ms > max) throw bad(option, text, `a duration of at most ${formatDuration(max)}`);
  if (bounds.positive && ms === 0) {
    throw new UsageError(`bad ${option} ${quote(text)}: must be more than 0`);
  }
  return ms;
}

/**
 * A whole number within bounds.
 *
 * @param text the value
 * @param option the option it came from
 * @param bounds the smallest and largest allowed
 * @returns the number
 * @throws {UsageError} when malformed or out of range
 */
export function parseInteger(
  text: string,
  option: string,
  bounds: { readonly min: number; readonly max: number },
): number {
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!(n >= bounds.min && n <= bounds.max)) {
    throw bad(option, text, `a whole number from ${bounds.min} to ${bounds.max}`);
  }
  return n;
}

/**
 * A umask: octal digits, `022` or `0o022`.
 *
 * @param text the value
 * @param option the option it came from
 * @returns its value
 * @throws {UsageError} when malformed or above 0777
 */
export function parseUmask(text: string, option = "--umask"): number {
  const m = /^(?:0o)?([0-7]{1,4})$/.exec(text);
  if (!m) throw bad(option, text, "octal digits, such as 022");
  const value = parseInt(m[1]!, 8);
  if (value > 0o777) throw new UsageError(`bad ${option} ${quote(text)}: at most 0777`);
  return value;
}

/**
 * One environment entry, `KEY=VALUE`.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the key and the value
 * @throws {UsageError} without a key before `=`
 */
export function parseEnvEntry(text: string, option = "--env"): [string, string] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw bad(option, text, "KEY=VALUE");
  return [text.slice(0, eq), text.slice(eq + 1)];
}

/** Every restart policy, in the order the help names them. */
export const RESTART_POLICIES: readonly RestartPolicy[] = ["on-failure", "always", "never"];

/**
 * A restart policy.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the policy
 * @throws {UsageError} for anything but on-failure, always or never
 */
export function parseRestartPolicy(text: string, option = "--restart"): RestartPolicy {
  if (!(RESTART_POLICIES as readonly string[]).includes(text)) {
    throw bad(option, text, "on-failure, always or never");
  }
  return text as RestartPolicy;
}

/**
 * The signal to send: a name (`TERM`, `SIGTERM`, `term`), a number, a
 * real-time signal (`RTMIN+1`, `SIGRTMIN+1`, `RTMAX-2`), or 0 to check that
 * the daemon runs and may be signalled without signalling it.
 *
 * @param text the value
 * @returns the signal number
 * @throws {UsageError} for anything else
 */
export function parseSignalArgument(text: string): number {
  if (text === "0") return 0;
  const signal = parseSignal(text);
  if (signal === undefined) throw new UsageError(`unknown signal ${quote(text)}`);
  return signal;
}

/**
 * A stop schedule (start-stop-daemon's `--retry` grammar), each wait bounded.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the schedule
 * @throws {UsageError} when malformed or a wait is too long
 */
export function parseStopSchedule(text: string, option = "--retry"): Schedule {
  const schedule = parseSchedule(text, option);
  for (const step of schedule.steps) {
    if ("waitMs" in step && !(step.waitMs <= MAX_WAIT_MS)) {
      throw new UsageError(
        `bad ${option === "--retry" ? "--retry schedule" : option} ${
          quote(text)
        }: a wait may be at most ${Math.floor(MAX_WAIT_MS / 1000)} seconds`,
      );
    }
  }
  return schedule;
}

/**
 * `--output`: `syslog`, `syslog:FACILITY` (the supervisor's default facility
 * when none is given), or a file.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the target
 * @throws {UsageError} for an empty path or an unknown facility
 */
export function parseOutput(text: string, option = "--output"): OutputTarget {
  if (text === "syslog" || text.startsWith("syslog:")) {
    const facility = text === "syslog"
      ? DEFAULT_SYSLOG_FACILITY
      : text.slice("syslog:".length).toLowerCase();
    if (!isFacility(facility)) {
      throw new UsageError(
        `bad ${option} ${quote(text)}: unknown syslog facility ${quote(facility)} (one of ${
          FACILITIES.join(", ")
        })`,
      );
    }
    return { kind: "syslog", facility };
  }
  if (text === "") throw new UsageError(`bad ${option} "": expected a file or syslog[:FACILITY]`);
  return { kind: "file", path: text };
}

/**
 * A path option that must not be empty.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the path
 * @throws {UsageError} when empty
 */
export function parsePath(text: string, option: string): string {
  if (text === "") throw new UsageError(`bad ${option} "": expected a path`);
  return text;
}

/**
 * A name option (a user, a log name) that must not be empty.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the name
 * @throws {UsageError} when empty
 */
export function parseName(text: string, option: string): string {
  if (text === "") throw new UsageError(`bad ${option} "": expected a name`);
  return text;
}

/**
 * A path made absolute (against the current directory) and normal: no `.`
 * or `..` parts, no repeated slashes; the file system is not consulted.
 *
 * @param path the path as given
 * @returns the absolute, normal path
 */
export function normalPath(path: string): string {
  const full = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts: string[] = [];
  for (const part of full.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

/**
 * A duration that must be more than 0 (a health check's interval and
 * timeout, a watchdog): {@link parseDuration}, then that bound.
 *
 * @param text the value
 * @param option the option it came from
 * @returns milliseconds, from 1 to {@link MAX_WAIT_MS}
 * @throws {UsageError} when malformed, 0 or too long
 */
export function parsePositiveDuration(text: string, option: string): number {
  const ms = parseDuration(text, option);
  if (ms === 0) throw new UsageError(`bad ${option} ${quote(text)}: must be more than 0`);
  return ms;
}

/**
 * A health check's shell command: any text `/bin/sh -c` runs, but blank.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the command
 * @throws {UsageError} when blank
 */
export function parseHealthCommand(text: string, option: string): string {
  if (typeof text !== "string" || text.trim() === "") {
    throw new UsageError(`bad ${option} ${quote(String(text))}: expected a shell command`);
  }
  return text;
}

/** A host and a TCP port. */
export interface HostPort {
  /** A name or an address (an IPv6 address without its brackets). */
  readonly host: string;
  /** From 1 to 65535. */
  readonly port: number;
}

/** Where the port of a URL's authority is, for a message about it before URL's own. */
const URL_PORT = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/?#]*@)?(?:\[[^\]/?#]*\]|[^:/?#]*):([0-9]+)/i;

/**
 * An HTTP health check's URL: `http://` or `https://`, a host, a port (when
 * given) from 1 to 65535, and no user or password (the launch spec, which
 * holds no secret, is recorded beside the pid file).
 *
 * @param text the value
 * @param option the option it came from
 * @returns the URL, normalized
 * @throws {UsageError} for another scheme, a bad port, credentials, or no URL
 */
export function parseHealthUrl(text: string, option: string): string {
  const port = URL_PORT.exec(text)?.[1];
  if (port !== undefined && !(Number(port) >= 1 && Number(port) <= 65535)) {
    throw bad(option, text, "a URL whose port is from 1 to 65535");
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad(option, text, "an http:// or https:// URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw bad(option, text, "an http:// or https:// URL");
  }
  if (url.hostname === "") throw bad(option, text, "a URL with a host");
  if (url.username !== "" || url.password !== "") {
    throw new UsageError(
      `bad ${option} ${quote(text)}: a user or password in the URL is not supported`,
    );
  }
  return url.href;
}

/**
 * `HOST:PORT` (an IPv6 address in brackets: `[::1]:8080`), the port from 1
 * to 65535.
 *
 * @param text the value
 * @param option the option it came from
 * @returns the host and the port
 * @throws {UsageError} when malformed or the port is out of range
 */
export function parseHostPort(text: string, option: string): HostPort {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s/]+)):([0-9]{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw bad(option, text, "HOST:PORT with a port from 1 to 65535");
  }
  return { host: m[1] ?? m[2]!, port };
}
