import assert from "node:assert/strict";
import { AlreadyRunningError, PidFile, SystemError } from "../mod.ts";
import { isLockedBySyscalls, parsePid, probeSync } from "../src/lock/pidfile.ts";
import { locksOnFile } from "../src/lock/holders.ts";
import { replaceBeside } from "../src/lock/replace.ts";
import { C, close, fstat, kill, open, pipe, reap } from "../src/ffi/mod.ts";
import { spawn } from "../src/launch/spawn.ts";
import {
  denoArgs,
  eventually,
  isAlive,
  killQuietly,
  LineChild,
  processState,
  tempDir,
} from "../testing/process.ts";

const HOLDER = new URL("./fixtures/pidfile_holder.ts", import.meta.url).pathname;

function holder(mode: string, path: string): LineChild {
  const [cmd, args] = denoArgs(HOLDER, mode, path);
  return new LineChild(cmd, args);
}

async function rejectsWith<T extends Error>(
  p: Promise<unknown>,
  cls: new (...a: never[]) => T,
): Promise<T> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err}`);
    return err;
  }
  assert.fail(`expected ${cls.name}, but it succeeded`);
}

Deno.test("PidFile.acquire() writes our pid and a newline, and release() empties the file", async () => {
  await using dir = await tempDir();
  const path = dir.join("a.pid");
  const lock = await PidFile.acquire(path, { mode: 0o640 });
  assert.equal(lock.pid, Deno.pid);
  assert.equal(lock.path, path);
  assert.ok(lock.fd > 2);
  assert.equal(await Deno.readTextFile(path), `${Deno.pid}\n`);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640 & ~Deno.umask());
  assert.deepEqual(await PidFile.probe(path), { state: "running", pid: Deno.pid });
  lock.release();
  lock.release(); // idempotent
  assert.equal(lock.fd, -1);
  assert.equal(await Deno.readTextFile(path), "");
  assert.deepEqual(await PidFile.probe(path), { state: "absent" });
});

Deno.test("PidFile.writePid() replaces a longer pid without leaving digits behind", async () => {
  await using dir = await tempDir();
  const path = dir.join("w.pid");
  using lock = await PidFile.acquire(path, { pid: 4_000_000 });
  assert.equal(await Deno.readTextFile(path), "4000000\n");
  lock.writePid(42);
  assert.equal(await Deno.readTextFile(path), "42\n");
  assert.equal(lock.pid, 42);
  assert.throws(() => lock.writePid(0), RangeError);
  assert.throws(() => lock.writePid(-3), RangeError);
});

Deno.test("PidFile.acquire() reports the holder's pid when another Deno process holds the lock", async () => {
  await using dir = await tempDir();
  const path = dir.join("held.pid");
  await using child = holder("hold", path);
  assert.equal(await child.line(), `locked ${child.pid}`);
  const err = await rejectsWith(PidFile.acquire(path), AlreadyRunningError);
  assert.equal(err.pid, child.pid);
  assert.equal(err.path, path);
  assert.match(err.message, new RegExp(`already running \\(pid ${child.pid}\\)`));
  assert.deepEqual(await PidFile.probe(path), { state: "running", pid: child.pid });
  assert.equal((await child.finish()).code, 0);
  assert.equal(await Deno.readTextFile(path), "", "the holder's release empties the file");
});

Deno.test("PidFile.acquire() sees a lock taken by flock(1)", async () => {
  await using dir = await tempDir();
  const path = dir.join("flock.pid");
  const sh = new Deno.Command("flock", {
    args: ["-n", path, "sh", "-c", `echo $$ > "${path}"; echo ready; exec sleep 30`],
    stdout: "piped",
  }).spawn();
  let sleeper = 0;
  try {
    const reader = sh.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.equal((await reader.read()).value?.trim(), "ready");
    reader.releaseLock();
    sleeper = Number((await Deno.readTextFile(path)).trim());
    const err = await rejectsWith(PidFile.acquire(path), AlreadyRunningError);
    assert.equal(err.pid, sleeper);
    assert.equal((await PidFile.probe(path)).state, "running");
  } finally {
    // flock(1) runs the command in a child of its own: end both.
    if (sleeper) killQuietly(sleeper);
    killQuietly(sh.pid);
    await sh.stdout.cancel().catch(() => {});
    await sh.status;
  }
});

Deno.test("the lock is free once the holder is killed, before anyone reaps it", async () => {
  await using dir = await tempDir();
  const path = dir.join("killed.pid");
  // posix_spawn directly: Deno's own child handling would reap the zombie behind our back.
  const [r, w] = pipe();
  const pid = spawn({
    path: Deno.execPath(),
    argv: denoArgs(HOLDER, "hold", path).flat(),
    env: Deno.env.toObject(),
    fds: { 0: r, 2: 2 },
  });
  close(r);
  try {
    await eventually(
      "the holder to lock",
      async () => (await PidFile.probe(path)).state === "running",
    );
    kill(pid, 9);
    assert.equal(await PidFile.waitForRelease(path, { timeout: 10_000 }), true);
    // The kernel frees the lock while the process is still exiting; it turns
    // into a zombie a moment later and stays one, since nobody reaps it yet.
    await eventually("the holder to become a zombie", () => processState(pid) === "Z", 5000);
    assert.deepEqual(await PidFile.probe(path), { state: "stale", pid });
    using again = await PidFile.acquire(path);
    assert.equal(again.pid, Deno.pid);
  } finally {
    close(w);
    kill(pid, 9);
    await eventually("the holder to be reaped", () => reap(pid) !== undefined, 5000);
  }
});

Deno.test("a child spawned with the descriptor keeps the lock after its parent exits", async () => {
  await using dir = await tempDir();
  const path = dir.join("inherit.pid");
  const child = holder("inherit", path);
  const line = await child.line();
  assert.equal((await child.finish()).code, 0);
  const sleeper = Number(/^child (\d+)$/.exec(line ?? "")?.[1]);
  assert.ok(sleeper > 0, `bad line ${line}`);
  try {
    assert.ok(isAlive(sleeper));
    assert.deepEqual(await PidFile.probe(path), { state: "running", pid: sleeper });
    const err = await rejectsWith(PidFile.acquire(path), AlreadyRunningError);
    assert.equal(err.pid, sleeper);
    killQuietly(sleeper);
    assert.equal(await PidFile.waitForRelease(path, { timeout: 10_000 }), true);
  } finally {
    killQuietly(sleeper);
  }
});

Deno.test("twenty processes racing PidFile.acquire(): exactly one wins", async () => {
  await using dir = await tempDir();
  const path = dir.join("race.pid");
  const racers = Array.from({ length: 20 }, () => holder("race", path));
  try {
    const lines = await Promise.all(racers.map((r) => r.line(60_000)));
    const won = lines.filter((l) => l?.startsWith("won "));
    const lost = lines.filter((l) => l?.startsWith("lost "));
    assert.equal(won.length, 1, `winners: ${won.join(", ")}`);
    assert.equal(lost.length, 19);
    const winner = won[0]!.slice(4);
    for (const l of lost) assert.ok(l === `lost ${winner}` || l === "lost none", l);
    assert.equal((await Deno.readTextFile(path)).trim(), winner);
  } finally {
    await Promise.all(racers.map((r) => r.finish()));
  }
});

Deno.test("PidFile.acquire({ wait }) gets the lock when the holder exits, and gives up at the deadline", async () => {
  await using dir = await tempDir();
  const path = dir.join("wait.pid");
  const child = holder("hold", path);
  await child.line();
  const started = performance.now();
  await rejectsWith(PidFile.acquire(path, { wait: 200 }), AlreadyRunningError);
  assert.ok(performance.now() - started >= 190);
  setTimeout(() => child.finish(), 100);
  using lock = await PidFile.acquire(path, { wait: 15_000 });
  assert.equal(lock.pid, Deno.pid);
  await child.process.status;
});

Deno.test("PidFile.waitForRelease() returns false on timeout and true for a missing file", async () => {
  await using dir = await tempDir();
  const path = dir.join("held.pid");
  using _lock = await PidFile.acquire(path);
  assert.equal(await PidFile.waitForRelease(path, { timeout: 50 }), false);
  assert.equal(await PidFile.waitForRelease(dir.join("none.pid"), { timeout: 50 }), true);
});

Deno.test("PidFile.probe() reads POSIX and OFD locks of another process as running", async () => {
  await using dir = await tempDir();
  for (const kind of ["posix", "ofd"]) {
    const path = dir.join(`${kind}.pid`);
    const script = `
