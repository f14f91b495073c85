/**
 * An honest `start`: driven against the corpus of real starts its default
 * readiness was chosen from (testing/corpus.ts). Every program that dies
 * during its start-up makes `start` exit 1 with the reason and the last lines
 * of its output, and leaves nothing behind (no process, no lock, no pid file
 * naming a live process); every healthy one starts and answers. The old
 * default (`--ready-after 20`), a supervisor's child and a keeper's program
 * are checked against the same failures.
 */

import assert from "node:assert/strict";
import { findMentioning } from "../../testing/process.ts";
import { freePort } from "../../testing/cluster.ts";
import {
  available,
  busyListener,
  CORPUS,
  type CorpusCase,
  type CorpusRun,
} from "../../testing/corpus.ts";
import { alive, locked, readPid, type Result, Sandbox, SOURCE, sr, waitFor } from "./harness.ts";

/** What a start left: processes of the case, the lock, a pid file naming a live process. */
function assertNothingLeft(sb: Sandbox, run: CorpusRun): void {
  assert.deepEqual(findMentioning(run.marker), [], `no process of ${run.marker} is left`);
  assert.equal(locked(sb.pidfile), false, "the lock is free");
  const named = readPid(sb.pidfile);
  assert.ok(named === undefined || !alive(named), `the pid file names live pid ${named}`);
}

/** Set up a case in the sandbox with a busy port held for the test. */
function setUp(sb: Sandbox, c: CorpusCase, busyPort: number): CorpusRun {
  const dir = sb.path("case");
  Deno.mkdirSync(dir);
  return c.setup({ dir, busyPort, freePort: freePort() });
}

/** Track every process of the case, so the sandbox kills what a failed assertion left. */
function track(sb: Sandbox, run: CorpusRun): void {
  for (const pid of findMentioning(run.marker)) sb.track(pid);
}

/** `start --pidfile P OPTIONS -- COMMAND` of a case, its processes tracked. */
async function startCase(sb: Sandbox, run: CorpusRun, options: string[] = []): Promise<Result> {
  const r = await sr(SOURCE, ["start", "--pidfile", sb.pidfile, ...options, "--", ...run.command]);
  track(sb, run);
  return r;
}

for (const c of CORPUS) {
  Deno.test({
    name: c.healthy
      ? `start (default readiness): ${c.name} starts and answers`
      : `start (default readiness): ${c.name} fails with its reason, leaving nothing`,
    ignore: !available(c.needs),
    async fn() {
      await using sb = await Sandbox.create();
      using busy = busyListener();
      const run = setUp(sb, c, busy.port);
      const r = await startCase(sb, run, ["--output", sb.path("output.log")]);
      if (c.healthy) {
        assert.equal(r.code, 0, r.stderr);
        const pid = Number(r.stdout.trim());
        assert.ok(alive(pid), `start printed ${pid}, which does not run`);
        assert.equal(readPid(sb.pidfile), pid);
        if (run.answers) assert.ok(await run.answers(), "the service does not answer");
        const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
        assert.equal(stop.code, 0, stop.stderr);
        await waitFor(() => findMentioning(run.marker).length === 0, 5000, "the service to end");
        assertNothingLeft(sb, run);
        return;
      }
      assert.equal(r.code, 1, `start reported success for: ${c.name}\n${r.stderr}`);
      assert.equal(r.stdout, "");
      const [reason] = r.stderr.split("\n");
      assert.match(
        reason!,
        /^singleton-run: the daemon ended before it was ready \(exit status [1-9]\d*\)/,
      );
      if (c.says) {
        assert.match(r.stderr, /last lines of ".*output\.log" since this start:\n/);
        assert.match(r.stderr, c.says);
      }
      assertNothingLeft(sb, run);
    },
  });
}

/** The corpus case the old default reports as started: it dies 0.6 s after its exec. */
const SLOW_EXIT = CORPUS.find((c) => c.name.startsWith("sh -c"))!;

Deno.test("--ready-after 20 keeps the old default: a program that dies after 0.6 s is reported started", async () => {
  await using sb = await Sandbox.create();
  using busy = busyListener();
  const run = setUp(sb, SLOW_EXIT, busy.port);
  const old = await startCase(sb, run, ["--ready-after", "20"]);
  assert.equal(old.code, 0, old.stderr);
  const pid = Number(old.stdout.trim());
  await waitFor(() => !alive(pid), 5000, "the program to exit by itself");
  // The default sees the same program fail.
  const now = await startCase(sb, run);
  assert.equal(now.code, 1, now.stderr);
  assert.match(now.stderr, /ended before it was ready \(exit status 4\)/);
  assertNothingLeft(sb, run);
});

Deno.test("start --supervise: the child's default readiness is start's, so a child that dies in its start-up fails the start", async () => {
  await using sb = await Sandbox.create();
  using busy = busyListener();
  const run = setUp(sb, SLOW_EXIT, busy.port);
  const r = await startCase(sb, run, ["--supervise"]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /supervisor ended before its first child was ready/);
  assert.match(r.stderr, /exit status 4 before it was ready/);
  assertNothingLeft(sb, run);
  // The old child default (100 ms) took it for started: the supervisor then restarts it.
  const old = await startCase(sb, run, ["--supervise", "--ready-after", "100"]);
  assert.equal(old.code, 0, old.stderr);
  sb.track(Number(old.stdout.trim()));
  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  await waitFor(() => findMentioning(run.marker).length === 0, 5000, "the child to end");
  assertNothingLeft(sb, run);
});

Deno.test("start --keeper uses start's default: a program that dies in its start-up fails the start", async () => {
  await using sb = await Sandbox.create();
  using busy = busyListener();
  const run = setUp(sb, SLOW_EXIT, busy.port);
  const r = await startCase(sb, run, ["--keeper"]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /keeper ended before the daemon was ready/);
  assertNothingLeft(sb, run);
});

/** A healthy server of the corpus, for the supervisor's and the keeper's serving look. */
const SERVER = CORPUS.find((c) => c.healthy && c.name === "python3 -m http.server")!;

for (const holder of ["--supervise", "--keeper"]) {
  Deno.test({
    name: `start ${holder}: a healthy server starts and answers under the default readiness`,
    ignore: !available(SERVER.needs),
    async fn() {
      await using sb = await Sandbox.create();
      using busy = busyListener();
      const run = setUp(sb, SERVER, busy.port);
      const r = await startCase(sb, run, [holder]);
      assert.equal(r.code, 0, r.stderr);
      sb.track(Number(r.stdout.trim()));
      assert.ok(await run.answers!(), "the server does not answer");
      const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
      assert.equal(stop.code, 0, stop.stderr);
      await waitFor(() => findMentioning(run.marker).length === 0, 5000, "the server to end");
      assertNothingLeft(sb, run);
    },
  });
}

/** A forking daemon whose child fails: the parent's exit 0 is not why the start failed. */
const FORKED_CHILD_FAILS = CORPUS.find((c) =>
  c.name === "redis-server --daemonize yes, port busy"
)!;

for (const holder of ["--supervise", "--keeper"]) {
  Deno.test({
    name:
      `start ${holder}: a forking daemon whose child fails ends the start with the child's exit`,
    ignore: !available(FORKED_CHILD_FAILS.needs),
    async fn() {
      await using sb = await Sandbox.create();
      using busy = busyListener();
      const run = setUp(sb, FORKED_CHILD_FAILS, busy.port);
      const r = await startCase(sb, run, [holder]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /giving up: redis-server \(pid \d+\) exit status 1 before it was ready/,
      );
      assertNothingLeft(sb, run);
    },
  });
}
