/**
 * A command that runs to its end synchronously (status, list, help) ends as
 * a script ends, and so leaves Deno's compiled code of the command for the
 * next run; one that exited at once left none, and every status compiled the
 * whole bundle again (the bench's "compiled afresh" row: about 11 ms each).
 * Checked in the cache of a Deno directory of the test's own, with a copy of
 * the bundle no other process has run.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { bundleVariant, ROOT } from "./harness.ts";

/** The rows Deno stored for this module in DENO_DIR's code cache. */
function cachedRows(denoDir: string, script: string): number {
  const path = `${denoDir}/v8_code_cache_v2`;
  try {
    Deno.statSync(path);
  } catch {
    return 0;
  }
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const row = db.prepare("SELECT count(*) AS n FROM codecache WHERE specifier = ?")
      .get(`file://${script}`) as { n: number } | undefined;
    return row?.n ?? 0;
  } finally {
    db.close();
  }
}

async function runIn(dir: string, args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command(Deno.execPath(), {
    args,
    env: { DENO_DIR: `${dir}/deno`, SINGLETON_RUN_DIR: `${dir}/services` },
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("status, list and --version leave the command's compiled code for the next run", async () => {
  await bundleVariant();
  for (const args of [["status", "--pidfile", "PIDFILE"], ["list"], ["--version"]]) {
    const dir = Deno.makeTempDirSync({ prefix: "sr-codecache-" });
    try {
      const script = `${dir}/singleton-run.js`;
      Deno.copyFileSync(`${ROOT}dist/singleton-run.js`, script);
      const argv = args.map((a) => a === "PIDFILE" ? `${dir}/none.pid` : a);
      const r = await runIn(dir, ["run", "-A", "--quiet", script, ...argv]);
      const expected = args[0] === "status" ? 3 : 0;
      assert.equal(r.code, expected, new TextDecoder().decode(r.stderr));
      assert.equal(
        cachedRows(`${dir}/deno`, script),
        1,
        `${args[0]}: no compiled code stored for the next run`,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
});
