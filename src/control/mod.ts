/**
 * The control API: start, stop, status, restart, reload, signal and run a
 * single-instance daemon from a Deno program, with the same options and
 * results as the `singleton-run` command.
 *
 * @module
 */

export {
  AlreadyRunningError,
  DEFAULT_GUARD_TIMEOUT_MS,
  DEFAULT_READY_AFTER_MS,
  DEFAULT_READY_TIMEOUT_MS,
  DEFAULT_SCHEDULE,
  GuardTimeoutError,
  InterruptedError,
  NotRunningError,
  parseSchedule,
  parseUmask,
  reload,
  restart,
  run,
  sendSignal,
  sendSignal as signal,
  start,
  StartFailedError,
  status,
  stop,
  StopFailedError,
  UsageError,
} from "./control.ts";
export type {
  DaemonPlan,
  GuardOptions,
  LaunchedDaemon,
  LaunchOptions,
  RestartOptions,
  RunOptions,
  Schedule,
  ScheduleStep,
  SignalOptions,
  StartOptions,
  StartResult,
  StatusReport,
  StopOptions,
  StopResult,
} from "./control.ts";
export { SystemError } from "../ffi/errors.ts";
export { parseSignal } from "../ffi/signals.ts";
