/**
 * `deno task test`: every test file in a `deno test` process of its own, as a
 * child subreaper, each within a time limit.
 *
 * - The files are named here, never discovered by `deno test`: its default
 *   pattern takes any `test.ts`, and a runner it takes for a test module runs
 *   the whole suite again inside itself, without end.
 * - A file still running after its limit (`SINGLETON_RUN_TEST_LIMIT`, 15m)
 *   fails: the processes it has are printed, then killed, and the rest of the
 *   suite runs. A hang costs one file, named, not the whole run.
 * - A test that leaves a daemon running is a failing test, however the daemon
 *   got away (a double fork, a new session, a process that closed every
 *   descriptor): its orphans are reparented to this process, which finds them
 *   once every file has run, names them, stops them by pid, and exits 1.
 * - Everything is type-checked once, then each file runs with `--no-check`;
 *   the examples in the modules' documentation run as one more file.
 * - `SINGLETON_RUN_TEST_JOBS` files run at once (1 by default: several
 *   tests measure how soon something happens, and a suite that holds under
 *   load is checked with a load of its own, not with itself).
 *
 * Arguments: test files to run (all by default), and options passed to each
 * `deno test` (`--filter NAME`). The last line is `ok | N passed | N failed`
 * (or `FAILED | ...`), as `deno test` prints it.
 *
 * @module
 */

import { becomeSubreaper, reap } from "../src/ffi/mod.ts";
import { childrenOf, processTree, procStat } from "../src/ffi/proc.ts";
import { durationMs } from "../src/launch/duration.ts";
import { argvOf } from "../testing/process.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const JOBS = Math.max(1, Number(Deno.env.get("SINGLETON_RUN_TEST_JOBS") ?? "1") || 1);
const LIMIT_MS = durationMs(Deno.env.get("SINGLETON_RUN_TEST_LIMIT") ?? "15m") ?? 15 * 60_000;
/** The modules whose documentation holds examples that run (`deno test --doc`). */
const DOCUMENTED = ["mod.ts", "cli.ts", "src/"];
const DOCS = "(examples in the documentation)";

/** Every test file under tests/, in the order `deno test` would take them. */
function testFiles(dir = "tests"): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(`${ROOT}/${dir}`)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) found.push(...testFiles(path));
    else if (entry.isFile && /_test\.ts$/.test(entry.name)) found.push(path);
  }
  return found.sort();
}

const named = Deno.args.filter((a) => a.endsWith(".ts") && !a.startsWith("-"));
const passed = Deno.args.filter((a) => !named.includes(a));
const files = named.length > 0 ? named : [...testFiles(), DOCS];

interface Outcome {
  readonly file: string;
  readonly ms: number;
  readonly passed: number;
  readonly failed: number;
  readonly failures: string[];
  readonly note?: string;
}

/** Counts and failing names from a JUnit report; undefined when there is none. */
function readReport(
  path: string,
): { passed: number; failed: number; failures: string[] } | undefined {
  let xml: string;
  try {
    xml = Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
  const cases = [...xml.matchAll(/<testcase name="([^"]*)"[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)];
  const unescape = (s: string) =>
    s.replaceAll("&quot;", '"').replaceAll("&apos;", "'").replaceAll("&lt;", "<")
      .replaceAll("&gt;", ">").replaceAll("&amp;", "&");
  const failures: string[] = [];
  let passedCount = 0;
  for (const c of cases) {
    const body = c[3] ?? "";
    if (/<failure|<error/.test(body)) failures.push(unescape(c[1]!));
    else if (!/<skipped/.test(body)) passedCount++;
  }
  return { passed: passedCount, failed: failures.length, failures };
}

function describe(pid: number): string {
  return `  pid ${pid}: ${(argvOf(pid) ?? ["?"]).join(" ").slice(0, 200)}`;
}

const running = new Set<number>();
let stopping = false;

async function runFile(file: string): Promise<Outcome> {
  const report = await Deno.makeTempFile({ prefix: "singleton-run-junit-", suffix: ".xml" });
  const args = file === DOCS
    ? [
      "test",
      "--allow-all",
      "--doc",
      "--trace-leaks",
      `--junit-path=${report}`,
      ...passed,
      ...DOCUMENTED,
    ]
    : [
      "test",
      "--allow-all",
      "--no-check",
      "--trace-leaks",
      `--junit-path=${report}`,
      ...passed,
      file,
    ];
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: JOBS === 1 ? "inherit" : "piped",
    stderr: JOBS === 1 ? "inherit" : "piped",
  }).spawn();
  running.add(child.pid);
  const output = JOBS === 1 ? undefined : child.output();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), LIMIT_MS);
  });
  let note: string | undefined;
  const first = await Promise.race([child.status, timedOut]);
  if (first === "late") {
    const tree = processTree(child.pid);
    note = `still running after ${LIMIT_MS / 1000} s, with ${tree.length} process(es); killed:\n` +
      tree.map(describe).join("\n");
    for (const pid of tree.reverse()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // ended meanwhile
      }
    }
  }
  clearTimeout(timer);
  const { code } = await child.status;
  running.delete(child.pid);
  if (output) {
    const { stdout, stderr } = await output;
    await Deno.stdout.write(stdout);
    await Deno.stderr.write(stderr);
  }
  const counts = readReport(report);
  await Deno.remove(report).catch(() => {});
  const ms = performance.now() - started;
  if (note === undefined && counts === undefined && code !== 0) {
    note = `deno test exited ${code} without a report`;
  }
  if (note !== undefined) console.error(`\n${file}: ${note}`);
  const failures = counts?.failures ?? [];
  const failed = (counts?.failed ?? 0) +
    (note !== undefined || (code !== 0 && failures.length === 0) ? 1 : 0);
  return { file, ms, passed: counts?.passed ?? 0, failed, failures, note };
}

