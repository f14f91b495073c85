/**
 * Whether root may trust a path beside which it keeps its pid file, guard or
 * output: every directory on the way, from / down, must be one that no other
 * user can change, as systemd judges the paths it is given. It imports only
 * the ffi modules it uses (status loads it).
 *
 * @module
 */

import {
  accessAcl,
  type AclEntry,
  C,
  describeUid,
  type FileStat,
  ids,
  lstat,
  readLink,
} from "../ffi/sys.ts";
import { ERRNO, quote, SystemError } from "../ffi/errors.ts";

/** The sticky bit: in such a directory, only a file's owner may remove or rename it. */
const STICKY = 0o1000;

/** More symbolic links than this on one path: the open says ELOOP in its own words. */
const MAX_LINKS = 40;

/**
 * As root, refuse a path that another user can redirect: a directory on its
 * way that another user can write (that user could rename root's pid file
 * away, and root's next start makes a second instance, or plant a file there
 * first), unless it is sticky (such as /tmp) and what comes next in the path
 * is root's own or absent; and a symbolic link on its way that another user
 * owns (that user can point it elsewhere). Root's own links (/var/run) are
 * followed and the walk goes on from their target. A missing part ends the
 * walk: the open says so in its own words. As another user, nothing is
 * checked.
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
  let links = 0;
  let st = lstatOrUndefined("/");
  for (;;) {
    if (st === undefined) return;
    const next = queue[0] ?? leaf;
    const writer = otherWriter(st) ?? aclWriter(here(), st);
    if (writer !== undefined && !((st.mode & STICKY) !== 0 && ownedByRootOrAbsent(here(), next))) {
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
      st = lstatOrUndefined(here());
      continue;
    }
    const at = `${here() === "/" ? "" : here()}/${name}`;
    st = lstatOrUndefined(at);
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
      if (++links > MAX_LINKS) return;
      let target: string;
      try {
        target = readLink(at);
      } catch {
        return;
      }
      if (target.startsWith("/")) dir.length = 0;
      queue.unshift(...target.split("/").filter((part) => part !== "" && part !== "."));
      st = lstatOrUndefined(here());
      continue;
    }
    if (kind !== C.S_IFDIR) return; // the open says "not a directory"
    dir.push(name);
  }
}

function lstatOrUndefined(path: string): FileStat | undefined {
  try {
    return lstat(path);
  } catch {
    return undefined;
  }
}

/**
 * Who other than root may write a directory with this stat, or undefined.
 *
 * @param st the directory's stat
 * @returns "every user", a user or a group, or undefined
 */
export function otherWriter(st: FileStat): string | undefined {
  if ((st.mode & 0o002) !== 0) return "every user";
  if (st.uid !== 0 && (st.mode & 0o200) !== 0) return describeUid(st.uid);
  if (st.gid !== 0 && (st.mode & 0o020) !== 0) return `group ${st.gid}`;
  return undefined;
}

/**
 * A directory whose group bits allow writing may carry an access ACL: those
 * bits are then the ACL's mask, and the users and groups its entries name may
 * write it too, root's group or not. Who, of those other than root and its
 * group, may write it; an ACL that cannot be read is judged as one that
 * lets others write.
 */
function aclWriter(dir: string, st: FileStat): string | undefined {
  if ((st.mode & 0o020) === 0) return undefined; // the mask allows no one to write
  let acl: readonly AclEntry[] | undefined;
  try {
    acl = accessAcl(dir);
  } catch {
    return "users an access ACL it may carry names";
  }
  const writer = acl?.find((entry) =>
    entry.id !== undefined && entry.id !== 0 && (entry.perm & 0o2) !== 0
  );
  if (writer?.id === undefined) return undefined;
  return `${
    writer.tag === "user" ? describeUid(writer.id) : `group ${writer.id}`
  }, whom its access ACL names`;
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
