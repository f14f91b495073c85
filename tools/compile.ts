/**
 * `deno task compile`: `dist/compiled/singleton-run`, one binary built by
 * `deno compile`, which needs Deno's `denort` runtime (named by `DENORT_BIN`,
 * cached, or downloaded from Deno's own host; see `package.ts` for the single
 * file that needs none of them). The PostgreSQL client is loaded by a
 * specifier that is a value, so `deno compile` cannot see it: it is included
 * by name, or a `postgres://` lock would find no client in the binary.
 *
 * @module
 */

import { POSTGRES_CLIENT } from "../src/deps/postgres.ts";
import { PERMISSIONS } from "./permissions.ts";

const ROOT = new URL("../", import.meta.url).pathname;

if (import.meta.main) {
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      ...PERMISSIONS,
      "--include",
      POSTGRES_CLIENT,
      "-o",
      `${ROOT}dist/compiled/singleton-run`,
      `${ROOT}cli.ts`,
    ],
    cwd: ROOT,
    stdin: "null",
  }).spawn().status;
  Deno.exit(code);
}
