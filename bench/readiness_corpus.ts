/**
 * `start` against the readiness corpus (testing/corpus.ts): each real start,
 * failing or healthy, run through the command under each readiness asked for
 * (by default the old default, `--ready-after 20`, and the default), on an
 * idle machine and with every core kept busy. For each it notes what `start`
 * said (exit code, reason, time) and whether that was true: a start that
 * reported success for a program that died soon after is marked WRONG, and so
 * is a failed start that left a process, the lock, or a pid file naming a
 * live process; a healthy server that did not answer yet when `start`
 * returned is marked too.
 *
 * ```sh
 * deno run -A bench/readiness_corpus.ts                 # idle, then loaded
 * deno run -A bench/readiness_corpus.ts --load 0        # idle only
 * deno run -A bench/readiness_corpus.ts --variant 1s=--ready-after,1000 --only nginx
 * ```
 *
 * Options: `--variant NAME=ARG,ARG` (repeatable; replaces the default pair),
 * `--load N` (busy loops while loaded; default: one per CPU; 0 skips the
 * loaded pass), `--only TEXT` (cases whose name holds it), `--runs N`
 * (default 1; the table shows the slowest start), `--json PATH`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { available, busyListener, CORPUS, type CorpusCase } from "../testing/corpus.ts";
import {
  cliArgv,
  findMentioning,
  isAlive,
  killAll,
  killQuietly,
  listPids,
  ROOT,
  runCmd,
  sleep,
  statOf,
  tempDir,
} from "../testing/process.ts";
import { freePort } from "../testing/cluster.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    variant: { type: "string", multiple: true },
    load: { type: "string" },
    only: { type: "string" },
    runs: { type: "string", default: "1" },
    json: { type: "string" },
    form: { type: "string", default: "source" },
  },
});

/** One readiness to try: its name and start's extra arguments. */
interface Variant {
  readonly name: string;
  readonly args: string[];
}

const VARIANTS: Variant[] = (args.values.variant ?? ["old=--ready-after,20", "default="]).map(
  (v) => {
    const [name, list = ""] = v.split("=", 2) as [string, string?];
    return { name, args: list === "" ? [] : list.split(",") };
  },
);
const LOAD = Number(args.values.load ?? navigator.hardwareConcurrency);
const RUNS = Number(args.values.runs);
const CLI = cliArgv(args.values.form === "bundle" ? "bundle" : "source");
/** How long a started program must then live for its start to have been right. */
const LIVES_MS = 5000;

/** One start of one case under one variant. */
interface Outcome {
  readonly case: string;
  readonly healthy: boolean;
  readonly variant: string;
  readonly load: boolean;
  readonly code: number;
  readonly reason: string;
  readonly ms: number;
  /** What was wrong with it, if anything. */
  readonly wrong: string[];
}

/** The first line of start's stderr, without the command's name. */
function reasonOf(stderr: string, code: number): string {
  if (code === 0) return "";
  const line = stderr.split("\n")[0] ?? "";
  return line.replace(/^singleton-run: /, "");
}

/** Whether a lock on this file is listed in /proc/locks. */
function locked(path: string): boolean {
  let ino: number;
  try {
    ino = Deno.statSync(path).ino!;
  } catch {
    return false;
  }
  return Deno.readTextFileSync("/proc/locks").split("\n").some((l) => l.includes(`:${ino} `));
}

function pidIn(path: string): number | undefined {
  try {
    const text = Deno.readTextFileSync(path).trim();
    return text === "" ? undefined : Number(text);
  } catch {
    return undefined;
  }
}

async function once(c: CorpusCase, v: Variant, load: boolean): Promise<Outcome> {
  await using dir = await tempDir("singleton-run-corpus-");
  using busy = busyListener();
  const run = c.setup({ dir: dir.path, busyPort: busy.port, freePort: freePort() });
  const pidfile = dir.join("service.pid");
  const wrong: string[] = [];
  const r = await runCmd([
    ...CLI,
    "start",
    "--pidfile",
    pidfile,
    "--output",
    dir.join("output.log"),
    ...v.args,
    "--",
    ...run.command,
  ], { timeoutMs: 30_000 });
  if (r.code === 0) {
    const pid = Number(r.stdout.trim());
    if (run.answers && !await run.answers()) wrong.push("not answering yet when start returned");
    const end = performance.now() + LIVES_MS;
    while (performance.now() < end && isAlive(pid)) await sleep(50);
    if (!isAlive(pid)) wrong.push("reported ready, then died");
    else if (run.answers && !await run.answers()) wrong.push("reported ready, does not answer");
    await runCmd([...CLI, "stop", "--pidfile", pidfile], { timeoutMs: 30_000 });
  } else {
    if (findMentioning(run.marker).length > 0) wrong.push("left a process");
    if (locked(pidfile)) wrong.push("left the lock held");
    const named = pidIn(pidfile);
    if (named !== undefined && isAlive(named)) wrong.push("pid file names a live process");
    if (c.healthy) wrong.push("failed a healthy start");
  }
  const left = leftovers(run.marker);
  if (left.length > 0) await killAll(left);
  return {
    case: c.name,
    healthy: c.healthy,
    variant: v.name,
    load,
    code: r.code,
    reason: reasonOf(r.stderr, r.code),
    ms: Math.round(r.ms),
    wrong,
  };
}

