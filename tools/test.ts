/**
 * `deno task test`: run every test, as a child subreaper, and fail the run
 * when any process a test started outlived it. A test that leaves a daemon
 * running is a failing test, however the daemon got away (a double fork, a
 * new session, a process that closed every descriptor): its orphans are
 * reparented to this process, which finds them once `deno test` has ended,
 * names them, stops them by pid, and exits 1.
 *
 * Arguments are passed to `deno test` (a file or a `--filter` to run part).
 *
 * @module
 */

import { becomeSubreaper, reap } from "../src/ffi/mod.ts";
import { argvOf } from "../testing/process.ts";
import { childrenOf, procStat } from "../src/ffi/proc.ts";

becomeSubreaper();
const test = new Deno.Command(Deno.execPath(), {
  args: ["test", "--allow-all", "--doc", "--trace-leaks", ...Deno.args],
  stdin: "null",
}).spawn();
// Signals meant for the run (Ctrl-C) reach the test process, which ends; then the check below.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    try {
      test.kill(sig);
    } catch {
      // gone already
    }
  });
}
// Orphans that ended are reaped here at once (tests wait for a killed process's pid to be
// free); never the test process itself, whose status Deno waits for.
const reaper = setInterval(() => {
  for (const pid of childrenOf(Deno.pid, { zombies: true })) {
    if (pid !== test.pid && procStat(pid)?.state === "Z") reap(pid);
  }
}, 250);
const { code } = await test.status;
clearInterval(reaper);

// Every descendant left is an orphan a test left behind (the test process itself has ended).
const left = new Map<number, string>();
for (let round = 0; round < 3; round++) {
  for (const pid of childrenOf(Deno.pid)) {
    if (left.has(pid)) continue;
    left.set(pid, (argvOf(pid) ?? ["?"]).join(" ").slice(0, 160));
    try {
      Deno.kill(pid, "SIGKILL"); // our own child: its pid cannot be reused before we reap it
    } catch {
      // gone meanwhile
    }
  }
  await new Promise((r) => setTimeout(r, 200));
}
if (left.size > 0) {
  console.error(`\n${left.size} process(es) outlived the tests that started them (now killed):`);
  for (const [pid, argv] of left) console.error(`  pid ${pid}: ${argv}`);
  Deno.exit(1);
}
Deno.exit(code);
