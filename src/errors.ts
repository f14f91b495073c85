/**
 * The one error for a caller's mistake: a malformed option value, a missing
 * argument, two options that cannot go together. The CLI reports it as a
 * usage error (exit 2); the library throws it before anything is created.
 *
 * @module
 */

/** A value given to the library or the command is malformed. */
export class UsageError extends Error {
  /** The command's exit code for it: 2, a usage error. */
  readonly exitCode = 2 as const;
  /**
   * Make the error for a malformed value.
   *
   * @param message what is wrong, naming the option or value
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * The command's exit code for what a library call threw: 2 for a usage
 * error, 3 for nothing to do (already running, not running), 1 for a
 * failure when acted on. Each error class of the library carries its code;
 * the `singleton-run` command exits with this very code.
 *
 * @param error what was thrown
 * @returns 1, 2 or 3; undefined for anything else (a bug, not an outcome)
 * @example
 * ```ts
 * import { exitCodeOf, UsageError } from "./errors.ts";
 * console.log(exitCodeOf(new UsageError("bad value"))); // 2
 * console.log(exitCodeOf(new TypeError("oops"))); // undefined
 * ```
 */
export function exitCodeOf(error: unknown): 1 | 2 | 3 | undefined {
  if (typeof error !== "object" || error === null || !("exitCode" in error)) return undefined;
  const code = error.exitCode;
  return code === 1 || code === 2 || code === 3 ? code : undefined;
}
