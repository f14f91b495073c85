/**
 * `reopen`: the supervisor or keeper reopens `--output` (after a rotation).
 *
 * @module
 */

import { reopen } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import type { Invocation } from "../parse.ts";
import { guardOptions } from "./common.ts";

/** Run `reopen`. */
export async function reopenCommand(inv: Invocation): Promise<number> {
  await reopen(guardOptions(inv.values));
  return EXIT.OK;
}
