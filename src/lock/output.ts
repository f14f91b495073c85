/**
 * The daemon's output file, beside the pid file like the others: opened for
 * append without following a link or blocking on a FIFO, created 0640,
 * refused unless it is a regular file with one name (a planted link would
 * append the daemon's output to somebody else's file), and refused when
 * another user owns it: after a rotation (the file renamed away), anyone who
 * can write the directory may put a file of their own at the path, and the
 * next reopen would hand them the daemon's output.
 *
 * @module
 */

import { close, ERRNO, ids, openBeside, quote, SystemError } from "../ffi/mod.ts";

/**
 * Open (creating it with mode 0640) a file that receives a daemon's stdout
 * and stderr, for append.
 *
 * @param path the output file
 * @param daemonUid the uid the daemon runs as (`--user`), whose own file is fine too
 * @returns the descriptor (close-on-exec; the spawn passes it on as 1 and 2)
 * @throws {SystemError} one line naming the file and what is wrong with it
 *   (EPERM when it belongs to a user who is neither root, this process's
 *   user nor the daemon's)
 */
export function openOutputFile(path: string, daemonUid?: number): number {
  const { fd, stat } = openBeside(path, { what: "output file", access: "append", create: 0o640 });
  if (stat.uid !== 0 && stat.uid !== ids.euid() && stat.uid !== daemonUid) {
    close(fd);
    throw new SystemError("open", ERRNO.EPERM, {
      path,
      message: `output file ${quote(path)} belongs to uid ${stat.uid}; refusing to write ` +
        "the daemon's output into another user's file (remove it)",
    });
  }
  return fd;
}
