/**
 * Readiness passed on to a service manager: a stand-in for systemd's end of
 * `NOTIFY_SOCKET` (a datagram socket that records each message with its
 * sender's pid) receives what `run --supervise` and `start --supervise`
 * send, and the systemd units of docs/cli.md are run as written there.
 */

import assert from "node:assert/strict";
import { freePort, HEALTH_SERVER, PYTHON } from "../../testing/health.ts";
import { exists, isAlive, statOf } from "../../testing/process.ts";
import { alive, ROOT, Sandbox, SOURCE, sr, waitFor } from "./harness.ts";

const RECORDER = `${ROOT}tests/cli/fixtures/notify_recorder.py`;
const SERVER = HEALTH_SERVER;
const NOTIFY_PROGRAM = `${ROOT}tests/cli/fixtures/notify_program.py`;

interface Message {
  readonly pid: number;
  readonly text: string;
}

/** The stand-in for systemd: its socket, and what it received so far. */
class Recorder implements AsyncDisposable {
  readonly socket: string;
  readonly #log: string;
  readonly #child: Deno.ChildProcess;
  private constructor(sb: Sandbox) {
    this.socket = sb.path("notify.sock");
    this.#log = sb.path("notify.log");
    this.#child = new Deno.Command(PYTHON, {
      args: [RECORDER, this.socket, this.#log],
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    sb.track(this.#child.pid);
  }
  static async open(sb: Sandbox): Promise<Recorder> {
    const r = new Recorder(sb);
    await waitFor(() => exists(`${r.#log}.bound`), 10_000, "the stand-in socket");
    return r;
  }
  messages(): Message[] {
    try {
      return Deno.readTextFileSync(this.#log).trim().split("\n").filter((l) => l !== "").map((
        l,
      ) => JSON.parse(l));
    } catch {
      return [];
    }
  }
  async until(what: string, test: (m: Message) => boolean, timeoutMs = 20_000): Promise<Message> {
    let found: Message | undefined;
    await waitFor(() => (found = this.messages().find(test)) !== undefined, timeoutMs, what);
    return found!;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    this.#child.kill("SIGKILL");
    await this.#child.status;
  }
}

/** The state file's child pid, once there is one. */
function childOf(sb: Sandbox): number | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(`${sb.pidfile}.state`)).childPid ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Spawn a command as systemd does for a `Type=notify` unit: `NOTIFY_SOCKET`,
 * `WATCHDOG_USEC`, and `WATCHDOG_PID` naming the process itself.
 */
