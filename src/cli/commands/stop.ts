/**
 * `stop`: signal the daemon and wait until it is gone.
 *
 * @module
 */

import { NotRunningError, stop } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import { say } from "../output.ts";
import type { Invocation } from "../parse.ts";
import { defined, guardOptions } from "./common.ts";

/** Run `stop`. */
export async function stopCommand(inv: Invocation): Promise<number> {
  try {
    await stop({
      ...guardOptions(inv.values),
      ...defined("runsAs", inv.values.user),
      ...defined("schedule", inv.values.retry),
    });
    return EXIT.OK;
  } catch (e) {
    if (e instanceof NotRunningError && inv.values.oknodo) {
      say(e.message);
      return EXIT.OK;
    }
    throw e;
  }
}
