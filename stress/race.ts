/**
 * The race family: several shells issue random start, stop, restart, status
 * and reload on one pid file, while the daemon is sometimes killed with
 * SIGKILL and a controller is sometimes killed with SIGKILL halfway through
 * its operation. The shells run in rounds: every shell issues one operation,
 * all at once; when the round is over, nothing runs but the daemon, and the
 * invariants are checked strictly. A sampler also counts instances while the
 * operations run.
 *
 * Invariants (all checked after every round and at the end):
 * - never two instances: processes whose program is `sleep` and whose argv
 *   carries this run's marker (also sampled every 25 ms during the round);
 * - the pid file names the lock holder or is empty: with a daemon running, the
 *   file names it and it holds a lock on the file; with none, nobody holds a
 *   lock on it and it names no live process;
 * - no orphans: no process but the daemon mentions the run's directory or
 *   marker once every controller has returned;
 * - status agrees with reality: `status --json` says running with the
 *   daemon's pid, or not running (1 when the file names a pid, else 3);
 * - no leaked descriptors: the daemon has fds 0-2 on /dev/null and one fd on
 *   the pid file, nothing else;
 * - nothing wedged: every command returns within its bound, with a code it
 *   documents, and never prints a stack trace.
 *
 * @module
 */

import {
  fdsOf,
  findInstances,
  holdsLockOn,
  isAlive,
  killQuietly,
  sleep,
  STARTS_FINE,
  statOf,
} from "../testing/process.ts";
import type { CmdResult } from "../testing/process.ts";
import { reap } from "../src/ffi/mod.ts";
import { type Cli, lockedInodes, Rng, show, stackLines, strays, Tally } from "./common.ts";

/** Options of {@link raceFamily}. */
export interface RaceOptions {
  /** How many shells issue operations at once. */
  readonly shells: number;
  /** How many operations in all. */
  readonly ops: number;
  /** The random seed. */
  readonly seed: number;
  /** Progress output. */
  readonly log: (s: string) => void;
}

type Op = "start" | "stop" | "restart" | "status" | "reload" | "kill-daemon";
const WEIGHTS: Record<Op, number> = {
  start: 26,
  stop: 20,
  restart: 14,
  status: 20,
  reload: 12,
  "kill-daemon": 8,
};
/** Exit codes each operation documents (a controller we killed is not judged). */
const ALLOWED: Record<Exclude<Op, "kill-daemon">, number[]> = {
  // 1: the daemon was killed by another shell before it was ready, or a guard wait ran out.
  start: [0, 1, 3],
  stop: [0, 3],
  restart: [0, 1],
  status: [0, 1, 3],
  reload: [0, 3],
};
/** The chance that a start, stop or restart has its controller SIGKILLed mid-way. */
const KILL_CONTROLLER = 0.12;

/**
 * Run the race family.
 *
 * @param cli the command under test
 * @param opts shells, operations, seed
 * @returns the tally
 */
