/**
 * Bad input: every case gets one clear line on stderr, the documented exit
 * code, no stack trace, and leaves nothing behind (no file, no process, no
 * lock).
 */

import assert from "node:assert/strict";
import { assertCleanError, locked, ROOT, Sandbox, SOURCE, sr } from "./harness.ts";

interface Case {
  readonly name: string;
  readonly args: (sb: Sandbox) => string[];
  readonly code: number;
  readonly message: RegExp;
  readonly setup?: (sb: Sandbox) => void;
  /** Run in the sandbox, so a file made from a relative name would show. */
  readonly inSandbox?: boolean;
}

const P = (sb: Sandbox) => sb.pidfile;

const cases: Case[] = [
  {
    name: "no -- before the command",
    args: (sb) => ["start", "--pidfile", P(sb), "sleep", "1"],
    code: 2,
    message: /unexpected argument "sleep" \(put COMMAND after --\)/,
  },
  {
    name: "no command",
    args: (sb) => ["start", "--pidfile", P(sb)],
    code: 2,
    message: /missing -- COMMAND/,
  },
  {
    name: "nothing after --",
    args: (sb) => ["run", "--pidfile", P(sb), "--"],
    code: 2,
    message: /missing COMMAND after --/,
  },
  { name: "no --pidfile", args: () => ["stop"], code: 2, message: /missing --pidfile PATH/ },
  {
    name: "unknown option",
    args: (sb) => ["start", "--pidfle", P(sb), "--", "true"],
    code: 2,
    message: /unknown option for start: --pidfle/,
  },
  {
    name: "option without its value",
    args: () => ["status", "--pidfile"],
    code: 2,
    message: /--pidfile needs a value/,
  },
  { name: "no command at all", args: () => [], code: 2, message: /missing command/ },
  {
    name: "bad signal name",
    args: (sb) => ["signal", "--pidfile", P(sb), "SIGFOO"],
    code: 2,
    message: /unknown signal "SIGFOO"/,
  },
  {
    name: "signal out of range",
    args: (sb) => ["signal", "--pidfile", P(sb), "65"],
    code: 2,
    message: /unknown signal "65"/,
  },
  {
    name: "bad --retry schedule",
    args: (sb) => ["stop", "--pidfile", P(sb), "--retry", "TERM/x"],
    code: 2,
    message: /bad --retry schedule "TERM\/x"/,
  },
  {
    name: "--retry ending with a signal",
    args: (sb) => ["stop", "--pidfile", P(sb), "--retry", "TERM/5/KILL"],
    code: 2,
    message: /must end with a timeout/,
  },
  {
    name: "bad --umask",
    args: (sb) => ["start", "--umask", "0999", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --umask "0999"/,
  },
  {
    name: "bad --env",
    args: (sb) => ["start", "--env", "NOEQUALS", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --env "NOEQUALS"/,
  },
  {
    name: "--notify-fd below 3",
    args: (sb) => ["start", "--notify-fd", "1", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --notify-fd "1"/,
  },
  {
    name: "bad --ready-timeout",
    args: (sb) => ["start", "--ready-timeout", "soon", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --ready-timeout "soon"/,
  },
  {
    name: "a value holding a newline stays on one line",
    args: (sb) => ["start", "--pidfile", P(sb), "--", "no\nsuch-command"],
    code: 1,
    message: /command not found: "no\\nsuch-command"/,
  },
  {
    name: "command not found",
    args: (sb) => ["start", "--pidfile", P(sb), "--", "no-such-command-xyz"],
    code: 1,
    message: /command not found: "no-such-command-xyz"/,
  },
  {
    name: "command not executable",
    setup: (sb) => Deno.writeTextFileSync(sb.path("script.sh"), "#!/bin/sh\n", { mode: 0o644 }),
    args: (sb) => ["start", "--pidfile", P(sb), "--", sb.path("script.sh")],
    code: 1,
    message: /not an executable file/,
  },
  {
    name: "command is a directory",
    args: (sb) => ["run", "--pidfile", P(sb), "--", sb.dir],
    code: 1,
    message: /is a directory/,
  },
  {
    name: "missing pid file directory",
    args: (sb) => ["start", "--pidfile", sb.path("nope/d.pid"), "--", "true"],
    code: 1,
    message: /its directory ".*nope" does not exist/,
  },
  {
    name: "pid file is a symlink",
    setup: (sb) => {
      Deno.writeTextFileSync(sb.path("target"), "");
      Deno.symlinkSync(sb.path("target"), P(sb));
    },
    args: (sb) => ["start", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 1,
    message: /symbolic link/,
  },
  {
    name: "pid file is a directory",
    setup: (sb) => Deno.mkdirSync(P(sb)),
    args: (sb) => ["start", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 1,
    message: /is a directory, not a regular file/,
  },
  {
    name: "pid file is a FIFO",
    setup: (sb) => {
      const r = new Deno.Command("mkfifo", { args: [P(sb)] }).outputSync();
      assert.ok(r.success);
    },
    args: (sb) => ["start", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 1,
    message: /is a FIFO, not a regular file/,
  },
  {
    name: "stop on a pid file that is a symlink",
    setup: (sb) => {
      Deno.writeTextFileSync(sb.path("target"), "1\n");
      Deno.symlinkSync(sb.path("target"), P(sb));
    },
    args: (sb) => ["stop", "--pidfile", P(sb)],
    code: 1,
    message: /symbolic link/,
  },
  {
    name: "--chdir to a missing directory",
    args: (sb) => ["start", "--chdir", sb.path("nope"), "--pidfile", P(sb), "--", "true"],
    code: 1,
    message: /cannot change directory to ".*nope": no such directory/,
  },
  {
    name: "--user that does not exist",
    args: (sb) => ["start", "--user", "no-such-user-xyz", "--pidfile", P(sb), "--", "true"],
    code: 1,
    message: Deno.uid() === 0 ? /no such user: "no-such-user-xyz"/ : /--user needs root/,
  },
  {
    name: "--output syslog:FACILITY without --supervise (never a file of that name)",
    args: () => ["start", "--output", "syslog:local3", "--pidfile", "d.pid", "--", "sleep", "1"],
    inSandbox: true,
    code: 2,
    message: /--output "syslog:local3" needs --supervise/,
  },
  {
    name: "an unknown syslog facility",
    args: (
      sb,
    ) => ["start", "--supervise", "--output", "syslog:nope", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /unknown syslog facility "nope"/,
  },
  {
    name: "--ready-timeout beyond what poll(2) can wait",
    args: (sb) => ["start", "--ready-timeout", "2147484", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 2,
    message: /bad --ready-timeout "2147484": expected a duration of at most 2147483647ms/,
  },
  {
    name: "--guard-timeout beyond what poll(2) can wait",
    args: (sb) => ["stop", "--guard-timeout", "1e9", "--pidfile", P(sb)],
    code: 2,
    message: /bad --guard-timeout "1e9"/,
  },
  {
    name: "a --retry wait beyond what poll(2) can wait",
    args: (sb) => ["stop", "--retry", "TERM/99999999", "--pidfile", P(sb)],
    code: 2,
    message: /bad --retry schedule "TERM\/99999999": a wait may be at most 2147483 seconds/,
  },
  {
    name: "--restart-delay beyond what poll(2) can wait",
    args: (
      sb,
    ) => ["start", "--supervise", "--restart-delay", "30d", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --restart-delay "30d"/,
  },
  {
    name: "--restart-delay of 25 days",
    args: (
      sb,
    ) => ["start", "--supervise", "--restart-delay", "600h", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --restart-delay "600h": expected a duration of at most 2147483647ms/,
  },
  {
    name: "--max-restarts beyond its bound",
    args: (
      sb,
    ) => [
      "start",
      "--supervise",
      "--max-restarts",
      "99999999999",
      "--pidfile",
      P(sb),
      "--",
      "true",
    ],
    code: 2,
    message: /bad --max-restarts "99999999999"/,
  },
  {
    name: "run --supervise --user: refused before the pid file or guard is created",
    args: (sb) => ["run", "--supervise", "--user", "nobody", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /--user with run --supervise is not supported/,
  },
  {
    name: "--output is the pid file",
    args: (sb) => ["start", "--output", P(sb), "--pidfile", P(sb), "--", "sleep", "1"],
    code: 2,
    message: /--output ".*d\.pid" is the pid file/,
  },
  {
    name: "--output is the pid file, spelled differently",
    args: (
      sb,
    ) => ["start", "--output", `${sb.dir}/./x/../d.pid`, "--pidfile", P(sb), "--", "sleep", "1"],
    code: 2,
    message: /is the pid file/,
  },
  {
    name: "--guard is the pid file",
    args: (sb) => ["stop", "--guard", P(sb), "--pidfile", P(sb)],
    code: 2,
    message: /--guard ".*d\.pid" is the pid file/,
  },
  {
    name: "--output is the guard file",
    args: (sb) => ["start", "--output", `${P(sb)}.lock`, "--pidfile", P(sb), "--", "sleep", "1"],
    code: 2,
    message: /is the guard file/,
  },
  {
    name: "an empty --guard",
    args: (sb) => ["start", "--guard", "", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 2,
    message: /bad --guard "": expected a path/,
  },
  {
    name: "an empty --stop-schedule",
    args: (sb) => ["start", "--supervise", "--stop-schedule", "", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --stop-schedule "": it is empty/,
  },
  {
    name: "an empty --user",
    args: (sb) => ["start", "--user", "", "--pidfile", P(sb), "--", "true"],
    code: 2,
    message: /bad --user "": expected a name/,
  },
  {
    name: "a real-time signal past RTMAX",
    args: (sb) => ["signal", "--pidfile", P(sb), "RTMIN+31"],
    code: 2,
    message: /unknown signal "RTMIN\+31"/,
  },
];

if (Deno.uid() === 0) {
  cases.push({
    name: "as root, a pid file owned by another user",
    setup: (sb) => {
      Deno.writeTextFileSync(P(sb), "");
      Deno.chownSync(P(sb), 65534, 65534);
    },
    args: (sb) => ["start", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 1,
    message: /owned by uid 65534; as root, refusing to trust it/,
  });
  cases.push({
    name: "as root, a world-writable pid file",
    setup: (sb) => {
      Deno.writeTextFileSync(P(sb), "");
      Deno.chmodSync(P(sb), 0o666);
    },
    args: (sb) => ["start", "--pidfile", P(sb), "--", "sleep", "1"],
    code: 1,
    message: /writable by every user/,
  });
}

for (const c of cases) {
  Deno.test(`bad input: ${c.name} -> exit ${c.code}, one line, nothing left behind`, async () => {
    await using sb = await Sandbox.create();
    c.setup?.(sb);
    const before = sb.list();
    const r = await sr(SOURCE, c.args(sb), c.inSandbox ? { cwd: sb.dir } : {});
    assertCleanError(r, c.code, c.message);
    assert.deepEqual(sb.list(), before, "no file created");
    for (const name of before) assert.ok(!locked(sb.path(name)) || name === "d.pid");
  });
}

Deno.test("--help, --version and help COMMAND work without any permission", async () => {
  for (const args of [["--help"], ["--version"], ["help", "start"], ["start", "--help"]]) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", `${ROOT}cli.ts`, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    assert.ok(r.stdout.length > 0);
  }
});

Deno.test("as an unprivileged user: an unwritable pid directory and --user are refused with exit 1", async (t) => {
  if (Deno.uid() !== 0) {
    console.log("skipped: needs root to switch to user nobody");
    return;
  }
  await using sb = await Sandbox.create();
  const denoDir = await Deno.makeTempDir({ prefix: "singleton-run-nobody-" });
  try {
    Deno.chmodSync(sb.dir, 0o755);
    Deno.chownSync(denoDir, 65534, 65534);
    const asNobody = async (args: string[]) => {
      const out = await new Deno.Command("runuser", {
        args: ["-u", "nobody", "--", ...SOURCE.cmd, ...args],
        env: { DENO_DIR: denoDir, HOME: denoDir },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return {
        code: out.code,
        stdout: dec.decode(out.stdout),
        stderr: dec.decode(out.stderr),
        ms: 0,
      };
    };
    await t.step("unwritable pid directory", async () => {
      const r = await asNobody(["start", "--pidfile", sb.pidfile, "--", "sleep", "1"]);
      assertCleanError(r, 1, /permission denied/);
      assert.deepEqual(sb.list(), []);
    });
    await t.step("--user needs root", async () => {
      const r = await asNobody([
        "start",
        "--user",
        "root",
        "--pidfile",
        "/tmp/x.pid",
        "--",
        "true",
      ]);
      assertCleanError(r, 1, /--user needs root/);
    });
    await t.step("status of a pid file nobody may read: 4", async () => {
      Deno.writeTextFileSync(sb.pidfile, "1\n", { mode: 0o600 });
      Deno.chmodSync(sb.pidfile, 0o600);
      const r = await asNobody(["status", "--pidfile", sb.pidfile]);
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /cannot tell: .*permission denied/);
    });
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});
