/**
 * singleton-run for Deno programs: exactly one instance (a pid file kept
 * locked with flock(2) for the process's whole life), daemonization with
 * readiness, graceful shutdown and reload, the system log, and a leak watch,
 * for Linux, through libc.
 *
 * The exports, by what they are for:
 * - **one instance**: {@link PidFile}, {@link AlreadyRunningError};
 * - **become a daemon**: {@link daemonize};
 * - **tell a supervisor**: {@link notifyReady}, {@link notifyStatus},
 *   {@link notifyReloading}, {@link notifyStopping};
 * - **stop and reload cleanly**: {@link onShutdown}, {@link onReload};
 * - **the system log**: {@link openLog}, {@link log}, {@link closeLog},
 *   {@link setLogMask}, {@link errnoText}, and {@link getSyslogSink} for
 *   LogTape; facilities and levels are names (`"daemon"`, `"local0"`,
 *   `"err"`, `"info"`);
 * - **watch for leaks**: {@link watchResources}, {@link rssKiB},
 *   {@link openFdCount}, {@link listOpenFds}, {@link setCloseOnExec};
 * - **errors**: {@link SystemError} (a failed system call, with its `code`).
 *
 * To start, stop or query another program, use the `./control` export.
 *
 * The library's own diagnostics (a cleanup handler that threw, a resource
 * warning) go to LogTape under the category `["singleton-run", ...]`; they
 * are shown only where the program configures a sink for that category.
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
 * @example Log to the system log, directly and through LogTape
 * ```ts
 * import { configure, getLogger, reset } from "@logtape/logtape";
 * import { closeLog, getSyslogSink, log, openLog } from "./mod.ts";
 *
 * openLog("my-service", { facility: "daemon" });
 * log("notice", "configuration loaded");
 * closeLog();
 *
 * await configure({
 *   sinks: { syslog: getSyslogSink({ ident: "my-service", facility: "local0" }) },
 *   loggers: [
 *     { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
 *     { category: ["my-service"], lowestLevel: "info", sinks: ["syslog"] },
 *     { category: ["singleton-run"], lowestLevel: "warning", sinks: ["syslog"] },
 *   ],
 * });
 * getLogger(["my-service"]).info("listening on {port}", { port: 8080 });
 * await reset();
 * ```
 *
 * @module
 */

// One instance
export {
  type AcquireOptions,
  AlreadyRunningError,
  PidFile,
  type ProbeResult,
} from "./src/lock/pidfile.ts";

// Become a daemon, tell a supervisor, stop and reload cleanly
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

// The system log
export {
  closeLog,
  errnoText,
  getSyslogSink,
  log,
  type LogTapeLevel,
  openLog,
  type OpenLogOptions,
  setLogMask,
  type SyslogFacility,
  type SyslogLevel,
  type SyslogRecord,
  type SyslogSink,
  type SyslogSinkOptions,
} from "./src/syslog/syslog.ts";

// Watch for leaks
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

// Errors, and the command's exit code for each
export { SystemError } from "./src/ffi/errors.ts";
export { exitCodeOf, UsageError } from "./src/errors.ts";
