/**
 * Identity nobody can forge. As root, against the unprivileged `nobody`: a
 * read lock any user can take on a 0644 pid file, an argv that claims to be a
 * keeper, a pid reused by an unrelated root process (a decoy that logs every
 * signal it gets), a daemon whose keeper was SIGKILLed, and what a supervisor
 * leaves behind when it gives up. What must hold: only an exclusive lock
 * held by root (or the pid file's owner, or the daemon's user) means
 * "running"; another user's locks are reported (`foreignHolders` in
 * `status --json`) and change no decision; a process is known by its pid and
 * start time, never by its argv, so a reused pid is never signalled.
 *
 * The daemons attacked run as root, never as the attacker's user. Without
 * root, python3, gcc or setpriv, each test says `skipped: ...`.
 */

import assert from "node:assert/strict";
import {
  argvOf,
  eventually,
  findMentioning,
  holdsLockOn,
  isAlive,
  sleep,
} from "../../testing/process.ts";
import {
  Attacker,
  buildCast,
  cannotStage,
  type Cast,
  closerArgv,
  Decoy,
  FORGED_KEEPER,
  LOCK_KINDS,
  type LockKind,
  lockWaitedFor,
  NOBODY_UID,
  PYTHON,
} from "../../testing/identity.ts";
import {
  findProcesses,
  marker,
  readPid,
  type Result,
  Sandbox,
  SOURCE,
  sr,
  STARTS_FINE,
  waitFor,
} from "./harness.ts";

/**
 * A test of an attack: in a sandbox `nobody` can reach (0755), with the cast
 * built in it; skipped, saying why, where the attack cannot be staged.
 */
function identityTest(
  name: string,
  fn: (t: Deno.TestContext, sb: Sandbox, cast: Cast) => Promise<void>,
): void {
  Deno.test(name, async (t) => {
    const why = cannotStage();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    await using sb = await Sandbox.create();
    await Deno.chmod(sb.dir, 0o755);
    await fn(t, sb, await buildCast(sb.dir));
  });
}

/** Track every process a command left that mentions the sandbox (decoys aside: they clean up by start time). */
function trackRun(sb: Sandbox, cast: Cast): void {
  for (const pid of findMentioning(sb.dir)) {
    if (argvOf(pid)?.[0] !== cast.decoy) sb.track(pid);
  }
}

/** `singleton-run ARGS` from source, and track what it left running. */
async function run(sb: Sandbox, cast: Cast, args: readonly string[]): Promise<Result> {
  const r = await sr(SOURCE, args, { timeoutMs: 60_000 });
  trackRun(sb, cast);
  return r;
}

/** `start` of a new `sleep` on this pid file (a program known to start fine). */
function startSleep(sb: Sandbox, cast: Cast, pidfile: string): Promise<Result> {
  return run(sb, cast, ["start", ...STARTS_FINE, "--pidfile", pidfile, "--", "sleep", marker()]);
}

function show(r: Result): string {
  return `exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
}

// deno-lint-ignore no-explicit-any
type Json = any;

async function statusJson(
  sb: Sandbox,
  cast: Cast,
  pidfile = sb.pidfile,
): Promise<{ r: Result; json: Json }> {
  const r = await run(sb, cast, ["status", "--json", "--pidfile", pidfile]);
  let json: Json = {};
  try {
    json = JSON.parse(r.stdout);
  } catch {
    // judged by the caller, with the output shown
  }
  return { r, json };
}

/**
 * Checks that go on after one fails, so a failing step says everything that
 * went wrong (a wrong exit code and a signalled decoy, not just the first).
 */
class Checks {
  readonly #failed: string[] = [];

  /** Record one check; returns whether it held. */
  ok(condition: boolean, what: string): boolean {
    if (!condition) this.#failed.push(what);
    return condition;
  }

  /** The exit code a command should have had. */
  code(r: Result, want: number, what: string): boolean {
    return this.ok(r.code === want, `${what}: want exit ${want}, got ${show(r)}`);
  }

  /** The decoy got no signal and runs. */
  untouched(decoy: Decoy, after: string): boolean {
    return this.ok(decoy.untouched, `after ${after}: ${decoy.describe()}`);
  }

  /** `status --json` lists this attacker among the foreign holders, as nobody's. */
  foreignHolder(json: Json, attacker: Attacker, r: Result): boolean {
    const listed = Array.isArray(json.foreignHolders) ? json.foreignHolders : [];
    const entry = listed.find((h: Json) => h?.pid === attacker.pid);
    return this.ok(
      entry?.uid === NOBODY_UID && typeof entry.kind === "string" && entry.kind !== "",
      `status --json lists attacker ${attacker.pid} (uid ${NOBODY_UID}, a lock kind) in ` +
        `foreignHolders: ${show(r)}`,
    );
  }

  /** Fail with every check that did not hold. */
  done(): void {
    if (this.#failed.length) {
      assert.fail(`${this.#failed.length} check(s) failed:\n- ${this.#failed.join("\n- ")}`);
    }
  }
}

