/**
 * The supervisor across real processes: it is started as `start --supervise`
 * starts it (the internal supervisor stage), its children are killed, its output
 * is rotated, it runs as PID 1 in a new PID namespace and logs to a real
 * rsyslogd.
 */

import assert from "node:assert/strict";
import { PidFile } from "../src/lock/pidfile.ts";
import { SUPERVISOR_ENV } from "../src/supervisor/stage.ts";
import { CHILD_LOCK_FD, childLockFd } from "../src/supervisor/child.ts";
import { syslogHeader } from "../src/supervisor/output.ts";
import { parseOutput } from "../src/control/values.ts";
import { readSupervisorStatus, statePath, writeStateFile } from "../src/supervisor/state.ts";
import { StopWalk } from "../src/supervisor/stopping.ts";
import { parseSchedule } from "../src/launch/schedule.ts";
import { describeExit } from "../src/launch/exit.ts";
import {
  eventually,
  isAlive,
  killQuietly,
  memory,
  processState,
  tempDir,
} from "../testing/process.ts";
import { startRsyslog } from "../testing/rsyslog.ts";
import {
  sendOrders,
  soak,
  stageArgs,
  type StageConfig,
  stageOrders,
} from "../testing/supervisor.ts";
import {
  bundleVariant,
  type Result,
  SOURCE,
  sr,
  startFine,
  STARTS_FINE,
  type Variant,
} from "./cli/harness.ts";

interface State {
  supervisorPid: number;
  childPid: number | null;
  phase: string;
  restarts: number;
  lastExit: string | null;
}

function readState(pidfile: string): State | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(`${pidfile}.state`));
  } catch {
    return undefined;
  }
}

/** A supervisor stage process, with its stderr collected. */
class Supervisor implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly stderr: Promise<string>;
  constructor(readonly config: StageConfig, wrap: (argv: string[]) => string[] = (a) => a) {
    const [program, ...args] = wrap([Deno.execPath(), ...stageArgs()]);
    this.process = new Deno.Command(program!, {
      args,
      env: { ...SUPERVISOR_ENV },
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // A child that lives 100 ms is ready (the old default), unless the test says how: these
    // tests are about restarts and stops, not about start-up failures (honest_start_test.ts).
    const orders = stageOrders({ readiness: { kind: "alive", afterMs: 100 }, ...config });
    this.ordered = sendOrders(this.process, orders);
    this.stderr = new Response(this.process.stderr).text();
  }
  readonly ordered: Promise<void>;
  get pid(): number {
    return this.process.pid;
  }
  state(): State | undefined {
    return readState(this.config.pidfile);
  }
  /** Wait until the state file shows a live child (other than `not`) in `phase`. */
  async child(not?: number, phase = "running", timeout = 10_000): Promise<number> {
    let pid = 0;
    await eventually(`a child other than ${not} in phase ${phase}`, () => {
      const s = this.state();
      if (s?.childPid && s.childPid !== not && s.phase === phase) pid = s.childPid;
      return pid !== 0;
    }, timeout);
    return pid;
  }
  /** Wait for the exit (bounded) and return the code. */
  async exit(timeout = 15_000): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      this.process.status,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), timeout)),
    ]);
    clearTimeout(timer);
    if (!status) throw new Error(`supervisor ${this.pid} still running after ${timeout} ms`);
    return status.code;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    const child = this.state()?.childPid;
    killQuietly(this.pid, "SIGKILL");
    if (child) {
      killQuietly(child, "SIGKILL");
      if (this.config.killGroup) killQuietly(-child, "SIGKILL");
    }
    await this.process.status;
    // A leftover writer (a worker of a failed test) may hold stderr open: do not wait on it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.stderr.catch(() => ""),
      new Promise((r) => timer = setTimeout(r, 1000)),
    ]);
    clearTimeout(timer);
  }
}

const script = (text: string) => ({ command: ["sh", "-c", text] });

/** Processes whose parent is `ppid`, with their states. */
function childrenOf(ppid: number): { pid: number; state: string }[] {
  const out = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^[0-9]+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === ppid) out.push({ pid: Number(e.name), state: f[0]! });
    } catch { /* gone */ }
  }
  return out;
}

function cmdline(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Pids in process group `pgid`. */
function groupMembers(pgid: number): number[] {
  const out = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^[0-9]+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[2]) === pgid && f[0] !== "Z") out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

Deno.test("parsers: output targets, exit reasons, syslog header", () => {
  assert.deepEqual(parseOutput("syslog:local3"), { kind: "syslog", facility: "local3" });
  assert.deepEqual(parseOutput("syslog"), { kind: "syslog", facility: "daemon" });
  assert.deepEqual(parseOutput("/var/log/x.log"), { kind: "file", path: "/var/log/x.log" });
  assert.throws(() => parseOutput("syslog:nope"), /unknown syslog facility "nope"/);
  assert.equal(describeExit({ exited: true, code: 3 }), "exit status 3");
  assert.equal(
    describeExit({ exited: false, signal: 11, coreDumped: true }),
    "killed by SIGSEGV (core dumped)",
  );
  assert.equal(childLockFd({ kind: "alive", afterMs: 0 }), 63);
  assert.equal(childLockFd({ kind: "fd", fd: 3 }), 63);
  assert.equal(childLockFd({ kind: "fd", fd: 63 }), 62, "never on the notification fd");
  const h = syslogHeader(27, "app", 42, new Date(2024, 0, 5, 7, 8, 9));
  assert.equal(h, "<27>Jan  5 07:08:09 app[42]: ");
});

