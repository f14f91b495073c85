/**
 * The plan for the process that becomes the daemon, and what was launched:
 * the contract between the control layer, which decides what to start, and
 * whoever starts it (a plain spawn, the privilege-drop stage, or the
 * supervisor).
 *
 * @module
 */

import type { User } from "../ffi/mod.ts";
import type { FdSource } from "./spawn.ts";

/** The plan for the process that becomes the daemon, as the launcher gets it. */
export interface DaemonPlan {
  /** The program, absolute. */
  readonly path: string;
  /** Its argv, `argv[0]` included. */
  readonly argv: readonly string[];
  /** Its whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** Its working directory. */
  readonly cwd: string;
  /** Its umask. */
  readonly umask: number;
  /** Its descriptors: 0-2 (stdio), 3 (the pid file lock), any notification fd. */
  readonly fds: Readonly<Record<number, FdSource>>;
  /** The account to run as, if any. */
  readonly user?: User;
  /** The primary group for `user`. */
  readonly gid?: number;
}

/** The process that became the daemon. */
export interface LaunchedDaemon {
  /** Its pid: the pid file names it. */
  readonly pid: number;
  /** With `--user`: the stage's error pipe, end of file once it has exec'd the command. */
  readonly stageErrorFd?: number;
}
