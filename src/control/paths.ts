/**
 * The paths an action is given, checked before anything is created: the pid
 * file must be a plain file (or absent, in a directory that exists), the
 * guard and the output must be other files, and as root no other user may
 * be able to redirect any of them.
 *
 * @module
 */

import {
  C,
  ERRNO,
  explainOpenError,
  fileKind,
  ids,
  lstat,
  quote,
  SystemError,
} from "../ffi/mod.ts";
import { checkPidFileStat } from "../lock/pidfile.ts";
import { recordPath } from "../lock/record.ts";
import { statePath } from "../supervisor/state.ts";
import { UsageError } from "../errors.ts";
import { checkPathTrusted } from "./trust.ts";
import { normalPath } from "./values.ts";
import type { GuardOptions } from "./options.ts";

/**
 * Refuse a pid file path that can never work, before the guard file is made:
 * a symlink, a directory or other non-regular file, a missing directory, and
 * (as root) a file owned by another user or writable by all.
 */
export function precheckPidfile(path: string): void {
  let st;
  try {
    st = lstat(path);
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) {
      const dir = dirname(path);
      try {
        const d = lstat(dir);
        if ((d.mode & C.S_IFMT) === C.S_IFDIR) return;
        // A symlink to a directory is fine as a directory.
        if (Deno.statSync(dir).isDirectory) return;
      } catch {
        // Fall through.
      }
      throw new SystemError("open", ERRNO.ENOENT, {
        path,
        message: `cannot open pid file ${quote(path)}: its directory ${quote(dir)} does not exist`,
      });
    }
    throw describePathError(err, path, "pid file");
  }
  const kind = st.mode & C.S_IFMT;
  if (kind === C.S_IFLNK) {
    throw new SystemError("open", ERRNO.ELOOP, {
      path,
      message: `cannot open pid file ${
        quote(path)
      }: it is a symbolic link, which is never followed`,
    });
  }
  checkPidFileStat(st, path);
}

/**
 * Refuse a pid file path that stop, signal and reload cannot read: a
 * symbolic link or another kind of file. A missing file is fine (not running).
 *
 * @param path the pid file
 * @returns false when there is no such file (or no directory for it)
 * @throws {SystemError} for a link or a file that is not regular
 */
export function precheckPidfileForRead(path: string): boolean {
  let st;
  try {
    st = lstat(path);
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) return false;
    throw describePathError(err, path, "pid file");
  }
  if ((st.mode & C.S_IFMT) === C.S_IFLNK) {
    throw new SystemError("open", ERRNO.ELOOP, {
      path,
      message: `cannot open pid file ${
        quote(path)
      }: it is a symbolic link, which is never followed`,
    });
  }
  if ((st.mode & C.S_IFMT) !== C.S_IFREG) {
    throw new SystemError("open", ERRNO.EINVAL, {
      path,
      message: `pid file ${quote(path)} is a ${fileKind(st.mode)}, not a regular file`,
    });
  }
  return true;
}

/**
 * Refuse a guard or output file that is the pid file (or, for the output,
 * the guard) or the supervisor's state file, and an empty guard path: each
 * would make the action misread or overwrite its own lock.
 *
 * @param options the pid file, the guard and the output file
 * @throws {UsageError} naming the option
 */
export function checkPathsDiffer(
  options: GuardOptions & { readonly output?: string },
): void {
  const { pidfile, guard, output } = options;
  if (guard === "") throw new UsageError(`bad --guard "": it is empty`);
  if (output === "") throw new UsageError(`bad --output "": it is empty`);
  if (guard !== undefined && sameFile(guard, pidfile)) {
    throw new UsageError(`--guard ${quote(guard)} is the pid file; the guard must be another file`);
  }
  // The supervisor replaces the state file by renaming a temp file over it:
  // a guard there would stop excluding, an output would be swapped away.
  for (const [option, path] of [["--guard", guard], ["--output", output]] as const) {
    if (path !== undefined && isStateFile(path, pidfile)) {
      throw new UsageError(
        `${option} ${
          quote(path)
        } is the supervisor's state file (or its temp file); name another file`,
      );
    }
  }
  if (output !== undefined) {
    if (sameFile(output, pidfile)) {
      throw new UsageError(`--output ${quote(output)} is the pid file`);
    }
    const guardFile = guard ?? `${pidfile}.lock`;
    if (sameFile(output, guardFile)) {
      throw new UsageError(`--output ${quote(output)} is the guard file`);
    }
  }
}

/**
 * As root, refuse a pid file, guard or output file that another user can
 * redirect: a directory on its way that user can write (unless sticky, with
 * root's own file or none next), or a symbolic link on its way that user
 * owns. See {@link checkPathTrusted}.
 *
 * @param options the pid file, the guard and the output file
 * @throws {SystemError} EPERM naming the directory or link and who controls it
 */
export function checkDirectoriesTrusted(
  options: GuardOptions & { readonly output?: string },
): void {
  if (ids.euid() !== 0) return;
  // The record and the supervisor's state file too: one another user made
  // first in a sticky directory would keep root from writing what tells its
  // daemon and keeper apart, and a second start would not know them.
  const paths = [
    options.pidfile,
    options.guard ?? `${options.pidfile}.lock`,
    options.output,
    recordPath(options.pidfile),
    statePath(options.pidfile),
  ];
  for (const path of paths) {
    if (path !== undefined) checkPathTrusted(path);
  }
}

/** The path is the pid file's state file, `PIDFILE.state`, or one of its temp files, `PIDFILE.state.*.tmp`. */
function isStateFile(path: string, pidfile: string): boolean {
  const state = `${normalPath(pidfile)}.state`;
  const full = normalPath(path);
  if (full === state || sameFile(path, state)) return true;
  return full.startsWith(`${state}.`) && full.endsWith(".tmp");
}

/** Two paths name one file: the same path once made absolute and normal, or the same inode. */
function sameFile(a: string, b: string): boolean {
  if (normalPath(a) === normalPath(b)) return true;
  try {
    const sa = lstat(a);
    const sb = lstat(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return false;
  }
}

/**
 * The directory part of a path.
 *
 * @param path the path
 * @returns its directory ("." for a bare name)
 */
export function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return path.slice(0, i);
}

function describePathError(err: unknown, path: string, what: string): unknown {
  return err instanceof SystemError ? explainOpenError(err, path, what) : err;
}
