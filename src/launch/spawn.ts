/**
 * Start a program with glibc's posix_spawn: the fork and the exec happen in
 * C, so no JavaScript runs in a forked copy of this process (which V8 does
 * not survive). Everything a daemon needs is set up on the way: a new
 * session, a working directory, a umask, exactly the descriptors asked for
 * (every other one closed), and signals back at their defaults.
 *
 * @module
 */

import {
  C,
  close,
  cstr,
  dupCloexec,
  ERRNO,
  getrlimit,
  isExecutable,
  open,
  posixSpawn,
  quote,
  readSmallFile,
  SystemError,
} from "../ffi/mod.ts";

/** Where a child's descriptor comes from: a descriptor of ours, or /dev/null. */
export type FdSource = number | "null";

/** Options of {@link spawn}. */
export interface SpawnOptions {
  /** The program: an absolute path (see {@link resolveCommand}). */
  readonly path: string;
  /** The whole argv, `argv[0]` included. */
  readonly argv: readonly string[];
  /** The whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The working directory to change to before exec. */
  readonly cwd?: string;
  /** The umask the program starts with. */
  readonly umask?: number;
  /** Start a new session (setsid): no controlling terminal, its own process group. */
  readonly newSession?: boolean;
  /** Start a new process group led by the child (ignored with `newSession`). */
  readonly newProcessGroup?: boolean;
  /**
   * The child's descriptors: child fd number to our descriptor (or "null").
   * Descriptors 0, 1 and 2 default to /dev/null; every descriptor not named
   * here is closed in the child.
   */
  readonly fds?: Readonly<Record<number, FdSource>>;
}

let devNull: number | undefined;

function nullFd(): number {
  devNull ??= open("/dev/null", C.O_RDWR | C.O_CLOEXEC);
  return devNull;
}

/**
 * Start a program and return its pid at once. The exec has happened (or
 * failed, which is thrown) by the time this returns.
 *
 * @param options what to run and how
 * @returns the child's pid
 * @throws {SystemError} when the program cannot be executed (ENOENT, EACCES,
 *   ENOEXEC), the working directory is missing, or a descriptor is bad
 * @throws {TypeError} when an argument or environment entry holds a NUL byte
 */
export function spawn(options: SpawnOptions): number {
  const wanted: Record<number, FdSource> = { 0: "null", 1: "null", 2: "null", ...options.fds };
  const targets = Object.keys(wanted).map(Number).sort((a, b) => a - b);
  const top = targets[targets.length - 1]!;
  checkDescriptorRoom(top, targets.length);
  // Move every source above every target, so no dup2 overwrites a source
  // that a later dup2 still reads, and dup2(fd, fd) never arises.
  const moved: number[] = [];
  try {
    const dup2: [number, number][] = [];
    for (const target of targets) {
      const source = wanted[target]!;
      const high = dupCloexec(source === "null" ? nullFd() : source, top + 1);
      moved.push(high);
      dup2.push([high, target]);
    }
    const unwanted: number[] = [];
    for (let fd = 0; fd < top; fd++) if (!(fd in wanted)) unwanted.push(fd);
    try {
      return posixSpawn({
        path: options.path,
        argv: options.argv,
        env: envEntries(options.env),
        dup2,
        close: unwanted,
        closeFrom: top + 1,
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
        ...(options.umask === undefined ? {} : { umask: options.umask }),
        ...(options.newSession ? { newSession: true } : {}),
        ...(options.newProcessGroup ? { newProcessGroup: true } : {}),
      });
    } catch (err) {
      if (err instanceof SystemError && err.syscall === "posix_spawn") {
        throw spawnError(err.errno, options);
      }
      throw err;
    }
  } finally {
    for (const fd of moved) close(fd);
  }
}

function envEntries(env: Readonly<Record<string, string>>): string[] {
  return Object.entries(env).map(([k, v]) => {
    if (k === "" || k.includes("=")) {
      throw new TypeError(
        `environment variable name must be non-empty and free of "=": ${JSON.stringify(k)}`,
      );
    }
    return `${k}=${v}`;
  });
}

function spawnError(rc: number, options: SpawnOptions): SystemError {
  const what = (() => {
    switch (rc) {
      case ERRNO.ENOENT:
        return missingWhat(options);
      case ERRNO.EACCES:
        return "permission denied";
      case ERRNO.ENOEXEC:
        return "not an executable format";
      case ERRNO.ENOTDIR:
        return "a path component is not a directory";
      default:
        return undefined;
    }
  })();
  return new SystemError("posix_spawn", rc, {
    path: options.path,
    ...(what === undefined ? {} : { message: `cannot run ${quote(options.path)}: ${what}` }),
  });
}

/**
 * What ENOENT from posix_spawn means: the program is missing, the working
 * directory is, or (the program being there) the interpreter its `#!` line
 * names.
 */