Deno.test("a SIGKILLed child comes back after the delay; the pid file and lock stay with the supervisor", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({
    pidfile,
    ...script("exec sleep 60"),
    restartDelay: 400,
    maxRestarts: 0,
  });
  const first = await sup.child();
  const content = () => Deno.readTextFileSync(pidfile).trim();
  assert.equal(content(), String(sup.pid));
  assert.deepEqual(await PidFile.probe(pidfile), { state: "running", pid: sup.pid });

  const killedAt = performance.now();
  Deno.kill(first, "SIGKILL");
  await eventually("backoff", () => sup.state()?.phase === "backoff");
  assert.equal(sup.state()!.lastExit, "killed by SIGKILL");
  // During the delay: no child, yet the supervisor holds the lock and the file names it.
  assert.deepEqual(await PidFile.probe(pidfile), { state: "running", pid: sup.pid });
  const second = await sup.child(first);
  const took = performance.now() - killedAt;
  assert.ok(took >= 380, `restarted after ${took.toFixed(0)} ms, before the 400 ms delay`);
  assert.ok(isAlive(second));
  assert.equal(sup.state()!.restarts, 1);
  assert.equal(content(), String(sup.pid));
  assert.deepEqual(await PidFile.probe(pidfile), { state: "running", pid: sup.pid });

  // The delay doubles for a child that dies young.
  const again = performance.now();
  Deno.kill(second, "SIGKILL");
  await sup.child(second);
  const took2 = performance.now() - again;
  assert.ok(took2 >= 780, `second restart after ${took2.toFixed(0)} ms, expected >= 800`);

  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
});

Deno.test("stop with --kill-group leaves no process behind, not even a worker that ignores SIGTERM", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({
    pidfile,
    ...script(`sleep 60 & sh -c 'trap "" TERM; sleep 61 & wait' & wait`),
    killGroup: true,
    stopSchedule: "TERM/1/KILL/2",
  });
  const leader = await sup.child();
  let members: number[] = [];
  await eventually("the workers", () => (members = groupMembers(leader)).length >= 4);
  const stubborn = members.filter((pid) => pid !== leader && /sleep 61|trap/.test(cmdline(pid)));
  assert.equal(stubborn.length, 2, members.map(cmdline).join(" | "));
  const stopAt = performance.now();
  Deno.kill(sup.pid, "SIGTERM");
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(stubborn.every(isAlive), "the TERM-ignoring workers should wait for the KILL step");
  assert.ok(!isAlive(leader));
  assert.equal(await sup.exit(), 0);
  const took = performance.now() - stopAt;
  // KILL comes after the TERM step's 1 s; without it the workers would live their 60 s.
  assert.ok(took >= 950 && took < 20_000, `stop took ${took.toFixed(0)} ms; KILL comes after 1 s`);
  for (const pid of members) {
    assert.ok(!isAlive(pid), `pid ${pid} (${processState(pid)}) survived the stop`);
  }
  assert.deepEqual(groupMembers(leader), []);
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
  assert.match(await sup.stderr, /stopped: killed by SIGTERM/);
});

Deno.test("without --kill-group, stop still stops the child and frees the lock", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({ pidfile, ...script("exec sleep 60") });
  const child = await sup.child();
  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
  assert.ok(!isAlive(child));
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
});

Deno.test("a child that exits at once hits the crash-loop limit: exit 1, a clear line, the lock free", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({
    pidfile,
    ...script("sleep 0.15; exit 7"),
    name: "flaky",
    restartDelay: 20,
    maxRestarts: 3,
    restartWindow: 30_000,
  });
  assert.equal(await sup.exit(), 1);
  const err = await sup.stderr;
  assert.match(
    err,
    /giving up: flaky \(pid [0-9]+\) exit status 7; it was restarted 3 times within 30 s/,
  );
  assert.equal(sup.state()!.restarts, 3);
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
  // And the lock really is free: another holder can take it.
  using lock = await PidFile.acquire(pidfile);
  assert.equal(lock.pid, Deno.pid);
});

Deno.test("a first child that dies before it is ready fails the supervisor at once", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({
    pidfile,
    ...script("exit 3"),
    name: "broken",
    readiness: { kind: "alive", afterMs: 300 },
  });
  assert.equal(await sup.exit(), 1);
  assert.match(
    await sup.stderr,
    /giving up: broken \(pid [0-9]+\) exit status 3 before it was ready/,
  );
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
});

Deno.test("--restart never and on-failure end with the child's clean exit", async () => {
  await using dir = await tempDir();
  await using never = new Supervisor({
    pidfile: dir.join("n.pid"),
    ...script("sleep 0.2; exit 4"),
    restart: "never",
  });
  assert.equal(await never.exit(), 4);
  await using ok = new Supervisor({ pidfile: dir.join("o.pid"), ...script("sleep 0.2; exit 0") });
  assert.equal(await ok.exit(), 0);
  assert.equal(ok.state()!.restarts, 0);
});