function inode(path: string): number {
  return Deno.statSync(path).ino!;
}

/** The pid the file names when that process holds a lock on the file's current inode. */
function namedHoldsLock(pidfile: string): number | undefined {
  const pid = readPid(pidfile);
  return pid !== undefined && holdsLockOn(pid, inode(pidfile)) ? pid : undefined;
}

/** The pid start printed, once that process runs. */
function startedPid(r: Result): number {
  assert.equal(r.code, 0, `start: ${show(r)}`);
  const pid = Number(r.stdout.trim());
  assert.ok(Number.isInteger(pid) && isAlive(pid), `start printed ${r.stdout}, which does not run`);
  return pid;
}

/** Wait until a process is gone (and reaped, so its pid is free), at most 20 s (PID 1 reaps orphans here, late). */
function gone(pid: number, what: string): Promise<void> {
  return waitFor(
    () => {
      try {
        Deno.statSync(`/proc/${pid}`);
        return false;
      } catch {
        return true;
      }
    },
    20_000,
    `${what} (pid ${pid}) to be gone and reaped`,
  );
}

async function takePid(cast: Cast, sb: Sandbox, pid: number): Promise<Decoy> {
  const decoy = await Decoy.take(cast, pid, sb.path(`decoy-${pid}.log`));
  assert.ok(decoy, `no decoy could take pid ${pid} within 20 s`);
  return decoy;
}

