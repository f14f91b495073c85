/**
 * The permissions the command runs with, in every packaging that fixes them:
 * the compiled binary (`deno task compile`) and the single file
 * (`deno task package`); the tests run the bundle with exactly these too.
 * `--allow-net` is for `--lock` only. No `--allow-run`: processes are started
 * with posix_spawn through `--allow-ffi`.
 *
 * @module
 */

/** The `deno run` / `deno compile` flags. */
export const PERMISSIONS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
  "--allow-net",
];
