/**
 * The bad-input corpus: malformed options, hostile paths, symlinks, FIFOs,
 * huge and binary pid files, non-numeric and negative pids, pid 1, another
 * user's process, unknown signals, bad schedules, bad umasks, missing and
 * non-executable commands, and arguments with odd bytes and newlines.
 *
 * Each case runs in a fresh directory and is checked for: the documented exit
 * code (2 for a mistake on the command line, 1 for a failure when acted on, 3
 * for nothing to do; status uses LSB codes), exactly one line of message
 * (on stderr and nothing on stdout; a usage error may add the pointer to
 * --help the contract asks for; status's answer is its output, on stdout,
 * unless it cannot tell), no stack trace, and nothing left behind: no
 * process, no held lock, no new file in the directory (after a code 1 or 3,
 * the documented guard file `PIDFILE.lock` and an empty pid file are allowed:
 * they are the protocol's own state; after a code 2, nothing).
 * Cases that name a live process check it was not signalled.
 *
 * @module
 */

import { argvOf, isAlive, killQuietly, sleep } from "../testing/process.ts";
import type { CmdResult } from "../testing/process.ts";
import {
  type Cli,
  linesOf,
  listing,
  lockedFilesIn,
  show,
  stackLines,
  strays,
  Tally,
} from "./common.ts";

/** What a case's functions get. */
interface Ctx {
  /** A fresh directory for this case. */
  readonly dir: string;
  /** `${dir}/d.pid`. */
  readonly pidfile: string;
  /** A live process of ours (or another user's) that nothing may signal. */
  sentinel?: number;
}

/** One bad input. */
interface Case {
  readonly family: string;
  readonly name: string;
  readonly args: (c: Ctx) => string[];
  readonly setup?: (c: Ctx) => void | Promise<void>;
  /** The documented exit code(s). */
  readonly expect: readonly number[];
  /** Start a sentinel process: "ours" (root) or "other" (uid 65534). */
  readonly sentinel?: "ours" | "other";
  /** More to check after the run; returns what went wrong. */
  readonly after?: (c: Ctx, res: CmdResult) => string | undefined;
  /** A bound on the command's time, in ms. @default {15000} */
  readonly timeoutMs?: number;
  /** A documented bug (stress/run.ts KNOWN_BUGS) that makes its one-line check fail. */
  readonly knownBug?: string;
  /** Only meaningful as root (a refusal only root makes, or another user's process). */
  readonly rootOnly?: boolean;
}

const SLEEP = "/bin/sleep";
const write = (path: string, data: string | Uint8Array, mode = 0o644) => {
  if (typeof data === "string") Deno.writeTextFileSync(path, data, { mode });
  else Deno.writeFileSync(path, data, { mode });
  Deno.chmodSync(path, mode);
};
const fifo = (path: string) => {
  const r = new Deno.Command("mkfifo", { args: [path] }).outputSync();
  if (!r.success) throw new Error(`mkfifo ${path} failed`);
};
const start = (c: Ctx, ...extra: string[]) => [
  "start",
  "--pidfile",
  c.pidfile,
  ...extra,
  "--",
  SLEEP,
  "30",
];
const pidContent = (name: string, content: string | Uint8Array, expectStatus: number): Case[] => [
  {
    family: "pid file content",
    name: `status of ${name}`,
    setup: (c) => write(c.pidfile, content),
    args: (c) => ["status", "--pidfile", c.pidfile],
    expect: [expectStatus],
  },
  {
    family: "pid file content",
    name: `stop of ${name}`,
    setup: (c) => write(c.pidfile, content),
    args: (c) => ["stop", "--pidfile", c.pidfile],
    expect: [3],
  },
];
const notSignalled = (c: Ctx) =>
  c.sentinel !== undefined && !isAlive(c.sentinel)
    ? `the unrelated process ${c.sentinel} was killed`
    : undefined;

