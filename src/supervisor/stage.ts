/**
 * The supervisor as a process: `start --supervise` spawns this program again
 * as `--singleton-run-internal supervisor <json>` (in argv, never in the
 * environment, so nothing leaks to the child), handing it the locked pid
 * file on a descriptor and a descriptor to announce readiness on. `run
 * --supervise` calls {@link runSupervisor} in the foreground process, which
 * already holds the lock.
 *
 * The child's environment is the supervisor's own environment: the
 * controller spawns the supervisor with exactly the environment COMMAND
 * should get, so no environment travels in argv.
 *
 * This module and what it imports are the whole supervisor: no npm package,
 * no CLI code, so it starts from source as any user and its memory stays
 * near an empty Deno process.
 *
 * @module
 */

import { close, ERRNO, quote, SystemError, writeAll } from "../ffi/mod.ts";
import { PidFile } from "../lock/pidfile.ts";
import { cmdlineOf } from "../ffi/proc.ts";
import { selfCommand, spawn } from "../launch/spawn.ts";
import { INTERNAL_FLAG, internalArgs } from "../launch/internal.ts";
import type { DaemonPlan, LaunchedDaemon } from "../launch/plan.ts";
import { parseSchedule } from "../launch/schedule.ts";
import { parseOutput } from "./output.ts";
import { type ClusterLockState, statePath } from "./state.ts";
import type { ClusterLockSettings, SuperviseSettings } from "./settings.ts";
import { type SuperviseOptions, Supervisor } from "./supervisor.ts";

/**
 * The supervisor's configuration, as it travels in argv (JSON): the
 * {@link SuperviseSettings}, and what the controller adds: the command, the
 * pid file and the inherited descriptors.
 */
