/**
 * The `singleton-run` command: parses arguments, calls the library, prints,
 * and exits with the documented code. No system calls of its own.
 *
 * @module
 */

export const VERSION = "0.1.0";

if (import.meta.main) {
  console.log(`singleton-run ${VERSION}`);
}
