import assert from "node:assert/strict";
import {
  errnoText,
  getSyslogSink,
  log,
  openLog,
  setLogMask,
  type SyslogFacility,
  type SyslogLevel,
} from "../src/syslog/syslog.ts";
import { FACILITY_CODES, LEVEL_CODES, priority } from "../src/syslog/codes.ts";
import { SystemError } from "../src/ffi/mod.ts";
import { startRsyslog } from "../testing/rsyslog.ts";

const fixture = new URL("./fixtures/syslog_writer.ts", import.meta.url).pathname;

Deno.test("facility and level names have the numbers of <syslog.h>", () => {
  assert.deepEqual(
    (["kern", "user", "daemon", "authpriv", "local0", "local7"] as const).map((f) =>
      FACILITY_CODES[f]
    ),
    [0, 8, 24, 80, 128, 184],
  );
  assert.deepEqual(
    (["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"] as const).map((l) =>
      LEVEL_CODES[l]
    ),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  assert.equal(priority("err", "local0"), 131);
  assert.equal(priority("info"), 6);
});

Deno.test("setLogMask() returns the levels kept before", () => {
  const before = setLogMask("warning");
  try {
    assert.deepEqual(setLogMask(["err", "info"]), ["emerg", "alert", "crit", "err", "warning"]);
    assert.deepEqual(setLogMask("info"), ["err", "info"]);
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
  assert.throws(() => log("loud" as SyslogLevel, "x"), /unknown syslog level: "loud"/);
  assert.throws(() => log("info", "x", "local9" as SyslogFacility), /unknown syslog facility/);
  assert.throws(() => getSyslogSink({ facility: "mars" as SyslogFacility }), RangeError);
  assert.throws(() => setLogMask([]), RangeError);
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