identityTest(
  "a read lock anyone can take is not 'running': start, stop, restart and status act as if it were not there",
  async (t, sb, cast) => {
    for (const kind of LOCK_KINDS) {
      await t.step(
        `${kind} read lock taken first: start of a daemon that closes its descriptors gets its keeper, a second start exits 3`,
        async () => {
          const c = new Checks();
          const pidfile = sb.path(`a-${kind}.pid`);
          Deno.writeTextFileSync(pidfile, "", { mode: 0o644 });
          const before = inode(pidfile);
          await using attacker = await Attacker.lock(pidfile, kind);
          const m = marker();
          const args = [
            "start",
            "--notify-fd",
            "4",
            "--pidfile",
            pidfile,
            "--",
            ...closerArgv(cast, m),
          ];
          const first = await run(sb, cast, args);
          const daemon = startedPid(first);
          const second = await run(sb, cast, args);
          const copies = findProcesses(closerArgv(cast, m));
          c.ok(copies.length === 1, `one copy runs after two starts, not [${copies}]`);
          c.ok(
            second.code === 3 && second.stderr.includes(`already running (pid ${daemon})`),
            `second start: want exit 3 "already running (pid ${daemon})", got ${show(second)}`,
          );
          c.ok(/keeper pid [0-9]+ holds the lock/.test(first.stderr), `a keeper: ${show(first)}`);
          if (kind === "flock") {
            c.ok(inode(pidfile) !== before, "start took its lock on a fresh inode");
            const naming = new RegExp(`\\bpid ${attacker.pid}\\b|"nobody"`);
            const said = first.stderr.split("\n").filter((l) => naming.test(l));
            c.ok(said.length === 1, `start says once who held the old inode: ${show(first)}`);
          }
          const { r, json } = await statusJson(sb, cast, pidfile);
          c.ok(
            r.code === 0 && json.pid === daemon && json.keeper > 0,
            `status: want 0 naming ${daemon} and its keeper, got ${show(r)}`,
          );
          // A flock taken first holds the old inode, no longer the pid file: nothing to report.
          if (kind !== "flock") c.foreignHolder(json, attacker, r);
          c.code(await run(sb, cast, ["stop", "--pidfile", pidfile]), 0, "stop");
          const left = findProcesses(closerArgv(cast, m));
          c.ok(left.length === 0, `nothing left after stop, not [${left}]`);
          c.code(
            await run(sb, cast, ["status", "--pidfile", pidfile]),
            3,
            "status once stopped, the attacker still there",
          );
          c.done();
        },
      );
    }

    for (const kind of LOCK_KINDS) {
      await t.step(
        `${kind} read lock taken while the daemon runs: stop exits 0, restart starts one, status follows the daemon`,
        async () => {
          const c = new Checks();
          const pidfile = sb.path(`b-${kind}.pid`);
          const m = marker();
          const daemon = startedPid(
            await run(sb, cast, ["start", "--pidfile", pidfile, "--", "sleep", m]),
          );
          // A flock read lock waits behind the daemon's exclusive one, and is granted when it goes.
          await using attacker = await Attacker.open(pidfile, kind);
          if (kind === "flock") {
            await waitFor(() => lockWaitedFor(inode(pidfile)), 5000, "the attacker to queue");
          } else {
            await attacker.locked();
          }
          const stop = await run(sb, cast, [
            "stop",
            "--retry",
            "TERM/3/KILL/2",
            "--pidfile",
            pidfile,
          ]);
          assert.ok(!isAlive(daemon), "the daemon is gone");
          if (kind === "flock") await attacker.locked();
          c.code(stop, 0, "stop of a daemon that stopped");
          const { r, json } = await statusJson(sb, cast, pidfile);
          c.code(r, 3, "status with only the attacker's lock");
          c.foreignHolder(json, attacker, r);
          const restart = await run(sb, cast, [
            "restart",
            ...STARTS_FINE,
            "--pidfile",
            pidfile,
            "--",
            "sleep",
            m,
          ]);
          if (c.code(restart, 0, "restart")) {
            const again = Number(restart.stdout.trim());
            const copies = findProcesses(["sleep", m]);
            c.ok(copies.length === 1 && copies[0] === again, `restart started one: [${copies}]`);
            c.ok(
              namedHoldsLock(pidfile) === again,
              "the file names the new daemon, which holds it",
            );
            const running = await run(sb, cast, ["status", "--pidfile", pidfile]);
            c.ok(
              running.code === 0 && running.stdout.startsWith(`running (pid ${again}`),
              `status of the new daemon: ${show(running)}`,
            );
            c.code(await run(sb, cast, ["stop", "--pidfile", pidfile]), 0, "the final stop");
          }
          c.done();
        },
      );
    }
  },
);

identityTest(
  "a keeper is not recognised by its argv: nobody's forged keeper over a reused pid makes root act on nothing",
  async (t, sb, cast) => {
    for (const kind of ["posix", "flock"] as LockKind[]) {
      await t.step(
        `${kind} lock, argv "... --singleton-run-internal keeper x": status 1, signal and stop 3, the decoy untouched`,
        async () => {
          const c = new Checks();
          const pidfile = sb.path(`${kind}.pid`);
          const m = marker();
          const daemon = startedPid(
            await run(sb, cast, ["start", "--pidfile", pidfile, "--", "sleep", m]),
          );
          Deno.kill(daemon, "SIGKILL"); // the daemon crashes; the file still names it
          await gone(daemon, "the crashed daemon");
          await using decoy = await takePid(cast, sb, daemon);
          // Started after the decoy, as the attack needs: "older than the keeper" is no proof.
          await using attacker = await Attacker.lock(pidfile, kind, FORGED_KEEPER);
          assert.ok(
            argvOf(attacker.pid)?.includes("--singleton-run-internal"),
            "the argv is forged",
          );

          const { r, json } = await statusJson(sb, cast, pidfile);
          c.code(r, 1, "status --json (the file names a pid that was reused)");
          c.ok(json.keeper === undefined, `no keeper reported: ${show(r)}`);
          c.foreignHolder(json, attacker, r);
          const plain = await run(sb, cast, ["status", "--pidfile", pidfile]);
          c.ok(
            plain.code === 1 && !/kept by/.test(plain.stdout),
            `status: want 1, got ${show(plain)}`,
          );
          const signal = await run(sb, cast, ["signal", "--pidfile", pidfile, "USR1"]);
          c.untouched(decoy, "signal USR1");
          c.code(signal, 3, "signal USR1");
          const stop = await run(sb, cast, [
            "stop",
            "--retry",
            "TERM/2/KILL/1",
            "--pidfile",
            pidfile,
          ]);
          c.untouched(decoy, "stop");
          c.code(stop, 3, "stop");
          const fresh = await startSleep(sb, cast, pidfile);
          if (c.code(fresh, 0, "start of a new daemon")) {
            c.ok(
              namedHoldsLock(pidfile) === Number(fresh.stdout.trim()),
              "the new daemon holds it",
            );
            c.code(
              await run(sb, cast, ["stop", "--pidfile", pidfile]),
              0,
              "stop of the new daemon",
            );
          }
          c.untouched(decoy, "it all");
          c.done();
        },
      );
    }
  },
);

