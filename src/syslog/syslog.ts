/**
 * The system log through libc's `openlog`, `syslog`, `closelog` and
 * `setlogmask` (APUE section 13.4), with the C constant names, and a sink for
 * LogTape. A message is always passed as `syslog(pri, "%s", message)`: a `%`
 * in the text is printed, never interpreted.
 *
 * @example Log to the system log as a daemon does
 * ```ts
 * import { closeLog, LOG_DAEMON, LOG_INFO, LOG_PID, log, openLog } from "./syslog.ts";
 *
 * openLog("my-service", { facility: LOG_DAEMON, options: LOG_PID });
 * log(LOG_INFO, "listening on port 8080 (100% ready)");
 * closeLog();
 * ```
 *
 * @module
 */

import { cstr, libc, quote, strerror, SystemError } from "../ffi/mod.ts";

// openlog() options (Figure 13.3).
/** Log the process id with each message. */
export const LOG_PID = 0x01;
/** Write to the console when the system log cannot be reached. */
export const LOG_CONS = 0x02;
/** Open the connection to the system log at the first message (the default). */
export const LOG_ODELAY = 0x04;
/** Open the connection to the system log at once, in `openLog`. */
export const LOG_NDELAY = 0x08;
/** Do not wait for children created while logging (no effect on Linux). */
export const LOG_NOWAIT = 0x10;
/** Also write each message to standard error. */
export const LOG_PERROR = 0x20;

// Facilities (Figure 13.4): the code shifted left by 3, as in <syslog.h>.
/** Kernel messages. */
export const LOG_KERN = 0 << 3;
/** Messages from user processes (the default facility). */
export const LOG_USER = 1 << 3;
/** The mail system. */
export const LOG_MAIL = 2 << 3;
/** System daemons. */
export const LOG_DAEMON = 3 << 3;
/** Authorization programs: login, su, getty. */
export const LOG_AUTH = 4 << 3;
/** The syslog daemon itself. */
export const LOG_SYSLOG = 5 << 3;
/** The line printer system. */
export const LOG_LPR = 6 << 3;
/** Network news. */
export const LOG_NEWS = 7 << 3;
/** The UUCP system. */
export const LOG_UUCP = 8 << 3;
/** cron and at. */
export const LOG_CRON = 9 << 3;
/** Like LOG_AUTH, logged to a file with restricted permissions. */
export const LOG_AUTHPRIV = 10 << 3;
/** The FTP daemon. */
export const LOG_FTP = 11 << 3;
/** Reserved for local use. */
export const LOG_LOCAL0 = 16 << 3;
/** Reserved for local use. */
export const LOG_LOCAL1 = 17 << 3;
/** Reserved for local use. */
export const LOG_LOCAL2 = 18 << 3;
/** Reserved for local use. */
export const LOG_LOCAL3 = 19 << 3;
/** Reserved for local use. */
export const LOG_LOCAL4 = 20 << 3;
/** Reserved for local use. */
export const LOG_LOCAL5 = 21 << 3;
/** Reserved for local use. */
export const LOG_LOCAL6 = 22 << 3;
/** Reserved for local use. */
export const LOG_LOCAL7 = 23 << 3;

// Levels (Figure 13.5), highest priority first.
/** The system is unusable. */
export const LOG_EMERG = 0;
/** Action must be taken immediately. */
export const LOG_ALERT = 1;
/** Critical condition (hard device error). */
export const LOG_CRIT = 2;
/** Error condition. */
export const LOG_ERR = 3;
/** Warning condition. */
export const LOG_WARNING = 4;
/** Normal but significant condition. */
export const LOG_NOTICE = 5;
/** Informational message. */
export const LOG_INFO = 6;
/** Debug message. */
export const LOG_DEBUG = 7;

/** A syslog level by its short name, as `logger -p` spells it. */
export type SyslogLevelName =
  | "emerg"
  | "alert"
  | "crit"
  | "err"
  | "warning"
  | "notice"
  | "info"
  | "debug";

const LEVEL_NAMES: Readonly<Record<SyslogLevelName, number>> = {
  emerg: LOG_EMERG,
  alert: LOG_ALERT,
  crit: LOG_CRIT,
  err: LOG_ERR,
  warning: LOG_WARNING,
  notice: LOG_NOTICE,
  info: LOG_INFO,
  debug: LOG_DEBUG,
};

/**
 * The mask bit of one level, for {@link setLogMask} (C `LOG_MASK`).
 *
 * @param level a level such as {@link LOG_ERR}
 * @returns `1 << level`
 * @example
 * ```ts
 * import { LOG_ERR, LOG_MASK } from "./syslog.ts";
 * console.log(LOG_MASK(LOG_ERR)); // 8
 * ```
 */
export function LOG_MASK(level: number): number {
  return 1 << (level & 7);
}

/**
 * The mask of every level up to and including one, for {@link setLogMask}
 * (C `LOG_UPTO`).
 *
 * @param level the lowest priority to keep, such as {@link LOG_INFO}
 * @returns the mask
 * @example
 * ```ts
 * import { LOG_INFO, LOG_UPTO } from "./syslog.ts";
 * console.log(LOG_UPTO(LOG_INFO)); // 127: every level but LOG_DEBUG
 * ```
 */
export function LOG_UPTO(level: number): number {
  return (1 << ((level & 7) + 1)) - 1;
}

/** Options of {@link openLog}. */
export interface OpenLogOptions {
  /**
   * The default facility of messages that name none.
   * @default {LOG_USER}
   */
  readonly facility?: number;
  /**
   * `LOG_PID`, `LOG_CONS`, `LOG_NDELAY`, `LOG_PERROR`, ... or'ed together.
   * @default {LOG_PID}
   */
  readonly options?: number;
}

