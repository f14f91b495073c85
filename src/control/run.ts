/**
 * `run`: take the lock in the foreground and become the command (execve),
 * which keeps this pid and the lock; or, with `supervise`, become its
 * supervisor.
 *
 * @module
 */

import {
  becomeUser,
  ERRNO,
  execve,
  ids,
  quote,
  resetSignals,
  setCloexec,
  SystemError,
  umask as setUmask,
} from "../ffi/mod.ts";
import { identify } from "../lock/identity.ts";
import type { PidFile } from "../lock/pidfile.ts";
import { writeRecord } from "../lock/record.ts";
import { takeOuterManager } from "../launch/readiness.ts";
import { environmentFor, type LaunchSpec } from "../launch/spec.ts";
import { runSupervisor } from "../supervisor/stage.ts";
import { UsageError } from "../errors.ts";
import { takeGuard } from "./guard.ts";
import type { RunOptions } from "./options.ts";
import { lockPidfile, refuseUnlockedDaemon } from "./precheck.ts";
import { callerEnvironment, launchSpec } from "./spec.ts";
import { normalPath } from "./values.ts";

/**
 * Take the lock in the foreground and execve into the command, which keeps
 * this pid and the lock (the descriptor is left open across the exec).
 *
 * @param options what to run
 * @returns never: it execs; with `supervise`, the supervisor's exit code
 * @throws {AlreadyRunningError} when another process holds the pid file
 * @throws {SystemError} when the exec or a check fails (the lock is released)
 */
export async function run(options: RunOptions): Promise<number> {
  if ((options.supervise || options.lock) && options.user !== undefined) {
    // Found before anything is created, like every usage error.
    const mode = options.supervise ? "supervise" : "lock";
    throw new UsageError(`run does not take user with ${mode} (start does)`);
  }
  const spec = launchSpec(options, "run");
  if (spec.lock) {
    const { checkClusterLock } = await import("./cluster.ts");
    await checkClusterLock(spec.lock, spec.stopSchedule);
  }
  let lock: PidFile;
  {
    using _guard = await takeGuard(options);
    refuseUnlockedDaemon(options.pidfile);
    lock = await lockPidfile(options);
  }
  const env = environmentFor(spec, callerEnvironment("run"));
  if (spec.holder.kind !== "self") {
    // supervise mode: this process is the supervisor; it keeps the lock and its pid, and takes
    // the caller's service manager (NOTIFY_SOCKET, WATCHDOG_*) for itself: it says when COMMAND
    // is ready. With a cluster lock alone, it is COMMAND's keeper in the foreground: it holds
    // both locks and fences COMMAND, which an exec could not.
    const manager = spec.holder.kind === "supervisor"
      ? takeOuterManager(env, ids.pid())
      : undefined;
    return await runSupervisor(
      {
        spec,
        pidfile: normalPath(options.pidfile),
        by: "run",
        ...(manager ? { manager: { ...manager, sendsReady: true } } : {}),
      },
      lock,
      env,
    );
  }
  try {
    // The exec keeps this pid and start time: the record names the command from now on.
    recordRun(spec, options);
    setCloexec(lock.fd, false);
    if (spec.umask !== null) setUmask(spec.umask);
    if (spec.user) {
      try {
        becomeUser(spec.user, spec.user.gid);
      } catch (err) {
        throw new SystemError("setuid", err instanceof SystemError ? err.errno : ERRNO.EPERM, {
          message: `cannot become user ${quote(spec.user.name)}: ${
            err instanceof Error ? err.message : err
          }`,
        });
      }
    }
    if (options.chdir !== undefined) Deno.chdir(spec.cwd);
    resetSignals();
    execve(spec.path, spec.command, env);
  } catch (err) {
    lock.release();
    throw err;
  }
}

/** Record the launch and this process beside the pid file; a failure costs the run nothing. */
function recordRun(spec: LaunchSpec, options: RunOptions): void {
  try {
    writeRecord(options.pidfile, {
      by: "run",
      spec,
      daemon: identify(ids.pid()) ?? null,
      holder: null,
    });
  } catch (err) {
    options.onWarning?.(`warning: cannot write the service record: ${(err as Error).message}`);
  }
}