export async function raceFamily(cli: Cli, opts: RaceOptions): Promise<Tally> {
  const t = new Tally("race");
  const rng = new Rng(opts.seed);
  const dir = await Deno.makeTempDir({ prefix: "sr-stress-race-" });
  const pidfile = `${dir}/d.pid`;
  const mark = `sr-stress-${Deno.pid}-${opts.seed}`;
  // `trap "" HUP` survives the exec (an ignored signal stays ignored), so a
  // reload does not kill the daemon; `exec -a` puts the marker in argv[0].
  const daemon = ["/bin/bash", "-c", `trap "" HUP; exec -a ${mark} /bin/sleep 3600`];
  const counts: Record<string, number> = {};
  const codes: Record<string, number> = {};
  let controllersKilled = 0;
  /** Start or restart controllers SIGKILLed in the current round. */
  let startsKilled = 0;
  /** Rounds that ended with the file naming such a controller (status must still be right). */
  let namedDeadController = 0;
  let maxSeen = 0;
  let sampling = true;

  // While the shells run: count instances every 25 ms.
  const sampler = (async () => {
    while (sampling) {
      const n = findInstances(mark).length;
      if (n > maxSeen) maxSeen = n;
      if (n > 1) {
        t.check(
          false,
          () => `sampler saw ${n} instances at once: ${findInstances(mark).join(", ")}`,
        );
      }
      await sleep(25);
    }
  })();

  const judge = (op: Op, res: CmdResult, killed: boolean) => {
    const key = `${op}:${killed ? "killed" : res.timedOut ? "timeout" : res.code}`;
    codes[key] = (codes[key] ?? 0) + 1;
    if (killed) return;
    const allowed = ALLOWED[op as Exclude<Op, "kill-daemon">];
    t.check(allowed.includes(res.code) && !res.timedOut, () => `${op}: ${show(res)}`);
    t.check(stackLines(res.stderr).length === 0, () => `${op} printed a stack trace: ${show(res)}`);
    if ((op === "start" || op === "restart") && res.code === 0) {
      t.check(
        /^[0-9]+\n?$/.test(res.stdout),
        () => `${op} stdout is not a pid alone: ${show(res)}`,
      );
    }
  };

  const runOp = async (op: Op) => {
    counts[op] = (counts[op] ?? 0) + 1;
    if (op === "kill-daemon") {
      const [pid] = findInstances(mark);
      if (pid !== undefined) killQuietly(pid, "SIGKILL");
      return;
    }
    const args = op === "start" || op === "restart"
      ? [op, ...STARTS_FINE, "--pidfile", pidfile, "--guard-timeout", "20", "--", ...daemon]
      : op === "stop"
      ? ["stop", "--pidfile", pidfile, "--guard-timeout", "20", "--retry", "TERM/5/KILL/5"]
      : op === "reload"
      ? ["reload", "--pidfile", pidfile]
      : ["status", "--pidfile", pidfile];
    const killIt = (op === "start" || op === "stop" || op === "restart") &&
      rng.next() < KILL_CONTROLLER;
    const killAfterMs = killIt ? 5 + rng.int(120) : undefined;
    const res = await cli.run(args, { timeoutMs: 45_000, killAfterMs });
    const killed = killIt && res.signal === "SIGKILL";
    if (killed) controllersKilled++;
    if (killed && op !== "stop") startsKilled++;
    judge(op, res, killed);
  };

  /** The strict checks, with nothing running but the daemon. */
  const invariants = async (when: string) => {
    reapOrphans();
    // A daemon that start just reported ready may still be the bash that
    // execs sleep: give it a moment to become the marked process.
    for (let i = 0; i < 50 && strays(mark, findInstances(mark)).length; i++) await sleep(10);
    const inst = findInstances(mark);
    t.check(inst.length <= 1, () => `${when}: ${inst.length} instances: ${inst.join(", ")}`);
    let content = "";
    try {
      content = Deno.readTextFileSync(pidfile);
    } catch {
      // absent: as good as empty
    }
    const named = /^[0-9]+\n$/.test(content) ? Number(content) : undefined;
    t.check(
      content === "" || named !== undefined,
      () => `${when}: pid file holds ${JSON.stringify(content.slice(0, 40))}, not a pid or nothing`,
    );
    let ino: number | undefined;
    try {
      ino = Deno.statSync(pidfile).ino ?? undefined;
    } catch {
      // absent
    }
    const daemonPid = inst[0];
    if (daemonPid !== undefined) {
      // A start SIGKILLed between its spawn and its write of the daemon's pid
      // leaves the file naming the dead controller: allowed only then, and
      // status (checked below) must still name the daemon, found in /proc.
      const deadController = named !== undefined && named !== daemonPid && startsKilled > 0 &&
        !isAlive(named);
      if (deadController) namedDeadController++;
      t.check(
        named === daemonPid || deadController,
        () => `${when}: daemon ${daemonPid} runs but the pid file names ${named ?? "nobody"}`,
      );
      t.check(
        ino !== undefined && holdsLockOn(daemonPid, ino),
        () => `${when}: daemon ${daemonPid} does not hold a lock on the pid file`,
      );
      const fds = fdsOf(daemonPid);
      const extra = [...fds].filter(([fd, target]) =>
        !(fd <= 2 && target === "/dev/null") && target !== pidfile
      );
      const onPidfile = [...fds.values()].filter((x) => x === pidfile).length;
      t.check(
        extra.length === 0 && onPidfile === 1,
        () =>
          `${when}: daemon ${daemonPid} descriptors: ${
            [...fds].map(([f, x]) => `${f}->${x}`).join(" ")
          }`,
      );
    } else {
      const locked = ino !== undefined && lockedInodes().has(ino);
      t.check(
        !locked,
        () => `${when}: no daemon runs, yet the pid file is locked (by a stray holder)`,
      );
    }
    const left = strays(dir, inst).concat(strays(mark, inst));
    t.check(
      left.length === 0,
      () => `${when}: orphans: ${[...new Set(left)].map(describe).join("; ")}`,
    );
    const st = await cli.run(["status", "--json", "--pidfile", pidfile], { timeoutMs: 5000 });
    let json: { state?: string; pid?: number } = {};
    try {
      json = JSON.parse(st.stdout);
    } catch {
      // judged below
    }
    if (daemonPid !== undefined) {
      t.check(
        st.code === 0 && json.pid === daemonPid,
        () => `${when}: daemon ${daemonPid} runs; status --json: ${show(st)}`,
      );
    } else {
      const want = named === undefined ? 3 : 1;
      t.check(st.code === want, () => `${when}: no daemon; status should be ${want}: ${show(st)}`);
    }
  };

  const reapOrphans = () => {
    // Daemons whose controller is gone are reparented to us (a subreaper):
    // reap the ones that have ended.
    for (const pid of children()) {
      if (statOf(pid)?.state === "Z") reap(pid);
    }
  };

  const rounds = Math.ceil(opts.ops / opts.shells);
  let issued = 0;
  try {
    for (let round = 1; round <= rounds; round++) {
      const batch: Op[] = [];
      for (let s = 0; s < opts.shells && issued < opts.ops; s++, issued++) {
        batch.push(rng.pick(WEIGHTS));
      }
      startsKilled = 0;
      await Promise.all(batch.map((op) => runOp(op)));
      await invariants(`after round ${round} (${batch.join(",")})`);
      if (round % 10 === 0) {
        opts.log(`race: round ${round}/${rounds}, ${t.failures.length} failures`);
      }
    }
    // The end: stop must leave nothing.
    const end = await cli.run(["stop", "--pidfile", pidfile, "--guard-timeout", "20"], {
      timeoutMs: 30_000,
    });
    t.check([0, 3].includes(end.code), () => `final stop: ${show(end)}`);
    await sleep(50);
    await invariants("at the end");
    let content = "";
    try {
      content = Deno.readTextFileSync(pidfile);
    } catch {
      // absent is fine
    }
    t.check(
      content === "" || end.code === 3,
      () => `after the final stop the pid file still holds ${JSON.stringify(content)}`,
    );
  } finally {
    sampling = false;
    await sampler;
    for (const pid of findInstances(mark)) killQuietly(pid, "SIGKILL");
    for (const pid of strays(dir).concat(strays(mark))) killQuietly(pid, "SIGKILL");
    await sleep(50);
    reapOrphans();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  t.facts.push(
    `${issued} ops by ${opts.shells} shells in ${rounds} rounds (${
      Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ")
    }), ${controllersKilled} controllers SIGKILLed mid-operation, at most ${maxSeen} instance(s) seen`,
  );
  if (namedDeadController) {
    t.facts.push(
      `${namedDeadController} round(s) ended with the file naming a start SIGKILLed before its ` +
        `pid write (status named the daemon)`,
    );
  }
  t.facts.push(`codes: ${Object.entries(codes).sort().map(([k, v]) => `${k}x${v}`).join(" ")}`);
  return t;
}

/** Our children now (orphans reparented to this subreaper among them). */
function children(): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^[0-9]+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (statOf(pid)?.ppid === Deno.pid) out.push(pid);
  }
  return out;
}

function describe(pid: number): string {
  try {
    const argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").join(" ").trim();
    return `pid ${pid} (${argv.slice(0, 160)})`;
  } catch {
    return `pid ${pid}`;
  }
}