import fcntl, os, struct, sys
fd = os.open(${JSON.stringify(path)}, os.O_RDWR | os.O_CREAT, 0o644)
if sys.argv[1] == "posix":
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
else:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
os.ftruncate(fd, 0)
os.write(fd, b"%d\\n" % os.getpid())
print("locked", flush=True)
sys.stdin.read()
`;
    await using py = new LineChild("python3", ["-c", script, kind]);
    assert.equal(await py.line(), "locked");
    assert.deepEqual(await PidFile.probe(path), { state: "running", pid: py.pid }, kind);
    const fd = open(path, C.O_RDONLY | C.O_CLOEXEC);
    try {
      assert.equal(isLockedBySyscalls(fd, path), true, `${kind} by syscalls`);
    } finally {
      close(fd);
    }
    await py.finish();
    assert.deepEqual(await PidFile.probe(path), { state: "stale", pid: py.pid }, kind);
  }
});

Deno.test("the syscall fallback of the probe sees flock locks and free files", async () => {
  await using dir = await tempDir();
  const path = dir.join("f.pid");
  const lock = await PidFile.acquire(path);
  const fd = open(path, C.O_RDONLY | C.O_CLOEXEC);
  try {
    assert.equal(isLockedBySyscalls(fd, path), true);
    lock.release();
    assert.equal(isLockedBySyscalls(fd, path), false);
  } finally {
    close(fd);
  }
});

Deno.test("PidFile.probe() sees a held lock while /proc/locks is long and churning", async () => {
  // /proc/locks is read a page at a time and records can slip between reads
  // (60 of 3000 probes missed here before the probe looked at fdinfo first).
  await using dir = await tempDir();
  const others = [];
  for (let i = 0; i < 600; i++) others.push(await PidFile.acquire(dir.join(`other${i}.pid`)));
  const [cmd, args] = denoArgs(
    new URL("./fixtures/lock_churn.ts", import.meta.url).pathname,
    dir.path,
  );
  await using churn = new LineChild(cmd, args);
  try {
    assert.equal(await churn.line(), "churning");
    await using child = holder("hold", dir.join("held.pid"));
    assert.equal(await child.line(), `locked ${child.pid}`);
    let misses = 0;
    for (let i = 0; i < 1000; i++) {
      if ((await PidFile.probe(dir.join("held.pid"))).state !== "running") misses++;
    }
    assert.equal(misses, 0);
  } finally {
    for (const l of others) l.release();
  }
});

Deno.test("locksOnFile() matches the device and inode, skips waiters, and reads kind and mode", () => {
  const st = { dev: 0xfe00n, ino: 2146400n };
  const held = "1: FLOCK  ADVISORY  WRITE 2297 fe:00:2146400 0 EOF\n" +
    "2: POSIX  ADVISORY  READ 31 fe:00:2146400 0 EOF\n3: OFDLCK ADVISORY  READ -1 fe:00:2146400 0 EOF\n";
  const waiting =
    "1: FLOCK  ADVISORY  WRITE 1 fe:00:1 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 2297 fe:00:2146400 0 EOF\n";
  assert.deepEqual(locksOnFile(st, held), [
    { kind: "flock", write: true, pid: 2297 },
    { kind: "posix", write: false, pid: 31 },
    { kind: "ofd", write: false, pid: -1 },
  ]);
  assert.deepEqual(locksOnFile(st, waiting), []);
  assert.deepEqual(locksOnFile({ dev: st.dev, ino: 214640n }, held), []);
  assert.deepEqual(locksOnFile(st, ""), []);
});

Deno.test("PidFile.probe() reads garbage, empty, huge and odd pid files as stale or absent", async () => {
  await using dir = await tempDir();
  const cases: [string | Uint8Array, string][] = [
    ["", "absent"],
    ["\n", "absent"],
    ["abc\n", "absent"],
    ["-5\n", "absent"],
    ["0\n", "absent"],
    ["99999999999\n", "absent"],
    ["12 34\n", "absent"],
    ["1\n", "stale"],
    ["  4242  \n", "stale"],
    ["x".repeat(1 << 20), "absent"],
    [new Uint8Array([0xff, 0x00, 0x31, 0x0a]), "absent"],
  ];
  for (const [content, state] of cases) {
    const path = dir.join("g.pid");
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
    const found = await PidFile.probe(path);
    assert.equal(found.state, state, JSON.stringify(content).slice(0, 40));
  }
  assert.deepEqual(await PidFile.probe(dir.join("missing.pid")), { state: "absent" });
  assert.deepEqual(await PidFile.probe(dir.join("no/such/dir.pid")), { state: "absent" });
  assert.equal(parsePid(new TextEncoder().encode("4242\n")), 4242);
});

Deno.test("PidFile.probe() never creates the file", async () => {
  await using dir = await tempDir();
  const path = dir.join("never.pid");
  await PidFile.probe(path);
  probeSync(path);
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
});

Deno.test("PidFile.acquire() refuses a symlink and creates nothing where it points", async () => {
  await using dir = await tempDir();
  const target = dir.join("target.pid");
  const link = dir.join("link.pid");
  await Deno.symlink(target, link);
  const err = await rejectsWith(PidFile.acquire(link), SystemError);
  assert.equal(err.code, "ELOOP");
  assert.match(err.message, /symbolic link/);
  assert.match(err.message, /link\.pid/);
  await assert.rejects(Deno.lstat(target), Deno.errors.NotFound);
  await assert.rejects(PidFile.probe(link), SystemError);
});

Deno.test("PidFile.acquire() refuses a directory, a FIFO and a device", async () => {
  await using dir = await tempDir();
  const asDir = dir.join("dir.pid");
  await Deno.mkdir(asDir);
  assert.equal((await rejectsWith(PidFile.acquire(asDir), SystemError)).code, "EISDIR");
  const fifo = dir.join("fifo.pid");
  const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.equal(mk.code, 0);
  const err = await rejectsWith(PidFile.acquire(fifo), SystemError);
  assert.match(err.message, /is a FIFO, not a regular file/);
  await assert.rejects(PidFile.probe(fifo), /FIFO/);
  const dev = await rejectsWith(PidFile.acquire("/dev/null"), SystemError);
  assert.match(dev.message, /character device/);
});

Deno.test("PidFile.acquire() names a missing directory and creates nothing", async () => {
  await using dir = await tempDir();
  const path = dir.join("missing/dir/x.pid");
  const err = await rejectsWith(PidFile.acquire(path), SystemError);
  assert.equal(err.code, "ENOENT");
  assert.equal(err.syscall, "open");
  assert.equal(err.path, path);
  assert.match(err.message, /directory does not exist/);
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

Deno.test({
  name: "as root, PidFile.acquire() refuses a pid file owned by another user",
  ignore: Deno.uid() !== 0,
  async fn() {
    await using dir = await tempDir();
    const path = dir.join("owned.pid");
    await Deno.writeTextFile(path, "");
    await Deno.chown(path, 65534, 65534);
    const err = await rejectsWith(PidFile.acquire(path), SystemError);
    assert.equal(err.code, "EPERM");
    assert.match(err.message, /owned by uid 65534/);
    await Deno.chown(path, 0, 0);
    await Deno.chmod(path, 0o666);
    assert.match(
      (await rejectsWith(PidFile.acquire(path), SystemError)).message,
      /writable by every user/,
    );
  },
});

Deno.test("PidFile.acquire() in an unwritable directory fails with EACCES", async () => {
  await using dir = await tempDir();
  await Deno.chmod(dir.path, 0o755);
  const path = dir.join("x.pid");
  const script = `
