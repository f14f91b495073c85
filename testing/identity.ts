/**
 * The cast of an attack on process identity, shared by the identity tests
 * and the stress family that replays them: another user who locks a pid
 * file it can read (a POSIX, OFD or flock read lock, with a forged argv if
 * it likes), an unrelated root process that takes a pid the moment it is
 * free (through /proc/sys/kernel/ns_last_pid) and logs every signal it gets,
 * and a daemon that closes every descriptor it inherited.
 *
 * Everything here is what a user could do from a shell: `setpriv`, a
 * python3 one-liner, a small C program. Nothing imports `src/`.
 *
 * @module
 */

import { exists, isAlive, LineChild, procStat, sleep } from "./process.ts";

/** Runs a command as `nobody` with no supplementary groups. */
export const AS_NOBODY: readonly string[] = [
  "setpriv",
  "--reuid=nobody",
  "--regid=nogroup",
  "--clear-groups",
];
/** nobody's uid. */
export const NOBODY_UID = 65534;
/** The system's python3 (not a user's shim, which `nobody` could not run). */
export const PYTHON = "/usr/bin/python3";
/** The argv a keeper stage carries, as an attacker forges it. */
export const FORGED_KEEPER: readonly string[] = ["--singleton-run-internal", "keeper", "x"];

/**
 * Whether this machine can stage the attacks: root (to be attacked, and to
 * write ns_last_pid), another user to attack from, python3 and gcc.
 *
 * @returns why not, or undefined when it can
 */
export function cannotStage(): string | undefined {
  if (Deno.uid() !== 0) return "needs root to act as nobody and to steer pid reuse";
  for (const tool of ["/usr/bin/setpriv", PYTHON, "/usr/bin/gcc"]) {
    if (!exists(tool)) return `needs ${tool}`;
  }
  return undefined;
}

/**
 * The decoy: `decoy TARGET LOG [SECONDS]` forks until a child gets pid
 * TARGET (writing TARGET-1 to ns_last_pid before each fork), for at most
 * SECONDS (default 20). That child is an unrelated root process in a session
 * of its own: it writes the number of every signal it receives to LOG and
 * runs on (SIGKILL and SIGSTOP cannot be caught: a decoy found dead or
 * stopped got one). The parent prints TARGET and exits 0, or exits 1 when
 * the pid never came.
 */
const DECOY_C = `
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static int logfd = -1;
static void logged(int s) {
  char b[4]; int n = 0;
  if (s >= 10) b[n++] = '0' + s / 10;
  b[n++] = '0' + s % 10; b[n++] = '\\n';
  (void)!write(logfd, b, n);
}
int main(int argc, char **argv) {
  if (argc < 3) return 2;
  long target = atol(argv[1]);
  logfd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (target < 2 || logfd < 0) return 2;
  time_t until = time(NULL) + (argc > 3 ? atol(argv[3]) : 20);
  while (time(NULL) < until) {
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
    if (fd < 0) return 3;
    char b[24]; int n = snprintf(b, sizeof b, "%ld", target - 1);
    int ok = write(fd, b, n) == n; close(fd);
    if (!ok) return 3;
    pid_t p = fork();
    if (p < 0) return 4;
    if (p == 0) {
      if (getpid() != target) _exit(0);
      struct sigaction sa = {0}; sa.sa_handler = logged; sa.sa_flags = SA_RESTART;
      for (int s = 1; s < NSIG; s++) if (s != SIGKILL && s != SIGSTOP) sigaction(s, &sa, NULL);
      setsid();
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0); dup2(null, 1); dup2(null, 2);
      for (;;) pause();
    }
    if (p == target) { printf("%d\\n", p); return 0; }
    waitpid(p, NULL, 0);
    usleep(1000);
  }
  return 1;
}
`;

/**
 * The daemon that closes its descriptors: every one from 3 up but
 * `$NOTIFY_FD`, then it says it is ready there (so a start's keeper check
 * comes after the close, never before), closes that one too, and sleeps.
 * Run as `python3 FILE MARK`: MARK names its instances.
 */
