/**
 * Real classic daemons, driven as a sysadmin would: programs that fork away
 * (redis --daemonize yes, nginx in its default mode, daemonize(1), a C
 * program built here from the textbook rules) and a program that closes its
 * inherited descriptors (dnsmasq -k). Each case runs start, a refused second
 * start, status (plain and --json), a reload or a signal whose effect is
 * seen, restart and stop, and ends with nothing left running and the pid
 * file empty.
 */

import assert from "node:assert/strict";
import {
  argvOf,
  exists,
  findMentioning,
  isAlive,
  listPids,
  statOf,
} from "../../testing/process.ts";
import { freePort, installed } from "../../testing/cluster.ts";
import { answersOn } from "../../testing/corpus.ts";
import { findProcesses, locked, readPid, Sandbox, SOURCE, sr, waitFor } from "./harness.ts";

const REDIS = installed("redis-server");
const NGINX = installed("nginx") || exists("/usr/sbin/nginx");
const DNSMASQ = installed("dnsmasq") || exists("/usr/sbin/dnsmasq");
const DAEMONIZE = installed("daemonize");
const GCC = installed("gcc");

function which(program: string): string {
  for (const dir of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (exists(`${dir}/${program}`)) return `${dir}/${program}`;
  }
  return program;
}

function running(pid: number | undefined): boolean {
  return pid !== undefined && isAlive(pid);
}

/** The live processes whose argv mentions `text` (singleton-run's own stages left out). */
function processesWith(text: string): number[] {
  return findMentioning(text).filter((pid) => !argvOf(pid)?.includes("--singleton-run-internal"));
}

interface Case {
  /** The command line. */
  readonly command: string[];
  /** start's extra options. */
  readonly options?: string[];
  /** A string only this daemon's processes have in their command line. */
  readonly mark: string;
  /** Which reload to try, what to note before it, and how to see it worked. */
  readonly reload?: {
    readonly args: string[];
    readonly before?: () => void;
    readonly seen: () => boolean | Promise<boolean>;
  };
  /** Whether a keeper holds the lock (the program closes its descriptors). */
  readonly keeper?: boolean;
}

/** The whole life of one daemon through the CLI. */
async function lifecycle(sb: Sandbox, c: Case): Promise<void> {
  const start = ["start", "--pidfile", sb.pidfile, ...(c.options ?? []), "--", ...c.command];
  const first = await sr(SOURCE, start);
  for (const pid of processesWith(c.mark)) sb.track(pid);
  assert.equal(first.code, 0, first.stderr);
  const main = Number(first.stdout.trim());
  assert.ok(running(main), `start printed ${main}, which does not run`);
  assert.equal(readPid(sb.pidfile), main, "the pid file names the daemon itself");
  if (c.keeper) assert.match(first.stderr, /keeper pid [0-9]+ holds the lock/);

  const second = await sr(SOURCE, start);
  assert.equal(second.code, 3, second.stderr);
  assert.match(second.stderr, new RegExp(`already running \\(pid ${main}\\)`));

  const status = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, new RegExp(`^running \\(pid ${main}\\b`));
  const json = JSON.parse((await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile])).stdout);
  assert.equal(json.state, "running");
  assert.equal(json.pid, main);
  if (c.keeper) assert.ok(json.keeper > 0, "status --json names the keeper");

  if (c.reload) {
    c.reload.before?.();
    const r = await sr(SOURCE, [...c.reload.args, "--pidfile", sb.pidfile]);
    assert.equal(r.code, 0, r.stderr);
    const end = performance.now() + 5000;
    while (!await c.reload.seen() && performance.now() < end) {
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(await c.reload.seen(), "the reload had no effect");
  }

  const restarted = await sr(SOURCE, [
    "restart",
    "--pidfile",
    sb.pidfile,
    ...(c.options ?? []),
    "--",
    ...c.command,
  ]);
  for (const pid of processesWith(c.mark)) sb.track(pid);
  assert.equal(restarted.code, 0, restarted.stderr);
  const again = Number(restarted.stdout.trim());
  assert.notEqual(again, main);
  assert.ok(!running(main), "the old daemon runs on after restart");
  assert.equal(readPid(sb.pidfile), again);

  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  await waitFor(() => processesWith(c.mark).length === 0, 5000, `every ${c.mark} process to end`);
  assert.equal(locked(sb.pidfile), false, "the lock is still held");
  assert.equal(Deno.readTextFileSync(sb.pidfile), "", "the pid file is not empty");
  assert.equal((await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code, 3);
}

Deno.test({
  name:
    "redis-server --daemonize yes: followed to its forked child, with and without its own pid file",
  ignore: !REDIS,
  async fn() {
    for (const own of [true, false]) {
      await using sb = await Sandbox.create();
      const port = freePort();
      const redisPid = sb.path("redis.pid");
      const base = [
        which("redis-server"),
        "--daemonize",
        "yes",
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        sb.dir,
        "--save",
        "",
        "--pidfile",
        redisPid,
      ];
      await lifecycle(sb, {
        command: base,
        options: own ? ["--daemon-pidfile", redisPid] : [],
        mark: `127.0.0.1:${port}`,
        // redis has no reload signal; WINCH, ignored by default, must reach it and harm nothing.
        reload: { args: ["signal", "WINCH"], seen: () => answersOn(port) },
      });
    }
  },
});

Deno.test({
  name:
    "nginx in its default mode (master forks away): --daemon-pidfile names the master; reload replaces the workers",
  ignore: !NGINX,
  async fn() {
    await using sb = await Sandbox.create();
    const port = freePort();
    const own = sb.path("nginx.pid");
    Deno.mkdirSync(sb.path("logs"));
    Deno.writeTextFileSync(
      sb.path("nginx.conf"),
      `pid ${own};\nerror_log ${sb.path("logs/error.log")} info;\nworker_processes 2;\n` +
        `events { worker_connections 64; }\nhttp { access_log off; ` +
        ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) =>
          `${t}_temp_path ${sb.path(t)};`
        ).join(" ") +
        ` server { listen 127.0.0.1:${port}; location / { return 200 "ok"; } } }\n`,
    );
    const workersOf = () => {
      const m = readPid(own);
      return m === undefined ? [] : findChildren(m);
    };
    let workers: number[] = [];
    await lifecycle(sb, {
      command: [which("nginx"), "-p", sb.dir, "-c", sb.path("nginx.conf")],
      options: ["--daemon-pidfile", own],
      mark: sb.path("nginx.conf"),
      reload: {
        args: ["reload"],
        before: () => (workers = workersOf()),
        seen: () => {
          const now = workersOf();
          return workers.length > 0 && now.length > 0 && now.every((w) => !workers.includes(w));
        },
      },
    });
  },
});

