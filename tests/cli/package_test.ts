/**
 * The single file `dist/singleton-run` (`deno task package`) on a machine
 * with no Deno: every run goes through a new mount namespace in which every
 * installed Deno is hidden (this test's own included), as root and as
 * `nobody`. It unpacks its runtime once into a cache directory that it
 * checks on every run, and runs start, status, stop, `--supervise`,
 * `--user nobody` and `--lock` on etcd and PostgreSQL from there.
 */

import assert from "node:assert/strict";
import { Etcd, installed, Postgres } from "../../testing/cluster.ts";
import { exists, isAlive, listPids, statOf } from "../../testing/process.ts";
import {
  assertCleanError,
  newestSource,
  readPid,
  ROOT,
  Sandbox,
  sr,
  STARTS_FINE,
  type Variant,
  waitFor,
} from "./harness.ts";

const PACKAGE = `${ROOT}dist/singleton-run`;
const NOBODY = 65534;
const AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"];
const SUPPORTED = Deno.uid() === 0 && installed("unshare") && installed("setpriv");
const SKIPPED = "skipped: the single file's test hides Deno in a mount namespace: it needs root";

/** The package, built by `deno task package` when it is missing or older than the sources. */
let built: Promise<void> | undefined;
function ensurePackage(): Promise<void> {
  built ??= (async () => {
    const tools = [...Deno.readDirSync(`${ROOT}tools`)].map((e) =>
      Deno.statSync(`${ROOT}tools/${e.name}`).mtime!
    );
    const newest = [newestSource(), ...tools].reduce((a, b) => (a > b ? a : b));
    if (exists(PACKAGE) && Deno.statSync(PACKAGE).mtime! >= newest) return;
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "package"],
      cwd: ROOT,
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    assert(r.success, "deno task package failed");
  })();
  return built;
}

