/**
 * Liveness under `--supervise`, across real processes: health checks
 * (`--health-http`, `--health-cmd`, `--health-tcp`) against a real HTTP
 * server that is stopped (SIGSTOP) or closes its listener, the start period,
 * a check that hangs, the watchdog, a service that keeps going unhealthy, and
 * the bad input that must leave nothing behind.
 */

import assert from "node:assert/strict";
import { start, statusSync, stop } from "../../src/control/mod.ts";
import { answeringPid, freePort, HEALTH_SERVER, PYTHON } from "../../testing/health.ts";
import {
  alive,
  assertCleanError,
  findProcesses,
  marker,
  ROOT,
  Sandbox,
  SOURCE,
  sr,
  STARTS_FINE,
  waitFor,
} from "./harness.ts";

const SERVER = HEALTH_SERVER;
const NOTIFY_PROGRAM = `${ROOT}tests/cli/fixtures/notify_program.py`;

interface Health {
  state: string;
  failures: number;
  lastCheck: string | null;
  lastError: string | null;
  restarts: number;
}
interface Report {
  code: number;
  pid: number | null;
  supervisor?: { childPid: number | null; restarts: number; phase: string };
  health?: Health;
}

async function statusJson(sb: Sandbox): Promise<Report> {
  const r = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--json"]);
  return JSON.parse(r.stdout);
}

/** The state file as the supervisor last wrote it (read often, cheaply, between CLI calls). */
function state(sb: Sandbox): { childPid: number | null; restarts: number; health?: Health } {
  try {
    return JSON.parse(Deno.readTextFileSync(`${sb.pidfile}.state`));
  } catch {
    return { childPid: null, restarts: 0 };
  }
}

/** Start a supervised service; the supervisor and each child are tracked for the sandbox. */
/** Options from a record: `{ "health-retries": "2", "notify-socket": true }`. */
function flags(options: Record<string, string | true>): string[] {
  return Object.entries(options).flatMap(([k, v]) => v === true ? [`--${k}`] : [`--${k}`, v]);
}

/** A TCP check of the port every 500 ms, with these retries and start period. */
function tcpCheck(port: number, retries: string, startPeriod: string): string[] {
  return flags({
    "health-tcp": `127.0.0.1:${port}`,
    "health-interval": "500ms",
    "health-retries": retries,
    "health-start-period": startPeriod,
  });
}

async function startSupervised(sb: Sandbox, options: string[], command: string[]) {
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--supervise",
    "--output",
    sb.path("out.log"),
    ...options,
    "--",
    ...command,
  ]);
  assert.equal(r.code, 0, `start: ${r.stderr}`);
  sb.track(Number(r.stdout.trim()));
  return Number(r.stdout.trim());
}

async function stopService(sb: Sandbox): Promise<void> {
  const child = state(sb).childPid;
  if (child) sb.track(child);
  const r = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(r.code, 0, `stop: ${r.stderr}`);
}

/**
 * Wait until the state file shows a child other than `not` (healthy, when
 * asked), and return it.
 */
async function nextChild(sb: Sandbox, not?: number, healthy = false): Promise<number> {
  let pid = 0;
  await waitFor(
    () => {
      const s = state(sb);
      const fits = !healthy || s.health?.state === "healthy";
      if (s.childPid && s.childPid !== not && fits) pid = s.childPid;
      return pid !== 0;
    },
    30_000,
    healthy ? "a healthy child" : "a new child",
  );
  sb.track(pid);
  return pid;
}

/** Wait until the state file shows a healthy child (other than `not`), and return it. */
function healthyChild(sb: Sandbox, not?: number): Promise<number> {
  return nextChild(sb, not, true);
}

/**
 * SIGSTOP the child and watch it be replaced: returns the new child, and
 * whether `status` said unhealthy (in JSON and in its line) in between.
 */