identityTest(
  "--supervise --daemon-pidfile follows a main process that is not its child through a pidfd: its death restarts the run, its reused pid is never signalled",
  async (t, sb, cast) => {
    const dp = sb.path("own.pid");
    const m = marker(5000);
    const start = await run(sb, cast, [
      "start",
      "--supervise",
      "--restart",
      "always",
      "--restart-delay",
      "100ms",
      "--daemon-pidfile",
      dp,
      "--pidfile",
      sb.pidfile,
      "--",
      "bash",
      "-c",
      `sleep ${m} & echo $! > "$1"; wait`,
      "bash",
      dp,
    ]);
    startedPid(start);
    // The main process: a grandchild, whose parent (bash) lives on while it runs.
    let main1 = 0;
    await eventually("the supervisor to follow sleep", async () => {
      const { json } = await statusJson(sb, cast);
      main1 = json.supervisor?.childPid ?? 0;
      return main1 > 0 && findProcesses(["sleep", m]).includes(main1);
    }, 15_000);
    Deno.kill(main1, "SIGKILL");
    await gone(main1, "the main process");
    await using decoy = await takePid(cast, sb, main1);

    await t.step("its death is seen: a new run starts and status names it", async () => {
      let json: Json = {};
      const ok = await eventually("a new run of sleep named by status --json", async () => {
        json = (await statusJson(sb, cast)).json;
        const child = json.supervisor?.childPid;
        return typeof child === "number" && child !== main1 &&
          findProcesses(["sleep", m]).includes(child);
      }, 15_000).then(() => true, () => false);
      assert.ok(
        ok && json.supervisor.restarts >= 1,
        `15 s after main process ${main1} died: status --json says ${
          JSON.stringify(json.supervisor)
        }; sleep runs as [${findProcesses(["sleep", m])}]`,
      );
    });

    await t.step(
      "stop after the pid was reused signals the run, never the process that took the pid",
      async () => {
        const c = new Checks();
        const stop = await run(sb, cast, ["stop", "--pidfile", sb.pidfile]);
        c.untouched(decoy, "stop");
        c.code(stop, 0, "stop");
        await sleep(100);
        const left = findProcesses(["sleep", m]);
        c.ok(left.length === 0, `no sleep left, not [${left}]`);
        c.done();
      },
    );
  },
);

/** A daemon that closed its descriptors, kept by a keeper that was then SIGKILLed (the OOM killer). */
async function daemonOfDeadKeeper(sb: Sandbox, cast: Cast, pidfile: string, m: string) {
  const args = ["start", "--notify-fd", "4", "--pidfile", pidfile, "--", ...closerArgv(cast, m)];
  const r = await run(sb, cast, args);
  const daemon = startedPid(r);
  const keeper = Number(/keeper pid ([0-9]+)/.exec(r.stderr)?.[1]);
  assert.ok(keeper > 0 && isAlive(keeper), `a keeper holds the lock: ${show(r)}`);
  Deno.kill(keeper, "SIGKILL");
  await gone(keeper, "the keeper");
  assert.ok(isAlive(daemon), "the daemon runs on without its keeper");
  return { daemon, args };
}

