/**
 * Smaller stress families: a storm of simultaneous starts, status under lock
 * churn (another process taking and dropping locks while /proc/locks is
 * longer than a page), and a supervisor whose child is killed again and
 * again (its descriptors must not grow).
 *
 * @module
 */

import {
  fdsOf,
  findInstances,
  holdsLockOn,
  killQuietly,
  ROOT,
  sleep,
  STARTS_FINE,
  statOf,
} from "../testing/process.ts";
import { PidFile } from "../mod.ts";
import { type Cli, show, stackLines, strays, Tally } from "./common.ts";

/**
 * N starts at once on one pid file: exactly one exits 0 and prints the pid,
 * every other exits 3 naming that pid; one instance runs; stop then leaves
 * none.
 *
 * @param cli the command under test
 * @param n how many at once
 * @returns the tally
 */
export async function stormFamily(cli: Cli, n: number): Promise<Tally> {
  const t = new Tally("start storm");
  const dir = await Deno.makeTempDir({ prefix: "sr-stress-storm-" });
  const pidfile = `${dir}/d.pid`;
  const mark = `0.0${Deno.pid}${Date.now() % 100000}`;
  try {
    const results = await Promise.all(
      Array.from(
        { length: n },
        () =>
          cli.run(
            ["start", ...STARTS_FINE, "--pidfile", pidfile, "--", "/bin/sleep", "3600", mark],
            {
              timeoutMs: 60_000,
            },
          ),
      ),
    );
    const winners = results.filter((r) => r.code === 0);
    t.check(winners.length === 1, () => `${winners.length} of ${n} starts exited 0`);
    const pid = Number(winners[0]?.stdout.trim());
    for (const r of results.filter((r) => r.code !== 0)) {
      t.check(
        r.code === 3 && r.stderr.includes(`pid ${pid}`) && r.stdout === "",
        () => `a losing start: expected exit 3 naming pid ${pid}: ${show(r)}`,
      );
    }
    t.check(
      results.every((r) => stackLines(r.stderr).length === 0),
      () => "a stack trace on stderr",
    );
    const inst = findInstances(mark);
    t.check(
      inst.length === 1 && inst[0] === pid,
      () => `instances ${inst.join(", ")}, start said ${pid}`,
    );
    const stop = await cli.run(["stop", "--pidfile", pidfile]);
    t.check(stop.code === 0, () => `stop: ${show(stop)}`);
    await sleep(20);
    t.check(findInstances(mark).length === 0, () => "an instance survived stop");
    t.check(strays(dir).length === 0, () => `processes left: ${strays(dir).join(", ")}`);
    t.facts.push(`${n} simultaneous starts`);
  } finally {
    for (const p of findInstances(mark).concat(strays(dir))) killQuietly(p, "SIGKILL");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return t;
}

/**
 * Status under lock churn: 150 other locks held (so /proc/locks spans pages)
 * and a process taking and dropping 16 locks in a loop; a held pid file must
 * read as running every time, in process (PidFile.probe) and through
 * `status`.
 *
 * @param cli the command under test
 * @param probes how many in-process probes
 * @param statuses how many `status` commands
 * @returns the tally
 */
export async function churnFamily(cli: Cli, probes: number, statuses: number): Promise<Tally> {
  const t = new Tally("status under lock churn");
  const dir = await Deno.makeTempDir({ prefix: "sr-stress-churn-" });
  const many: PidFile[] = [];
  let churn: Deno.ChildProcess | undefined;
  try {
    for (let i = 0; i < 150; i++) many.push(await PidFile.acquire(`${dir}/m${i}.pid`));
    const held = await PidFile.acquire(`${dir}/held.pid`);
    many.push(held);
    churn = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${ROOT}/stress/churn.ts`, dir],
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    await sleep(500);
    let wrong = 0;
    for (let i = 0; i < probes; i++) {
      if ((await PidFile.probe(held.path)).state !== "running") wrong++;
    }
    t.check(wrong === 0, () => `PidFile.probe said not running ${wrong} of ${probes} times`);
    let wrongStatus = 0;
    for (let i = 0; i < statuses; i++) {
      const r = await cli.run(["status", "--pidfile", held.path]);
      if (r.code !== 0) wrongStatus++;
    }
    t.check(
      wrongStatus === 0,
      () => `status said not running ${wrongStatus} of ${statuses} times`,
    );
    t.facts.push(`${probes} probes, ${statuses} status commands, 151 locks held, 16 churning`);
  } finally {
    if (churn) {
      killQuietly(churn.pid, "SIGKILL");
      await churn.status;
    }
    for (const l of many) l.release();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return t;
}

/**
 * `start --supervise`: kill the supervised child again and again; each time
 * the supervisor starts a new one, there is never more than one, and the
 * supervisor's descriptor count does not grow.
 *
 * @param cli the command under test
 * @param kills how many times to kill the child
 * @returns the tally, or undefined when --supervise is not available
 */
export async function superviseFamily(cli: Cli, kills: number): Promise<Tally | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "sr-stress-sup-" });
  const pidfile = `${dir}/d.pid`;
  const mark = `0.0${Deno.pid}${(Date.now() % 100000) + 1}`;
  const t = new Tally("supervisor under kills");
  try {
    // Short restart delays and no give-up, so every kill is followed by a restart at once.
    const res = await cli.run([
      "start",
      ...STARTS_FINE,
      "--supervise",
      "--restart-delay",
      "50ms",
      "--restart-delay-max",
      "100ms",
      "--max-restarts",
      "100000",
      "--pidfile",
      pidfile,
      "--",
      "/bin/sleep",
      "3600",
      mark,
    ]);
    if (res.code === 2) return undefined;
    if (!t.check(res.code === 0, () => `start --supervise: ${show(res)}`)) return t;
    const child0 = await waitChild(mark, undefined);
    const sup = child0 === undefined ? undefined : statOf(child0)?.ppid;
    if (!t.check(sup !== undefined && sup > 1, () => "no supervised child found")) return t;
    await sleep(200);
    const fds0 = fdsOf(sup!).size;
    let child = child0!;
    for (let i = 0; i < kills; i++) {
      killQuietly(child, "SIGKILL");
      const next = await waitChild(mark, child);
      if (!t.check(next !== undefined, () => `kill ${i + 1}: no new child within 15 s`)) break;
      child = next!;
      const inst = findInstances(mark);
      t.check(inst.length === 1, () => `kill ${i + 1}: ${inst.length} instances`);
    }
    await sleep(200);
    const fds1 = fdsOf(sup!).size;
    t.check(
      fds1 <= fds0,
      () => `supervisor descriptors grew from ${fds0} to ${fds1} over ${kills} restarts`,
    );
    // Now the supervisor itself dies by SIGKILL: its child may stay (holding
    // the lock, named by the file) or go with it, but a second start must
    // never make a second instance, and stop must still end everything.
    killQuietly(sup!, "SIGKILL");
    await sleep(300);
    const orphans = findInstances(mark);
    const info = () => `after the supervisor's SIGKILL: instances ${orphans.join(", ") || "none"}`;
    let ino: number | undefined;
    try {
      ino = Deno.statSync(pidfile).ino ?? undefined;
    } catch {
      // absent
    }
    t.check(
      orphans.every((p) => ino !== undefined && holdsLockOn(p, ino)),
      () => `${info()}: a child runs without holding the lock`,
    );
    const again = await cli.run([
      "start",
      ...STARTS_FINE,
      "--supervise",
      "--pidfile",
      pidfile,
      "--",
      "/bin/sleep",
      "3600",
      mark,
    ]);
    await sleep(300);
    const after = findInstances(mark);
    t.check(
      after.length <= 1,
      () => `${info()}; start again: ${show(again)}; now ${after.length} instances`,
    );
    t.check(
      orphans.length ? again.code === 3 : again.code === 0,
      () => `${info()}; start again: ${show(again)}`,
    );
    const stop = await cli.run(["stop", "--pidfile", pidfile]);
    t.check(stop.code === 0, () => `stop: ${show(stop)}`);
    await sleep(100);
    const left = strays(dir).concat(findInstances(mark));
    t.check(left.length === 0, () => `left behind after stop: ${left.join(", ")}`);
    t.facts.push(
      `${kills} kills of the child; supervisor fds ${fds0} -> ${fds1}; then the supervisor SIGKILLed`,
    );
    return t;
  } finally {
    for (const p of findInstances(mark).concat(strays(dir))) killQuietly(p, "SIGKILL");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function waitChild(mark: string, not: number | undefined): Promise<number | undefined> {
  const deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    const found = findInstances(mark).filter((p) => p !== not);
    if (found.length) return found[0];
    await sleep(20);
  }
  return undefined;
}
