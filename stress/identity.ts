/**
 * The identity family: the attacks of tests/cli/identity_test.ts replayed in
 * rounds with random timing, as root against `nobody`, and with every pid a
 * controller might take for its daemon reused at once by a decoy (an
 * unrelated root process that took the pid through ns_last_pid and logs
 * every signal it gets). Each round plays one case:
 *
 * 1. another user's read lock (POSIX, OFD or flock) taken before or during
 *    a start of a daemon that closes its descriptors, then a second start;
 * 2. after the daemon's crash and the reuse of its pid, another user's lock
 *    held by a process whose argv claims the keeper role;
 * 3. `--supervise --daemon-pidfile` following a grandchild that is killed;
 * 4. a daemon whose keeper was SIGKILLed, then `start`;
 * 5. a supervisor that gives up while a process of its last run lives on.
 *
 * It counts the pid reuses it achieved, the signals that reached a decoy
 * (wrong-process signals) and the times two instances ran (double
 * instances), and checks each case's exit codes. Failures are tagged with
 * the case's known-bug id while the fixes are on their way.
 *
 * @module
 */

import {
  argvOf,
  findInstances,
  isAlive,
  killQuietly,
  listPids,
  procStat,
  sleep,
  STARTS_FINE,
  statOf,
} from "../testing/process.ts";
import type { CmdResult } from "../testing/process.ts";
import * as attack from "../testing/identity.ts";
import { reap } from "../src/ffi/mod.ts";
import { type Cli, Rng, show, strays, Tally } from "./common.ts";

/** Options of {@link identityFamily}. */
export interface IdentityOptions {
  /** Pid reuses to reach. */
  readonly reuses: number;
  /** Give up adding rounds after this long, in milliseconds. */
  readonly budgetMs: number;
  /** The random seed. */
  readonly seed: number;
  /** Progress output. */
  readonly log: (s: string) => void;
}

/** Which case a round plays, by its known-bug id. */
type Case = "identity-1" | "identity-2" | "identity-3" | "identity-4" | "identity-5";
const CASES: readonly Case[] = [
  "identity-1",
  "identity-2",
  "identity-3",
  "identity-4",
  "identity-5",
];

/** The counts the summary line gives. */
interface Counts {
  reuses: number;
  missed: number;
  wrongSignals: number;
  doubles: number;
}

/** One round's world: its directory, pid file, the cast, and what it must clean up. */
interface Round {
  readonly cli: Cli;
  readonly t: Tally;
  readonly rng: Rng;
  readonly cast: attack.Cast;
  readonly dir: string;
  readonly pidfile: string;
  readonly mark: string;
  readonly id: Case;
  readonly counts: Counts;
  /** Processes of ours to kill when the round ends: pid and start time, so a reused pid is left alone. */
  readonly ours: Map<number, number | undefined>;
}

/**
 * Replay the identity attacks until `reuses` pids were reused or the budget
 * is spent.
 *
 * @param cli the command under test
 * @param opts how many reuses, the time budget, the seed, progress output
 * @returns the tally, or undefined when the attacks cannot be staged here
 */
export async function identityFamily(
  cli: Cli,
  opts: IdentityOptions,
): Promise<Tally | undefined> {
  const why = attack.cannotStage();
  if (why) {
    opts.log(`identity: skipped (${why})`);
    return undefined;
  }
  const t = new Tally("identity under pid reuse");
  const rng = new Rng(opts.seed ^ 0x1d);
  const top = await Deno.makeTempDir({ prefix: "sr-stress-identity-" });
  Deno.chmodSync(top, 0o755);
  const counts: Counts = { reuses: 0, missed: 0, wrongSignals: 0, doubles: 0 };
  const played: Record<Case, number> = {
    "identity-1": 0,
    "identity-2": 0,
    "identity-3": 0,
    "identity-4": 0,
    "identity-5": 0,
  };
  const began = performance.now();
  try {
    const cast = await attack.buildCast(top);
    for (let n = 1; counts.reuses < opts.reuses; n++) {
      if (performance.now() - began > opts.budgetMs) break;
      const id = CASES[rng.int(CASES.length)]!;
      played[id]++;
      const dir = `${top}/r${n}`;
      Deno.mkdirSync(dir, { mode: 0o755 });
      const round: Round = {
        cli,
        t,
        rng,
        cast,
        dir,
        pidfile: `${dir}/d.pid`,
        mark: `0.0${Deno.pid}${n}${rng.int(1000)}`,
        id,
        counts,
        ours: new Map(),
      };
      try {
        await PLAY[id](round);
      } catch (err) {
        t.check(false, () => `round ${n} (${id}) broke: ${(err as Error).stack ?? err}`);
      } finally {
        await endRound(round);
      }
      if (n % 10 === 0) {
        opts.log(`identity: round ${n}, ${counts.reuses} reuses, ${t.failures.length} failures`);
      }
    }
  } finally {
    await Deno.remove(top, { recursive: true }).catch(() => {});
  }
  t.check(
    counts.reuses >= opts.reuses,
    () => `only ${counts.reuses} pid reuses in ${opts.budgetMs / 1000} s (wanted ${opts.reuses})`,
  );
  t.facts.push(
    `${Object.values(played).reduce((a, b) => a + b, 0)} rounds (${
      CASES.map((c) => `case ${c.slice(-1)} x${played[c]}`).join(", ")
    }), ${counts.reuses} pid reuses (${counts.missed} missed), ${counts.wrongSignals} ` +
      `wrong-process signals, ${counts.doubles} double instances`,
  );
  return t;
}

