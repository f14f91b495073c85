/**
 * One syslog line through src/syslog/syslog.ts, timed: run inside the private mount
 * namespace of testing/rsyslog.ts, where /dev/log is a real rsyslogd.
 * Prints `median_us=N`. bench/run.ts starts it; alone it needs a /dev/log.
 *
 * @module
 */

import { closeLog, log, openLog } from "../src/syslog/syslog.ts";

const N = Number(Deno.args[0] ?? 2000);
openLog("sr-bench", { facility: "daemon", noDelay: true });
const samples: number[] = [];
for (let i = 0; i < N; i++) {
  const t0 = performance.now();
  log("info", `bench line ${i}`);
  samples.push((performance.now() - t0) * 1000);
  // rsyslogd drains the socket; give it a moment now and then so a full
  // receive queue does not turn this into a measure of rsyslogd.
  if (i % 100 === 99) await new Promise((r) => setTimeout(r, 5));
}
closeLog();
samples.sort((a, b) => a - b);
console.log(`median_us=${samples[N >> 1]!.toFixed(2)}`);
