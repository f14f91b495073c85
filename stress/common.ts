/**
 * What every stress family shares: a tally of checks with the reason of each
 * failure, the command under test, and a look at what a run left behind.
 *
 * @module
 */

import {
  cliArgv,
  type CliForm,
  findMentioning,
  ROOT,
  runCmd,
  type RunOptions,
} from "../testing/process.ts";
import type { CmdResult } from "../testing/process.ts";

/** The outcome of one family. */
export class Tally {
  /** The family's name. */
  readonly family: string;
  /** How many checks passed. */
  passed = 0;
  /** Failures: what was checked and what happened. */
  readonly failures: string[] = [];
  /** Failures that match a documented known bug (id -> count). */
  readonly known = new Map<string, number>();
  /** Extra facts for the summary line (counts of operations and the like). */
  readonly facts: string[] = [];

  /** @param family the family's name */
  constructor(family: string) {
    this.family = family;
  }

  /**
   * Record one check.
   *
   * @param ok whether it held
   * @param what what was checked, and what happened when it did not
   * @param knownBug the id of a documented bug this failure is an instance of
   * @returns ok
   */
  check(ok: boolean, what: () => string, knownBug?: string): boolean {
    if (ok) this.passed++;
    else {
      const text = what();
      this.failures.push(knownBug ? `[${knownBug}] ${text}` : text);
      if (knownBug) this.known.set(knownBug, (this.known.get(knownBug) ?? 0) + 1);
    }
    return ok;
  }

  /** Failures that are not instances of a known bug. */
  get unknownFailures(): number {
    let k = 0;
    for (const n of this.known.values()) k += n;
    return this.failures.length - k;
  }
}

/** The command under test and how to call it. */
export class Cli {
  readonly #prefix: string[];
  /** "bundle" or "source". */
  readonly form: CliForm;

  /** @param form which build of singleton-run to drive */
  constructor(form: CliForm) {
    this.form = form;
    this.#prefix = cliArgv(form);
  }

  /**
   * Run `singleton-run ARGS...`, bounded in time.
   *
   * @param args the arguments after the program
   * @param options timeout, a deliberate kill, env
   */
  run(args: readonly string[], options: RunOptions = {}): Promise<CmdResult> {
    return runCmd([...this.#prefix, ...args], { timeoutMs: 30_000, ...options });
  }
}

/**
 * The build to drive by default: the bundle when it exists and is not older
 * than any source file it is built from (cli.ts and src/), else the source.
 */
export function defaultForm(): CliForm {
  try {
    const bundle = Deno.statSync(`${ROOT}/dist/singleton-run.js`).mtime?.getTime() ?? 0;
    return bundle >= newestSource() ? "bundle" : "source";
  } catch {
    return "source";
  }
}

/** The newest modification time of cli.ts and every file under src/ (ms). */
function newestSource(): number {
  let newest = 0;
  const visit = (path: string) => {
    const st = Deno.statSync(path);
    if (st.isDirectory) {
      for (const e of Deno.readDirSync(path)) visit(`${path}/${e.name}`);
    } else newest = Math.max(newest, st.mtime?.getTime() ?? 0);
  };
  visit(`${ROOT}/cli.ts`);
  visit(`${ROOT}/src`);
  return newest;
}

/**
 * Lines of stderr that look like a JavaScript stack trace, also one quoted
 * into a single line (`\n    at f (file:///...)`).
 */
export function stackLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) =>
    /^\s+at /.test(l) || /^error: Uncaught/.test(l) || /\\n\s+at /.test(l) ||
    /\bat \S+ \((file|ext|node):/.test(l)
  );
}

/** The non-empty lines of a text. */
export function linesOf(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

/** A short, one-line rendering of a command result for a failure message. */
export function show(res: CmdResult): string {
  const err = res.stderr.trim().replaceAll("\n", "⏎").slice(0, 300);
  const out = res.stdout.trim().replaceAll("\n", "⏎").slice(0, 100);
  return `exit ${res.timedOut ? "TIMEOUT" : res.signal ? res.signal : res.code}` +
    `${out ? `, stdout "${out}"` : ""}${err ? `, stderr "${err}"` : ""}`;
}

/**
 * The names in a directory, recursively, sorted (what a case must not add to).
 *
 * @param dir the directory
 */
export function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, prefix: string) => {
    for (const e of Deno.readDirSync(d)) {
      out.push(prefix + e.name);
      if (e.isDirectory) {
        try {
          walk(`${d}/${e.name}`, `${prefix}${e.name}/`);
        } catch {
          // unreadable: its name is enough
        }
      }
    }
  };
  walk(dir, "");
  return out.sort();
}

/**
 * Inodes of files locked now, from /proc/locks, read twice (a single read of
 * a busy /proc/locks can skip a record): a lock seen in either
 * read counts.
 */
export function lockedInodes(): Set<number> {
  const out = new Set<number>();
  for (let i = 0; i < 2; i++) {
    const text = Deno.readTextFileSync("/proc/locks");
    for (const line of text.split("\n")) {
      if (line.includes("->")) continue;
      const m = /\s[0-9a-f]+:[0-9a-f]+:([0-9]+)\s/.exec(line);
      if (m) out.add(Number(m[1]));
    }
  }
  return out;
}

/**
 * Files under `dir` that some process holds a lock on.
 *
 * @param dir the directory
 */
export function lockedFilesIn(dir: string): string[] {
  const locked = lockedInodes();
  const out: string[] = [];
  for (const name of listing(dir)) {
    try {
      const st = Deno.lstatSync(`${dir}/${name}`);
      if (st.isFile && locked.has(st.ino!)) out.push(name);
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * Processes that mention `needle` in their argv, other than `except`.
 *
 * @param needle a temp dir or a marker
 * @param except pids that are expected
 */
export function strays(needle: string, except: readonly number[] = []): number[] {
  return findMentioning(needle).filter((p) => !except.includes(p));
}

/** A deterministic random source (mulberry32), so a failing seed can be replayed. */
export class Rng {
  #s: number;
  /** @param seed any 32-bit integer */
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#s += 0x6d2b79f5);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /**
   * An integer in [0, n).
   *
   * @param n the bound
   */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /**
   * Pick by weight.
   *
   * @param table value to weight
   */
  pick<T extends string>(table: Readonly<Record<T, number>>): T {
    const entries = Object.entries(table) as [T, number][];
    let r = this.next() * entries.reduce((a, [, w]) => a + w, 0);
    for (const [k, w] of entries) {
      if ((r -= w) < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }
}