async function stopAndWatch(sb: Sandbox, child: number) {
  Deno.kill(child, "SIGSTOP");
  let sawJson = false;
  let sawLine = false;
  let replacement = 0;
  const deadline = performance.now() + 60_000;
  while (replacement === 0 && performance.now() < deadline) {
    const [json, line] = await Promise.all([
      statusJson(sb),
      sr(SOURCE, ["status", "--pidfile", sb.pidfile]),
    ]);
    assert.equal(json.code, 0, "status says running while the service is unhealthy");
    assert.equal(line.code, 0);
    if (json.health?.state === "unhealthy") sawJson = true;
    if (/\(unhealthy: /.test(line.stdout)) sawLine = true;
    const s = state(sb);
    if (s.childPid && s.childPid !== child) replacement = s.childPid;
  }
  assert.notEqual(replacement, 0, "the stopped child was replaced");
  sb.track(replacement);
  return { replacement, sawJson, sawLine };
}

Deno.test("--health-http: a SIGSTOPped server is stopped (SIGTERM acted on: SIGCONT follows) and replaced by one that answers", async () => {
  await using sb = await Sandbox.create();
  const port = freePort();
  const termFile = sb.path("term");
  await startSupervised(
    sb,
    flags({
      "health-http": `http://127.0.0.1:${port}/`,
      "health-interval": "500ms",
      "health-timeout": "500ms",
      "health-retries": "2",
      "health-start-period": "30s",
      "restart-delay": "2s",
    }),
    [PYTHON, SERVER, "--port", String(port), "--term-file", termFile],
  );
  const child = await healthyChild(sb);
  assert.equal(await answeringPid(port), child);
  const { replacement, sawJson, sawLine } = await stopAndWatch(sb, child);
  await waitFor(() => !alive(child), 10_000, "the stopped child to be gone");
  // Its SIGTERM handler ran: it was continued after the signal, not left for SIGKILL.
  assert.equal(Deno.readTextFileSync(termFile), String(child));
  assert.ok(sawJson, "status --json showed health.state unhealthy in between");
  assert.ok(sawLine, "status showed (unhealthy: REASON) in between");
  await healthyChild(sb, child);
  assert.equal(await answeringPid(port), replacement, "the new pid answers");
  const report = await statusJson(sb);
  assert.equal(report.health?.restarts, 1);
  assert.match(Deno.readTextFileSync(sb.path("out.log")), /is unhealthy: 2 health checks failed/);
  await stopService(sb);
});

Deno.test("--health-cmd: a check as COMMAND runs it (its pid in SINGLETON_RUN_PID) finds a stopped server; it is replaced", async () => {
  await using sb = await Sandbox.create();
  const port = freePort();
  const seen = sb.path("seen");
  await startSupervised(
    sb,
    flags({
      "health-cmd":
        `echo "$SINGLETON_RUN_PID $(pwd)" > ${seen}; curl -sf --max-time 5 http://127.0.0.1:${port}/`,
      "health-interval": "500ms",
      "health-timeout": "1s",
      "health-retries": "2",
      "health-start-period": "30s",
      "restart-delay": "2s",
      "chdir": sb.dir,
    }),
    [PYTHON, SERVER, "--port", String(port)],
  );
  const child = await healthyChild(sb);
  assert.equal(Deno.readTextFileSync(seen).trim(), `${child} ${sb.dir}`);
  const { replacement, sawJson } = await stopAndWatch(sb, child);
  assert.ok(sawJson, "status --json showed unhealthy in between");
  await healthyChild(sb, child);
  assert.equal(await answeringPid(port), replacement);
  assert.match(
    state(sb).health?.lastError ?? Deno.readTextFileSync(sb.path("out.log")),
    /timed out after 1 s|exit status/,
  );
  await stopService(sb);
});

Deno.test("--health-tcp: a server that closes its listener (and runs on) is replaced", async () => {
  await using sb = await Sandbox.create();
  const port = freePort();
  await startSupervised(sb, tcpCheck(port, "2", "30s"), [PYTHON, SERVER, "--port", String(port)]);
  const child = await healthyChild(sb);
  Deno.kill(child, "SIGUSR1"); // closes the listener
  const replacement = await healthyChild(sb, child);
  assert.ok(!alive(child), "the old child is gone");
  assert.equal(await answeringPid(port), replacement);
  assert.match(state(sb).health?.lastError ?? "", /cannot connect to 127\.0\.0\.1:[0-9]+/);
  await stopService(sb);
});

Deno.test("--health-start-period: a program that listens only after 3 s is not restarted over 20 s", async () => {
  await using sb = await Sandbox.create();
  const port = freePort();
  // Ready at once (by time alone), so the checks begin while it does not listen yet.
  await startSupervised(sb, [...STARTS_FINE, ...tcpCheck(port, "1", "5s")], [
    PYTHON,
    SERVER,
    "--port",
    String(port),
    "--listen-after",
    "3",
  ]);
  const first = state(sb).childPid!;
  sb.track(first);
  await new Promise((r) => setTimeout(r, 20_000));
  const s = state(sb);
  assert.equal(s.childPid, first, "the same child runs");
  assert.equal(s.restarts, 0);
  assert.equal(s.health?.state, "healthy");
  assert.equal(s.health?.restarts, 0);
  assert.match(s.health?.lastError ?? "", /connection refused/, "it failed before it listened");
  await stopService(sb);
});

Deno.test("a health check that hangs fails after --health-timeout, and nothing it started is left", async () => {
  await using sb = await Sandbox.create();
  const [inGroup, ownSession, orphaned] = [marker(1000), marker(2000), marker(3000)];
  const once = sb.path("once");
  await startSupervised(
    sb,
    flags({
      // The first check hangs, with one process in its group, one in a session of its own below
      // it, and one orphaned to the supervisor; the checks after it pass at once.
      "health-cmd":
        `[ -e ${once} ] && exit 0; touch ${once}; sleep ${inGroup} & setsid sleep ${ownSession} & ` +
        `(setsid sleep ${orphaned} &); echo hanging; wait`,
      "health-interval": "300ms",
      "health-timeout": "1s",
      "health-retries": "1000",
    }),
    ["sleep", "600"],
  );
  const child = state(sb).childPid!;
  sb.track(child);
  await waitFor(
    () =>
      findProcesses(["setsid", "sleep", orphaned]).length +
          findProcesses(["sleep", orphaned]).length > 0,
    10_000,
    "the check to start its processes",
  );
  await waitFor(() => (state(sb).health?.failures ?? 0) >= 1, 10_000, "a failed check");
  assert.match(state(sb).health!.lastError!, /^timed out after 1 s: hanging$/);
  for (const m of [inGroup, ownSession, orphaned]) {
    await waitFor(
      () =>
        findProcesses(["sleep", m]).length === 0 &&
        findProcesses(["setsid", "sleep", m]).length === 0,
      5000,
      `sleep ${m} to be gone`,
    );
  }
  assert.equal(state(sb).childPid, child, "COMMAND itself is left alone");
  await stopService(sb);
});

Deno.test("--watchdog: a program that stops pinging is replaced; one that pings keeps running", async () => {
  await using sb = await Sandbox.create();
  const envFile = sb.path("env.json");
  await startSupervised(
    sb,
    flags({
      "notify-socket": true,
      "watchdog": "1s",
    }),
    [PYTHON, NOTIFY_PROGRAM, "--ping-for", "3", "--env-file", envFile],
  );
  const first = state(sb).childPid!;
  sb.track(first);
  const env = JSON.parse(Deno.readTextFileSync(envFile));
  assert.equal(env.WATCHDOG_USEC, "1000000");
  assert.equal(
    env.WATCHDOG_PID,
    undefined,
    "no WATCHDOG_PID: posix_spawn gives the pid only after",
  );
  await nextChild(sb, first);
  assert.match(state(sb).health?.lastError ?? "", /sent no WATCHDOG=1 within 1 s/);
  await stopService(sb);

  await using sb2 = await Sandbox.create();
  await startSupervised(sb2, ["--notify-socket", "--watchdog", "1s"], [
    PYTHON,
    NOTIFY_PROGRAM,
    "--ping-for",
    "inf",
  ]);
  const pinger = state(sb2).childPid!;
  sb2.track(pinger);
  await new Promise((r) => setTimeout(r, 10_000));
  const s = state(sb2);
  assert.equal(s.childPid, pinger, "the pinging program still runs");
  assert.equal(s.restarts, 0);
  assert.equal(s.health?.state, "healthy");
  await stopService(sb2);
});

Deno.test("a program that asks for a watchdog itself (WATCHDOG_USEC=) and then never pings is replaced", async () => {
  await using sb = await Sandbox.create();
  await startSupervised(sb, ["--notify-socket"], [PYTHON, NOTIFY_PROGRAM, "--usec", "500000"]);
  const first = state(sb).childPid!;
  sb.track(first);
  await nextChild(sb, first);
  assert.match(state(sb).health?.lastError ?? "", /sent no WATCHDOG=1 within 0\.5 s/);
  await stopService(sb);
});

Deno.test("WATCHDOG=trigger: a program that says it is stuck is replaced at once", async () => {
  await using sb = await Sandbox.create();
  await startSupervised(sb, ["--notify-socket", "--watchdog", "1h"], [
    PYTHON,
    NOTIFY_PROGRAM,
    "--ping-for",
    "1",
    "--trigger",
    "yes",
  ]);
  const first = state(sb).childPid!;
  sb.track(first);
  await nextChild(sb, first);
  assert.match(state(sb).health?.lastError ?? "", /it sent WATCHDOG=trigger/);
  await stopService(sb);
});

Deno.test("a service that keeps going unhealthy gives up like a crash loop (--max-restarts)", async () => {
  await using sb = await Sandbox.create();
  const supervisor = await startSupervised(
    sb,
    flags({
      "health-cmd": "exit 3",
      "health-interval": "200ms",
      "health-retries": "1",
      "max-restarts": "2",
      "restart-delay": "100ms",
      "min-uptime": "1ms", // every run is "stable": the delay alone would not stop it
    }),
    ["sleep", "600"],
  );
  await waitFor(() => !alive(supervisor), 30_000, "the supervisor to give up");
  const out = Deno.readTextFileSync(sb.path("out.log"));
  assert.match(out, /is unhealthy: its health check failed: exit status 3/);
  assert.match(out, /giving up: .* it was restarted 2 times within 60 s/);
  const r = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(r.code, 3, "not running: the lock is free");
});

Deno.test("./control: start({ supervise, health }) checks health; statusSync() shows it at the top", async () => {
  await using sb = await Sandbox.create();
  const port = freePort();
  const { pid } = await start({
    pidfile: sb.pidfile,
    command: [PYTHON, SERVER, "--port", String(port)],
    supervise: {},
    health: { kind: "tcp", host: "127.0.0.1", port, interval: 300, startPeriod: 30_000 },
  });
  sb.track(pid);
  await healthyChild(sb);
  const report = statusSync(sb.pidfile);
  assert.equal(report.code, 0);
  assert.equal(report.health?.state, "healthy");
  assert.equal(report.health?.failures, 0);
  assert.ok(report.health?.lastCheck && !Number.isNaN(Date.parse(report.health.lastCheck)));
  await stop({ pidfile: sb.pidfile });
});

Deno.test("bad health and watchdog options: one line, exit 2, nothing created", async (t) => {
  const cases: [string[], RegExp][] = [
    [
      ["--supervise", "--health-http", "ftp://127.0.0.1/"],
      /expected an http:\/\/ or https:\/\/ URL/,
    ],
    [["--supervise", "--health-http", "http://127.0.0.1:0/"], /port is from 1 to 65535/],
    [["--supervise", "--health-http", "http://127.0.0.1:70000/"], /port is from 1 to 65535/],
    [["--supervise", "--health-http", "http://u:p@127.0.0.1/"], /user or password/],
    [["--supervise", "--health-tcp", "127.0.0.1:0"], /HOST:PORT with a port from 1 to 65535/],
    [["--supervise", "--health-tcp", "127.0.0.1:65536"], /HOST:PORT/],
    [["--supervise", "--health-tcp", "localhost"], /HOST:PORT/],
    [["--supervise", "--health-cmd", "true", "--health-interval", "0"], /must be more than 0/],
    [["--supervise", "--health-cmd", "true", "--health-timeout", "-1s"], /--health-timeout/],
    [["--supervise", "--health-cmd", "true", "--health-retries", "0"], /from 1 to/],
    [["--supervise", "--health-cmd", " "], /expected a shell command/],
    [["--supervise", "--notify-socket", "--watchdog", "0s"], /must be more than 0/],
    [["--health-cmd", "true"], /--health-cmd needs --supervise/],
    [["--health-http", "http://127.0.0.1:1/"], /--health-http needs --supervise/],
    [["--watchdog", "1s"], /--watchdog needs --supervise/],
    [["--supervise", "--watchdog", "1s"], /--watchdog needs --notify-socket/],
    [
      ["--supervise", "--health-interval", "1s"],
      /needs --health-cmd, --health-http or --health-tcp/,
    ],
    [
      ["--supervise", "--health-cmd", "true", "--health-tcp", "127.0.0.1:1"],
      /--health-cmd and --health-tcp exclude each other/,
    ],
  ];
  for (const cmd of ["start", "run"]) {
    for (const [options, pattern] of cases) {
      await t.step(`${cmd} ${options.join(" ")}`, async () => {
        await using sb = await Sandbox.create();
        const r = await sr(SOURCE, [cmd, "--pidfile", sb.pidfile, ...options, "--", "sleep", "9"]);
        assertCleanError(r, 2, pattern);
        assert.deepEqual(sb.list(), [], "nothing created");
      });
    }
  }
  await t.step("--health-http without Deno's --allow-net", async () => {
    await using sb = await Sandbox.create();
    const narrow = {
      name: "no-net",
      cmd: [
        Deno.execPath(),
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-sys",
        `${ROOT}cli.ts`,
      ],
    };
    for (
      const option of [["--health-http", "http://127.0.0.1:8080/"], [
        "--health-tcp",
        "127.0.0.1:8080",
      ]]
    ) {
      const r = await sr(narrow, [
        "start",
        "--pidfile",
        sb.pidfile,
        "--supervise",
        ...option,
        "--",
        "sleep",
        "9",
      ]);
      assertCleanError(r, 2, /needs --allow-net/);
      assert.deepEqual(sb.list(), [], "nothing created");
    }
  });
});
