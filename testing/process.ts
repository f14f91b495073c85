/**
 * Small helpers for tests that cross process boundaries: temporary
 * directories that remove themselves, child processes read line by line,
 * and a look at a process's state in /proc.
 *
 * @module
 */

/** A temporary directory removed (with its content) when disposed. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
  join(name: string): string;
}

/** Make a temporary directory that `await using` removes at the end of the scope. */
export async function tempDir(prefix = "singleton-run-test-"): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    join: (name) => `${path}/${name}`,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** A child process whose stdout is read a line at a time. */
export class LineChild implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;

  constructor(command: string, args: string[], options: { env?: Record<string, string> } = {}) {
    this.process = new Deno.Command(command, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      ...(options.env ? { env: options.env } : {}),
    }).spawn();
    this.#stdin = this.process.stdin.getWriter();
    this.#lines = this.process.stdout
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(splitLines())[Symbol.asyncIterator]();
  }

  get pid(): number {
    return this.process.pid;
  }

  /** The next line of output, or undefined at its end; fails after `timeoutMs`. */
  async line(timeoutMs = 20_000): Promise<string | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no line from pid ${this.pid} in ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const next = await Promise.race([this.#lines.next(), timeout]);
      return next.done ? undefined : next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Close its stdin (holders then let go) and wait for it to exit. */
  async finish(): Promise<Deno.CommandStatus> {
    await this.#stdin.close().catch(() => {});
    while (await this.line().catch(() => undefined) !== undefined) { /* drain */ }
    return await this.process.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.process.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.finish().catch(() => {});
  }
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, controller) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) controller.enqueue(p);
    },
    flush(controller) {
      if (rest) controller.enqueue(rest);
    },
  });
}

/** The one-letter state of a process (R, S, Z, ...) or undefined when it is gone. */
export function processState(pid: number): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/** Whether a path exists (following symlinks). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether a process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== "Z" && state !== "X";
}

/** The fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]. */
export function procStat(pid: number): string[] {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** Kill a process we started, by pid, ignoring one that is already gone. */
export function killQuietly(pid: number, signal: Deno.Signal = "SIGKILL"): void {
  try {
    Deno.kill(pid, signal);
  } catch { /* gone */ }
}

/** Wait (bounded) until a condition holds, checking every few milliseconds. */
export async function eventually(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `deno run -A` with this Deno, for fixture programs. */
export function denoArgs(script: string, ...args: string[]): [string, string[]] {
  return [Deno.execPath(), ["run", "-A", "--quiet", script, ...args]];
}
