/**
 * glibc's posix_spawn with its file actions and attributes, typed: the fork
 * and the exec happen in C, so no JavaScript runs in a forked copy of this
 * process (which V8 does not survive). The policy (which descriptor goes
 * where, what a failure means to a user) is the caller's.
 *
 * @module
 */

import { checkReturned, libc } from "./libc.ts";
import { cstr, CStringArray } from "./cstring.ts";
import { linux } from "./platform.ts";
import { listDirectory, umask as setUmask } from "./sys.ts";

/** What {@link posixSpawn} does between the fork and the exec, and what it execs. */
export interface PosixSpawnRequest {
  /** The program, an absolute path. */
  readonly path: string;
  /** The whole argv, `argv[0]` included. */
  readonly argv: readonly string[];
  /** The whole environment, as `KEY=VALUE` entries. */
  readonly env: readonly string[];
  /** `dup2(from, to)` in this order. */
  readonly dup2: readonly (readonly [from: number, to: number])[];
  /** Descriptors to close. */
  readonly close: readonly number[];
  /** Close every descriptor from this number up. */
  readonly closeFrom?: number;
  /** The directory to change to (glibc 2.29 or later). */
  readonly cwd?: string;
  /** Start a new session (setsid). */
  readonly newSession?: boolean;
  /** Start a new process group led by the child (ignored with `newSession`). */
  readonly newProcessGroup?: boolean;
  /** The umask the child starts with (set around the call in this process). */
  readonly umask?: number;
}

/**
 * posix_spawn(3) with every signal unblocked and at its default action in
 * the child.
 *
 * @param request what to run and how
 * @returns the child's pid
 * @throws {SystemError} from `posix_spawn` with the error it returned (the
 *   exec's ENOENT, EACCES, ENOEXEC, or the chdir's), or from a file action
 * @throws {TypeError} when a string holds a NUL byte
 */
export function posixSpawn(request: PosixSpawnRequest): number {
  const c = libc();
  const fa = new Uint8Array(linux.SIZEOF_FILE_ACTIONS);
  const attr = new Uint8Array(linux.SIZEOF_SPAWNATTR);
  checkReturned(c.posix_spawn_file_actions_init(fa), "posix_spawn_file_actions_init");
  checkReturned(c.posix_spawnattr_init(attr), "posix_spawnattr_init");
  try {
    for (const [from, to] of request.dup2) {
      checkReturned(
        c.posix_spawn_file_actions_adddup2(fa, from, to),
        "posix_spawn_file_actions_adddup2",
      );
    }
    for (const fd of request.close) addClose(fa, fd);
    if (request.closeFrom !== undefined) closeFrom(fa, request.closeFrom);
    // Held until the call returns: the file actions point into it.
    const dir = request.cwd === undefined ? undefined : cstr(request.cwd, "path");
    if (dir !== undefined) {
      if (!c.posix_spawn_file_actions_addchdir_np) {
        throw new Error("setting the working directory needs glibc 2.29 or later");
      }
      checkReturned(
        c.posix_spawn_file_actions_addchdir_np(fa, dir),
        "posix_spawn_file_actions_addchdir_np",
      );
    }
    let flags = linux.POSIX_SPAWN_SETSIGMASK | linux.POSIX_SPAWN_SETSIGDEF;
    if (request.newSession) flags |= linux.POSIX_SPAWN_SETSID;
    else if (request.newProcessGroup) flags |= linux.POSIX_SPAWN_SETPGROUP;
    const empty = new Uint8Array(linux.SIZEOF_SIGSET);
    const all = new Uint8Array(linux.SIZEOF_SIGSET);
    c.sigemptyset(empty);
    c.sigfillset(all);
    checkReturned(c.posix_spawnattr_setsigmask(attr, empty), "posix_spawnattr_setsigmask");
    checkReturned(c.posix_spawnattr_setsigdefault(attr, all), "posix_spawnattr_setsigdefault");
    if (flags & linux.POSIX_SPAWN_SETPGROUP) {
      checkReturned(c.posix_spawnattr_setpgroup(attr, 0), "posix_spawnattr_setpgroup");
    }
    checkReturned(c.posix_spawnattr_setflags(attr, flags), "posix_spawnattr_setflags");

    const path = cstr(request.path, "program path");
    const argv = new CStringArray(request.argv, "argument");
    const envp = new CStringArray(request.env, "environment entry");
    const pid = new Int32Array(1);
    const oldMask = request.umask === undefined ? undefined : setUmask(request.umask);
    let rc: number;
    try {
      rc = c.posix_spawn(pid, path, fa, attr, argv.buffer, envp.buffer);
    } finally {
      if (oldMask !== undefined) setUmask(oldMask);
    }
    checkReturned(rc, "posix_spawn", { path: request.path });
    return pid[0]!;
  } finally {
    c.posix_spawn_file_actions_destroy(fa);
    c.posix_spawnattr_destroy(attr);
  }
}

function addClose(fa: Uint8Array<ArrayBuffer>, fd: number): void {
  checkReturned(
    libc().posix_spawn_file_actions_addclose(fa, fd),
    "posix_spawn_file_actions_addclose",
  );
}

function closeFrom(fa: Uint8Array<ArrayBuffer>, from: number): void {
  const c = libc();
  if (c.posix_spawn_file_actions_addclosefrom_np) {
    checkReturned(
      c.posix_spawn_file_actions_addclosefrom_np(fa, from),
      "posix_spawn_file_actions_addclosefrom_np",
    );
    return;
  }
  // Before glibc 2.34: close what is open now (a closed one is ignored by glibc).
  for (const name of listDirectory("/proc/self/fd")) {
    const fd = Number(name);
    if (fd >= from) addClose(fa, fd);
  }
}
