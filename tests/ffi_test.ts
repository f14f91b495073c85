import assert from "node:assert/strict";
import {
  C,
  close,
  cstr,
  CStringArray,
  currentPlatform,
  describeErrno,
  errno,
  errnoName,
  getCloexec,
  getrlimit,
  libc,
  listDirectory,
  open,
  parseSignal,
  pidfdOpen,
  pidfdSendSignal,
  pipe,
  pollWait,
  read,
  readSmallFile,
  setCloexec,
  setrlimit,
  signalName,
  sockaddrUnix,
  SystemError,
  UnsupportedPlatformError,
  writeAll,
} from "../src/ffi/mod.ts";
import { resolveCommand, spawn } from "../src/launch/spawn.ts";
import { selfCommand } from "../src/launch/internal.ts";
import { killQuietly, procStat, tempDir } from "../testing/process.ts";

Deno.test("SystemError carries errno, its name, the call and the path", () => {
  let caught: unknown;
  try {
    open("/no/such/dir/x", C.O_RDONLY);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SystemError);
  assert.equal(caught.errno, 2);
  assert.equal(caught.code, "ENOENT");
  assert.equal(caught.syscall, "open");
  assert.equal(caught.path, "/no/such/dir/x");
  assert.equal(caught.message, 'open "/no/such/dir/x": no such file or directory');
});

Deno.test("errno is read right after the failing call", () => {
  for (let i = 0; i < 200; i++) {
    assert.equal(libc().close(-1), -1);
    assert.equal(errno(), 9);
    assert.equal(libc().open(cstr("/"), C.O_WRONLY, 0), -1);
    assert.equal(errno(), 21);
  }
  assert.equal(errnoName(11), "EAGAIN");
  assert.equal(errnoName(13), "EACCES");
  assert.equal(errnoName(9999), "E9999");
  assert.equal(describeErrno(13), "permission denied");
});

Deno.test("C strings are sized by bytes and refuse NUL", () => {
  assert.deepEqual([...cstr("é")], [0xc3, 0xa9, 0]);
  assert.throws(() => cstr("a\0b", "path"), /path must not contain a NUL byte/);
  assert.throws(() => new CStringArray(["ok", "bad\0"]), TypeError);
  const arr = new CStringArray(["a", "bc"]);
  assert.equal(arr.buffer.length, 3);
  assert.equal(arr.buffer[2], 0n);
  assert.equal(
    new Deno.UnsafePointerView(Deno.UnsafePointer.create(arr.buffer[1]!)!).getCString(),
    "bc",
  );
});

Deno.test("an unsupported platform says so plainly", () => {
  assert.throws(
    () => currentPlatform("darwin", "aarch64"),
    (e: unknown) =>
      e instanceof UnsupportedPlatformError &&
      /does not support darwin on aarch64 yet/.test(e.message),
  );
  assert.equal(currentPlatform("linux", "aarch64").O_NOFOLLOW, 0o100000);
  assert.equal(currentPlatform("linux", "x86_64").O_NOFOLLOW, 0o400000);
});

Deno.test("signals parse by name, SIG name and number", () => {
  assert.equal(parseSignal("TERM"), 15);
  assert.equal(parseSignal("sigterm"), 15);
  assert.equal(parseSignal("9"), 9);
  assert.equal(parseSignal("34"), 34);
  assert.equal(parseSignal("0"), undefined);
  assert.equal(parseSignal("65"), undefined);
  assert.equal(parseSignal("BOGUS"), undefined);
  assert.equal(parseSignal("toString"), undefined);
  assert.equal(signalName(1), "SIGHUP");
  assert.equal(signalName(40), "SIG40");
});

Deno.test("close-on-exec can be read and changed", () => {
  const [r, w] = pipe();
  try {
    assert.equal(getCloexec(r), true);
    setCloexec(r, false);
    assert.equal(getCloexec(r), false);
    setCloexec(r, true);
    assert.equal(getCloexec(r), true);
  } finally {
    close(r);
    close(w);
  }
});

Deno.test("a pipe carries bytes and a nonblocking poll wakes for them", async () => {
  const [r, w] = pipe();
  try {
    const waiting = pollWait([{ fd: r, events: C.POLLIN }], 5000);
    setTimeout(() => writeAll(w, new TextEncoder().encode("hi\n")), 20);
    const [revents] = await waiting;
    assert.ok((revents! & C.POLLIN) !== 0);
    assert.equal(new TextDecoder().decode(read(r, 16)), "hi\n");
  } finally {
    close(r);
    close(w);
  }
});

Deno.test("spawn() starts a session leader with only the descriptors asked for", async () => {
  await using dir = await tempDir();
  const out = dir.join("out");
  const outFd = open(out, C.O_WRONLY | C.O_CREAT | C.O_APPEND | C.O_CLOEXEC, 0o600);
  const [r, w] = pipe();
  const pid = spawn({
    path: resolveCommand("sh"),
    argv: ["sh", "-c", 'echo "$X $(pwd) $(umask)"; ls /proc/self/fd; read line'],
    env: { X: "env-ok", PATH: "/usr/bin:/bin" },
    cwd: "/",
    umask: 0o027,
    newSession: true,
    fds: { 1: outFd, 2: outFd, 0: r },
  });
  close(outFd);
  try {
    const [, , pgrp, session] = procStat(pid);
    assert.equal(Number(session), pid, "session leader");
    assert.equal(Number(pgrp), pid);
    await new Promise((res) => setTimeout(res, 300));
    const text = await Deno.readTextFile(out);
    const [first, ...fds] = text.trim().split("\n");
    assert.equal(first, "env-ok / 0027");
    // 0, 1, 2 and the one ls opened for the listing; nothing else.
    assert.deepEqual(fds.map(Number).sort(), [0, 1, 2, 3]);
  } finally {
    close(w);
    killQuietly(pid);
    await new Promise((res) => setTimeout(res, 50));
    libc().waitpid(pid, new Int32Array(1), 0);
    close(r);
  }
});