import { PidFile } from ${JSON.stringify(new URL("../src/lock/pidfile.ts", import.meta.url).href)};
try { await PidFile.acquire(${JSON.stringify(path)}); console.log("acquired"); }
catch (e) { console.log(e.code, e.message); }`;
  const asRoot = Deno.uid() === 0;
  const [cmd, args] = asRoot
    ? ["setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      Deno.execPath(),
      "eval",
      script,
    ]]
    : [Deno.execPath(), ["eval", script]];
  if (!asRoot) await Deno.chmod(dir.path, 0o555);
  const out = await new Deno.Command(cmd, {
    args,
    env: {
      DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`,
      DENO_NO_UPDATE_CHECK: "1",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.match(
    text,
    /^EACCES cannot open pid file ".*x\.pid": permission denied$/,
    new TextDecoder().decode(out.stderr),
  );
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
});

Deno.test("PidFile.adopt() takes over a locked descriptor and refuses another file", async () => {
  await using dir = await tempDir();
  const path = dir.join("adopt.pid");
  const lock = await PidFile.acquire(path, { pid: 1 });
  const adopted = PidFile.adopt(lock.fd, path);
  assert.equal(adopted.pid, Deno.pid);
  assert.equal(await Deno.readTextFile(path), `${Deno.pid}\n`);
  const other = dir.join("other.pid");
  await Deno.writeTextFile(other, "");
  assert.throws(() => PidFile.adopt(lock.fd, other), /is not the pid file/);
  adopted.release();
  assert.equal(await Deno.readTextFile(path), "");
});

