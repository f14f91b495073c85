/**
 * The internal stage behind `start --user`: JavaScript cannot fork, so the
 * work that must happen in the new process before the daemon's exec
 * (initgroups, setgid, setuid, chdir) is done by starting this program again
 * with posix_spawn, in the daemon's session and with the daemon's descriptors,
 * and letting that copy drop privileges and execve the command. The pid
 * stays the same throughout, so the pid file names the daemon from the start.
 *
 * The stage is told what to run through a pipe (never the environment, never
 * argv, which any user can read in /proc): the only marker is the internal
 * argv flag and role with two descriptor numbers, and it is gone once the stage has exec'd.
 * A failure before the exec is written to a close-on-exec error pipe, so the
 * controller can say exactly what went wrong; end of file on that pipe
 * without a message means the exec happened.
 *
 * @module
 */

import {
  becomeUser,
  C,
  close,
  execve,
  ids,
  pipe,
  pollNow,
  pollWait,
  quote,
  read,
  resetSignals,
  setCloexec,
  setParentDeathSignal,
  writeAll,
} from "../ffi/mod.ts";
import type { LaunchSpec } from "./spec.ts";
import { stageCommand } from "./internal.ts";
import { type FdSource, spawn } from "./spawn.ts";

/** What the stage is told: the launch, the program's whole environment, and the death signal. */
export interface StageRequest {
  /** The launch: its program, command, directory and user. */
  readonly spec: LaunchSpec;
  /** The program's whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** SIGKILL the program when the process that started the stage dies. */
  readonly dieWithParent?: boolean;
  /** With `dieWithParent`: that process, which must still be the stage's parent once it is set. */
  readonly parent?: number;
}

/** How the stage process is made: what {@link spawn} would get for the program itself. */
export interface StageSpawn {
  readonly umask?: number;
  readonly fds: Readonly<Record<number, FdSource>>;
  /** A new session (a daemon), a new process group (`killGroup`), or neither. */
  readonly session: "new" | "group" | "same";
}

/** A stage that was started. */
export interface StartedStage {
  /** Its pid, which becomes the daemon's. */
  readonly pid: number;
  /** Our end of the error pipe: a message, or end of file once the exec happened. */
  readonly errorFd: number;
}

/**
 * Start the stage with the program's descriptors (a daemon: as a new
 * session leader) and hand it the request.
 *
 * @param request what to run and as whom
 * @param options the umask, descriptors and session of the program
 * @returns the stage's pid and the error pipe to wait on
 * @throws {SystemError} when this program cannot be started again
 */
export function spawnStage(request: StageRequest, options: StageSpawn): StartedStage {
  const used = Object.keys(options.fds).map(Number);
  const specFd = Math.max(3, ...used) + 1;
  const errFd = specFd + 1;
  const [specRead, specWrite] = pipe(C.O_CLOEXEC);
  let errRead = -1, errWrite = -1;
  try {
    [errRead, errWrite] = pipe(C.O_CLOEXEC);
    const argv = stageCommand("privilege", [String(specFd), String(errFd)]);
    const pid = spawn({
      path: argv[0]!,
      argv,
      env: Deno.env.toObject(),
      cwd: Deno.cwd(),
      newSession: options.session === "new",
      newProcessGroup: options.session === "group",
      ...(options.umask === undefined ? {} : { umask: options.umask }),
      fds: { ...options.fds, [specFd]: specRead, [errFd]: errWrite },
    });
    close(specRead);
    close(errWrite);
    errWrite = -1;
    try {
      writeAll(specWrite, new TextEncoder().encode(JSON.stringify(request)), "stage pipe");
    } catch {
      // The stage died before reading; its exit is reported by the caller.
    }
    close(specWrite);
    return { pid, errorFd: errRead };
  } catch (err) {
    for (const fd of [specRead, specWrite, errRead, errWrite]) {
      try {
        if (fd >= 0) close(fd);
      } catch {
        // Already closed.
      }
    }
    throw err;
  }
}

