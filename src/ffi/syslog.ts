/**
 * libc's `openlog`, `syslog`, `closelog` and `setlogmask`, typed. A message
 * is always passed as `syslog(pri, "%s", message)`: user text is never a
 * format string. glibc keeps the ident pointer `openlog` was given, so its
 * buffer is kept here until `closelog`.
 *
 * @module
 */

import { libc } from "./libc.ts";
import { cstr } from "./cstring.ts";

let identBuffer: Uint8Array<ArrayBuffer> | undefined;
let format: Uint8Array<ArrayBuffer> | undefined;

/**
 * openlog(3).
 *
 * @param ident the name put in front of each message
 * @param options `LOG_PID`, `LOG_NDELAY`, ... or'ed together
 * @param facility the default facility code (already shifted, as in `<syslog.h>`)
 * @throws {TypeError} when the ident holds a NUL byte
 */
export function openlog(ident: string, options: number, facility: number): void {
  const buffer = cstr(ident, "syslog ident");
  libc().openlog(buffer, options, facility);
  identBuffer = buffer; // the old buffer is no longer referenced by libc
}

/**
 * syslog(3) with `"%s"` as the format.
 *
 * @param priority a level or'ed with a facility
 * @param message the text; a NUL byte is replaced by U+FFFD
 */
export function syslog(priority: number, message: string): void {
  format ??= cstr("%s");
  libc().syslog(priority, format, cstr(message.replaceAll("\0", "\uFFFD"), "syslog message"));
}

/** closelog(3); the ident buffer is released. */
export function closelog(): void {
  libc().closelog();
  identBuffer = undefined;
}

/**
 * Whether {@link openlog} was called and {@link closelog} not since.
 *
 * @returns true while an ident is in use
 */
export function syslogOpen(): boolean {
  return identBuffer !== undefined;
}

/**
 * setlogmask(3).
 *
 * @param mask the levels to keep, one bit each; 0 changes nothing
 * @returns the previous mask
 */
export function setlogmask(mask: number): number {
  return libc().setlogmask(mask);
}