/** The live children of a process. */
function findChildren(parent: number): number[] {
  return listPids().filter((pid) => statOf(pid)?.ppid === parent && isAlive(pid));
}

Deno.test({
  name:
    "dnsmasq -k (closes every inherited descriptor): a keeper holds the lock, the pid file names dnsmasq",
  ignore: !DNSMASQ,
  async fn() {
    await using sb = await Sandbox.create();
    const port = freePort();
    const log = sb.path("dnsmasq.log");
    await lifecycle(sb, {
      command: [
        which("dnsmasq"),
        "-k",
        "--conf-file=/dev/null",
        `--port=${port}`,
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--pid-file=",
        "--user=root",
        `--log-facility=${log}`,
      ],
      mark: `--port=${port}`,
      keeper: true,
      reload: {
        // SIGHUP makes dnsmasq re-read its hosts files and say so.
        args: ["reload"],
        seen: () => {
          try {
            return /read \/etc\/hosts|cleared cache|reading/.test(Deno.readTextFileSync(log));
          } catch {
            return false;
          }
        },
      },
    });
  },
});

Deno.test({
  name: "daemonize(1) wrapping sleep: a double fork and closed descriptors, followed and kept",
  ignore: !DAEMONIZE,
  async fn() {
    await using sb = await Sandbox.create();
    const m = String(500 + Math.floor(Math.random() * 1e6) / 1e3);
    await lifecycle(sb, {
      command: [which("daemonize"), "/bin/sleep", m],
      mark: m,
      reload: { args: ["signal", "0"], seen: () => findProcesses(["/bin/sleep", m]).length === 1 },
    });
  },
});

/** The textbook daemon: fork, setsid, fork again, chdir /, umask 0, close everything, own pid file. */
const TEXTBOOK_C = `
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
static const char *mark;
static void hup(int s) { (void)s; int fd = open(mark, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) { (void)!write(fd, "hup\\n", 4); close(fd); } }
int main(int argc, char **argv) {
  if (argc < 3) return 2;
  mark = argv[2];
  pid_t p = fork(); if (p < 0) return 1; if (p > 0) _exit(0);
  setsid();
  p = fork(); if (p < 0) return 1; if (p > 0) _exit(0);
  (void)!chdir("/"); umask(0);
  long max = sysconf(_SC_OPEN_MAX); for (long fd = 0; fd < max; fd++) close(fd);
  open("/dev/null", O_RDWR); (void)!dup(0); (void)!dup(0);
  FILE *f = fopen(argv[1], "w"); if (f) { fprintf(f, "%d\\n", getpid()); fclose(f); }
  signal(SIGHUP, hup);
  for (;;) pause();
}
`;

async function buildTextbook(sb: Sandbox): Promise<string> {
  Deno.writeTextFileSync(sb.path("textbook.c"), TEXTBOOK_C);
  const bin = sb.path("textbook-daemon");
  const cc = await new Deno.Command("gcc", {
    args: ["-O2", "-o", bin, sb.path("textbook.c")],
    stderr: "piped",
  }).output();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  return bin;
}

