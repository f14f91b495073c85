/**
 * `run` as cron jobs use it, between real processes: a time limit
 * (--max-runtime), waiting for the running copy (--wait), replacing it
 * (--replace), what status says after a job, --quiet and
 * --conflict-exit-code on every conflict, and bad input.
 */

import assert from "node:assert/strict";
import { argvOf, exists, procStat } from "../../testing/process.ts";
import { childrenOf } from "../../src/ffi/proc.ts";
import { installed } from "../../testing/cluster.ts";
import { CAN_BE_NOBODY, srAsNobody } from "./as_nobody.ts";
import {
  alive,
  assertCleanError,
  findProcesses,
  holds,
  locked,
  marker,
  readPid,
  ROOT,
  Sandbox,
  SOURCE,
  sr,
  srSpawn,
  waitFor,
} from "./harness.ts";

const FAST_STOP = ["--stop-schedule", "TERM/1/KILL/1"];

/** The byte of the guard file a replacer claims, and where the waiters' tickets start. */
const REPLACE_BYTE = 2n ** 40n;
const QUEUE_BASE = 2n ** 41n;

/** The byte-range (OFD) read locks /proc/locks lists on a file: their first bytes. */
function rangeLocks(path: string): bigint[] {
  let ino: number;
  try {
    ino = Deno.statSync(path).ino!;
  } catch {
    return [];
  }
  return Deno.readTextFileSync("/proc/locks").split("\n")
    .filter((l) => /OFDLCK\s+ADVISORY\s+READ/.test(l) && l.includes(`:${ino} `))
    .map((l) => BigInt(l.trim().split(/\s+/).at(-2)!));
}

/**
 * The waiter's ticket: the first byte of its byte-range lock on the guard
 * file, from its own /proc/PID/fdinfo, or undefined before it has one.
 */