/** The ident buffer: glibc keeps the pointer, so it lives until closeLog. */
let identBuffer: Uint8Array<ArrayBuffer> | undefined;
let opened = false;

function checkInt(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a non-negative integer, got ${value}`);
  }
  return value;
}

/**
 * Open the connection to the system log (C `openlog`). Optional: {@link log}
 * works without it, with the program's name as ident. Calling it again
 * replaces the ident, options and facility.
 *
 * @param ident the name put in front of each message, usually the program's
 * @param options the default facility and the `LOG_*` options
 * @throws {TypeError} when the ident holds a NUL byte
 * @throws {RangeError} when the facility or options are not integers
 * @example
 * ```ts
 * import { closeLog, LOG_LOCAL0, LOG_PID, openLog } from "./syslog.ts";
 * openLog("example", { facility: LOG_LOCAL0, options: LOG_PID });
 * closeLog();
 * ```
 */
export function openLog(ident: string, options: OpenLogOptions = {}): void {
  const buffer = cstr(ident, "syslog ident");
  const flags = checkInt(options.options ?? LOG_PID, "syslog options");
  const facility = checkInt(options.facility ?? LOG_USER, "syslog facility");
  libc().openlog(buffer, flags, facility);
  identBuffer = buffer; // the old buffer is no longer referenced by libc
  opened = true;
}

const FORMAT = cstr("%s");

function priorityOf(level: number | SyslogLevelName): number {
  if (typeof level === "string") {
    const found = LEVEL_NAMES[level];
    if (found === undefined) throw new RangeError(`unknown syslog level: ${quote(level)}`);
    return found;
  }
  return checkInt(level, "syslog priority");
}

/**
 * Send one message to the system log (C `syslog(priority, "%s", message)`).
 * `%` characters in the message are kept as they are.
 *
 * @param level a level (`LOG_ERR`), a level or'ed with a facility
 *   (`LOG_ERR | LOG_LOCAL0`), or a level name (`"err"`)
 * @param message the text; a NUL byte is replaced by U+FFFD
 * @throws {RangeError} for an unknown level
 * @example
 * ```ts
 * import { LOG_NOTICE, log } from "./syslog.ts";
 * log(LOG_NOTICE, "disk 93% full");
 * log("info", "reloaded");
 * ```
 */
export function log(level: number | SyslogLevelName, message: string): void {
  const pri = priorityOf(level);
  libc().syslog(pri, FORMAT, cstr(message.replaceAll("\0", "\uFFFD"), "syslog message"));
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
  libc().closelog();
  identBuffer = undefined;
  opened = false;
}

/**
 * Choose which levels reach the system log (C `setlogmask`). A mask of 0
 * changes nothing, as in C.
 *
 * @param mask bits from {@link LOG_MASK} or {@link LOG_UPTO}
 * @returns the previous mask
 * @example
 * ```ts
 * import { LOG_UPTO, LOG_WARNING, setLogMask } from "./syslog.ts";
 * const previous = setLogMask(LOG_UPTO(LOG_WARNING));
 * setLogMask(previous);
 * ```
 */
export function setLogMask(mask: number): number {
  return libc().setlogmask(checkInt(mask, "syslog mask"));
}

/**
 * Whether {@link openLog} was called and {@link closeLog} not since: the
 * module's own diagnostics (a failed cleanup handler, a resource warning) go
 * to the system log then, else to standard error.
 *
 * @returns true while the log is open
 * @example
 * ```ts
 * import { isLogOpen } from "./syslog.ts";
 * console.log(isLogOpen()); // false
 * ```
 */
export function isLogOpen(): boolean {
  return opened && identBuffer !== undefined;
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

/**
 * Send a diagnostic from this module to the system log when it is open, or to
 * standard error otherwise.
 *
 * @param level the syslog level
 * @param message the text
 */
export function report(level: number, message: string): void {
  if (isLogOpen()) log(level, message);
  else console.error(message);
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
const LOGTAPE_LEVELS: Readonly<Record<LogTapeLevel, number>> = {
  trace: LOG_DEBUG,
  debug: LOG_DEBUG,
  info: LOG_INFO,
  warning: LOG_WARNING,
  error: LOG_ERR,
  fatal: LOG_CRIT,
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
   * @default {LOG_USER} or the one given to openLog
   */
  readonly facility?: number;
  /**
   * openlog options, used with `ident`.
   * @default {LOG_PID}
   */
  readonly options?: number;
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
 * level of its LogTape level (trace and debug: LOG_DEBUG, info: LOG_INFO,
 * warning: LOG_WARNING, error: LOG_ERR, fatal: LOG_CRIT). Use it with
 * `configure()`; disposing it closes the log it opened.
 *
 * @param options the ident, facility and openlog options
 * @returns the sink, disposable
 * @throws {TypeError} when the ident holds a NUL byte
 * @example
 * ```ts
 * import { configure, getLogger, reset } from "@logtape/logtape";
 * import { getSyslogSink, LOG_LOCAL1 } from "./syslog.ts";
 *
 * await configure({
 *   sinks: { syslog: getSyslogSink({ ident: "my-service", facility: LOG_LOCAL1 }) },
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
  const facility = options.facility === undefined
    ? 0
    : checkInt(options.facility, "syslog facility");
  let owns = false;
  if (options.ident !== undefined) {
    openLog(options.ident, {
      ...(options.facility === undefined ? {} : { facility: options.facility }),
      ...(options.options === undefined ? {} : { options: options.options }),
    });
    owns = true;
  }
  const sink = (record: SyslogRecord): void => {
    log(LOGTAPE_LEVELS[record.level] | facility, renderRecord(record));
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
