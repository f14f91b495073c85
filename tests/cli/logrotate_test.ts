/**
 * Log rotation with a real logrotate in `create` mode: the supervisor (or
 * the keeper) writes `--output`, `singleton-run reopen` in postrotate makes
 * it reopen the new file, and the program (which ignores SIGHUP) is never
 * signalled. Over 30 rotations, every numbered line arrives exactly once,
 * in order.
 */

import assert from "node:assert/strict";
import { installed } from "../../testing/cluster.ts";
import {
  alive,
  assertCleanError,
  Sandbox,
  SOURCE,
  sr,
  startFine,
  startTracked,
  waitFor,
} from "./harness.ts";

const LOGROTATE = installed("logrotate") ? "logrotate" : "/usr/sbin/logrotate";
const HAVE_LOGROTATE = installed("logrotate") || (() => {
  try {
    Deno.statSync("/usr/sbin/logrotate");
    return true;
  } catch {
    return false;
  }
})();

const ROTATIONS = 30;

/** Says hello, and bye when stopped: its last line shows where the output goes after a rotation. */
const GREETER = [
  "bash",
  "-c",
  'trap "echo bye; exit 0" TERM; echo hello; while :; do sleep 0.05; done',
];

/** Every line of the rotated files, oldest first, then the current file. */
function allLines(sb: Sandbox): string[] {
  const out: string[] = [];
  for (let i = ROTATIONS + 5; i >= 1; i--) {
    try {
      out.push(...Deno.readTextFileSync(sb.path(`out.log.${i}`)).split("\n"));
    } catch {
      // not made
    }
  }
  out.push(...Deno.readTextFileSync(sb.path("out.log")).split("\n"));
  return out;
}

for (const mode of [["--supervise"], ["--keeper"]]) {
  Deno.test({
    name: `logrotate create + reopen (${
      mode[0]
    }): 30 rotations lose and duplicate no line, and never signal the program`,
    ignore: !HAVE_LOGROTATE,
    async fn() {
      await using sb = await Sandbox.create();
      const out = sb.path("out.log");
      await startTracked(sb, [...mode, "--output", out], [
        "bash",
        "-c",
        // SIGHUP ignored, like a program that does not handle it; a SIGURG reaching it is reported.
        'trap "" HUP; trap "echo signalled" URG; i=0; while :; do i=$((i+1)); echo "$i"; sleep 0.002; done',
      ]);
      const reopen = [...SOURCE.cmd, "reopen", "--pidfile", sb.pidfile].join(" ");
      Deno.writeTextFileSync(
        sb.path("logrotate.conf"),
        `${out} {\n  rotate ${ROTATIONS + 5}\n  create 0640 root root\n  missingok\n` +
          `  nocompress\n  postrotate\n    ${reopen}\n  endscript\n}\n`,
      );
      const program = async () => {
        const st = await sr(SOURCE, ["status", "--json", "--pidfile", sb.pidfile]);
        const j = JSON.parse(st.stdout);
        return mode[0] === "--supervise" ? j.supervisor?.childPid : j.pid;
      };
      const first = await program();
      for (let i = 0; i < ROTATIONS; i++) {
        const lr = await new Deno.Command(LOGROTATE, {
          args: ["-f", "-s", sb.path("state"), sb.path("logrotate.conf")],
          stderr: "piped",
        }).output();
        assert.ok(lr.success, new TextDecoder().decode(lr.stderr));
      }
      assert.equal(await program(), first, "a rotation restarted or killed the program");
      const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
      assert.equal(stop.code, 0, stop.stderr);
      const lines = allLines(sb);
      assert.ok(!lines.includes("signalled"), "the reopen signal reached the program");
      const numbers = lines.filter((l) => /^[0-9]+$/.test(l)).map(Number);
      assert.ok(numbers.length > 100, `only ${numbers.length} lines`);
      for (let i = 0; i < numbers.length; i++) {
        assert.equal(numbers[i], i + 1, `line ${i + 1} is ${numbers[i]} (lost or duplicated)`);
      }
      const nonEmpty = [...Array(ROTATIONS).keys()].filter((i) => {
        try {
          return Deno.readTextFileSync(sb.path(`out.log.${i + 1}`)).length > 0;
        } catch {
          return false;
        }
      });
      assert.ok(nonEmpty.length >= ROTATIONS - 1, "the rotated files stayed empty: no reopen");
    },
  });
}

