/**
 * A real rsyslogd for tests, on a private `/dev/log`, so the machine's own
 * syslogd never sees a test line: a shell in its own mount namespace
 * (`unshare -m --propagation private`) puts a tmpfs on /dev, binds back the
 * device nodes a program needs, starts `rsyslogd -n` with imuxsock on
 * /dev/log and an omfile action, and waits.
 * Programs run inside that namespace with {@link Rsyslog.run}; the machine's
 * own /dev is never touched.
 *
 * ```ts ignore
 * await using sl = await startRsyslog();
 * if (sl.skipReason) return console.log(`skipped: ${sl.skipReason}`);
 * await sl.run([Deno.execPath(), "run", "-A", "prog.ts"]);
 * const lines = await sl.lines({ match: /my-ident/ });
 * ```
 *
 * Each log line reads `facility.severity ident pid message`, e.g.
 * `local3.warning sr-test 4242 disk 100% full`.
 *
 * @module
 */

import { exists } from "./process.ts";

/** What a program run inside the namespace did. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of {@link Rsyslog.lines}. */
export interface LinesOptions {
  /** Wait until a line matches this. */
  readonly match?: RegExp;
  /** Wait until there are at least this many lines. */
  readonly atLeast?: number;
  /**
   * The longest wait in ms; the lines so far are returned when it passes.
   * @default {5000}
   */
  readonly timeout?: number;
}

/** A running rsyslogd in a private mount namespace, or the reason there is none. */
export interface Rsyslog extends AsyncDisposable {
  /** Set when rsyslogd cannot run here (not root, not installed); nothing else works then. */
  readonly skipReason: string | undefined;
  /** The file rsyslogd writes every message to. */
  readonly logFile: string;
  /**
   * Run a program inside the namespace (where /dev/log is this rsyslogd).
   *
   * @param argv the program and its arguments
   * @param options extra environment, and a timeout in ms (default 20000)
   */
  run(
    argv: readonly string[],
    options?: { readonly env?: Record<string, string>; readonly timeout?: number },
  ): Promise<RunResult>;
  /**
   * The argv that runs a program inside the namespace (`nsenter ... -- argv`),
   * for callers that need `Deno.Command` options of their own (streams,
   * spawn without waiting).
   *
   * @param argv the program and its arguments
   */
  wrap(argv: readonly string[]): string[];
  /** The log file's lines, waiting (bounded) for a match or a count. */
  lines(options?: LinesOptions): Promise<string[]>;
}

const RSYSLOGD = "/usr/sbin/rsyslogd";

/**
 * Why a real rsyslogd cannot run here, if it cannot.
 *
 * @returns the reason, or undefined when it can
 */
export function rsyslogSkipReason(): string | undefined {
  if (Deno.build.os !== "linux") return "rsyslogd tests need Linux";
  if (Deno.uid() !== 0) return "needs root to make a private mount namespace (unshare -m)";
  if (!exists(RSYSLOGD)) return `${RSYSLOGD} is not installed (apt-get install rsyslog)`;
  for (const tool of ["/usr/bin/unshare", "/usr/bin/nsenter"]) {
    if (!exists(tool)) return `${tool} is missing (util-linux)`;
  }
  return undefined;
}

const SETUP = `
set -eu
W="$1"
mkdir -p "$W/olddev"
mount --rbind /dev "$W/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero random urandom tty full; do
  touch "/dev/$n"
  mount --bind "$W/olddev/$n" "/dev/$n"
done
mkdir /dev/pts /dev/shm
mount --rbind "$W/olddev/pts" /dev/pts
mount --rbind "$W/olddev/shm" /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
${RSYSLOGD} -n -f "$W/rsyslog.conf" -i "$W/rsyslogd.pid" &
RS=$!
i=0
while [ ! -S /dev/log ]; do
  i=$((i + 1))
  if [ "$i" -gt 500 ] || ! kill -0 "$RS" 2>/dev/null; then
    echo "rsyslogd did not create /dev/log" >&2
    kill "$RS" 2>/dev/null || true
    exit 1
  fi
  sleep 0.01
done
echo ready
read _ || true
kill "$RS"
wait "$RS" || true
`;

function config(dir: string): string {
  return [
    `global(workDirectory="${dir}")`,
    `module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")`,
    `template(name="t" type="string"`,
    `  string="%syslogfacility-text%.%syslogseverity-text% %programname% %procid% %msg:2:$%\\n")`,
    `*.* action(type="omfile" file="${dir}/messages.log" template="t")`,
    "",
  ].join("\n");
}

const skipped = (reason: string): Rsyslog => ({
  skipReason: reason,
  logFile: "",
  run: () => Promise.reject(new Error(`rsyslogd is not running: ${reason}`)),
  wrap: () => {
    throw new Error(`rsyslogd is not running: ${reason}`);
  },
  lines: () => Promise.resolve([]),
  [Symbol.asyncDispose]: () => Promise.resolve(),
});

/**
 * Start rsyslogd in a private mount namespace.
 *
 * @returns the running instance (dispose it to stop rsyslogd and remove its
 *   files), or one whose `skipReason` says why it cannot run here
 * @throws {Error} when rsyslogd should run but does not come up within 5 s
 */
export async function startRsyslog(): Promise<Rsyslog> {
  const reason = rsyslogSkipReason();
  if (reason) return skipped(reason);
  const dir = await Deno.makeTempDir({ prefix: "rsyslog-test-" });
  await Deno.writeTextFile(`${dir}/rsyslog.conf`, config(dir));
  const logFile = `${dir}/messages.log`;
  const holder = new Deno.Command("/usr/bin/unshare", {
    args: ["-m", "--propagation", "private", "/bin/sh", "-c", SETUP, "sh", dir],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = holder.stdin.getWriter();
  const stopHolder = async (): Promise<void> => {
    await stdin.close().catch(() => {});
    const done = await Promise.race([
      holder.status,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000)),
    ]);
    if (done === undefined) {
      holder.kill("SIGKILL");
      await holder.status;
    }
  };
  const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const errText = new Response(holder.stderr).text();
  const first = await Promise.race([
    reader.read(),
    new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 5000)),
  ]);
  if (first === "timeout" || first.done || !first.value.includes("ready")) {
    await stopHolder();
    await reader.cancel().catch(() => {});
    const err = await errText;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`rsyslogd did not start: ${err.trim() || "no output"}`);
  }
  reader.releaseLock();
  await holder.stdout.cancel().catch(() => {});

  const wrap = (argv: readonly string[]): string[] => {
    if (argv.length === 0) throw new TypeError("a program is needed");
    return ["/usr/bin/nsenter", "-t", String(holder.pid), "-m", "--", ...argv];
  };
  return {
    skipReason: undefined,
    logFile,
    wrap,
    async run(argv, options = {}): Promise<RunResult> {
      const [program, ...args] = wrap(argv);
      const out = await new Deno.Command(program!, {
        args,
        env: options.env ?? {},
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(options.timeout ?? 20_000),
      }).output();
      const decode = (b: Uint8Array) => new TextDecoder().decode(b);
      return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
    },
    async lines(options = {}): Promise<string[]> {
      const deadline = performance.now() + (options.timeout ?? 5000);
      for (;;) {
        let text = "";
        try {
          text = await Deno.readTextFile(logFile);
        } catch { /* not written yet */ }
        const lines = text.split("\n").filter((l) => l !== "");
        const enough = (options.atLeast === undefined || lines.length >= options.atLeast) &&
          (options.match === undefined || lines.some((l) => options.match!.test(l)));
        if (enough || performance.now() >= deadline) return lines;
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await stopHolder();
      await errText.catch(() => "");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
