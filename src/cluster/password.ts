/**
 * The PostgreSQL lock's password: never in the URL (argv, which every user
 * can read with `ps`), never in the settings that travel to the keeper.
 * It comes from `PGPASSWORD` in the keeper's own environment, or from a
 * password file the keeper opens itself. The controller checks that file
 * before anything starts (one line, exit 2), and the keeper checks it again
 * when it reads it: a regular file with one name, reached without following
 * a symbolic link, owned by the reader or root, that no group or other user
 * can read.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { openBeside, readBounded } from "../ffi/files.ts";
import { ERRNO, quote, SystemError } from "../ffi/errors.ts";
import { close, describeUid, ids } from "../ffi/sys.ts";

/** The longest password file read: a password, not a document. */
const MAX_PASSWORD_BYTES = 4096;

/** The option that names the file, in messages. */
const OPTION = "--lock-password-file";

/** A password read from its file, and who owns the file. */
export interface PasswordFile {
  /** The file's first line, without its line end. */
  readonly password: string;
  /** The file's owner. */
  readonly uid: number;
}

/**
 * Read a password file: its first line. The file must be a regular file
 * with one name (no symbolic link followed, no FIFO opened), owned by root
 * or one of `owners`, with no permission for group or others.
 *
 * @param path the file
 * @param owners the users, besides root, who may own it (the reader by default)
 * @returns the password and the file's owner
 * @throws {UsageError} one line naming the file and what is wrong; never its content
 */
export function readPasswordFile(
  path: string,
  owners: readonly number[] = [ids.euid()],
): PasswordFile {
  let opened;
  try {
    opened = openBeside(path, { what: OPTION, access: "read" });
  } catch (err) {
    if (err instanceof SystemError && err.errno === ERRNO.ENOENT) {
      throw new UsageError(`${OPTION} ${quote(path)} does not exist`);
    }
    if (err instanceof SystemError) throw new UsageError(err.message);
    throw err;
  }
  const { fd, stat } = opened;
  try {
    if (stat.uid !== 0 && !owners.includes(stat.uid)) {
      const allowed = ["root", ...new Set(owners.filter((u) => u !== 0).map(describeUid))];
      throw new UsageError(
        `${OPTION} ${quote(path)} is owned by ${describeUid(stat.uid)}: it must be owned by ${
          allowed.join(" or ")
        }`,
      );
    }
    if ((stat.mode & 0o077) !== 0) {
      throw new UsageError(
        `${OPTION} ${quote(path)} has mode ${
          (stat.mode & 0o777).toString(8).padStart(4, "0")
        }: group and other users must have no access to it (chmod 600)`,
      );
    }
    const bytes = readBounded(fd, MAX_PASSWORD_BYTES + 1);
    if (bytes.length > MAX_PASSWORD_BYTES) {
      throw new UsageError(`${OPTION} ${quote(path)} is larger than 4 KiB: not a password file`);
    }
    const password = new TextDecoder().decode(bytes).split("\n")[0]!.replace(/\r$/, "");
    if (password === "") throw new UsageError(`${OPTION} ${quote(path)}: its first line is empty`);
    return { password, uid: stat.uid };
  } finally {
    close(fd);
  }
}

/**
 * The password the keeper gives PostgreSQL: the file's, when one is named,
 * else `PGPASSWORD` from this process's environment, else none.
 *
 * @param passwordFile the password file, if any
 * @returns the password, or undefined
 * @throws {UsageError} when the file fails its checks
 */
export function lockPassword(passwordFile: string | undefined): string | undefined {
  if (passwordFile !== undefined) return readPasswordFile(passwordFile).password;
  return Deno.env.get("PGPASSWORD");
}