Deno.test("reopen: 2 without --pidfile, 3 when not running, 1 when no supervisor or keeper writes an output file (the program untouched)", async () => {
  await using sb = await Sandbox.create();
  assertCleanError(await sr(SOURCE, ["reopen"]), 2, /--pidfile/);
  assertCleanError(await sr(SOURCE, ["reopen", "--pidfile", sb.pidfile]), 3, /not running/);
  const cases: [string[], RegExp][] = [
    [
      ["--output", sb.path("own.log")],
      /sleep \(pid \d+\) writes ".*own\.log" itself.*copytruncate.*--keeper --output/,
    ],
    [["--supervise"], /the supervisor \(pid \d+\) writes no output file/],
    [["--keeper"], /the keeper \(pid \d+\) writes no output file/],
  ];
  for (const [options, message] of cases) {
    const pid = await startTracked(sb, options, ["sleep", "300"]);
    assertCleanError(await sr(SOURCE, ["reopen", "--pidfile", sb.pidfile]), 1, message);
    assert.ok(alive(pid), `${options.join(" ")}: the daemon survived`);
    const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
    assert.equal(stop.code, 0, stop.stderr);
  }
});

for (const mode of ["--supervise", "--keeper"]) {
  Deno.test(`reopen (${mode}): a relative --output and --pidfile name files in start's directory, not the stage's`, async () => {
    await using sb = await Sandbox.create();
    const here = { cwd: sb.dir };
    const r = await startFine(
      SOURCE,
      "d.pid",
      [mode, "--output", "out.log", "--", ...GREETER],
      here,
    );
    assert.equal(r.code, 0, r.stderr);
    sb.track(Number(r.stdout.trim()));
    await waitFor(
      () => {
        try {
          return Deno.readTextFileSync(sb.path("out.log")).includes("hello");
        } catch {
          return false;
        }
      },
      5000,
      "hello in out.log",
    );
    Deno.renameSync(sb.path("out.log"), sb.path("out.log.1"));
    const reopen = await sr(SOURCE, ["reopen", "--pidfile", "d.pid"], here);
    assert.equal(reopen.code, 0, reopen.stderr);
    const stop = await sr(SOURCE, ["stop", "--pidfile", "d.pid"], here);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(
      Deno.readTextFileSync(sb.path("out.log")),
      /^bye$/m,
      "the last line in the new file",
    );
  });
}

Deno.test("reopen exits 1 when the writer cannot reopen (a symbolic link put at the path), and 0 once it can", async () => {
  await using sb = await Sandbox.create();
  const out = sb.path("out.log");
  await startTracked(sb, ["--supervise", "--output", out], GREETER);
  Deno.renameSync(out, sb.path("out.log.1"));
  Deno.writeTextFileSync(sb.path("elsewhere"), "");
  Deno.symlinkSync(sb.path("elsewhere"), out);
  const reopen = ["reopen", "--pidfile", sb.pidfile];
  assertCleanError(await sr(SOURCE, reopen), 1, /has not reopened .*out\.log.* within 5 s/);
  assert.equal(Deno.readTextFileSync(sb.path("elsewhere")), "", "nothing written through the link");
  assert.match(Deno.readTextFileSync(sb.path("out.log.1")), /cannot reopen output: .*out\.log/);
  Deno.removeSync(out);
  const again = await sr(SOURCE, reopen);
  assert.equal(again.code, 0, again.stderr);
  const stop = await sr(SOURCE, ["stop", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.match(Deno.readTextFileSync(out), /^bye$/m, "the last line in the new file");
});
