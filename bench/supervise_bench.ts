/**
 * `deno task bench`: the supervisor's RSS next to an empty `deno run`
 * script, and a soak of crash-restarts (see supervise_soak.ts, which runs
 * the full 1,000 on its own: `deno run -A bench/supervise_soak.ts`).
 *
 * @module
 */

import { soak } from "../testing/supervisor.ts";
import { report } from "./supervise_soak.ts";

await report(Number(Deno.env.get("SOAK_RESTARTS") ?? 1000));

Deno.bench({
  name: "supervisor: start + 100 crash-restarts (restart delay 0)",
  n: 3,
  warmup: 0,
  async fn(b) {
    b.start();
    await soak(100, 0);
    b.end();
  },
});