export interface SuperviseConfig extends SuperviseSettings {
  /** The pid file the supervisor holds. */
  readonly pidfile: string;
  /** An inherited descriptor that holds the pid file's lock (start); absent: acquire it here. */
  readonly lockFd?: number;
  /** An inherited read-write descriptor on the pid file (the lock's is read-only). */
  readonly writeFd?: number;
  /** An inherited descriptor to write a newline to once the first child is ready. */
  readonly readyFd?: number;
  /** The program, an absolute path. */
  readonly path: string;
  /** Its argv, `argv[0]` included. */
  readonly argv: readonly string[];
  /** Its working directory. */
  readonly cwd?: string;
  /** Its umask. */
  readonly umask?: number;
  /**
   * Environment variables meant for the supervisor only (see
   * {@link SUPERVISOR_ENV}), removed from the child's environment.
   */
  readonly unsetEnv?: readonly string[];
  /**
   * The keeper (`--singleton-run-internal keeper`): no restart, and the pid
   * file names the program's main process, not this process.
   */
  readonly keep?: boolean;
  /** The keeper of a running daemon: its pid, and an inherited pidfd on it. */
  readonly adopt?: { readonly pid: number; readonly pidfd: number };
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
 * Check a configuration and turn it into {@link SuperviseOptions}.
 *
 * @param config the configuration
 * @param env the child's environment
 * @returns the options, without `onReady`
 * @throws {TypeError} for a malformed restart policy or number
 * @throws {UsageError} for a malformed stop schedule or output
 */
export function superviseOptions(
  config: SuperviseConfig,
  env: Record<string, string>,
): SuperviseOptions {
  if (config.restart && !["on-failure", "always", "never"].includes(config.restart)) {
    throw new TypeError(`bad --restart ${quote(config.restart)} (on-failure, always or never)`);
  }
  for (const [key, value] of Object.entries(config)) {
    if (typeof value === "number" && (!Number.isFinite(value) || value < 0)) {
      throw new TypeError(`bad ${key}: ${value}`);
    }
  }
  // What only the stage uses stays here; the rest are the supervisor's own options.
  const {
    pidfile,
    lockFd: _lock,
    writeFd: _write,
    readyFd: _ready,
    unsetEnv: _unset,
    ...rest
  } = config;
  const { stopSchedule, output, ...settings } = rest;
  return {
    ...settings,
    env,
    ...(stopSchedule === undefined
      ? {}
      : { stopSchedule: parseSchedule(stopSchedule, "--stop-schedule") }),
    ...(output === undefined ? {} : { output: parseOutput(output) }),
    statePath: statePath(pidfile),
    pidfile,
  };
}

/**
 * Supervise in this process, which holds `lock`, until the supervisor is done;
 * then release the lock.
 *
 * @param config what to run
 * @param lock the held pid file lock (released here at the end)
 * @param env the child's environment
 * @returns the exit code
 */
export async function runSupervisor(
  config: SuperviseConfig,
  lock: PidFile,
  env: Record<string, string> = Deno.env.toObject(),
): Promise<number> {
  for (const name of config.unsetEnv ?? []) delete env[name];
  const start = new StartChannel(config.readyFd);
  const make = (extraEnv: Record<string, string>, lockState?: () => ClusterLockState) =>
    new Supervisor({
      ...superviseOptions(config, { ...env, ...extraEnv }),
      lockFd: lock.fd, // every child holds the lock too (CHILD_LOCK_FD)
      // The keeper names the program's main process in the pid file, and tells start which it is.
      onReady: (pid) => start.ready(config.keep ? pid : undefined),
      ...(config.keep ? { onMain: (pid: number) => lock.writePid(pid) } : {}),
      ...(lockState ? { lockState } : {}),
    });
  try {
    if (config.lock) {
      // Loaded only here: nothing of the cluster code runs, or loads, without a lock.
      const { superviseLocked } = await import("./fencing.ts");
      const waitAgain = !config.keep && config.lock.waitMs !== undefined &&
        config.lock.waitMs !== 0;
      return await superviseLocked(config.lock, config.stopSchedule, waitAgain, make, start);
    }
    const supervisor = make({});
    const code = await supervisor.run();
    start.failed(supervisor.lastError ?? `the supervisor exited with status ${code}`);
    return code;
  } catch (err) {
    start.failed((err as Error).message);
    throw err;
  } finally {
    lock.release();
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

/**
 * The stage's entry: `--singleton-run-internal supervisor <json>`.
 *
 * @param args the arguments after the role: the configuration as JSON
 * @returns the exit code
 */
export async function superviseStage(args: readonly string[]): Promise<number> {
  if (args.length !== 1) {
    writeErr(`usage: ${INTERNAL_FLAG} supervisor <json> (internal)`);
    return 2;
  }
  let config: SuperviseConfig;
  try {
    config = JSON.parse(args[0]!);
  } catch (err) {
    writeErr(`bad supervisor configuration: ${(err as Error).message}`);
    return 2;
  }
  let lock: PidFile;
  try {
    lock = config.lockFd === undefined
      ? await PidFile.acquire(config.pidfile)
      : PidFile.adopt(config.lockFd, config.pidfile, config.adopt?.pid, config.writeFd);
  } catch (err) {
    writeErr((err as Error).message);
    return err instanceof SystemError && err.errno !== ERRNO.EAGAIN ? 1 : 3;
  }
  try {
    return await runSupervisor(config, lock);
  } catch (err) {
    writeErr((err as Error).message);
    return 1;
  }
}

/** The descriptor on which the supervisor tells `start` that its first child is ready. */
export const SUPERVISOR_READY_FD = 5;

/** The descriptor on which the supervisor (or keeper) gets the pid file to write. */
export const SUPERVISOR_WRITE_FD = 6;

/**
 * The argv that starts the supervisor: this stage module itself under
 * `deno run` from source (so the supervisor loads nothing of the CLI), or
 * this program again (the bundle, the compiled binary), with the internal
 * flag and role either way.
 */
function stageArgv(role: "supervisor" | "keeper", json: string): string[] {
  const self = selfCommand();
  const here = new URL(import.meta.url);
  const fromSource = here.protocol === "file:" && here.pathname.endsWith("/supervisor/stage.ts");
  if (self.length >= 3 && self[1] === "run") {
    const script = fromSource ? here.pathname : self[self.length - 1]!;
    const absolute = script.startsWith("/") || /^[a-z]+:/.test(script)
      ? script
      : `${Deno.cwd()}/${script}`;
    return [...self.slice(0, -1), absolute, ...internalArgs(role, [json])];
  }
  return [...self, ...internalArgs(role, [json])];
}

/**
 * What `start --supervise` passes as `StartOptions.launch`: instead of
 * COMMAND, the daemon is the supervisor (this program in the supervise
 * stage), which inherits the locked pid file and the readiness descriptor
 * and runs COMMAND itself.
 *
 * @param settings the supervise options
 * @param where the pid file, the lock's descriptor number in the daemon, and
 *   the launcher that makes the daemon process (session, user, descriptors)
 * @returns the launcher
 */
export function superviseLauncher(
  settings: SuperviseSettings,
  where: {
    readonly pidfile: string;
    readonly lockFd: number;
    readonly launch: (plan: DaemonPlan) => LaunchedDaemon;
    /** Launch the keeper (`start --keeper`) instead of the supervisor. */
    readonly keep?: boolean;
  },
): (plan: DaemonPlan) => LaunchedDaemon {
  return (plan) => {
    const added = Object.keys(SUPERVISOR_ENV).filter((k) => plan.env[k] === undefined);
    const config: SuperviseConfig = {
      ...settings,
      // The stage runs in COMMAND's directory (/ by default): paths given relative to ours.
      ...(settings.output === undefined || parseOutput(settings.output).kind !== "file"
        ? {}
        : { output: fromHere(settings.output) }),
      ...(settings.daemonPidfile === undefined
        ? {}
        : { daemonPidfile: fromHere(settings.daemonPidfile) }),
      ...(settings.lock === undefined ? {} : { lock: lockFromHere(settings.lock) }),
      pidfile: fromHere(where.pidfile),
      lockFd: where.lockFd,
      writeFd: SUPERVISOR_WRITE_FD,
      readyFd: SUPERVISOR_READY_FD,
      path: plan.path,
      argv: plan.argv,
      cwd: plan.cwd,
      umask: plan.umask,
      unsetEnv: ["NOTIFY_FD", "NOTIFY_SOCKET", ...added],
      ...(where.keep ? { keep: true } : {}),
    };
    const argv = stageArgv(where.keep ? "keeper" : "supervisor", JSON.stringify(config));
    const env: Record<string, string> = { ...plan.env };
    for (const k of added) env[k] = SUPERVISOR_ENV[k]!;
    return where.launch({ ...plan, path: argv[0]!, argv, env });
  };
}

/** The lock's files (TLS, password) made absolute against this process's directory. */
function lockFromHere(lock: ClusterLockSettings): ClusterLockSettings {
  return {
    ...lock,
    ...(lock.tls === undefined ? {} : {
      tls: Object.fromEntries(Object.entries(lock.tls).map(([k, v]) => [k, fromHere(v)])),
    }),
    ...(lock.passwordFile === undefined ? {} : { passwordFile: fromHere(lock.passwordFile) }),
  };
}

/** A path made absolute against this process's directory (the stage's may differ). */
function fromHere(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** The keeper's descriptors when it adopts a running daemon: the lock, the daemon's pidfd. */
const KEEPER_FDS = { lock: 3, pidfd: 4 } as const;

/**
 * Start a keeper for a daemon that runs already but no longer holds the
 * lock (it closed the descriptor): the keeper inherits this process's locked
 * descriptor and a pidfd on the daemon, holds the lock until the daemon
 * exits, and writes a newline to `readyFd` once it runs.
 *
 * @param where the pid file, our locked descriptor, the daemon, and the
 *   readiness pipe's write end (the keeper's fd `readyFd.target`)
 * @returns the keeper's pid
 * @throws {SystemError} when it cannot be spawned
 */
export function spawnKeeper(where: {
  readonly pidfile: string;
  readonly lockFd: number;
  readonly writeFd: number;
  readonly pid: number;
  readonly pidfd: number;
  readonly ready: { readonly fd: number; readonly target: number };
}): number {
  const main = cmdlineOf(where.pid) ?? [];
  const config: SuperviseConfig = {
    pidfile: fromHere(where.pidfile),
    lockFd: KEEPER_FDS.lock,
    writeFd: SUPERVISOR_WRITE_FD,
    readyFd: where.ready.target,
    path: main[0] ?? `pid ${where.pid}`,
    argv: main,
    keep: true,
    adopt: { pid: where.pid, pidfd: KEEPER_FDS.pidfd },
    unsetEnv: [],
  };
  const argv = stageArgv("keeper", JSON.stringify(config));
  const env: Record<string, string> = { ...Deno.env.toObject(), ...SUPERVISOR_ENV };
  return spawn({
    path: argv[0]!,
    argv,
    env,
    cwd: "/",
    newSession: true,
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
  if (flag !== INTERNAL_FLAG || (role !== "supervisor" && role !== "keeper")) {
    writeErr(`usage: ${INTERNAL_FLAG} supervisor <json> (internal)`);
    Deno.exit(2);
  }
  Deno.exit(await superviseStage(rest));
}
