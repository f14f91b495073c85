/**
 * `reopen`: make the process that writes `--output` (the supervisor, or the
 * keeper of a daemon started with `--keeper --output`) open the file again
 * after a rotation renamed it away, without signalling the program.
 *
 * The writer is asked with a signal it never forwards, SIGURG, whose
 * default action is to be ignored: a program that does not handle SIGHUP
 * survives every rotation, and a process reached by mistake is unharmed.
 *
 * @module
 */

import {
  close,
  listDirectory,
  pidfdOpen,
  pidfdSendSignal,
  quote,
  readLink,
  stat,
} from "../ffi/mod.ts";
import { cmdlineOf, processRuns } from "../ffi/proc.ts";
import { fileIdentity, holdsLockInFdinfo, lockContext } from "../lock/holders.ts";
import { probeIdentified } from "../lock/pidfile.ts";
import { REOPEN_SIGNAL } from "../supervisor/defaults.ts";
import { readSupervisorStatus } from "../supervisor/state.ts";
import { NotRunningError, StopFailedError } from "./errors.ts";
import { withGuard } from "./guard.ts";
import { keeperOf } from "./kept.ts";
import type { GuardOptions } from "./options.ts";
import { precheckSignal } from "./stop.ts";

/**
 * Make the writer of `--output` reopen it.
 *
 * @param options the pid file
 * @returns the pid of the process that reopened it, once one of its
 *   descriptors is on the file now at the output path
 * @throws {NotRunningError} when nothing runs
 * @throws {StopFailedError} when no supervisor or keeper writes an output
 *   file (the program writes its output itself, or there is no `--output
 *   FILE`), saying what to do instead; or when the writer has not reopened
 *   the file within 5 s (it cannot create it, say)
 */
export function reopen(options: GuardOptions): Promise<number> {
  precheckSignal(options);
  return withGuard(options, async () => {
    const { found, identity: st } = probeIdentified(options.pidfile);
    if (found.state !== "running" || !st) throw new NotRunningError(options.pidfile);
    const named = found.pid;
    if (named === undefined) {
      throw new StopFailedError(
        `${quote(options.pidfile)} names no process yet: try again`,
        undefined,
      );
    }
    const writer = readSupervisorStatus(options.pidfile, named) !== undefined
      ? named
      : keeperOf(st, named, lockContext(options.pidfile, st.uid));
    if (writer === undefined) throw new StopFailedError(writesItself(named), named);
    // The file names a supervisor itself; a keeper holds the lock for the program it names.
    const role = `the ${writer === named ? "supervisor" : "keeper"} (pid ${writer})`;
    // What it writes, from its state file (undefined: it has not written one yet).
    const output = readSupervisorStatus(options.pidfile, writer)?.output;
    if (output === null) {
      throw new StopFailedError(
        `${role} writes no output file (it was started without --output FILE), ` +
          "so there is nothing to reopen",
        writer,
      );
    }
    const pidfd = pidfdOpen(writer);
    if (pidfd === undefined) throw new NotRunningError(options.pidfile);
    try {
      // Named for good by the pidfd: it must still hold the lock (not a reused pid).
      if (holdsLockInFdinfo(writer, st) === false) {
        throw new StopFailedError(
          `pid ${writer} no longer holds ${quote(options.pidfile)}`,
          writer,
        );
      }
      pidfdSendSignal(pidfd, REOPEN_SIGNAL, `pid ${writer}`);
    } finally {
      close(pidfd);
    }
    if (output !== undefined && !await reopened(writer, output)) {
      throw new StopFailedError(
        `${role} has not reopened ${quote(output)} within ${REOPEN_WAIT_MS / 1000} s ` +
          "(it says why at the end of the file it still writes, the one rotated away)",
        writer,
      );
    }
    return writer;
  });
}

/** How long `reopen` waits for the writer to hold the file now at the path. */
const REOPEN_WAIT_MS = 5000;

/**
 * Wait until the writer has a descriptor on the file now at `path` (the
 * reopen done), at most {@link REOPEN_WAIT_MS}.
 */
async function reopened(pid: number, path: string): Promise<boolean> {
  const deadline = performance.now() + REOPEN_WAIT_MS;
  while (!holdsOpen(pid, path)) {
    if (performance.now() >= deadline || !processRuns(pid)) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** Whether one of the process's descriptors is open on the file at `path` (never through a link). */
function holdsOpen(pid: number, path: string): boolean {
  const want = fileIdentity(path);
  if (!want) return false;
  try {
    return listDirectory(`/proc/${pid}/fd`).some((name) => {
      try {
        const target = stat(`/proc/${pid}/fd/${name}`);
        return target.dev === want.dev && target.ino === want.ino;
      } catch {
        return false; // closed meanwhile
      }
    });
  } catch {
    return false;
  }
}

/**
 * "COMMAND (pid N) writes FILE itself; ...": a daemon started without a
 * supervisor or keeper holds its output file open itself, and only it could
 * reopen it.
 */
function writesItself(pid: number): string {
  const command = cmdlineOf(pid)?.[0]?.split("/").pop() || "the daemon";
  let file = "its output";
  try {
    const target = readLink(`/proc/${pid}/fd/1`);
    if (target.startsWith("/") && !target.startsWith("/dev/")) file = quote(target);
  } catch {
    // Gone, or not ours to read: the generic words do.
  }
  return `${command} (pid ${pid}) writes ${file} itself, so there is nothing to reopen: ` +
    "rotate it with copytruncate, or start it with --keeper --output FILE (or --supervise)";
}
