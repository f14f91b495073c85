/**
 * `list` (alias `ls`): every service in the directory of services, and each
 * `--pidfile` given, one aligned row each, or with `--json` an array of what
 * `status --json` prints, each with its name. A supervisor that gave up
 * leaves the failed state in the record: `status` and `list` show
 * `"state": "failed"` with when, after how many restarts and the last exit,
 * and `status` exits 3.
 */

import { STARTS_FINE } from "../../testing/process.ts";
import assert from "node:assert/strict";
import { list } from "../../src/control/mod.ts";
import { staticallyLoaded } from "../../testing/graph.ts";
import { CAN_BE_NOBODY, srAsNobody } from "./as_nobody.ts";
import { assertCleanError, findProcesses, locked, marker, Sandbox, SOURCE, sr } from "./harness.ts";

/** The command with `SINGLETON_RUN_DIR` set to `dir`. */
function inDir(dir: string) {
  return (args: readonly string[]) => sr(SOURCE, args, { env: { SINGLETON_RUN_DIR: dir } });
}

Deno.test("list: one aligned row per service (DIR's by name, then each --pidfile), or status's JSON with names", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const run = inDir(dir);
  const sleeps = [["sleep", marker()], ["sleep", marker()], ["sleep", marker()], [
    "sleep",
    marker(),
  ]];
  const launches: [string, string[]][] = [
    ["web", []],
    ["kept", ["--keeper"]],
    ["api", ["--supervise"]],
  ];
  for (const [i, [name, flags]] of launches.entries()) {
    const r = await run(["start", ...STARTS_FINE, "--name", name, ...flags, "--", ...sleeps[i]!]);
    assert.equal(r.code, 0, r.stderr);
    sb.track(Number(r.stdout));
  }
  const outside = await run([
    "start",
    ...STARTS_FINE,
    "--pidfile",
    sb.pidfile,
    "--",
    ...sleeps[3]!,
  ]);
  assert.equal(outside.code, 0, outside.stderr);
  sb.track(Number(outside.stdout));
  // A service that ran and was stopped stays listed: its record and pid file remain.
  const gone = await run(["start", ...STARTS_FINE, "--name", "old", "--", "sleep", marker()]);
  assert.equal(gone.code, 0, gone.stderr);
  assert.equal((await run(["stop", "old"])).code, 0);
  for (const pid of findProcesses(sleeps[1]!)) sb.track(pid);
  for (const pid of findProcesses(sleeps[2]!)) sb.track(pid);

  const text = await run(["list", "--pidfile", sb.pidfile]);
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stderr, "");
  const lines = text.stdout.trimEnd().split("\n");
  assert.match(lines[0]!, /^NAME +STATE +PID +UPTIME +RESTARTS +HOLDER +LOCK +COMMAND$/);
  const names = lines.slice(1).map((l) => l.split(/ +/)[0]);
  assert.deepEqual(names, ["api", "kept", "old", "web", sb.pidfile], "sorted, then --pidfile");
  const column = lines[0]!.indexOf("STATE");
  for (const line of lines.slice(1)) assert.match(line.slice(column), /^(running|stopped) /);
  const row = (name: string) => lines.find((l) => l.startsWith(`${name} `))!;
  assert.match(
    row("web"),
    new RegExp(`running +\\d+ +\\d+s +- +self +- +${sleeps[0]!.join(" ")}$`),
  );
  assert.match(row("kept"), /running +\d+ .* keeper \d+ /);
  assert.match(row("api"), new RegExp(`running +\\d+ +\\d+s +0 +supervisor +- +sleep `));
  assert.match(row("old"), /stopped +- +- +- +- +- +sleep /);

  const json = await sr(SOURCE, ["ls", "--json", "--pidfile", sb.pidfile], {
    env: { SINGLETON_RUN_DIR: dir },
  });
  assert.equal(json.code, 0, json.stderr);
  const reports = JSON.parse(json.stdout) as { name: string; pidfile: string }[];
  assert.deepEqual(reports.map((r) => r.name), names);
  for (const r of reports) {
    const alone = (await sr(SOURCE, ["status", "--json", "--pidfile", r.pidfile])).stdout;
    const { name: _, ...same } = r as Record<string, unknown>;
    assert.deepEqual(steady(same), steady(JSON.parse(alone)), `${r.name}: status --json's object`);
  }
  const last = (await list({ pidfiles: [sb.pidfile] })).at(-1)!;
  assert.equal(last.name, sb.pidfile, "the control API names a pid file given by its path");
  assert.equal(last.state, "running");
  for (const name of ["web", "kept", "api"]) assert.equal((await run(["stop", name])).code, 0);
  assert.equal((await run(["stop", "--pidfile", sb.pidfile])).code, 0);
  for (const s of sleeps) assert.deepEqual(findProcesses(s), []);
});

