/**
 * The one grammar for a length of time, wherever one is written: every
 * duration option of the command and each wait of a stop schedule. A number
 * (`30`, `0.5`) with an optional unit: `ms`, `s`, `m` or `h`. A bare number
 * is in the unit the caller names (seconds everywhere but `--ready-after`,
 * whose bare numbers have always been milliseconds).
 *
 * @module
 */

/** The units a duration may carry, in milliseconds each. */
const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** A unit of {@link durationMs}. */
export type DurationUnit = keyof typeof UNITS;

const DURATION = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$/;

/**
 * Read a duration.
 *
 * @param text the duration, such as `500ms`, `1.5s`, `2m`, `1h` or `30`
 * @param bare the unit of a number written without one
 * @returns whole milliseconds (rounded), or undefined when `text` is not a duration
 * @example
 * ```ts
 * import { durationMs } from "./duration.ts";
 * durationMs("2m"); // 120000
 * durationMs("250", "ms"); // 250
 * durationMs("soon"); // undefined
 * ```
 */
export function durationMs(text: string, bare: DurationUnit = "s"): number | undefined {
  const m = DURATION.exec(text);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNITS[(m[2] ?? bare) as DurationUnit]);
}

/**
 * A duration for a person, from milliseconds: whole hours, else whole
 * seconds, else milliseconds (`1h`, `60s`, `1.5s` is `1500ms`).
 *
 * @param ms milliseconds
 * @returns the text, which {@link durationMs} reads back to `ms`
 */
export function formatDuration(ms: number): string {
  for (const unit of ["h", "s"] as const) {
    if (ms !== 0 && ms % UNITS[unit] === 0) return `${ms / UNITS[unit]}${unit}`;
  }
  return ms === 0 ? "0s" : `${ms}ms`;
}
