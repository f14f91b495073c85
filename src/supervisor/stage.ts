/**
 * The supervisor and the keeper as a process: `start` spawns this program
 * again as `--singleton-run-internal supervisor|keeper FD`, handing it the
 * locked pid file on a descriptor, a descriptor to announce readiness on,
 * and its orders (the launch spec and where its descriptors are) through a
 * pipe on descriptor FD, never in argv (which any user can read in /proc)
 * and never in the environment (which the program inherits). `run
 * --supervise` and `run --lock` call {@link runSupervisor} in the
 * foreground process, which already holds the lock.
 *
 * The stage runs as the caller: with `user`, only the program drops its
 * privileges (see `child.ts`), so what the stage needs (the cluster lock's
 * client, its files) is loaded and opened with the caller's rights.
 *
 * The child's environment is the stage's own environment: the controller
 * spawns the stage with exactly the environment COMMAND should get.
 *
 * This module and what it imports are the whole supervisor: no npm package,
 * no CLI code, so it starts from source as any user and its memory stays
 * near an empty Deno process.
 *
 * @module
 */

import { C, close, ERRNO, ids, pipe, read, SystemError, writeAll } from "../ffi/mod.ts";
import { identify, type Identity } from "../lock/identity.ts";
import { PidFile } from "../lock/pidfile.ts";
import { type FailedState, writeRecord } from "../lock/record.ts";
import { spawn } from "../launch/spawn.ts";
import { INTERNAL_FLAG, stageCommand } from "../launch/internal.ts";
import { runStage } from "../launch/privilege.ts";
import type { LaunchSpec } from "../launch/spec.ts";
import type { ManagerOrders } from "./manager.ts";
import { type ClusterLockState, statePath } from "./state.ts";
import { Supervisor } from "./supervisor.ts";

/**
 * What a stage is told besides the spec: the pid file, and the descriptors
 * it inherited.
 */
export interface StageOrders {
  /** The launch: what to run, how, and in which holder's role. */
  readonly spec: LaunchSpec;
  /** The pid file the stage holds (absolute: the stage runs in COMMAND's directory). */
  readonly pidfile: string;
  /** An inherited descriptor that holds the pid file's lock; absent: acquire it here. */
  readonly lockFd?: number;
  /** An inherited read-write descriptor on the pid file (the lock's is read-only). */
  readonly writeFd?: number;
  /** An inherited descriptor to write a newline to once the first run is ready. */
  readonly readyFd?: number;
  /** A keeper for a daemon already running: its pid, and an inherited pidfd on it. */
  readonly adopt?: { readonly pid: number; readonly pidfd: number };
  /**
   * Environment variables meant for the stage only (see
   * {@link SUPERVISOR_ENV}), removed from the child's environment.
   */
  readonly unsetEnv?: readonly string[];
  /** Who launched it, for the record: `start` (by default) or `run` in the foreground. */
  readonly by?: "start" | "run";
  /** A supervisor's service manager (the caller's `NOTIFY_SOCKET`), told how COMMAND goes. */
  readonly manager?: ManagerOrders;
  /** When `run` started (ms since the epoch): what a job's slot is counted from (`oncePerMs`). */
  readonly startedAt?: number;
}

/**
 * What the controller adds to the supervisor's environment when the user has
 * not set it: a 1 MB V8 young generation. A crash-looping child makes the
 * supervisor allocate fast, and V8 then grows its young generation up to
 * 32 MB; capped, the soak's RSS stays flat (measured in
 * bench/supervise_soak.ts). The supervisor removes it from the child's
 * environment (`unsetEnv`).
 */
export const SUPERVISOR_ENV: Readonly<Record<string, string>> = {
  DENO_V8_FLAGS: "--max-semi-space-size=1",
};

/**
 * Supervise (or keep) in this process, which holds `lock`, until done; then
 * release the lock.
 *
 * @param orders the spec and the inherited descriptors
 * @param lock the held pid file lock (released here at the end)
 * @param env the child's environment
 * @param conflict called instead of saying it when the job does not run for
 *   a conflict (the cluster lock held elsewhere, its slot done): `run` throws
 *   it to its caller, who says it (or not: `--quiet`) and exits as it is told
 * @returns the exit code
 */
