/**
 * One launch, three holders: the program itself, a keeper, a supervisor.
 * `start` decides who holds the lock once, from the launch spec, and follows
 * that holder's path; each case checks what only its own path gives (who
 * the pid file names, whose child the program is, who holds the lock), so
 * any two paths swapped fail here. Through the command and the control API.
 */

import assert from "node:assert/strict";
import { start, statusSync, stop } from "../../src/control/mod.ts";
import { argvOf, statOf } from "../../testing/process.ts";
import {
  findProcesses,
  holds,
  marker,
  readPid,
  Sandbox,
  SOURCE,
  sr,
  startFine,
  waitFor,
} from "./harness.ts";

/** What each holder's path must give, for a running `sleep MARK`. */
interface Expected {
  /** The pid file names the program (self, keeper) or the supervisor. */
  readonly namesProgram: boolean;
  /** The program's parent is the named keeper or supervisor stage. */
  readonly stage: "keeper" | "supervisor" | undefined;
}

const CASES: readonly [string, string[], Expected][] = [
  ["self", [], { namesProgram: true, stage: undefined }],
  ["keeper", ["--keeper"], { namesProgram: true, stage: "keeper" }],
  ["supervisor", ["--supervise"], { namesProgram: false, stage: "supervisor" }],
];

/** The internal stage's role in a process's argv, if it is one. */
function roleOf(pid: number): string | undefined {
  const argv = argvOf(pid) ?? [];
  const at = argv.indexOf("--singleton-run-internal");
  return at < 0 ? undefined : argv[at + 1];
}

/** Check one running service against what its holder's path gives. */
async function check(pidfile: string, sleep: string[], want: Expected, sb: Sandbox): Promise<void> {
  let program = 0;
  await waitFor(() => (program = findProcesses(sleep)[0] ?? 0) !== 0, 5000, "the program");
  sb.track(program);
  const named = readPid(pidfile)!;
  sb.track(named);
  const parent = statOf(program)!.ppid;
  const s = statusSync(pidfile);
  assert.equal(s.state, "running");
  if (want.namesProgram) {
    assert.equal(named, program, "the pid file names the program");
  } else {
    assert.notEqual(named, program, "the pid file names the supervisor, not the program");
    assert.equal(parent, named, "the program is the supervisor's child");
    assert.equal(s.supervisor?.childPid, program);
  }
  if (want.stage === undefined) {
    assert.equal(roleOf(parent), undefined, "no stage of ours is the program's parent");
    assert.ok(holds(program, pidfile), "the program holds the lock itself");
    assert.equal(s.keeper, undefined);
  } else {
    assert.equal(roleOf(parent), want.stage, `the program runs under the ${want.stage}`);
    sb.track(parent);
  }
  if (want.stage === "keeper") assert.equal(s.keeper, parent, "status names the keeper");
}

for (const [holder, flags, want] of CASES) {
  Deno.test(`start's ${holder} path: who the pid file names, whose child the program is (command)`, async () => {
    await using sb = await Sandbox.create();
    const sleep = ["sleep", marker()];
    const r = await startFine(SOURCE, sb.pidfile, [...flags, "--", ...sleep]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(Number(r.stdout), readPid(sb.pidfile), "start prints the pid the file names");
    await check(sb.pidfile, sleep, want, sb);
    const stopped = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.deepEqual(findProcesses(sleep), [], "nothing left");
  });

  Deno.test(`start's ${holder} path: the same through the control API`, async () => {
    await using sb = await Sandbox.create();
    const sleep = ["sleep", marker()];
    const options = holder === "keeper"
      ? { keeper: true }
      : holder === "supervisor"
      ? { supervise: {} }
      : {};
    const r = await start({ pidfile: sb.pidfile, command: sleep, ...options });
    assert.equal(r.pid, readPid(sb.pidfile));
    await check(sb.pidfile, sleep, want, sb);
    await stop({ pidfile: sb.pidfile });
    await waitFor(() => findProcesses(sleep).length === 0, 5000, "nothing left");
  });
}
