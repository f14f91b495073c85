/**
 * `restart`: stop, then start, under one hold of the guard; the new pid on
 * stdout. Without `-- COMMAND`, the recorded launch is started again.
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
  // Without COMMAND, every option left out is the record's.
  const { command: _, ...given } = startOptions(inv);
  const r = await restart({
    ...guardOptions(inv.values),
    ...given,
    ...defined("command", inv.command),
    ...defined("schedule", inv.values.retry),
  });
  if (r.status !== undefined) say(`ready: ${r.status}`);
  warnUndeliverableOutput(inv.values);
  out(String(r.pid));
  return EXIT.OK;
}