Deno.test("output to a file: whole lines, reopened after a rename (logrotate create), HUP forwarded", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  const log = dir.join("app.log");
  await using sup = new Supervisor({
    pidfile,
    ...script(
      `trap 'echo got-HUP' HUP; i=0; while :; do i=$((i+1)); printf 'line %d %s\\n' $i ` +
        `0123456789012345678901234567890123456789; echo "err $i" >&2; sleep 0.02; done`,
    ),
    output: log,
  });
  await sup.child();
  await eventually("lines in the log", () => Deno.readTextFileSync(log).includes("line 10 "));
  Deno.renameSync(log, `${log}.1`);
  await new Promise((r) => setTimeout(r, 100)); // lines keep going to the renamed file
  Deno.kill(sup.pid, "SIGHUP");
  await eventually("the reopened log", () => {
    try {
      return Deno.readTextFileSync(log).split("\n").filter((l) => l.startsWith("line")).length > 5;
    } catch {
      return false;
    }
  });
  const child = sup.state()!.childPid!;
  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
  const old = Deno.readTextFileSync(`${log}.1`);
  const fresh = Deno.readTextFileSync(log);
  assert.match(fresh, /got-HUP/, "SIGHUP was forwarded to the child");
  const numbers: number[] = [];
  for (const text of [old, fresh]) {
    for (const line of text.split("\n")) {
      if (line === "") continue;
      assert.match(
        line,
        /^(line [0-9]+ 0123456789012345678901234567890123456789|err [0-9]+|got-HUP|singleton-run\[[0-9]+\]: .*)$/,
      );
      const m = /^line ([0-9]+) /.exec(line);
      if (m) numbers.push(Number(m[1]));
    }
  }
  // Not one line lost or split across the rotation, and the stop.
  numbers.sort((a, b) => a - b);
  assert.deepEqual(numbers, Array.from({ length: numbers.length }, (_, i) => i + 1));
  assert.match(fresh, new RegExp(`\\(pid ${child}\\) stopped`));
});

Deno.test("each restart waits for readiness again (notification fd)", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({
    pidfile,
    ...script("sleep 0.4; echo >&3; exec sleep 60"),
    readiness: { kind: "fd", fd: 3 },
    restartDelay: 50,
  });
  const first = await sup.child(undefined, "starting");
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(sup.state()!.phase, "starting", "ready before the child said so");
  assert.equal(await sup.child(undefined, "running"), first);
  Deno.kill(first, "SIGKILL");
  const second = await sup.child(first, "starting");
  assert.equal(await sup.child(first, "running"), second);
  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
});

Deno.test("as PID 1 in a new PID namespace, orphaned grandchildren are reaped", async (t) => {
  if (Deno.uid() !== 0) return void console.log("skipped: needs root for unshare -p");
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor(
    {
      pidfile,
      // Five orphans (their parent subshell exits at once) that die 0.5 s later.
      ...script("for i in 1 2 3 4 5; do (sleep 0.5 &); done; exec sleep 60"),
    },
    (argv) => ["unshare", "-fp", "--mount-proc", ...argv],
  );
  // unshare forks: the supervisor (PID 1 inside) is its child.
  let pid1 = 0;
  await eventually("the supervisor inside the namespace", () => {
    const kids = childrenOf(sup.pid);
    if (kids[0]) pid1 = kids[0].pid;
    return pid1 !== 0 && sup.state()?.phase === "running";
  });
  assert.equal(sup.state()!.supervisorPid, 1);
  await eventually("the orphans reparented to PID 1", () => childrenOf(pid1).length >= 6);
  await new Promise((r) => setTimeout(r, 1000));
  const left = childrenOf(pid1);
  assert.deepEqual(left.filter((p) => p.state === "Z"), [], "zombies left unreaped");
  assert.equal(left.length, 1, `only the child should remain: ${JSON.stringify(left)}`);
  await t.step("SIGTERM to PID 1 stops the child and the namespace ends", async () => {
    Deno.kill(pid1, "SIGTERM");
    assert.equal(await sup.exit(), 0);
  });
});

Deno.test("output to syslog reaches a real rsyslogd with the child's pid, stderr at err", async () => {
  await using sl = await startRsyslog();
  if (sl.skipReason) return void console.log(`skipped: ${sl.skipReason}`);
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor(
    {
      pidfile,
      ...script("echo to-stdout; echo to-stderr >&2; exec sleep 60"),
      name: "sv-test",
      output: "syslog:local3",
    },
    (argv) => sl.wrap(argv),
  );
  const child = await sup.child();
  const lines = await sl.lines({ match: /to-stderr/ });
  assert.ok(lines.includes(`local3.info sv-test ${child} to-stdout`), lines.join("\n"));
  assert.ok(lines.includes(`local3.err sv-test ${child} to-stderr`), lines.join("\n"));
  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
});

Deno.test("soak: 600 crash-restarts with no delay leave the fd count and RSS flat", async () => {
  // The full 1,000 (next to the Deno baseline) run in bench/supervise_soak.ts; 600 keep this
  // file fast (about 2 s). The first ~250 restarts are warm-up (code pages, JIT tiers).
  const { samples } = await soak(600);
  const report = JSON.stringify(samples);
  const at = (n: number) => samples.find((s) => s.restarts === n)!;
  const early = samples.filter((s) => s.restarts <= 250);
  const late = samples.filter((s) => s.restarts > 250);
  // A sample may catch children's pipes and pidfds half opened or half closed, so single
  // samples vary by several descriptors; a leak raises the floor: compare the lowest.
  const fdsEarly = Math.min(...early.map((s) => s.fds));
  const fdsLate = Math.min(...late.map((s) => s.fds));
  assert.ok(fdsLate <= fdsEarly + 10, `fds grew: ${report}`);
  assert.ok(at(600).rss <= at(250).rss * 1.1, `RSS grew: ${report}`);
});

