/**
 * Lock churn for the "status under lock churn" family: take and drop an
 * flock on 16 files in DIR, forever (the family kills it by pid).
 *
 * @module
 */

import { C, open, tryFlock } from "../src/ffi/mod.ts";

const dir = Deno.args[0]!;
const fds = Array.from(
  { length: 16 },
  (_, i) => open(`${dir}/churn${i}`, C.O_RDWR | C.O_CREAT | C.O_CLOEXEC, 0o644),
);
for (;;) {
  for (const fd of fds) tryFlock(fd, C.LOCK_EX);
  for (const fd of fds) tryFlock(fd, C.LOCK_UN);
}
