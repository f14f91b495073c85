/**
 * `run`: take the lock and exec COMMAND in the foreground (or supervise it
 * here); its exit status is ours. A conflict (already running, here or on
 * another host; a wait that ran out; a later --replace; a slot already done)
 * exits 3 or `--conflict-exit-code`, and says why unless `--quiet`.
 *
 * @module
 */

import { run } from "../../control/mod.ts";
import { exitCodeOf } from "../../errors.ts";
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
  const lock = lockSettings(v);
  try {
    return await run({
      ...guardOptions(v),
      ...launchOptions(inv),
      ...(v.supervise ? { supervise: superviseSettings(v), ...livenessOptions(v) } : {}),
      ...defined("lock", lock && { ...lock, ...defined("oncePerMs", v.oncePer) }),
      ...(v.supervise ? {} : defined("stopSchedule", v.stopSchedule)),
      ...(v.supervise || !v.killGroup ? {} : { killGroup: true }),
      ...defined("wait", v.wait),
      ...(v.replace ? { replace: true } : {}),
      ...defined("maxRuntime", v.maxRuntime),
    });
  } catch (e) {
    // Every conflict (3: already running, a wait that ran out, a later replace, a slot done).
    if (exitCodeOf(e) === EXIT.NOTHING_TO_DO) {
      say((e as Error).message);
      return v.conflictExitCode ?? EXIT.NOTHING_TO_DO;
    }
    throw e;
  }
}
