/**
 * The checks made before anything is created: the pid file's path, the
 * user, the working directory and the command are refused with one line each
 * before the guard file exists, so bad input leaves nothing behind.
 *
 * @module
 */

import {
  C,
  ERRNO,
  explainOpenError,
  fileKind,
  type FileStat,
  ids,
  lookupGroup,
  lookupUser,
  lstat,
  quote,
  stat,
  statfsType,
  SystemError,
  type User,
} from "../ffi/mod.ts";
import { AlreadyRunningError, checkPidFileStat, PidFile } from "../lock/pidfile.ts";
import { lockHolder } from "../lock/holders.ts";
import { resolveCommand } from "../launch/spawn.ts";
import { NOTIFY_FD_ENV, NOTIFY_SOCKET_ENV } from "../launch/readiness.ts";
import { UsageError } from "../errors.ts";
import type { GuardOptions, LaunchOptions } from "./options.ts";
import { checkWaitMs } from "./values.ts";

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
 * @throws {SystemError} for a link or a file that is not regular
 */
export function precheckPidfileForRead(path: string): void {
  let st;
  try {
    st = lstat(path);
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) return;
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
}

/**
 * Refuse a guard or output file that is the pid file (or, for the output,
 * the guard), and an empty guard path: each would make the action misread
 * or overwrite its own lock.
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
 * Bound every wait a caller gives: poll(2) takes an int of milliseconds, and
 * the command line's parsers bound theirs the same way.
 *
 * @param options the guard's timeout and, for a start, the readiness waits
 * @throws {UsageError} for a negative, non-number or too long wait
 */
export function checkWaits(
  options: GuardOptions & { readonly readyTimeout?: number; readonly readyAfter?: number },
): void {
  if (options.guardTimeout !== undefined) checkWaitMs(options.guardTimeout, "guardTimeout");
  if (options.readyTimeout !== undefined) checkWaitMs(options.readyTimeout, "readyTimeout");
  if (options.readyAfter !== undefined) checkWaitMs(options.readyAfter, "readyAfter");
}

/**
 * As root, refuse a pid file, guard or output file in a directory that
 * another user can write: that user could rename root's pid file away (and
 * root's next start makes a second instance) or plant a file there first. A
 * sticky directory (such as /tmp) is fine while the file is absent or root's
 * own, since then nobody else can remove or replace it.
 *
 * @param options the pid file, the guard and the output file
 * @throws {SystemError} EPERM naming the directory and who can write it
 */
export function checkDirectoriesTrusted(
  options: GuardOptions & { readonly output?: string },
): void {
  if (ids.euid() !== 0) return;
  const paths = [options.pidfile, options.guard ?? `${options.pidfile}.lock`, options.output];
  for (const path of paths) {
    if (path === undefined) continue;
    const dir = dirname(path);
    let st;
    try {
      st = stat(dir); // a link to a directory (/var/run) is judged as that directory
    } catch {
      continue; // missing: the open says so, in its own words
    }
    const writer = otherWriter(st);
    if (writer === undefined) continue;
    if ((st.mode & STICKY) !== 0 && ownedByRootOrAbsent(path)) continue;
    throw new SystemError("open", ERRNO.EPERM, {
      path,
      message: `refusing ${quote(path)}: its directory ${
        quote(dir)
      } can be written by ${writer}; as root, keep it in a directory only root can write`,
    });
  }
}

/** The sticky bit: in such a directory, only a file's owner may remove or rename it. */
const STICKY = 0o1000;

/** Who other than root may write a directory with this stat, or undefined. */
function otherWriter(st: FileStat): string | undefined {
  if ((st.mode & 0o002) !== 0) return "every user";
  if (st.uid !== 0 && (st.mode & 0o200) !== 0) return `user ${describeUser(st.uid)}`;
  if (st.gid !== 0 && (st.mode & 0o020) !== 0) return `group ${st.gid}`;
  return undefined;
}

function describeUser(uid: number): string {
  try {
    const name = lookupUser(String(uid))?.name;
    return name === undefined ? `uid ${uid}` : `${quote(name)} (uid ${uid})`;
  } catch {
    return `uid ${uid}`;
  }
}

