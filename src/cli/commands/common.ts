/**
 * What several commands build from the same options: the guard (every
 * command but status), the launch (start, run, restart), the start options
 * and the supervise settings.
 *
 * @module
 */

import type {
  ClusterLockSettings,
  GuardOptions,
  HealthSettings,
  LaunchOptions,
  LivenessOptions,
  StartOptions,
  TrustOptions,
} from "../../control/mod.ts";
import type { Invocation } from "../parse.ts";
import type { Values } from "../options.ts";
import { say } from "../output.ts";

/** The options every guarded command passes (and `--exec`, which only stop, signal and reload take). */
export function guardOptions(v: Values): GuardOptions & TrustOptions {
  return {
    pidfile: v.pidfile!,
    ...defined("guard", v.guard),
    ...defined("guardTimeout", v.guardTimeout),
    ...defined("exec", v.exec),
    onWarning: say,
  };
}

/** What to launch, and how. */
export function launchOptions(inv: Invocation): LaunchOptions {
  const v = inv.values;
  return {
    command: inv.command!,
    ...defined("chdir", v.chdir),
    ...defined("umask", v.umask),
    env: Object.fromEntries(v.env),
    ...defined("user", v.user),
    ...defined("name", v.name),
  };
}

/** The supervise settings, for start, restart and run with --supervise. */
export function superviseSettings(v: Values): NonNullable<StartOptions["supervise"]> {
  const readiness = v.notifyFd !== undefined
    ? { kind: "fd" as const, fd: v.notifyFd }
    : v.notifySocket
    ? { kind: "socket" as const }
    : v.readyAfter !== undefined
    ? { kind: "alive" as const, afterMs: v.readyAfter }
    : undefined;
  return {
    ...defined("restart", v.restart),
    ...defined("restartDelay", v.restartDelay),
    ...defined("restartDelayMax", v.restartDelayMax),
    ...defined("minUptime", v.minUptime),
    ...defined("restartWindow", v.restartWindow),
    ...defined("maxRestarts", v.maxRestarts),
    ...(v.killGroup ? { killGroup: true } : {}),
    ...defined("stopSchedule", v.stopSchedule),
    ...defined("name", v.name),
    ...defined("output", v.output),
    ...defined("readiness", readiness),
    ...defined("readyTimeout", v.readyTimeout),
    ...defined("daemonPidfile", v.daemonPidfile),
  };
}

/** The health check and the watchdog, for start, restart and run with --supervise. */
export function livenessOptions(v: Values): LivenessOptions {
  const check: HealthSettings | undefined = v.healthCmd !== undefined
    ? { kind: "cmd", command: v.healthCmd }
    : v.healthHttp !== undefined
    ? { kind: "http", url: v.healthHttp }
    : v.healthTcp !== undefined
    ? { kind: "tcp", ...v.healthTcp }
    : undefined;
  const health: HealthSettings | undefined = check && {
    ...check,
    ...defined("interval", v.healthInterval),
    ...defined("timeout", v.healthTimeout),
    ...defined("retries", v.healthRetries),
    ...defined("startPeriod", v.healthStartPeriod),
  };
  return { ...defined("health", health), ...defined("watchdog", v.watchdog) };
}

/** Where syslog(3) and the supervisor's syslog output send their datagrams. */
const SYSLOG_SOCKET = "/dev/log";

/**
 * With `--supervise --output syslog`, say at once when nothing can receive
 * the output: the supervisor drops and counts those lines (status --json),
 * and its own notice goes to the same unreachable log.
 */
export function warnUndeliverableOutput(v: Values): void {
  if (!v.supervise || v.output?.kind !== "syslog") return;
  let socket = false;
  try {
    socket = Deno.lstatSync(SYSLOG_SOCKET).isSocket === true;
  } catch {
    // Missing or unreadable: not a socket we can reach.
  }
  if (!socket) {
    say(
      `warning: ${SYSLOG_SOCKET} is not a socket, so COMMAND's output will be dropped ` +
        "(status --json counts the lines)",
    );
  }
}

/** The cluster lock's settings from --lock and its companions; undefined without --lock. */
export function lockSettings(v: Values): ClusterLockSettings | undefined {
  if (v.lock === undefined) return undefined;
  const tls = {
    ...defined("cacert", v.lockCacert),
    ...defined("cert", v.lockCert),
    ...defined("key", v.lockKey),
  };
  return {
    url: v.lock,
    ...defined("ttlMs", v.lockTtl),
    ...defined("waitMs", v.lockWait),
    ...defined("timeoutMs", v.lockTimeout),
    ...(Object.keys(tls).length > 0 ? { tls } : {}),
    ...defined("passwordFile", v.lockPasswordFile),
  };
}

/** start's and restart's options, but the guard's. */
export function startOptions(inv: Invocation): Omit<StartOptions, keyof GuardOptions> {
  const v = inv.values;
  if (v.supervise) {
    return {
      ...launchOptions(inv),
      ...defined("readyTimeout", v.readyTimeout),
      supervise: superviseSettings(v),
      ...livenessOptions(v),
      ...defined("lock", lockSettings(v)),
      signal: interruptions(),
    };
  }
  return {
    ...launchOptions(inv),
    ...defined("output", v.output),
    ...defined("readyTimeout", v.readyTimeout),
    ...defined("readyAfter", v.readyAfter),
    ...defined("notifyFd", v.notifyFd),
    ...(v.notifySocket ? { notifySocket: true } : {}),
    ...defined("daemonPidfile", v.daemonPidfile),
    ...(v.keeper ? { keeper: true } : {}),
    ...defined("lock", lockSettings(v)),
    ...defined("stopSchedule", v.stopSchedule),
    signal: interruptions(),
  };
}

/**
 * An AbortSignal fired by SIGINT, SIGTERM or SIGHUP, so an interrupted start
 * kills its half-started daemon instead of leaving it behind. Listening for
 * them also keeps the default action (dying at once) from skipping that.
 */
function interruptions(): AbortSignal {
  const controller = new AbortController();
  const codes = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => {
      controller.abort(sig);
      // Outside the readiness wait (the guard wait, restart's stop), go as the signal would.
      Deno.unrefTimer(setTimeout(() => Deno.exit(codes[sig]), 2000));
    });
  }
  return controller.signal;
}

/** `{ [key]: value }`, or nothing when the value is undefined (exactOptionalPropertyTypes-safe). */
export function defined<K extends string, V>(key: K, value: V | undefined): { [k in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [k in K]?: V };
}