const CLOSER_PY = `import os, sys, time
n = int(os.environ.get("NOTIFY_FD", "0"))
for fd in range(3, 1024):
    if fd != n:
        try:
            os.close(fd)
        except OSError:
            pass
if n:
    os.write(n, b"\\n")
    os.close(n)
time.sleep(100000)
`;

/**
 * The attacker: opens the file read-only (as any user may a 0644 file),
 * prints `open`, takes a read lock of the kind asked for (waiting for it),
 * prints `locked`, and holds it until its stdin closes.
 */
const ATTACKER_PY = `import fcntl, os, struct, sys
path, kind = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
print("open", flush=True)
if kind == "posix":
    fcntl.lockf(fd, fcntl.LOCK_SH)
elif kind == "ofd":
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0))
else:
    fcntl.flock(fd, fcntl.LOCK_SH)
print("locked", flush=True)
sys.stdin.read()
`;

/** The programs an identity attack needs, built in a directory. */
export interface Cast {
  /** The compiled decoy. */
  readonly decoy: string;
  /** The python script of the daemon that closes its descriptors. */
  readonly closer: string;
}

/**
 * Write and build the decoy and the closing daemon in `dir` (readable by
 * every user, so `nobody` may run what it needs).
 *
 * @param dir a directory of root's
 * @returns their paths
 */
