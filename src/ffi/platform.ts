/**
 * Per-platform facts: the libc to open and the constants and struct layouts
 * that differ between operating systems and architectures. One table, keyed by
 * `Deno.build.os` and `Deno.build.arch`; an unsupported platform gets a clear
 * error when the FFI layer first loads, never a wrong syscall.
 *
 * @module
 */

/** Offsets and sizes of the C structs the project reads or writes. */
export interface StructLayout {
  /** `sizeof(struct stat)` and the offsets of the fields we read. */
  readonly stat: {
    readonly size: number;
    readonly dev: number;
    readonly ino: number;
    /** `st_nlink`: 8 bytes at this offset on x86_64, 4 on aarch64. */
    readonly nlink: number;
    readonly nlinkBytes: 4 | 8;
    readonly mode: number;
    readonly uid: number;
    readonly gid: number;
    readonly size_: number;
  };
  /** `sizeof(struct flock)` and its fields (short, short, off_t, off_t, pid_t). */
  readonly flock: {
    readonly size: number;
    readonly type: number;
    readonly whence: number;
    readonly start: number;
    readonly len: number;
    readonly pid: number;
  };
  /**
   * `struct msghdr` (name, namelen, iov, iovlen, control, controllen, flags)
   * and the `struct cmsghdr` header before a control message's data.
   */
  readonly msghdr: {
    readonly size: number;
    readonly iov: number;
    readonly iovlen: number;
    readonly control: number;
    readonly controllen: number;
    /** `sizeof(struct cmsghdr)`: len (size_t), level, type; the data follows, 8-byte aligned. */
    readonly cmsghdr: number;
  };
}

/** Everything that differs by OS and architecture. */
export interface Platform {
  readonly name: string;
  readonly libc: string;
  readonly O_NOFOLLOW: number;
  readonly O_DIRECTORY: number;
  readonly layout: StructLayout;
  /**
   * The system calls in which a thread waits for events on descriptors (poll,
   * select, epoll, accept and their variants), by the numbers
   * /proc/PID/task/TID/syscall shows: where a server sits between requests.
   */
  readonly eventWaits: readonly number[];
}

/** Constants that are the same on every Linux architecture we support. */
export const linux = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_NOCTTY: 0o400,
  O_TRUNC: 0o1000,
  O_APPEND: 0o2000,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,

  F_DUPFD: 0,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  F_SETFL: 4,
  F_GETLK: 5,
  F_SETLK: 6,
  F_SETLKW: 7,
  F_OFD_GETLK: 36,
  F_OFD_SETLK: 37,
  F_DUPFD_CLOEXEC: 1030,
  FD_CLOEXEC: 1,
  F_RDLCK: 0,
  F_WRLCK: 1,
  F_UNLCK: 2,

  LOCK_SH: 1,
  LOCK_EX: 2,
  LOCK_NB: 4,
  LOCK_UN: 8,

  S_IFMT: 0o170000,
  S_IFREG: 0o100000,
  S_IFDIR: 0o040000,
  S_IFLNK: 0o120000,
  S_IFIFO: 0o010000,
  S_IFSOCK: 0o140000,
  S_IFCHR: 0o020000,
  S_IFBLK: 0o060000,

  POLLIN: 0x1,
  POLLPRI: 0x2,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,

  WNOHANG: 1,

  POSIX_SPAWN_SETPGROUP: 0x02,
  POSIX_SPAWN_SETSIGDEF: 0x04,
  POSIX_SPAWN_SETSIGMASK: 0x08,
  POSIX_SPAWN_SETSID: 0x80,

  SIG_SETMASK: 2,

  AF_UNIX: 1,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  MSG_DONTWAIT: 0x40,
  MSG_PEEK: 0x2,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,

  CLOCK_MONOTONIC: 1,

  RLIMIT_CORE: 4,
  RLIMIT_NOFILE: 7,
  RLIM_INFINITY: 0xffffffffffffffffn,

  PR_SET_CHILD_SUBREAPER: 36,
  PR_GET_CHILD_SUBREAPER: 37,
  PR_SET_PDEATHSIG: 1,

  SYS_pidfd_send_signal: 424,
  SYS_pidfd_open: 434,

  NFS_SUPER_MAGIC: 0x6969,
  SMB_SUPER_MAGIC: 0x517b,
  CIFS_MAGIC_NUMBER: 0xff534d42,
  FUSE_SUPER_MAGIC: 0x65735546,

  /** Sizes of opaque glibc types, rounded up generously. */
  SIZEOF_SIGSET: 128,
  SIZEOF_SPAWNATTR: 512,
  SIZEOF_FILE_ACTIONS: 256,
  SIZEOF_SOCKADDR_UN: 110,
  SIZEOF_STATFS: 120,
} as const;

const x86_64: StructLayout = {
  stat: {
    size: 144,
    dev: 0,
    ino: 8,
    nlink: 16,
    nlinkBytes: 8,
    mode: 24,
    uid: 28,
    gid: 32,
    size_: 48,
  },
  flock: { size: 32, type: 0, whence: 2, start: 8, len: 16, pid: 24 },
  msghdr: { size: 56, iov: 16, iovlen: 24, control: 32, controllen: 40, cmsghdr: 16 },
};

const aarch64: StructLayout = {
  stat: {
    size: 128,
    dev: 0,
    ino: 8,
    nlink: 20,
    nlinkBytes: 4,
    mode: 16,
    uid: 24,
    gid: 28,
    size_: 48,
  },
  flock: { size: 32, type: 0, whence: 2, start: 8, len: 16, pid: 24 },
  msghdr: { size: 56, iov: 16, iovlen: 24, control: 32, controllen: 40, cmsghdr: 16 },
};

const platforms: {
  readonly [os in typeof Deno.build.os]?: {
    readonly [arch in typeof Deno.build.arch]?: Platform;
  };
} = {
  linux: {
    x86_64: {
      name: "linux-x86_64",
      libc: "libc.so.6",
      O_NOFOLLOW: 0o400000,
      O_DIRECTORY: 0o200000,
      layout: x86_64,
      // poll, select, accept, epoll_wait, pselect6, ppoll, epoll_pwait, accept4, epoll_pwait2
      eventWaits: [7, 23, 43, 232, 270, 271, 281, 288, 441],
    },
    aarch64: {
      name: "linux-aarch64",
      libc: "libc.so.6",
      O_NOFOLLOW: 0o100000,
      O_DIRECTORY: 0o40000,
      layout: aarch64,
      // epoll_pwait, pselect6, ppoll, accept, accept4, epoll_pwait2 (no poll, select, epoll_wait)
      eventWaits: [22, 72, 73, 202, 242, 441],
    },
  },
};

/** Thrown when the project runs on a platform it has no table for. */
export class UnsupportedPlatformError extends Error {
  /** The command's exit code for it: 1, failed. */
  readonly exitCode: 1 = 1;
  /** @param os the operating system, @param arch the architecture */
  constructor(os: string, arch: string) {
    super(
      `singleton-run does not support ${os} on ${arch} yet: only Linux on x86_64 and aarch64`,
    );
    this.name = "UnsupportedPlatformError";
  }
}

/**
 * The table for the platform this process runs on.
 *
 * @throws {UnsupportedPlatformError} on macOS, Windows or an unknown architecture
 */
export function currentPlatform(
  os: typeof Deno.build.os = Deno.build.os,
  arch: typeof Deno.build.arch = Deno.build.arch,
): Platform {
  const found = platforms[os]?.[arch];
  if (!found) throw new UnsupportedPlatformError(os, arch);
  return found;
}
