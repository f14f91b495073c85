/**
 * Programs that daemonize themselves: the process launched forks, its child
 * (or grandchild, after a second fork) runs on as the daemon, and the
 * launched process exits 0. The launcher is a child subreaper while it
 * starts them, so every process left behind is reparented to it and nothing
 * escapes, not even through a double fork; this module says which of them
 * is the daemon's main process.
 *
 * The program's own pid file (`--daemon-pidfile`) names it when the user
 * gives one: read, never written, and trusted only when the pid in it is a
 * descendant of the launcher (a stale file from an earlier run names
 * nothing this start launched). Without it, the main process is the one
 * process left; with several, nobody guesses.
 *
 * @module
 */

import { close, ERRNO, openBeside, quote, readBounded, SystemError } from "../ffi/mod.ts";
import { childrenOf, descendsFrom } from "../ffi/proc.ts";
import { parsePid } from "../lock/pidfile.ts";

/** What a search for the main process found. */
export type MainSearch =
  /** The main process. */
  | { readonly kind: "found"; readonly pid: number }
  /** Nothing this launch started runs any more. */
  | { readonly kind: "none" }
  /** Processes run, but the daemon's pid file does not name one of them yet. */
  | { readonly kind: "waiting"; readonly why: string }
  /** Several processes were left and nothing says which is the daemon. */
  | { readonly kind: "several"; readonly pids: readonly number[] };

/** Where to look. */
export interface MainSearchOptions {
  /** The launcher: a child subreaper, so what its child left is reparented to it. */
  readonly parent: number;
  /** The program's own pid file, when the user named it. */
  readonly daemonPidfile?: string;
  /** Children the launcher had before this launch: not part of it. */
  readonly ignore?: ReadonlySet<number>;
}

/**
 * Find the main process of a program whose launched process has exited.
 *
 * @param options the launcher, the program's pid file, children to leave out
 * @returns what was found
 * @throws {SystemError} when the program's pid file cannot be read safely
 *   (a link, a FIFO, a file with several names)
 */
export function findMain(options: MainSearchOptions): MainSearch {
  const left = childrenOf(options.parent).filter((pid) => !options.ignore?.has(pid));
  if (options.daemonPidfile !== undefined) {
    const named = readDaemonPidfile(options.daemonPidfile);
    if (named !== undefined && launchedBy(named, options)) return { kind: "found", pid: named };
    if (left.length === 0) return { kind: "none" };
    return {
      kind: "waiting",
      why: named === undefined
        ? `--daemon-pidfile ${quote(options.daemonPidfile)} names no process yet`
        : `--daemon-pidfile ${
          quote(options.daemonPidfile)
        } names pid ${named}, which this start did not launch`,
    };
  }
  if (left.length === 0) return { kind: "none" };
  if (left.length === 1) return { kind: "found", pid: left[0]! };
  return { kind: "several", pids: left };
}

/**
 * The pid the program's pid file names now, while it is a descendant of the
 * launcher, or undefined.
 *
 * @param options the launcher and the program's pid file
 * @returns the pid, or undefined (no file yet, no pid in it, or not ours)
 */
export function namedByDaemonPidfile(options: MainSearchOptions): number | undefined {
  if (options.daemonPidfile === undefined) return undefined;
  const named = readDaemonPidfile(options.daemonPidfile);
  return named !== undefined && launchedBy(named, options) ? named : undefined;
}

/** The one line for a launch that left several processes. */
export function severalMessage(pids: readonly number[]): string {
  return `the program forked away and left ${pids.length} processes (pids ${
    pids.join(", ")
  }); cannot tell which is the daemon: name its pid file with --daemon-pidfile FILE`;
}

function launchedBy(pid: number, options: MainSearchOptions): boolean {
  return !options.ignore?.has(pid) && descendsFrom(pid, options.parent);
}

/**
 * The pid in the program's pid file: opened like every file read beside a
 * pid file (no link followed, no FIFO waited on), never written.
 */
function readDaemonPidfile(path: string): number | undefined {
  let fd: number;
  try {
    ({ fd } = openBeside(path, { what: "daemon pid file", access: "read" }));
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) return undefined;
    throw err;
  }
  try {
    return parsePid(readBounded(fd, 65));
  } finally {
    close(fd);
  }
}