export async function buildCast(dir: string): Promise<Cast> {
  const source = `${dir}/decoy.c`;
  const decoy = `${dir}/decoy`;
  const closer = `${dir}/closer.py`;
  Deno.writeTextFileSync(source, DECOY_C);
  Deno.writeTextFileSync(closer, CLOSER_PY, { mode: 0o644 });
  const cc = await new Deno.Command("gcc", {
    args: ["-O2", "-Wall", "-o", decoy, source],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!cc.success) throw new Error(`gcc decoy.c: ${new TextDecoder().decode(cc.stderr)}`);
  return { decoy, closer };
}

/** The argv of one instance of the closing daemon. */
export function closerArgv(cast: Cast, mark: string): string[] {
  return [PYTHON, cast.closer, mark];
}

/** The start time (clock ticks since boot) of a live process, or undefined. */
function startTicks(pid: number): number | undefined {
  try {
    return Number(procStat(pid)[19]);
  } catch {
    return undefined;
  }
}

/**
 * An unrelated root process that took a pid someone else had, and logs
 * every signal it gets. Disposing of it kills it, by pid, only while that
 * pid is still this decoy (same start time).
 */
export class Decoy implements AsyncDisposable {
  /** Its pid: the reused one. */
  readonly pid: number;
  readonly #log: string;
  readonly #ticks: number | undefined;

  private constructor(pid: number, log: string) {
    this.pid = pid;
    this.#log = log;
    this.#ticks = startTicks(pid);
  }

  /**
   * Wait (at most `seconds`) until `pid` is free, then take it.
   *
   * @param cast the built decoy
   * @param pid the pid to take
   * @param log the file its signals go to
   * @param seconds the longest wait
   * @returns the decoy, or undefined when the pid never came free to us
   */
  static async take(
    cast: Cast,
    pid: number,
    log: string,
    seconds = 20,
  ): Promise<Decoy | undefined> {
    const out = await new Deno.Command(cast.decoy, {
      args: [String(pid), log, String(seconds)],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout((seconds + 5) * 1000),
    }).output();
    if (!out.success || Number(new TextDecoder().decode(out.stdout).trim()) !== pid) {
      return undefined;
    }
    return new Decoy(pid, log);
  }

  /** Whether it is still this process and not a zombie (a SIGKILL cannot be logged: it shows here). */
  get alive(): boolean {
    return isAlive(this.pid) && startTicks(this.pid) === this.#ticks;
  }

  /** The numbers of the signals it got, in order. */
  signals(): number[] {
    try {
      return Deno.readTextFileSync(this.#log).split("\n").filter((l) => l !== "").map(Number);
    } catch {
      return [];
    }
  }

  /** What happened to it, for a failure message: "untouched", or the signals and whether it died. */
  describe(): string {
    const got = this.signals();
    const state = this.alive ? "alive" : "dead (SIGKILL or gone)";
    return got.length === 0 && this.alive
      ? `decoy ${this.pid} untouched`
      : `decoy ${this.pid} got signals [${got.join(", ")}], now ${state}`;
  }

  /** Whether it got no signal at all and still runs. */
  get untouched(): boolean {
    return this.alive && this.signals().length === 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.alive) return;
    try {
      Deno.kill(this.pid, "SIGKILL");
    } catch {
      return;
    }
    const deadline = performance.now() + 5000;
    while (isAlive(this.pid) && startTicks(this.pid) === this.#ticks) {
      if (performance.now() > deadline) break;
      await sleep(10);
    }
  }
}

/** A read lock another user can take on a file it may read. */
export type LockKind = "posix" | "ofd" | "flock";

/** Every kind of read lock. */
export const LOCK_KINDS: readonly LockKind[] = ["posix", "ofd", "flock"];

/**
 * Another user (`nobody`) holding a read lock on a file: a python3 process
 * whose argv may carry anything after its own arguments (a forged keeper
 * role, say). Disposing of it kills it, by pid.
 */
export class Attacker implements AsyncDisposable {
  readonly #child: LineChild;
  /** How it locks. */
  readonly kind: LockKind;

  private constructor(child: LineChild, kind: LockKind) {
    this.#child = child;
    this.kind = kind;
  }

  /**
   * Start one and wait until it has the file open (not yet the lock: a
   * flock read lock waits while the daemon holds its exclusive one).
   *
   * @param path the file
   * @param kind which read lock
   * @param argvTail extra arguments its argv shows (it ignores them)
   * @returns the attacker
   */
  static async open(
    path: string,
    kind: LockKind,
    argvTail: readonly string[] = [],
  ): Promise<Attacker> {
    const child = new LineChild(AS_NOBODY[0]!, [
      ...AS_NOBODY.slice(1),
      PYTHON,
      "-c",
      ATTACKER_PY,
      path,
      kind,
      ...argvTail,
    ]);
    const attacker = new Attacker(child, kind);
    try {
      const first = await child.line(10_000);
      if (first !== "open") throw new Error(`attacker said ${JSON.stringify(first)}, not "open"`);
    } catch (err) {
      await attacker[Symbol.asyncDispose]();
      throw err;
    }
    return attacker;
  }

  /**
   * Start one and wait until it holds its lock.
   *
   * @param path the file
   * @param kind which read lock
   * @param argvTail extra arguments its argv shows
   * @returns the attacker, holding the lock
   */
  static async lock(
    path: string,
    kind: LockKind,
    argvTail: readonly string[] = [],
  ): Promise<Attacker> {
    const attacker = await Attacker.open(path, kind, argvTail);
    try {
      await attacker.locked();
    } catch (err) {
      await attacker[Symbol.asyncDispose]();
      throw err;
    }
    return attacker;
  }

  /** Its pid (python's: setpriv execs it). */
  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Wait until it says it holds the lock.
   *
   * @param timeoutMs the longest wait
   */
  async locked(timeoutMs = 10_000): Promise<void> {
    const line = await this.#child.line(timeoutMs);
    if (line !== "locked") throw new Error(`attacker said ${JSON.stringify(line)}, not "locked"`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#child[Symbol.asyncDispose]();
  }
}

/**
 * Whether /proc/locks lists a request for a lock on this inode that waits
 * (a `->` line): an attacker queued behind the daemon's flock.
 *
 * @param ino the file's inode
 */
export function lockWaitedFor(ino: number): boolean {
  return Deno.readTextFileSync("/proc/locks").split("\n").some((l) =>
    l.includes("->") && new RegExp(`:${ino} `).test(l)
  );
}
