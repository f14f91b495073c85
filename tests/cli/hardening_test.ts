/**
 * The files and locks around the daemon, as somebody else may have arranged
 * them: a pid file with a second name, another user's lock on it, a program
 * that forks into a new session, a stop that must not write its own pid,
 * paths that collide, a pid-file directory cleared by a reboot, and a Ctrl-C
 * the moment the pid file names the daemon. Attacks by another user run as
 * root against `nobody` and say `skipped: ...` otherwise.
 */

import assert from "node:assert/strict";
import {
  alive,
  assertCleanError,
  findProcesses,
  locked,
  marker,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  srSpawn,
  startFine,
  STARTS_FINE,
  waitFor,
} from "./harness.ts";
import { exists } from "../../testing/process.ts";
import { CAN_BE_NOBODY, NOBODY_UID, srAsNobody } from "./as_nobody.ts";

const AS_ROOT = Deno.uid() === 0;
const NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"];

/**
 * For an attack by another user: a sandbox that user can reach (0755), or,
 * when not root, undefined after saying the test is skipped.
 */
async function rootSandbox(why: string): Promise<Sandbox | undefined> {
  if (!AS_ROOT) {
    console.log(`skipped: ${why}`);
    return undefined;
  }
  const sb = await Sandbox.create();
  await Deno.chmod(sb.dir, 0o755);
  return sb;
}

/** A directory in the sandbox that anyone may write, sticky, as /tmp. */
function stickyDir(sb: Sandbox, name: string): string {
  const dir = sb.path(name);
  Deno.mkdirSync(dir);
  Deno.chmodSync(dir, 0o1777);
  return dir;
}

/**
 * A start of a sleep on `pidfile` that must be refused as root with one line
 * matching `why` (a daemon it started after all is stopped with the sandbox).
 */
async function assertStartRefused(sb: Sandbox, pidfile: string, why: RegExp): Promise<void> {
  const r = await sr(SOURCE, [
    "start",
    ...STARTS_FINE,
    "--pidfile",
    pidfile,
    "--",
    "sleep",
    "1000",
  ]);
  if (r.code === 0) sb.track(Number(r.stdout));
  assertCleanError(r, 1, why);
}

Deno.test("--guard or --output naming the pid file, or an empty --guard, is a usage error that creates nothing", async () => {
  await using sb = await Sandbox.create();
  const p = sb.pidfile;
  for (
    const args of [
      ["start", "--pidfile", p, "--guard", p, "--", "sleep", "1"],
      ["start", "--pidfile", p, "--output", p, "--", "sleep", "1"],
      ["start", "--pidfile", p, "--guard", "", "--", "sleep", "1"],
      ["start", "--pidfile", p, "--guard", `${sb.dir}/./d.pid`, "--", "sleep", "1"],
      ["stop", "--pidfile", p, "--guard", p],
      ["run", "--pidfile", p, "--guard", p, "--", "true"],
    ]
  ) {
    const r = await sr(SOURCE, args);
    assertCleanError(r, 2);
    assert.deepEqual(sb.list(), [], `${args.join(" ")} left files behind`);
  }
});

Deno.test("--guard or --output naming the supervisor's state file or its temp file is a usage error", async () => {
  await using sb = await Sandbox.create();
  const p = sb.pidfile;
  for (
    const args of [
      ["start", "--supervise", "--pidfile", p, "--output", `${p}.state`, "--", "sleep", "1"],
      [
        "start",
        "--supervise",
        "--pidfile",
        p,
        "--output",
        `${p}.state.123.tmp`,
        "--",
        "sleep",
        "1",
      ],
      ["start", "--pidfile", p, "--guard", `${p}.state`, "--", "sleep", "1"],
      ["start", "--pidfile", p, "--guard", `${sb.dir}/./d.pid.state.9.tmp`, "--", "sleep", "1"],
      ["stop", "--pidfile", p, "--guard", `${p}.state`],
    ]
  ) {
    const r = await sr(SOURCE, args);
    assertCleanError(r, 2, /is the supervisor's state file/);
    assert.deepEqual(sb.list(), [], `${args.join(" ")} left files behind`);
  }
});

Deno.test("stop --oknodo, stop and reload with no pid-file directory: not running (0, 3, 3), nothing created", async () => {
  await using sb = await Sandbox.create();
  const p = `${sb.dir}/gone/d.pid`;
  assert.equal((await sr(SOURCE, ["stop", "--oknodo", "--pidfile", p])).code, 0);
  assertCleanError(await sr(SOURCE, ["stop", "--pidfile", p]), 3);
  assertCleanError(await sr(SOURCE, ["reload", "--pidfile", p]), 3);
  assertCleanError(await sr(SOURCE, ["signal", "--pidfile", p, "USR1"]), 3);
  assert.deepEqual(sb.list(), []);
});

Deno.test("stop empties the pid file without ever writing its own pid into it", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const start = await startFine(SOURCE, sb.pidfile, ["--", "sleep", m]);
  assert.equal(start.code, 0, start.stderr);
  sb.track(Number(start.stdout.trim()));
  const trace = sb.path("trace");
  const stop = await new Deno.Command("strace", {
    args: [
      "-f",
      "-e",
      "trace=pwrite64,write",
      "-o",
      trace,
      ...SOURCE.cmd,
      "stop",
      "--pidfile",
      sb.pidfile,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(stop.code, 0, new TextDecoder().decode(stop.stderr));
  const writes = Deno.readTextFileSync(trace).split("\n").filter((l) =>
    /pwrite64\(\d+, "\d+\\n/.test(l)
  );
  assert.deepEqual(writes, [], "stop wrote a pid into a file");
  assert.equal(Deno.readTextFileSync(sb.pidfile), "");
  assert.deepEqual(findProcesses(["sleep", m]), []);
});

Deno.test("a pid file with a second name is refused by start, stop and status; the other file is untouched", async () => {
  await using sb = await Sandbox.create();
  const other = sb.path("precious");
  Deno.writeTextFileSync(other, "keep me\n");
  Deno.linkSync(other, sb.pidfile);
  const m = marker();
  assertCleanError(
    await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", "sleep", m]),
    1,
    /hard links/,
  );
  assert.deepEqual(findProcesses(["sleep", m]), [], "nothing started");
  assertCleanError(await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]), 1, /hard links/);
  const status = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(status.code, 4, status.stderr);
  assert.equal(Deno.readTextFileSync(other), "keep me\n");
});

Deno.test("a start whose program forks into a new session and fails leaves nothing behind", async () => {
  await using sb = await Sandbox.create();
  for (let i = 0; i < 5; i++) {
    const m = marker();
    const r = await sr(SOURCE, [
      "start",
      "--pidfile",
      sb.pidfile,
      "--ready-after",
      "300",
      "--",
      "bash",
      "-c",
      `setsid sleep ${m} & exit 1`,
    ]);
    for (const pid of findProcesses(["sleep", m])) sb.track(pid);
    assertCleanError(r, 1, /ended before it was ready \(exit status 1\)/);
    assert.deepEqual(findProcesses(["sleep", m]), [], `try ${i}: the forked program runs on`);
    assert.equal(locked(sb.pidfile), false, `try ${i}: the lock is still held`);
  }
});

Deno.test("a program that forks into a new session and exits 0 is followed: the pid file names its child", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--",
    "bash",
    "-c",
    `setsid sleep ${m} & exit 0`,
  ]);
  const [sleep] = findProcesses(["sleep", m]);
  if (sleep !== undefined) sb.track(sleep);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), String(sleep), "start prints the forked child's pid");
  assert.equal(Deno.readTextFileSync(sb.pidfile), `${sleep}\n`);
  const status = await sr(SOURCE, ["status", "--pidfile", sb.pidfile]);
  assert.equal(status.code, 0, status.stderr);
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
  assert.deepEqual(findProcesses(["sleep", m]), []);
  assert.equal(locked(sb.pidfile), false);
});

