/**
 * The system log through libc's `openlog`, `syslog`, `closelog` and
 * `setlogmask` (APUE section 13.4), with facilities and levels named as
 * syslog.conf names them (`"daemon"`, `"local0"`, `"err"`), and a sink for
 * LogTape. A `%` in a message is printed, never interpreted.
 *
 * @example Log to the system log as a daemon does
 * ```ts
 * import { closeLog, log, openLog } from "./syslog.ts";
 *
 * openLog("my-service", { facility: "daemon" });
 * log("info", "listening on port 8080 (100% ready)");
 * closeLog();
 * ```
 *
 * @module
 */

import { closelog, openlog, setlogmask, strerror, syslog, SystemError } from "../ffi/mod.ts";
import {
  isFacility,
  isLevel,
  LEVEL_CODES,
  LEVELS,
  priority,
  type SyslogFacility,
  type SyslogLevel,
} from "./codes.ts";

export type { SyslogFacility, SyslogLevel } from "./codes.ts";

// openlog() options, as in <syslog.h>.
const LOG_PID = 0x01;
const LOG_CONS = 0x02;
const LOG_NDELAY = 0x08;
const LOG_PERROR = 0x20;

/** Options of {@link openLog}. */
export interface OpenLogOptions {
  /**
   * The facility of messages that name none.
   * @default {"user"}
   */
  readonly facility?: SyslogFacility;
  /**
   * Put the process id in each message.
   * @default {true}
   */
  readonly pid?: boolean;
  /** Connect to the system log at once instead of at the first message. */
  readonly noDelay?: boolean;
  /** Write to the console when the system log cannot be reached. */
  readonly console?: boolean;
  /** Also write each message to standard error. */
  readonly stderr?: boolean;
}

function checkFacility(facility: string): SyslogFacility {
  if (!isFacility(facility)) {
    throw new RangeError(`unknown syslog facility: ${JSON.stringify(facility)}`);
  }
  return facility;
}

function checkLevel(level: string): SyslogLevel {
  if (!isLevel(level)) throw new RangeError(`unknown syslog level: ${JSON.stringify(level)}`);
  return level;
}

/**
 * Open the connection to the system log (C `openlog`). Optional: {@link log}
 * works without it, with the program's name as ident. Calling it again
 * replaces the ident, options and facility.
 *
 * @param ident the name put in front of each message, usually the program's
 * @param options the default facility and how to connect
 * @throws {TypeError} when the ident holds a NUL byte
 * @throws {RangeError} for an unknown facility
 * @example
 * ```ts
 * import { closeLog, openLog } from "./syslog.ts";
 * openLog("example", { facility: "local0" });
 * closeLog();
 * ```
 */
export function openLog(ident: string, options: OpenLogOptions = {}): void {
  const facility = checkFacility(options.facility ?? "user");
  const flags = (options.pid ?? true ? LOG_PID : 0) | (options.noDelay ? LOG_NDELAY : 0) |
    (options.console ? LOG_CONS : 0) | (options.stderr ? LOG_PERROR : 0);
  openlog(ident, flags, priority("emerg", facility));
}

/**
 * Send one message to the system log (C `syslog(priority, "%s", message)`).
 * `%` characters in the message are kept as they are.
 *
 * @param level the level, such as `"err"` or `"info"`
 * @param message the text; a NUL byte is replaced by U+FFFD
 * @param facility the facility; absent: the one given to {@link openLog}
 * @throws {RangeError} for an unknown level or facility
 * @example
 * ```ts
 * import { log } from "./syslog.ts";
 * log("notice", "disk 93% full");
 * log("err", "backup failed", "local0");
 * ```
 */
export function log(level: SyslogLevel, message: string, facility?: SyslogFacility): void {
  checkLevel(level);
  if (facility !== undefined) checkFacility(facility);
  syslog(priority(level, facility), message);
}

/**
 * Close the connection to the system log (C `closelog`) and free the ident.
 * Idempotent.
 *
 * @example
 * ```ts
 * import { closeLog } from "./syslog.ts";
 * closeLog();
 * ```
 */
export function closeLog(): void {
  closelog();
}

/**
 * Choose which levels reach the system log (C `setlogmask`): a level keeps
 * it and every more severe one (C `LOG_UPTO`), a list keeps exactly those
 * (C `LOG_MASK` of each).
 *
 * @param keep the least severe level to keep, or the levels to keep
 * @returns the levels kept before, to restore them later
 * @throws {RangeError} for an unknown level or an empty list (C would
 *   ignore a mask of 0)
 * @example
 * ```ts
 * import { setLogMask } from "./syslog.ts";
 * const previous = setLogMask("warning");
 * setLogMask(previous);
 * ```
 */
