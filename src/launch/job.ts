/**
 * The job stage, behind `run --max-runtime`: `run` holds the pid file's lock,
 * sends it with the job's orders through a datagram socket (SCM_RIGHTS) and
 * execs into the enforcer (`limit.ts`), a shell that starts this stage in the
 * background as `--singleton-run-internal job FD`. The stage takes the lock
 * from the socket, leads a process group of its own (with `killGroup`),
 * names itself in the pid file and the record, and execs the job, which keeps
 * this pid and the lock. The shell in between never holds the lock: a
 * descriptor in flight in a socket keeps its open file description, and the
 * flock with it, until it is received.
 *
 * @module
 */

import {
  close,
  ids,
  kill,
  quote,
  recvWithFds,
  sendWithFds,
  setCloexec,
  setpgid,
  socketpair,
  writeAll,
} from "../ffi/mod.ts";
import { identify } from "../lock/identity.ts";
import { PidFile } from "../lock/pidfile.ts";
import { writeRecord } from "../lock/record.ts";
import { enterProgram } from "./privilege.ts";
import type { LaunchSpec } from "./spec.ts";

/** What the job stage is told. */
export interface JobOrders {
  /** The job. */
  readonly spec: LaunchSpec;
  /** Its whole environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The pid file, absolute. */
  readonly pidfile: string;
  /** The enforcer: `run`'s pid, which execs into the shell that starts this stage. */
  readonly enforcer: number;
}

/** What the stage sends the enforcer as the job starts (SIGURG: ignored by default, never fatal). */
const JOB_STARTS_SIGNAL = 23;

/** The longest orders a datagram carries (a unix datagram's default room is ~208 KiB). */
const MAX_ORDERS_BYTES = 200 * 1024;

/**
 * Put the orders and the locked descriptor in a socket for the stage, and
 * hand back the end the stage reads (close-on-exec cleared, for the exec
 * into the enforcer). Our own end is closed: the message waits in the
 * socket, holding the lock, until the stage takes it.
 *
 * @param orders the job, its environment and the pid file
 * @param lockFd the descriptor that holds the pid file's lock
 * @returns the descriptor the stage reads its orders from
 * @throws {SystemError} when the orders cannot be sent (EMSGSIZE: an
 *   environment too large for one datagram)
 */
export function sendJobOrders(orders: JobOrders, lockFd: number): number {
  const bytes = new TextEncoder().encode(JSON.stringify(orders));
  if (bytes.length > MAX_ORDERS_BYTES) {
    throw new Error(
      `the job's command and environment take ${bytes.length} bytes; --max-runtime passes ` +
        `at most ${MAX_ORDERS_BYTES} to the job`,
    );
  }
  const [ours, theirs] = socketpair("datagram");
  try {
    sendWithFds(ours, bytes, [lockFd]);
    setCloexec(theirs, false);
    return theirs;
  } catch (err) {
    close(theirs);
    throw err;
  } finally {
    close(ours);
  }
}

/**
 * The stage: `--singleton-run-internal job FD`. Take the orders and the lock,
 * lead a process group (with `killGroup`), name this process in the pid file
 * and the record, and exec the job.
 *
 * @param args the arguments after the role: the socket's descriptor
 * @returns never: it execs, or exits 127 after saying why it could not
 */
export function runJobStage(args: readonly string[]): never {
  const fd = Number(args[0]);
  try {
    if (args.length !== 1 || !Number.isInteger(fd) || fd < 3) {
      throw new Error("the internal job stage is not for direct use");
    }
    const got = recvWithFds(fd, MAX_ORDERS_BYTES, 4);
    close(fd);
    if (got === undefined || got.fds.length !== 1) {
      for (const f of got?.fds ?? []) close(f);
      throw new Error("the job's orders did not arrive");
    }
    const lockFd = got.fds[0]!;
    const orders = JSON.parse(new TextDecoder().decode(got.bytes)) as JobOrders;
    if (orders.spec.killGroup) setpgid(0, 0);
    // The pid file names this process (the job, once it execs); the lock stays on lockFd.
    PidFile.adopt(lockFd, orders.pidfile);
    recordJob(orders);
    setCloexec(lockFd, false);
    // The enforcer's clock starts now: this stage's own start-up is not the job's run time.
    // Only while it is our parent: a parent's pid is not handed out again while we live, and
    // once it is gone, our parent is some reaper that must not be signalled.
    if (ids.ppid() === orders.enforcer) kill(orders.enforcer, JOB_STARTS_SIGNAL);
    enterProgram({ spec: orders.spec, env: orders.env });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    try {
      writeAll(2, new TextEncoder().encode(`singleton-run: ${message}\n`));
    } catch {
      // No stderr: the enforcer still reports the exit status.
    }
    Deno.exit(127);
  }
}

/** The record names the job; one that cannot be written costs the job nothing. */
function recordJob(orders: JobOrders): void {
  try {
    writeRecord(orders.pidfile, {
      by: "run",
      spec: orders.spec,
      daemon: identify(ids.pid()) ?? null,
      holder: null,
    });
  } catch (err) {
    writeAll(
      2,
      new TextEncoder().encode(
        `singleton-run: warning: cannot write the service record beside ${quote(orders.pidfile)}: ${
          (err as Error).message
        }\n`,
      ),
    );
  }
}
