/**
 * The only code that calls `Deno.dlopen`: libc symbols, per-platform
 * constants, C strings, and {@link SystemError}. Nothing here knows about the
 * CLI or the pid file protocol.
 *
 * @module
 */

export { checkReturned, errno, libc, platform } from "./libc.ts";
export { cstr, CStringArray, decode, readCString } from "./cstring.ts";
export { describeErrno, ERRNO, type ErrnoCode, errnoName, quote, SystemError } from "./errors.ts";
export { currentPlatform, type Platform, UnsupportedPlatformError } from "./platform.ts";
export { denoSignal, parseSignal, type SignalName, signalName, SIGNALS } from "./signals.ts";
export * from "./sys.ts";
export { posixSpawn, type PosixSpawnRequest } from "./spawn.ts";
export { closelog, openlog, setlogmask, syslog, syslogOpen } from "./syslog.ts";
export {
  checkPlainFile,
  explainOpenError,
  openBeside,
  type OpenBesideOptions,
  type OpenedFile,
  type OpenHints,
  readBounded,
  reopenDescriptor,
} from "./files.ts";
