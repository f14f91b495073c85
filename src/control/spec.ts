/**
 * Where a {@link LaunchSpec} is made: the one place that turns what a
 * caller gave (`start`, `run`, `restart`, from the command line or the
 * control API) into the parsed, checked, complete model of the launch, and
 * decides who holds the lock. Every check is made here, before anything is
 * created, so bad input leaves nothing behind: the command is found, the
 * user resolved, the directory checked, the paths compared and trusted.
 *
 * A launch may start from a base: the spec recorded beside the pid file
 * (`restart` without a command). Then every value the caller gave overrides
 * the base's, and everything else is the base's; the command is found again
 * (in the caller's PATH), the user looked up again by name, and every check
 * made again, as for a new launch.
 *
 * @module
 */

import { ERRNO, ids, lookupGroup, lookupUser, lstat, quote, SystemError } from "../ffi/mod.ts";
import { readRecord, recordPath } from "../lock/record.ts";
import { resolveCommand } from "../launch/spawn.ts";
import {
  NOTIFY_FD_ENV,
  NOTIFY_SOCKET_ENV,
  WATCHDOG_PID_ENV,
  WATCHDOG_USEC_ENV,
} from "../launch/readiness.ts";
import { firstWaitMs, parseSchedule, type Schedule } from "../launch/schedule.ts";
import { formatDuration } from "../launch/duration.ts";
import {
  environmentFor,
  type HealthSpec,
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
  DEFAULT_HEALTH_INTERVAL_MS,
  DEFAULT_HEALTH_RETRIES,
  DEFAULT_HEALTH_START_PERIOD_MS,
  DEFAULT_HEALTH_TIMEOUT_MS,
  DEFAULT_MAX_RESTARTS,
  DEFAULT_MIN_UPTIME_MS,
  DEFAULT_RESTART_DELAY_MAX_MS,
  DEFAULT_RESTART_DELAY_MS,
  DEFAULT_RESTART_POLICY,
  DEFAULT_RESTART_WINDOW_MS,
} from "../supervisor/defaults.ts";
import {
  checkWaitMs,
  normalPath,
  parseHealthCommand,
  parseHealthUrl,
  parseOutput,
} from "./values.ts";
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
import { prepareServiceDir, serviceDirOf } from "./names.ts";

/** Which action the spec is for: a daemon (`start`, `restart`) or the foreground (`run`). */
export type LaunchContext = "start" | "run";

/** What a caller gives for a launch: with a base spec, the command may be left out. */
export type LaunchRequest =
  | RunOptions
  | (Omit<StartOptions, "command"> & { readonly command?: readonly string[] });

/**
 * Make the launch spec of a start or a run, with every check made before
 * anything is created.
 *
 * @param options what the caller gave
 * @param context `start` (a daemon) or `run` (the foreground)
 * @param base a spec to start from (the recorded one): what the caller did
 *   not give is taken from it instead of the defaults
 * @returns the spec
 * @throws {UsageError} for an empty command, colliding paths, bad values
 * @throws {SystemError} for a missing program, user, group or directory, an
 *   untrusted path, or a pid file that cannot be used
 */