/**
 * What a case left running: the processes that carry its marker, and the
 * others of their sessions (nginx's workers do not carry it, and outlive a
 * master killed by SIGKILL).
 */
function leftovers(marker: string): number[] {
  const marked = findMentioning(marker);
  const sessions = new Set<number>();
  for (const pid of marked) {
    const sid = statOf(pid)?.sid;
    if (sid !== undefined && sid !== statOf(Deno.pid)?.sid) sessions.add(sid);
  }
  const all = new Set(marked);
  for (const pid of listPids()) {
    const sid = statOf(pid)?.sid;
    if (sid !== undefined && sessions.has(sid) && isAlive(pid)) all.add(pid);
  }
  return [...all];
}

/** Keep every CPU busy with shell loops, started (and later stopped) by pid. */
function startLoad(n: number): number[] {
  return Array.from(
    { length: n },
    () =>
      new Deno.Command("sh", { args: ["-c", "while :; do :; done"], stdin: "null" }).spawn().pid,
  );
}

const cases = CORPUS.filter((c) =>
  (args.values.only === undefined || c.name.includes(args.values.only)) && available(c.needs)
);
for (const c of CORPUS) {
  if (!cases.includes(c) && available(c.needs) === false) {
    console.error(`skipped: ${c.name} (${c.needs} is not installed)`);
  }
}

const outcomes: Outcome[] = [];
for (const load of LOAD > 0 ? [false, true] : [false]) {
  const loops = load ? startLoad(LOAD) : [];
  try {
    if (load) await sleep(500);
    for (const c of cases) {
      for (const v of VARIANTS) {
        let worst: Outcome | undefined;
        for (let i = 0; i < RUNS; i++) {
          const o = await once(c, v, load);
          if (!worst || o.wrong.length > worst.wrong.length || o.ms > worst.ms) worst = o;
        }
        outcomes.push(worst!);
        console.error(
          `${load ? "loaded" : "idle"}  ${c.name} [${v.name}]: exit ${worst!.code} ` +
            `${worst!.ms} ms ${worst!.reason} ${worst!.wrong.join("; ")}`,
        );
      }
    }
  } finally {
    for (const pid of loops) killQuietly(pid, "SIGKILL");
  }
}

const cell = (o: Outcome | undefined) =>
  o === undefined
    ? ""
    : `${o.code} · ${(o.ms / 1000).toFixed(2)} s${
      o.wrong.length ? ` · **WRONG: ${o.wrong.join("; ")}**` : ""
    }`;
const passes = LOAD > 0 ? [false, true] : [false];
const header = ["case", "expected"];
for (const load of passes) {
  for (const v of VARIANTS) header.push(`${v.name}, ${load ? "loaded" : "idle"}`);
}
header.push("reason (default, idle)");
console.log(`| ${header.join(" | ")} |`);
console.log(`| ${header.map(() => "---").join(" | ")} |`);
for (const c of cases) {
  const row = [c.name, c.healthy ? "starts" : "fails"];
  for (const load of passes) {
    for (const v of VARIANTS) {
      row.push(
        cell(outcomes.find((o) => o.case === c.name && o.variant === v.name && o.load === load)),
      );
    }
  }
  const last = outcomes.find((o) =>
    o.case === c.name && o.variant === VARIANTS[VARIANTS.length - 1]!.name && !o.load
  );
  row.push((last?.reason ?? "").replaceAll("|", "\\|"));
  console.log(`| ${row.join(" | ")} |`);
}
if (args.values.json) {
  Deno.writeTextFileSync(
    args.values.json,
    JSON.stringify({ date: new Date().toISOString(), root: ROOT, outcomes }, null, 2),
  );
}