/** Single quotes for sh. */
function q(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Every Deno this machine could run: `deno` on PATH, this test's own, and
 * every executable named deno on the root file system (npm's global one,
 * npx's cache, ~/.deno), except under `keep` (the package's own unpacked
 * copies, temporary files). Found once: the search reads the whole disk.
 */
let denos: string[] | undefined;
function installedDenos(keep: readonly string[]): string[] {
  if (denos) return denos;
  const found = new Set<string>([Deno.execPath(), Deno.realPathSync(Deno.execPath())]);
  const which = new Deno.Command("sh", { args: ["-c", "which -a deno"], stdout: "piped" })
    .outputSync();
  for (const p of new TextDecoder().decode(which.stdout).split("\n").filter(Boolean)) {
    found.add(p);
    found.add(Deno.realPathSync(p));
  }
  const prune = ["/proc", "/sys", "/dev", "/run", ...keep].flatMap((p) => ["-path", p, "-o"]);
  const find = new Deno.Command("find", {
    args: [
      "/",
      "-xdev",
      "(",
      ...prune.slice(0, -1),
      ")",
      "-prune",
      "-o",
      "-name",
      "deno",
      "-type",
      "f",
      "-perm",
      "-u+x",
      "-print",
    ],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  for (const p of new TextDecoder().decode(find.stdout).split("\n").filter(Boolean)) found.add(p);
  denos = [...found].filter((p) => Deno.statSync(p).isFile);
  return denos;
}

/**
 * The sh script that hides every Deno in a new mount namespace, then execs
 * its arguments: a directory of Deno's own (npm's `deno` package, npx's
 * copy, ~/.deno/bin) gets an empty tmpfs over it; a binary in a shared `bin`
 * directory gets an empty, non-executable file bound over it.
 */
function hidingScript(denos: readonly string[], empty: string): string {
  const hidden: string[] = [];
  const steps: string[] = [];
  const targets = denos.map((d) => {
    const dir = d.slice(0, d.lastIndexOf("/"));
    return /\/(s?bin)$/.test(dir) && !dir.includes("/.deno/")
      ? { path: d, file: true }
      : { path: dir, file: false };
  }).sort((a, b) => a.path.length - b.path.length);
  for (const t of targets) {
    if (hidden.some((h) => t.path === h || t.path.startsWith(`${h}/`))) continue;
    assert(!PACKAGE.startsWith(`${t.path}/`), `hiding ${t.path} would hide the package`);
    hidden.push(t.path);
    steps.push(
      t.file
        ? `mount --bind ${q(empty)} ${q(t.path)}`
        : `mount -t tmpfs -o size=4k,mode=0755 none ${q(t.path)}`,
    );
  }
  return `set -e; ${steps.join("; ")}; exec "$@"`;
}

/** Where a test keeps its caches and pid files; the hidden-Deno variants, as root and as nobody. */
class World implements AsyncDisposable {
  readonly base: string;
  readonly denos: string[];
  readonly #prefix: string[];

  private constructor(base: string, denos: string[]) {
    this.base = base;
    this.denos = denos;
    Deno.writeTextFileSync(`${base}/empty`, "");
    this.#prefix = [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      hidingScript(denos, `${base}/empty`),
      "sh",
    ];
  }

  /** A world: `base` is root's, 0755 (root's cache lives in it), with a nobody-owned `nobody/`. */
  static async create(): Promise<World> {
    await ensurePackage();
    const base = await Deno.makeTempDir({ prefix: "singleton-run-package-" });
    await Deno.chmod(base, 0o755);
    await Deno.mkdir(`${base}/nobody`, { mode: 0o700 });
    await Deno.chown(`${base}/nobody`, NOBODY, NOBODY);
    return new World(base, installedDenos(["/var/cache/singleton-run", "/tmp"]));
  }

  /** Root's cache, and the environment that names it. */
  get rootCache(): string {
    return `${this.base}/cache`;
  }

  /** The package as root, in a namespace without Deno. */
  get root(): Variant {
    return { name: "package", cmd: [...this.#prefix, PACKAGE] };
  }

  /** The package as nobody, in a namespace without Deno. */
  get nobody(): Variant {
    return { name: "package as nobody", cmd: [...this.#prefix, ...AS_NOBODY, PACKAGE] };
  }

  /** A command run in the namespace without Deno, as root. */
  hidden(argv: readonly string[]): Variant {
    return { name: "hidden", cmd: [...this.#prefix, ...argv] };
  }

  /** The environment of root's runs: its cache here, not in /var/cache. */
  get rootEnv(): Record<string, string> {
    return { SINGLETON_RUN_CACHE: this.rootCache };
  }

  /** The environment of nobody's runs: its cache under its own directory here. */
  get nobodyEnv(): Record<string, string> {
    return { HOME: "/nonexistent", XDG_CACHE_HOME: `${this.base}/nobody/cache` };
  }

  /** Run the package as root. */
  asRoot(args: readonly string[], env: Record<string, string> = {}) {
    return sr(this.root, args, { env: { ...this.rootEnv, ...env } });
  }

  /** Run the package as nobody. */
  asNobody(args: readonly string[]) {
    return sr(this.nobody, args, { env: this.nobodyEnv });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.base, { recursive: true }).catch(() => {});
  }
}

/** The one unpacked entry under a cache directory. */
function entryOf(cache: string): string {
  const entries = [...Deno.readDirSync(cache)].filter((e) => e.isDirectory);
  assert.equal(entries.length, 1, `one entry in ${cache}`);
  return `${cache}/${entries[0]!.name}`;
}

/** The uid a process runs as. */
function uidOf(pid: number): number {
  return Number(/^Uid:\s+([0-9]+)/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]);
}

/** A sandbox whose directory nobody may write (its pid files). */
async function nobodySandbox(): Promise<Sandbox> {
  const sb = await Sandbox.create();
  await Deno.chown(sb.dir, NOBODY, NOBODY);
  return sb;
}

type Run = (args: readonly string[]) => ReturnType<typeof sr>;

/** start, a refused second start, status, stop: the pid file names the daemon, then is empty. */
async function startStatusStop(run: Run, sb: Sandbox, extra: string[], uid: number): Promise<void> {
  const p = sb.pidfile;
  const started = await run([
    "start",
    ...STARTS_FINE,
    ...extra,
    "--pidfile",
    p,
    "--",
    "sleep",
    "600",
  ]);
  assert.equal(started.code, 0, started.stderr);
  const pid = Number(started.stdout);
  sb.track(pid);
  assert.equal(readPid(p), pid);
  assert.equal(uidOf(pid), uid, "the daemon's user");
  assertCleanError(
    await run(["start", ...extra, "--pidfile", p, "--", "sleep", "600"]),
    3,
    new RegExp(`already running \\(pid ${pid}\\)`),
  );
  const status = await run(["status", "--pidfile", p]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, new RegExp(`^running \\(pid ${pid}`));
  const stopped = await run(["stop", "--pidfile", p]);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert(!isAlive(pid), "the daemon is gone");
  assert.equal((await run(["status", "--pidfile", p])).code, 3);
}

Deno.test({
  name: "the single file runs with no Deno installed, as root and as nobody, from caches it makes",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    const none = await sr(
      world.hidden([
        "sh",
        "-c",
        [
          'for d in "$@"; do "$d" --version 2>/dev/null && exit 1; done',
          "deno --version 2>/dev/null && exit 1",
          "exit 0",
        ].join("; "),
        "sh",
        ...world.denos,
      ]),
      [],
    );
    assert.equal(none.code, 0, `a Deno ran in the namespace: ${none.stdout}`);
    assert.equal(none.stdout, "");

    const root = await world.asRoot(["--version"]);
    assert.equal(root.code, 0, root.stderr);
    assert.equal(root.stdout, "singleton-run 0.1.0\n");
    assert.equal(root.stderr, "");
    const entry = entryOf(world.rootCache);
    const mode = (p: string) => Deno.statSync(p).mode! & 0o7777;
    assert.equal(mode(world.rootCache), 0o755, "root's cache: open to the users --user makes");
    assert.equal(mode(entry), 0o755);
    assert.equal(mode(`${entry}/deno`), 0o555);
    assert.equal(mode(`${entry}/singleton-run.js`), 0o444);
    assert.equal(Deno.statSync(`${entry}/deno`).uid, 0);

    const nobody = await world.asNobody(["--version"]);
    assert.equal(nobody.code, 0, nobody.stderr);
    assert.equal(nobody.stdout, "singleton-run 0.1.0\n");
    const own = `${world.base}/nobody/cache/singleton-run`;
    assert.equal(mode(own), 0o700, "a user's cache is theirs alone");
    assert.equal(Deno.statSync(entryOf(own)).uid, NOBODY);
    assert.equal(Deno.statSync(`${entryOf(own)}/deno`).uid, NOBODY);
  },
});

Deno.test({
  name:
    "the single file as root: start, status, stop; --supervise; --user nobody; --supervise --user nobody",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    const run: Run = (args) => world.asRoot(args);
    for (
      const [extra, uid] of [[[], 0], [["--supervise"], 0], [["--user", "nobody"], NOBODY]] as const
    ) {
      await using sb = await Sandbox.create();
      await startStatusStop(run, sb, [...extra], uid);
    }
    // The supervisor stays root (only COMMAND becomes nobody) and runs the unpacked runtime again.
    await using sb = await Sandbox.create();
    await Deno.chmod(sb.dir, 0o755);
    const options = ["--supervise", "--user", "nobody", "--pidfile", sb.pidfile];
    const started = await run(["start", ...STARTS_FINE, ...options, "--", "sleep", "600"]);
    assert.equal(started.code, 0, started.stderr);
    const supervisor = Number(started.stdout);
    sb.track(supervisor);
    assert.equal(uidOf(supervisor), 0);
    const children = () => listPids().filter((p) => statOf(p)?.ppid === supervisor);
    await waitFor(() => children().some((c) => uidOf(c) === NOBODY), 10_000, "COMMAND as nobody");
    const exe = Deno.readLinkSync(`/proc/${supervisor}/exe`);
    assert(exe.startsWith(world.rootCache), `the supervisor runs the unpacked runtime (${exe})`);
    const status = await run(["status", "--pidfile", sb.pidfile]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal((await run(["stop", "--pidfile", sb.pidfile])).code, 0);
    assert(!isAlive(supervisor));
  },
});

Deno.test({
  name: "the single file as nobody: start, status, stop; --supervise",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    const run: Run = (args) => world.asNobody(args);
    for (const extra of [[], ["--supervise"]]) {
      await using sb = await nobodySandbox();
      await startStatusStop(run, sb, extra, NOBODY);
    }
  },
});

/** start --lock, status --lock, stop, as root, as root with --user nobody, and as nobody. */
async function lockCases(world: World, url: (name: string) => string): Promise<void> {
  const cases: [string, Run, string[], number][] = [
    ["root", (a) => world.asRoot(a), [], 0],
    ["user", (a) => world.asRoot(a), ["--user", "nobody"], NOBODY],
    ["nobody", (a) => world.asNobody(a), [], NOBODY],
  ];
  for (const [name, run, extra, uid] of cases) {
    // Root keeps its pid files where only root can write (it refuses others); a keeper that
    // is nobody opens the pid file again, so its directory is open to nobody.
    await using sb = name === "nobody" ? await nobodySandbox() : await Sandbox.create();
    if (name === "user") await Deno.chmod(sb.dir, 0o755);
    const lock = url(`package-${name}`);
    await startStatusStop(run, sb, ["--lock", lock, ...extra], uid);
    const free = await run(["status", "--lock", lock]);
    assert.equal(
      free.code,
      3,
      `${name}: the lock is free after stop: ${free.stdout}${free.stderr}`,
    );
  }
}

const SERVERS = [
  { name: "etcd", here: installed("etcd"), start: () => Etcd.start() },
  { name: "PostgreSQL", here: Postgres.bin() !== undefined, start: () => Postgres.start() },
];
for (const server of SERVERS) {
  Deno.test({
    name:
      `the single file takes a lock on ${server.name} as root, with --user nobody, and as nobody`,
    ignore: !SUPPORTED || !server.here,
    async fn() {
      await using world = await World.create();
      await using cluster = await server.start();
      await lockCases(world, (name) => cluster.url(name));
    },
  });
}

Deno.test({
  name:
    "first runs at once on an empty cache: one unpacks, the others wait, all run; the command inherits no descriptor on the cache",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    await using sb = await Sandbox.create();
    const runs = await Promise.all(
      [1, 2, 3, 4, 5].map((i) =>
        world.asRoot([
          "run",
          "--pidfile",
          sb.path(`${i}.pid`),
          "--",
          "sh",
          "-c",
          "ls -l /proc/$$/fd",
        ])
      ),
    );
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      assert(!r.stdout.includes(world.rootCache), `a descriptor on the cache: ${r.stdout}`);
    }
    assert.deepEqual(
      [...Deno.readDirSync(entryOf(world.rootCache))].map((e) => e.name).sort(),
      ["deno", "import_map.json", "postgres.js", "singleton-run.js", "stamp"],
      "nothing left of the unpacking",
    );
  },
});

Deno.test({
  name:
    "a cache directory another user owns or can write, or closed to the users --user makes, is refused in one line, nothing run",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    const cases: [string, (dir: string) => Promise<void>, RegExp][] = [
      ["owned by nobody", (d) => Deno.chown(d, NOBODY, NOBODY), /belongs to uid 65534/],
      ["group-writable", (d) => Deno.chmod(d, 0o775), /other users can write/],
      ["under a directory anyone can write", async (d) => {
        await Deno.chmod(`${d}/..`, 0o777);
      }, /other users can write/],
      ["under a directory closed to others", async (d) => {
        await Deno.chmod(`${d}/..`, 0o700);
      }, /closed to the users --user makes/],
    ];
    for (const [what, spoil, message] of cases) {
      const parent = `${world.base}/${crypto.randomUUID()}`;
      await Deno.mkdir(`${parent}/cache`, { recursive: true });
      await Deno.chmod(parent, 0o755);
      await Deno.chmod(`${parent}/cache`, 0o755);
      await spoil(`${parent}/cache`);
      await using sb = await Sandbox.create();
      const r = await world.asRoot(["start", "--pidfile", sb.pidfile, "--", "sleep", "600"], {
        SINGLETON_RUN_CACHE: `${parent}/cache`,
      });
      assertCleanError(r, 1, message);
      assert.match(r.stderr, /refusing the cache directory/, what);
      assert.deepEqual(sb.list(), [], `${what}: nothing ran`);
      assert.deepEqual([...Deno.readDirSync(`${parent}/cache`)], [], `${what}: nothing unpacked`);
    }
    // A link to a directory of nobody's is judged by where it leads.
    await Deno.mkdir(`${world.base}/nobody/theirs`);
    await Deno.chown(`${world.base}/nobody/theirs`, NOBODY, NOBODY);
    await Deno.chmod(`${world.base}/nobody`, 0o755);
    await Deno.symlink(`${world.base}/nobody/theirs`, `${world.base}/link`);
    const linked = await world.asRoot(["--version"], { SINGLETON_RUN_CACHE: `${world.base}/link` });
    assertCleanError(linked, 1, /belongs to uid 65534/);
  },
});

Deno.test({
  name:
    "a file changed in the cache never runs: the next run unpacks again (replaced, written in place, chmodded)",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    assert.equal((await world.asRoot(["--version"])).code, 0);
    const entry = entryOf(world.rootCache);
    const marker = `${world.base}/planted-ran`;
    const planted = `Deno.writeTextFileSync(${JSON.stringify(marker)}, "ran");\n`;
    const changes: [string, () => void][] = [
      ["replaced", () => {
        Deno.writeTextFileSync(`${entry}/new.js`, planted);
        Deno.renameSync(`${entry}/new.js`, `${entry}/singleton-run.js`);
      }],
      ["written in place", () => {
        Deno.chmodSync(`${entry}/singleton-run.js`, 0o644);
        Deno.writeTextFileSync(`${entry}/singleton-run.js`, planted);
        Deno.chmodSync(`${entry}/singleton-run.js`, 0o444);
      }],
      ["chmodded", () => Deno.chmodSync(`${entry}/deno`, 0o777)],
    ];
    for (const [what, change] of changes) {
      change();
      const r = await world.asRoot(["--version"]);
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
      assert.equal(r.stdout, "singleton-run 0.1.0\n", what);
      assert(!exists(marker), `${what}: the planted file ran`);
      assert.notEqual(Deno.readTextFileSync(`${entry}/singleton-run.js`), planted, what);
      assert.equal(Deno.statSync(`${entry}/deno`).mode! & 0o7777, 0o555, what);
    }
  },
});

