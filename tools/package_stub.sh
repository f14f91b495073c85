#!/bin/sh
# singleton-run as one file, for a server without Deno: this script, then a
# tar.gz of the pinned Deno runtime and the command bundled for it (made by
# `deno task package`, see tools/package.ts). The first run unpacks them into a
# cache directory named by their hash; every run first checks that directory
# and what it holds, then runs the command from there.
set -u
hash=@HASH@
name=@NAME@
skip=@SKIP@
files='@FILES@'
manifest='@MANIFEST@'

fail() {
  printf 'singleton-run: %s\n' "$*" >&2
  exit 1
}

# The real uid, without a process for id(1): each costs a few ms on every run.
uid=
while read -r key value _; do
  if [ "$key" = Uid: ]; then uid=$value && break; fi
done </proc/self/status
[ -n "$uid" ] || uid=$(id -u) || fail "cannot tell which user runs this"

# Root's stages run the unpacked runtime again after they become another user
# (--user), so root's cache must be open to every user and writable by root
# alone: /var/cache. Anyone else's is theirs alone (0700): under
# XDG_CACHE_HOME or ~/.cache, else in /tmp (a user without a home).
if [ "$uid" = 0 ]; then mask=022; else mask=077; fi
if [ -n "${SINGLETON_RUN_CACHE:-}" ]; then
  root=$SINGLETON_RUN_CACHE
elif [ "$uid" = 0 ]; then
  root=/var/cache/singleton-run
else
  case ${XDG_CACHE_HOME:-} in
  /*) root=$XDG_CACHE_HOME/singleton-run ;;
  *) root=${HOME:-/nonexistent}/.cache/singleton-run ;;
  esac
  [ -d "$root" ] || (umask $mask && mkdir -p -- "$root") 2>/dev/null ||
    root=${TMPDIR:-/tmp}/singleton-run-$uid
fi
[ -d "$root" ] || (umask $mask && mkdir -p -- "$root") 2>/dev/null ||
  fail "cannot create the cache directory \"$root\""
dir=$(cd -P -- "$root" 2>/dev/null && pwd -P) || fail "cannot enter the cache directory \"$root\""
entry=$dir/$name

# Whoever can write the cache directory, or a directory above it, can put the
# next runtime there; so refuse one that another user owns or can write (a
# sticky directory above, as /tmp, is fine: nobody else can move ours). The
# path checked is the physical one, and the runtime is run by that path.
#
# What is unpacked is checked against the hashes in this file before its
# first run; the stamp then holds each file's owner, mode, inode, size and
# change time, so a file replaced, written or chmodded since (each of which
# sets its change time) makes this run unpack again. One stat(1) reads it all.
survey() {
  set -- "$dir"
  p=$dir
  while [ "$p" != / ]; do
    p=${p%/*}
    [ -n "$p" ] || p=/
    set -- "$@" "$p"
  done
  if [ -d "$entry" ]; then
    set -- "$entry" "$@"
    for f in $files; do set -- "$@" "$entry/$f"; done
  fi
  found=$(stat -c '%u %f %i %s %z %n' -- "$@" 2>/dev/null)
  [ -n "$found" ] || fail "cannot read the cache directory \"$dir\""
  stamp=
  while read -r owner hex inode size day time zone path; do
    mode=$((0x$hex))
    if [ $((mode & 61440)) != 16384 ]; then # not a directory: one of the files
      stamp="$stamp$owner $hex $inode $size $day $time $zone ${path##*/}|"
      continue
    fi
    if [ "$path" = "$dir" ] || [ "$path" = "$entry" ]; then own=1; else own=; fi
    if [ "$owner" != "$uid" ] && { [ -n "$own" ] || [ "$owner" != 0 ]; }; then
      fail "refusing the cache directory \"$dir\": \"$path\" belongs to uid $owner"
    fi
    if [ $((mode & 18)) != 0 ] && { [ -n "$own" ] || [ $((mode & 512)) = 0 ]; }; then
      fail "refusing the cache directory \"$dir\": other users can write \"$path\""
    fi
    if [ "$uid" = 0 ] && [ $((mode & 1)) = 0 ]; then
      fail "refusing the cache directory \"$dir\": \"$path\" is closed to the users --user makes"
    fi
  done <<EOF
$found
EOF
}
current() {
  survey
  saved=
  if [ -f "$entry/stamp" ]; then IFS= read -r saved <"$entry/stamp" || saved=; fi
  [ "$saved" = "$hash $stamp" ]
}
unpack() {
  [ "$(uname -m)" = @ARCH@ ] || fail "this file is for @ARCH@ Linux, not $(uname -m)"
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null) || fail "the Deno runtime inside needs glibc"
  glibc=${glibc#glibc }
  minor=${glibc#*.}
  [ "${glibc%%.*}" -gt 2 ] || [ "${minor%%.*}" -ge 29 ] ||
    fail "needs glibc 2.29 or later, not $glibc"
  # What a killed run left; with the lock held, no other run is unpacking now.
  if [ -n "$locked" ]; then rm -rf -- "$entry"/.unpack.*; fi
  tmp=$(mktemp -d -- "$entry/.unpack.XXXXXX") || fail "cannot unpack into \"$entry\""
  trap 'rm -rf -- "$tmp"' EXIT
  trap 'exit 1' HUP INT TERM
  tail -n +"$skip" -- "$0" | tar -xzmf - -C "$tmp" $files ||
    fail "cannot unpack \"$0\" into \"$entry\""
  (cd -- "$tmp" && printf '%s\n' "$manifest" | sha256sum -c - >/dev/null 2>&1) ||
    fail "\"$0\" is damaged: what it holds does not match its hashes"
  for f in $files; do
    case $f in deno) chmod 0555 -- "$tmp/$f" ;; *) chmod 0444 -- "$tmp/$f" ;; esac
    mv -f -- "$tmp/$f" "$entry/$f" || fail "cannot unpack into \"$entry\""
  done
  survey
  { printf '%s %s\n' "$hash" "$stamp" >"$tmp/stamp" && mv -f -- "$tmp/stamp" "$entry/stamp"; } ||
    fail "cannot unpack into \"$entry\""
  rm -rf -- "$tmp"
  trap - EXIT HUP INT TERM
}
if ! current; then
  # One run unpacks at a time (flock(1) on the entry, where util-linux has it);
  # the others wait, then find it done. The descriptor is closed before the
  # runtime starts, so no daemon inherits it.
  (umask $mask && mkdir -p -- "$entry") || fail "cannot create \"$entry\""
  survey
  exec 9<"$entry" || fail "cannot open \"$entry\""
  locked=
  if command -v flock >/dev/null 2>&1; then
    flock 9 || fail "cannot lock \"$entry\""
    locked=1
  fi
  current || unpack
  exec 9<&-
  current || fail "the cache directory \"$entry\" changed while it was unpacked; try again"
fi

# No upgrade check: a daemon's runtime asks no server for newer versions.
export DENO_NO_UPDATE_CHECK=1
exec "$entry/deno" run --no-config --cached-only --import-map "$entry/import_map.json" \
  @PERMISSIONS@ "$entry/singleton-run.js" "$@"
