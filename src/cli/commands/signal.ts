/**
 * `signal SIGNAL`: any signal to the daemon; 0 checks that it could be signalled.
 *
 * @module
 */

import { signal } from "../../control/mod.ts";
import { parseSignalArgument } from "../../control/values.ts";
import { EXIT } from "../exit.ts";
import type { Invocation } from "../parse.ts";
import { guardOptions } from "./common.ts";

/** Run `signal`. */
export async function signalCommand(inv: Invocation): Promise<number> {
  const number = parseSignalArgument(inv.positionals[0]!);
  await signal({ ...guardOptions(inv.values), signal: number });
  return EXIT.OK;
}