Deno.test({
  name:
    "the textbook C daemon (fork, setsid, fork, close all, own pid file): followed and kept, with and without --daemon-pidfile",
  ignore: !GCC,
  async fn() {
    for (const own of [true, false]) {
      await using sb = await Sandbox.create();
      const bin = await buildTextbook(sb);
      const pidfile = sb.path("own.pid");
      const hupMark = sb.path("hup");
      await lifecycle(sb, {
        command: [bin, pidfile, hupMark],
        options: own ? ["--daemon-pidfile", pidfile] : [],
        mark: bin,
        keeper: true,
        reload: { args: ["reload"], seen: () => exists(hupMark) },
      });
    }
  },
});

Deno.test({
  name:
    "--supervise follows redis --daemonize yes and the textbook daemon, and restarts them when their main process dies",
  ignore: !REDIS || !GCC,
  async fn() {
    await using sb = await Sandbox.create();
    const bin = await buildTextbook(sb);
    const port = freePort();
    const programs = [
      {
        cmd: [
          which("redis-server"),
          "--daemonize",
          "yes",
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--dir",
          sb.dir,
          "--save",
          "",
        ],
        mark: `127.0.0.1:${port}`,
      },
      { cmd: [bin, sb.path("own.pid"), sb.path("hup")], mark: bin },
    ];
    for (const p of programs) {
      const pidfile = sb.path(`sv-${programs.indexOf(p)}.pid`);
      const r = await sr(SOURCE, [
        "start",
        "--supervise",
        "--restart-delay",
        "100ms",
        "--pidfile",
        pidfile,
        "--",
        ...p.cmd,
      ]);
      assert.equal(r.code, 0, r.stderr);
      sb.track(Number(r.stdout.trim()));
      await waitFor(() => processesWith(p.mark).length === 1, 5000, `${p.mark} to run`);
      const [first] = processesWith(p.mark);
      sb.track(first);
      await new Promise((res) => setTimeout(res, 300));
      Deno.kill(first!, "SIGKILL");
      await waitFor(
        () => processesWith(p.mark).some((pid) => pid !== first),
        10_000,
        `a new run of ${p.mark}`,
      );
      for (const pid of processesWith(p.mark)) sb.track(pid);
      const stop = await sr(SOURCE, ["stop", "--pidfile", pidfile]);
      assert.equal(stop.code, 0, stop.stderr);
      await waitFor(() => processesWith(p.mark).length === 0, 5000, "nothing left");
    }
  },
});

Deno.test({
  name:
    "--supervise: after nginx's master is SIGKILLed, its workers are stopped before the next run, which binds the port",
  ignore: !NGINX,
  async fn() {
    await using sb = await Sandbox.create();
    const port = freePort();
    Deno.mkdirSync(sb.path("logs"));
    Deno.writeTextFileSync(
      sb.path("nginx.conf"),
      `daemon off;\npid ${sb.path("nginx.pid")};\nerror_log ${sb.path("logs/error.log")};\n` +
        `worker_processes 2;\nevents { worker_connections 64; }\nhttp { access_log off; ` +
        ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) =>
          `${t}_temp_path ${sb.path(t)};`
        ).join(" ") +
        ` server { listen 127.0.0.1:${port}; location / { return 200 "ok"; } } }\n`,
    );
    const r = await sr(SOURCE, [
      "start",
      "--supervise",
      "--restart-delay",
      "100ms",
      "--pidfile",
      sb.pidfile,
      "--",
      which("nginx"),
      "-p",
      sb.dir,
      "-c",
      sb.path("nginx.conf"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    sb.track(Number(r.stdout.trim()));
    const mark = sb.path("nginx.conf");
    await waitFor(() =>
      processesWith(mark).length >= 1 && findChildren(processesWith(mark)[0]!).length === 2
    );
    const master = processesWith(mark).find((p) => findChildren(p).length === 2)!;
    const oldWorkers = findChildren(master);
    for (const w of [master, ...oldWorkers]) sb.track(w);
    Deno.kill(master, "SIGKILL");
    await waitFor(
      () => {
        const masters = processesWith(mark).filter((p) => p !== master && !oldWorkers.includes(p));
        return masters.some((p) => findChildren(p).length === 2);
      },
      15_000,
      "a new master with its workers",
    );
    for (const w of oldWorkers) assert.ok(!running(w), `old worker ${w} runs on`);
    let up = false;
    for (let i = 0; i < 50 && !up; i++) {
      up = await answersOn(port);
      if (!up) await new Promise((res) => setTimeout(res, 100));
    }
    assert.ok(up, "the new run does not answer on its port");
    let phase = "";
    for (let i = 0; i < 50 && phase !== "running"; i++) {
      const st = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
      phase = JSON.parse(st.stdout).supervisor?.phase ?? "";
      if (phase !== "running") await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(phase, "running", "the new run never became ready");
    for (const p of processesWith(mark)) sb.track(p);
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
    await waitFor(() => processesWith(mark).length === 0, 5000, "nothing left");
  },
});
