/**
 * `start`: the daemon's pid on stdout once it is ready.
 *
 * @module
 */

import { AlreadyRunningError, start } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import { out, say } from "../output.ts";
import type { Invocation } from "../parse.ts";
import { guardOptions, startOptions, warnUndeliverableOutput } from "./common.ts";

/** Run `start`. */
export async function startCommand(inv: Invocation): Promise<number> {
  try {
    const r = await start({ ...guardOptions(inv.values), ...startOptions(inv) });
    if (r.status !== undefined) say(`ready: ${r.status}`);
    warnUndeliverableOutput(inv.values);
    out(String(r.pid));
    return EXIT.OK;
  } catch (e) {
    if (e instanceof AlreadyRunningError && inv.values.oknodo) {
      say(e.message);
      if (e.pid !== undefined) out(String(e.pid));
      return EXIT.OK;
    }
    throw e;
  }
}
