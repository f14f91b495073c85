/**
 * The daemon's output file, beside the pid file like the others: opened for
 * append without following a link or blocking on a FIFO, created 0640,
 * refused unless it is a regular file with one name (a planted link would
 * append the daemon's output to somebody else's file).
 *
 * @module
 */

import { openBeside } from "../ffi/mod.ts";

/**
 * Open (creating it with mode 0640) a file that receives a daemon's stdout
 * and stderr, for append.
 *
 * @param path the output file
 * @returns the descriptor (close-on-exec; the spawn passes it on as 1 and 2)
 * @throws {SystemError} one line naming the file and what is wrong with it
 */
export function openOutputFile(path: string): number {
  return openBeside(path, { what: "output file", access: "append", create: 0o640 }).fd;
}
