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
import { describeErrno, ERRNO, type ErrnoCode, quote, SystemError } from "../ffi/errors.ts";
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
  const { fd, tmp } = createTemp(path, "tmp", what, mode);
  let done = false;
  try {
    writeAll(fd, new TextEncoder().encode(text), tmp);
    close(fd);
    renameInto(tmp, path, what);
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
 * rename(2) of a temp file over the file it replaces, its failure in the
 * words of the other messages (another user's directory planted at the
 * name: "is a directory").
 *
 * @param tmp the temp file
 * @param path the file it replaces
 * @param what the file's name in messages ("record")
 * @throws {SystemError} when it cannot be renamed
 */
export function renameInto(tmp: string, path: string, what: string): void {
  try {
    Deno.renameSync(tmp, path);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const errno = typeof code === "string" && code in ERRNO ? ERRNO[code as ErrnoCode] : ERRNO.EIO;
    throw new SystemError("rename", errno, {
      path,
      message: `cannot put the ${what} in place at ${quote(path)}: ${describeErrno(errno)}`,
    });
  }
}

/** Names tried before a temp file is given up on: each is taken only by a planted file. */
const TEMP_TRIES = 8;

/**
 * Create a temp file beside the file it will replace, exclusively and
 * without following a link: `PATH.PID.RANDOM.SUFFIX`. Its name cannot be
 * foretold, so another user who may create names in the directory (a
 * sticky /tmp) cannot take it first and keep the file from ever being
 * written; a name in the way is passed over for another.
 *
 * @param path the file it will replace
 * @param suffix the temp file's last part (`tmp`, `new`)
 * @param what the file it stands for, in messages ("state file")
 * @param mode its mode
 * @param access `write`, or `readwrite` for one that is read back
 * @returns its descriptor and path
 * @throws {SystemError} when it cannot be made
 */
export function createTemp(
  path: string,
  suffix: string,
  what: string,
  mode: number,
  access: "write" | "readwrite" = "write",
): { fd: number; tmp: string } {
  for (let tries = 1;; tries++) {
    const random = Array.from(
      crypto.getRandomValues(new Uint8Array(6)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const tmp = `${path}.${ids.pid()}.${random}.${suffix}`;
    try {
      return { fd: openBeside(tmp, { what, access, create: mode, exclusive: true }).fd, tmp };
    } catch (err) {
      if (!(err instanceof SystemError) || err.errno !== ERRNO.EEXIST || tries >= TEMP_TRIES) {
        throw err;
      }
    }
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // gone already, or nothing we can do
  }
}