export function launchSpec(
  options: LaunchRequest,
  context: LaunchContext,
  base?: LaunchSpec,
): LaunchSpec {
  const command = options.command ?? base?.command;
  if (command === undefined || command.length === 0) throw new UsageError("missing COMMAND");
  const supervise = options.supervise;
  const user = options.user !== undefined
    ? resolveUser(options.user)
    : base?.user
    ? resolveUser(`${base.user.name}:${base.user.gid}`)
    : null;
  const holder = holderOf(options, context, base);
  // The base's readiness and timeout were made for its holder: kept for that holder only.
  const sameHolder = base?.holder.kind === holder.kind ? base : undefined;
  const readiness = readinessOf(options, holder, context, sameHolder);
  const health = healthOf(options, holder) ?? sameHolder?.health ?? null;
  const watchdogMs = watchdogOf(options, holder, readiness) ?? sameHolder?.watchdogMs ?? null;
  const output = outputOf(options, base);
  const dir = options.chdir ?? base?.cwd ?? (context === "start" ? DEFAULT_CHDIR : Deno.cwd());
  const env = { ...base?.env, ...options.env };
  const path = resolveCommand(
    programOf(options.command, base),
    environmentFor({ env, user } as LaunchSpec, callerEnvironment(context)),
    Deno.cwd(),
  );
  checkDirectory(dir);
  const outputFile = output?.kind === "file" ? output.path : undefined;
  checkPathsDiffer({ ...options, output: outputFile });
  checkWaits({ ...options, ...readyWaits(options) });
  checkDirectoriesTrusted({ ...options, output: outputFile });
  const lock = options.lock ?? supervise?.lock;
  const stopSchedule = scheduleOf(supervise?.stopSchedule ?? options.stopSchedule, base);
  const maxRuntimeMs = maxRuntimeOf(options, context, stopSchedule);
  if (lock?.oncePerMs !== undefined && context !== "run") {
    throw new UsageError("lock.oncePerMs is for run (a job that runs once per slot)");
  }
  // The directory of services is made last, once nothing else can refuse the launch.
  const services = serviceDirOf(options.pidfile);
  if (services !== undefined) prepareServiceDir(services);
  precheckPidfile(options.pidfile);
  const daemonPidfile = supervise?.daemonPidfile ?? (options as StartOptions).daemonPidfile;
  const killGroup = supervise?.killGroup ?? (options as RunOptions).killGroup ?? base?.killGroup;
  return {
    command: [...command],
    path,
    env,
    cwd: normalPath(dir),
    umask: options.umask ?? base?.umask ?? (context === "start" ? DEFAULT_UMASK : null),
    user,
    output: output?.kind === "file" ? { kind: "file", path: normalPath(output.path) } : output,
    readiness,
    readyTimeoutMs: supervise?.readyTimeout ?? (options as StartOptions).readyTimeout ??
      sameHolder?.readyTimeoutMs ?? readyTimeoutDefault(holder),
    stopSchedule,
    // Under a cluster lock the program is fenced as a group.
    killGroup: (killGroup ?? false) || lock !== undefined,
    daemonPidfile: daemonPidfile === undefined
      ? base?.daemonPidfile ?? null
      : normalPath(daemonPidfile),
    // Its files relative to the caller: the stage runs in COMMAND's directory.
    lock: lock === undefined ? base?.lock ?? null : {
      ...lock,
      ...(lock.tls === undefined ? {} : {
        tls: Object.fromEntries(
          Object.entries(lock.tls).map(([k, v]) => [k, normalPath(v as string)]),
        ),
      }),
      ...(lock.passwordFile === undefined ? {} : { passwordFile: normalPath(lock.passwordFile) }),
    },
    name: supervise?.name ?? options.name ?? base?.name ?? path.slice(path.lastIndexOf("/") + 1),
    holder,
    health,
    watchdogMs,
    maxRuntimeMs,
  };
}

/**
 * A job's time limit: `run` only (a restart of a recorded job starts it as
 * a daemon, without one), and at least the stop schedule's first wait (the
 * time the job gets between the first signal and the next).
 */
function maxRuntimeOf(
  options: LaunchRequest,
  context: LaunchContext,
  stopSchedule: Schedule,
): number | null {
  const ms = context === "run" ? (options as RunOptions).maxRuntime : undefined;
  if (ms === undefined) return null;
  const grace = firstWaitMs(stopSchedule);
  if (ms < grace) {
    throw new UsageError(
      `--max-runtime ${formatDuration(ms)} is shorter than the stop schedule's first wait ` +
        `(${formatDuration(grace)}): give a longer limit or a shorter --stop-schedule`,
    );
  }
  return ms;
}

/**
 * The launch spec recorded beside a pid file, for a `restart` without a
 * command. Only a record this user or root wrote is replayed: another
 * user's would run that user's command with this user's rights.
 *
 * @param pidfile the pid file
 * @returns the recorded spec
 * @throws {UsageError} when there is no record to trust (give the command)
 */
export function recordedSpec(pidfile: string): LaunchSpec {
  let owner: number | undefined;
  try {
    owner = lstat(recordPath(pidfile)).uid;
  } catch {
    // No record: said below.
  }
  const record = owner === 0 || owner === ids.euid() ? readRecord(pidfile) : undefined;
  if (record === undefined) {
    throw new UsageError(
      `no record of how ${quote(pidfile)} was started (${quote(recordPath(pidfile))}${
        owner === undefined ? " is missing" : " cannot be trusted"
      }): give -- COMMAND`,
    );
  }
  return record.spec;
}

