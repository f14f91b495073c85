/**
 * Lock churn for the "status under lock churn" family: take and drop an
 * flock on 16 files in DIR, until the family kills it by pid, or its parent
 * is gone (a run stopped by its time limit must not leave it churning).
 *
 * @module
 */

import { C, open, tryFlock } from "../src/ffi/mod.ts";
import { procStat } from "../src/ffi/proc.ts";

const dir = Deno.args[0]!;
const fds = Array.from(
  { length: 16 },
  (_, i) => open(`${dir}/churn${i}`, C.O_RDWR | C.O_CREAT | C.O_CLOEXEC, 0o644),
);
const parent = procStat("self")!.ppid;
for (let round = 1;; round++) {
  for (const fd of fds) tryFlock(fd, C.LOCK_EX);
  for (const fd of fds) tryFlock(fd, C.LOCK_UN);
  if (round % 1000 === 0 && procStat("self")?.ppid !== parent) Deno.exit(0);
}
