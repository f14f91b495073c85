/**
 * `restart`: stop, then start, under one hold of the guard; the new pid on stdout.
 *
 * @module
 */

import { restart } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import { out, say } from "../output.ts";
import type { Invocation } from "../parse.ts";
import { defined, guardOptions, startOptions, warnUndeliverableOutput } from "./common.ts";

/** Run `restart`. */
export async function restartCommand(inv: Invocation): Promise<number> {
  const r = await restart({
    ...guardOptions(inv.values),
    ...startOptions(inv),
    ...defined("schedule", inv.values.retry),
  });
  if (r.status !== undefined) say(`ready: ${r.status}`);
  warnUndeliverableOutput(inv.values);
  out(String(r.pid));
  return EXIT.OK;
}
