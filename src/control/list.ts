/**
 * `list`: the status of every service in the directory of services, and of
 * any pid file named besides, in one process. Each is exactly what
 * `status` reports for it (one definition of a service's status), with its
 * name; nothing waits, and nothing is loaded that a status does not load.
 *
 * @module
 */

import { serviceDir, serviceNames } from "./names.ts";
import type { StatusReport } from "./options.ts";
import { status } from "./status.ts";

/** One service's status, and its name. */
export interface ServiceReport extends StatusReport {
  /** Its name in the directory of services, or the pid file's path as given. */
  readonly name: string;
}

/** Options of {@link list}. */
export interface ListOptions {
  /** Pid files to report on besides the directory of services, each named by its path. */
  readonly pidfiles?: readonly string[];
}

/**
 * The status of every service in the directory of services (sorted by
 * name), then of each pid file given.
 *
 * @param options more pid files
 * @returns one report per service; none when the directory does not exist
 * @throws {SystemError} when the directory belongs to another user or cannot be read
 */
export function list(options: ListOptions = {}): ServiceReport[] {
  const dir = serviceDir();
  const named = serviceNames(dir).map((name) => ({ name, pidfile: `${dir}/${name}.pid` }));
  const given = (options.pidfiles ?? []).map((pidfile) => ({ name: pidfile, pidfile }));
  return [...named, ...given].map(({ name, pidfile }) => ({ name, ...status(pidfile) }));
}
