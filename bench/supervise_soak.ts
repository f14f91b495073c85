/**
 * Soak the supervisor: a child that exits at once, restarted with no delay
 * and no crash-loop limit, N times (default 1,000). Prints the supervisor's
 * RSS and descriptor count as the restarts go by, next to an empty
 * `deno run` script's RSS (the baseline the supervisor must stay within 20%
 * of).
 *
 *     deno run -A bench/supervise_soak.ts [RESTARTS]
 *
 * Exits 1 when the descriptor count grows or RSS climbs by more than 10%
 * between the first sample and the last.
 *
 * @module
 */

import { type Memory, memory, sleep } from "../testing/process.ts";
import { soak, spawnSupervisor } from "../testing/supervisor.ts";

const RESTARTS = Number(Deno.args[0] ?? 1000);

/** RSS of an empty `deno run` script, sampled after it has settled (median of 3). */
export async function baselineRss(): Promise<Memory> {
  const samples = [];
  for (let i = 0; i < 3; i++) {
    const dir = await Deno.makeTempDir();
    const script = `${dir}/empty.ts`;
    await Deno.writeTextFile(script, "setTimeout(() => {}, 60_000);\n");
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", script],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await sleep(1500);
    samples.push(memory(child.pid));
    child.kill("SIGKILL");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
  samples.sort((a, b) => a.rss - b.rss);
  return samples[1]!;
}

/**
 * The supervisor at rest: started as the controller starts it, with one child
 * (`sleep`) that runs, output captured to a file; sampled after it settled.
 */
export async function idleSupervisorRss(): Promise<Memory> {
  const dir = await Deno.makeTempDir({ prefix: "supervise-idle-" });
  const child = await spawnSupervisor({
    pidfile: `${dir}/idle.pid`,
    command: ["sleep", "3600"],
    output: `${dir}/out.log`,
    // Ready at once, so the sample is of a supervisor at rest, not one still looking at its child.
    readiness: { kind: "alive", afterMs: 100 },
  });
  try {
    await sleep(2000);
    return memory(child.pid);
  } finally {
    child.kill("SIGTERM"); // the supervisor stops its sleep, then exits
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Print the report; returns false when the descriptor count or the RSS grew
 * over the second half of the soak (the first half includes warm-up: code
 * pages and JIT tiers touched once).
 */
export async function report(restarts: number): Promise<boolean> {
  const base = await baselineRss();
  const idle = await idleSupervisorRss();
  const { samples, seconds } = await soak(restarts);
  const pct = (rss: number) => `${((rss / base.rss - 1) * 100).toFixed(1)}%`;
  console.log(`empty deno run script:  RSS ${base.rss} kB (anon ${base.anon}, PSS ${base.pss})`);
  console.log(
    `supervisor, idle child: RSS ${idle.rss} kB (anon ${idle.anon}, PSS ${idle.pss}): ` +
      `${pct(idle.rss)} vs baseline`,
  );
  console.log(`supervisor soak: ${restarts} crash-restarts in ${seconds.toFixed(1)} s`);
  console.log("restarts   RSS kB  anon kB   PSS kB  fds  RSS vs baseline");
  for (const s of samples) {
    console.log(
      `${String(s.restarts).padStart(8)} ${String(s.rss).padStart(8)} ${
        String(s.anon).padStart(8)
      } ${String(s.pss).padStart(8)} ${String(s.fds).padStart(4)}  ${pct(s.rss)}`,
    );
  }
  const half = samples.filter((s) => s.restarts >= restarts / 2);
  const early = samples.filter((s) => s.restarts < restarts / 2);
  const mid = half[0]!;
  const last = samples.at(-1)!;
  // fds vary by 2-6 with the pipes of a child alive at the moment of sampling.
  const maxEarly = Math.max(...early.map((s) => s.fds));
  const maxLate = Math.max(...half.map((s) => s.fds));
  const fdsFlat = maxLate <= maxEarly;
  const rssFlat = last.rss <= mid.rss * 1.05;
  console.log(
    `fd count ${
      fdsFlat ? "flat" : "GREW"
    } (max ${maxEarly} in the first half, ${maxLate} after); ` +
      `RSS ${rssFlat ? "flat" : "GREW"} over the second half (${mid.rss} -> ${last.rss} kB)`,
  );
  return fdsFlat && rssFlat;
}

if (import.meta.main) {
  if (!(await report(RESTARTS))) Deno.exit(1);
}
