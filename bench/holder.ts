/**
 * A pid file held the way a running daemon holds it, for the in-process
 * probe rows: another process (a `sleep`) keeps the locked descriptor as its
 * fd 3 and the file names it.
 *
 * @module
 */

import { PidFile } from "../mod.ts";
import { kill, reap } from "../src/ffi/mod.ts";
import { resolveCommand, spawn } from "../src/launch/spawn.ts";

/**
 * Lock a pid file, hand the locked descriptor to a `sleep` as its fd 3,
 * write the sleep's pid, and let go of ours.
 *
 * @param path the pid file
 * @returns the holder's pid; dispose to kill and reap it
 */
export async function holdAsDaemon(path: string): Promise<{ pid: number } & Disposable> {
  const lock = await PidFile.acquire(path);
  const pid = spawn({
    path: resolveCommand("sleep"),
    argv: ["sleep", "3600"],
    env: {},
    newSession: true,
    fds: { 3: lock.fd },
  });
  lock.writePid(pid);
  lock.detach();
  return {
    pid,
    [Symbol.dispose]() {
      kill(pid, 9);
      reap(pid);
    },
  };
}
