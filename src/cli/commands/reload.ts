/**
 * `reload`: SIGHUP to the daemon.
 *
 * @module
 */

import { reload } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import type { Invocation } from "../parse.ts";
import { defined, guardOptions } from "./common.ts";

/** Run `reload`. */
export async function reloadCommand(inv: Invocation): Promise<number> {
  await reload({ ...guardOptions(inv.values), ...defined("runsAs", inv.values.user) });
  return EXIT.OK;
}
