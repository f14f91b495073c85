/**
 * Runs tests/fixtures/service.ts (a program that calls daemonize()) and
 * cleans up after it: kills the daemon by the pid in its pid file, waits for
 * the lock to be released, removes the directory.
 *
 * @module
 */
import { PidFile } from "../src/lock/pidfile.ts";
import { findMentioning, killQuietly } from "./process.ts";

export const serviceFixture = new URL("../tests/fixtures/service.ts", import.meta.url).pathname;

/** A temporary directory for one daemon, disposable. */
export interface ServiceDir extends AsyncDisposable {
  readonly path: string;
  readonly pidFile: string;
  /** Run the fixture's foreground process in `mode`. */
  start(
    mode: string,
    env?: Record<string, string>,
  ): Promise<Deno.CommandOutput & { ms: number; err: string }>;
  /** The daemon's pid from the pid file, or undefined. */
  pid(): number | undefined;
  /** The events the daemon wrote, in order. */
  events(): string[];
  /** What the daemon wrote to stdout/stderr. */
  output(): string;
  /** Whether any process still runs the fixture in this directory. */
  processes(): number[];
}

export async function serviceDir(): Promise<ServiceDir> {
  const path = await Deno.makeTempDir({ prefix: "daemon-test-" });
  const pidFile = `${path}/app.pid`;
  const read = (name: string) => {
    try {
      return Deno.readTextFileSync(`${path}/${name}`);
    } catch {
      return "";
    }
  };
  const processes = (): number[] => findMentioning(path);
  return {
    path,
    pidFile,
    async start(mode, env = {}) {
      const t0 = performance.now();
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", serviceFixture, path, mode],
        env,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
      return { ...out, ms: performance.now() - t0, err: new TextDecoder().decode(out.stderr) };
    },
    pid() {
      const text = read("app.pid").trim();
      return text === "" ? undefined : Number(text);
    },
    events: () => read("events.log").split("\n").filter((l) => l !== ""),
    output: () => read("output.log"),
    processes,
    async [Symbol.asyncDispose]() {
      for (const pid of processes()) killQuietly(pid);
      await PidFile.waitForRelease(pidFile, { timeout: 5000 });
      await Deno.remove(path, { recursive: true });
    },
  };
}