/** Every case. */
export const CASES: readonly Case[] = [
  // -- malformed options: exit 2 --
  ...([
    ["no arguments at all", () => []],
    ["an unknown command", (c) => ["frobnicate", "--pidfile", c.pidfile]],
    ["an unknown option", (c) => ["start", "--pidfile", c.pidfile, "--bogus", "--", SLEEP, "30"]],
    ["start without --pidfile", () => ["start", "--", SLEEP, "30"]],
    ["start without a command", (c) => ["start", "--pidfile", c.pidfile]],
    ["start with -- and no command", (c) => ["start", "--pidfile", c.pidfile, "--"]],
    ["--pidfile without its value", () => ["status", "--pidfile"]],
    ["an empty --pidfile", () => ["status", "--pidfile", ""]],
    ["status with an extra argument", (c) => ["status", "--pidfile", c.pidfile, "extra"]],
    ["help for an unknown command", () => ["help", "frobnicate"]],
    ["--ready-timeout that is not a number", (c) => start(c, "--ready-timeout", "soon")],
    ["a negative --ready-timeout", (c) => start(c, "--ready-timeout=-1")],
    ["a negative --ready-after", (c) => start(c, "--ready-after=-5")],
    [
      "--guard-timeout that is not a number",
      (c) => ["stop", "--pidfile", c.pidfile, "--guard-timeout", "x"],
    ],
    ["--env without =", (c) => start(c, "--env", "NOEQUALS")],
    ["--notify-fd that is not a number", (c) => start(c, "--notify-fd", "x")],
    ["--notify-fd on stdout", (c) => start(c, "--notify-fd", "1")],
    [
      "--conflict-exit-code 300",
      (c) => ["run", "--pidfile", c.pidfile, "--conflict-exit-code", "300", "--", SLEEP, "1"],
    ],
    // Plain start sends output to a file; syslog is the supervisor's. Never a
    // file named "syslog:local3".
    ["--output syslog without --supervise", (c) => start(c, "--output", "syslog")],
    ["--output syslog:local3 without --supervise", (c) => start(c, "--output=syslog:local3")],
  ] as [string, (c: Ctx) => string[]][]).map(([name, args]): Case => ({
    family: "malformed options",
    name,
    args,
    expect: [2],
  })),

  // -- signals: exit 2 --
  ...([
    ["an unknown signal name", (c) => ["signal", "--pidfile", c.pidfile, "SIGFOO"]],
    ["a signal number out of range", (c) => ["signal", "--pidfile", c.pidfile, "99"]],
    ["a negative signal number", (c) => ["signal", "--pidfile", c.pidfile, "--", "-9"]],
    ["no signal at all", (c) => ["signal", "--pidfile", c.pidfile]],
    ["a signal name with a newline", (c) => ["signal", "--pidfile", c.pidfile, "TE\nRM"]],
  ] as [string, (c: Ctx) => string[]][]).map(([name, args]): Case => ({
    family: "unknown signals",
    name,
    args,
    expect: [2],
  })),
  {
    // Signal 0 is a check, not a mistake: nothing to signal is "not running".
    family: "unknown signals",
    name: "signal 0 when nothing runs",
    args: (c) => ["signal", "--pidfile", c.pidfile, "0"],
    expect: [3],
  },

  // -- retry schedules: exit 2 --
  ...["TERM/x", "FOO/5", "TERM//5", "", "TERM/5/", "KILL/-3", "forever"].map((s): Case => ({
    family: "bad schedules",
    name: `--retry ${JSON.stringify(s)}`,
    args: (c) => ["stop", "--pidfile", c.pidfile, `--retry=${s}`],
    expect: [2],
  })),

  // -- umasks: exit 2 --
  ...["999", "01000", "abc", "", "-022"].map((u): Case => ({
    family: "bad umasks",
    name: `--umask ${JSON.stringify(u)}`,
    args: (c) => start(c, `--umask=${u}`),
    expect: [2],
  })),

  // -- commands: exit 1 (acted on) --
  {
    family: "commands",
    name: "a missing absolute command",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", "/nonexistent/sr-cmd"],
    expect: [1],
  },
  {
    family: "commands",
    name: "a command not on PATH",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", "sr-no-such-command-xyz"],
    expect: [1],
  },
  {
    family: "commands",
    name: "a non-executable file",
    setup: (c) => write(`${c.dir}/noexec`, "#!/bin/sh\nsleep 30\n", 0o644),
    args: (c) => ["start", "--pidfile", c.pidfile, "--", `${c.dir}/noexec`],
    expect: [1],
  },
  {
    family: "commands",
    name: "a directory as the command",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", c.dir],
    expect: [1],
  },
  {
    family: "commands",
    name: "a command that exits at once",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", "/bin/false"],
    expect: [1],
  },
  {
    family: "commands",
    name: "a command killed by a signal at once",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", "/bin/sh", "-c", "kill -9 $$"],
    expect: [1],
  },
  {
    family: "commands",
    name: "a daemon that never says ready (--notify-fd, 0.3 s)",
    args: (c) => start(c, "--notify-fd", "3", "--ready-timeout", "0.3"),
    expect: [1],
  },
  {
    family: "commands",
    name: "an empty command name",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", ""],
    expect: [1, 2],
  },

  // -- hostile paths: exit 1 --
  ...([
    [
      "a pid file in a missing directory",
      (c) => start({ ...c, pidfile: `${c.dir}/missing/d.pid` }),
    ],
    [
      "a pid file under a regular file",
      (c) => start({ ...c, pidfile: `${c.dir}/file/d.pid` }),
      (c) => write(`${c.dir}/file`, ""),
    ],
    [
      "a pid file where nobody may create one (/proc)",
      (c) => start({ ...c, pidfile: `/proc/sr-stress-${Deno.pid}.pid` }),
    ],
    ["a pid file that is a symlink", (c) => start(c), (c) => {
      write(`${c.dir}/target`, "");
      Deno.symlinkSync(`${c.dir}/target`, c.pidfile);
    }],
    [
      "a pid file that is a dangling symlink",
      (c) => start(c),
      (c) => Deno.symlinkSync(`${c.dir}/nowhere`, c.pidfile),
    ],
    ["a pid file that is a directory", (c) => start(c), (c) => Deno.mkdirSync(c.pidfile)],
    ["a pid file that is a FIFO", (c) => start(c), (c) => fifo(c.pidfile)],
    ["a pid file owned by another user", (c) => start(c), (c) => {
      write(c.pidfile, "");
      Deno.chownSync(c.pidfile, 65534, 65534);
    }],
    ["a world-writable pid file", (c) => start(c), (c) => write(c.pidfile, "", 0o666)],
    ["a missing --chdir", (c) => start(c, "--chdir", `${c.dir}/nowhere`)],
    ["--output in a missing directory", (c) => start(c, "--output", `${c.dir}/nowhere/out.log`)],
    ["--output that is a directory", (c) => start(c, "--output", c.dir)],
    ["--guard in a missing directory", (c) => start(c, "--guard", `${c.dir}/nowhere/g.lock`)],
    [
      "a 5000-byte pid file path",
      (c) => start({ ...c, pidfile: `${c.dir}/${"a/".repeat(2500)}d.pid` }),
    ],
    ["a 300-byte file name", (c) => start({ ...c, pidfile: `${c.dir}/${"n".repeat(300)}.pid` })],
  ] as [string, (c: Ctx) => string[], ((c: Ctx) => void)?][]).map(([name, args, setup]): Case => ({
    family: "hostile paths",
    name,
    args,
    setup,
    expect: [1],
    rootOnly: /another user|world-writable/.test(name),
    after: (c) => {
      // A symlink's target must be left as it was.
      try {
        if (Deno.readTextFileSync(`${c.dir}/target`) !== "") {
          return "the symlink's target was written";
        }
      } catch {
        // no target in this case
      }
      try {
        Deno.statSync(`${c.dir}/nowhere`);
        return "the dangling symlink's target was created";
      } catch {
        return undefined;
      }
    },
  })),
  {
    family: "hostile paths",
    name: "status of a FIFO (must not block)",
    setup: (c) => fifo(c.pidfile),
    args: (c) => ["status", "--pidfile", c.pidfile],
    expect: [4],
    timeoutMs: 5000,
  },

  // -- pid file content --
  ...pidContent("a 1 MiB pid file of digits", "7".repeat(1 << 20), 3),
  ...pidContent(
    "a binary pid file",
    Uint8Array.from({ length: 512 }, (_, i) => (i * 37) & 0xff),
    3,
  ),
  ...pidContent("a non-numeric pid", "abc\n", 3),
  ...pidContent("pid 0", "0\n", 3),
  ...pidContent("a pid too large for Linux", "99999999\n", 3),
  ...pidContent("a pid with trailing garbage", "123abc\n", 3),
  {
    family: "pid file content",
    name: "stop of a negative pid (kill(-1) would hit everything)",
    sentinel: "ours",
    setup: (c) => write(c.pidfile, "-1\n"),
    args: (c) => ["stop", "--pidfile", c.pidfile],
    expect: [3],
    after: notSignalled,
  },
  // A live process no lock covers is never signalled and its file never written: status
  // cannot tell (4), the others refuse (1), unless --exec proves it is the daemon.
  {
    family: "pid file content",
    name: "status of pid 1, unlocked",
    setup: (c) => write(c.pidfile, "1\n"),
    args: (c) => ["status", "--pidfile", c.pidfile],
    expect: [4],
  },
  {
    family: "pid file content",
    name: "stop of another user's live process, unlocked",
    sentinel: "other",
    setup: (c) => write(c.pidfile, `${c.sentinel}\n`),
    args: (c) => ["stop", "--pidfile", c.pidfile],
    expect: [1],
    after: notSignalled,
  },
  {
    family: "pid file content",
    name: "status of another user's live process, unlocked",
    sentinel: "other",
    setup: (c) => write(c.pidfile, `${c.sentinel}\n`),
    args: (c) => ["status", "--pidfile", c.pidfile],
    expect: [4],
  },
  {
    family: "pid file content",
    name: "reload of an unrelated live process, unlocked",
    sentinel: "ours",
    setup: (c) => write(c.pidfile, `${c.sentinel}\n`),
    args: (c) => ["reload", "--pidfile", c.pidfile],
    expect: [1],
    after: notSignalled,
  },
  {
    family: "pid file content",
    name: "signal KILL to an unrelated live process, unlocked",
    sentinel: "ours",
    setup: (c) => write(c.pidfile, `${c.sentinel}\n`),
    args: (c) => ["signal", "--pidfile", c.pidfile, "KILL"],
    expect: [1],
    after: notSignalled,
  },

  // -- odd bytes and newlines --
  {
    family: "odd bytes",
    name: "a pid file name with a newline, in a missing directory",
    args: (c) => start({ ...c, pidfile: `${c.dir}/no\nsuch/d.pid` }),
    expect: [1],
  },
  {
    family: "odd bytes",
    name: "a pid file name with shell syntax, spaces, tabs and é",
    args: (
      c,
    ) => ["status", "--pidfile", `${c.dir}/a b\t$(touch pwned)\`touch pwned\`é\u0001\u007f.pid`],
    expect: [3],
    after: (c) => {
      try {
        Deno.statSync(`${c.dir}/pwned`);
        return "a shell ran the pid file name";
      } catch {
        return undefined;
      }
    },
  },
  {
    family: "odd bytes",
    name: "a command name with a newline",
    args: (c) => ["start", "--pidfile", c.pidfile, "--", "no\nsuch-command"],
    expect: [1],
  },
  {
    family: "odd bytes",
    name: "--env with a newline in the value, missing command",
    args: (c) => ["start", "--pidfile", c.pidfile, "--env", "A=1\n2", "--", "/nonexistent/x"],
    expect: [1],
  },
  {
    family: "odd bytes",
    name: "--chdir with a newline and a carriage return",
    args: (c) => start(c, "--chdir", `${c.dir}/x\ny\rz`),
    expect: [1],
  },
];

