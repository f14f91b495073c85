/**
 * `--exec PATH`: the proof start-stop-daemon asks of a process a pid file
 * names, for a daemon whose lock proves nothing (it never held one: a
 * program singleton-run did not start, named by its own pid file).
 *
 * @module
 */

import { quote, stat } from "../ffi/mod.ts";
import { executableOf } from "../ffi/proc.ts";

/** A process runs the executable asked for, or what it runs instead. */
export type ExecCheck = { readonly ok: true } | { readonly ok: false; readonly why: string };

/**
 * Whether process `pid` runs the file `exec`: the same file (device and
 * inode), or, when the file it runs was replaced or removed since it
 * started, the same path (as start-stop-daemon accepts after an upgrade).
 *
 * @param pid the process
 * @param exec the executable's path
 * @returns ok, or why not in words
 */
export function checkExec(pid: number, exec: string): ExecCheck {
  const running = executableOf(pid);
  if (!running) return { ok: false, why: `the executable of pid ${pid} cannot be read` };
  let wanted: { dev: bigint; ino: bigint } | undefined;
  let real = exec;
  try {
    wanted = stat(exec);
    real = Deno.realPathSync(exec);
  } catch {
    // A missing file can still be the deleted binary a process runs.
  }
  if (wanted && running.id && running.id.dev === wanted.dev && running.id.ino === wanted.ino) {
    return { ok: true };
  }
  const DELETED = " (deleted)";
  const path = running.path.endsWith(DELETED)
    ? running.path.slice(0, -DELETED.length)
    : running.path;
  if (path === real || path === exec) return { ok: true };
  return { ok: false, why: `pid ${pid} runs ${quote(running.path)}, not ${quote(exec)}` };
}
