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
import {
  NOTIFY_FD_ENV,
  NOTIFY_SOCKET_ENV,
  WATCHDOG_PID_ENV,
  WATCHDOG_USEC_ENV,
} from "../launch/readiness.ts";
import { parseSchedule, type Schedule } from "../launch/schedule.ts";
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
  const readiness = readinessOf(options, holder, context);
  const health = healthOf(options, holder);
  const watchdogMs = watchdogOf(options, holder, readiness);
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
    readiness,
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
    health,
    watchdogMs,
  };
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

/**
 * The health check, every value checked and every default applied: one
 * kind, times more than 0 (the start period from 0), retries from 1, a
 * URL or address Deno may connect to (checked now, not at the first check).
 */
function healthOf(options: StartOptions | RunOptions, holder: Holder): HealthSpec | null {
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
      return { kind: "cmd", command: parseHealthCommand(h.command, "--health-cmd"), ...timing };
    case "http": {
      const url = parseHealthUrl(h.url, "--health-http");
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
  options: StartOptions | RunOptions,
  holder: Holder,
  readiness: Readiness,
): number | null {
  const ms = options.watchdog;
  if (ms === undefined) return null;
  if (holder.kind !== "supervisor") throw new UsageError("a watchdog needs supervise");
  if (readiness.kind !== "socket") {
    throw new UsageError("--watchdog needs --notify-socket (WATCHDOG=1 comes through it)");
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
 * How the program says it is ready. A supervisor's child is alive after
 * 100 ms by default; a daemon (or a keeper's program) after 20 ms; in the
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
  const after = s.readyAfter ??
    (holder.kind === "supervisor" ? DEFAULT_CHILD_READY_AFTER_MS : DEFAULT_READY_AFTER_MS);
  return { kind: "alive", afterMs: after };
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