Deno.test("lines are not lost across restarts: every child's output is drained", async () => {
  await using dir = await tempDir();
  const log = dir.join("out.log");
  await using sup = new Supervisor({
    pidfile: dir.join("app.pid"),
    ...script('i=0; while [ $i -lt 500 ]; do i=$((i+1)); echo "c$$ $i"; done; exit 1'),
    output: log,
    restartDelay: 10,
    maxRestarts: 2,
    readiness: { kind: "alive", afterMs: 0 }, // each child is done in milliseconds
  });
  assert.equal(await sup.exit(), 1);
  const byChild = new Map<string, number[]>();
  for (const line of Deno.readTextFileSync(log).split("\n")) {
    const m = /^c([0-9]+) ([0-9]+)$/.exec(line);
    if (m) byChild.set(m[1]!, [...(byChild.get(m[1]!) ?? []), Number(m[2])]);
  }
  assert.equal(byChild.size, 3);
  for (const [pid, seq] of byChild) {
    assert.deepEqual(seq, Array.from({ length: 500 }, (_, i) => i + 1), `child ${pid}`);
  }
});

Deno.test("a flood of output is copied whole with bounded memory", async () => {
  await using dir = await tempDir();
  const log = dir.join("flood.log");
  // 200,000 lines of 100 bytes (20 MB) as fast as the pipe takes them, plus one 20 KiB line.
  await using sup = new Supervisor({
    pidfile: dir.join("app.pid"),
    ...script(
      "head -c 20000000 /dev/zero | tr '\\0' x | fold -w 100; echo; " +
        "head -c 20000 /dev/zero | tr '\\0' y; echo; exec sleep 60",
    ),
    output: log,
  });
  await sup.child();
  let peak = 0;
  await eventually("the flood to be copied", () => {
    peak = Math.max(peak, memory(sup.pid).rss);
    return Deno.statSync(log).size >= 20_000_000 + 200_000 + 20_000 + 3;
  }, 30_000);
  const lines = Deno.readTextFileSync(log).split("\n").filter((l) =>
    !l.startsWith("singleton-run")
  );
  const xs = lines.filter((l) => l.startsWith("x"));
  assert.equal(xs.length, 200_000);
  assert.ok(xs.every((l) => l.length === 100), "a line was split or joined");
  // The 20 KiB line is cut at MAX_LINE (8 KiB), never elsewhere.
  assert.deepEqual(lines.filter((l) => l.startsWith("y")).map((l) => l.length), [8192, 8192, 3616]);
  assert.ok(peak < 100_000, `supervisor RSS peaked at ${peak} kB while copying 20 MB`);
  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
});

// ---------------------------------------------------------------- through the command

async function cliSupervise(variant: Variant) {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  const started = performance.now();
  const run = (args: string[]): Promise<Result> => sr(variant, args);
  const r = await run([
    "start",
    "--pidfile",
    pidfile,
    "--supervise",
    "--restart-delay",
    "100ms",
    "--notify-fd",
    "3",
    "--output",
    dir.join("out.log"),
    "--",
    "sh",
    "-c",
    "sleep 0.4; echo ready >&3; echo up; exec sleep 60",
  ]);
  let supervisor = 0;
  try {
    assert.equal(r.code, 0, r.stderr);
    supervisor = Number(r.stdout.trim());
    assert.ok(performance.now() - started >= 400, "start returned before the child was ready");
    assert.equal(Deno.readTextFileSync(pidfile).trim(), String(supervisor));
    const status = async () =>
      JSON.parse((await run(["status", "--pidfile", pidfile, "--json"])).stdout);
    const s1 = await status();
    assert.equal(s1.state, "running");
    assert.equal(s1.pid, supervisor);
    assert.equal(s1.supervisor.phase, "running");
    assert.equal(s1.supervisor.restarts, 0);
    const child = s1.supervisor.childPid;
    assert.ok(isAlive(child));
    assert.equal(
      Number(Deno.readTextFileSync(`/proc/${child}/stat`).split(") ")[1]!.split(" ")[1]),
      supervisor,
    );

    Deno.kill(child, "SIGKILL");
    let s2 = s1;
    await eventually("a ready second child", async () => {
      s2 = await status();
      return s2.supervisor?.childPid !== child && s2.supervisor?.phase === "running";
    });
    assert.equal(s2.pid, supervisor, "the pid file changed hands");
    assert.equal(s2.supervisor.restarts, 1);
    assert.equal(s2.supervisor.lastExit, "killed by SIGKILL");
    assert.equal(typeof s2.supervisor.childUptimeSeconds, "number");

    const stop = await run(["stop", "--pidfile", pidfile]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(!isAlive(supervisor) && !isAlive(s2.supervisor.childPid));
    assert.equal((await PidFile.probe(pidfile)).state, "absent");
    const log = Deno.readTextFileSync(dir.join("out.log"));
    assert.equal(log.split("\n").filter((l) => l === "up").length, 2);
  } finally {
    if (supervisor) killQuietly(supervisor);
  }
}

Deno.test("start --supervise: start returns once the first child is ready; status --json shows the child; stop", async () => {
  await cliSupervise(SOURCE);
});

Deno.test("start --supervise from the bundle (the supervisor is the bundle again, as its internal stage)", async () => {
  await cliSupervise(await bundleVariant());
});

Deno.test("start --supervise fails clearly when the first child dies, leaving nothing", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    pidfile,
    "--supervise",
    "--output",
    dir.join("out.log"),
    "--",
    "sh",
    "-c",
    "echo cannot-bind >&2; exit 2",
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /the supervisor ended before its first child was ready/);
  assert.match(r.stderr, /cannot-bind/);
  assert.match(r.stderr, /giving up: sh \(pid [0-9]+\) exit status 2 before it was ready/);
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
  assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
});

