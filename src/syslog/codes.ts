/**
 * The one table of syslog facilities and levels: names as `logger -p` and
 * syslog.conf spell them, numbers as `<syslog.h>` defines them. Imports
 * nothing, so the supervisor can use it without loading libc's syslog.
 *
 * @module
 */

/** A syslog facility, by name. */
export type SyslogFacility =
  | "kern"
  | "user"
  | "mail"
  | "daemon"
  | "auth"
  | "syslog"
  | "lpr"
  | "news"
  | "uucp"
  | "cron"
  | "authpriv"
  | "ftp"
  | "local0"
  | "local1"
  | "local2"
  | "local3"
  | "local4"
  | "local5"
  | "local6"
  | "local7";

/** A syslog level, by name, most severe first. */
export type SyslogLevel =
  | "emerg"
  | "alert"
  | "crit"
  | "err"
  | "warning"
  | "notice"
  | "info"
  | "debug";

/** Facility codes, already shifted left by 3 as in `<syslog.h>` (`LOG_DAEMON` is 24). */
export const FACILITY_CODES: Readonly<Record<SyslogFacility, number>> = {
  kern: 0 << 3,
  user: 1 << 3,
  mail: 2 << 3,
  daemon: 3 << 3,
  auth: 4 << 3,
  syslog: 5 << 3,
  lpr: 6 << 3,
  news: 7 << 3,
  uucp: 8 << 3,
  cron: 9 << 3,
  authpriv: 10 << 3,
  ftp: 11 << 3,
  local0: 16 << 3,
  local1: 17 << 3,
  local2: 18 << 3,
  local3: 19 << 3,
  local4: 20 << 3,
  local5: 21 << 3,
  local6: 22 << 3,
  local7: 23 << 3,
};

/** Level codes (`LOG_EMERG` 0 to `LOG_DEBUG` 7). */
export const LEVEL_CODES: Readonly<Record<SyslogLevel, number>> = {
  emerg: 0,
  alert: 1,
  crit: 2,
  err: 3,
  warning: 4,
  notice: 5,
  info: 6,
  debug: 7,
};

/** Every facility name, in `<syslog.h>` order. */
export const FACILITIES = Object.keys(FACILITY_CODES) as readonly SyslogFacility[];

/** Every level name, most severe first. */
export const LEVELS = Object.keys(LEVEL_CODES) as readonly SyslogLevel[];

/**
 * Whether a text is a facility name.
 *
 * @param text the name to check
 * @returns true for `daemon`, `local0`, ...
 */
export function isFacility(text: string): text is SyslogFacility {
  return Object.hasOwn(FACILITY_CODES, text);
}

/**
 * Whether a text is a level name.
 *
 * @param text the name to check
 * @returns true for `err`, `info`, ...
 */
export function isLevel(text: string): text is SyslogLevel {
  return Object.hasOwn(LEVEL_CODES, text);
}

/**
 * The priority number of a level and facility, as syslog(3) takes it.
 *
 * @param level the level
 * @param facility the facility; absent: 0, which syslog(3) replaces by openlog's
 * @returns `facility | level`
 */
export function priority(level: SyslogLevel, facility?: SyslogFacility): number {
  return (facility === undefined ? 0 : FACILITY_CODES[facility]) | LEVEL_CODES[level];
}