export async function runSupervisor(
  orders: StageOrders,
  lock: PidFile,
  env: Record<string, string> = Deno.env.toObject(),
  conflict?: (message: string, kind: "held" | "done") => never,
): Promise<number> {
  for (const name of orders.unsetEnv ?? []) delete env[name];
  const { spec } = orders;
  const keep = spec.holder.kind === "keeper";
  const start = new StartChannel(orders.readyFd);
  const record = new Recorder(orders);
  let last: Supervisor | undefined;
  const make = (extraEnv: Record<string, string>, lockState?: () => ClusterLockState) =>
    last = limited(
      new Supervisor(spec, {
        env: { ...env, ...extraEnv },
        pidfile: orders.pidfile,
        statePath: statePath(orders.pidfile),
        lockFd: lock.fd, // every child holds the lock too (CHILD_LOCK_FD)
        // The keeper names the program's main process in the pid file, and tells start which it is.
        onReady: (pid) => {
          record.running(keep ? pid : ids.pid());
          start.ready(keep ? pid : undefined);
        },
        ...(keep
          ? {
            onMain: (pid: number) => {
              lock.writePid(pid);
              record.following(pid);
            },
          }
          : {}),
        ...(lockState ? { lockState } : {}),
        ...(orders.adopt ? { adopt: orders.adopt } : {}),
        ...(orders.manager ? { manager: orders.manager } : {}),
      }),
    );
  // A job's time limit (run --max-runtime under a cluster lock): counted from its start.
  let limit: ReturnType<typeof setTimeout> | undefined;
  const limited = (supervisor: Supervisor): Supervisor => {
    if (spec.maxRuntimeMs !== null && spec.maxRuntimeMs !== undefined) {
      const ms = spec.maxRuntimeMs;
      limit = setTimeout(() => supervisor.expire(ms), ms);
    }
    return supervisor;
  };
  try {
    let code: number;
    if (spec.lock) {
      // Loaded only here: nothing of the cluster code runs, or loads, without a lock.
      const { superviseLocked } = await import("./fencing.ts");
      const waitAgain = !keep && spec.lock.waitMs !== undefined && spec.lock.waitMs !== 0;
      code = await superviseLocked(spec, waitAgain, make, {
        failed: (reason) => start.failed(reason),
        ...(conflict ? { conflict } : {}),
      }, orders.startedAt ?? Date.now());
    } else {
      const supervisor = make({});
      code = await supervisor.run();
      start.failed(supervisor.lastError ?? `the supervisor exited with status ${code}`);
    }
    if (code !== 0 && last && !last.stopRequested) record.failed(last);
    return code;
  } catch (err) {
    start.failed((err as Error).message);
    throw err;
  } finally {
    clearTimeout(limit);
    lock.release();
  }
}

/**
 * The service record this stage keeps (see `src/lock/record.ts`): written
 * once the first run is ready, again when the keeper follows a new main
 * process, and with the failed state when it gives up. A record that cannot
 * be written (a full disk) is said once and costs the service nothing.
 */
class Recorder {
  readonly #orders: StageOrders;
  #daemon: Identity | null = null;
  #warned = false;
  constructor(orders: StageOrders) {
    this.#orders = orders;
  }
  running(daemon: number): void {
    this.#daemon = identify(daemon) ?? null;
    this.#write();
  }
  following(daemon: number): void {
    if (this.#daemon === null) return; // not ready yet: written then
    this.running(daemon);
  }
  failed(supervisor: Supervisor): void {
    this.#write({
      at: new Date().toISOString(),
      restarts: supervisor.restarts,
      lastExit: supervisor.lastExit,
    });
  }
  #write(failed?: FailedState): void {
    try {
      writeRecord(this.#orders.pidfile, {
        by: this.#orders.by ?? "start",
        spec: this.#orders.spec,
        daemon: this.#daemon,
        holder: identify(ids.pid()) ?? null,
        ...(failed ? { failed } : {}),
      });
    } catch (err) {
      if (this.#warned) return;
      this.#warned = true;
      writeErr(`cannot write the service record: ${(err as Error).message}`);
    }
  }
}