function missingWhat(options: SpawnOptions): string {
  if (programKind(options.path) === "missing") return "no such file";
  const interpreter = missingInterpreter(options.path);
  if (interpreter !== undefined) return interpreter;
  return options.cwd === undefined
    ? "no such file"
    : `no such file, or no directory ${quote(options.cwd)}`;
}

/**
 * Follow a script's `#!` line (and its interpreter's, for a script run by a
 * script, as the kernel does up to a few levels) to the first interpreter
 * that does not exist.
 *
 * @returns what is missing, in words, or undefined when nothing is
 */
function missingInterpreter(path: string): string | undefined {
  const chain: string[] = [];
  let current = path;
  for (let depth = 0; depth < 4; depth++) {
    const interpreter = shebangInterpreter(current);
    if (interpreter === undefined) return undefined;
    chain.push(interpreter);
    if (programKind(interpreter) === "missing") {
      const [first, ...rest] = chain;
      const scripts = rest.map((i) => ` is a script whose interpreter ${quote(i)}`).join("");
      return `its interpreter ${quote(first!)} (the #! line)${scripts} does not exist`;
    }
    current = interpreter;
  }
  return undefined;
}

/** The interpreter a script's `#!` line names, if it has one. */
function shebangInterpreter(path: string): string | undefined {
  let head: string;
  try {
    head = readSmallFile(path, 256);
  } catch {
    return undefined;
  }
  const m = /^#![ \t]*([^ \t\n]+)/.exec(head);
  return m?.[1];
}

/**
 * Check that descriptor number `top` can be handed to a child: spawn first
 * copies each source above the highest target, so the open-file limit must
 * leave room for those copies.
 */
function checkDescriptorRoom(top: number, count: number): void {
  let soft: bigint;
  try {
    soft = getrlimit(C.RLIMIT_NOFILE)[0];
  } catch {
    return;
  }
  if (BigInt(top + count) < soft) return;
  throw new SystemError("fcntl", ERRNO.EMFILE, {
    path: `fd ${top}`,
    message: `cannot give the program descriptor ${top}: the open-file limit ` +
      `(ulimit -n ${soft}) must be at least ${top + count + 1}`,
  });
}

/**
 * Find the program a command names, as the shell would, and check that it
 * can be executed, so a mistake is reported before anything starts.
 *
 * @param command a name to search in `PATH`, or a path (relative to `cwd`)
 * @param env the environment whose `PATH` to search
 * @param cwd the directory a relative path is relative to
 * @returns an absolute path
 * @throws {SystemError} ENOENT "command not found", EACCES "not executable",
 *   EISDIR for a directory
 */
export function resolveCommand(
  command: string,
  env: Readonly<Record<string, string | undefined>> = Deno.env.toObject(),
  cwd: string = Deno.cwd(),
): string {
  if (command === "") {
    throw new SystemError("execve", ERRNO.ENOENT, { path: command, message: "empty command name" });
  }
  cstr(command, "command");
  if (command.includes("/")) {
    const path = command.startsWith("/") ? command : `${cwd.replace(/\/$/, "")}/${command}`;
    checkProgram(path, command, true);
    return checkInterpreter(path);
  }
  const dirs = (env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":");
  let denied: string | undefined;
  for (const dir of dirs) {
    const path = `${dir === "" ? "." : dir}/${command}`;
    const kind = programKind(path);
    if (kind === "ok") return checkInterpreter(path.startsWith("/") ? path : `${cwd}/${path}`);
    if (kind === "denied") denied ??= path;
  }
  if (denied) checkProgram(denied, command, true);
  throw new SystemError("execve", ERRNO.ENOENT, {
    path: command,
    message: `command not found: ${quote(command)} (searched PATH)`,
  });
}

/**
 * Refuse, before anything starts, a script whose `#!` interpreter is missing:
 * exec would fail with a bare ENOENT that names the script, not what is
 * missing.
 */
function checkInterpreter(path: string): string {
  const missing = missingInterpreter(path);
  if (missing === undefined) return path;
  throw new SystemError("execve", ERRNO.ENOENT, {
    path,
    message: `cannot run ${quote(path)}: ${missing}`,
  });
}

function programKind(path: string): "ok" | "missing" | "denied" | "directory" {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    return "missing";
  }
  if (info.isDirectory) return "directory";
  return info.isFile && isExecutable(path) ? "ok" : "denied";
}

function checkProgram(path: string, command: string, named: boolean): void {
  switch (programKind(path)) {
    case "ok":
      return;
    case "missing":
      throw new SystemError("execve", ERRNO.ENOENT, {
        path,
        message: `command not found: ${quote(command)}${named ? "" : " (searched PATH)"}`,
      });
    case "directory":
      throw new SystemError("execve", ERRNO.EISDIR, {
        path,
        message: `cannot run ${quote(path)}: it is a directory`,
      });
    case "denied":
      throw new SystemError("execve", ERRNO.EACCES, {
        path,
        message: `cannot run ${quote(path)}: not an executable file (permission denied)`,
      });
  }
}
