/**
 * The one error for a caller's mistake: a malformed option value, a missing
 * argument, two options that cannot go together. The CLI reports it as a
 * usage error (exit 2); the library throws it before anything is created.
 *
 * @module
 */

/** A value given to the library or the command is malformed. */
export class UsageError extends Error {
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
