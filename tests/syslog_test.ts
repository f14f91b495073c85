import assert from "node:assert/strict";
import {
  errnoText,
  getSyslogSink,
  log,
  LOG_ALERT,
  LOG_AUTHPRIV,
  LOG_CONS,
  LOG_CRIT,
  LOG_DAEMON,
  LOG_DEBUG,
  LOG_EMERG,
  LOG_ERR,
  LOG_INFO,
  LOG_KERN,
  LOG_LOCAL0,
  LOG_LOCAL7,
  LOG_MASK,
  LOG_NDELAY,
  LOG_NOTICE,
  LOG_NOWAIT,
  LOG_ODELAY,
  LOG_PERROR,
  LOG_PID,
  LOG_UPTO,
  LOG_USER,
  LOG_WARNING,
  openLog,
  setLogMask,
} from "../src/syslog/syslog.ts";
import { SystemError } from "../src/ffi/mod.ts";
import { startRsyslog } from "../testing/rsyslog.ts";

const fixture = new URL("./fixtures/syslog_writer.ts", import.meta.url).pathname;

Deno.test("syslog constants have the values of <syslog.h>", () => {
  assert.deepEqual(
    [LOG_PID, LOG_CONS, LOG_ODELAY, LOG_NDELAY, LOG_NOWAIT, LOG_PERROR],
    [1, 2, 4, 8, 16, 32],
  );
  assert.deepEqual([LOG_KERN, LOG_USER, LOG_DAEMON, LOG_AUTHPRIV], [0, 8, 24, 80]);
  assert.deepEqual([LOG_LOCAL0, LOG_LOCAL7], [128, 184]);
  assert.deepEqual(
    [LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG],
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  assert.equal(LOG_MASK(LOG_ERR), 8);
  assert.equal(LOG_UPTO(LOG_ERR), 15);
  assert.equal(LOG_UPTO(LOG_DEBUG), 255);
});

Deno.test("setLogMask() returns the previous mask", () => {
  const before = setLogMask(LOG_UPTO(LOG_WARNING));
  try {
    assert.equal(setLogMask(LOG_UPTO(LOG_INFO)), LOG_UPTO(LOG_WARNING));
  } finally {
    setLogMask(before);
  }
});

Deno.test("errnoText() gives the C library's text, as %m would", () => {
  assert.equal(errnoText(2), "No such file or directory");
  assert.equal(errnoText(new SystemError("open", 13, { path: "/x" })), "Permission denied");
  assert.equal(errnoText(new Error("plain")), "plain");
});

Deno.test("openLog() and log() refuse bad input with a clear error", () => {
  assert.throws(() => openLog("a\0b"), /NUL/);
  assert.throws(() => log("loud" as "info", "x"), /unknown syslog level: "loud"/);
  assert.throws(() => log(-1, "x"), RangeError);
  assert.throws(() => getSyslogSink({ facility: 1.5 }), RangeError);
});

Deno.test("syslog reaches a real rsyslogd: ident, pid, facility.priority, % intact", async () => {
  await using sl = await startRsyslog();
  if (sl.skipReason) {
    console.log(`skipped: ${sl.skipReason}`);
    return;
  }
  const run = await sl.run([Deno.execPath(), "run", "-A", fixture]);
  assert.equal(run.code, 0, run.stderr);
  const { pid } = JSON.parse(run.stdout);
  const lines = await sl.lines({ match: /after the sink was disposed/ });
  const mine = lines.filter((l) => l.includes(` ${pid} `));
  assert.deepEqual(mine, [
    `local3.warning sr-test ${pid} disk 100% full %s %d %n %m`,
    `daemon.err sr-test ${pid} explicit facility`,
    `local3.notice sr-test ${pid} by name`,
    `local3.debug sr-test ${pid} unmasked debug`,
    `local5.debug sr-logtape ${pid} app.db: trace line`,
    `local5.info sr-logtape ${pid} app.db: connected to db1 at 100%`,
    `local5.warning sr-logtape ${pid} app.db: slow`,
    `local5.err sr-logtape ${pid} app.db: failed`,
    `local5.crit sr-logtape ${pid} app.db: gave up`,
    // closelog() forgets the ident (glibc falls back to the program name) but, as
    // in C, keeps the facility and options of the last openlog().
    `local5.notice deno ${pid} after the sink was disposed`,
  ]);
  assert.ok(!lines.some((l) => l.includes("masked debug") && !l.includes("unmasked")));
});