const PLAY: Record<Case, (r: Round) => Promise<void>> = {
  "identity-1": foreignReadLock,
  "identity-2": forgedKeeper,
  "identity-3": followedGrandchild,
  "identity-4": deadKeeper,
  "identity-5": leftovers,
};

/** Case 1: another user's read lock, before or during a start of a daemon that closes its descriptors. */
async function foreignReadLock(r: Round): Promise<void> {
  const kind = attack.LOCK_KINDS[r.rng.int(attack.LOCK_KINDS.length)]!;
  Deno.writeTextFileSync(r.pidfile, "", { mode: 0o644 });
  const early = kind === "flock" || r.rng.int(2) === 0;
  await using _attacker = early ? await attack.Attacker.lock(r.pidfile, kind) : undefined;
  const start = ["start", "--notify-fd", "4", "--pidfile", r.pidfile, "--", ...closer(r)];
  const first = await run(r, start);
  const late = early ? undefined : await attack.Attacker.lock(r.pidfile, kind);
  try {
    await jitter(r);
    const second = await run(r, start);
    const copies = closers(r);
    track(r, copies);
    noDouble(r, copies, `after two starts with nobody's ${kind} lock`);
    expect(r, first, 0, `first start with nobody's ${kind} lock`);
    expect(r, second, 3, `second start with nobody's ${kind} lock`);
    expect(r, await run(r, ["status", "--pidfile", r.pidfile]), 0, "status of the daemon");
    expect(r, await stop(r), 0, `stop with nobody's ${kind} lock`);
    const victim = Number(first.stdout.trim());
    await killOurs(r, closers(r));
    if (first.code === 0) {
      await probes(r, victim, ["status", "signal", "stop"], {
        status: BY_FILE,
        signal: 3,
        stop: 3,
      });
    }
  } finally {
    await late?.[Symbol.asyncDispose]();
  }
}

/** Case 2: after a crash and a reuse, a forged keeper of another user holds a lock. */
async function forgedKeeper(r: Round): Promise<void> {
  const started = await run(r, [
    "start",
    ...STARTS_FINE,
    "--pidfile",
    r.pidfile,
    "--",
    "sleep",
    "3600",
    r.mark,
  ]);
  if (!expect(r, started, 0, "start of the daemon")) return;
  const daemon = Number(started.stdout.trim());
  await jitter(r);
  killQuietly(daemon, "SIGKILL");
  const kind: attack.LockKind = r.rng.int(2) === 0 ? "posix" : "flock";
  await probes(
    r,
    daemon,
    ["status", "signal", "stop"],
    { status: BY_FILE, signal: 3, stop: 3 },
    kind,
  );
}

/** Case 3: a supervisor following a grandchild (its own pid file), which is killed. */
async function followedGrandchild(r: Round): Promise<void> {
  const dp = `${r.dir}/own.pid`;
  const started = await run(r, [
    "start",
    ...STARTS_FINE,
    "--supervise",
    "--restart",
    "always",
    "--restart-delay",
    "50ms",
    "--daemon-pidfile",
    dp,
    "--pidfile",
    r.pidfile,
    "--",
    "bash",
    "-c",
    `sleep 3600 ${r.mark} & echo $! > "$1"; wait`,
    "bash",
    dp,
  ]);
  if (!expect(r, started, 0, "start --supervise --daemon-pidfile")) return;
  const main = await until(async () => {
    const child = (await statusJson(r)).supervisor?.childPid ?? 0;
    return findInstances(r.mark).includes(child) ? child : undefined;
  }, 10_000);
  if (!r.t.check(main !== undefined, () => "the supervisor never followed its grandchild")) return;
  await jitter(r);
  killQuietly(main!, "SIGKILL");
  await probes(r, main!, ["status", "signal"], { status: 0, signal: 0 });
  const moved = await until(async () => {
    const child = (await statusJson(r)).supervisor?.childPid ?? 0;
    return child !== main && findInstances(r.mark).includes(child) ? true : undefined;
  }, 5000);
  r.t.check(moved === true, () => `main process ${main} died and no new run was seen`, r.id);
  await probes(r, main!, ["stop"], { stop: 0 });
}