function ownedByRootOrAbsent(path: string): boolean {
  try {
    return lstat(path).uid === 0;
  } catch (err) {
    return err instanceof SystemError && err.errno === ERRNO.ENOENT;
  }
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

/** An absolute path without "." and ".." parts or repeated slashes. */
function normalPath(path: string): string {
  const full = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts: string[] = [];
  for (const part of full.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
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

function warnIfRemote(path: string, warn: ((m: string) => void) | undefined): void {
  if (!warn) return;
  let type: number;
  try {
    type = statfsType(dirname(path));
  } catch {
    return;
  }
  const name = type === C.NFS_SUPER_MAGIC
    ? "NFS"
    : type === C.SMB_SUPER_MAGIC || type === C.CIFS_MAGIC_NUMBER
    ? "SMB/CIFS"
    : type === C.FUSE_SUPER_MAGIC
    ? "FUSE"
    : undefined;
  if (name) {
    warn(
      `warning: pid file ${
        quote(path)
      } is on ${name}; flock(2) may not exclude processes on other hosts`,
    );
  }
}

/** A user spec resolved: the account and the group to run as. */
export interface ResolvedUser {
  readonly user: User;
  readonly gid: number;
}

function resolveUser(spec: string): ResolvedUser {
  if (ids.euid() !== 0) {
    throw new SystemError("setuid", ERRNO.EPERM, {
      message: `--user needs root (this runs as uid ${ids.euid()})`,
    });
  }
  const [name, group] = spec.split(":", 2) as [string, string | undefined];
  const user = lookupUser(name);
  if (!user) {
    throw new SystemError("getpwnam", ERRNO.ENOENT, { message: `no such user: ${quote(name)}` });
  }
  let gid = user.gid;
  if (group !== undefined && group !== "") {
    const g = lookupGroup(group);
    if (g === undefined) {
      throw new SystemError("getgrnam", ERRNO.ENOENT, {
        message: `no such group: ${quote(group)}`,
      });
    }
    gid = g;
  }
  return { user, gid };
}

function checkDirectory(dir: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch {
    throw new SystemError("chdir", ERRNO.ENOENT, {
      path: dir,
      message: `cannot change directory to ${quote(dir)}: no such directory`,
    });
  }
  if (!info.isDirectory) {
    throw new SystemError("chdir", ERRNO.ENOTDIR, {
      path: dir,
      message: `cannot change directory to ${quote(dir)}: not a directory`,
    });
  }
}

/** The controller's environment with the extra variables, minus any readiness channel of its own. */
function daemonEnv(
  extra: Readonly<Record<string, string>> | undefined,
  user: User | undefined,
  keepNotify: boolean,
): Record<string, string> {
  const env = Deno.env.toObject();
  if (!keepNotify) {
    delete env[NOTIFY_SOCKET_ENV];
    delete env[NOTIFY_FD_ENV];
  }
  if (user) {
    env.HOME = user.home;
    env.USER = user.name;
    env.LOGNAME = user.name;
  }
  return { ...env, ...extra };
}

export interface Prepared {
  readonly path: string;
  readonly argv: readonly string[];
  readonly env: Record<string, string>;
  readonly cwd: string;
  readonly user?: ResolvedUser;
}

export function prepareLaunch(
  options: LaunchOptions & GuardOptions & {
    readonly output?: string;
    readonly readyTimeout?: number;
    readonly readyAfter?: number;
  },
  defaults: { cwd: string; keepNotify: boolean },
): Prepared {
  if (options.command.length === 0) throw new UsageError("missing COMMAND");
  const user = options.user === undefined ? undefined : resolveUser(options.user);
  const env = daemonEnv(options.env, user?.user, defaults.keepNotify);
  const path = resolveCommand(options.command[0]!, env, Deno.cwd());
  const cwd = options.chdir ?? defaults.cwd;
  checkDirectory(cwd);
  checkPathsDiffer(options);
  checkWaits(options);
  checkDirectoriesTrusted(options);
  precheckPidfile(options.pidfile);
  return {
    path,
    argv: options.command,
    env,
    cwd,
    ...(user ? { user } : {}),
  };
}

function describePathError(err: unknown, path: string, what: string): unknown {
  return err instanceof SystemError ? explainOpenError(err, path, what) : err;
}

/**
 * Lock the pid file for a start or a run (warning first when it lies on a
 * file system where flock may not exclude other hosts).
 *
 * @param options the pid file and where warnings go
 * @returns the held lock
 * @throws {AlreadyRunningError} naming the process that really holds it
 */
export async function lockPidfile(options: GuardOptions): Promise<PidFile> {
  warnIfRemote(options.pidfile, options.onWarning);
  try {
    return await PidFile.acquire(options.pidfile);
  } catch (err) {
    throw withRealHolder(err);
  }
}

/**
 * An AlreadyRunningError naming the process that really holds the lock,
 * when the pid file names one that is gone or does not hold it.
 */
function withRealHolder(err: unknown): unknown {
  if (!(err instanceof AlreadyRunningError)) return err;
  const holder = lockHolder(err.path, err.pid);
  return holder === err.pid ? err : new AlreadyRunningError(err.path, holder);
}
