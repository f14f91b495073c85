/**
 * The suite's runner (tools/suite.ts), run on small test files of its own: a
 * process a test leaves behind fails the run, named and killed; a file that
 * hangs is named with its processes, killed, and the next file still runs;
 * the last line sums the files' results.
 */

import assert from "node:assert/strict";
import { findProcesses, marker, ROOT } from "./cli/harness.ts";

const FIXTURES = "tests/fixtures/suite";

async function suite(files: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}tools/suite.ts`, ...files.map((f) => `${FIXTURES}/${f}`)],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const last = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  return { code: out.code, text, last };
}

Deno.test("the runner fails a run that leaves a daemon behind, names it, and kills it", async () => {
  const mark = marker();
  const r = await suite(["leaves.ts"], { SUITE_FIXTURE_MARK: mark });
  assert.equal(r.code, 1, r.text);
  assert.match(
    r.text,
    new RegExp(`outlived the tests[^\\n]*\\n\\s+pid [0-9]+: sleep ${mark}`),
    r.text,
  );
  assert.match(r.last, /^FAILED \| 1 passed \| 0 failed/, r.text);
  assert.deepEqual(findProcesses(["sleep", mark]), [], "the runner killed it");
});

Deno.test("a file past its time limit is named with its processes and killed; the next file runs", async () => {
  const r = await suite(["hangs.ts", "fine.ts"], { SINGLETON_RUN_TEST_LIMIT: "3s" });
  assert.equal(r.code, 1, r.text);
  assert.match(r.text, /hangs\.ts: still running after 3 s, with 2 process\(es\); killed:/, r.text);
  assert.match(r.text, /pid [0-9]+: (\/usr\/bin\/)?sleep 3600/, r.text);
  // The file after it ran: its pass and its failure are counted, the hang as one failure more.
  assert.match(r.last, /^FAILED \| 1 passed \| 2 failed/, r.text);
  assert.match(
    r.text,
    /failed:\n\s+tests\/fixtures\/suite\/hangs\.ts[^\n]*\n\s+tests\/fixtures\/suite\/fine\.ts\n\s+fails\n/,
    r.text,
  );
});
