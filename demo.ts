/**
 * A short narrated tour of `singleton-run` (`deno task demo`): start a small
 * service by name, watch a second start be refused, ask for its status,
 * list the services, reload it, restart it from its record, stop it.
 * Everything happens in a temporary directory (the directory of services
 * is set there) that is removed at the end; nothing is left running.
 *
 * @module
 */

const CLI = [Deno.execPath(), "run", "--allow-all", new URL("./cli.ts", import.meta.url).pathname];
const dec = new TextDecoder();
const bold = (s: string) => Deno.stdout.isTerminal() ? `\x1b[1m${s}\x1b[0m` : s;
const dim = (s: string) => Deno.stdout.isTerminal() ? `\x1b[2m${s}\x1b[0m` : s;

function say(text: string): void {
  console.log(`\n${text}`);
}

/** Run `singleton-run ARGS`, show it as a shell would, and return what it printed. */
async function sr(args: string[], shown = args): Promise<{ code: number; stdout: string }> {
  console.log(bold(`$ singleton-run ${shown.map(quote).join(" ")}`));
  const out = await new Deno.Command(CLI[0]!, {
    args: [...CLI.slice(1), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const stdout = dec.decode(out.stdout);
  const stderr = dec.decode(out.stderr);
  if (stdout) console.log(show(stdout.trimEnd()));
  if (stderr) console.log(dim(show(stderr.trimEnd())));
  console.log(dim(`(exit ${out.code})`));
  return { code: out.code, stdout };
}

function quote(s: string): string {
  return /^[\w@%+=:,./$-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

function expect(what: string, ok: boolean): void {
  if (!ok) throw new Error(`demo: expected ${what}`);
}

const dir = await Deno.makeTempDir({ prefix: "singleton-run-demo-" });
const shortDir = "$DEMO";
function show(s: string): string {
  return s.replaceAll(dir, shortDir);
}
const services = `${dir}/services`;
// Where names live: /run/singleton-run for root, else a directory of the user's own; here, ours.
Deno.env.set("SINGLETON_RUN_DIR", services);
const pidfile = `${services}/web.pid`;
const log = `${dir}/web.log`;
const service = [
  "sh",
  "-c",
  "trap 'echo reloading configuration' HUP; echo serving on port 8080; " +
  "while :; do sleep 0.1; done",
];
const pids: number[] = [];

try {
  console.log(bold("singleton-run: exactly one instance, its pid file locked for its whole life"));
  say(`We work in a temporary directory, ${shortDir}=${dir}, and keep the services in`);
  console.log(
    `${shortDir}/services (SINGLETON_RUN_DIR; by default /run/singleton-run for root).`,
  );

  say("1. Start a small service, by name, as a daemon. start prints its pid once it is ready:");
  const args = ["start", "--name", "web", "--output", log, "--", ...service];
  const started = await sr(args, args.map(show));
  expect("start to succeed", started.code === 0);
  const pid = Number(started.stdout);
  pids.push(pid);
  console.log(
    `   The daemon (pid ${pid}) is its own session leader, cwd /, stdin /dev/null; ` +
      `it holds a flock on ${show(pidfile)} through an inherited descriptor.`,
  );

  say("2. A second start finds the lock held and names the holder (exit 3, nothing to do):");
  const second = await sr(args, args.map(show));
  expect("the second start to be refused", second.code === 3);

  say("3. status answers at once (LSB codes: 0 running, 1 stale, 3 stopped, 4 unknown):");
  await sr(["status", "web"]);
  await sr(["status", "--json", "web"]);
  console.log("   signal 0 sends nothing: it checks that the daemon runs and may be signalled:");
  const check = await sr(["signal", "web", "0"]);
  expect("signal 0 to find it running", check.code === 0);

  say("4. list shows every service by name, in one process:");
  await sr(["list"]);

  say("5. reload sends SIGHUP, through a pidfd, so a recycled pid is never signalled:");
  await sr(["reload", "web"]);
  const deadline = Date.now() + 3000;
  while (!Deno.readTextFileSync(log).includes("reloading") && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log(`   ${show(log)} now says:`);
  for (const line of Deno.readTextFileSync(log).trimEnd().split("\n")) console.log(`   | ${line}`);

  say("6. restart with no command starts again what start recorded beside the pid file");
  console.log(`   (${show(pidfile)}.record: the command, its options, its --env values):`);
  const restarted = await sr(["restart", "web"]);
  expect("restart to succeed", restarted.code === 0);
  pids.push(Number(restarted.stdout));

  say("7. stop sends TERM (then KILL after 10 s, as --retry TERM/10/KILL/5 says) and waits");
  console.log("   for the lock to be released, not for a zombie to be reaped:");
  const stopped = await sr(["stop", "web"]);
  expect("stop to succeed", stopped.code === 0);
  const after = await sr(["status", "web"]);
  expect("status 3 after stop", after.code === 3);
  console.log(
    `   The pid file is left empty (${Deno.statSync(pidfile).size} bytes), ` +
      "so nobody mistakes an old pid for a live one.",
  );

  say("8. A start whose daemon fails before it is ready says why and leaves nothing behind:");
  const failing = [
    "start",
    "--name",
    "broken",
    "--output",
    log,
    "--",
    "sh",
    "-c",
    "echo 'bad config' >&2; exit 78",
  ];
  const failed = await sr(failing, failing.map(show));
  expect("the failing start to exit 1", failed.code === 1);

  say("Done: see 'singleton-run --help' and docs/cli.md for run, signal, --supervise,");
  console.log("--notify-fd / --notify-socket readiness, --user and the rest.");
} finally {
  for (const pid of pids) {
    try {
      // Only if the tour stopped halfway: the daemons we started, by their pids.
      if (Deno.readTextFileSync(`/proc/${pid}/cmdline`).startsWith("sh")) Deno.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  await Deno.remove(dir, { recursive: true });
}
