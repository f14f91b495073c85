/**
 * What the smaller benches (`health.ts`, `jobs.ts`) share: the form of the
 * command they run (the bundle when it was built, else the source), a table
 * of rows, each a list of samples and its median, and how the table and its
 * aims are printed and saved.
 *
 * @module
 */

import { cliArgv, type CliForm, ROOT } from "../testing/process.ts";

/** The bundle when `deno task bundle` built it, else the source. */
export const form: CliForm = (() => {
  try {
    Deno.statSync(`${ROOT}/dist/singleton-run.js`);
    return "bundle";
  } catch {
    return "source";
  }
})();

/** The argv prefix that runs singleton-run in that form. */
export const cli: string[] = cliArgv(form);

/** One line of a table: its samples, and their median once computed. */
export interface Row {
  readonly name: string;
  readonly unit: string;
  readonly samples: number[];
  median?: number;
}

/** An aim of a bench, met or missed, with the numbers that say so. */
export interface Target {
  readonly what: string;
  readonly met: boolean;
  readonly detail: string;
}

/** A table, in the order its rows were made. */
export class Table {
  readonly rows: Row[] = [];

  /** A new row, at the end. */
  row(name: string, unit: string): Row {
    const r: Row = { name, unit, samples: [] };
    this.rows.push(r);
    return r;
  }

  /** Every row's median, from its samples; call once the samples are in. */
  settle(): void {
    for (const r of this.rows) r.median = median(r.samples);
  }

  /**
   * Prints the rows that have samples as a markdown table under `title`,
   * then the aims, and saves both to `json`.
   */
  async report(title: string, targets: readonly Target[], json: string): Promise<void> {
    const date = new Date().toISOString();
    console.log(`\nsingleton-run ${title} (${form}), ${date}\n`);
    console.log("| what | median | runs |\n| --- | ---: | ---: |");
    for (const r of this.rows.filter((r) => r.samples.length > 0)) {
      console.log(`| ${r.name} | ${fmt(r.median)} ${r.unit} | ${r.samples.length} |`);
    }
    console.log("\nTargets:");
    for (const t of targets) console.log(`- ${t.met ? "met" : "MISSED"}: ${t.what}: ${t.detail}`);
    const rows = this.rows;
    await Deno.writeTextFile(json, JSON.stringify({ date, form, rows, targets }, null, 2) + "\n");
  }
}

/** The median of some samples (NaN for none). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A number as the tables print it: "-" for none, 1 decimal from 10 up, else 2. */
export function fmt(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n)
    ? "-"
    : Math.abs(n) >= 10
    ? n.toFixed(1)
    : n.toFixed(2);
}