function spawnAsSystemd(argv: readonly string[], socket: string, watchdogUsec: number) {
  return new Deno.Command("sh", {
    args: ["-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", ...argv],
    env: { NOTIFY_SOCKET: socket, WATCHDOG_USEC: String(watchdogUsec) },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * `run` or `start` `--supervise` of a program that says READY=1 (on the
 * supervisor's socket) only `seconds` after it started, once it wrote `marker`.
 */
function late(action: "run" | "start", sb: Sandbox, seconds: number, marker: string): string[] {
  return [
    ...SOURCE.cmd,
    action,
    "--pidfile",
    sb.pidfile,
    "--supervise",
    "--notify-socket",
    "--",
    PYTHON,
    NOTIFY_PROGRAM,
    "--ready-after",
    String(seconds),
    "--marker",
    marker,
  ];
}

Deno.test("run --supervise under NOTIFY_SOCKET: READY=1 once COMMAND is ready and not before, WATCHDOG=1 while it runs, STOPPING=1 on stop; COMMAND sees none of it", async () => {
  await using sb = await Sandbox.create();
  await using recorder = await Recorder.open(sb);
  const marker = sb.path("ready");
  const envFile = sb.path("env.json");
  const run = spawnAsSystemd(
    [...late("run", sb, 3, marker), "--env-file", envFile],
    recorder.socket,
    1_000_000,
  );
  sb.track(run.pid);
  await waitFor(() => childOf(sb) !== undefined, 20_000, "COMMAND to start");
  sb.track(childOf(sb));
  const early = recorder.messages();
  if (!exists(marker)) {
    assert.ok(!early.some((m) => /^READY=1$/m.test(m.text)), "no READY=1 before COMMAND is");
  }
  const ready = await recorder.until("READY=1", (m) => /^READY=1$/m.test(m.text));
  assert.ok(exists(marker), "READY=1 came once COMMAND was ready");
  assert.equal(ready.pid, run.pid, "from the main process (the supervisor)");
  const ping = await recorder.until("WATCHDOG=1", (m) => m.text === "WATCHDOG=1");
  assert.equal(ping.pid, run.pid);
  const env = JSON.parse(Deno.readTextFileSync(envFile));
  assert.notEqual(env.NOTIFY_SOCKET, recorder.socket, "COMMAND has the supervisor's own socket");
  assert.ok(env.NOTIFY_SOCKET?.startsWith("/"), "an absolute path");
  assert.equal(env.WATCHDOG_USEC, undefined);
  assert.equal(env.WATCHDOG_PID, undefined);
  const child = childOf(sb)!;
  Deno.kill(run.pid, "SIGTERM");
  const status = await run.status;
  await run.stdout.cancel();
  await run.stderr.cancel();
  assert.equal(status.code, 0);
  await recorder.until("STOPPING=1", (m) => /^STOPPING=1$/m.test(m.text));
  await waitFor(() => !alive(child), 10_000, "COMMAND to be gone");
});

Deno.test("start --supervise under NOTIFY_SOCKET: MAINPID=<supervisor> and READY=1 first, once COMMAND is ready; then the supervisor speaks", async () => {
  await using sb = await Sandbox.create();
  await using recorder = await Recorder.open(sb);
  const marker = sb.path("ready");
  const start = spawnAsSystemd(
    late("start", sb, 2, marker),
    recorder.socket,
    4_000_000,
  );
  const out = await start.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const supervisor = Number(new TextDecoder().decode(out.stdout).trim());
  sb.track(supervisor);
  sb.track(childOf(sb));
  const first = recorder.messages()[0];
  assert.ok(first, "a message arrived");
  assert.equal(first.text, `MAINPID=${supervisor}\nREADY=1`);
  assert.equal(first.pid, start.pid, "sent by start, the main process until then");
  assert.ok(exists(marker), "once COMMAND was ready");
  const ping = await recorder.until("WATCHDOG=1", (m) => m.text === "WATCHDOG=1");
  assert.equal(ping.pid, supervisor, "the supervisor answers the watchdog once it is the main pid");
  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  const stopping = await recorder.until("STOPPING=1", (m) => /^STOPPING=1$/m.test(m.text));
  assert.equal(stopping.pid, supervisor);
});

/** The `ExecStart=`-style lines of the docs' unit of this type, as argv. */
function unit(type: string): Record<string, string[]> {
  const doc = Deno.readTextFileSync(`${ROOT}docs/cli.md`);
  const section = doc.slice(doc.indexOf("## With systemd"));
  const blocks = [...section.matchAll(/```ini\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const block = blocks.find((b) => b.includes(`Type=${type}\n`) && b.includes("--supervise"));
  assert.ok(block, `docs/cli.md has a Type=${type} unit with --supervise`);
  const out: Record<string, string[]> = {};
  for (const line of block.replaceAll("\\\n", " ").split("\n")) {
    const m = /^(Exec[A-Za-z]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim().split(/\s+/);
  }
  return out;
}

/** A unit's command with this test's paths: the CLI from source, the sandbox, a real server. */
function localize(argv: readonly string[], sb: Sandbox, port: number): string[] {
  return argv.flatMap((a) => {
    if (a === "/usr/local/bin/singleton-run") return [...SOURCE.cmd];
    if (a === "/usr/local/bin/web") return [PYTHON, SERVER];
    return [
      a.replace("/run/web.pid", sb.pidfile).replace("/var/log/web.log", sb.path("web.log"))
        .replace("8080", String(port)),
    ];
  });
}

Deno.test("docs/cli.md's Type=notify unit: ready, watchdog, reload, SIGTERM to the main process", async () => {
  await using sb = await Sandbox.create();
  await using recorder = await Recorder.open(sb);
  const port = freePort();
  const u = unit("notify");
  const main = spawnAsSystemd(localize(u.ExecStart!, sb, port), recorder.socket, 1_000_000);
  sb.track(main.pid);
  const ready = await recorder.until("READY=1", (m) => /^READY=1$/m.test(m.text));
  assert.equal(ready.pid, main.pid);
  sb.track(childOf(sb));
  await recorder.until("WATCHDOG=1", (m) => m.text === "WATCHDOG=1" && m.pid === main.pid);
  const reload = await sr(SOURCE, localize(u.ExecReload!, sb, port).slice(SOURCE.cmd.length));
  assert.equal(reload.code, 0, reload.stderr);
  const child = childOf(sb)!;
  Deno.kill(main.pid, "SIGTERM"); // KillMode=mixed: the main process alone
  assert.equal((await main.status).code, 0);
  await main.stdout.cancel();
  await main.stderr.cancel();
  await recorder.until("STOPPING=1", (m) => /^STOPPING=1$/m.test(m.text));
  await waitFor(() => !alive(child), 10_000, "COMMAND to be gone");
});

Deno.test("docs/cli.md's Type=forking unit: PIDFile= names the supervisor once ExecStart returns; reload; stop", async () => {
  await using sb = await Sandbox.create();
  const port = freePort();
  const u = unit("forking");
  const cli = (argv: string[]) => sr(SOURCE, localize(argv, sb, port).slice(SOURCE.cmd.length));
  const started = await cli(u.ExecStart!);
  assert.equal(started.code, 0, started.stderr);
  const pid = Number(Deno.readTextFileSync(sb.pidfile).trim());
  sb.track(pid);
  assert.equal(pid, Number(started.stdout.trim()));
  assert.ok(isAlive(pid), "the pid file names a live process after ExecStart returned");
  const child = childOf(sb)!;
  sb.track(child);
  assert.equal(statOf(child)?.ppid, pid, "the supervisor, parent of COMMAND");
  await waitFor(
    () => {
      try {
        return JSON.parse(Deno.readTextFileSync(`${sb.pidfile}.state`)).health?.state === "healthy";
      } catch {
        return false;
      }
    },
    30_000,
    "the health check to pass",
  );
  assert.equal((await cli(u.ExecReload!)).code, 0);
  const stopped = await cli(u.ExecStop!);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.ok(!alive(pid) && !alive(child), "both gone");
});
