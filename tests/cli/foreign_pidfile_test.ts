/**
 * Pid files singleton-run does not own: a file a program wrote for itself
 * (nginx's, a script's `echo $$ > F`), and a file whose lock a keeper holds
 * for the process it names. status, stop, signal and reload never write
 * such a file and never signal a process without proof; `--exec PATH` is
 * the proof for a program singleton-run never started.
 */

import assert from "node:assert/strict";
import { procStat, statOf } from "../../testing/process.ts";
import { freePort, installed } from "../../testing/cluster.ts";
import { alive, locked, Sandbox, SOURCE, sr, waitFor } from "./harness.ts";

const SLEEP = Deno.realPathSync("/bin/sleep");
const NGINX = installed("nginx") ? "nginx" : ["/usr/sbin/nginx"].find(isFile);

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The bytes and modification time of a file, to show it was not written. */
function snapshot(path: string): string {
  return `${Deno.readTextFileSync(path)}@${Deno.statSync(path).mtime?.getTime()}`;
}

/** The live children of `parent`. */
function childrenOf(parent: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid)) continue;
    const st = statOf(pid);
    if (st?.ppid === parent && st.state !== "Z") out.push(pid);
  }
  return out.sort((a, b) => a - b);
}

/** A program that writes its own pid file, then execs sleep: the file names the sleep. */
async function selfWritten(sb: Sandbox): Promise<number> {
  const file = sb.path("own.pid");
  const child = new Deno.Command("bash", {
    args: [
      "-c",
      `bash -c 'echo $$ > "$1"; exec sleep 1000' own "$1" </dev/null >/dev/null 2>&1 &`,
      "self",
      file,
    ],
  }).spawn();
  await child.status;
  await waitFor(
    () => isFile(file) && Deno.readTextFileSync(file).endsWith("\n"),
    5000,
    "its pid file",
  );
  const pid = Number(Deno.readTextFileSync(file));
  sb.track(pid);
  await waitFor(() => Deno.readLinkSync(`/proc/${pid}/exe`) === SLEEP, 5000, "the exec of sleep");
  return pid;
}

