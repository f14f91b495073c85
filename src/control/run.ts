/**
 * `run`: take the lock in the foreground and become the command (execve),
 * which keeps this pid and the lock; or, with `supervise`, become its
 * supervisor; with a cluster lock, its keeper; with `maxRuntime`, the small
 * enforcer of its time limit, its parent.
 *
 * @module
 */

import {
  becomeUser,
  close,
  ERRNO,
  execve,
  ids,
  isExecutable,
  quote,
  resetSignals,
  setCloexec,
  setpgid,
  SystemError,
  umask as setUmask,
} from "../ffi/mod.ts";
import { identify } from "../lock/identity.ts";
import type { PidFile } from "../lock/pidfile.ts";
import { recordNeeded, writeRecord } from "../lock/record.ts";
import { stageCommand } from "../launch/internal.ts";
import { sendJobOrders } from "../launch/job.ts";
import { ENFORCER_SHELL, enforcerArgv } from "../launch/limit.ts";
import { takeOuterManager } from "../launch/readiness.ts";
import { environmentFor, type LaunchSpec } from "../launch/spec.ts";
import { runSupervisor } from "../supervisor/stage.ts";
import { UsageError } from "../errors.ts";
import { takeRunLock } from "./conflict.ts";
import { HeldElsewhereError, JobSkippedError } from "./errors.ts";
import type { RunOptions } from "./options.ts";
import { callerEnvironment, launchSpec } from "./spec.ts";
import { checkWaitMs, normalPath } from "./values.ts";

/**
 * Take the lock in the foreground and execve into the command, which keeps
 * this pid and the lock (the descriptor is left open across the exec).
 *
 * @param options what to run
 * @returns never: it execs; with `supervise` or a cluster lock, the exit code
 * @throws {AlreadyRunningError} when another process holds the pid file
 * @throws {JobSkippedError} when a later `replace` took over, or the slot is done
 * @throws {SystemError} when the exec or a check fails (the lock is released)
 */
export async function run(options: RunOptions): Promise<number> {
  const startedAt = Date.now();
  checkRunOptions(options);
  const spec = launchSpec(options, "run");
  if (spec.lock) {
    const { checkClusterLock } = await import("./cluster.ts");
    await checkClusterLock(spec.lock, spec.stopSchedule);
  }
  const lock = await takeRunLock(options, spec);
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
        startedAt,
        ...(manager ? { manager: { ...manager, sendsReady: true } } : {}),
      },
      lock,
      env,
      (message, kind) => {
        throw kind === "held" ? new HeldElsewhereError(message) : new JobSkippedError(message);
      },
    );
  }
  try {
    // The exec keeps this pid and start time: the record names the command from now on.
    recordRun(spec, options);
    if (spec.umask !== null) setUmask(spec.umask);
    if (spec.maxRuntimeMs !== null) return execEnforcer(spec, options, lock, env);
    setCloexec(lock.fd, false);
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
    // With killGroup, COMMAND leads a process group, which a later replace signals whole.
    if (spec.killGroup && ids.pgid() !== ids.pid()) setpgid(0, 0);
    resetSignals();
    execve(spec.path, spec.command, env);
  } catch (err) {
    lock.release();
    throw err;
  }
}

/**
 * Become the enforcer of the job's time limit (see `src/launch/limit.ts`):
 * the lock and the job's orders go into a socket for the job stage, and
 * this process execs `/bin/sh`, the job's parent from now on. The stage
 * takes the user, the directory and the process group itself.
 */
function execEnforcer(
  spec: LaunchSpec,
  options: RunOptions,
  lock: PidFile,
  env: Record<string, string>,
): never {
  const orders = { spec, env, pidfile: normalPath(options.pidfile), enforcer: ids.pid() };
  const socket = sendJobOrders(orders, lock.fd);
  try {
    resetSignals();
    execve(ENFORCER_SHELL, enforcerArgv(spec, stageCommand("job", [String(socket)])), env);
  } catch (err) {
    close(socket); // and with it the lock's copy still in flight
    throw err;
  }
}

/**
 * The run's own checks, made before anything is created: the policies that
 * exclude each other, and the values a caller of the library may get wrong
 * (the command line's parsers bound theirs already).
 *
 * @param options the run's options
 * @throws {UsageError} naming what is wrong
 */
function checkRunOptions(options: RunOptions): void {
  if ((options.supervise || options.lock) && options.user !== undefined) {
    const mode = options.supervise ? "supervise" : "lock";
    throw new UsageError(`run does not take user with ${mode} (start does)`);
  }
  if (options.wait !== undefined && options.replace) {
    throw new UsageError(
      "wait and replace exclude each other (wait for the running copy, or stop it)",
    );
  }
  if (options.wait !== undefined && options.wait !== "forever") positiveMs(options.wait, "wait");
  if (options.maxRuntime !== undefined) {
    positiveMs(options.maxRuntime, "maxRuntime");
    if (options.supervise) {
      throw new UsageError(
        "run does not take maxRuntime with supervise (it limits one run of a job)",
      );
    }
    if (!isExecutable(ENFORCER_SHELL)) {
      throw new SystemError("execve", ERRNO.ENOENT, {
        path: ENFORCER_SHELL,
        message: `a time limit needs ${ENFORCER_SHELL}, which stays to enforce it`,
      });
    }
  }
  if (options.killGroup && options.supervise) {
    throw new UsageError("with supervise, give killGroup in its settings");
  }
  const oncePer = options.lock?.oncePerMs;
  if (oncePer !== undefined) {
    positiveMs(oncePer, "lock.oncePerMs");
    if (options.supervise) {
      throw new UsageError("run does not take lock.oncePerMs with supervise (it is for a job)");
    }
  }
}

/** A duration a caller gave that must be more than 0 and within the bound of every wait. */
function positiveMs(ms: number, option: string): void {
  checkWaitMs(ms, option);
  if (ms === 0) throw new UsageError(`bad ${option} 0: must be more than 0`);
}

/**
 * Record the launch and this process beside the pid file. A failure is said
 * and the run goes on, unless only the record can tell later commands that
 * the command holds the lock (`--user`): then nothing is run.
 */
function recordRun(spec: LaunchSpec, options: RunOptions): void {
  try {
    writeRecord(options.pidfile, {
      by: "run",
      spec,
      daemon: identify(ids.pid()) ?? null,
      holder: null,
    });
  } catch (err) {
    const why = `cannot write the service record: ${(err as Error).message}`;
    if (!recordNeeded(spec)) {
      options.onWarning?.(`warning: ${why}`);
      return;
    }
    throw new SystemError("write", err instanceof SystemError ? err.errno : ERRNO.EIO, {
      path: options.pidfile,
      message: `${why}; without it no later command would know that ${
        quote(spec.user?.name ?? "")
      }'s command holds the lock, so it was not run`,
    });
  }
}
