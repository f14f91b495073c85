/**
 * Replacing a small file beside the pid file whole (the supervisor's state
 * file, the service record): a temp file beside it, created exclusively
 * without following links, then renamed into place, so a reader sees the old
 * content or the new, never half of it. On any failure the temp file is
 * removed, so a full disk leaves nothing behind.
 *
 * @module
 */

import { close, ids, writeAll } from "../ffi/sys.ts";
import { ERRNO, SystemError } from "../ffi/errors.ts";
import { openBeside } from "../ffi/files.ts";

/**
 * Replace a file's content at once.
 *
 * @param path the file
 * @param text its new content
 * @param what the file's name in messages ("state file", "record")
 * @param mode the new file's mode (before the umask)
 * @throws {SystemError} when it cannot be written (the old content stays)
 */
export function replaceBeside(path: string, text: string, what: string, mode: number): void {
  const tmp = `${path}.${ids.pid()}.tmp`;
  const fd = createTemp(tmp, what, mode);
  let done = false;
  try {
    writeAll(fd, new TextEncoder().encode(text), tmp);
    close(fd);
    Deno.renameSync(tmp, path);
    done = true;
  } finally {
    if (!done) {
      try {
        close(fd);
      } catch {
        // already closed
      }
      removeQuietly(tmp);
    }
  }
}

/**
 * Create a temp file beside the one it will replace, exclusively; one that
 * is in the way (a leftover, or planted) is removed once. What cannot be
 * removed (a directory planted with something in it) leaves the second
 * create to fail with EEXIST, in the caller's words.
 *
 * @param tmp the temp file's path
 * @param what the file it stands for, in messages ("state file")
 * @param mode its mode
 * @param access `write`, or `readwrite` for one that is read back
 * @returns its descriptor
 * @throws {SystemError} when it cannot be made
 */
export function createTemp(
  tmp: string,
  what: string,
  mode: number,
  access: "write" | "readwrite" = "write",
): number {
  const open = () => openBeside(tmp, { what, access, create: mode, exclusive: true }).fd;
  try {
    return open();
  } catch (err) {
    if (!(err instanceof SystemError) || err.errno !== ERRNO.EEXIST) throw err;
    removeQuietly(tmp); // unlink removes a planted link itself, never its target
    return open();
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // gone already, or nothing we can do
  }
}
