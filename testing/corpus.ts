/**
 * The corpus of real starts that `start`'s default readiness was chosen from,
 * shared by the CLI test (tests/cli/honest_start_test.ts) and the measuring
 * tool (bench/readiness_corpus.ts): real programs that fail during their
 * start-up in the ways they do in the field (a busy port, a bad
 * configuration, a missing module, a corrupt data file, a failure just after
 * they start listening, a forked child that dies), and healthy ones.
 *
 * Each case makes its files in a directory of its own and names a marker
 * that every process it starts carries in its argv (the directory, or for
 * redis, which rewrites its argv, the port), so what a start left behind can
 * be found. A busy port is one a listener of the caller holds.
 *
 * @module
 */

import { exists } from "./process.ts";

/** What a case needs to run. */
export interface CorpusSetup {
  /** The case's own directory (empty, removed by the caller). */
  readonly dir: string;
  /** A port a listener of the caller holds for the whole case. */
  readonly busyPort: number;
  /** A port nobody listens on. */
  readonly freePort: number;
}

/** One case, set up. */
export interface CorpusRun {
  /** The command to start. */
  readonly command: string[];
  /** A text in the argv of every process the case starts. */
  readonly marker: string;
  /** For a healthy case: whether the service answers now. */
  readonly answers?: () => Promise<boolean>;
}

/** One start of the corpus. */
export interface CorpusCase {
  /** What it is, for a table. */
  readonly name: string;
  /** Whether the program is to start (true) or fail during its start-up. */
  readonly healthy: boolean;
  /** The program it needs, to say it skipped when missing. */
  readonly needs: string;
  /** How and when it fails, measured (the table says so). */
  readonly why: string;
  /** What its output says when it fails, when it says anything. */
  readonly says?: RegExp;
  /** Make its files and its command. */
  setup(s: CorpusSetup): CorpusRun;
}

/** The first of these paths that exists, or the name alone (PATH decides). */
function program(name: string, ...paths: string[]): string {
  return paths.find(exists) ?? name;
}

/** The system's Python (a pyenv shim in PATH costs a second of its own). */
export const PYTHON: string = program("python3", "/usr/bin/python3");
/** nginx, which Debian installs in /usr/sbin. */
export const NGINX: string = program("nginx", "/usr/sbin/nginx");
/** redis-server. */
export const REDIS: string = program("redis-server", "/usr/bin/redis-server");

/** Whether a program can be run here. */
export function available(name: string): boolean {
  const path = name === "python3"
    ? PYTHON
    : name === "nginx"
    ? NGINX
    : name === "redis-server"
    ? REDIS
    : name;
  if (path.startsWith("/")) return exists(path);
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Whether something accepts a TCP connection on 127.0.0.1:port. */
export async function answersOn(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** An nginx configuration with its files in `dir` and these `listen` ports. */
function nginxConf(dir: string, name: string, ports: readonly number[]): string {
  Deno.mkdirSync(`${dir}/logs`, { recursive: true });
  const temps = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((t) => `${t}_temp_path ${dir}/${t};`).join(" ");
  const listen = ports.map((p) => `listen 127.0.0.1:${p};`).join(" ");
  const path = `${dir}/${name}`;
  Deno.writeTextFileSync(
    path,
    `pid ${dir}/nginx.pid;\nerror_log ${dir}/logs/error.log;\nworker_processes 1;\n` +
      `events { worker_connections 64; }\n` +
      `http { access_log off; ${temps} server { ${listen} location / { return 200 "ok"; } } }\n`,
  );
  return path;
}

/** redis-server's arguments for a server on `port` keeping its files in `dir`. */
function redisArgs(dir: string, port: number): string[] {
  return ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", ""];
}

/** Python's http.server on `port`, serving `dir`. */
function pythonServer(dir: string, port: number): string[] {
  return [PYTHON, "-m", "http.server", String(port), "--bind", "127.0.0.1", "-d", dir];
}

/** redis-server on `port` that forks away, naming its child in its own pid file. */
function redisDaemon(dir: string, port: number): string[] {
  return [REDIS, "--daemonize", "yes", ...redisArgs(dir, port), "--pidfile", `${dir}/redis.pid`];
}

/** `deno run` of a Deno HTTP server on `port` that runs `after` once it listens. */
function denoServerCommand(dir: string, port: number, after: string): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    "--allow-net",
    denoServer(dir, after),
    String(port),
  ];
}

/** A Deno HTTP server on `port` that runs `after` once it listens. */
function denoServer(dir: string, after: string): string {
  const path = `${dir}/server.ts`;
  Deno.writeTextFileSync(
    path,
    `Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.args[0]), onListen() {} }, ` +
      `() => new Response("ok"));\n${after}\n`,
  );
  return path;
}

