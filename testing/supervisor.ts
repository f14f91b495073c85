/**
 * The supervisor run on its own, as `start --supervise` runs it (the stage
 * module from source, with the controller's environment), for the soak that
 * both the supervisor tests and the bench drive: a child that exits at once,
 * restarted with no delay and no crash-loop limit, sampled for memory and
 * descriptors as the restarts go by.
 *
 * Launching needs the stage's own argv and environment (imported from
 * `src/`); what is checked (memory, descriptors, the restart count in the
 * state file) is read from /proc and the file, as a user would.
 *
 * @module
 */

import { internalArgs } from "../src/launch/internal.ts";
import type { SuperviseSettings } from "../src/control/options.ts";
import { launchSpec } from "../src/control/spec.ts";
import { type StageOrders, SUPERVISOR_ENV } from "../src/supervisor/stage.ts";
import { fdsOf, type Memory, memory, ROOT, sleep } from "./process.ts";

const STAGE = `${ROOT}/src/supervisor/stage.ts`;

/** A supervisor for a test: the options `start --supervise` takes, and what to run. */
export interface StageConfig extends SuperviseSettings {
  readonly pidfile: string;
  /** The command, `[0]` searched in PATH. */
  readonly command: readonly string[];
}

/**
 * The stage's orders for a test's configuration: the launch spec made as
 * `start --supervise` makes it.
 *
 * @param c the configuration
 * @returns the orders
 */
export function stageOrders(c: StageConfig): StageOrders {
  const { pidfile, command, ...supervise } = c;
  const spec = launchSpec({ pidfile, command, supervise }, "start");
  return { spec, pidfile, unsetEnv: Object.keys(SUPERVISOR_ENV) };
}

/**
 * The argv that runs the stage from source, reading its orders on stdin.
 *
 * @param role supervisor or keeper
 * @returns the arguments after the Deno executable
 */
export function stageArgs(role: "supervisor" | "keeper" = "supervisor"): string[] {
  return ["run", "-A", "--quiet", STAGE, ...internalArgs(role, ["0"])];
}

/**
 * Start the supervisor stage from source with this configuration (its
 * orders on its stdin), its output discarded.
 *
 * @param config what to supervise
 * @param plain without the controller's environment (`SUPERVISOR_ENV`)
 * @returns the running supervisor
 */
export async function spawnSupervisor(
  config: StageConfig,
  plain = false,
): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: stageArgs(),
    env: plain ? {} : { ...SUPERVISOR_ENV },
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  await sendOrders(child, stageOrders(config));
  return child;
}

/**
 * Write the orders to a stage's stdin and close it.
 *
 * @param child the stage, spawned with `stdin: "piped"`
 * @param orders what it is told
 */
export async function sendOrders(child: Deno.ChildProcess, orders: StageOrders): Promise<void> {
  const writer = child.stdin.getWriter();
  try {
    await writer.write(new TextEncoder().encode(JSON.stringify(orders)));
    await writer.close();
  } catch {
    // It died first: the test sees its exit.
  }
}

/** One sample of the soak: memory and descriptors after so many restarts. */
export interface SoakSample extends Memory {
  readonly restarts: number;
  readonly fds: number;
}

/** What {@link soak} measured. */
export interface SoakResult {
  /** One sample per mark (0, 10, 100, ... restarts). */
  readonly samples: SoakSample[];
  /** How long the restarts took. */
  readonly seconds: number;
  /** The supervisor idle after the soak, `settleMs` later. */
  readonly settled: Memory & { readonly fds: number };
}

/**
 * Crash-restart a child `restarts` times under one supervisor and sample it.
 * `SOAK_PLAIN=1` in the environment runs the supervisor as plain Deno,
 * without the controller's V8 flags, to compare.
 *
 * @param restarts how many restarts
 * @param settleMs how long to let it rest before the last sample
 */
export async function soak(restarts: number, settleMs = 1000): Promise<SoakResult> {
  const dir = await Deno.makeTempDir({ prefix: "supervise-soak-" });
  const pidfile = `${dir}/soak.pid`;
  const child = await spawnSupervisor({
    pidfile,
    command: ["sh", "-c", "echo out; echo err >&2; exit 1"],
    output: `${dir}/out.log`,
    restartDelay: 0,
    maxRestarts: 0,
    readiness: { kind: "alive", afterMs: 0 },
  }, Deno.env.get("SOAK_PLAIN") !== undefined);
  const pid = child.pid;
  const samples: SoakSample[] = [];
  const marks = [0, 10, 100, 250, 500, 750, 1000, 2000, 5000].filter((n) => n <= restarts);
  if (!marks.includes(restarts)) marks.push(restarts);
  const started = performance.now();
  try {
    for (const mark of marks) {
      await waitForRestarts(`${pidfile}.state`, mark);
      samples.push({ restarts: mark, ...memory(pid), fds: fdsOf(pid).size });
    }
    const seconds = (performance.now() - started) / 1000;
    await sleep(settleMs);
    return { samples, seconds, settled: { ...memory(pid), fds: fdsOf(pid).size } };
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

/** Wait (up to two minutes) until the state file counts `mark` restarts. */
async function waitForRestarts(stateFile: string, mark: number): Promise<void> {
  const deadline = performance.now() + 120_000;
  for (;;) {
    let n = -1;
    try {
      n = JSON.parse(Deno.readTextFileSync(stateFile)).restarts;
    } catch {
      // not written yet, or being replaced
    }
    if (n >= mark) return;
    if (performance.now() > deadline) throw new Error(`stuck before ${mark} restarts`);
    await sleep(5);
  }
}
