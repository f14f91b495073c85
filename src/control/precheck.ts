/**
 * The checks made before anything is created: the paths (see paths.ts), the
 * waits, the user, the working directory and the command are refused with
 * one line each before the guard file exists, so bad input leaves nothing
 * behind. Then the pid file is locked.
 *
 * @module
 */

import {
  C,
  ERRNO,
  ids,
  lookupGroup,
  lookupUser,
  quote,
  statfsType,
  SystemError,
  type User,
} from "../ffi/mod.ts";
import { AlreadyRunningError, PidFile } from "../lock/pidfile.ts";
import { fileIdentity, lockHolder } from "../lock/holders.ts";
import { keeperOf } from "./kept.ts";
import { resolveCommand } from "../launch/spawn.ts";
import { NOTIFY_FD_ENV, NOTIFY_SOCKET_ENV } from "../launch/readiness.ts";
import { UsageError } from "../errors.ts";
import type { SuperviseSettings } from "../supervisor/settings.ts";
import { parseOutput } from "./values.ts";
import { checkWaits, type GuardOptions, type LaunchOptions } from "./options.ts";
import { checkDirectoriesTrusted, checkPathsDiffer, dirname, precheckPidfile } from "./paths.ts";

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
    readonly supervise?: SuperviseSettings;
  },
  defaults: { cwd: string; keepNotify: boolean },
): Prepared {
  if (options.command.length === 0) throw new UsageError("missing COMMAND");
  const user = options.user === undefined ? undefined : resolveUser(options.user);
  const env = daemonEnv(options.env, user?.user, defaults.keepNotify);
  const path = resolveCommand(options.command[0]!, env, Deno.cwd());
  const cwd = options.chdir ?? defaults.cwd;
  checkDirectory(cwd);
  const paths = { ...options, output: outputFile(options) };
  checkPathsDiffer(paths);
  checkWaits(options);
  checkDirectoriesTrusted(paths);
  precheckPidfile(options.pidfile);
  return {
    path,
    argv: options.command,
    env,
    cwd,
    ...(user ? { user } : {}),
  };
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
  const st = fileIdentity(err.path);
  if (st && keeperOf(st, err.pid) !== undefined) return err; // a keeper holds it for the daemon
  const holder = lockHolder(err.path, err.pid);
  return holder === err.pid ? err : new AlreadyRunningError(err.path, holder);
}

/**
 * The file that receives the daemon's output: `output`, or the supervisor's
 * `--output` when it names a file (with `run --supervise` only the
 * supervisor has it), so both get the same path checks.
 */
function outputFile(
  options: { readonly output?: string; readonly supervise?: SuperviseSettings },
): string | undefined {
  if (options.output !== undefined) return options.output;
  const own = options.supervise?.output;
  if (own === undefined) return undefined;
  const target = parseOutput(own);
  return target.kind === "file" ? target.path : undefined;
}