Deno.test({
  name:
    "the cache removed under a running supervisor: it keeps running; status and stop unpack again",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    await using sb = await Sandbox.create();
    const daemon = ["--supervise", "--pidfile", sb.pidfile, "--", "sleep", "600"];
    const started = await world.asRoot(["start", ...STARTS_FINE, ...daemon]);
    assert.equal(started.code, 0, started.stderr);
    const supervisor = Number(started.stdout);
    sb.track(supervisor);
    await Deno.remove(world.rootCache, { recursive: true });
    assert(isAlive(supervisor));
    const status = await world.asRoot(["status", "--pidfile", sb.pidfile]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`^running \\(pid ${supervisor}`));
    assert.equal((await world.asRoot(["stop", "--pidfile", sb.pidfile])).code, 0);
    await waitFor(() => !isAlive(supervisor), 5000, "the supervisor to end");
  },
});

Deno.test({
  name:
    "default caches: root's in /var/cache/singleton-run (root's, 0755); a user without a home gets /tmp/singleton-run-UID (0700)",
  ignore: !SUPPORTED,
  async fn() {
    await using world = await World.create();
    const created: string[] = [];
    try {
      for (const dir of ["/var/cache/singleton-run", `/tmp/singleton-run-${NOBODY}`]) {
        if (!exists(dir)) created.push(dir);
      }
      const root = await sr(world.root, ["--version"]);
      assert.equal(root.code, 0, root.stderr);
      const varCache = Deno.statSync("/var/cache/singleton-run");
      assert.equal(varCache.uid, 0);
      assert.equal(varCache.mode! & 0o022, 0, "writable by root alone");
      const nobody = await sr(world.nobody, ["--version"], { env: { HOME: "/nonexistent" } });
      assert.equal(nobody.code, 0, nobody.stderr);
      const tmp = Deno.statSync(`/tmp/singleton-run-${NOBODY}`);
      assert.equal(tmp.uid, NOBODY);
      assert.equal(tmp.mode! & 0o777, 0o700);
    } finally {
      for (const dir of created) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

if (!SUPPORTED) console.log(SKIPPED);