/**
 * The descriptor on which `start` waits: a newline once the first child is
 * ready; otherwise the reason, without a newline, then end of file. The
 * reason travels here because the supervisor's stderr may be an output file
 * on a full disk.
 */
class StartChannel {
  #fd: number | undefined;
  constructor(fd: number | undefined) {
    this.#fd = fd;
  }
  ready(mainPid?: number): void {
    this.#tell(mainPid === undefined ? "\n" : `MAINPID=${mainPid}\n`);
  }
  failed(reason: string): void {
    // deno-lint-ignore no-control-regex
    this.#tell(reason.replace(/[\x00-\x1f]+/g, " "));
  }
  #tell(text: string): void {
    const fd = this.#fd;
    if (fd === undefined) return;
    this.#fd = undefined;
    try {
      writeAll(fd, new TextEncoder().encode(text));
    } catch {
      // The controller went away: nobody to tell.
    }
    close(fd);
  }
}

/** The most a stage reads of its orders. */
const MAX_ORDERS_BYTES = 1 << 20;

/**
 * Read a stage's orders from a descriptor, to its end.
 *
 * @param fd the descriptor (a pipe, or a test's stdin)
 * @returns the orders
 * @throws {Error} when they are not there or not JSON
 */
function readOrders(fd: number): StageOrders {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (let chunk = read(fd, 65536); chunk.length > 0; chunk = read(fd, 65536)) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_ORDERS_BYTES) throw new Error("the stage's orders are too long");
  }
  if (fd > 2) close(fd);
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return JSON.parse(new TextDecoder().decode(all)) as StageOrders;
}

/**
 * The stage's entry: `--singleton-run-internal supervisor|keeper FD`.
 *
 * @param args the arguments after the role: the descriptor of the orders
 * @returns the exit code
 */
export async function superviseStage(args: readonly string[]): Promise<number> {
  const fd = Number(args[0]);
  if (args.length !== 1 || !Number.isInteger(fd) || fd < 0) {
    writeErr(`usage: ${INTERNAL_FLAG} supervisor|keeper FD (internal)`);
    return 2;
  }
  let orders: StageOrders;
  try {
    orders = readOrders(fd);
  } catch (err) {
    writeErr(`bad stage orders: ${(err as Error).message}`);
    return 2;
  }
  let lock: PidFile;
  try {
    lock = orders.lockFd === undefined
      ? await PidFile.acquire(orders.pidfile)
      : PidFile.adopt(orders.lockFd, orders.pidfile, orders.adopt?.pid, orders.writeFd);
  } catch (err) {
    writeErr((err as Error).message);
    return err instanceof SystemError && err.errno !== ERRNO.EAGAIN ? 1 : 3;
  }
  try {
    return await runSupervisor(orders, lock);
  } catch (err) {
    writeErr((err as Error).message);
    return 1;
  }
}

/** The descriptor on which the supervisor tells `start` that its first child is ready. */
export const SUPERVISOR_READY_FD = 5;

/** The descriptor on which the supervisor (or keeper) gets the pid file to write. */
export const SUPERVISOR_WRITE_FD = 6;

/** The descriptor on which the stage reads its orders. */
const ORDERS_FD = 7;

/**
 * Start the supervisor or keeper stage for a spec: a new session leader
 * with the locked pid file (and any other descriptor `fds` names), whose
 * orders go through a pipe.
 *
 * @param orders what the stage is told (its descriptor numbers are the ones in `fds`)
 * @param how the stage's environment (the program's, which the stage passes
 *   on), its umask and descriptors
 * @returns the stage's pid
 * @throws {SystemError} when it cannot be spawned
 */