/** The corpus, failing starts first. */
export const CORPUS: readonly CorpusCase[] = [
  {
    name: "python3 -m http.server, port busy",
    healthy: false,
    needs: "python3",
    why: "exits 1 (EADDRINUSE) once Python has loaded",
    says: /Address already in use/,
    setup: ({ dir, busyPort }) => ({ command: pythonServer(dir, busyPort), marker: dir }),
  },
  {
    name: "deno run of a missing module",
    healthy: false,
    needs: "deno",
    why: "exits 1 (module not found) once Deno has started",
    says: /Module not found/,
    setup: ({ dir }) => ({
      command: [Deno.execPath(), "run", "--quiet", `${dir}/missing.ts`],
      marker: dir,
    }),
  },
  {
    name: "nginx, bad configuration",
    healthy: false,
    needs: "nginx",
    why: "exits 1 when it parses the file",
    says: /\[emerg\].*unexpected "}"/,
    setup: ({ dir, freePort }) => {
      Deno.mkdirSync(`${dir}/logs`);
      Deno.writeTextFileSync(
        `${dir}/bad.conf`,
        `events {}\nhttp { server { listen 127.0.0.1:${freePort}; return 200 } }\n`,
      );
      return { command: [NGINX, "-p", dir, "-c", `${dir}/bad.conf`], marker: dir };
    },
  },
  {
    name: "redis-server, bad configuration",
    healthy: false,
    needs: "redis-server",
    why: "exits 1 when it reads the file",
    says: /Bad directive/,
    setup: ({ dir, freePort }) => {
      Deno.writeTextFileSync(
        `${dir}/redis.conf`,
        `port ${freePort}\nbind 127.0.0.1\ndir ${dir}\nsave ""\nno-such-directive yes\n`,
      );
      return { command: [REDIS, `${dir}/redis.conf`], marker: dir };
    },
  },
  {
    name: "nginx, port busy",
    healthy: false,
    needs: "nginx",
    why: "retries the bind 5 times, 500 ms apart, then exits 1",
    says: /still could not bind/,
    setup: ({ dir, busyPort }) => ({
      command: [NGINX, "-p", dir, "-c", nginxConf(dir, "busy.conf", [busyPort])],
      marker: dir,
    }),
  },
  {
    name: "nginx, one of two ports busy",
    healthy: false,
    needs: "nginx",
    why: "listens on the free port, retries the busy one for 2.5 s, then exits 1",
    says: /still could not bind/,
    setup: ({ dir, busyPort, freePort }) => ({
      command: [NGINX, "-p", dir, "-c", nginxConf(dir, "two.conf", [freePort, busyPort])],
      marker: dir,
    }),
  },
  {
    name: "sh -c 'sleep 0.6; exit 4'",
    healthy: false,
    needs: "sh",
    why: "exits 4 after 0.6 s",
    setup: ({ dir }) => ({
      command: ["sh", "-c", `sleep 0.6; exit 4; : ${dir}`],
      marker: dir,
    }),
  },
  {
    name: "redis-server, corrupt dump.rdb",
    healthy: false,
    needs: "redis-server",
    why: "listens, then exits 1 when it loads the file (about 15 ms later)",
    says: /RDB ERROR DETECTED|Unrecoverable error/,
    setup: ({ dir, freePort }) => {
      Deno.writeFileSync(
        `${dir}/dump.rdb`,
        new TextEncoder().encode("REDIS0009\xfa\x09redis-ver\x057.0.0garbage"),
      );
      return { command: [REDIS, ...redisArgs(dir, freePort)], marker: `127.0.0.1:${freePort}` };
    },
  },
  {
    name: "Deno server, fails 300 ms after it listens",
    healthy: false,
    needs: "deno",
    why: "listens and waits in its event loop, then throws (its database is down)",
    says: /cannot reach the database/,
    setup: ({ dir, freePort }) => ({
      command: denoServerCommand(
        dir,
        freePort,
        `await new Promise((r) => setTimeout(r, 300));\nthrow new Error("cannot reach the database");`,
      ),
      marker: dir,
    }),
  },
  {
    name: "redis-server --daemonize yes, port busy",
    healthy: false,
    needs: "redis-server",
    why: "forks away (the parent exits 0), then the child exits 1 (EADDRINUSE)",
    setup: ({ dir, busyPort }) => ({
      command: redisDaemon(dir, busyPort),
      marker: `127.0.0.1:${busyPort}`,
    }),
  },
  {
    name: "python3 -m http.server",
    healthy: true,
    needs: "python3",
    why: "listens once Python has loaded",
    setup: ({ dir, freePort }) => ({
      command: pythonServer(dir, freePort),
      marker: dir,
      answers: () => answersOn(freePort),
    }),
  },
  {
    name: "Deno server",
    healthy: true,
    needs: "deno",
    why: "listens once Deno has loaded",
    setup: ({ dir, freePort }) => ({
      command: denoServerCommand(dir, freePort, ""),
      marker: dir,
      answers: () => answersOn(freePort),
    }),
  },
  {
    name: "nginx (forks away)",
    healthy: true,
    needs: "nginx",
    why: "binds, forks away, and its workers wait for connections",
    setup: ({ dir, freePort }) => ({
      command: [NGINX, "-p", dir, "-c", nginxConf(dir, "good.conf", [freePort])],
      marker: dir,
      answers: () => answersOn(freePort),
    }),
  },
  {
    name: "redis-server",
    healthy: true,
    needs: "redis-server",
    why: "listens, then waits for connections",
    setup: ({ dir, freePort }) => ({
      command: [REDIS, ...redisArgs(dir, freePort)],
      marker: `127.0.0.1:${freePort}`,
      answers: () => answersOn(freePort),
    }),
  },
  {
    name: "redis-server --daemonize yes",
    healthy: true,
    needs: "redis-server",
    why: "forks away first, then its child listens",
    setup: ({ dir, freePort }) => ({
      command: redisDaemon(dir, freePort),
      marker: `127.0.0.1:${freePort}`,
      answers: () => answersOn(freePort),
    }),
  },
  {
    name: "sleep 3600 (no socket)",
    healthy: true,
    needs: "sleep",
    why: "runs, and serves nothing",
    setup: () => {
      // sleep adds its arguments up: a fraction of a second of its own names it.
      const marker = `0.${String(Math.floor(Math.random() * 1e9)).padStart(9, "0")}`;
      return { command: ["sleep", "3600", marker], marker };
    },
  },
];

/** A listener on a port of the kernel's choice, to make that port busy. */
export function busyListener(): Deno.Listener & { readonly port: number } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return Object.assign(l, { port: (l.addr as Deno.NetAddr).port });
}