Deno.test("a start whose program moves a child to a group of its own, closes the lock and fails leaves nothing behind", async () => {
  await using sb = await Sandbox.create();
  const m = marker();
  // The child leaves the daemon's process group and closes the lock's descriptor.
  const child = `setpgrp(0, 0); exec("sleep", "${m}")`;
  const r = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--ready-after",
    "1000",
    "--",
    "bash",
    "-c",
    `perl -e '${child}' 3>&- & sleep 0.2; exit 1`,
  ]);
  for (const pid of findProcesses(["sleep", m])) sb.track(pid);
  assertCleanError(r, 1, /ended before it was ready/);
  assert.deepEqual(findProcesses(["sleep", m]), [], "the child in its own group runs on");
});

Deno.test("the guard file is created readable and writable by its owner only", async () => {
  await using sb = await Sandbox.create();
  Deno.writeTextFileSync(sb.pidfile, ""); // without a pid file, stop creates nothing at all
  const r = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(r.code, 3, r.stderr);
  assert.equal(Deno.statSync(`${sb.pidfile}.lock`).mode! & 0o777, 0o600);
});

Deno.test("a guard left open to others is made 0600; another user's hold on it is named at once, root's at the timeout", async () => {
  await using sb = await rootSandbox("needs root to act as nobody");
  if (!sb) return;
  const guard = `${sb.pidfile}.lock`;
  Deno.writeTextFileSync(sb.pidfile, ""); // a stop looks at the guard only when there is one
  Deno.writeTextFileSync(guard, "");
  Deno.chmodSync(guard, 0o644);
  const m = marker();
  // Opened while it was still 0644: the fchmod cannot take this descriptor back.
  const attacker = new Deno.Command(NOBODY[0]!, {
    args: [...NOBODY.slice(1), "flock", "-s", guard, "sleep", m],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(() => findProcesses(["sleep", m]).length === 1, 5000, "the attacker's lock");
    await waitFor(() => locked(guard), 5000, "the lock");
    const began = performance.now();
    const r = await sr(SOURCE, ["stop", "--guard-timeout", "20", "--pidfile", sb.pidfile]);
    assertCleanError(
      r,
      1,
      new RegExp(`guard file ".*d\\.pid\\.lock" is locked by pid ${attacker.pid} of user "nobody"`),
    );
    assert.ok(performance.now() - began < 10_000, "it did not wait out the guard timeout");
    assert.equal(Deno.statSync(guard).mode! & 0o7777, 0o600, "the guard was made 0600");
  } finally {
    attacker.kill("SIGKILL");
    await attacker.status;
    for (const pid of findProcesses(["sleep", m])) Deno.kill(pid, "SIGKILL");
  }
  const holder = new Deno.Command("flock", {
    args: ["-x", guard, "sleep", m],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(() => locked(guard), 5000, "root's lock");
    const r = await sr(SOURCE, ["stop", "--guard-timeout", "0.3", "--pidfile", sb.pidfile]);
    assertCleanError(
      r,
      1,
      new RegExp(
        `another singleton-run holds the guard ".*" \\(pid ${holder.pid} of user "root"\\)`,
      ),
    );
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
    for (const pid of findProcesses(["sleep", m])) Deno.kill(pid, "SIGKILL");
  }
});

Deno.test("as root, another user's lock on the pid file is not the daemon: never signalled, never running, never in the way", async (t) => {
  await using sb = await rootSandbox("needs root to act as nobody");
  if (!sb) return;
  Deno.writeTextFileSync(sb.pidfile, "");
  await Deno.chmod(sb.pidfile, 0o644);
  const m = marker();
  const attacker = new Deno.Command(NOBODY[0]!, {
    args: [...NOBODY.slice(1), "flock", "-s", sb.pidfile, "sleep", m],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(() => findProcesses(["sleep", m]).length === 1, 5000, "the attacker's lock");
    const sleeper = findProcesses(["sleep", m])[0]!;
    await waitFor(() => locked(sb.pidfile), 5000, "the lock");
    await t.step("status: not running (3), the holder listed as foreign", async () => {
      const r = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
      assert.equal(r.code, 3, r.stdout + r.stderr);
      // flock(1) and its sleep both hold the one open file description.
      const foreign = JSON.parse(r.stdout).foreignHolders;
      assert.ok(
        foreign.some((h: { pid: number; uid: number; kind: string }) =>
          h.pid === sleeper && h.uid === 65534 && h.kind === "flock-read"
        ),
        r.stdout,
      );
    });
    for (
      const args of [["signal", "--pidfile", sb.pidfile, "USR1"], ["stop", "--pidfile", sb.pidfile]]
    ) {
      await t.step(`${args[0]}: not running (3), nothing signalled`, async () => {
        assertCleanError(await sr(SOURCE, args), 3, /not running/);
      });
    }
    await t.step("start: takes its lock on a fresh file, saying so once", async () => {
      const before = Deno.statSync(sb.pidfile).ino;
      const r = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", "sleep", marker()]);
      assert.equal(r.code, 0, r.stderr);
      const daemon = Number(r.stdout);
      try {
        assert.match(
          r.stderr,
          /was locked by another user \(pid \d+ of user "nobody" \(uid 65534\).*\), not by the daemon: took the lock on a fresh file/,
        );
        assert.notEqual(Deno.statSync(sb.pidfile).ino, before);
        assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
      } finally {
        if (alive(daemon)) Deno.kill(daemon, "SIGKILL");
      }
    });
    assert.deepEqual(
      findProcesses(["sleep", m]),
      [sleeper],
      "the attacker's process was left alone",
    );
  } finally {
    attacker.kill("SIGKILL");
    await attacker.status;
    for (const pid of findProcesses(["sleep", m])) Deno.kill(pid, "SIGKILL");
  }
});

Deno.test("as root, a setuid-root program another user runs holding the lock is that user's, not the daemon", async () => {
  await using sb = await rootSandbox("needs root to act as nobody");
  if (!sb) return;
  Deno.writeTextFileSync(sb.pidfile, "");
  await Deno.chmod(sb.pidfile, 0o644);
  // A setuid-root program: effective uid 0, real uid nobody's.
  const suid = sb.path("suid-sleep");
  Deno.copyFileSync("/bin/sleep", suid);
  Deno.chownSync(suid, 0, 0);
  Deno.chmodSync(suid, 0o4755);
  const m = marker();
  const attacker = new Deno.Command(NOBODY[0]!, {
    args: [
      ...NOBODY.slice(1),
      "bash",
      "-c",
      `exec 9<"$1"; flock -s 9; exec "$2" ${m}`,
      "bash",
      sb.pidfile,
      suid,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(() => findProcesses([suid, m]).length === 1, 5000, "the setuid program");
    const holder = findProcesses([suid, m])[0]!;
    await waitFor(() => locked(sb.pidfile), 5000, "the lock");
    const r = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).foreignHolders?.map((h: { pid: number }) => h.pid), [
      holder,
    ]);
    assertCleanError(await sr(SOURCE, ["signal", "--pidfile", sb.pidfile, "USR1"]), 3);
    const started = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--", "sleep", marker()]);
    assert.equal(started.code, 0, started.stderr);
    assert.match(
      started.stderr,
      new RegExp(`locked by another user \\(pid ${holder} of user "nobody"`),
    );
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
    assert.deepEqual(findProcesses([suid, m]), [holder], "the setuid program was left alone");
  } finally {
    attacker.kill("SIGKILL");
    for (const pid of findProcesses([suid, m])) Deno.kill(pid, "SIGKILL");
    await attacker.status;
  }
});

Deno.test("a signal the moment the pid file names the daemon: start fails and leaves no daemon", async () => {
  await using sb = await Sandbox.create();
  for (let i = 0; i < 8; i++) {
    const m = marker();
    const signal = (["SIGINT", "SIGTERM", "SIGHUP"] as const)[i % 3]!;
    const child = srSpawn(SOURCE, [
      "start",
      "--pidfile",
      sb.pidfile,
      "--ready-after",
      "5000",
      "--",
      "sleep",
      m,
    ]);
    await waitFor(
      () => {
        const pid = readPid(sb.pidfile);
        return pid !== undefined && pid !== child.pid;
      },
      10_000,
      "the pid file to name the daemon",
    );
    child.kill(signal);
    const out = await child.output();
    for (const pid of findProcesses(["sleep", m])) sb.track(pid);
    assert.notEqual(out.code, 0, `try ${i}: start succeeded`);
    assert.deepEqual(findProcesses(["sleep", m]), [], `try ${i} (${signal}): a daemon is left`);
    assert.equal(locked(sb.pidfile), false, `try ${i}: the lock is still held`);
  }
});

Deno.test("as root, a pid file, guard or output in a directory another user can write is refused, naming it", async () => {
  await using sb = await rootSandbox("needs root (the check is root's)");
  if (!sb) return;
  const theirs = sb.path("theirs");
  Deno.mkdirSync(theirs);
  Deno.chownSync(theirs, 65534, 65534);
  const m = marker();
  for (
    const args of [
      ["start", "--pidfile", `${theirs}/d.pid`, "--", "sleep", m],
      ["start", "--pidfile", sb.pidfile, "--guard", `${theirs}/g`, "--", "sleep", m],
      ["start", "--pidfile", sb.pidfile, "--output", `${theirs}/out`, "--", "sleep", m],
      ["stop", "--pidfile", `${theirs}/d.pid`],
    ]
  ) {
    const r = await sr(SOURCE, args);
    assertCleanError(r, 1, new RegExp(`its directory "${theirs}" can be written by user "nobody"`));
  }
  assert.deepEqual([...Deno.readDirSync(theirs)], [], "nothing created there");
  assert.deepEqual(findProcesses(["sleep", m]), []);
  assert.deepEqual(sb.list(), ["theirs"]);

  const sticky = stickyDir(sb, "sticky");
  const start = await startFine(SOURCE, `${sticky}/d.pid`, ["--", "sleep", m]);
  assert.equal(start.code, 0, `a sticky directory is fine for root's new file: ${start.stderr}`);
  sb.track(Number(start.stdout.trim()));
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", `${sticky}/d.pid`])).code, 0);
});

Deno.test("as root, a path through another user's directory or symbolic link is refused, whatever its depth", async () => {
  await using sb = await rootSandbox("needs root (the check is root's)");
  if (!sb) return;
  const m = marker();
  // An ancestor another user owns: that user can rename root's directory away.
  const theirs = sb.path("theirs");
  Deno.mkdirSync(`${theirs}/sub`, { recursive: true });
  Deno.chownSync(theirs, 65534, 65534);
  // A symbolic link another user owns in a sticky directory: that user can retarget it.
  const sticky = sb.path("sticky");
  const rootDir = sb.path("rootdir");
  Deno.mkdirSync(sticky);
  Deno.chmodSync(sticky, 0o1777);
  Deno.mkdirSync(rootDir);
  const ln = await new Deno.Command(NOBODY[0]!, {
    args: [...NOBODY.slice(1), "ln", "-s", rootDir, `${sticky}/theirs`],
  }).output();
  assert.equal(ln.code, 0, new TextDecoder().decode(ln.stderr));
  Deno.symlinkSync(rootDir, `${sticky}/ours`);
  for (
    const [p, why] of [
      [
        `${theirs}/sub/d.pid`,
        new RegExp(`the directory "${theirs}" on its way can be written by user "nobody"`),
      ],
      [
        `${sticky}/theirs/d.pid`,
        new RegExp(`"${sticky}/theirs" on its way is a symbolic link owned by user "nobody"`),
      ],
      [`${sticky}/theirs/../rootdir/d.pid`, /is a symbolic link owned by user "nobody"/],
    ] as const
  ) {
    assertCleanError(await sr(SOURCE, ["start", "--pidfile", p, "--", "sleep", m]), 1, why);
    assertCleanError(await sr(SOURCE, ["stop", "--pidfile", p]), 1, why);
    assertCleanError(
      await sr(SOURCE, ["start", "--pidfile", sb.pidfile, "--output", p, "--", "sleep", m]),
      1,
      why,
    );
  }
  assert.deepEqual([...Deno.readDirSync(`${theirs}/sub`)], [], "nothing created there");
  assert.deepEqual([...Deno.readDirSync(rootDir)], [], "nothing created there");
  assert.deepEqual(findProcesses(["sleep", m]), []);

  // Root's own link in the sticky directory is followed, and fine.
  const ours = `${sticky}/ours/d.pid`;
  const start = await startFine(SOURCE, ours, ["--", "sleep", m]);
  assert.equal(start.code, 0, `root's own link: ${start.stderr}`);
  sb.track(Number(start.stdout.trim()));
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", ours])).code, 0);
});

Deno.test("as root, status cannot tell (4) from a pid file start and stop would refuse", async () => {
  await using sb = await rootSandbox("needs root to act as nobody");
  if (!sb) return;
  const sticky = stickyDir(sb, "sticky");
  const p = `${sticky}/d.pid`;
  const m = marker();
  // Another user's pid file naming that user's own process, locked.
  const attacker = new Deno.Command(NOBODY[0]!, {
    args: [
      ...NOBODY.slice(1),
      "bash",
      "-c",
      `exec 9>>"$1"; flock -x 9; echo $$ >"$1"; exec sleep ${m}`,
      "bash",
      p,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(() => findProcesses(["sleep", m]).length === 1, 5000, "the attacker");
    await waitFor(() => locked(p) && readPid(p) !== undefined, 5000, "the lock");
    const r = await sr(SOURCE, ["status", "--pidfile", p]);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /cannot tell: refusing ".*d\.pid": its directory/);
  } finally {
    attacker.kill("SIGKILL");
    await attacker.status;
    for (const pid of findProcesses(["sleep", m])) Deno.kill(pid, "SIGKILL");
  }
  // Another user's pid file naming pid 1, unlocked, even in root's own directory: not "stale".
  for (const path of [p, sb.pidfile]) {
    Deno.writeTextFileSync(path, "1\n");
    Deno.chownSync(path, 65534, 65534);
    const stale = await sr(SOURCE, ["status", "--pidfile", path]);
    assert.equal(stale.code, 4, stale.stdout + stale.stderr);
  }
  assert.match(
    (await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).stderr,
    /is owned by uid 65534; as root, refusing to trust it/,
  );
  Deno.removeSync(sb.pidfile);
  // Root's own pid file under a directory another user owns.
  const theirs = sb.path("theirs");
  Deno.mkdirSync(`${theirs}/sub`, { recursive: true });
  Deno.writeTextFileSync(`${theirs}/sub/d.pid`, "1\n");
  Deno.chownSync(theirs, 65534, 65534);
  const under = await sr(SOURCE, ["status", "--pidfile", `${theirs}/sub/d.pid`]);
  assert.equal(under.code, 4, under.stdout + under.stderr);
  assert.match(
    under.stdout + under.stderr,
    /the directory ".*theirs" on its way can be written by user "nobody"/,
  );
  assert.equal(
    (await sr(SOURCE, ["status", "--pidfile", sb.pidfile])).code,
    3,
    "a trusted path still reads",
  );
});

Deno.test("an --output that is a symbolic link or a FIFO is refused at once; the link's target is untouched", async () => {
  await using sb = await Sandbox.create();
  const secret = sb.path("secret");
  Deno.writeTextFileSync(secret, "root:$6$hash\n");
  Deno.symlinkSync(secret, sb.path("out.link"));
  const fifo = sb.path("out.fifo");
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.equal(made.code, 0);
  const m = marker();
  const link = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--output",
    sb.path("out.link"),
    "--",
    "sleep",
    m,
  ]);
  assertCleanError(link, 1, /output file .*symbolic link/);
  assert.ok(!link.stderr.includes("hash"), "the target's content is not shown");
  const pipe = await sr(SOURCE, [
    "start",
    "--pidfile",
    sb.pidfile,
    "--output",
    fifo,
    "--",
    "sleep",
    m,
  ], {
    timeoutMs: 10_000,
  });
  assertCleanError(pipe, 1, /output file/);
  assert.equal(Deno.readTextFileSync(secret), "root:$6$hash\n");
  assert.deepEqual(findProcesses(["sleep", m]), []);
});

Deno.test("as root, a file another user put at the output path after a rotation is never written by the reopen", async () => {
  await using sb = await rootSandbox("needs root to act as nobody");
  if (!sb) return;
  const logs = sb.path("logs");
  Deno.mkdirSync(logs);
  Deno.chmodSync(logs, 0o1777); // sticky and open to all, as /tmp or a shared log directory
  const out = `${logs}/out.log`;
  const m = marker();
  const start = await startFine(SOURCE, sb.pidfile, [
    "--supervise",
    "--output",
    out,
    "--",
    "bash",
    "-c",
    `trap '' HUP; while :; do echo "line ${m}"; sleep 0.05; done`,
  ]);
  assert.equal(start.code, 0, start.stderr);
  sb.track(Number(start.stdout.trim()));
  await waitFor(() => Deno.readTextFileSync(out).includes(m), 5000, "the first lines");
  Deno.renameSync(out, `${out}.1`); // the rotation
  const plant = await new Deno.Command(NOBODY[0]!, {
    args: [...NOBODY.slice(1), "bash", "-c", `umask 0; : > '${out}'`],
  }).output();
  assert.ok(plant.success, "nobody planted a file of its own");
  const reload = await sr(SOURCE, ["reload", "--pidfile", sb.pidfile]);
  assert.equal(reload.code, 0, reload.stderr);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(Deno.readTextFileSync(out), "", "the daemon's output went into nobody's file");
  const rotated = Deno.readTextFileSync(`${out}.1`).length;
  await waitFor(
    () => Deno.readTextFileSync(`${out}.1`).length > rotated,
    5000,
    "the output to go on into the file the supervisor still has",
  );
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", sb.pidfile])).code, 0);
});

Deno.test("as root, a directory another user may write through an ACL alone is refused as one its mode bits open", async () => {
  await using sb = await rootSandbox("needs root for the directory check");
  if (!sb) return;
  const setfacl = ["/usr/bin/setfacl", "/bin/setfacl"].find((p) => exists(p));
  if (!setfacl) {
    console.log("skipped: no setfacl (Debian's acl)");
    return;
  }
  const dir = sb.path("acl");
  Deno.mkdirSync(dir);
  Deno.chmodSync(dir, 0o755);
  const acl = await new Deno.Command(setfacl, { args: ["-m", "u:nobody:rwx", dir] }).output();
  assert(acl.success, new TextDecoder().decode(acl.stderr));
  // Root's directory, root's group: the mode bits alone show no other writer.
  const st = Deno.statSync(dir);
  assert.equal(st.uid, 0);
  assert.equal(st.gid, 0);
  const plant = await new Deno.Command(NOBODY[0]!, {
    args: [...NOBODY.slice(1), "touch", `${dir}/planted`],
  }).output();
  assert(plant.success, "nobody can write the directory through its ACL");
  Deno.removeSync(`${dir}/planted`);

  const pidfile = `${dir}/d.pid`;
  const start = ["start", ...STARTS_FINE, "--pidfile", pidfile, "--", "sleep", "1000"];
  const r = await sr(SOURCE, start);
  if (r.code === 0) sb.track(Number(r.stdout)); // started in spite of the ACL: stopped at the end
  assertCleanError(
    r,
    1,
    /its directory ".*\/acl" can be written by user "nobody" \(uid \d+\), whom its access ACL names/,
  );
  assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing was created");
  const st2 = await sr(SOURCE, ["status", "--pidfile", pidfile]);
  assert.equal(st2.code, 4, st2.stderr);
  assert.match(st2.stderr, /access ACL/);

  const setAcl = async (spec: string) => {
    const clear = await new Deno.Command(setfacl, { args: ["-b", dir] }).output();
    assert(clear.success);
    Deno.chmodSync(dir, 0o775);
    if (spec === "") return;
    const set = await new Deno.Command(setfacl, { args: ["-m", spec, dir] }).output();
    assert(set.success, new TextDecoder().decode(set.stderr));
  };
  // A group the ACL lets write is named as such.
  await setAcl("g:nogroup:rwx");
  assertCleanError(
    await sr(SOURCE, start),
    1,
    /its directory ".*\/acl" can be written by group "nogroup" \(gid \d+\), whom its access ACL names/,
  );
  // The ACL names nobody, to read only: the mask (the group bits) allows
  // writing because root's group may, and no one else may write.
  for (const spec of ["u:nobody:rx", ""]) {
    await setAcl(spec);
    assert.equal((Deno.statSync(dir).mode ?? 0) & 0o020, 0o020, "the group bits allow writing");
    const ok = await sr(SOURCE, start);
    assert.equal(ok.code, 0, `${spec || "no ACL"}: ${ok.stderr}`);
    sb.track(Number(ok.stdout));
    assert.equal((await sr(SOURCE, ["stop", "--pidfile", pidfile])).code, 0);
  }
  // Group nogroup owns it, to read only; the mask allows writing for root's
  // own entry: the group bits show the mask, and the group is not a writer.
  await setAcl("");
  Deno.chownSync(dir, 0, 65534);
  Deno.chmodSync(dir, 0o755);
  const rootEntry = await new Deno.Command(setfacl, { args: ["-m", "u:root:rwx", dir] }).output();
  assert(rootEntry.success);
  assert.equal(Deno.statSync(dir).mode! & 0o070, 0o070, "the mask shows as the group bits");
  const owned = await sr(SOURCE, start);
  assert.equal(owned.code, 0, owned.stderr);
  sb.track(Number(owned.stdout));
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", pidfile])).code, 0);
});

Deno.test("as root, a pid file another user may write by its group or its ACL is refused, and what it names is never stopped", async () => {
  await using sb = await rootSandbox("needs root for the pid file check");
  if (!sb) return;
  const setfacl = ["/usr/bin/setfacl", "/bin/setfacl"].find((p) => exists(p));
  const pidfile = sb.pidfile;
  // Root's process that the file will name: a stop --exec must never reach it.
  const victim = new Deno.Command("sleep", { args: [marker()], stdout: "null", stderr: "null" })
    .spawn();
  sb.track(victim.pid);
  const cases: [string, () => Promise<void>, RegExp][] = [
    ["group nogroup may write it", () => {
      Deno.chmodSync(pidfile, 0o664);
      Deno.chownSync(pidfile, 0, 65534);
      return Promise.resolve();
    }, /is writable by group "nogroup" \(gid 65534\)/],
  ];
  if (setfacl) {
    cases.push(["its ACL lets nobody write it", async () => {
      Deno.chmodSync(pidfile, 0o644);
      const r = await new Deno.Command(setfacl, { args: ["-m", "u:nobody:rw", pidfile] }).output();
      assert(r.success, new TextDecoder().decode(r.stderr));
    }, /is writable by user "nobody" \(uid \d+\), whom its access ACL names/]);
  } else console.log("skipped in part: no setfacl (Debian's acl)");
  for (const [what, arrange, pattern] of cases) {
    Deno.writeTextFileSync(pidfile, `${victim.pid}\n`);
    await arrange();
    const refusals: [string[], RegExp][] = [
      [["start", ...STARTS_FINE, "--pidfile", pidfile, "--", "sleep", "1000"], pattern],
      [["stop", "--pidfile", pidfile, "--exec", "/usr/bin/sleep"], pattern],
      [["signal", "--pidfile", pidfile, "TERM"], pattern],
    ];
    for (const [args, why] of refusals) {
      const r = await sr(SOURCE, args);
      if (args[0] === "start" && r.code === 0) sb.track(Number(r.stdout));
      assertCleanError(r, 1, why);
      assert(alive(victim.pid), `${what}: ${args[0]} reached the process the file names`);
    }
    const st = await sr(SOURCE, ["status", "--pidfile", pidfile]);
    assert.equal(st.code, 4, `${what}: ${st.stderr}`);
    Deno.removeSync(pidfile);
  }
  victim.kill("SIGKILL");
  await victim.status;
});

Deno.test("as root, a pid file another user owns is believed by no command, and what it names is never signalled", async () => {
  await using sb = await rootSandbox("needs root for the owner check");
  if (!sb) return;
  const victim = new Deno.Command("sleep", { args: [marker()], stdout: "null", stderr: "null" })
    .spawn();
  sb.track(victim.pid);
  // nobody's file in root's directory, naming root's process.
  Deno.writeTextFileSync(sb.pidfile, `${victim.pid}\n`);
  Deno.chownSync(sb.pidfile, NOBODY_UID, NOBODY_UID);
  const owned = /pid file ".*" is owned by uid 65534; as root, refusing to trust it/;
  for (
    const args of [
      ["stop", "--pidfile", sb.pidfile, "--exec", "/usr/bin/sleep"],
      ["signal", "--pidfile", sb.pidfile, "--exec", "/usr/bin/sleep", "USR1"],
      ["reload", "--pidfile", sb.pidfile, "--exec", "/usr/bin/sleep", "--force"],
      ["stop", "--pidfile", sb.pidfile],
    ]
  ) {
    assertCleanError(await sr(SOURCE, args), 1, owned);
    assert(alive(victim.pid), `${args.join(" ")} reached the process nobody's file names`);
  }
  const st = await sr(SOURCE, ["status", "--pidfile", sb.pidfile, "--exec", "/usr/bin/sleep"]);
  assert.equal(st.code, 4, st.stderr);
  assert.match(st.stderr, owned);
  victim.kill("SIGKILL");
  await victim.status;

  // A directory nobody owns, though no one may write it now: nobody may
  // chmod it, move root's pid file away and let a second start in.
  const theirs = sb.path("theirs");
  Deno.mkdirSync(theirs);
  Deno.chownSync(theirs, NOBODY_UID, NOBODY_UID);
  Deno.chmodSync(theirs, 0o555);
  const theirsWritable = /its directory ".*\/theirs" can be written by user "nobody"/;
  await assertStartRefused(sb, `${theirs}/a.pid`, theirsWritable);
  // Sticky too: the sticky bit keeps others from renaming root's files, not the directory's owner.
  Deno.chmodSync(theirs, 0o1755);
  await assertStartRefused(sb, `${theirs}/a.pid`, theirsWritable);

  // A sticky directory anyone may write, as /tmp: another user's file where
  // the record or the state file will be keeps root from starting there.
  const tmp = stickyDir(sb, "tmp");
  for (const beside of ["a.pid.record", "a.pid.state"]) {
    const plant = await new Deno.Command(NOBODY[0]!, {
      args: [...NOBODY.slice(1), "mkdir", `${tmp}/${beside}`],
    }).output();
    assert(plant.success);
    await assertStartRefused(
      sb,
      `${tmp}/a.pid`,
      /its directory ".*\/tmp" can be written by every user/,
    );
    assert.deepEqual(
      [...Deno.readDirSync(tmp)].map((e) => e.name),
      [beside],
      "nothing was created",
    );
    Deno.removeSync(`${tmp}/${beside}`);
  }
});

Deno.test("as root, start --user fails and stops its daemon when another user keeps its record from being written", async () => {
  await using sb = await rootSandbox("needs root for --user");
  if (!sb) return;
  // A sticky directory anyone may write, as /tmp; the path checks pass
  // before the start, and nobody plants a directory at the record's name
  // while the daemon gets ready (5 s: far more than the plant takes under load).
  const tmp = stickyDir(sb, "tmp");
  const pidfile = `${tmp}/u.pid`;
  const m = marker();
  const start = srSpawn(SOURCE, [
    "start",
    "--user",
    "daemon",
    "--ready-after",
    "5s",
    "--pidfile",
    pidfile,
    "--",
    "sleep",
    m,
  ]);
  await waitFor(() => locked(pidfile), 10_000, "the daemon's lock");
  const plant = await new Deno.Command(NOBODY[0]!, {
    args: [
      ...NOBODY.slice(1),
      "sh",
      "-c",
      `mkdir "${pidfile}.record" && touch "${pidfile}.record/x"`,
    ],
  }).output();
  assert(plant.success, "nobody planted a directory at the record's name");
  const out = await start.output();
  const r = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    ms: 0,
  };
  for (const pid of findProcesses(["sleep", m])) sb.track(pid);
  assertCleanError(
    r,
    1,
    /cannot write the service record: cannot put the record in place at ".*u\.pid\.record": is a directory; .*so it was stopped/,
  );
  await waitFor(() => findProcesses(["sleep", m]).length === 0, 10_000, "the daemon to be stopped");
  assert(!locked(pidfile), "no one holds the lock");
});

Deno.test("stop --exec and status --exec do not believe a pid file that others may write, for any caller", async () => {
  if (!CAN_BE_NOBODY) {
    console.log("skipped: needs root and setpriv to act as nobody");
    return;
  }
  await using sb = await rootSandbox("needs root to act as nobody");
  if (!sb) return;
  const dir = sb.path("nobody");
  Deno.mkdirSync(dir);
  Deno.chownSync(dir, NOBODY_UID, NOBODY_UID);
  // nobody's own process, named by nobody's own file that group nogroup may write too.
  const own = new Deno.Command("setpriv", {
    args: ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/sleep", marker()],
    stdout: "null",
    stderr: "null",
  }).spawn();
  sb.track(own.pid);
  const pidfile = `${dir}/a.pid`;
  Deno.writeTextFileSync(pidfile, `${own.pid}\n`);
  Deno.chownSync(pidfile, NOBODY_UID, NOBODY_UID);
  Deno.chmodSync(pidfile, 0o664);
  const proves =
    /can be written by group "nogroup" \(gid \d+\), so the pid \d+ it names proves nothing without a lock/;
  const st = await srAsNobody(["status", "--pidfile", pidfile, "--exec", "/usr/bin/sleep"]);
  assert.equal(st.code, 4, st.stderr);
  assert.match(st.stderr, proves);
  assertCleanError(
    await srAsNobody(["stop", "--pidfile", pidfile, "--exec", "/usr/bin/sleep"]),
    1,
    proves,
  );
  assert(alive(own.pid), "stop --exec believed a file others may write");

  // The same file, writable by nobody alone (an ACL entry naming its owner
  // again changes nothing): believed, and the process stopped.
  Deno.chmodSync(pidfile, 0o644);
  const setfacl = ["/usr/bin/setfacl", "/bin/setfacl"].find((p) => exists(p));
  if (setfacl) {
    const acl = await new Deno.Command(setfacl, { args: ["-m", "u:nobody:rw", pidfile] }).output();
    assert(acl.success, new TextDecoder().decode(acl.stderr));
  }
  const ok = await srAsNobody(["status", "--pidfile", pidfile, "--exec", "/usr/bin/sleep"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(
    (await srAsNobody(["stop", "--pidfile", pidfile, "--exec", "/usr/bin/sleep"])).code,
    0,
  );
  await own.status;
});

Deno.test("as root, a path whose directories cannot all be looked at (too long a path, a loop of links) is refused", async () => {
  await using sb = await rootSandbox("needs root for the directory check");
  if (!sb) return;
  // A root directory ~3000 bytes deep, reached through a short root link: the
  // pid file's path is short, but where the link leads plus the rest is past
  // PATH_MAX, so its last directories (nobody's) cannot be looked at by name.
  const deep = sb.path(Array.from({ length: 14 }, () => "a".repeat(200)).join("/"));
  Deno.mkdirSync(deep, { recursive: true });
  Deno.symlinkSync(deep, sb.path("L"));
  const rest = Array.from({ length: 7 }, () => "b".repeat(200)).join("/");
  Deno.mkdirSync(sb.path(`L/${rest}/nob`), { recursive: true });
  Deno.chownSync(sb.path(`L/${rest}/nob`), 65534, 65534);
  const pidfile = sb.path(`L/${rest}/nob/a.pid`);
  try {
    await assertStartRefused(
      sb,
      pidfile,
      /cannot tell who may change ".*" on its way \(file name too long\)/,
    );
    assert(!exists(pidfile), "nothing was created");
  } finally {
    await new Deno.Command("rm", { args: ["-rf", sb.path("a".repeat(200))] }).output();
  }

  // Two root links pointing at each other: refused as a loop, not as "a symbolic link".
  Deno.symlinkSync("l2", sb.path("l1"));
  Deno.symlinkSync("l1", sb.path("l2"));
  await assertStartRefused(sb, sb.path("l1/a.pid"), /too many symbolic links on its way/);
});

Deno.test("as root, a /proc link whose text names another directory than it leads to is refused", async () => {
  await using sb = await rootSandbox("needs root for the directory check and mount namespaces");
  if (!sb) return;
  const ours = sb.path("ours");
  const theirs = sb.path("theirs");
  Deno.mkdirSync(ours);
  Deno.mkdirSync(theirs);
  Deno.chownSync(theirs, 65534, 65534);
  // A process in a mount namespace of its own, where nobody's directory is
  // mounted over root's: its /proc/PID/cwd says "ours" and leads to "theirs".
  const ready = sb.path("ready");
  const holder = new Deno.Command("unshare", {
    args: [
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      `mount --bind "${theirs}" "${ours}" && cd "${ours}" && touch "${ready}" && exec sleep ${marker()}`,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  sb.track(holder.pid);
  try {
    await waitFor(() => exists(ready) || !alive(holder.pid), 10_000, "the namespace");
    if (!exists(ready)) {
      console.log("skipped: unshare -m cannot make a mount namespace here");
      return;
    }
    const link = `/proc/${holder.pid}/cwd`;
    assert.equal(Deno.readLinkSync(link), ours, "the link's text names root's directory");
    await assertStartRefused(sb, `${link}/a.pid`, /does not lead where its text ".*ours" says/);
    assert.deepEqual(
      [...Deno.readDirSync(theirs)],
      [],
      "nothing was created in nobody's directory",
    );
  } finally {
    holder.kill("SIGKILL");
    await holder.status;
  }
});

Deno.test("as root, run --supervise applies the output path checks start applies", async () => {
  if (!AS_ROOT) {
    console.log("skipped: needs root for the directory check");
    return;
  }
  await using sb = await Sandbox.create();
  const open = sb.path("open");
  Deno.mkdirSync(open);
  Deno.chmodSync(open, 0o777); // any user may swap a file in here
  const r = await sr(SOURCE, [
    "run",
    "--supervise",
    "--pidfile",
    sb.pidfile,
    "--output",
    `${open}/out.log`,
    "--",
    "true",
  ]);
  assertCleanError(r, 1, /its directory ".*\/open" can be written by every user/);
  assert.deepEqual([...Deno.readDirSync(open)], [], "no output file was created");
  const same = await sr(SOURCE, [
    "run",
    "--supervise",
    "--pidfile",
    sb.pidfile,
    "--output",
    sb.pidfile,
    "--",
    "true",
  ]);
  assertCleanError(same, 2, /is the pid file/);
});

Deno.test("a script whose #! interpreter is missing is named before anything starts, in run, start and --supervise", async () => {
  await using sb = await Sandbox.create();
  const direct = sb.path("direct.sh");
  const nested = sb.path("nested.sh");
  Deno.writeTextFileSync(direct, "#!/nonexistent/interpreter\necho hi\n");
  Deno.writeTextFileSync(nested, `#!${direct}\necho hi\n`);
  Deno.chmodSync(direct, 0o755);
  Deno.chmodSync(nested, 0o755);
  const missing = /its interpreter "\/nonexistent\/interpreter" \(the #! line\) does not exist/;
  for (const args of [["run"], ["start"], ["start", "--supervise"]]) {
    const r = await sr(SOURCE, [...args, "--pidfile", sb.pidfile, "--", direct]);
    assertCleanError(r, 1, missing);
  }
  const r = await sr(SOURCE, ["start", "--supervise", "--pidfile", sb.pidfile, "--", nested]);
  assertCleanError(
    r,
    1,
    /its interpreter ".*direct\.sh" \(the #! line\) is a script whose interpreter "\/nonexistent\/interpreter" does not exist/,
  );
  assert.deepEqual(sb.list(), ["direct.sh", "nested.sh"], "nothing was created");
});

Deno.test("a supervised child that cannot be spawned: start says why", async () => {
  await using sb = await Sandbox.create();
  // A descriptor above the open-file limit cannot be handed to the child.
  const r = await new Deno.Command("bash", {
    args: [
      "-c",
      'ulimit -n 64 && exec "$@"',
      "bash",
      ...SOURCE.cmd,
      "start",
      "--supervise",
      "--notify-fd",
      "1023",
      "--pidfile",
      sb.pidfile,
      "--",
      "sleep",
      marker(),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 1, stderr);
  assert.match(stderr, /could not be started: cannot give the program descriptor 1023/);
  assert.match(stderr, /ulimit -n 64/);
});