/**
 * Wait until the stage has exec'd the command, or reports why it could not.
 *
 * @param errorFd the stage's error pipe (closed here)
 * @param pidfd the stage's pidfd
 * @param timeoutMs the longest wait
 * @returns `undefined` once the exec happened (or the stage died silently,
 *   which the caller sees on the pidfd), or the stage's error message;
 *   `"timeout"` when the time ran out
 */
export async function awaitStage(
  errorFd: number,
  pidfd: number,
  timeoutMs: number,
): Promise<string | undefined> {
  const deadline = performance.now() + timeoutMs;
  let text = "";
  try {
    const watch = [{ fd: errorFd, events: C.POLLIN }, { fd: pidfd, events: C.POLLIN }];
    for (;;) {
      const remaining = deadline - performance.now();
      const revents = remaining > 0 ? await pollWait(watch, remaining) : pollNow(watch);
      if (revents[0] !== 0) {
        const bytes = read(errorFd, 4096);
        if (bytes.length === 0) return text === "" ? undefined : text.trim();
        text += new TextDecoder().decode(bytes);
        continue;
      }
      // Exited without closing the pipe cannot happen (exit closes it); keep reading.
      if (revents[1] !== 0) continue;
      if (performance.now() >= deadline) return "timeout";
    }
  } finally {
    close(errorFd);
  }
}

/**
 * The stage itself: read the request, drop privileges, change directory,
 * reset signals, exec. Called by cli.ts for `--singleton-run-internal privilege`.
 *
 * @param args the arguments after the role: spec fd, error fd
 * @returns never: it execs or exits 127 after writing the reason
 */
export function runStage(args: readonly string[]): never {
  const specFd = Number(args[0]);
  const errFd = Number(args[1]);
  if (!Number.isInteger(specFd) || !Number.isInteger(errFd) || specFd < 3 || errFd < 3) {
    console.error("singleton-run: the internal stage is not for direct use");
    Deno.exit(2);
  }
  try {
    setCloexec(errFd, true);
    let raw = "";
    for (let chunk = read(specFd, 65536); chunk.length > 0; chunk = read(specFd, 65536)) {
      raw += new TextDecoder().decode(chunk);
    }
    close(specFd);
    enterProgram(JSON.parse(raw) as StageRequest);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    try {
      writeAll(errFd, new TextEncoder().encode(message + "\n"), "error pipe");
    } catch {
      // The controller is gone; nobody to tell.
    }
    Deno.exit(127);
  }
}

/**
 * The last steps of a stage, in the process that becomes the program: take
 * its user, change to its directory, reset the signals, exec it (the pid
 * stays). Shared by this stage and the job stage (`job.ts`).
 *
 * @param request the launch, the program's environment, the death signal
 * @returns never: it execs
 * @throws {Error} saying why it could not
 */
export function enterProgram(request: StageRequest): never {
  const { spec, env, dieWithParent, parent } = request;
  if (spec.user) {
    try {
      becomeUser(spec.user, spec.user.gid);
    } catch (err) {
      throw new Error(
        `cannot become user ${quote(spec.user.name)}: ${err instanceof Error ? err.message : err}`,
      );
    }
  }
  try {
    Deno.chdir(spec.cwd);
  } catch (err) {
    const who = spec.user ? ` as user ${quote(spec.user.name)}` : "";
    const why = err instanceof Deno.errors.NotFound
      ? "no such directory"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : String(err);
    throw new Error(`cannot change directory to ${quote(spec.cwd)}${who}: ${why}`);
  }
  // After the change of user, which clears a parent-death signal.
  if (dieWithParent) {
    setParentDeathSignal(9);
    // A parent that died before the signal was set sent none: the program would run unfenced.
    if (parent !== undefined && ids.ppid() !== parent) {
      throw new Error(`the process that started it (pid ${parent}) is gone`);
    }
  }
  resetSignals();
  // A supervisor's watchdog: the program keeps this pid, so it may be named (sd_watchdog_enabled).
  const watchdog = spec.watchdogMs != null && env.WATCHDOG_USEC !== undefined;
  return execve(spec.path, spec.command, {
    ...env,
    ...(watchdog ? { WATCHDOG_PID: String(ids.pid()) } : {}),
  });
}