/** Case 4: the daemon of a SIGKILLed keeper, then start. */
async function deadKeeper(r: Round): Promise<void> {
  const start = ["start", "--notify-fd", "4", "--pidfile", r.pidfile, "--", ...closer(r)];
  const first = await run(r, start);
  if (!expect(r, first, 0, "start of a daemon that closes its descriptors")) return;
  const daemon = Number(first.stdout.trim());
  const keeper = Number(/keeper pid ([0-9]+)/.exec(first.stderr)?.[1]);
  if (!r.t.check(keeper > 0, () => `no keeper: ${show(first)}`)) return;
  await jitter(r);
  killQuietly(keeper, "SIGKILL");
  await freed(keeper);
  const again = await run(r, start);
  const copies = closers(r);
  track(r, copies);
  noDouble(r, copies, "after a start over the daemon of a dead keeper");
  expect(r, again, 1, "start over the daemon of a dead keeper");
  await killOurs(r, copies);
  await probes(r, daemon, ["start"], { start: 0 });
}

/** Case 5: a supervisor gives up while a process of its last run lives on. */
async function leftovers(r: Round): Promise<void> {
  const policy = r.rng.int(2) === 0
    ? ["--restart", "never"]
    : ["--max-restarts", "1", "--restart-delay", "50ms"];
  const life = (0.2 + r.rng.int(40) / 100).toFixed(2);
  const started = await run(r, [
    "start",
    ...STARTS_FINE,
    "--supervise",
    ...policy,
    "--pidfile",
    r.pidfile,
    "--",
    "bash",
    "-c",
    `setsid sleep 3600 ${r.mark} & sleep ${life}; exit 1`,
  ]);
  if (!expect(r, started, 0, `start --supervise ${policy.join(" ")}`)) return;
  const supervisor = Number(started.stdout.trim());
  const gone = await until(() => isAlive(supervisor) ? undefined : true, 20_000);
  if (!r.t.check(gone === true, () => "the supervisor did not give up in 20 s")) return;
  const left = findInstances(r.mark);
  track(r, left);
  r.t.check(left.length === 0, () => `a leftover of the last run runs on: ${left}`, r.id);
  expect(r, await run(r, ["status", "--pidfile", r.pidfile]), 3, "status after it gave up");
  await killOurs(r, left);
  await probes(r, left[0] ?? supervisor, ["status", "stop"], { status: BY_FILE, stop: 3 });
}

type Probe = "status" | "signal" | "stop" | "start";

/**
 * The code `status` owes when no daemon runs, whatever other users hold:
 * 1 while the pid file names a pid (stale), else 3.
 */
const BY_FILE = -1;

/**
 * Reuse `victim`'s pid again and again, each time by a new decoy (and, for
 * case 2, a new forged keeper started after it), and run one command of
 * `ops` on the pid file: the decoy must get no signal, and the command its
 * expected code.
 */
async function probes(
  r: Round,
  victim: number,
  ops: readonly Probe[],
  want: Partial<Record<Probe, number>>,
  forged?: attack.LockKind,
): Promise<void> {
  const times = ops.length === 1 && ops[0] === "stop" ? 1 : 1 + r.rng.int(3);
  for (let i = 0; i < times; i++) {
    const op = ops[r.rng.int(ops.length)]!;
    if (!(await freed(victim))) {
      r.counts.missed++;
      return;
    }
    const reuse = r.counts.reuses + r.counts.missed + 1;
    const decoy = await attack.Decoy.take(r.cast, victim, `${r.dir}/decoy-${reuse}.log`, 5);
    if (!decoy) {
      r.counts.missed++;
      continue;
    }
    r.counts.reuses++;
    try {
      await using _attacker = forged
        ? await attack.Attacker.lock(r.pidfile, forged, attack.FORGED_KEEPER)
        : undefined;
      await jitter(r);
      const code = want[op] === BY_FILE ? (namesPid(r.pidfile) ? 1 : 3) : want[op]!;
      const res = await probe(r, op);
      const got = decoy.signals().length + (decoy.alive ? 0 : 1);
      r.counts.wrongSignals += got;
      const what = `${op} over pid ${victim} (reuse ${reuse})`;
      r.t.check(got === 0, () => `${what}: ${decoy.describe()}`, r.id);
      expect(r, res, code, what);
      if (op === "start" && res.code === 0) {
        const copies = closers(r).concat(findInstances(r.mark));
        track(r, copies);
        noDouble(r, copies, "after a start over a reused pid");
        expect(r, await stop(r), 0, "stop after a start over a reused pid");
      }
    } finally {
      await decoy[Symbol.asyncDispose]();
      reapOurs(victim);
    }
  }
}

