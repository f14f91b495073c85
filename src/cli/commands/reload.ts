/**
 * `reload`: SIGHUP to the daemon, unless it would end it (or `--force`).
 *
 * @module
 */

import { reload } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import type { Invocation } from "../parse.ts";
import { defined, guardOptions } from "./common.ts";

/** Run `reload`. */
export async function reloadCommand(inv: Invocation): Promise<number> {
  await reload({
    ...guardOptions(inv.values),
    ...defined("runsAs", inv.values.user),
    force: inv.values.force,
  });
  return EXIT.OK;
}