becomeSubreaper();
// Orphans that ended are reaped at once (tests wait for a killed process's pid to be free);
// never a `deno test` of ours, whose status Deno waits for.
const reaper = setInterval(() => {
  for (const pid of childrenOf(Deno.pid, { zombies: true })) {
    if (!running.has(pid) && procStat(pid)?.state === "Z") reap(pid);
  }
}, 250);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    stopping = true;
    for (const pid of running) {
      try {
        Deno.kill(pid, sig);
      } catch {
        // ended
      }
    }
  });
}

const began = performance.now();
const checking = new Deno.Command(Deno.execPath(), {
  args: ["check", ...files.filter((f) => f !== DOCS), "tools/"],
  cwd: ROOT,
  stdin: "null",
}).spawn();
running.add(checking.pid); // Deno waits for its status: the reaper must not take it first
const check = await checking.status;
running.delete(checking.pid);
const outcomes: Outcome[] = [];
if (!check.success) {
  outcomes.push({ file: "(type check)", ms: 0, passed: 0, failed: 1, failures: [] });
} else {
  const queue = [...files];
  await Promise.all(
    Array.from({ length: Math.min(JOBS, queue.length) }, async () => {
      for (let file = queue.shift(); file !== undefined && !stopping; file = queue.shift()) {
        outcomes.push(await runFile(file));
      }
    }),
  );
}
clearInterval(reaper);

// Every descendant left is an orphan a test left behind (every `deno test` has ended).
const left = new Map<number, string>();
for (let round = 0; round < 3; round++) {
  for (const pid of childrenOf(Deno.pid)) {
    if (left.has(pid)) continue;
    left.set(pid, describe(pid));
    try {
      Deno.kill(pid, "SIGKILL"); // our own child: its pid cannot be reused before we reap it
    } catch {
      // gone meanwhile
    }
  }
  await new Promise((r) => setTimeout(r, 200));
}

const seconds = (ms: number) => `${Math.round(ms / 1000)}s`;
console.log("\nslowest files:");
for (const o of [...outcomes].sort((a, b) => b.ms - a.ms).slice(0, 8)) {
  console.log(`  ${seconds(o.ms).padStart(5)} ${o.file}`);
}
const failedFiles = outcomes.filter((o) => o.failed > 0);
if (failedFiles.length > 0) {
  console.log("\nfailed:");
  for (const o of failedFiles) {
    console.log(`  ${o.file}${o.note ? ` (${o.note.split("\n")[0]})` : ""}`);
    for (const name of o.failures) console.log(`    ${name}`);
  }
}
if (left.size > 0) {
  console.error(`\n${left.size} process(es) outlived the tests that started them (now killed):`);
  for (const line of left.values()) console.error(line);
}
const total = (key: "passed" | "failed") => outcomes.reduce((n, o) => n + o[key], 0);
const ok = failedFiles.length === 0 && left.size === 0 && outcomes.length === files.length;
const elapsed = performance.now() - began;
const m = Math.floor(elapsed / 60_000);
console.log(
  `\n${ok ? "ok" : "FAILED"} | ${total("passed")} passed | ${total("failed")} failed (${m}m${
    seconds(elapsed % 60_000)
  })`,
);
Deno.exit(ok ? 0 : 1);