export function setLogMask(keep: SyslogLevel | readonly SyslogLevel[]): SyslogLevel[] {
  const levels = typeof keep === "string"
    ? LEVELS.slice(0, LEVEL_CODES[checkLevel(keep)] + 1)
    : keep.map(checkLevel);
  if (levels.length === 0) throw new RangeError("setLogMask() needs at least one level");
  const mask = levels.reduce((m, level) => m | (1 << LEVEL_CODES[level]), 0);
  const before = setlogmask(mask);
  return LEVELS.filter((level) => (before & (1 << LEVEL_CODES[level])) !== 0);
}

/**
 * The text of an errno value, as `%m` prints it in a C `syslog` format.
 *
 * @param err an errno number, or an error carrying one (a {@link SystemError})
 * @returns the C library's text, such as "No such file or directory"; for an
 *   error without an errno, its message
 * @example
 * ```ts
 * import { errnoText } from "./syslog.ts";
 * console.log(errnoText(2)); // No such file or directory
 * ```
 */
export function errnoText(err: number | SystemError | unknown): string {
  if (typeof err === "number") return strerror(err);
  if (err instanceof SystemError) return strerror(err.errno);
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The LogTape levels (`LogLevel` of `@logtape/logtape`). */
export type LogTapeLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";

/**
 * The fields of a LogTape `LogRecord` the sink reads; every LogTape record
 * has them, so a {@link SyslogSink} is a LogTape `Sink`.
 */
export interface SyslogRecord {
  /** The logger's category, such as `["app", "db"]`. */
  readonly category: readonly string[];
  /** The record's level. */
  readonly level: LogTapeLevel;
  /** Text parts at even indexes, values at odd ones. */
  readonly message: readonly unknown[];
}

/** A LogTape sink (usable wherever `Sink` is) that closes its log when disposed. */
export type SyslogSink = ((record: SyslogRecord) => void) & Disposable;

/** LogTape levels to syslog levels. */
const LOGTAPE_LEVELS: Readonly<Record<LogTapeLevel, SyslogLevel>> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warning",
  error: "err",
  fatal: "crit",
};

/** Options of {@link getSyslogSink}. */
export interface SyslogSinkOptions {
  /**
   * Open the log with this ident when the sink is made (and close it when
   * the sink is disposed). Without it, an earlier {@link openLog} or the
   * program's name is used.
   */
  readonly ident?: string;
  /**
   * The facility of every record.
   * @default {"user"} or the one given to openLog
   */
  readonly facility?: SyslogFacility;
  /**
   * Put the process id in each message (used with `ident`).
   * @default {true}
   */
  readonly pid?: boolean;
}

function renderValue(value: unknown): string {
  if (typeof value === "string") return value;
  return Deno.inspect(value, { colors: false, compact: true, breakLength: Infinity });
}

/**
 * Render a LogTape record as one syslog line: the category, then the message
 * with its values filled in.
 *
 * @param record the record
 * @returns the line
 */
export function renderRecord(record: SyslogRecord): string {
  const text = record.message.map((part, i) => i % 2 === 0 ? String(part) : renderValue(part))
    .join("");
  const category = record.category.join(".");
  return category === "" ? text : `${category}: ${text}`;
}

/**
 * A LogTape sink that writes each record to the system log, at the syslog
 * level of its LogTape level (trace and debug: debug, info: info, warning:
 * warning, error: err, fatal: crit). Use it with `configure()`; disposing it
 * closes the log it opened.
 *
 * @param options the ident, facility and whether to log the pid
 * @returns the sink, disposable
 * @throws {TypeError} when the ident holds a NUL byte
 * @throws {RangeError} for an unknown facility
 * @example
 * ```ts
 * import { configure, getLogger, reset } from "@logtape/logtape";
 * import { getSyslogSink } from "./syslog.ts";
 *
 * await configure({
 *   sinks: { syslog: getSyslogSink({ ident: "my-service", facility: "local1" }) },
 *   loggers: [
 *     { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
 *     { category: "app", lowestLevel: "info", sinks: ["syslog"] },
 *   ],
 * });
 * getLogger("app").info("started with {workers} workers", { workers: 4 });
 * await reset();
 * ```
 */
export function getSyslogSink(options: SyslogSinkOptions = {}): SyslogSink {
  const facility = options.facility === undefined ? undefined : checkFacility(options.facility);
  let owns = false;
  if (options.ident !== undefined) {
    openLog(options.ident, {
      ...(facility === undefined ? {} : { facility }),
      ...(options.pid === undefined ? {} : { pid: options.pid }),
    });
    owns = true;
  }
  const sink = (record: SyslogRecord): void => {
    syslog(priority(LOGTAPE_LEVELS[record.level], facility), renderRecord(record));
  };
  return Object.assign(sink, {
    [Symbol.dispose](): void {
      if (owns) {
        owns = false;
        closeLog();
      }
    },
  });
}