export function spawnStageProcess(
  orders: StageOrders,
  how: {
    readonly env: Readonly<Record<string, string>>;
    readonly umask?: number;
    readonly fds: Readonly<Record<number, number | "null">>;
  },
): number {
  const role = orders.spec.holder.kind === "supervisor" ? "supervisor" : "keeper";
  const added = Object.keys(SUPERVISOR_ENV).filter((k) => how.env[k] === undefined);
  const env: Record<string, string> = { ...how.env };
  for (const k of added) env[k] = SUPERVISOR_ENV[k]!;
  const argv = stageCommand(role, [String(ORDERS_FD)]);
  const [r, w] = pipe(C.O_CLOEXEC);
  try {
    const pid = spawn({
      path: argv[0]!,
      argv,
      env,
      cwd: orders.spec.cwd,
      newSession: true,
      ...(how.umask === undefined ? {} : { umask: how.umask }),
      fds: { ...how.fds, [ORDERS_FD]: r },
    });
    close(r);
    const text = JSON.stringify({ ...orders, unsetEnv: [...(orders.unsetEnv ?? []), ...added] });
    try {
      writeAll(w, new TextEncoder().encode(text), "stage pipe");
    } catch {
      // The stage died before reading; its exit is reported by the caller.
    }
    return pid;
  } catch (err) {
    close(r);
    throw err;
  } finally {
    close(w);
  }
}

/** The keeper's descriptors when it adopts a running daemon: the lock, the daemon's pidfd. */
const KEEPER_FDS = { lock: 3, pidfd: 4 } as const;

/**
 * Start a keeper for a daemon that runs already but no longer holds the
 * lock (it closed the descriptor): the keeper inherits this process's locked
 * descriptor and a pidfd on the daemon, holds the lock until the daemon
 * exits, and writes a newline to `ready.target` once it runs.
 *
 * @param spec the daemon's launch (the keeper's record of it)
 * @param where the pid file, our locked descriptors, the daemon, and the
 *   readiness pipe's write end (the keeper's fd `ready.target`)
 * @returns the keeper's pid
 * @throws {SystemError} when it cannot be spawned
 */
export function spawnKeeper(spec: LaunchSpec, where: {
  readonly pidfile: string;
  readonly lockFd: number;
  readonly writeFd: number;
  readonly pid: number;
  readonly pidfd: number;
  readonly ready: { readonly fd: number; readonly target: number };
}): number {
  return spawnStageProcess({
    spec: { ...spec, holder: { kind: "keeper" } },
    pidfile: where.pidfile,
    lockFd: KEEPER_FDS.lock,
    writeFd: SUPERVISOR_WRITE_FD,
    readyFd: where.ready.target,
    adopt: { pid: where.pid, pidfd: KEEPER_FDS.pidfd },
  }, {
    env: Deno.env.toObject(),
    fds: {
      0: "null",
      1: "null",
      2: "null",
      [KEEPER_FDS.lock]: where.lockFd,
      [KEEPER_FDS.pidfd]: where.pidfd,
      [SUPERVISOR_WRITE_FD]: where.writeFd,
      [where.ready.target]: where.ready.fd,
    },
  });
}

function writeErr(message: string): void {
  try {
    writeAll(2, new TextEncoder().encode(`singleton-run: ${message}\n`));
  } catch {
    // no stderr
  }
}

if (import.meta.main) {
  const [flag, role, ...rest] = Deno.args;
  // From source, the supervisor starts its program's privilege stage (`user`) from here too.
  if (flag === INTERNAL_FLAG && role === "privilege") runStage(rest);
  if (flag === INTERNAL_FLAG && role === "job") {
    (await import("../launch/job.ts")).runJobStage(rest);
  }
  if (flag !== INTERNAL_FLAG || (role !== "supervisor" && role !== "keeper")) {
    writeErr(`usage: ${INTERNAL_FLAG} supervisor|keeper FD (internal)`);
    Deno.exit(2);
  }
  Deno.exit(await superviseStage(rest));
}
