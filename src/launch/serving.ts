/**
 * When a program that says nothing of its readiness counts as ready: the
 * clock of the `alive` readiness, shared by `start` (which waits on it) and
 * the supervisor (which waits on it for each run, and as a keeper).
 *
 * A program is ready once it has stayed alive `afterMs` since its exec; or,
 * with `servingMs`, sooner, once it has been seen **serving** for that long:
 * one of its processes (the main process or one it started) has a socket
 * that listens for connections (TCP, or a Unix stream socket) and a thread
 * blocked waiting for events on its descriptors (poll, select, epoll,
 * accept), at the first look and at the last, and it listened at every look
 * in between (a server's periodic task may find it busy at one of them). Listening alone is not enough: redis listens before it
 * loads its data file and exits if that file is corrupt, and nginx listens on
 * its free ports while it retries a busy one for 2.5 s before it exits. Both
 * are in the corpus this rule was chosen from (testing/corpus.ts). What the
 * rule cannot see is a program that listens and waits in its event loop and
 * then fails later than `servingMs` (a database that answers only after a
 * timeout): only the program can say when it is ready (`--notify-fd`,
 * `--notify-socket`).
 *
 * Every look is a few reads of /proc; a process the caller may not look at
 * never counts as serving, so the worst a failed look costs is the wait to
 * `afterMs`, never a false "ready".
 *
 * @module
 */

import { childPids, listeningInodes, socketInodes, waitsForEvents } from "../ffi/proc.ts";
import type { Readiness } from "./spec.ts";

/** How often a program is looked at while it may be serving, in ms. */
export const SERVING_LOOK_MS = 50;
/** The most processes of one program looked at (the main process and its descendants). */
const MAX_PROCESSES = 64;

/** What a look at a program found: no listening socket, listening, or listening and waiting. */
export type Serving = "none" | "listening" | "waiting";

/**
 * Whether a program serves: a process of its tree (`pid` and its
 * descendants) has a socket that listens, and whether such a process has a
 * thread blocked waiting for events.
 *
 * @param pid the program's main process
 * @returns `waiting` when a listening process waits for events, `listening`
 *   when one listens but none waits, `none` when none is seen listening
 */
export function serving(pid: number): Serving {
  let listening: Set<string> | undefined;
  let seen = false;
  for (const p of tree(pid)) {
    const sockets = socketInodes(p);
    if (sockets.length === 0) continue;
    listening ??= listeningInodes(pid);
    if (!sockets.some((inode) => listening!.has(inode))) continue;
    if (waitsForEvents(p)) return "waiting";
    seen = true;
  }
  return seen ? "listening" : "none";
}

/** A process and its descendants, breadth first, at most {@link MAX_PROCESSES}. */
function tree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length && out.length < MAX_PROCESSES; i++) {
    for (const child of childPids(out[i]!)) {
      if (!out.includes(child) && out.length < MAX_PROCESSES) out.push(child);
    }
  }
  return out;
}

/** The `alive` readiness. */
export type AliveReadiness = Extract<Readiness, { kind: "alive" }>;

/**
 * The clock of one wait for `alive` readiness, from the exec of the process
 * it counts for (or from when a program that forked away was followed to
 * it). Ask {@link ReadyClock.look} at {@link ReadyClock.next} (or later): it
 * says whether the program is ready, and stays true once it is.
 */
export class ReadyClock {
  readonly #aliveAt: number;
  readonly #servingMs: number | undefined;
  /** The look that saw it waiting for connections, if it listened at every look since. */
  #servingSince: number | undefined;
  #ready = false;
  #next: number;

  /**
   * @param readiness how long it must live, and how long it must serve to be ready sooner
   * @param from when its clock starts (`performance.now()`)
   * @param boundMs an upper bound on the wait (the ready timeout): alive that long counts
   */
  constructor(readiness: AliveReadiness, from: number = performance.now(), boundMs = Infinity) {
    this.#aliveAt = from + Math.min(readiness.afterMs, boundMs);
    this.#servingMs = readiness.servingMs;
    this.#next = this.#servingMs === undefined
      ? this.#aliveAt
      : Math.min(this.#aliveAt, from + SERVING_LOOK_MS);
  }

  /** When to look next (`performance.now()` time). */
  get next(): number {
    return this.#next;
  }

  /**
   * Look at the program, alive at `now`.
   *
   * @param pid its main process
   * @param now the time of the look
   * @returns whether it is ready
   */
  look(pid: number, now: number = performance.now()): boolean {
    if (this.#ready) return true;
    if (this.#servingMs !== undefined && now < this.#aliveAt) {
      // Served since a look that saw it waiting for connections, listening at every look
      // since (a periodic task may find it running), and waiting again now.
      const seen = serving(pid);
      if (seen === "none") this.#servingSince = undefined;
      else if (this.#servingSince === undefined) {
        if (seen === "waiting") this.#servingSince = now;
      } else if (seen === "waiting" && now - this.#servingSince >= this.#servingMs) {
        return this.#ready = true;
      }
      this.#next = Math.min(this.#aliveAt, now + SERVING_LOOK_MS);
      return false;
    }
    if (now >= this.#aliveAt) return this.#ready = true;
    this.#next = this.#aliveAt;
    return false;
  }
}
