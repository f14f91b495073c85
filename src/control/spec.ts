/**
 * Where a {@link LaunchSpec} is made: the one place that turns what a
 * caller gave (`start`, `run`, `restart`, from the command line or the
 * control API) into the parsed, checked, complete model of the launch, and
 * decides who holds the lock. Every check is made here, before anything is
 * created, so bad input leaves nothing behind: the command is found, the
 * user resolved, the directory checked, the paths compared and trusted.
 *
 * @module
 */

import { ERRNO, ids, lookupGroup, lookupUser, quote, SystemError } from "../ffi/mod.ts";
import { resolveCommand } from "../launch/spawn.ts";
import { NOTIFY_FD_ENV, NOTIFY_SOCKET_ENV } from "../launch/readiness.ts";
import { parseSchedule, type Schedule } from "../launch/schedule.ts";
import {
  environmentFor,
  type Holder,
  type LaunchSpec,
  type OutputTarget,
  type Readiness,
} from "../launch/spec.ts";
import { UsageError } from "../errors.ts";
import {
  DEFAULT_CHILD_READY_AFTER_MS,
  DEFAULT_CHILD_READY_TIMEOUT_MS,
  DEFAULT_CHILD_STOP_SCHEDULE,
  DEFAULT_MAX_RESTARTS,
  DEFAULT_MIN_UPTIME_MS,
  DEFAULT_RESTART_DELAY_MAX_MS,
  DEFAULT_RESTART_DELAY_MS,
  DEFAULT_RESTART_POLICY,
  DEFAULT_RESTART_WINDOW_MS,
} from "../supervisor/defaults.ts";
import { checkWaitMs, normalPath, parseOutput } from "./values.ts";
import {
  checkWaits,
  DEFAULT_CHDIR,
  DEFAULT_READY_AFTER_MS,
  DEFAULT_READY_SERVING_MS,
  DEFAULT_READY_TIMEOUT_MS,
  DEFAULT_UMASK,
  type RunOptions,
  type StartOptions,
  type SuperviseSettings,
} from "./options.ts";
import { checkDirectoriesTrusted, checkPathsDiffer, precheckPidfile } from "./paths.ts";

/** Which action the spec is for: a daemon (`start`, `restart`) or the foreground (`run`). */
export type LaunchContext = "start" | "run";

/**
 * Make the launch spec of a start or a run, with every check made before
 * anything is created.
 *
 * @param options what the caller gave
 * @param context `start` (a daemon) or `run` (the foreground)
 * @returns the spec
 * @throws {UsageError} for an empty command, colliding paths, bad values
 * @throws {SystemError} for a missing program, user, group or directory, an
 *   untrusted path, or a pid file that cannot be used
 */
export function launchSpec(options: StartOptions | RunOptions, context: LaunchContext): LaunchSpec {
  if (options.command.length === 0) throw new UsageError("missing COMMAND");
  const supervise = options.supervise;
  const user = options.user === undefined ? null : resolveUser(options.user);
  const holder = holderOf(options, context);
  const output = outputOf(options);
  const dir = options.chdir ?? (context === "start" ? DEFAULT_CHDIR : Deno.cwd());
  const env = { ...options.env };
  const path = resolveCommand(
    options.command[0]!,
    environmentFor({ env, user } as LaunchSpec, callerEnvironment(context)),
    Deno.cwd(),
  );
  checkDirectory(dir);
  const outputFile = output?.kind === "file" ? output.path : undefined;
  checkPathsDiffer({ ...options, output: outputFile });
  checkWaits({ ...options, ...readyWaits(options) });
  checkDirectoriesTrusted({ ...options, output: outputFile });
  precheckPidfile(options.pidfile);
  const daemonPidfile = supervise?.daemonPidfile ?? (options as StartOptions).daemonPidfile;
  const lock = options.lock ?? supervise?.lock;
  return {
    command: [...options.command],
    path,
    env,
    cwd: normalPath(dir),
    umask: options.umask ?? (context === "start" ? DEFAULT_UMASK : null),
    user,
    output: output?.kind === "file" ? { kind: "file", path: normalPath(output.path) } : output,
    readiness: readinessOf(options, holder, context),
    readyTimeoutMs: supervise?.readyTimeout ?? (options as StartOptions).readyTimeout ??
      readyTimeoutDefault(holder),
    stopSchedule: scheduleOf(supervise?.stopSchedule ?? options.stopSchedule),
    // Under a cluster lock the program is fenced as a group.
    killGroup: (supervise?.killGroup ?? false) || lock !== undefined,
    daemonPidfile: daemonPidfile === undefined ? null : normalPath(daemonPidfile),
    // Its files relative to the caller: the stage runs in COMMAND's directory.
    lock: lock === undefined ? null : {
      ...lock,
      ...(lock.tls === undefined ? {} : {
        tls: Object.fromEntries(
          Object.entries(lock.tls).map(([k, v]) => [k, normalPath(v as string)]),
        ),
      }),
      ...(lock.passwordFile === undefined ? {} : { passwordFile: normalPath(lock.passwordFile) }),
    },
    name: supervise?.name ?? path.slice(path.lastIndexOf("/") + 1),
    holder,
  };
}

