/**
 * The command's habits, as a shell user meets them: one duration grammar
 * for every option and schedule, `--quiet`, the nearest option suggested
 * for a typo, completion scripts and a manual page made from the option
 * table, a closed stdout or stderr that costs nothing but the text, pid
 * files that do not exist left not existing, one version, and a permission
 * hint that only suggests what would work.
 */

import assert from "node:assert/strict";
import { parseArgs } from "../../src/cli/parse.ts";
import { tempDir } from "../../testing/process.ts";
import { COMMANDS, OPTION_LIST } from "../../src/cli/options.ts";
import {
  alive,
  assertCleanError,
  locked,
  readPid,
  ROOT,
  Sandbox,
  SOURCE,
  sr,
  startTracked,
} from "./harness.ts";

/** The command as a shell word list, for `bash -c`. */
const CLI = SOURCE.cmd.map((a) => `'${a}'`).join(" ");

/** Run a bash script; its exit code and output. */
async function bash(script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Whether a program is on PATH. */
function onPath(name: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((dir) => {
    try {
      return Deno.statSync(`${dir}/${name}`).isFile;
    } catch {
      return false;
    }
  });
}

/** The options a command takes, by the table, with `--`. */
function optionsOf(cmd: string): string[] {
  return OPTION_LIST.filter(([, spec]) => (spec.commands as readonly string[]).includes(cmd))
    .map(([, spec]) => `--${spec.name}`).sort();
}

/** The lines every shell's completion is asked to complete, and the answers the table implies. */
async function assertCompletesTable(
  complete: (line: string) => string[] | Promise<string[]>,
): Promise<void> {
  for (const cmd of COMMANDS) {
    assert.deepEqual(
      await complete(`singleton-run ${cmd} --`),
      [...optionsOf(cmd), "--help"].sort(),
      cmd,
    );
  }
  assert.deepEqual(await complete("singleton-run st"), ["start", "status", "stop"]);
}

Deno.test("every duration option takes 500ms, 5s, 2m, 1h; a bare number is seconds, --ready-after's milliseconds", () => {
  const v = (cmd: "start" | "stop", args: string[]) =>
    parseArgs(cmd, [...args, "--pidfile", "/tmp/x.pid", ...(cmd === "start" ? ["--", "true"] : [])])
      .values;
  const lock = ["--lock", "etcd://127.0.0.1:2379/x"];
  const cases: [string, string[], "start" | "stop", (w: ReturnType<typeof v>) => unknown][] = [
    ["--ready-timeout", [], "start", (w) => w.readyTimeout],
    ["--guard-timeout", [], "stop", (w) => w.guardTimeout],
    ["--lock-ttl", lock, "start", (w) => w.lockTtl],
    ["--lock-wait", lock, "start", (w) => w.lockWait],
    ["--lock-timeout", lock, "start", (w) => w.lockTimeout],
    ["--restart-delay", ["--supervise"], "start", (w) => w.restartDelay],
    ["--restart-delay-max", ["--supervise"], "start", (w) => w.restartDelayMax],
    ["--min-uptime", ["--supervise"], "start", (w) => w.minUptime],
    ["--restart-window", ["--supervise"], "start", (w) => w.restartWindow],
  ];
  for (const [option, extra, cmd, get] of cases) {
    for (
      const [text, ms] of [["500ms", 500], ["5s", 5000], ["2m", 120_000], ["1h", 3_600_000], [
        "1.5",
        1500,
      ], ["7", 7000]] as const
    ) {
      assert.equal(get(v(cmd, [...extra, option, text])), ms, `${option} ${text}`);
    }
  }
  const after = (text: string) => v("start", ["--ready-after", text]).readyAfter;
  assert.equal(after("250"), 250);
  assert.equal(after("250ms"), 250);
  assert.equal(after("2s"), 2000);
  assert.equal(after("1m"), 60_000);
  // The same grammar inside a stop schedule, where a bare number stays seconds.
  assert.deepEqual(v("stop", ["--retry", "TERM/500ms/KILL/2m"]).retry!.steps, [
    { signal: 15 },
    { waitMs: 500 },
    { signal: 9 },
    { waitMs: 120_000 },
  ]);
  assert.deepEqual(v("stop", ["--retry", "30s"]).retry!.steps, [
    { signal: 15 },
    { waitMs: 30_000 },
    { signal: 9 },
    { waitMs: 30_000 },
  ]);
  assert.deepEqual(v("stop", ["--retry", "TERM/5"]).retry!.steps[1], { waitMs: 5000 });
  assert.deepEqual(
    v("start", ["--supervise", "--stop-schedule", "TERM/1m/KILL/500ms"]).stopSchedule!.steps,
    [{ signal: 15 }, { waitMs: 60_000 }, { signal: 9 }, { waitMs: 500 }],
  );
});

Deno.test("duration bounds stay per option, with units: 0 where refused, too long, malformed", async () => {
  await using sb = await Sandbox.create();
  const start = (args: string[]) => ["start", ...args, "--pidfile", sb.pidfile, "--", "true"];
  for (
    const [args, message] of [
      [start(["--ready-timeout", "0s"]), /bad --ready-timeout "0s": must be more than 0/],
      [
        start(["--ready-timeout", "25d"]),
        /bad --ready-timeout "25d": expected a duration such as 500ms, 5s, 2m or 1h \(a bare number is seconds\)/,
      ],
      [
        start(["--ready-timeout", "600h"]),
        /bad --ready-timeout "600h": expected a duration of at most 2147483647ms/,
      ],
      [start(["--ready-after", "2h"]), /bad --ready-after "2h": expected a duration of at most 1h/],
      [start(["--ready-after", "soon"]), /a bare number is milliseconds/],
      [
        start(["--lock", "etcd://h:1/x", "--lock-ttl", "0ms"]),
        /bad --lock-ttl "0ms": must be more than 0/,
      ],
      [
        ["stop", "--retry", "TERM/5x", "--pidfile", sb.pidfile],
        /"5x" is neither a signal nor a duration/,
      ],
      [
        ["stop", "--retry", "TERM/600h", "--pidfile", sb.pidfile],
        /a wait may be at most 2147483 seconds/,
      ],
    ] as const
  ) {
    assertCleanError(await sr(SOURCE, [...args]), 2, message);
  }
  assert.deepEqual(sb.list(), [], "nothing created");
  // 0 stays allowed where it was: the guard wait, the lock wait.
  assert.equal(
    parseArgs("stop", ["--guard-timeout", "0s", "--pidfile", "x"]).values.guardTimeout,
    0,
  );
});

Deno.test("durations with units reach the action: start --ready-timeout 5s --ready-after 50ms, stop --retry TERM/500ms/KILL/1s", async () => {
  await using sb = await Sandbox.create();
  const pid = await startTracked(
    sb,
    ["--ready-timeout", "5s", "--ready-after", "50ms", "--guard-timeout", "1m"],
    ["sh", "-c", "trap '' TERM; exec sleep 300"],
  );
  const stop = await sr(SOURCE, ["stop", "--retry", "TERM/500ms/KILL/1s", "--pidfile", sb.pidfile]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.ok(!alive(pid), "KILL after 500ms ended the TERM-deaf daemon");
});

Deno.test("--quiet: no stderr line for an outcome of exit 3 or a note, on every command; stdout unchanged; errors still print", async () => {
  await using sb = await Sandbox.create();
  const p = sb.pidfile;
  const q = (args: readonly string[]) => sr(SOURCE, [args[0]!, "--quiet", ...args.slice(1)]);
  // Not running: exit 3 from every command that acts on a daemon, silently.
  Deno.writeTextFileSync(p, "");
  for (const args of [["stop"], ["reload"], ["signal", "TERM"], ["reopen"]]) {
    const r = await q([...args, "--pidfile", p]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [3, "", ""], args.join(" "));
    const loud = await sr(SOURCE, [...args, "--pidfile", p]);
    assertCleanError(loud, 3, /not running/);
  }
  const status = await q(["status", "--pidfile", p]);
  assert.deepEqual([status.code, status.stdout, status.stderr], [3, "not running\n", ""]);

  const start = await q(["start", "--pidfile", p, "--", "sleep", "300"]);
  assert.equal(start.code, 0, start.stderr);
  assert.match(start.stdout, /^[0-9]+\n$/, "start still prints the pid");
  assert.equal(start.stderr, "");
  const pid = Number(start.stdout);
  sb.track(pid);
  for (
    const [args, code, stdout] of [
      [["start", "--pidfile", p, "--", "sleep", "300"], 3, ""],
      [["start", "--oknodo", "--pidfile", p, "--", "sleep", "300"], 0, `${pid}\n`],
      [["run", "--pidfile", p, "--", "sleep", "300"], 3, ""],
      [["status", "--pidfile", p], 0, undefined],
    ] as const
  ) {
    const r = await q([...args]);
    assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    if (stdout !== undefined) assert.equal(r.stdout, stdout, args.join(" "));
    assert.equal(r.stderr, "", args.join(" "));
  }
  assert.equal((await q(["stop", "--pidfile", p])).stderr, "");
  // A note: the keeper that takes over from a program that closed its lock.
  const closer = ["--", "sh", "-c", "exec 3<&-; exec sleep 300"];
  const loud = await sr(SOURCE, ["start", "--pidfile", p, ...closer]);
  sb.track(Number(loud.stdout));
  assert.match(loud.stderr, /closed the pid file's lock descriptor: keeper pid/);
  assert.equal((await sr(SOURCE, ["stop", "--pidfile", p])).code, 0);
  const quiet = await q(["start", "--pidfile", p, ...closer]);
  sb.track(Number(quiet.stdout));
  assert.equal(quiet.code, 0);
  assert.equal(quiet.stderr, "", "the note was printed");
  // Errors still print: 1 and 2.
  const refused = await q(["reload", "--pidfile", p]);
  assertCleanError(refused, 1, /SIGHUP would end/);
  assertCleanError(await q(["stop", "--retry", "nope", "--pidfile", p]), 2, /bad --retry/);
  const restart = await q(["restart", "--pidfile", p, "--", "sleep", "300"]);
  assert.equal(restart.code, 0, restart.stderr);
  assert.match(restart.stdout, /^[0-9]+\n$/);
  sb.track(Number(restart.stdout));
  assert.equal(restart.stderr, "");
  assert.equal((await q(["stop", "--pidfile", p])).code, 0);
});

Deno.test("an unknown option names the nearest one, or the commands that take it", async () => {
  for (
    const [args, message] of [
      [
        ["start", "--pidfle", "x", "--", "true"],
        /unknown option for start: --pidfle \(did you mean --pidfile\?\)/,
      ],
      [["stop", "--pid", "x"], /unknown option for stop: --pid \(did you mean --pidfile\?\)/],
      [["stop", "--oknod", "--pidfile", "x"], /\(did you mean --oknodo\?\)/],
      [["start", "--suprevise", "--pidfile", "x", "--", "true"], /\(did you mean --supervise\?\)/],
      [["stop", "-pidfile", "x"], /unknown option for stop: -pidfile \(did you mean --pidfile\?\)/],
      [
        ["stop", "--json", "--pidfile", "x"],
        /unknown option for stop: --json \(only status and list take it\)/,
      ],
      [["signal", "--force", "--pidfile", "x", "HUP"], /\(only reload takes it\)/],
      [["stop", "--zzzzzzzz", "--pidfile", "x"], /unknown option for stop: --zzzzzzzz$/m],
      [["stauts", "--pidfile", "x"], /unknown command "stauts" \(did you mean status\?\)/],
    ] as const
  ) {
    assertCleanError(await sr(SOURCE, [...args]), 2, message);
  }
});

Deno.test("completion bash: generated from the option table, and bash completes with it", async () => {
  const script = await sr(SOURCE, ["completion", "bash"]);
  assert.equal(script.code, 0, script.stderr);
  await using dir = await tempDir("singleton-run-completion-");
  const file = `${dir.path}/completion.bash`;
  Deno.writeTextFileSync(file, script.stdout);
  const complete = async (line: string) => {
    const r = await bash(
      `source '${file}'; COMP_WORDS=(${line}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); ` +
        `[[ '${line}' == *' ' ]] && COMP_WORDS+=('') && COMP_CWORD=\${#COMP_WORDS[@]}-1; ` +
        `_singleton_run; printf '%s\\n' "\${COMPREPLY[@]}"`,
    );
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split("\n").filter((w) => w !== "").sort();
  };
  await assertCompletesTable(complete);
  assert.deepEqual(await complete("singleton-run start --restart a"), ["always"]);
  assert.ok((await complete("singleton-run signal --pidfile x T")).includes("TERM"));
  assert.deepEqual(await complete(`singleton-run start --pidfile ${dir.path}/compl`), [file]);
  assert.deepEqual(await complete("singleton-run completion z"), ["zsh"]);
});

Deno.test("completion needs a shell it knows, and no --pidfile", async () => {
  assertCleanError(
    await sr(SOURCE, ["completion"]),
    2,
    /completion needs a shell: bash, zsh, fish/,
  );
  assertCleanError(await sr(SOURCE, ["completion", "tcsh"]), 2, /no completion for shell "tcsh"/);
  for (const shell of ["bash", "zsh", "fish"]) {
    const r = await sr(SOURCE, ["completion", shell]);
    assert.equal(r.code, 0, r.stderr);
    for (const [, spec] of OPTION_LIST) assert.ok(r.stdout.includes(spec.name), spec.name);
  }
});

Deno.test({
  name: "completion fish: fish completes every command's options from it",
  ignore: !onPath("fish"),
  async fn() {
    const script = (await sr(SOURCE, ["completion", "fish"])).stdout;
    await using dir = await tempDir("singleton-run-completion-");
    Deno.writeTextFileSync(`${dir.path}/c.fish`, script);
    const complete = async (line: string) => {
      const out = await new Deno.Command("fish", {
        args: ["--no-config", "-c", `source ${dir.path}/c.fish; complete -C '${line}'`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "")
        .map((l) => l.split("\t")[0]!).sort();
    };
    await assertCompletesTable(complete);
    assert.deepEqual(await complete("singleton-run start --restart "), [
      "always",
      "never",
      "on-failure",
    ]);
  },
});

Deno.test({
  name: "completion zsh: zsh completes every command's options from it",
  ignore: !onPath("zsh"),
  async fn() {
    const script = (await sr(SOURCE, ["completion", "zsh"])).stdout;
    await using dir = await tempDir("singleton-run-completion-");
    Deno.writeTextFileSync(`${dir.path}/c.zsh`, script);
    const syntax = await new Deno.Command("zsh", { args: ["-n", `${dir.path}/c.zsh`] }).output();
    assert.ok(syntax.success, "zsh -n");
    // An interactive zsh on a pseudo-terminal, with compadd recording what it is given;
    // one session for every line (compinit is slow), a line "@@" after each. Each step is
    // waited for by what it prints, so no input is ahead of a completion while it runs.
    Deno.writeTextFileSync(
      `${dir.path}/drive.zsh`,
      `zmodload zsh/zpty
zpty z zsh -f -i
send() { zpty -w z "$1; print -r -- DO''NE"; zpty -r -m z out '*DONE*' }
send "autoload -U compinit; compinit -u -D"
send "source \${(q)1}"
send "compadd() { builtin compadd \\"\\$@\\"; local -a h; builtin compadd -O h \\"\\$@\\"; print -rl -- \\$h >> \${(q)2}; }"
send "marked() { zle complete-word; print -u2 -n -- COMP''LETED; }; zle -N marked; bindkey '^T' marked"
for line in "\${@[3,-1]}"; do
  zpty -w -n z "$line"$'\\C-t'
  zpty -r -m z out '*COMPLETED*'
  zpty -w -n z $'\\C-u'
  send "print @@ >> \${(q)2}"
done
zpty -d z
`,
    );
    const lines = [
      ...COMMANDS.map((cmd) => `singleton-run ${cmd} --`),
      "singleton-run st",
      "singleton-run start --pidfile x -- slee",
    ];
    const out = `${dir.path}/out`;
    const r = await new Deno.Command("zsh", {
      args: [`${dir.path}/drive.zsh`, `${dir.path}/c.zsh`, out, ...lines],
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    assert.ok(r.success, new TextDecoder().decode(r.stderr));
    const offers = Deno.readTextFileSync(out).split("@@\n").map((block) =>
      [...new Set(block.split("\n").filter((w) => w !== "" && w !== "--"))].sort()
    );
    const complete = (line: string) => offers[lines.indexOf(line)]!;
    await assertCompletesTable(complete);
    assert.ok(complete("singleton-run start --pidfile x -- slee").includes("sleep"));
  },
});

Deno.test({
  name: "deno task man writes singleton-run.1, and man -l renders every option without a warning",
  ignore: !onPath("man"),
  async fn() {
    const task = await bash(`cd '${ROOT}' && '${Deno.execPath()}' task --quiet man`);
    assert.equal(task.code, 0, task.stderr);
    const page = `${ROOT}dist/singleton-run.1`;
    const out = await new Deno.Command("man", {
      args: ["--warnings=all", "-l", page],
      env: { MANWIDTH: "100", MAN_KEEP_FORMATTING: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stderr), "", "troff warnings");
    assert.match(text, /^SINGLETON-RUN\(1\)/);
    const version = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).version;
    assert.match(text, new RegExp(`singleton-run ${version.replaceAll(".", "\\.")}`));
    for (const [, spec] of OPTION_LIST) {
      assert.match(
        text,
        new RegExp(`^ {7}--${spec.name}( |$)`, "m"),
        `--${spec.name} has an entry`,
      );
    }
    for (const cmd of COMMANDS) assert.match(text, new RegExp(`^ {7}${cmd}\\b`, "m"), cmd);
    assert.match(text, /DURATIONS\n.*500ms, 5s, 2m or 1h/);
  },
});

Deno.test("a closed or broken stdout or stderr is never an internal error: the daemon starts, the code is the outcome's", async () => {
  await using sb = await Sandbox.create();
  const p = sb.pidfile;
  const start = `${CLI} start --pidfile '${p}' -- sleep 300`;
  const piped = await bash(`${start} | head -0; echo "\${PIPESTATUS[0]}" >&2`);
  assert.equal(piped.stderr, "0\n", "start | head -0 exits 0 and says nothing");
  const pid = readPid(p)!;
  sb.track(pid);
  assert.ok(alive(pid) && locked(p), "the daemon runs");
  // The same outcome (3) whether stdout or stderr is closed or has no reader.
  for (
    const redirect of [">&-", "2>&-", ">&- 2>&-", "2>&1 >/dev/null | head -0", "| head -0"]
  ) {
    const r = await bash(`${start} ${redirect}; echo "code \${PIPESTATUS[0]}"`);
    assert.match(r.stdout, /code 3\n$/, `${redirect}: ${r.stdout} ${r.stderr}`);
    assert.doesNotMatch(r.stdout + r.stderr, /internal error/);
  }
  const status = await bash(
    `${CLI} status --json --pidfile '${p}' | head -0; echo "\${PIPESTATUS[0]}" >&2`,
  );
  assert.equal(status.stderr, "0\n");
  const stop = await bash(`${CLI} stop --pidfile '${p}' >&- 2>&-; echo "code $?"`);
  assert.equal(stop.stdout, "code 0\n");
  assert.ok(!alive(pid));
  const help = await bash(`${CLI} --help | head -0; echo "\${PIPESTATUS[0]}" >&2`);
  assert.equal(help.stderr, "0\n");
});

Deno.test("stop, status, reload, signal and reopen of a pid file that does not exist create nothing", async () => {
  await using sb = await Sandbox.create();
  for (
    const args of [["stop"], ["stop", "--oknodo"], ["status"], ["reload"], ["signal", "TERM"], [
      "reopen",
    ]]
  ) {
    const r = await sr(SOURCE, [args[0]!, "--pidfile", sb.pidfile, ...args.slice(1)]);
    assert.equal(r.code, args[1] === "--oknodo" ? 0 : 3, `${args.join(" ")}: ${r.stderr}`);
    assert.deepEqual(sb.list(), [], `${args.join(" ")} created a file`);
  }
});

Deno.test("--version prints deno.json's version", async () => {
  const version = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).version;
  assert.equal((await sr(SOURCE, ["--version"])).stdout, `singleton-run ${version}\n`);
  assert.match((await sr(SOURCE, ["--help"])).stdout, new RegExp(`^singleton-run ${version}:`));
});

Deno.test("a guard another user may not open: --guard is suggested only where it would work", async () => {
  if (Deno.uid() !== 0) {
    console.log("skipped: needs root to act as user nobody");
    return;
  }
  await using sb = await Sandbox.create();
  Deno.chmodSync(sb.dir, 0o755);
  await using nobodyDir = await tempDir("singleton-run-nobody-");
  const denoDir = nobodyDir.path;
  Deno.chownSync(denoDir, 65534, 65534);
  const asNobody = (args: string[]) =>
    sr(SOURCE, args, {
      prefix: ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"],
      env: { DENO_DIR: denoDir, HOME: denoDir },
    });
  // root's daemon: no option of nobody's gets past the kernel, so none is suggested.
  const rootPid = await startTracked(sb, [], ["sleep", "300"]);
  for (const args of [["stop"], ["reload"], ["signal", "TERM"]]) {
    const r = await asNobody([...args, "--pidfile", sb.pidfile]);
    assertCleanError(
      r,
      1,
      new RegExp(`permission denied \\(the daemon, pid ${rootPid}, runs as user "root", whom`),
    );
    assert.doesNotMatch(r.stderr, /--guard/);
  }
  const guard = `${denoDir}/nobody.guard`;
  const tried = await asNobody(["stop", "--pidfile", sb.pidfile, "--guard", guard]);
  assertCleanError(tried, 1, /operation not permitted/);
  assert.ok(alive(rootPid));
  Deno.removeSync(guard);
  // nobody's own daemon, with its pid file in root's directory: there --guard works.
  const own = sb.path("own.pid");
  Deno.writeTextFileSync(own, "");
  Deno.chownSync(own, 65534, 65534);
  const elsewhere = `${denoDir}/own.guard`;
  const started = await asNobody([
    "start",
    "--pidfile",
    own,
    "--guard",
    elsewhere,
    "--",
    "sleep",
    "300",
  ]);
  assert.equal(started.code, 0, started.stderr);
  sb.track(Number(started.stdout));
  const hinted = await asNobody(["stop", "--pidfile", own]);
  assertCleanError(hinted, 1, /permission denied \(name a writable one with --guard FILE\)/);
  const followed = await asNobody(["stop", "--pidfile", own, "--guard", elsewhere]);
  assert.equal(followed.code, 0, followed.stderr);
  assert.ok(!alive(Number(started.stdout)));
});