Deno.test("start --supervise on a full disk: the first child's failure still reaches start", async () => {
  if (Deno.uid() !== 0) {
    console.log("skipped: a full disk needs root (a small tmpfs)");
    return;
  }
  await using dir = await tempDir();
  const full = dir.join("full");
  Deno.mkdirSync(full);
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=16k", "tmpfs", full],
  }).output();
  assert.ok(mount.success, new TextDecoder().decode(mount.stderr));
  try {
    Deno.writeTextFileSync(`${full}/out.log`, "");
    try {
      Deno.writeFileSync(`${full}/filler`, new Uint8Array(1 << 20));
    } catch { /* full now */ }
    const r = await sr(SOURCE, [
      "start",
      "--pidfile",
      dir.join("d.pid"),
      "--supervise",
      "--output",
      `${full}/out.log`,
      "--",
      "sh",
      "-c",
      "exit 2",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /giving up: sh \(pid [0-9]+\) exit status 2 before it was ready/);
  } finally {
    await new Deno.Command("umount", { args: [full] }).output();
  }
});

Deno.test("start --supervise --notify-socket: the child's READY=1 (sd_notify) releases start", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  const notify = new URL("../src/service/notify.ts", import.meta.url).href;
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    pidfile,
    "--supervise",
    "--notify-socket",
    "--",
    Deno.execPath(),
    "eval",
    `import { notifyReady } from "${notify}"; await new Promise((r) => setTimeout(r, 300)); ` +
    `notifyReady(); setTimeout(() => {}, 60_000);`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const supervisor = Number(r.stdout.trim());
  try {
    const s = JSON.parse((await sr(SOURCE, ["status", "--pidfile", pidfile, "--json"])).stdout);
    assert.equal(s.supervisor.phase, "running");
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", pidfile])).code, 0);
  } finally {
    killQuietly(supervisor);
  }
});