/**
 * The program to find: the command's first word as given, or the base's as
 * it was written (found again in PATH), or, when that was a relative path
 * (which meant the directory of the first launch), the program found then.
 */
function programOf(command: readonly string[] | undefined, base: LaunchSpec | undefined): string {
  if (command !== undefined) return command[0]!;
  const first = base!.command[0]!;
  return first.includes("/") && !first.startsWith("/") ? base!.path : first;
}

/**
 * The environment a program starts from: the caller's, less the readiness
 * channels and the watchdog the caller was given by its own manager (a
 * daemon gets its own; `run` leaves them to COMMAND, which replaces it; a
 * supervisor in the foreground takes them for itself).
 *
 * @param context `start` or `run`
 * @returns the environment
 */
export function callerEnvironment(context: LaunchContext): Record<string, string> {
  const env = Deno.env.toObject();
  if (context === "start") {
    delete env[NOTIFY_SOCKET_ENV];
    delete env[NOTIFY_FD_ENV];
    delete env[WATCHDOG_USEC_ENV];
    delete env[WATCHDOG_PID_ENV];
  }
  return env;
}

/**
 * Who holds the lock: a supervisor with `supervise`; a keeper with `keeper`
 * or a cluster lock (the keeper holds it and fences the program); else the
 * program itself.
 */
function holderOf(options: LaunchRequest, context: LaunchContext, base?: LaunchSpec): Holder {
  const keeper = context === "start" && (options as StartOptions).keeper === true;
  const recorded = base?.holder.kind === "supervisor" ? base.holder.restart : undefined;
  const s = options.supervise ?? (recorded && !keeper ? {} : undefined);
  if (s) {
    return {
      kind: "supervisor",
      restart: {
        policy: s.restart ?? recorded?.policy ?? DEFAULT_RESTART_POLICY,
        delayMs: wait(
          s.restartDelay,
          recorded?.delayMs ?? DEFAULT_RESTART_DELAY_MS,
          "restartDelay",
        ),
        delayMaxMs: wait(
          s.restartDelayMax,
          recorded?.delayMaxMs ?? DEFAULT_RESTART_DELAY_MAX_MS,
          "restartDelayMax",
        ),
        minUptimeMs: wait(s.minUptime, recorded?.minUptimeMs ?? DEFAULT_MIN_UPTIME_MS, "minUptime"),
        maxRestarts: s.maxRestarts ?? recorded?.maxRestarts ?? DEFAULT_MAX_RESTARTS,
        windowMs: wait(
          s.restartWindow,
          recorded?.windowMs ?? DEFAULT_RESTART_WINDOW_MS,
          "restartWindow",
        ),
      },
    };
  }
  const kept = keeper || options.lock !== undefined || base?.holder.kind === "keeper";
  return kept ? { kind: "keeper" } : { kind: "self" };
}

/**
 * The health check, every value checked and every default applied: one
 * kind, times more than 0 (the start period from 0), retries from 1, a
 * URL or address Deno may connect to (checked now, not at the first check).
 */
function healthOf(options: LaunchRequest, holder: Holder): HealthSpec | null {
  const h = options.health;
  if (h === undefined) return null;
  if (holder.kind !== "supervisor") throw new UsageError("a health check needs supervise");
  const timing = {
    intervalMs: positive(h.interval, DEFAULT_HEALTH_INTERVAL_MS, "health.interval"),
    timeoutMs: positive(h.timeout, DEFAULT_HEALTH_TIMEOUT_MS, "health.timeout"),
    retries: h.retries ?? DEFAULT_HEALTH_RETRIES,
    startPeriodMs: wait(h.startPeriod, DEFAULT_HEALTH_START_PERIOD_MS, "health.startPeriod"),
  };
  if (!(Number.isInteger(timing.retries) && timing.retries >= 1 && timing.retries <= 1_000_000)) {
    throw new UsageError(`bad health.retries ${timing.retries}: expected 1 to 1000000`);
  }
  switch (h.kind) {
    case "cmd":
      return { kind: "cmd", command: parseHealthCommand(h.command, "health.command"), ...timing };
    case "http": {
      const url = parseHealthUrl(h.url, "health.url");
      const u = new URL(url);
      checkNetAllowed("--health-http", u.hostname, Number(u.port || defaultPort(u.protocol)));
      return { kind: "http", url, ...timing };
    }
    case "tcp": {
      const { host, port } = h;
      if (typeof host !== "string" || !/^[^\s/[\]]+$/.test(host)) {
        throw new UsageError(`bad health host ${quote(String(host))}: expected a name or address`);
      }
      if (!(Number.isInteger(port) && port >= 1 && port <= 65535)) {
        throw new UsageError(`bad health port ${port}: expected 1 to 65535`);
      }
      checkNetAllowed("--health-tcp", host, port);
      return { kind: "tcp", host, port, ...timing };
    }
    default:
      throw new UsageError(
        `bad health check kind ${quote(String((h as { kind: unknown }).kind))}: ` +
          "expected cmd, http or tcp",
      );
  }
}

