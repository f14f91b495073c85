/**
 * In-process lock operations, measured with Deno.bench: `PidFile.acquire` +
 * `release` and `PidFile.probe`, each on a tmpfs (/dev/shm, like /run on most
 * systems) and on the disk under the system temp dir (where acquire's fsync
 * of the pid it writes costs most of the time).
 *
 * Run alone: `deno bench --allow-all bench/pidfile_bench.ts`; `deno task bench`
 * runs it too and folds its numbers into the side-by-side table.
 *
 * @module
 */

import { PidFile } from "../mod.ts";
import { holdAsDaemon } from "./holder.ts";

/** A pid file path in a fresh directory under `base`, removed on unload. */
function scratch(base: string | undefined, label: string): string {
  let dir: string;
  try {
    dir = Deno.makeTempDirSync({ dir: base, prefix: `sr-bench-${label}-` });
  } catch {
    dir = Deno.makeTempDirSync({ prefix: `sr-bench-${label}-` });
  }
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return `${dir}/bench.pid`;
}

const places = [
  { label: "tmpfs", base: "/dev/shm" },
  { label: "disk", base: undefined },
] as const;

for (const { label, base } of places) {
  const path = scratch(base, label);

  Deno.bench({
    name: `PidFile.acquire+release (${label})`,
    group: "acquire+release",
    baseline: label === "tmpfs",
    async fn() {
      const lock = await PidFile.acquire(path);
      lock.release();
    },
  });

  // A held lock, as a running daemon keeps it (bench/holder.ts).
  const heldPath = path.replace(/bench\.pid$/, "held.pid");
  const holder = await holdAsDaemon(heldPath);
  globalThis.addEventListener("unload", () => holder[Symbol.dispose]());

  Deno.bench({
    name: `PidFile.probe, running (${label})`,
    group: "probe",
    baseline: label === "tmpfs",
    async fn() {
      const found = await PidFile.probe(heldPath);
      if (found.state !== "running") throw new Error(`expected running, got ${found.state}`);
    },
  });
}