function ticketOf(pid: number, guard: string): bigint | undefined {
  const want = Deno.statSync(guard).ino;
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (Deno.statSync(`/proc/${pid}/fd/${e.name}`).ino !== want) continue;
      const m = /OFDLCK\s+ADVISORY\s+READ\s+-1\s+\S+\s+(\d+)/.exec(
        Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`),
      );
      if (m && BigInt(m[1]!) >= QUEUE_BASE) return BigInt(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return undefined;
}

/** Read a file, or "" when it is missing. */
function text(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** A job that logs "start NAME" and "end NAME" around a sleep of `seconds`. */
function logged(log: string, name: string, seconds: number): string[] {
  return [
    "sh",
    "-c",
    `echo "start ${name}" >> ${log}; sleep ${seconds}; echo "end ${name}" >> ${log}`,
  ];
}

/**
 * A job that logs "start NAME", waits until the test opens its gate (the
 * file GATE exists), then logs "end NAME": it runs exactly as long as the
 * test needs, however slow the machine.
 */
function gated(log: string, name: string, gate: string): string[] {
  return [
    "sh",
    "-c",
    `echo "start ${name}" >> ${log}; until [ -e ${gate} ]; do sleep 0.05; done; echo "end ${name}" >> ${log}`,
  ];
}

/** A run that waits up to 30 s for the running copy, then runs a logged job. */
function waiter(sb: Sandbox, log: string, name: string): Deno.ChildProcess {
  return srSpawn(SOURCE, [
    "run",
    "--pidfile",
    sb.pidfile,
    "--wait",
    "30s",
    "--",
    ...logged(log, name, 0),
  ]);
}

Deno.test("after a job run ran ends by itself, status says not running (3), not stale", async () => {
  await using sb = await Sandbox.create();
  const job = await sr(SOURCE, ["run", "--pidfile", sb.pidfile, "--", "sh", "-c", "exit 0"]);
  assert.equal(job.code, 0, job.stderr);
  assert.ok(readPid(sb.pidfile) !== undefined, "the pid file still names the job");
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(st.code, 3, st.stdout + st.stderr);
  assert.equal(st.stdout, "not running\n");
  const json = JSON.parse((await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout);
  assert.equal(json.state, "stopped");
});

Deno.test("run --max-runtime: stopped by the schedule past the limit and exit 124, whatever ended it; else the job's own status", async () => {
  await using sb = await Sandbox.create();
  const limited = (command: string[], limit = "1s") =>
    sr(SOURCE, [
      "run",
      "--pidfile",
      sb.pidfile,
      "--max-runtime",
      limit,
      ...FAST_STOP,
      "--",
      ...command,
    ]);
  const m = marker();
  const long = await limited(["sleep", m]);
  assert.equal(long.code, 124, long.stderr);
  assertCleanError(
    long,
    124,
    /^singleton-run: sleep \(pid \d+\) ran longer than --max-runtime 1s: stopped \(SIGTERM\), exit 124$/m,
  );
  assert.deepEqual(findProcesses(["sleep", m]), []);
  // TERM ignored: the schedule's KILL ends it, and the answer is still 124.
  const stubborn = await limited(["sh", "-c", `trap '' TERM; exec sleep ${m}`]);
  assert.equal(stubborn.code, 124, stubborn.stderr);
  // In time (a limit no loaded machine reaches): its own status, exit or signal.
  assert.equal((await limited(["sh", "-c", "exit 7"], "1m")).code, 7);
  assert.equal((await limited(["sh", "-c", "kill -USR1 $$"], "1m")).code, 138);
  const quick = await limited(["true"], "1m");
  assert.equal(quick.code, 0, quick.stderr);
  assert.equal(quick.stderr, "");
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 3);
  assert.deepEqual(sb.list().filter((f) => !f.startsWith("d.pid")), [], "nothing else beside it");
});

Deno.test("run --max-runtime: the pid file names the job, which holds the lock; the shell that keeps the time holds none, and the job outlives it", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const run = srSpawn(SOURCE, [
    "run",
    "--pidfile",
    sb.pidfile,
    "--max-runtime",
    "1h",
    ...FAST_STOP,
    "--",
    "sleep",
    m,
  ]);
  sb.track(run.pid);
  await waitFor(() => findProcesses(["sleep", m]).length === 1, 15_000, "the job");
  const job = findProcesses(["sleep", m])[0]!;
  sb.track(job);
  await waitFor(() => readPid(sb.pidfile) === job, 5000, "the pid file to name the job");
  assert.equal(Number(procStat(job)[1]), run.pid, "the job is the enforcer's child");
  assert.equal(argvOf(run.pid)![0], "/bin/sh", "run became the shell");
  assert.ok(holds(job, sb.pidfile), "the job holds the pid file");
  assert.ok(!holds(run.pid, sb.pidfile), "the enforcer holds no descriptor of it");
  const timers = childrenOf(run.pid).filter((c) => c !== job);
  for (const t of timers) assert.ok(!holds(t, sb.pidfile), "the timer holds none either");
  const st = JSON.parse((await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout);
  assert.equal(st.state, "running");
  assert.equal(st.pid, job);
  // Killed, the enforcer leaves the job running with its lock (and no limit).
  Deno.kill(run.pid, "SIGKILL");
  await run.status;
  assert.ok(alive(job));
  assert.ok(locked(sb.pidfile));
  const again = JSON.parse(
    (await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout,
  );
  assert.equal(again.pid, job);
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  // Its clock notices within one of its sleeps (at most 5 s) and ends.
  await waitFor(() => timers.every((t) => !alive(t)), 8000, "the enforcer's timer to end");
});

/**
 * A child subreaper that notes a SIGURG: it runs ARGV, waits until the
 * enforcer shell has started the job stage, SIGKILLs the shell, reaps what
 * is left, and prints "SIGURG" or "none".
 */
const SUBREAPER = `import ctypes, os, signal, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
got = []
signal.signal(signal.SIGURG, lambda s, f: got.append(s))
p = subprocess.Popen(sys.argv[1:])
def kids(pid):
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
def argv0(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")[0]
    except OSError:
        return b""
end = time.time() + 30
shell = None
while time.time() < end and shell is None:
    for k in kids(p.pid) + [p.pid]:
        if argv0(k) == b"/bin/sh" and kids(k):
            shell = k
    time.sleep(0.005)
if shell is None:
    print("no shell with its stage"); sys.exit(2)
os.kill(shell, signal.SIGKILL)
end = time.time() + 5
while time.time() < end:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    time.sleep(0.02)
print("SIGURG" if got else "none")
`;

Deno.test({
  name:
    "run --max-runtime: a job stage whose enforcer was killed signals nobody (its new parent is some reaper)",
  ignore: !installed("strace") || !installed("python3"),
  async fn() {
    await using sb = await Sandbox.create();
    const script = sb.path("reaper.py");
    Deno.writeTextFileSync(script, SUBREAPER);
    // The stage asks for its parent 1 s late: by then the shell is gone and the reaper is it.
    const r = await new Deno.Command("python3", {
      args: [
        script,
        ...["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=getppid"],
        ...["-e", "inject=getppid:delay_enter=1000000"],
        ...SOURCE.cmd,
        ...["run", "--pidfile", sb.pidfile, "--max-runtime", "1h", "--", "true"],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(r.stdout);
    assert.equal(out, "none\n", new TextDecoder().decode(r.stderr));
  },
});

Deno.test("run --max-runtime --kill-group stops the job's whole process group", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const r = await sr(SOURCE, [
    "run",
    "--pidfile",
    sb.pidfile,
    "--max-runtime",
    "1s",
    "--kill-group",
    ...FAST_STOP,
    "--",
    "sh",
    "-c",
    `sleep ${m} & sleep ${m} & wait`,
  ]);
  assert.equal(r.code, 124, r.stderr);
  assert.match(r.stderr, /stopped \(SIGTERM to its process group\)/);
  await waitFor(() => findProcesses(["sleep", m]).length === 0, 3000, "the group to end");
});

Deno.test("run --wait: waiters run one at a time once the running copy ends, in the order they came, holding no guard while they wait", async () => {
  await using sb = await Sandbox.create();
  const [log, gate] = [sb.path("log"), sb.path("gate")];
  const first = srSpawn(SOURCE, ["run", "--pidfile", sb.pidfile, "--", ...gated(log, "A", gate)]);
  await waitFor(() => text(log).includes("start A"), 15_000, "the first job");
  const waiters: Deno.ChildProcess[] = [];
  const tickets = new Map<string, bigint>();
  for (const name of ["B", "C", "D"]) {
    const w = srSpawn(SOURCE, [
      "run",
      "--pidfile",
      sb.pidfile,
      "--wait",
      "forever",
      "--",
      ...logged(log, name, 0.3),
    ]);
    waiters.push(w);
    // In line, with its ticket, before the next one comes.
    await waitFor(
      () => {
        const t = ticketOf(w.pid, `${sb.pidfile}.lock`);
        if (t !== undefined) tickets.set(name, t);
        return t !== undefined;
      },
      15_000,
      `waiter ${name} to take its ticket`,
    );
  }
  assert.ok(
    tickets.get("B")! < tickets.get("C")! && tickets.get("C")! < tickets.get("D")!,
    `tickets in the order they came: ${[...tickets].join(" ")}`,
  );
  // The waiters hold no guard: a controller gets it at once.
  const signalled = await sr(SOURCE, [
    "signal",
    "--pidfile",
    sb.pidfile,
    "--guard-timeout",
    "1",
    "0",
  ]);
  assert.equal(signalled.code, 0, signalled.stderr);
  Deno.writeTextFileSync(gate, "");
  for (const w of [first, ...waiters]) assert.equal((await w.output()).code, 0);
  assert.equal(
    text(log),
    ["A", "B", "C", "D"].map((n) => `start ${n}\nend ${n}\n`).join(""),
    "one at a time, in order",
  );
  assert.deepEqual(rangeLocks(`${sb.pidfile}.lock`), [], "no ticket left");
});

Deno.test("run --wait that runs out, --replace that gives way, already running: exit 3 or --conflict-exit-code, silent with --quiet", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const holder = srSpawn(SOURCE, ["run", "--pidfile", sb.pidfile, "--", "sleep", m]);
  sb.track(holder.pid);
  await waitFor(() => locked(sb.pidfile) && readPid(sb.pidfile) === holder.pid, 15_000);
  const run = (extra: string[]) =>
    sr(SOURCE, ["run", "--pidfile", sb.pidfile, ...extra, "--", "true"]);
  const waited = await run(["--wait", "500ms"]);
  assertCleanError(
    waited,
    3,
    new RegExp(`already running \\(pid ${holder.pid}\\): still running after waiting 0\\.\\d s`),
  );
  const quiet = await run(["--wait", "500ms", "--quiet", "--conflict-exit-code", "0"]);
  assert.deepEqual([quiet.code, quiet.stdout, quiet.stderr], [0, "", ""]);
  const plain = await run(["--quiet", "--conflict-exit-code", "75"]);
  assert.deepEqual([plain.code, plain.stderr], [75, ""]);
  Deno.kill(holder.pid, "SIGTERM");
  await holder.status;
});

Deno.test("run --wait: a waiter killed while it waits leaves nothing behind, and the next one runs", async () => {
  await using sb = await Sandbox.create();
  const [log, gate] = [sb.path("log"), sb.path("gate")];
  const first = srSpawn(SOURCE, ["run", "--pidfile", sb.pidfile, "--", ...gated(log, "A", gate)]);
  await waitFor(() => text(log).includes("start A"), 15_000, "the first job");
  const doomed = waiter(sb, log, "X");
  await waitFor(() => rangeLocks(`${sb.pidfile}.lock`).length === 1, 15_000, "the waiter's ticket");
  const next = waiter(sb, log, "B");
  await waitFor(() => rangeLocks(`${sb.pidfile}.lock`).length === 2, 15_000, "the second ticket");
  doomed.kill("SIGKILL");
  await doomed.output();
  assert.equal(
    rangeLocks(`${sb.pidfile}.lock`).length,
    1,
    "the killed waiter's ticket went with it",
  );
  Deno.writeTextFileSync(gate, "");
  assert.equal((await first.output()).code, 0);
  assert.equal((await next.output()).code, 0);
  assert.equal(text(log), "start A\nend A\nstart B\nend B\n");
  assert.ok(!locked(sb.pidfile));
});

Deno.test("run --replace stops the running copy by --stop-schedule (its group with --kill-group), then runs", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const old = srSpawn(SOURCE, [
    "run",
    "--pidfile",
    sb.pidfile,
    "--kill-group",
    "--replace",
    "--",
    "sh",
    "-c",
    `trap '' TERM; sleep ${m} & sleep ${m} & wait`,
  ]);
  sb.track(old.pid);
  await waitFor(() => findProcesses(["sleep", m]).length === 2, 15_000, "the old copy");
  const log = sb.path("log");
  const r = await sr(SOURCE, [
    "run",
    "--pidfile",
    sb.pidfile,
    "--replace",
    "--kill-group",
    "--stop-schedule",
    "TERM/500ms/KILL/2",
    "--",
    "sh",
    "-c",
    `echo "$$" > ${log}`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(findProcesses(["sleep", m]), [], "the old copy's group is gone");
  assert.equal((await old.status).signal, "SIGKILL", "TERM was ignored: the schedule's KILL");
  assert.equal(Number(text(log)), readPid(sb.pidfile), "the new job ran under the lock");
});

Deno.test("several run --replace at once: the one that takes the guard last runs, the others exit 3 without running", async () => {
  await using sb = await Sandbox.create();
  const guard = `${sb.pidfile}.lock`;
  const m = marker();
  const old = srSpawn(SOURCE, ["run", "--pidfile", sb.pidfile, "--", "sleep", m]);
  sb.track(old.pid);
  await waitFor(() => locked(sb.pidfile), 15_000, "the running copy");
  // Hold the guard, as a controller would, until every replacer has claimed.
  const holding = marker();
  const holder = new Deno.Command("flock", {
    args: ["--close", guard, "sleep", holding],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitFor(() => locked(guard), 5000, "the guard held");
  const log = sb.path("ran");
  const replacers = ["1", "2", "3"].map((n) =>
    srSpawn(SOURCE, [
      "run",
      "--pidfile",
      sb.pidfile,
      "--replace",
      ...FAST_STOP,
      "--",
      "sh",
      "-c",
      `echo ${n} >> ${log}; sleep 1`,
    ])
  );
  await waitFor(
    () => rangeLocks(guard).filter((b) => b === REPLACE_BYTE).length === 3,
    15_000,
    "three claims",
  );
  holder.kill("SIGKILL");
  await holder.status;
  for (const pid of findProcesses(["sleep", holding])) Deno.kill(pid, "SIGKILL");
  const results = await Promise.all(replacers.map((r) => r.output()));
  const codes = results.map((r) => r.code).sort();
  assert.deepEqual(codes, [0, 3, 3], results.map((r) => new TextDecoder().decode(r.stderr)).join());
  for (const r of results.filter((r) => r.code === 3)) {
    assert.match(new TextDecoder().decode(r.stderr), /another run --replace came meanwhile/);
  }
  assert.equal(text(log).trim().split("\n").length, 1, "one job ran, once");
  assert.ok(!alive(old.pid));
  await old.status;
});

/** Another user's process: makes FILE (0666) and holds a byte-range read lock on BYTE until stdin ends. */
const CLAIMER = `import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
os.fchmod(fd, 0o666)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, int(sys.argv[2]), 1, 0))
sys.stdin.read()
`;

Deno.test({
  name:
    "run --replace and --wait refuse a guard file another user made: its byte-range locks would hold them back forever",
  ignore: !CAN_BE_NOBODY || !installed("python3"),
  async fn() {
    await using sb = await Sandbox.create();
    Deno.chmodSync(sb.dir, 0o755);
    const shared = sb.path("shared"); // where nobody keeps its jobs, and any user may write
    Deno.mkdirSync(shared);
    Deno.chmodSync(shared, 0o777);
    const guard = `${shared}/job.pid.lock`;
    const claimer = new Deno.Command("setpriv", {
      args: ["--reuid=daemon", "--regid=daemon", "--clear-groups", "/usr/bin/python3", "-c"]
        .concat([CLAIMER, guard, String(REPLACE_BYTE)]),
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(() => rangeLocks(guard).includes(REPLACE_BYTE), 15_000, "daemon's claim");
      const ran = `${shared}/ran`;
      for (const policy of [["--replace"], ["--wait", "1s"]]) {
        const r = await srAsNobody(
          ["run", "--pidfile", `${shared}/job.pid`, ...policy, "--", "touch", ran],
        );
        assertCleanError(r, 1, /guard file .* belongs to user "daemon" \(uid \d+\), whose/);
      }
      assert.ok(!exists(ran), "the job did not run");
    } finally {
      await claimer.stdin.close();
      await claimer.status;
    }
  },
});

Deno.test("bad job options: one line, exit 2, nothing created", async () => {
  await using sb = await Sandbox.create();
  const lock = ["--lock", "etcd://127.0.0.1:1/x"];
  const cases: [string[], RegExp][] = [
    [["--wait", "5", "--replace"], /--wait and --replace exclude each other/],
    [["--once-per", "1m"], /--once-per needs --lock/],
    [["--wait", "0"], /bad --wait "0": must be more than 0/],
    [["--wait", "-5"], /bad --wait "-5"/],
    [["--wait", "30d"], /bad --wait "30d"/],
    [["--max-runtime", "0s"], /bad --max-runtime "0s": must be more than 0/],
    [["--max-runtime", "-1"], /bad --max-runtime "-1"/],
    [["--max-runtime", "25d"], /bad --max-runtime "25d"/],
    [[...lock, "--once-per", "0"], /bad --once-per "0": must be more than 0/],
    [[...lock, "--once-per", "forever"], /bad --once-per "forever"/],
    [
      ["--max-runtime", "2s"],
      /--max-runtime 2s is shorter than the stop schedule's first wait \(5s\)/,
    ],
    [["--max-runtime", "1s", "--stop-schedule", "TERM/3/KILL/1"], /shorter than the stop schedule/],
    [["--kill-group"], /--kill-group needs --supervise/],
    [["--stop-schedule", "TERM/1/KILL/1", "--wait", "5"], /--stop-schedule needs --supervise/],
    [["--max-runtime", "10s", "--supervise"], /--max-runtime with --supervise is not supported/],
  ];
  for (const [args, message] of cases) {
    const r = await sr(SOURCE, [
      "run",
      "--pidfile",
      sb.path("job.pid"),
      ...args,
      "--",
      "true",
    ]);
    assertCleanError(r, 2, message);
    assert.deepEqual(sb.list(), [], `nothing created by ${args.join(" ")}`);
  }
});

Deno.test("the control API's run() takes the same policies: maxRuntime exits 124, wait runs after the holder", async () => {
  await using sb = await Sandbox.create();
  const script = sb.path("job.ts");
  Deno.writeTextFileSync(
    script,
    `import { run } from "${ROOT}src/control/mod.ts";
const options = JSON.parse(Deno.args[0]);
try {
  Deno.exit(await run(options));
} catch (err) {
  console.error(err.name, err.message);
  Deno.exit(3);
}
`,
  );
  const api = (options: Record<string, unknown>) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, JSON.stringify({ pidfile: sb.pidfile, ...options })],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const limited = await api({
    command: ["sleep", "30"],
    maxRuntime: 500,
    stopSchedule: "TERM/200ms/KILL/1",
  });
  assert.equal(limited.code, 124, new TextDecoder().decode(limited.stderr));
  const [log, gate] = [sb.path("log"), sb.path("gate")];
  const holder = srSpawn(SOURCE, ["run", "--pidfile", sb.pidfile, "--", ...gated(log, "A", gate)]);
  await waitFor(() => text(log).includes("start A"), 15_000, "the holder");
  const refused = await api({ command: ["true"] });
  assert.match(new TextDecoder().decode(refused.stderr), /^AlreadyRunningError already running/);
  const waiting = api({ command: logged(log, "B", 0), wait: 20_000 });
  await waitFor(() => rangeLocks(`${sb.pidfile}.lock`).length === 1, 15_000, "the waiter's ticket");
  Deno.writeTextFileSync(gate, "");
  const waited = await waiting;
  assert.equal(waited.code, 0, new TextDecoder().decode(waited.stderr));
  assert.equal((await holder.output()).code, 0);
  assert.equal(text(log), "start A\nend A\nstart B\nend B\n");
  const bad = await api({ command: ["true"], wait: 5, replace: true });
  assert.match(new TextDecoder().decode(bad.stderr), /UsageError wait and replace exclude/);
});
