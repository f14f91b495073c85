/**
 * `run`: take the lock and exec COMMAND in the foreground (or supervise it
 * here); its exit status is ours.
 *
 * @module
 */

import { AlreadyRunningError, run } from "../../control/mod.ts";
import { EXIT } from "../exit.ts";
import { say } from "../output.ts";
import type { Invocation } from "../parse.ts";
import {
  defined,
  guardOptions,
  launchOptions,
  livenessOptions,
  lockSettings,
  superviseSettings,
} from "./common.ts";

/** Run `run`. */
export async function runCommand(inv: Invocation): Promise<number> {
  const v = inv.values;
  try {
    return await run({
      ...guardOptions(v),
      ...launchOptions(inv),
      ...(v.supervise ? { supervise: superviseSettings(v), ...livenessOptions(v) } : {}),
      ...defined("lock", lockSettings(v)),
      ...(v.supervise ? {} : defined("stopSchedule", v.stopSchedule)),
    });
  } catch (e) {
    if (e instanceof AlreadyRunningError) {
      say(e.message);
      return v.conflictExitCode ?? EXIT.NOTHING_TO_DO;
    }
    throw e;
  }
}