Deno.test("supervise options: bad values are usage errors (2) before anything starts", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  const cases: [string[], RegExp][] = [
    [["--supervise", "--restart", "sometimes"], /bad --restart "sometimes"/],
    [["--supervise", "--restart-delay", "soon"], /bad --restart-delay "soon"/],
    [["--supervise", "--output", "syslog:nope"], /unknown syslog facility "nope"/],
    [["--supervise", "--stop-schedule", "TERM/x"], /bad --stop-schedule (schedule )?"TERM\/x"/],
    [["--supervise", "--max-restarts", "-1"], /unknown option|bad --max-restarts/],
    [["--kill-group"], /--kill-group needs --supervise/],
  ];
  for (const [opts, pattern] of cases) {
    const r = await sr(SOURCE, ["start", "--pidfile", pidfile, ...opts, "--", "true"]);
    assert.equal(r.code, 2, `${opts.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  }
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), []);
});

Deno.test("run --supervise: the foreground process supervises and exits 1 at the crash-loop limit", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  // Each run counts as started (it lives 150 ms), then crashes: a crash loop, not a failed start.
  const r = await sr(SOURCE, [
    "run",
    ...STARTS_FINE,
    "--pidfile",
    pidfile,
    "--supervise",
    "--max-restarts",
    "2",
    "--restart-delay",
    "20ms",
    "--",
    "sh",
    "-c",
    "echo child-out; sleep 0.15; exit 5",
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, "child-out\nchild-out\nchild-out\n");
  assert.match(r.stderr, /giving up: sh \(pid [0-9]+\) exit status 5; it was restarted 2 times/);
  assert.equal((await PidFile.probe(pidfile)).state, "absent");
});

Deno.test("a restarted child that is not ready within the ready timeout is stopped and restarted", async () => {
  await using dir = await tempDir();
  const marker = dir.join("first-done");
  await using sup = new Supervisor({
    pidfile: dir.join("app.pid"),
    // The first run says ready; later runs never do.
    ...script(`if [ ! -e ${marker} ]; then touch ${marker}; echo >&3; fi; exec sleep 60`),
    readiness: { kind: "fd", fd: 3 },
    readyTimeout: 300,
    restartDelay: 20,
    maxRestarts: 0,
    stopSchedule: "TERM/1/KILL/1",
  });
  const first = await sup.child();
  Deno.kill(first, "SIGKILL");
  const second = await sup.child(first, "starting");
  await eventually("the unready child stopped and replaced", () => {
    const s = sup.state();
    return s?.restarts === 2 && s.lastExit === "killed by SIGTERM";
  });
  assert.ok(!isAlive(second));
  assert.match(
    await (async () => {
      Deno.kill(sup.pid, "SIGTERM");
      assert.equal(await sup.exit(), 0);
      return sup.stderr;
    })(),
    /was not ready within the ready timeout/,
  );
});

Deno.test("SIGINT is forwarded; a child that dies of it ends the supervisor (Ctrl-C), exit 130", async () => {
  await using dir = await tempDir();
  await using sup = new Supervisor({ pidfile: dir.join("app.pid"), ...script("exec sleep 60") });
  const child = await sup.child();
  Deno.kill(sup.pid, "SIGINT");
  assert.equal(await sup.exit(), 130);
  assert.ok(!isAlive(child));
  assert.equal(sup.state()!.restarts, 0);
  assert.match(await sup.stderr, /killed by SIGINT after SIGINT: not restarting/);
});

Deno.test("start --supervise --user runs only the child as that user; the supervisor stays the caller", async () => {
  if (Deno.uid() !== 0) return void console.log("skipped: --user needs root");
  await using dir = await tempDir();
  await Deno.chmod(dir.path, 0o755);
  const pidfile = dir.join("d.pid");
  const r = await startFine(SOURCE, pidfile, [
    "--supervise",
    "--user",
    "nobody",
    "--output",
    dir.join("out.log"),
    "--",
    "sh",
    "-c",
    "id -u; exec sleep 60",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const supervisor = Number(r.stdout.trim());
  try {
    const uid = (pid: number) =>
      Number(/^Uid:\s+([0-9]+)/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]);
    // What the supervisor needs (its lock, its files, a cluster lock's client) stays root's.
    assert.equal(uid(supervisor), 0);
    assert.equal(Deno.statSync(statePath(pidfile)).uid, 0, "written by the supervisor");
    const kids = childrenOf(supervisor);
    assert.equal(kids.length, 1);
    assert.equal(uid(kids[0]!.pid), 65534);
    assert.equal(readSupervisorStatus(pidfile, supervisor)?.childPid, kids[0]!.pid);
    await eventually(
      "the child's output",
      () => Deno.readTextFileSync(dir.join("out.log")).includes("65534"),
    );
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", pidfile])).code, 0);
    assert.ok(!isAlive(supervisor) && !isAlive(kids[0]!.pid));
  } finally {
    killQuietly(supervisor);
  }
});

// ---------------------------------------------------------------- the supervisor SIGKILLed

/** Every pid in /proc whose argv is exactly `argv` and that is not a zombie. */
function processesRunning(argv: readonly string[]): number[] {
  const want = argv.join(" ") + " ";
  const out = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (/^[0-9]+$/.test(e.name) && cmdline(Number(e.name)) === want && isAlive(Number(e.name))) {
      out.push(Number(e.name));
    }
  }
  return out;
}

Deno.test("a SIGKILLed supervisor leaves its child holding the lock: no second instance; status, start and stop name the child", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  // A unique argv, so the test finds exactly its own processes (and kills them by pid).
  const marker = `1000.${crypto.randomUUID().slice(0, 8).replace(/[a-f]/g, "1")}`;
  const command = ["sleep", marker];
  const started: number[] = [];
  try {
    const r = await startFine(SOURCE, pidfile, ["--supervise", "--", ...command]);
    assert.equal(r.code, 0, r.stderr);
    const supervisor = Number(r.stdout.trim());
    started.push(supervisor);
    const [child] = processesRunning(command);
    assert.ok(child, "the supervised child runs");
    started.push(child);
    assert.equal(
      Deno.readLinkSync(`/proc/${child}/fd/${CHILD_LOCK_FD}`),
      pidfile,
      `the child holds the lock on fd ${CHILD_LOCK_FD}`,
    );

    Deno.kill(supervisor, "SIGKILL");
    await eventually("the supervisor to die", () => !isAlive(supervisor));
    assert.ok(isAlive(child), "the child outlives its supervisor");

    // The single-instance promise: the child still holds the lock, a second start is refused.
    const again = await sr(SOURCE, [
      "start",
      "--supervise",
      "--pidfile",
      pidfile,
      "--",
      ...command,
    ]);
    if (again.code === 0) started.push(Number(again.stdout.trim()));
    started.push(...processesRunning(command));
    assert.equal(again.code, 3, `a second start must be refused: ${again.stderr}`);
    assert.equal(again.stderr.trim(), `singleton-run: already running (pid ${child})`);
    assert.deepEqual(processesRunning(command), [child], "one instance");

    const status = await sr(SOURCE, ["status", "--pidfile", pidfile, "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout);
    assert.equal(s.state, "running");
    assert.equal(s.pid, child);
    assert.deepEqual(s.holders, [child]);
    assert.equal(s.namedPid, supervisor);
    assert.equal(s.namedPidGone, true);
    const human = await sr(SOURCE, ["status", "--pidfile", pidfile]);
    assert.equal(human.code, 0);
    assert.match(
      human.stdout, // the status line is the command's output
      new RegExp(`running \\(pid ${child}\\b.*names pid ${supervisor}, which is gone`),
    );

    const stop = await sr(SOURCE, ["stop", "--pidfile", pidfile]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(!isAlive(child), "stop stopped the orphaned child");
    assert.equal(Deno.readTextFileSync(pidfile), "", "the pid file is left empty");
    assert.equal((await PidFile.probe(pidfile)).state, "absent");
  } finally {
    for (const pid of started) killQuietly(pid);
  }
});

Deno.test("--kill-group, supervisor SIGKILLed: stop stops the orphaned child's whole group, even a worker without the lock", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  const tag = crypto.randomUUID().slice(0, 8).replace(/[a-f]/g, "2");
  const leader = ["sleep", `1000.${tag}1`];
  const worker = ["sleep", `1000.${tag}2`];
  const started: number[] = [];
  try {
    // The worker closes the lock descriptor: only the process group reaches it.
    const r = await startFine(SOURCE, pidfile, [
      "--supervise",
      "--kill-group",
      "--",
      "bash",
      "-c",
      `${worker.join(" ")} ${CHILD_LOCK_FD}>&- & exec ${leader.join(" ")}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const supervisor = Number(r.stdout.trim());
    started.push(supervisor);
    let l = 0;
    let w = 0;
    await eventually("the leader and its worker", () => {
      l = processesRunning(leader)[0] ?? 0;
      w = processesRunning(worker)[0] ?? 0;
      return l !== 0 && w !== 0;
    });
    started.push(l, w);
    assert.equal(Number(Deno.readTextFileSync(`/proc/${w}/stat`).split(") ")[1]!.split(" ")[2]), l);

    Deno.kill(supervisor, "SIGKILL");
    await eventually("the supervisor to die", () => !isAlive(supervisor));
    const s = JSON.parse((await sr(SOURCE, ["status", "--pidfile", pidfile, "--json"])).stdout);
    assert.deepEqual(s.holders, [l], "the worker closed its descriptor");
    const again = await sr(SOURCE, ["start", "--pidfile", pidfile, "--", "true"]);
    assert.equal(again.code, 3, again.stderr);

    const stop = await sr(SOURCE, ["stop", "--pidfile", pidfile]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(!isAlive(l), "the leader was stopped");
    await eventually("the worker to go with its group", () => !isAlive(w), 2000);
    assert.deepEqual(groupMembers(l), []);
    assert.equal((await PidFile.probe(pidfile)).state, "absent");
  } finally {
    for (const pid of started) killQuietly(pid);
  }
});

Deno.test("stop without --kill-group: a worker left holding the lock after the child stops is stopped too", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("d.pid");
  const tag = crypto.randomUUID().slice(0, 8).replace(/[a-f]/g, "3");
  const child = ["sleep", `1000.${tag}1`];
  const worker = ["sleep", `1000.${tag}2`];
  const started: number[] = [];
  try {
    const r = await startFine(SOURCE, pidfile, [
      "--supervise",
      "--",
      "sh",
      "-c",
      `${worker.join(" ")} & exec ${child.join(" ")}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    started.push(Number(r.stdout.trim()));
    let c = 0;
    let w = 0;
    await eventually("the child and its worker", () => {
      c = processesRunning(child)[0] ?? 0;
      w = processesRunning(worker)[0] ?? 0;
      return c !== 0 && w !== 0;
    });
    started.push(c, w);
    // The supervisor stops its child (TERM to the child alone) and exits; the worker still
    // holds the lock, so stop goes on to it, at once, instead of leaving an orphan behind.
    const t0 = performance.now();
    const stop = await sr(SOURCE, ["stop", "--pidfile", pidfile]);
    const took = performance.now() - t0;
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(!isAlive(c) && !isAlive(w), "no process left behind");
    assert.ok(took < 3000, `stop took ${took.toFixed(0)} ms`);
    assert.equal((await PidFile.probe(pidfile)).state, "absent");
  } finally {
    for (const pid of started) killQuietly(pid);
  }
});

Deno.test("--stop-schedule has start-stop-daemon's grammar: -TERM and forever walk, 5/TERM is refused", () => {
  const walk = (text: string, turns: number) => {
    const w = new StopWalk(parseSchedule(text, "--stop-schedule"));
    const sent: number[] = [];
    const waits: (number | "end" | "out")[] = [];
    for (let i = 0; i < turns; i++) {
      const t0 = performance.now();
      if (!w.advance((sig) => sent.push(sig))) waits.push("out");
      else waits.push(w.until === Infinity ? "end" : Math.round(w.until - t0));
    }
    return { sent, waits };
  };
  assert.deepEqual(walk("-TERM/2/forever/KILL/1", 4), {
    sent: [15, 9, 9, 9],
    waits: [2000, 1000, 1000, 1000],
  });
  assert.deepEqual(walk("HUP/forever", 2), { sent: [1], waits: ["end", "end"] });
  assert.deepEqual(walk("TERM/1", 2), { sent: [15], waits: [1000, "out"] });
  assert.deepEqual(walk("3", 2).sent, [15, 9]);
  assert.throws(() => parseSchedule("5/TERM", "--stop-schedule"), /must start with a signal/);
  assert.throws(() => parseSchedule("TERM/5/KILL", "--stop-schedule"), /must end with a timeout/);
});

Deno.test("output to syslog with no syslog daemon: lines are counted as dropped, said once", async () => {
  try {
    Deno.lstatSync("/dev/log");
    console.log("skipped: /dev/log exists here, so nothing would be dropped");
    return;
  } catch { /* no syslog daemon: what this test needs */ }
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  await using sup = new Supervisor({
    pidfile,
    ...script("echo one; echo two; echo three >&2; exec sleep 30"),
    output: "syslog",
    readiness: { kind: "alive", afterMs: 0 },
  });
  let seen: number | undefined;
  await eventually("three dropped lines in the supervisor's state", () => {
    seen = readSupervisorStatus(pidfile, sup.pid)?.dropped;
    return seen !== undefined && seen >= 3;
  });
  Deno.kill(sup.pid, "SIGTERM");
  assert.equal(await sup.exit(), 0);
  const final = JSON.parse(Deno.readTextFileSync(statePath(pidfile)));
  assert.equal(final.dropped, 3, "the child's three lines; the supervisor's own are not counted");
  const said = (await sup.stderr).match(/output is being dropped: cannot log to "\/dev\/log"/g);
  assert.equal(said?.length, 1, "said once, not per line");
});

Deno.test("the state file's temp file is never followed through a planted link, and never left behind", async () => {
  await using dir = await tempDir();
  const path = statePath(dir.join("app.pid"));
  const victim = dir.join("victim");
  Deno.writeTextFileSync(victim, "secret\n", { mode: 0o600 });
  Deno.symlinkSync(victim, `${path}.${Deno.pid}.tmp`);
  const state = {
    supervisorPid: Deno.pid,
    childPid: null,
    phase: "running",
    restarts: 0,
    lastExit: null,
    lastExitAt: null,
    childStartedAt: null,
    supervisorStartedAt: new Date().toISOString(),
    command: ["x"],
    dropped: 0,
    output: null,
  };
  writeStateFile(path, state);
  assert.equal(Deno.readTextFileSync(victim), "secret\n", "the link's target is untouched");
  assert.equal(JSON.parse(Deno.readTextFileSync(path)).phase, "running");
  assert.deepEqual(
    [...Deno.readDirSync(dir.path)].map((e) => e.name).sort(),
    ["app.pid.state", `app.pid.state.${Deno.pid}.tmp`, "victim"],
    "the planted link is passed over, and no temp file of ours is left",
  );

  if (Deno.uid() !== 0) {
    console.log("skipped: the full-disk case needs root (a small tmpfs)");
    return;
  }
  const full = dir.join("full");
  Deno.mkdirSync(full);
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=16k", "tmpfs", full],
  }).output();
  assert.ok(mount.success, new TextDecoder().decode(mount.stderr));
  try {
    try {
      Deno.writeFileSync(`${full}/filler`, new Uint8Array(1 << 20));
    } catch { /* the disk is full now */ }
    const big = { ...state, command: ["x".repeat(64 * 1024)] };
    assert.throws(() => writeStateFile(`${full}/app.pid.state`, big), /no space left/);
    assert.deepEqual([...Deno.readDirSync(full)].map((e) => e.name), ["filler"], "no temp file");
  } finally {
    await new Deno.Command("umount", { args: [full] }).output();
  }
});

Deno.test("status trusts the state file only from the supervisor it names: no FIFO, link, device or forgery", async () => {
  await using dir = await tempDir();
  const pidfile = dir.join("app.pid");
  const path = statePath(pidfile);
  Deno.writeTextFileSync(pidfile, "");
  // A daemon that is not supervised, and a forged state naming it as its own supervisor.
  const daemon = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    const forged = { supervisorPid: daemon.pid, childPid: 1, restarts: 42, phase: "running" };
    Deno.writeTextFileSync(path, JSON.stringify(forged));
    assert.equal(readSupervisorStatus(pidfile, daemon.pid), undefined, "a forgery");
  } finally {
    daemon.kill("SIGKILL");
    await daemon.status;
  }
  Deno.removeSync(path);

  await using sup = new Supervisor({
    pidfile,
    ...script("exec sleep 30"),
    readiness: { kind: "alive", afterMs: 0 },
  });
  await sup.child();
  assert.equal(readSupervisorStatus(pidfile, sup.pid)?.phase, "running", "the real one");
  const real = Deno.readTextFileSync(path);
  for (
    const [what, plant] of [
      ["a FIFO", () => new Deno.Command("mkfifo", { args: [path] }).outputSync()],
      ["a link to /dev/zero", () => Deno.symlinkSync("/dev/zero", path)],
      ["a hard link", () => {
        Deno.writeTextFileSync(dir.join("other"), real);
        Deno.linkSync(dir.join("other"), path);
      }],
    ] as const
  ) {
    Deno.removeSync(path);
    plant();
    const t0 = performance.now();
    assert.equal(readSupervisorStatus(pidfile, sup.pid), undefined, what);
    assert.ok(performance.now() - t0 < 1000, `${what}: no wait`);
  }
  if (Deno.uid() === 0) {
    Deno.removeSync(path);
    Deno.writeTextFileSync(path, real);
    Deno.chownSync(path, 65534, 65534); // another user's file
    assert.equal(readSupervisorStatus(pidfile, sup.pid), undefined, "another user's file");
  }
});

Deno.test("--output is never followed through a link, nor opened when it is a FIFO", async () => {
  await using dir = await tempDir();
  const victim = dir.join("victim");
  Deno.writeTextFileSync(victim, "root:$6$hash:\n", { mode: 0o600 });
  Deno.symlinkSync(victim, dir.join("link.log"));
  await using linked = new Supervisor({
    pidfile: dir.join("a.pid"),
    ...script("echo leaked"),
    output: dir.join("link.log"),
  });
  assert.equal(await linked.exit(5000), 1);
  const err = await linked.stderr;
  assert.match(err, /output file ".*link\.log": it is a symbolic link, which is never followed/);
  assert.doesNotMatch(err, /hash/, "nothing of the target is shown");
  assert.equal(Deno.readTextFileSync(victim), "root:$6$hash:\n");

  const fifo = dir.join("fifo.log");
  assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
  await using piped = new Supervisor({
    pidfile: dir.join("b.pid"),
    ...script("echo hi"),
    output: fifo,
  });
  assert.equal(await piped.exit(5000), 1, "no hang in open()");
  assert.match(await piped.stderr, /is a FIFO, not a regular file|FIFO or socket nobody has open/);
});
