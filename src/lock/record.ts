/**
 * The service record, `PIDFILE.record`: what was launched (the launch spec)
 * and who runs it (the process the pid file names and the keeper or
 * supervisor that holds the lock for it, each by pid and start time), and,
 * once it gave up, that it failed. The pid file stays `PID\n` for other
 * tools; everything else singleton-run knows of a service is here.
 *
 * It is written only by the process that holds the lock for us (`start`
 * before it hands the lock over, the keeper, the supervisor, `run` before its
 * exec), replaced whole, owner-only (0600: the spec holds the `--env`
 * values), and holds no secret. It is read with the care of every file
 * beside the pid file: no link followed, no FIFO opened, one name only,
 * owned by root or the pid file's owner and writable by nobody else, and at
 * most 256 KiB of it.
 *
 * @module
 */

import { close, ids, lstat } from "../ffi/sys.ts";
import { openBeside, readBounded } from "../ffi/files.ts";
import type { LaunchSpec } from "../launch/spec.ts";
import { type Identity, isIdentity } from "./identity.ts";
import { replaceBeside } from "./replace.ts";

/** What the record holds. */
export interface ServiceRecord {
  /** The record's format. */
  readonly version: 1;
  /** When this record was written (ISO 8601). */
  readonly recordedAt: string;
  /** Who launched it: `start` (a daemon) or `run` (in the foreground). */
  readonly by: "start" | "run";
  /** What was launched. */
  readonly spec: LaunchSpec;
  /** The process the pid file names (the program, or the supervisor), when it was launched. */
  readonly daemon: Identity | null;
  /** The keeper or supervisor that holds the lock for it; null when the program holds it. */
  readonly holder: Identity | null;
  /** Set by a supervisor or keeper that gave up, or whose program failed for good. */
  readonly failed?: FailedState;
}

/** How a supervised service ended for good. */
export interface FailedState {
  /** When (ISO 8601). */
  readonly at: string;
  /** How many restarts it had. */
  readonly restarts: number;
  /** How its last run ended, in words, or null when none ever started. */
  readonly lastExit: string | null;
}

/** The largest record read. */
const MAX_RECORD_BYTES = 256 * 1024;

/**
 * The record beside a pid file.
 *
 * @param pidfile the pid file
 * @returns `${pidfile}.record`
 */
export function recordPath(pidfile: string): string {
  return `${pidfile}.record`;
}

/**
 * Whether later commands need the record to know who holds the lock: a
 * program that runs as another user than the caller and root (`--user`) is
 * neither root nor the pid file's owner, so only the record names it as the
 * holder, and without one a second start would take the lock anew.
 *
 * @param spec what is launched
 * @returns true when a start or run must not go on without its record
 */
export function recordNeeded(spec: LaunchSpec): boolean {
  return spec.user !== null && spec.user.uid !== 0 && spec.user.uid !== ids.euid();
}

/**
 * Write the record whole (0600).
 *
 * @param pidfile the pid file
 * @param record what to record; `version` and `recordedAt` are filled in
 * @throws {SystemError} when it cannot be written (the old record stays)
 */
export function writeRecord(
  pidfile: string,
  record: Omit<ServiceRecord, "version" | "recordedAt">,
): void {
  const full: ServiceRecord = { version: 1, recordedAt: new Date().toISOString(), ...record };
  replaceBeside(recordPath(pidfile), JSON.stringify(full) + "\n", "record", 0o600);
}

/**
 * Read the record, when it can be trusted: a regular file with one name,
 * owned by root, the pid file's owner or this user, that no other user may
 * write, holding a record.
 *
 * @param pidfile the pid file
 * @returns the record, or undefined when there is none (or none to trust)
 */
export function readRecord(pidfile: string): ServiceRecord | undefined {
  let value: unknown;
  try {
    const { fd, stat } = openBeside(recordPath(pidfile), { what: "record", access: "read" });
    try {
      if (!trustedOwner(stat.uid, pidfile) || (stat.mode & 0o022) !== 0) return undefined;
      value = JSON.parse(new TextDecoder().decode(readBounded(fd, MAX_RECORD_BYTES)));
    } finally {
      close(fd);
    }
  } catch {
    return undefined;
  }
  return isRecord(value) ? value : undefined;
}

/** Root, the pid file's owner, or this process's own user. */
function trustedOwner(uid: number, pidfile: string): boolean {
  if (uid === 0 || uid === ids.euid()) return true;
  try {
    return uid === lstat(pidfile).uid;
  } catch {
    return false;
  }
}

/** Whether a parsed value has the record's shape (its spec is trusted as the writer wrote it). */
function isRecord(value: unknown): value is ServiceRecord {
  if (typeof value !== "object" || value === null) return false;
  const r = value as Record<string, unknown>;
  if (r.version !== 1 || (r.by !== "start" && r.by !== "run")) return false;
  if (typeof r.recordedAt !== "string") return false;
  if (typeof r.spec !== "object" || r.spec === null) return false;
  const spec = r.spec as Record<string, unknown>;
  if (!Array.isArray(spec.command) || typeof spec.holder !== "object") return false;
  if (r.daemon !== null && !isIdentity(r.daemon)) return false;
  if (r.holder !== null && !isIdentity(r.holder)) return false;
  if (r.failed !== undefined) {
    const f = r.failed as Record<string, unknown> | null;
    if (typeof f !== "object" || f === null || typeof f.at !== "string") return false;
  }
  return true;
}