function probe(r: Round, op: Probe): Promise<CmdResult> {
  switch (op) {
    case "status":
      return run(r, ["status", "--pidfile", r.pidfile]);
    case "signal":
      return run(r, ["signal", "--pidfile", r.pidfile, "USR1"]);
    case "stop":
      return stop(r);
    case "start":
      return run(r, ["start", "--notify-fd", "4", "--pidfile", r.pidfile, "--", ...closer(r)]);
  }
}

function closer(r: Round): string[] {
  return attack.closerArgv(r.cast, r.mark);
}

/** Live instances of this round's closing daemon. */
function closers(r: Round): number[] {
  const want = closer(r).join("\0");
  return listPids().filter((p) => argvOf(p)?.join("\0") === want && isAlive(p));
}

async function run(r: Round, args: readonly string[]): Promise<CmdResult> {
  const res = await r.cli.run(args, { timeoutMs: 60_000 });
  track(r, strays(r.dir).filter((p) => argvOf(p)?.[0] !== r.cast.decoy));
  return res;
}

function stop(r: Round): Promise<CmdResult> {
  return run(r, ["stop", "--retry", "TERM/2/KILL/1", "--pidfile", r.pidfile]);
}

async function statusJson(r: Round): Promise<{ supervisor?: { childPid?: number } }> {
  const res = await run(r, ["status", "--json", "--pidfile", r.pidfile]);
  try {
    return JSON.parse(res.stdout);
  } catch {
    return {};
  }
}

/** Check a command's exit code, tagged with the round's case. */
function expect(r: Round, res: CmdResult, code: number, what: string): boolean {
  return r.t.check(res.code === code, () => `${what}: want exit ${code}, got ${show(res)}`, r.id);
}

function noDouble(r: Round, copies: readonly number[], when: string): void {
  if (copies.length > 1) r.counts.doubles++;
  r.t.check(copies.length <= 1, () => `${when}: ${copies.length} instances (${copies})`, r.id);
}

/** A random pause of up to 150 ms: where in the daemon's life the next step lands. */
function jitter(r: Round): Promise<void> {
  return sleep(r.rng.int(150));
}

async function until<T>(check: () => T | undefined | Promise<T | undefined>, ms: number) {
  const deadline = performance.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined || performance.now() > deadline) return v;
    await sleep(50);
  }
}

/** Reap `pid` when it is a zombie child of ours (an orphan reparented to this subreaper). */
function reapOurs(pid: number): void {
  const st = statOf(pid);
  if (st?.state === "Z" && st.ppid === Deno.pid) reap(pid);
}

/** Wait (at most 5 s) until `pid` is free: gone, and reaped when it was ours to reap. */
async function freed(pid: number): Promise<boolean> {
  return await until(() => {
    reapOurs(pid);
    return statOf(pid) === undefined ? true : undefined;
  }, 5000) === true;
}

/** The start time of a live process, or undefined. */
function startTicks(pid: number): number | undefined {
  try {
    return Number(procStat(pid)[19]);
  } catch {
    return undefined;
  }
}

/** Remember processes of this round, to kill them when it ends. */
function track(r: Round, pids: readonly number[]): void {
  for (const p of pids) if (!r.ours.has(p)) r.ours.set(p, startTicks(p));
}

/** SIGKILL processes of ours, each only while it is still the process seen (same start time). */
async function killOurs(r: Round, pids: readonly number[]): Promise<void> {
  track(r, pids);
  const mine = pids.filter((p) => startTicks(p) !== undefined && startTicks(p) === r.ours.get(p));
  for (const p of mine) killQuietly(p, "SIGKILL");
  for (const p of mine) await freed(p);
  for (const p of pids) r.ours.delete(p);
}

/** Whether a pid file names a pid. */
function namesPid(path: string): boolean {
  try {
    return /^[0-9]+\s*$/.test(Deno.readTextFileSync(path));
  } catch {
    return false;
  }
}

/** Kill what the round left (by pid), reap the orphans that came to us, remove its directory. */
async function endRound(r: Round): Promise<void> {
  track(r, [...findInstances(r.mark), ...closers(r)]);
  track(r, strays(r.dir).filter((p) => argvOf(p)?.[0] !== r.cast.decoy));
  await killOurs(r, [...r.ours.keys()]);
  for (const p of listPids()) {
    if (statOf(p)?.ppid === Deno.pid) reapOurs(p);
  }
  await Deno.remove(r.dir, { recursive: true }).catch(() => {});
}
