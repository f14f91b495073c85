/**
 * singleton-run: exactly one instance of a program, a PID file kept locked
 * with flock(2) for the daemon's whole life, proper daemonization, and
 * race-free start, stop, status and reload, for Linux, through libc.
 *
 * @example Hold the single-instance lock for as long as this program runs
 * ```ts
 * import { AlreadyRunningError, PidFile } from "./mod.ts";
 *
 * const path = await Deno.makeTempFile({ suffix: ".pid" });
 * try {
 *   using lock = await PidFile.acquire(path);
 *   console.log(`running as pid ${lock.pid}`);
 * } catch (err) {
 *   if (err instanceof AlreadyRunningError) console.error(err.message);
 *   else throw err;
 * }
 * ```
 *
 * @module
 */

export {
  type AcquireOptions,
  AlreadyRunningError,
  PidFile,
  type ProbeResult,
} from "./src/lock/pidfile.ts";
export { SystemError } from "./src/ffi/errors.ts";
export { type Daemon, daemonize, type DaemonizeOptions } from "./src/service/daemon.ts";
export {
  notifyReady,
  notifyReloading,
  notifyStatus,
  notifyStopping,
} from "./src/service/notify.ts";
export {
  onReload,
  onShutdown,
  type Registration,
  type ShutdownHandler,
  type ShutdownOptions,
} from "./src/service/shutdown.ts";
export {
  closeLog,
  errnoText,
  getSyslogSink,
  isLogOpen,
  log,
  LOG_ALERT,
  LOG_AUTH,
  LOG_AUTHPRIV,
  LOG_CONS,
  LOG_CRIT,
  LOG_CRON,
  LOG_DAEMON,
  LOG_DEBUG,
  LOG_EMERG,
  LOG_ERR,
  LOG_FTP,
  LOG_INFO,
  LOG_KERN,
  LOG_LOCAL0,
  LOG_LOCAL1,
  LOG_LOCAL2,
  LOG_LOCAL3,
  LOG_LOCAL4,
  LOG_LOCAL5,
  LOG_LOCAL6,
  LOG_LOCAL7,
  LOG_LPR,
  LOG_MAIL,
  LOG_MASK,
  LOG_NDELAY,
  LOG_NEWS,
  LOG_NOTICE,
  LOG_NOWAIT,
  LOG_ODELAY,
  LOG_PERROR,
  LOG_PID,
  LOG_SYSLOG,
  LOG_UPTO,
  LOG_USER,
  LOG_UUCP,
  LOG_WARNING,
  type LogTapeLevel,
  openLog,
  type OpenLogOptions,
  setLogMask,
  type SyslogLevelName,
  type SyslogRecord,
  type SyslogSink,
  type SyslogSinkOptions,
} from "./src/syslog/syslog.ts";
export {
  listOpenFds,
  type OpenFd,
  openFdCount,
  type ResourceSample,
  type ResourceWarning,
  type ResourceWatch,
  rssKiB,
  setCloseOnExec,
  type WatchOptions,
  watchResources,
} from "./src/service/watchdog.ts";
