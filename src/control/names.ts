/**
 * Services by name. A name selects the pid file `DIR/NAME.pid` in one
 * directory of services, so `start --name web`, `status web` and `list`
 * need no path: DIR is `$SINGLETON_RUN_DIR` when set, else
 * `/run/singleton-run` for root, else `$XDG_RUNTIME_DIR/singleton-run`, else
 * `/tmp/singleton-run-UID` (a cron job of another user has no
 * `XDG_RUNTIME_DIR`).
 *
 * Only a launch (`start`, `run`, `restart`) makes DIR, and only once every
 * other check has passed: 0755 for root (so other users may ask for the
 * status), 0700 otherwise. A DIR that another user made (or owns) is
 * refused, by the launches and by `list`; root's walk of the path
 * (`trust.ts`) judges it as any pid file's directory. Without DIR the other
 * commands answer as for a missing pid file, and `list` lists nothing.
 *
 * It stays light (no spawn, no wait): the CLI's parser and `status` load it.
 *
 * @module
 */

import {
  C,
  describeUid,
  ERRNO,
  ids,
  listDirectory,
  lstat,
  makeDirectory,
  quote,
  stat,
  SystemError,
} from "../ffi/mod.ts";
import { UsageError } from "../errors.ts";
import { normalPath } from "./values.ts";

/** The variable that names the directory of services. */
export const SERVICE_DIR_ENV = "SINGLETON_RUN_DIR";

/** Root's directory of services. */
export const ROOT_SERVICE_DIR = "/run/singleton-run";

/** A name: one path component of these characters. */
const NAME_PATTERN = /^[A-Za-z0-9_.@-]+$/;

/**
 * The longest name: NAME.pid and the files beside it (`.lock`, `.record`,
 * `.state` and their temporary files) must fit in one path component.
 */
export const MAX_NAME_LENGTH = 200;

/** The pid file's suffix in the directory of services. */
const PID_SUFFIX = ".pid";

/** A service chosen by name instead of a pid file (the control API's form). */
export interface ServiceName {
  /** The service's name: the pid file is `DIR/NAME.pid` (see {@link serviceDir}). */
  readonly name: string;
  /** Absent: the name selects the pid file. */
  readonly pidfile?: undefined;
}

/**
 * Options that name their pid file, or the same options with a service
 * name in its place.
 */
export type Named<T extends { readonly pidfile: string }> =
  | T
  | (Omit<T, "pidfile"> & ServiceName);

/**
 * The directory of services, as this process would use it now.
 *
 * @returns an absolute path; it may not exist
 */
export function serviceDir(): string {
  const given = Deno.env.get(SERVICE_DIR_ENV);
  if (given !== undefined && given !== "") return normalPath(given);
  const euid = ids.euid();
  if (euid === 0) return ROOT_SERVICE_DIR;
  const runtime = Deno.env.get("XDG_RUNTIME_DIR");
  if (runtime !== undefined && runtime.startsWith("/")) {
    return `${normalPath(runtime)}/singleton-run`;
  }
  return `/tmp/singleton-run-${euid}`;
}

/**
 * Check a service's name: one path component of letters, digits, `_`,
 * `.`, `@` and `-`, not `.` or `..`, at most {@link MAX_NAME_LENGTH} long.
 *
 * @param name the name as given
 * @returns the name
 * @throws {UsageError} for anything else
 */
export function checkServiceName(name: string): string {
  if (
    !NAME_PATTERN.test(name) || name === "." || name === ".." || name.length > MAX_NAME_LENGTH
  ) {
    throw new UsageError(
      `bad service name ${quote(name)}: expected one path component of letters, digits and ` +
        `_ . @ - (not . or .., at most ${MAX_NAME_LENGTH} characters)`,
    );
  }
  return name;
}

/**
 * The pid file a name selects. Nothing is made or checked on disk.
 *
 * @param name the service's name
 * @returns `DIR/NAME.pid`
 * @throws {UsageError} for a bad name
 */
export function servicePidfile(name: string): string {
  return `${serviceDir()}/${checkServiceName(name)}${PID_SUFFIX}`;
}

/**
 * Options with a pid file, a name turned into its pid file.
 *
 * @param options a pid file, or a `name` in its place
 * @returns the same options with `pidfile` set
 * @throws {UsageError} for a bad name, or neither given
 */
export function withPidfile<T extends { readonly pidfile: string }>(options: Named<T>): T {
  if (options.pidfile !== undefined) return options as T;
  const { name } = options as ServiceName;
  if (name === undefined) throw new UsageError("missing pidfile or name");
  return { ...options, pidfile: servicePidfile(name) } as unknown as T;
}

/**
 * Whether a pid file lies in the directory of services (so a launch makes
 * that directory when it is missing).
 *
 * @param pidfile the pid file
 * @returns the directory, or undefined for a pid file elsewhere
 */
export function serviceDirOf(pidfile: string): string | undefined {
  const dir = serviceDir();
  const full = normalPath(pidfile);
  return full.slice(0, full.lastIndexOf("/")) === dir ? dir : undefined;
}

/**
 * Make the directory of services when it is missing (0755 for root, 0700
 * otherwise), and check it (see {@link checkServiceDir}).
 *
 * @param dir the directory
 * @throws {SystemError} when it cannot be made (its parent is missing, no
 *   permission) or may not be trusted
 */
export function prepareServiceDir(dir: string): void {
  makeDirectory(dir, ids.euid() === 0 ? 0o755 : 0o700);
  checkServiceDir(dir);
}

/**
 * Refuse a directory of services that another user owns (or a link to one
 * that another user owns): that user could swap the pid files in it. Root's
 * walk of every directory above it is `trust.ts`'s, made by the launch.
 *
 * @param dir the directory
 * @returns false when it does not exist
 * @throws {SystemError} EPERM for one owned by another user, ENOTDIR for
 *   something else than a directory
 */
export function checkServiceDir(dir: string): boolean {
  let link;
  let st;
  try {
    link = lstat(dir);
    st = (link.mode & C.S_IFMT) === C.S_IFLNK ? stat(dir) : link;
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) return false;
    throw err;
  }
  const euid = ids.euid();
  for (const owner of [link.uid, st.uid]) {
    if (owner !== euid && owner !== 0) {
      throw new SystemError("open", ERRNO.EPERM, {
        path: dir,
        message: `refusing the directory of services ${quote(dir)}: it belongs to ${
          describeUid(owner)
        }, not to you or root (set ${SERVICE_DIR_ENV} to use another)`,
      });
    }
  }
  if ((st.mode & C.S_IFMT) !== C.S_IFDIR) {
    throw new SystemError("open", ERRNO.ENOTDIR, {
      path: dir,
      message: `the directory of services ${quote(dir)} is not a directory`,
    });
  }
  return true;
}

/**
 * The services in a directory: every `NAME.pid` whose NAME is a name.
 *
 * @param dir the directory of services
 * @returns the names, sorted; none when the directory does not exist
 * @throws {SystemError} for a directory another user owns, or one that cannot be read
 */
export function serviceNames(dir: string): string[] {
  if (!checkServiceDir(dir)) return [];
  const names: string[] = [];
  for (const entry of listDirectory(dir)) {
    if (!entry.endsWith(PID_SUFFIX)) continue;
    const name = entry.slice(0, -PID_SUFFIX.length);
    if (NAME_PATTERN.test(name) && name !== "." && name !== "..") names.push(name);
  }
  return names.sort();
}