/**
 * The environment a program starts from: the caller's, less the readiness
 * channels the caller was given by its own manager (a daemon gets its own;
 * `run` leaves them to COMMAND, which replaces it).
 *
 * @param context `start` or `run`
 * @returns the environment
 */
export function callerEnvironment(context: LaunchContext): Record<string, string> {
  const env = Deno.env.toObject();
  if (context === "start") {
    delete env[NOTIFY_SOCKET_ENV];
    delete env[NOTIFY_FD_ENV];
  }
  return env;
}

/**
 * Who holds the lock: a supervisor with `supervise`; a keeper with `keeper`
 * or a cluster lock (the keeper holds it and fences the program); else the
 * program itself.
 */
function holderOf(options: StartOptions | RunOptions, context: LaunchContext): Holder {
  const s = options.supervise;
  if (s) {
    return {
      kind: "supervisor",
      restart: {
        policy: s.restart ?? DEFAULT_RESTART_POLICY,
        delayMs: wait(s.restartDelay, DEFAULT_RESTART_DELAY_MS, "restartDelay"),
        delayMaxMs: wait(s.restartDelayMax, DEFAULT_RESTART_DELAY_MAX_MS, "restartDelayMax"),
        minUptimeMs: wait(s.minUptime, DEFAULT_MIN_UPTIME_MS, "minUptime"),
        maxRestarts: s.maxRestarts ?? DEFAULT_MAX_RESTARTS,
        windowMs: wait(s.restartWindow, DEFAULT_RESTART_WINDOW_MS, "restartWindow"),
      },
    };
  }
  const keeper = context === "start" && (options as StartOptions).keeper === true;
  return keeper || options.lock !== undefined ? { kind: "keeper" } : { kind: "self" };
}

function wait(value: number | undefined, fallback: number, name: string): number {
  return value === undefined ? fallback : checkWaitMs(value, name);
}

/** The readiness waits a caller gave, for their bounds. */
function readyWaits(
  options: StartOptions | RunOptions,
): { readyTimeout?: number; readyAfter?: number } {
  const s = options as StartOptions;
  const timeout = options.supervise?.readyTimeout ?? s.readyTimeout;
  const readiness = options.supervise?.readiness;
  const after = readiness?.kind === "alive" ? readiness.afterMs : s.readyAfter;
  return {
    ...(timeout === undefined ? {} : { readyTimeout: timeout }),
    ...(after === undefined ? {} : { readyAfter: after }),
  };
}

function readyTimeoutDefault(holder: Holder): number {
  return holder.kind === "supervisor" ? DEFAULT_CHILD_READY_TIMEOUT_MS : DEFAULT_READY_TIMEOUT_MS;
}

/**
 * How the program says it is ready. By default (a daemon, a keeper's program
 * and a supervisor's child alike) it is alive 4 s after its exec, or has
 * served for 1 s; a `readyAfter` given is time alive alone; in the
 * foreground, a keeper's program has nothing to be ready for.
 */
function readinessOf(
  options: StartOptions | RunOptions,
  holder: Holder,
  context: LaunchContext,
): Readiness {
  if (options.supervise?.readiness) return options.supervise.readiness;
  const s = options as StartOptions;
  if (s.notifyFd !== undefined) return { kind: "fd", fd: s.notifyFd };
  if (s.notifySocket) return { kind: "socket" };
  if (context === "run" && holder.kind !== "supervisor") return { kind: "alive", afterMs: 0 };
  if (s.readyAfter !== undefined) return { kind: "alive", afterMs: s.readyAfter };
  const after = holder.kind === "supervisor"
    ? DEFAULT_CHILD_READY_AFTER_MS
    : DEFAULT_READY_AFTER_MS;
  return { kind: "alive", afterMs: after, servingMs: DEFAULT_READY_SERVING_MS };
}

/** The output target: the supervisor's (a file or syslog), else start's file. */
function outputOf(options: StartOptions | RunOptions): OutputTarget | null {
  const given: SuperviseSettings["output"] | StartOptions["output"] = options.supervise?.output ??
    (options as StartOptions).output;
  if (given === undefined) return null;
  return typeof given === "string" ? parseOutput(given) : given;
}

/** A stop schedule as given (text or parsed), or the default. */
function scheduleOf(given: string | Schedule | undefined): Schedule {
  if (given === undefined) return parseSchedule(DEFAULT_CHILD_STOP_SCHEDULE, "--stop-schedule");
  return typeof given === "string" ? parseSchedule(given, "--stop-schedule") : given;
}

/**
 * A `USER[:GROUP]` resolved to the account and the group to take.
 *
 * @param spec the user, by name or number, and an optional group
 * @returns the account
 * @throws {SystemError} EPERM when not root, ENOENT for an unknown user or group
 */
function resolveUser(spec: string): NonNullable<LaunchSpec["user"]> {
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
  return { name: user.name, uid: user.uid, gid, home: user.home };
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
