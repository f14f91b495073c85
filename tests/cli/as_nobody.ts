/**
 * Drives the command as user `nobody` (from root), as another user's shell
 * or cron job would: through `setpriv`, with a Deno cache of its own (root's
 * is not readable by nobody), and `XDG_RUNTIME_DIR` unset unless given.
 *
 * @module
 */

import { type Result, SOURCE, sr } from "./harness.ts";

/** nobody's uid. */
export const NOBODY_UID = 65534;

/** Whether this process can act as nobody (root with setpriv). */
export const CAN_BE_NOBODY: boolean = Deno.uid() === 0 && (() => {
  try {
    return Deno.statSync("/usr/bin/setpriv").isFile;
  } catch {
    return false;
  }
})();

let denoDir: string | undefined;

/** A Deno cache nobody owns, made once per test process (removed at its exit). */
function nobodyDenoDir(): string {
  if (denoDir === undefined) {
    denoDir = Deno.makeTempDirSync({ prefix: "singleton-run-nobody-deno-" });
    Deno.chownSync(denoDir, NOBODY_UID, NOBODY_UID);
    const dir = denoDir;
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Gone already.
      }
    });
  }
  return denoDir;
}

/**
 * Run `singleton-run ARGS` as nobody.
 *
 * @param args the command's arguments
 * @param env variables to set (`XDG_RUNTIME_DIR` is unset unless given here)
 * @returns what it printed and its exit code
 */
export function srAsNobody(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<Result> {
  const cache = nobodyDenoDir();
  const vars = { DENO_DIR: cache, HOME: cache, DENO_NO_UPDATE_CHECK: "1", ...env };
  const prefix = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "env",
    ...("XDG_RUNTIME_DIR" in env ? [] : ["-u", "XDG_RUNTIME_DIR"]),
    ...("SINGLETON_RUN_DIR" in env ? [] : ["-u", "SINGLETON_RUN_DIR"]),
    ...Object.entries(vars).map(([k, v]) => `${k}=${v}`),
  ];
  return sr(SOURCE, args, { prefix, timeoutMs: 60_000 });
}