/** A report without what changes from one look to the next (uptimes, memory). */
function steady(report: unknown): unknown {
  return JSON.parse(
    JSON.stringify(report, (key, value) => /uptime|rss/i.test(key) ? undefined : value),
  );
}

Deno.test("a supervisor that gave up: status and list say failed (when, restarts, last exit), status exits 3", async () => {
  await using sb = await Sandbox.create();
  const dir = sb.path("services");
  const run = inDir(dir);
  const r = await run([
    "start",
    "--name",
    "crash",
    "--supervise",
    // Ready by time alone: each run lives 0.3 s, so the first counts as started and then crashes.
    "--ready-after",
    "100ms",
    "--max-restarts",
    "1",
    "--restart-delay",
    "100ms",
    "--",
    "sh",
    "-c",
    "sleep 0.3; exit 1",
  ]);
  assert.equal(r.code, 0, r.stderr);
  sb.track(Number(r.stdout));
  let st = { code: -1, stdout: "", stderr: "", ms: 0 };
  for (let i = 0; i < 100 && st.code !== 3; i++) {
    st = await run(["status", "crash"]);
    if (st.code !== 3) await new Promise((done) => setTimeout(done, 100));
  }
  assert.equal(st.code, 3, st.stdout + st.stderr);
  assert.match(
    st.stdout,
    /^failed \(gave up at \S+ after 1 restart\(s\), last: exit status 1\)\n$/,
  );
  const json = JSON.parse((await run(["status", "crash", "--json"])).stdout);
  assert.equal(json.state, "failed");
  assert.equal(json.code, 3);
  assert.equal(json.failed.restarts, 1);
  assert.equal(json.failed.lastExit, "exit status 1");
  assert.ok(Date.parse(json.failed.at) > 0);
  assert.deepEqual(json.spec.command, ["sh", "-c", "sleep 0.3; exit 1"]);
  assert.ok(!locked(`${dir}/crash.pid`), "no lock is held");
  const listed = await run(["list"]);
  assert.equal(listed.code, 0);
  assert.match(listed.stdout, /^crash +failed +- +- +1 +- +- +sh -c 'sleep 0\.3; exit 1'$/m);
  const array = JSON.parse((await run(["list", "--json"])).stdout);
  assert.deepEqual(array[0].failed, json.failed);
  assert.equal(array[0].state, "failed");
  // Started again, it is no longer failed.
  const again = await run(["restart", "crash", "--supervise", "--max-restarts", "0"]);
  assert.equal(again.code, 0, again.stderr);
  sb.track(Number(again.stdout));
  const now = JSON.parse((await run(["status", "crash", "--json"])).stdout);
  assert.equal(now.state, "running");
  assert.equal(now.failed, undefined);
  assert.equal((await run(["stop", "crash"])).code, 0);
});

Deno.test("list with no DIR prints nothing and makes nothing; a DIR it cannot read is exit 1", async () => {
  await using sb = await Sandbox.create();
  const run = inDir(sb.path("services"));
  const r = await run(["list"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "");
  assert.equal((await run(["list", "--json"])).stdout, "[]\n");
  assert.deepEqual(sb.list(), []);
  // A file where DIR should be.
  Deno.writeTextFileSync(sb.path("services"), "");
  assertCleanError(await run(["list"]), 1, /is not a directory/);
  assertCleanError(await run(["list", "extra"]), 2, /unexpected argument "extra"/);
});

Deno.test({
  name: "list as nobody: its own services, and none of root's files read",
  ignore: !CAN_BE_NOBODY,
  async fn() {
    await using sb = await Sandbox.create();
    await Deno.chmod(sb.dir, 0o755);
    const dir = sb.path("services");
    // Root's service in a DIR nobody may read: listed, but its record (0600) is not read.
    const root = await inDir(dir)([
      "start",
      ...STARTS_FINE,
      "--name",
      "rootsvc",
      "--",
      "sleep",
      marker(),
    ]);
    assert.equal(root.code, 0, root.stderr);
    sb.track(Number(root.stdout));
    const r = await srAsNobody(["list", "--json"], { SINGLETON_RUN_DIR: dir });
    assert.equal(r.code, 0, r.stderr);
    const [svc] = JSON.parse(r.stdout);
    assert.equal(svc.name, "rootsvc");
    assert.equal(svc.state, "running");
    assert.equal(svc.spec, undefined, "root's record is not nobody's to read");
    assert.equal((await inDir(dir)(["stop", "rootsvc"])).code, 0);
  },
});

Deno.test("the list path loads neither LogTape nor the supervisor runtime nor the spawn code", async () => {
  const loaded = await staticallyLoaded("src/cli/commands/list.ts");
  assert.ok(loaded.includes("src/control/status.ts"), "status's own code");
  for (const heavy of ["logtape", "src/supervisor/supervisor.ts", "src/launch/spawn.ts"]) {
    assert.ok(!loaded.some((u) => u.includes(heavy)), `${heavy} is loaded by list`);
  }
});