Deno.test("a released lock can be taken again at once by another process", async () => {
  await using dir = await tempDir();
  const path = dir.join("again.pid");
  (await PidFile.acquire(path)).release();
  await using child = holder("hold", path);
  assert.equal(await child.line(), `locked ${child.pid}`);
  await eventually("holder exit", async () => {
    await child.finish();
    return true;
  });
  assert.equal(await PidFile.waitForRelease(path, { timeout: 5000 }), true);
});

Deno.test("fstat through FFI agrees with Deno.stat", async () => {
  await using dir = await tempDir();
  const path = dir.join("s");
  await Deno.writeTextFile(path, "12345");
  const fd = open(path, C.O_RDONLY | C.O_CLOEXEC);
  try {
    const st = fstat(fd, path);
    const ds = await Deno.stat(path);
    assert.equal(st.ino, BigInt(ds.ino!));
    assert.equal(st.size, 5n);
    assert.equal(st.mode, ds.mode);
    assert.equal(st.uid, ds.uid);
  } finally {
    close(fd);
  }
});

Deno.test("PidFile.acquire() and the probe refuse a pid file with a second name, leaving the other untouched", async () => {
  await using dir = await tempDir();
  const other = dir.join("precious");
  const path = dir.join("x.pid");
  Deno.writeTextFileSync(other, "keep me\n");
  Deno.linkSync(other, path);
  await assert.rejects(PidFile.acquire(path), (e: unknown) => {
    assert.ok(e instanceof SystemError, String(e));
    assert.equal(e.code, "EMLINK");
    assert.match(e.message, /has 2 hard links/);
    return true;
  });
  assert.throws(() => probeSync(path), /has 2 hard links/);
  assert.throws(() => PidFile.empty(path), /has 2 hard links/);
  assert.equal(Deno.readTextFileSync(other), "keep me\n");
});

