/**
 * Whether root may trust a path beside which it keeps its pid file, guard or
 * output: every directory on the way, from / down, must be one that no other
 * user can change, as systemd judges the paths it is given. It imports only
 * the ffi modules it uses (status loads it).
 *
 * @module
 */

import { C, describeUid, type FileStat, ids, lstat, readLink, stat } from "../ffi/sys.ts";
import { otherWriter } from "../lock/writers.ts";
import { describeErrno, ERRNO, quote, SystemError } from "../ffi/errors.ts";

/** The sticky bit: in such a directory, only a file's owner may remove or rename it. */
const STICKY = 0o1000;

/** More symbolic links than this on one path (the kernel's own limit) are refused as a loop. */
const MAX_LINKS = 40;

/**
 * As root, refuse a path that another user can redirect: a directory on its
 * way that another user can write (that user could rename root's pid file
 * away, and root's next start makes a second instance, or plant a file there
 * first), unless it is sticky (such as /tmp) and what comes next in the path
 * is root's own or absent; and a symbolic link on its way that another user
 * owns (that user can point it elsewhere). Root's own links (/var/run) are
 * followed and the walk goes on from their target, unless a link does not
 * lead where its text says (the links of /proc). A missing part ends the
 * walk: the open says so in its own words; a part that cannot be judged
 * otherwise (a path too long to look at, a loop of links) is refused. As
 * another user, nothing is checked.
 *
 * @param path the pid file, guard or output file
 * @throws {SystemError} EPERM naming the directory or link and who controls it
 */
export function checkPathTrusted(path: string): void {
  if (ids.euid() !== 0) return;
  const full = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const queue = full.split("/").filter((part) => part !== "" && part !== ".");
  const leaf = queue.pop();
  if (leaf === undefined) return; // "/" itself: the open refuses a directory
  const dir: string[] = [];
  const here = () => `/${dir.join("/")}`;
  const refuse = (message: string) =>
    new SystemError("open", ERRNO.EPERM, { path, message: `refusing ${quote(path)}: ${message}` });
  /** What lstat says of a part of the path; undefined when it is missing (the open says so). */
  const lstatOnTheWay = (part: string): FileStat | undefined => {
    try {
      return lstat(part);
    } catch (err) {
      const errno = err instanceof SystemError ? err.errno : undefined;
      if (errno === ERRNO.ENOENT || errno === ERRNO.ENOTDIR) return undefined;
      // Too long a path (a long working directory, a link's target) or any
      // other failure: the open may still reach the file by a shorter way, so
      // what could not be judged is not trusted.
      throw refuse(`cannot tell who may change ${quote(part)} on its way (${describe(err)})`);
    }
  };
  let links = 0;
  let st = lstatOnTheWay("/");
  for (;;) {
    if (st === undefined) return;
    const next = queue[0] ?? leaf;
    const writer = otherWriter(here(), st);
    // A sticky directory (/tmp) keeps others from renaming root's entries, unless
    // it is another user's: its owner may rename or remove anything in it.
    const sticky = (st.mode & STICKY) !== 0 && st.uid === 0;
    if (writer !== undefined && !(sticky && ownedByRootOrAbsent(here(), next))) {
      throw refuse(
        queue.length === 0
          ? `its directory ${
            quote(here())
          } can be written by ${writer}; as root, keep it in a directory only root can write`
          : `the directory ${quote(here())} on its way can be written by ${writer}; ` +
            "as root, keep it where only root can write every directory on the way",
      );
    }
    const name = queue.shift();
    if (name === undefined) return;
    if (name === "..") {
      dir.pop(); // judged on the way down already
      st = lstatOnTheWay(here());
      continue;
    }
    const at = `${here() === "/" ? "" : here()}/${name}`;
    st = lstatOnTheWay(at);
    if (st === undefined) return;
    const kind = st.mode & C.S_IFMT;
    if (kind === C.S_IFLNK) {
      if (st.uid !== 0) {
        throw refuse(
          `${quote(at)} on its way is a symbolic link owned by ${
            describeUid(st.uid)
          }, who can point it elsewhere`,
        );
      }
      if (++links > MAX_LINKS) throw refuse(`too many symbolic links on its way (a loop?)`);
      let target: string;
      try {
        target = readLink(at);
      } catch (err) {
        throw refuse(`cannot read the symbolic link ${quote(at)} on its way (${describe(err)})`);
      }
      const said = target.startsWith("/") ? target : `${here() === "/" ? "" : here()}/${target}`;
      if (!leadsWhereItSays(at, said)) {
        throw refuse(
          `${quote(at)} on its way is a link that does not lead where its text ${
            quote(target)
          } says (a /proc link); as root, name the directory itself`,
        );
      }
      if (target.startsWith("/")) dir.length = 0;
      queue.unshift(...target.split("/").filter((part) => part !== "" && part !== "."));
      st = lstatOnTheWay(here());
      continue;
    }
    if (kind !== C.S_IFDIR) return; // the open says "not a directory"
    dir.push(name);
  }
}

function describe(err: unknown): string {
  return err instanceof SystemError ? describeErrno(err.errno) : String(err);
}

/**
 * Whether a symbolic link leads to what its text names. The links of /proc
 * (`/proc/PID/cwd`, `/proc/PID/root`, `/proc/PID/fd/N`) do not: their text
 * is a path in the process's own mount namespace, or no path at all, so a
 * walk that followed the text would judge directories the open never uses.
 * A dangling link leads nowhere, as its text says.
 */
function leadsWhereItSays(link: string, text: string): boolean {
  let real: FileStat;
  try {
    real = stat(link);
  } catch {
    return true; // nowhere: the walk finds the missing part and the open says so
  }
  try {
    const said = stat(text);
    return said.dev === real.dev && said.ino === real.ino;
  } catch {
    return false;
  }
}

/**
 * In a sticky directory, only the owner of `name` may remove or rename it:
 * fine when that is root or nobody. Another user's symbolic link passes
 * here, to be refused as the link it is.
 */
function ownedByRootOrAbsent(dir: string, name: string): boolean {
  if (name === "..") return true; // the parent, judged on the way down
  try {
    const st = lstat(`${dir === "/" ? "" : dir}/${name}`);
    return st.uid === 0 || (st.mode & C.S_IFMT) === C.S_IFLNK;
  } catch (err) {
    return err instanceof SystemError && err.errno === ERRNO.ENOENT;
  }
}