Deno.test("pidfds signal the process they name and wake when it exits", async () => {
  const pid = spawn({ path: resolveCommand("sleep"), argv: ["sleep", "30"], env: {} });
  const pidfd = pidfdOpen(pid)!;
  try {
    assert.equal(pidfdSendSignal(pidfd, 0), true);
    const waiting = pollWait([{ fd: pidfd, events: C.POLLIN }], 5000);
    assert.equal(pidfdSendSignal(pidfd, 15), true);
    const [revents] = await waiting;
    assert.ok(revents! & C.POLLIN);
    const status = new Int32Array(1);
    assert.equal(libc().waitpid(pid, status, 0), pid);
    assert.equal(status[0]! & 0x7f, 15);
    assert.equal(pidfdSendSignal(pidfd, 0), false, "gone: ESRCH, not a recycled pid");
  } finally {
    close(pidfd);
  }
  assert.equal(pidfdOpen(pid), undefined);
});

Deno.test("spawn() and resolveCommand() explain what cannot run", () => {
  assert.throws(
    () => resolveCommand("no-such-command-xyz"),
    /command not found: "no-such-command-xyz"/,
  );
  assert.throws(() => resolveCommand("/etc/passwd"), /not an executable file/);
  assert.throws(() => resolveCommand("/tmp"), /is a directory/);
  assert.throws(
    () => spawn({ path: "/bin/true", argv: ["true"], env: {}, cwd: "/no/such/dir" }),
    /no directory "\/no\/such\/dir"/,
  );
  assert.throws(() => spawn({ path: "/bin/true", argv: ["tr\0ue"], env: {} }), TypeError);
  assert.throws(() => spawn({ path: "/bin/true", argv: ["true"], env: { "A=B": "c" } }), TypeError);
});

Deno.test("selfCommand() re-runs this program with its flags", () => {
  const self = selfCommand();
  assert.equal(self[0], Deno.execPath());
  assert.ok(self.length >= 1);
});

Deno.test("errno is captured when the call fails, whatever runs before it is read", () => {
  assert.throws(
    () => listDirectory("/no/such/dir"),
    (e: unknown) => e instanceof SystemError && e.code === "ENOENT",
  );
  assert.equal(libc().close(-1), -1);
  // Allocation (which may start a garbage collection) and a first-use dlopen in between.
  const junk = Array.from({ length: 20_000 }, (_, i) => ({ i, s: `x${i}` }));
  assert.equal(junk.length, 20_000);
  libc().getppid();
  assert.equal(errno(), 9);
  assert.ok(listDirectory("/proc/self/fd").includes("0"));
  assert.match(readSmallFile("/proc/self/status"), /^Name:/);
});

Deno.test("a lock held elsewhere always reads as held: under signals, GC and calls on other threads", async () => {
  await using dir = await tempDir();
  const fixture = new URL("./fixtures/flock_under_signals.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fixture, dir.path],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000), // a stuck runtime is a failure, not a hung suite
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const { calls, failures, failed } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(calls > 100, `only ${calls} tries`);
  assert.deepEqual(failures, [], `${failed} of ${calls} calls misread`);
});

Deno.test("spawn() names a script's missing #! interpreter and a descriptor above the open-file limit", async () => {
  await using dir = await tempDir();
  const script = dir.join("s.sh");
  Deno.writeTextFileSync(script, "#!/nonexistent/interp -x\necho hi\n", { mode: 0o755 });
  assert.throws(
    () => spawn({ path: script, argv: [script], env: {}, cwd: "/" }),
    /cannot run ".*s\.sh": its interpreter "\/nonexistent\/interp" \(the #! line\) does not exist/,
  );
  const [soft, hard] = getrlimit(C.RLIMIT_NOFILE);
  const [r, w] = pipe();
  setrlimit(C.RLIMIT_NOFILE, 64n, hard);
  try {
    assert.throws(
      () => spawn({ path: "/bin/true", argv: ["true"], env: {}, fds: { 1023: w } }),
      /cannot give the program descriptor 1023: the open-file limit \(ulimit -n 64\) must be at least 1028/,
    );
  } finally {
    setrlimit(C.RLIMIT_NOFILE, soft, hard);
    close(r);
    close(w);
  }
});

Deno.test("sockaddrUnix() is the one sockaddr_un builder: paths with their NUL, @abstract names, a length check", () => {
  const path = sockaddrUnix("/run/x.sock");
  assert.equal(path.len, 2 + "/run/x.sock".length + 1);
  assert.equal(new TextDecoder().decode(path.addr.subarray(2, path.len - 1)), "/run/x.sock");
  const abstract = sockaddrUnix("@name");
  assert.equal(abstract.len, 3 + 4);
  assert.deepEqual([...abstract.addr.subarray(2, 7)], [0, 110, 97, 109, 101]);
  assert.doesNotThrow(() => sockaddrUnix("/" + "a".repeat(106)));
  assert.throws(
    () => sockaddrUnix("/" + "a".repeat(107), "sendto"),
    (e: unknown) => e instanceof SystemError && e.code === "ENAMETOOLONG" && e.syscall === "sendto",
  );
  assert.throws(() => sockaddrUnix("@" + "a".repeat(108)), /longer than 107 bytes/);
  assert.throws(() => sockaddrUnix("/run/a\0b"), /NUL/);
});
