/**
 * The libc symbols the project calls, with their C prototypes. Variadic
 * functions (`open`, `fcntl`, `syslog`, `syscall`, `prctl`) are declared with
 * fixed integer or pointer parameters, which is sound on x86_64 and aarch64.
 * Blocking calls have a second, `nonblocking: true` entry that runs off the
 * main thread and returns a Promise; errno is not readable after those.
 *
 * @module
 */

export const symbols = {
  __errno_location: { parameters: [], result: "pointer" }, // int *__errno_location(void)
  strerror: { parameters: ["i32"], result: "pointer" }, // char *strerror(int errnum)

  // files
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" }, // int open(const char *path, int flags, mode_t mode)
  close: { parameters: ["i32"], result: "i32" }, // int close(int fd)
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" }, // ssize_t read(int fd, void *buf, size_t n)
  read_wait: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" }, // ssize_t write(int fd, const void *buf, size_t n)
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" }, // ssize_t pread(int fd, void *buf, size_t n, off_t offset)
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" }, // ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset)
  ftruncate: { parameters: ["i32", "i64"], result: "i32" }, // int ftruncate(int fd, off_t length)
  fsync: { parameters: ["i32"], result: "i32" }, // int fsync(int fd)
  fstat: { parameters: ["i32", "buffer"], result: "i32" }, // int fstat(int fd, struct stat *st)
  lstat: { parameters: ["buffer", "buffer"], result: "i32" }, // int lstat(const char *path, struct stat *st)
  stat: { parameters: ["buffer", "buffer"], result: "i32" }, // int stat(const char *path, struct stat *st)
  opendir: { parameters: ["buffer"], result: "pointer" }, // DIR *opendir(const char *path)
  readdir: { parameters: ["pointer"], result: "pointer" }, // struct dirent *readdir(DIR *dir)
  closedir: { parameters: ["pointer"], result: "i32" }, // int closedir(DIR *dir)
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" }, // ssize_t readlink(const char *path, char *buf, size_t n)
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" }, // ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)
  statfs: { parameters: ["buffer", "buffer"], result: "i32" }, // int statfs(const char *path, struct statfs *buf)
  fchmod: { parameters: ["i32", "u32"], result: "i32" }, // int fchmod(int fd, mode_t mode)
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" }, // int fchown(int fd, uid_t owner, gid_t group)
  chown: { parameters: ["buffer", "u32", "u32"], result: "i32" }, // int chown(const char *path, uid_t owner, gid_t group)
  flock: { parameters: ["i32", "i32"], result: "i32" }, // int flock(int fd, int operation)
  flock_wait: { name: "flock", parameters: ["i32", "i32"], result: "i32", nonblocking: true },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" }, // int fcntl(int fd, int cmd, long arg)
  fcntl_lock: { name: "fcntl", parameters: ["i32", "i32", "buffer"], result: "i32" }, // int fcntl(int fd, int cmd, struct flock *lk)
  pipe2: { parameters: ["buffer", "i32"], result: "i32" }, // int pipe2(int fds[2], int flags)
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" }, // int poll(struct pollfd *fds, nfds_t n, int timeout_ms)
  poll_wait: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  umask: { parameters: ["u32"], result: "u32" }, // mode_t umask(mode_t mask)
  chdir: { parameters: ["buffer"], result: "i32" }, // int chdir(const char *path)
  mkdir: { parameters: ["buffer", "u32"], result: "i32" }, // int mkdir(const char *path, mode_t mode)
  access: { parameters: ["buffer", "i32"], result: "i32" }, // int access(const char *path, int mode)

  // processes
  getpid: { parameters: [], result: "i32" }, // pid_t getpid(void)
  getppid: { parameters: [], result: "i32" }, // pid_t getppid(void)
  getsid: { parameters: ["i32"], result: "i32" }, // pid_t getsid(pid_t pid)
  getpgid: { parameters: ["i32"], result: "i32" }, // pid_t getpgid(pid_t pid)
  setsid: { parameters: [], result: "i32" }, // pid_t setsid(void)
  setpgid: { parameters: ["i32", "i32"], result: "i32" }, // int setpgid(pid_t pid, pid_t pgid)
  kill: { parameters: ["i32", "i32"], result: "i32" }, // int kill(pid_t pid, int sig)
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" }, // pid_t waitpid(pid_t pid, int *status, int options)
  waitpid_wait: {
    name: "waitpid",
    parameters: ["i32", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" }, // int execve(const char *path, char *const argv[], char *const envp[])
  execvp: { parameters: ["buffer", "buffer"], result: "i32" }, // int execvp(const char *file, char *const argv[])
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64"], result: "i64" }, // long syscall(long nr, ...)
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" }, // int prctl(int op, ...)
  signal: { parameters: ["i32", "pointer"], result: "pointer" }, // sighandler_t signal(int sig, sighandler_t handler)
  pthread_sigmask: { parameters: ["i32", "buffer", "buffer"], result: "i32" }, // int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
  sigemptyset: { parameters: ["buffer"], result: "i32" }, // int sigemptyset(sigset_t *set)
  sigfillset: { parameters: ["buffer"], result: "i32" }, // int sigfillset(sigset_t *set)
  sigaddset: { parameters: ["buffer", "i32"], result: "i32" }, // int sigaddset(sigset_t *set, int sig)
  sigdelset: { parameters: ["buffer", "i32"], result: "i32" }, // int sigdelset(sigset_t *set, int sig)

  // posix_spawn
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  }, // int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
  posix_spawnp: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  }, // int posix_spawnp(same as posix_spawn)
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" }, // int posix_spawnattr_init(posix_spawnattr_t *attr)
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" }, // int posix_spawnattr_destroy(posix_spawnattr_t *attr)
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" }, // int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags)
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" }, // int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *mask)
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" }, // int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *sigs)
  posix_spawnattr_setpgroup: { parameters: ["buffer", "i32"], result: "i32" }, // int posix_spawnattr_setpgroup(posix_spawnattr_t *attr, pid_t pgroup)
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" }, // int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa)
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" }, // int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *fa)
  posix_spawn_file_actions_addopen: {
    parameters: ["buffer", "i32", "buffer", "i32", "u32"],
    result: "i32",
  }, // int ..._addopen(fa, int fd, const char *path, int flags, mode_t mode)
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" }, // int ..._adddup2(fa, int fd, int newfd)
  posix_spawn_file_actions_addclose: { parameters: ["buffer", "i32"], result: "i32" }, // int ..._addclose(fa, int fd)
  posix_spawn_file_actions_addchdir_np: {
    parameters: ["buffer", "buffer"],
    result: "i32",
    optional: true,
  }, // glibc 2.29: int ..._addchdir_np(fa, const char *path)
  posix_spawn_file_actions_addclosefrom_np: {
    parameters: ["buffer", "i32"],
    result: "i32",
    optional: true,
  }, // glibc 2.34: int ..._addclosefrom_np(fa, int from)

  // users, groups, limits
  getuid: { parameters: [], result: "u32" }, // uid_t getuid(void)
  geteuid: { parameters: [], result: "u32" }, // uid_t geteuid(void)
  getgid: { parameters: [], result: "u32" }, // gid_t getgid(void)
  getegid: { parameters: [], result: "u32" }, // gid_t getegid(void)
  getpwnam: { parameters: ["buffer"], result: "pointer" }, // struct passwd *getpwnam(const char *name)
  getpwuid: { parameters: ["u32"], result: "pointer" }, // struct passwd *getpwuid(uid_t uid)
  getgrnam: { parameters: ["buffer"], result: "pointer" }, // struct group *getgrnam(const char *name)
  getgrgid: { parameters: ["u32"], result: "pointer" }, // struct group *getgrgid(gid_t gid)
  setgid: { parameters: ["u32"], result: "i32" }, // int setgid(gid_t gid)
  setuid: { parameters: ["u32"], result: "i32" }, // int setuid(uid_t uid)
  setgroups: { parameters: ["usize", "buffer"], result: "i32" }, // int setgroups(size_t n, const gid_t *list)
  initgroups: { parameters: ["buffer", "u32"], result: "i32" }, // int initgroups(const char *user, gid_t group)
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" }, // int getrlimit(int resource, struct rlimit *rlim)
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" }, // int setrlimit(int resource, const struct rlimit *rlim)

  // sockets (readiness notification)
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" }, // int socket(int domain, int type, int protocol)
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" }, // int socketpair(int domain, int type, int protocol, int sv[2])
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" }, // int bind(int fd, const struct sockaddr *addr, socklen_t len)
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" }, // ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to, socklen_t len)
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" }, // ssize_t recv(int fd, void *buf, size_t n, int flags)
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" }, // ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" }, // ssize_t recvmsg(int fd, struct msghdr *msg, int flags)

  // syslog
  openlog: { parameters: ["buffer", "i32", "i32"], result: "void" }, // void openlog(const char *ident, int option, int facility)
  syslog: { parameters: ["i32", "buffer", "buffer"], result: "void" }, // void syslog(int priority, const char *format, ...) called as (pri, "%s", msg)
  closelog: { parameters: [], result: "void" }, // void closelog(void)
  setlogmask: { parameters: ["i32"], result: "i32" }, // int setlogmask(int mask)

  // clocks
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" }, // int clock_gettime(clockid_t clk, struct timespec *ts)
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbols. */
export type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
