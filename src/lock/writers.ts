/**
 * Who other than root may write a file or directory: what root asks of every
 * directory on the way to its pid file, and of the pid file itself, before
 * trusting them.
 *
 * @module
 */

import { accessAcl, type AclEntry, describeGid, describeUid, type FileStat } from "../ffi/sys.ts";

/**
 * Who other than root and its group may write this file or directory, by
 * its mode bits or by its access ACL, or undefined when no one may. An
 * owner other than root counts whatever the mode bits say: it may change them.
 *
 * @param path the file or directory (its ACL is read only when its group bits allow writing)
 * @param st what lstat or fstat says of it
 * @returns "every user", a user or a group, or undefined
 */
export function otherWriter(path: string, st: FileStat): string | undefined {
  if ((st.mode & 0o002) !== 0) return "every user";
  if (st.uid !== 0) return describeUid(st.uid); // its owner may chmod it at any time
  return groupWriter(path, st);
}

/**
 * Who other than the file's owner, root and root's group may write it: for
 * a file whose owner is trusted on other grounds (a pid file that names a
 * process of its owner's), or undefined when no one else may.
 *
 * @param path the file
 * @param st what lstat or fstat says of it
 * @returns "every user", a group, or a user or group its ACL names, or undefined
 */
export function writerBesidesOwner(path: string, st: FileStat): string | undefined {
  if ((st.mode & 0o002) !== 0) return "every user";
  return groupWriter(path, st);
}

/**
 * Who may write through the group bits: the owning group, and the users and
 * groups an access ACL names. With an ACL those bits are its mask, an upper
 * bound on all of them, and the owning group's own permission is its entry.
 * An ACL that cannot be read is judged as one that lets others write.
 */
function groupWriter(path: string, st: FileStat): string | undefined {
  if ((st.mode & 0o020) === 0) return undefined; // the mask allows no one to write
  let acl: readonly AclEntry[] | undefined;
  try {
    acl = accessAcl(path);
  } catch {
    return "users an access ACL it may carry names";
  }
  const owning = acl === undefined
    ? (st.mode & 0o070) >> 3
    : acl.find((entry) => entry.tag === "owning group")?.perm ?? 0;
  if (st.gid !== 0 && (owning & 0o2) !== 0) return describeGid(st.gid);
  const named = acl?.find((entry) =>
    entry.id !== undefined && entry.id !== 0 && (entry.perm & 0o2) !== 0 &&
    !(entry.tag === "user" && entry.id === st.uid) // the owner, named again
  );
  if (named?.id === undefined) return undefined;
  const who = named.tag === "user" ? describeUid(named.id) : describeGid(named.id);
  return `${who}, whom its access ACL names`;
}