Deno.test("PidFile.empty() truncates a file nobody holds, and leaves a held one alone", async () => {
  await using dir = await tempDir();
  const path = dir.join("x.pid");
  assert.equal(PidFile.empty(path), true, "no file: nothing to empty");
  assert.throws(() => Deno.statSync(path), Deno.errors.NotFound, "and none created");
  {
    using lock = await PidFile.acquire(path);
    assert.equal(PidFile.empty(path), false);
    assert.equal(Deno.readTextFileSync(path), `${lock.pid}\n`);
    lock.detach(); // leave the pid in the file, as a SIGKILLed daemon would
  }
  assert.equal(PidFile.empty(path), true);
  assert.equal(Deno.readTextFileSync(path), "");
});

Deno.test("a replace is not kept from its temp file by names another user made first beside the file", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/d.pid`;
    Deno.writeTextFileSync(path, "1\n");
    // What another user could plant in a sticky directory under the names a
    // replace made from its pid alone: directories that cannot be removed.
    for (const name of [`${path}.${Deno.pid}.new`, `${path}.record.${Deno.pid}.tmp`]) {
      Deno.mkdirSync(name);
      Deno.writeTextFileSync(`${name}/x`, "");
    }
    using lock = PidFile.replace(path);
    assert.equal(Deno.readTextFileSync(path).trim(), String(lock.pid));
    replaceBeside(`${path}.record`, "{}", "record", 0o600);
    assert.equal(Deno.readTextFileSync(`${path}.record`), "{}");
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["d.pid", `d.pid.${Deno.pid}.new`, "d.pid.record", `d.pid.record.${Deno.pid}.tmp`],
      "no temp file left behind",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
