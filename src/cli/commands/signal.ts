/**
 * `signal SIGNAL`: any signal to the daemon; 0 checks that it could be signalled.
 *
 * @module
 */

import { signal } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import type { Invocation } from "../parse.ts";
import { defined, guardOptions } from "./common.ts";

/** Run `signal`. */
export async function signalCommand(inv: Invocation): Promise<number> {
  await signal({
    ...guardOptions(inv.values),
    ...defined("runsAs", inv.values.user),
    signal: inv.signal!,
  });
  return EXIT.OK;
}