Deno.test("a program's own pid file: without --exec nothing is written or signalled; with --exec stop ends it and leaves the file", async () => {
  await using sb = await Sandbox.create();
  const pid = await selfWritten(sb);
  const file = sb.path("own.pid");
  const before = snapshot(file);
  const st = await sr(SOURCE, ["status", "--pidfile", file]);
  assert.equal(st.code, 4, st.stderr + st.stdout);
  assert.match(st.stdout + st.stderr, new RegExp(`pid ${pid}.*runs but holds no lock.*--exec`));
  for (const args of [["stop"], ["reload"], ["signal", "TERM"]]) {
    const r = await sr(SOURCE, [...args, "--pidfile", file]);
    assert.equal(r.code, 1, `${args[0]}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /holds no lock on it.*not signalling it/);
  }
  for (const args of [["stop"], ["signal", "TERM"]]) {
    const r = await sr(SOURCE, [...args, "--pidfile", file, "--exec", "/bin/true"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`pid ${pid} runs ".*sleep", not "/bin/true"`));
  }
  const wrongStatus = await sr(SOURCE, ["status", "--pidfile", file, "--exec", "/bin/true"]);
  assert.equal(wrongStatus.code, 4, wrongStatus.stdout);
  assert.match(
    wrongStatus.stderr,
    new RegExp(`cannot tell: pid ${pid} runs ".*sleep", not "/bin/true"`),
  );
  assert.ok(alive(pid), "the program was signalled");
  assert.equal(snapshot(file), before, "the program's pid file was written");

  const running = await sr(SOURCE, ["status", "--pidfile", file, "--exec", SLEEP]);
  assert.equal(running.code, 0, running.stderr);
  assert.match(running.stdout, new RegExp(`^running \\(pid ${pid}`));
  const stop = await sr(SOURCE, ["stop", "--pidfile", file, "--exec", SLEEP]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.ok(!alive(pid), "stop returned before the program exited");
  assert.equal(snapshot(file), before, "stop wrote the program's pid file");
  const after = await sr(SOURCE, ["status", "--pidfile", file, "--exec", SLEEP]);
  assert.notEqual(after.code, 0, "status says a dead program runs");
});

Deno.test({
  name:
    "nginx started without singleton-run: status --exec says running, reload replaces its workers, stop --exec ends it",
  ignore: !NGINX,
  async fn() {
    await using sb = await Sandbox.create();
    const nginx = Deno.realPathSync(
      NGINX === "nginx"
        ? new TextDecoder().decode(
          new Deno.Command("bash", { args: ["-c", "command -v nginx"], stdout: "piped" })
            .outputSync().stdout,
        ).trim()
        : NGINX!,
    );
    const port = freePort();
    const pidfile = sb.path("nginx.pid");
    Deno.mkdirSync(sb.path("logs"));
    Deno.writeTextFileSync(
      sb.path("nginx.conf"),
      `pid ${pidfile};\nerror_log ${sb.path("logs/error.log")} notice;\n` +
        `worker_processes 2;\nevents { worker_connections 64; }\nhttp { access_log off; ` +
        ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) =>
          `${t}_temp_path ${sb.path(t)};`
        ).join(" ") +
        ` server { listen 127.0.0.1:${port}; location / { return 200 "ok"; } } }\n`,
    );
    const out = await new Deno.Command(nginx, {
      args: ["-p", sb.dir, "-c", sb.path("nginx.conf")],
      stdin: "null",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    await waitFor(() => isFile(pidfile), 5000, "nginx's pid file");
    const master = Number(Deno.readTextFileSync(pidfile));
    sb.track(master);
    await waitFor(() => childrenOf(master).length === 2, 5000, "nginx's workers");
    const workers = childrenOf(master);
    for (const w of workers) sb.track(w);
    const before = snapshot(pidfile);

    const plain = await sr(SOURCE, ["status", "--pidfile", pidfile]);
    assert.equal(plain.code, 4, plain.stdout);
    const st = await sr(SOURCE, ["status", "--pidfile", pidfile, "--exec", nginx]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`^running \\(pid ${master}`));

    const reload = await sr(SOURCE, ["reload", "--pidfile", pidfile, "--exec", nginx]);
    assert.equal(reload.code, 0, reload.stderr);
    await waitFor(
      () => {
        const now = childrenOf(master);
        return now.length === 2 && now.every((w) => !workers.includes(w));
      },
      10_000,
      "new workers after the reload",
    );
    for (const w of childrenOf(master)) sb.track(w);
    assert.match(Deno.readTextFileSync(sb.path("logs/error.log")), /reconfiguring/);
    assert.equal(snapshot(pidfile), before, "reload wrote nginx's pid file");

    const stop = await sr(SOURCE, ["stop", "--pidfile", pidfile, "--exec", nginx]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(!alive(master), "stop returned before nginx's master exited");
    if (isFile(pidfile)) assert.equal(snapshot(pidfile), before, "stop wrote nginx's pid file");
    await waitFor(() => childrenOf(master).length === 0, 5000, "nginx's workers to end");
  },
});

Deno.test("a keeper holds the lock for the process the file names: status shows both, stop ends the named process and waits for the lock", async () => {
  await using sb = await Sandbox.create();
  Deno.writeTextFileSync(sb.pidfile, "");
  const ready = sb.path("ready");
  // A stand-in for the keeper stage: it holds the flock on a read-only
  // descriptor, starts the daemon without that descriptor, writes the
  // daemon's pid and lets go only when the daemon exits; and, as a keeper
  // does, records both by pid and start time (its argv proves nothing).
  const keeper = new Deno.Command("bash", {
    args: [
      "-c",
      'exec 9<"$1"; flock -n 9 || exit 9; sleep 1000 9<&- </dev/null >/dev/null 2>&1 & ' +
      'echo $! > "$1"; : > "$2"; wait',
      "keeper",
      sb.pidfile,
      ready,
    ],
    stdin: "null",
  }).spawn();
  sb.track(keeper.pid);
  await waitFor(() => isFile(ready), 5000, "the keeper to hold the lock");
  const daemon = Number(Deno.readTextFileSync(sb.pidfile));
  sb.track(daemon);
  assert.ok(locked(sb.pidfile));
  const identity = (pid: number) => ({ pid, start: Number(procStat(pid)[19]) });
  Deno.writeTextFileSync(
    `${sb.pidfile}.record`,
    JSON.stringify({
      version: 1,
      recordedAt: new Date().toISOString(),
      by: "start",
      spec: { command: ["sleep", "1000"], holder: { kind: "keeper" } },
      daemon: identity(daemon),
      holder: identity(keeper.pid),
    }),
    { mode: 0o600 },
  );

  const st = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
  assert.equal(st.code, 0, st.stderr);
  const report = JSON.parse(st.stdout);
  assert.equal(report.state, "running");
  assert.equal(report.pid, daemon);
  assert.equal(report.keeper, keeper.pid);

  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.ok(!alive(daemon), "the named process runs on");
  assert.ok(!locked(sb.pidfile), "stop returned while the keeper held the lock");
  const status = await keeper.status;
  assert.equal(status.signal, null, "the keeper was signalled, not the daemon");
  // The file is singleton-run's (the keeper's): once the daemon is gone and
  // the lock free, it is stale, and stop empties it as a real keeper would.
  assert.equal(Deno.readTextFileSync(sb.pidfile), "");
});