function defaultPort(protocol: string): number {
  return protocol === "https:" ? 443 : 80;
}

/**
 * An HTTP or TCP health check connects from the supervisor, which runs with
 * this process's permissions: without Deno's net permission for that host
 * and port, every check would fail, so the launch is refused now.
 */
function checkNetAllowed(option: string, host: string, port: number): void {
  const name = host.includes(":") ? `[${host}]` : host;
  const state = Deno.permissions.querySync({ name: "net", host: `${name}:${port}` }).state;
  if (state !== "granted") {
    throw new UsageError(
      `${option} needs --allow-net (Deno's permission to connect to ${name}:${port})`,
    );
  }
}

/** The watchdog: with a supervisor whose program reports on the notify socket. */
function watchdogOf(
  options: LaunchRequest,
  holder: Holder,
  readiness: Readiness,
): number | null {
  const ms = options.watchdog;
  if (ms === undefined) return null;
  if (holder.kind !== "supervisor") throw new UsageError("a watchdog needs supervise");
  if (readiness.kind !== "socket") {
    throw new UsageError(
      "watchdog needs notifySocket readiness (WATCHDOG=1 comes through the socket)",
    );
  }
  return positive(ms, 0, "watchdog");
}

/** A wait that must be more than 0. */
function positive(value: number | undefined, fallback: number, name: string): number {
  const ms = wait(value, fallback, name);
  if (ms === 0) throw new UsageError(`bad ${name} 0: must be more than 0`);
  return ms;
}

function wait(value: number | undefined, fallback: number, name: string): number {
  return value === undefined ? fallback : checkWaitMs(value, name);
}

/** The readiness waits a caller gave, for their bounds. */
function readyWaits(
  options: LaunchRequest,
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
  options: LaunchRequest,
  holder: Holder,
  context: LaunchContext,
  base: LaunchSpec | undefined,
): Readiness {
  if (options.supervise?.readiness) return options.supervise.readiness;
  const s = options as StartOptions;
  if (s.notifyFd !== undefined) return { kind: "fd", fd: s.notifyFd };
  if (s.notifySocket) return { kind: "socket" };
  if (s.readyAfter === undefined && base) return base.readiness;
  if (context === "run" && holder.kind !== "supervisor") return { kind: "alive", afterMs: 0 };
  if (s.readyAfter !== undefined) return { kind: "alive", afterMs: s.readyAfter };
  const after = holder.kind === "supervisor"
    ? DEFAULT_CHILD_READY_AFTER_MS
    : DEFAULT_READY_AFTER_MS;
  return { kind: "alive", afterMs: after, servingMs: DEFAULT_READY_SERVING_MS };
}

/** The output target: the supervisor's (a file or syslog), else start's file, else the base's. */
function outputOf(options: LaunchRequest, base: LaunchSpec | undefined): OutputTarget | null {
  const given: SuperviseSettings["output"] | StartOptions["output"] = options.supervise?.output ??
    (options as StartOptions).output;
  if (given === undefined) return base?.output ?? null;
  return typeof given === "string" ? parseOutput(given, "output") : given;
}

/** A stop schedule as given (text or parsed), else the base's, else the default. */
function scheduleOf(given: string | Schedule | undefined, base: LaunchSpec | undefined): Schedule {
  if (given === undefined) {
    return base?.stopSchedule ?? parseSchedule(DEFAULT_CHILD_STOP_SCHEDULE, "stopSchedule");
  }
  return typeof given === "string" ? parseSchedule(given, "stopSchedule") : given;
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