/**
 * Run the corpus.
 *
 * @param cli the command under test
 * @param log progress output
 * @returns a tally per family of cases
 */
export async function corpusFamilies(cli: Cli, log: (s: string) => void): Promise<Tally[]> {
  const tallies = new Map<string, Tally>();
  const root = Deno.uid() === 0;
  const cases = CASES.filter((k) => root || !(k.rootOnly || k.sentinel === "other"));
  for (const k of cases) {
    const t = tallies.get(k.family) ?? new Tally(`bad input: ${k.family}`);
    tallies.set(k.family, t);
    await runCase(cli, k, t);
  }
  const skipped = CASES.length - cases.length;
  log(`corpus: ${cases.length} cases${skipped ? ` (${skipped} need root: skipped)` : ""}`);
  return [...tallies.values()];
}

async function runCase(cli: Cli, k: Case, t: Tally): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sr-stress-input-" });
  const c: Ctx = { dir, pidfile: `${dir}/d.pid` };
  let sentinel: Deno.ChildProcess | undefined;
  try {
    if (k.sentinel) {
      const argv = k.sentinel === "other"
        ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SLEEP, "60"]
        : [SLEEP, "60"];
      sentinel = new Deno.Command(argv[0]!, {
        args: argv.slice(1),
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      c.sentinel = sentinel.pid;
      // setpriv execs sleep: wait until the pid is sleep.
      for (let i = 0; i < 100 && !(argvOf(sentinel.pid)?.[0] ?? "").endsWith("sleep"); i++) {
        await sleep(5);
      }
    }
    await k.setup?.(c);
    const before = listing(dir);
    const res = await cli.run(k.args(c), { timeoutMs: k.timeoutMs ?? 15_000 });
    const what = (s: string) => () => `${k.name}: ${s}: ${show(res)}`;
    t.check(
      k.expect.includes(res.code) && !res.timedOut,
      what(`expected exit ${k.expect.join(" or ")}`),
    );
    // A usage error may add the contract's pointer to --help as a second line.
    const errLines = linesOf(res.stderr).filter((l, i) =>
      !(res.code === 2 && i > 0 && /--help/.test(l))
    );
    // status's answer is its output: one line on stdout (0, 1, 3), or the
    // reason it cannot tell on stderr (4). Every other refusal is one line on
    // stderr and nothing on stdout.
    const isStatus = k.args(c)[0] === "status" && res.code !== 2;
    const outLines = linesOf(res.stdout);
    t.check(
      isStatus ? errLines.length + outLines.length === 1 : errLines.length === 1,
      what(
        isStatus
          ? `expected one line on stdout or stderr, got ${outLines.length} and ${errLines.length}`
          : `expected exactly one line on stderr, got ${errLines.length}`,
      ),
      k.knownBug,
    );
    t.check(stackLines(res.stderr).length === 0, what("stack trace on stderr"));
    t.check(isStatus || res.stdout === "", what("expected nothing on stdout"));
    await sleep(20);
    const left = strays(dir);
    t.check(left.length === 0, what(`processes left behind: ${left.join(", ")}`));
    for (const pid of left) killQuietly(pid, "SIGKILL");
    const locked = lockedFilesIn(dir);
    t.check(locked.length === 0, what(`locks left held: ${locked.join(", ")}`));
    const allowed = new Set(before);
    if (res.code === 1 || res.code === 3) {
      allowed.add("d.pid.lock");
      try {
        // Never read a FIFO: it would block.
        const st = Deno.lstatSync(c.pidfile);
        if (st.isFile && st.size === 0) allowed.add("d.pid");
      } catch {
        // absent, or not a file
      }
    }
    const added = listing(dir).filter((n) => !allowed.has(n));
    t.check(
      added.length === 0,
      what(`files left behind: ${added.map((n) => JSON.stringify(n)).join(", ")}`),
    );
    if (k.after) {
      const problem = k.after(c, res);
      t.check(problem === undefined, what(problem ?? ""));
    }
  } catch (err) {
    t.check(false, () => `${k.name}: the harness failed: ${err}`);
  } finally {
    if (sentinel) {
      killQuietly(sentinel.pid, "SIGKILL");
      await sentinel.status;
    }
    // A FIFO or a read-only file may need its mode back to be removed.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