identityTest(
  "the daemon of a dead keeper is recognised: start refuses and says to stop it with --exec; a reused pid is not it",
  async (t, sb, cast) => {
    await t.step("start over it: exit 1 naming 'stop --exec PATH', one copy only", async () => {
      const c = new Checks();
      const pidfile = sb.path("refuse.pid");
      const m = marker();
      const { daemon, args } = await daemonOfDeadKeeper(sb, cast, pidfile, m);
      const again = await run(sb, cast, args);
      const copies = findProcesses(closerArgv(cast, m));
      c.ok(copies.length === 1 && copies[0] === daemon, `no second copy: [${copies}]`);
      c.ok(
        again.code === 1 && /stop --exec/.test(again.stderr),
        `start: want exit 1 saying to use "stop --exec PATH", got ${show(again)}`,
      );
      c.ok(readPid(pidfile) === daemon, `the pid file still names ${daemon}: ${readPid(pidfile)}`);
      c.done();
    });

    await t.step("stop --exec PATH, as advised, stops it; start then runs one", async () => {
      const pidfile = sb.path("advised.pid");
      const m = marker();
      const { daemon, args } = await daemonOfDeadKeeper(sb, cast, pidfile, m);
      const stop = await run(sb, cast, ["stop", "--exec", PYTHON, "--pidfile", pidfile]);
      assert.equal(stop.code, 0, `stop --exec: ${show(stop)}`);
      await gone(daemon, "the daemon of the dead keeper");
      const fresh = startedPid(await run(sb, cast, args));
      assert.deepEqual(findProcesses(closerArgv(cast, m)), [fresh], "one copy");
      const end = await run(sb, cast, ["stop", "--pidfile", pidfile]);
      assert.equal(end.code, 0, `stop: ${show(end)}`);
      assert.deepEqual(findProcesses(closerArgv(cast, m)), [], "nothing left");
    });

    await t.step(
      "its pid reused by another process (another start time): start runs, the decoy untouched",
      async () => {
        const c = new Checks();
        const pidfile = sb.path("reused.pid");
        const m = marker();
        const { daemon, args } = await daemonOfDeadKeeper(sb, cast, pidfile, m);
        Deno.kill(daemon, "SIGKILL");
        await gone(daemon, "the daemon");
        await using decoy = await takePid(cast, sb, daemon);
        const fresh = await run(sb, cast, args);
        c.untouched(decoy, "start");
        if (c.code(fresh, 0, "start")) {
          const copies = findProcesses(closerArgv(cast, m));
          c.ok(copies.length === 1 && copies[0] === Number(fresh.stdout), `one copy: [${copies}]`);
          const end = await run(sb, cast, ["stop", "--pidfile", pidfile]);
          c.untouched(decoy, "stop");
          c.code(end, 0, "stop");
        }
        c.done();
      },
    );
  },
);

identityTest(
  "a supervisor that gives up stops what is left of its last run: no unsupervised leftover keeps the lock",
  async (t, sb, cast) => {
    const policies: [string, string[]][] = [
      ["--restart never", ["--restart", "never"]],
      ["--max-restarts 1 reached", ["--max-restarts", "1", "--restart-delay", "100ms"]],
    ];
    for (const [name, policy] of policies) {
      await t.step(`${name}: the leftover is stopped, status 3, the next start runs`, async () => {
        const c = new Checks();
        const pidfile = sb.path(`${policy[1]}.pid`);
        const m = marker(5000);
        // Each run counts as started (it lives 0.5 s), then fails: the supervisor gives up.
        const r = await run(sb, cast, [
          "start",
          ...STARTS_FINE,
          "--supervise",
          ...policy,
          "--pidfile",
          pidfile,
          "--",
          "bash",
          "-c",
          `setsid sleep ${m} & sleep 0.5; exit 1`,
        ]);
        const supervisor = startedPid(r);
        await waitFor(() => !isAlive(supervisor), 30_000, "the supervisor to give up");
        trackRun(sb, cast);
        for (const pid of findProcesses(["sleep", m])) sb.track(pid);
        const left = findProcesses(["sleep", m]);
        c.ok(left.length === 0, `no leftover of the last run runs, not [${left}]`);
        c.code(await run(sb, cast, ["status", "--pidfile", pidfile]), 3, "status");
        const next = await startSleep(sb, cast, pidfile);
        if (c.code(next, 0, "the next start")) {
          c.code(await run(sb, cast, ["stop", "--pidfile", pidfile]), 0, "stop");
        }
        c.done();
      });
    }
  },
);
