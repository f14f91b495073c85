/**
 * `--exec PATH` and `--user USER`: the proof start-stop-daemon asks of a
 * process a pid file names, for a daemon whose lock proves nothing (it
 * never held one: a program singleton-run did not start, named by its own
 * pid file), and the narrowing `--user` adds to any process acted on.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { quote } from "../ffi/errors.ts";
import { describeUid, type FileStat, ids, lookupUser, lstat, stat } from "../ffi/sys.ts";
import { writerBesidesOwner } from "../lock/writers.ts";
import { executableOf, procStatus, selfAndAncestors } from "../ffi/proc.ts";
import type { TrustOptions } from "./options.ts";

/** A process may be acted on, or why not. */
export type ExecCheck = { readonly ok: true } | { readonly ok: false; readonly why: string };

/** What the kernel appends to /proc/PID/exe once the file has no name left. */
const DELETED = " (deleted)";

/**
 * Whether process `pid` runs the file `exec`: the same file (device and
 * inode), or, when the file it runs has no name left (removed, or replaced
 * by a rename, as a package upgrade does: its link count is 0), the path it
 * had. Whether the file was removed is decided by its link count, never by
 * the text of /proc/PID/exe: a file may be named `app (deleted)`.
 *
 * @param pid the process
 * @param exec the executable's path
 * @returns ok, or why not in words
 */
export function checkExec(pid: number, exec: string): ExecCheck {
  const running = executableOf(pid);
  if (!running?.id) return { ok: false, why: `the executable of pid ${pid} cannot be read` };
  let wanted: { dev: bigint; ino: bigint } | undefined;
  let real = exec;
  try {
    wanted = stat(exec);
    real = Deno.realPathSync(exec);
  } catch {
    // A missing file can still be the removed binary a process runs.
  }
  const { id, text } = running;
  if (wanted && id.dev === wanted.dev && id.ino === wanted.ino) return { ok: true };
  if (id.nlink === 0 && text.endsWith(DELETED)) {
    const path = text.slice(0, -DELETED.length);
    if (path === real || path === exec) return { ok: true };
  }
  return { ok: false, why: `pid ${pid} runs ${quote(text)}, not ${quote(exec)}` };
}

/**
 * The uid `--user` names, checked before anything is acted on.
 *
 * @param user a user name or a numeric uid
 * @returns its uid
 * @throws {UsageError} when there is no such user, or a group is given
 */
export function trustedUid(user: string): number {
  if (user.includes(":")) {
    throw new UsageError(`bad --user ${quote(user)}: here it takes USER (a name or uid), no GROUP`);
  }
  const entry = /^[0-9]+$/.test(user) ? { uid: Number(user) } : lookupUser(user);
  if (entry === undefined) throw new UsageError(`bad --user ${quote(user)}: no such user`);
  return entry.uid;
}

/**
 * Whether a controller may act on process `pid`, with `--exec` or `--user`
 * given, or with no lock to prove it is the daemon:
 *
 * - never this process or one of its ancestors (a pid file naming the shell
 *   that runs the stop, or init);
 * - with `exec`, only a process that runs that file ({@link checkExec});
 * - with `runsAs`, only a process whose real uid is that user's (as
 *   start-stop-daemon's `--user` matches);
 * - `unlocked` (no lock covers the pid file, so `exec` is the only proof)
 *   and no `runsAs`: only a process whose real uid is root's, the pid file
 *   owner's or this caller's, so that another user's copy of the same
 *   binary, under a pid the file names, is never taken for the daemon;
 * - `unlocked`: only when no one but the pid file's owner and root may write
 *   the file (else whoever may could name any process that runs `exec`).
 *
 * @param pid the process
 * @param rule `exec`, `runsAs`, the pid file, and whether a lock proves anything
 * @returns ok, or why not in words
 */
export function checkTrusted(
  pid: number,
  rule: TrustOptions & { readonly pidfile: string; readonly unlocked: boolean },
): ExecCheck {
  if (selfAndAncestors().has(pid)) {
    return { ok: false, why: `pid ${pid} is this command itself or one of its parents` };
  }
  if (rule.exec !== undefined) {
    const check = checkExec(pid, rule.exec);
    if (!check.ok) return check;
  }
  if (rule.runsAs === undefined && !rule.unlocked) return { ok: true };
  let file: FileStat | undefined;
  try {
    file = lstat(rule.pidfile);
  } catch {
    // Gone meanwhile: root and this caller remain.
  }
  const besides = rule.unlocked && file !== undefined
    ? writerBesidesOwner(rule.pidfile, file)
    : undefined;
  if (besides !== undefined) {
    return {
      ok: false,
      why: `pid file ${quote(rule.pidfile)} can be written by ${besides}, so the pid ${pid} ` +
        "it names proves nothing without a lock",
    };
  }
  const uid = procStatus(pid)?.uids[0];
  if (uid === undefined) return { ok: false, why: `the user of pid ${pid} cannot be read` };
  if (rule.runsAs !== undefined) {
    const wanted = trustedUid(rule.runsAs);
    if (uid === wanted) return { ok: true };
    return { ok: false, why: `pid ${pid} runs as ${describeUid(uid)}, not ${quote(rule.runsAs)}` };
  }
  if (uid === 0 || uid === file?.uid || uid === ids.euid()) return { ok: true };
  return {
    ok: false,
    why: `pid ${pid} runs as ${describeUid(uid)}, who is neither root, the pid file's owner ` +
      "nor you (give --user to name the daemon's user)",
  };
}
