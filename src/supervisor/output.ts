/**
 * Where a supervised child's output goes: a file (appended, reopened on
 * SIGHUP/SIGUSR1 for log rotation) or syslog with the child's pid, one
 * record per line; or nowhere in particular (the child shares the
 * supervisor's stdout and stderr). The supervisor's own messages go the same
 * way.
 *
 * @module
 */

import {
  close,
  ERRNO,
  fstat,
  ftruncate,
  ids,
  quote,
  readNow,
  sendDatagram,
  sockaddrUnix,
  SystemError,
  type UnixAddress,
  unixDatagramSocket,
  writeAll,
  writeNow,
} from "../ffi/mod.ts";
import { openOutputFile } from "../lock/output.ts";
import { priority, type SyslogFacility } from "../syslog/codes.ts";
import type { OutputTarget } from "../launch/spec.ts";

/** The level of a line: stdout lines are `info`, stderr lines `err`. */
export type LineLevel = "info" | "err";

/** The longest line copied as one record; a longer line is cut into pieces of this size. */
export const MAX_LINE = 8192;
/** What one read from an output pipe takes at most (bounds memory under a flood). */
const READ_CHUNK = 65536;
const encoder = new TextEncoder();

/** Where lines go. */
export interface Sink {
  /** Write one line (no newline). Returns false when it must be retried later. */
  line(text: Uint8Array, level: LineLevel, pid: number): boolean;
  /** Open the file again (log rotation). */
  reopen(): void;
  /** Write out what is buffered. */
  flush(): void;
  /** Lines that could not be delivered and were dropped. */
  readonly dropped: number;
  close(): void;
}

/**
 * Lines appended to a file. The file is opened like every file beside the
 * pid file: never through a symbolic link, never a FIFO or device, never a
 * file with a second name.
 *
 * A write that fails (a full disk, a quota, an I/O error) never costs the
 * service: the lines are dropped and counted, `onFirstDrop` is told once,
 * and every later flush tries again. The first write that succeeds after a
 * gap begins with one line of the supervisor's own saying how many lines
 * were dropped and why, so a reader of the file sees where the gap is.
 */
export class FileSink implements Sink {
  #fd = -1;
  /** Lines waiting for one write(2); flushed at the end of every loop turn. */
  readonly #buf = new Uint8Array(2 * READ_CHUNK);
  #len = 0;
  #dropped = 0;
  #told = false;
  /** The gap being dropped now: how many lines, and why; undefined while writes succeed. */
  #gap: { lines: number; why: string } | undefined;
  /** A write cut short inside a line that could not be taken back: the next write ends it first. */
  #midLine = false;
  constructor(
    readonly path: string,
    readonly programUid?: number,
    readonly onFirstDrop: (why: string) => void = () => {},
  ) {
    this.reopen();
  }
  get dropped(): number {
    return this.#dropped;
  }
  reopen(): void {
    this.flush();
    const fd = openOutputFile(this.path, this.programUid);
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = fd;
    this.#midLine = false; // the cut line stays in the old file
  }
  line(text: Uint8Array): boolean {
    if (this.#len + text.length + 1 > this.#buf.length) this.flush();
    this.#buf.set(text, this.#len);
    this.#buf[this.#len + text.length] = 10;
    this.#len += text.length + 1;
    return true;
  }
  flush(): void {
    if (this.#len === 0 || this.#fd < 0) return;
    const len = this.#len;
    this.#len = 0;
    this.#write(this.#buf.subarray(0, len));
  }
  /**
   * One of the supervisor's own lines, written at once and never counted as
   * dropped output.
   *
   * @returns whether it reached the file
   */
  own(text: Uint8Array): boolean {
    this.flush();
    if (this.#fd < 0) return false;
    const line = new Uint8Array(text.length + 1);
    line.set(text);
    line[text.length] = 10;
    return this.#write(line, false);
  }
  close(): void {
    this.flush();
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }

  /** Whether the supervisor's stderr is this very file (where `start --output` points it). */
  sharesStderr(): boolean {
    try {
      const mine = fstat(this.#fd);
      const err = fstat(2);
      return mine.dev === err.dev && mine.ino === err.ino;
    } catch {
      return false;
    }
  }

  /**
   * Write whole lines, after the news of a gap if there was one; on failure,
   * drop what was not written and count it when `counted`.
   */
  #write(lines: Uint8Array, counted = true): boolean {
    const gap = this.#gap;
    if (gap || this.#midLine) {
      const news = gap
        ? `singleton-run[${ids.pid()}]: ${gap.lines} line(s) of output dropped: ${gap.why}\n`
        : "";
      const failed = this.#append(encoder.encode(`${this.#midLine ? "\n" : ""}${news}`));
      if (failed) {
        this.#lost(lines, 0, failed.err, counted);
        return false;
      }
      this.#gap = undefined;
    }
    const failed = this.#append(lines);
    if (!failed) return true;
    this.#lost(lines, failed.written, failed.err, counted);
    return false;
  }

  /**
   * write(2) until all is written. On failure, the start of a line it left
   * at the end of the file is cut off again, so the file holds whole lines
   * only (this process is the file's one writer); when that cannot be done,
   * the next write ends the line first.
   *
   * @returns undefined once all is written, else how much was and why not
   */
  #append(bytes: Uint8Array): { written: number; err: SystemError } | undefined {
    let off = 0;
    try {
      while (off < bytes.length) {
        const n = writeNow(this.#fd, bytes.subarray(off) as Uint8Array<ArrayBuffer>);
        if (n === undefined) throw new SystemError("write", ERRNO.EAGAIN, { path: this.path });
        off += n;
      }
      if (off > 0) this.#midLine = false;
      return undefined;
    } catch (err) {
      if (!(err instanceof SystemError)) throw err;
      const cut = off === 0 ? 0 : off - (bytes.lastIndexOf(10, off - 1) + 1);
      if (cut > 0) {
        try {
          const size = Number(fstat(this.#fd, this.path).size);
          ftruncate(this.#fd, size - cut, this.path);
          off -= cut;
        } catch {
          this.#midLine = true;
        }
      }
      return { written: off, err };
    }
  }

  /** Count the lines from `from` on as dropped, and say so the first time. */
  #lost(lines: Uint8Array, from: number, err: SystemError, counted: boolean): void {
    let n = 0;
    if (counted) {
      for (let i = lines.indexOf(10, from); i >= 0; i = lines.indexOf(10, i + 1)) n++;
    }
    if (n === 0 && !this.#gap) return;
    this.#dropped += n;
    const why = `cannot write ${quote(this.path)}: ${err.message}`;
    this.#gap = { lines: (this.#gap?.lines ?? 0) + n, why };
    if (n > 0 && !this.#told) {
      this.#told = true;
      this.onFirstDrop(
        `output is being dropped: ${why} (status --json counts the lines dropped; ` +
          `writing resumes when it can)`,
      );
    }
  }
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * An RFC 3164 header as glibc's syslog(3) writes it: `<PRI>Mmm dd hh:mm:ss ident[pid]: `.
 *
 * @param pri facility and level
 * @param ident the name before the pid
 * @param pid the pid in brackets
 * @param now the time stamp
 * @returns the header
 */
export function syslogHeader(pri: number, ident: string, pid: number, now = new Date()): string {
  const p2 = (n: number) => String(n).padStart(2, "0");
  const day = String(now.getDate()).padStart(2, " ");
  const time = `${p2(now.getHours())}:${p2(now.getMinutes())}:${p2(now.getSeconds())}`;
  return `<${pri}>${MONTHS[now.getMonth()]} ${day} ${time} ${ident}[${pid}]: `;
}

/**
 * Datagrams straight to /dev/log, so the pid in each record is the child's
 * (libc's LOG_PID would name the supervisor). Non-blocking: when syslogd's
 * queue is full the line is kept and retried, and the pipes are not read
 * meanwhile, so the child slows down instead of lines being dropped. With no
 * syslog daemon listening, lines are dropped and counted; `onFirstDrop` is
 * told once.
 */
export class SyslogSink implements Sink {
  #fd: number;
  readonly #to: UnixAddress;
  /** One buffer for every datagram: header (ident is cut to 64 bytes) and a line. */
  readonly #msg = new Uint8Array(MAX_LINE + 128);
  #dropped = 0;
  readonly ident: string;
  constructor(
    readonly facility: SyslogFacility,
    ident: string,
    readonly socketPath = "/dev/log",
    readonly onFirstDrop: (why: string) => void = () => {},
  ) {
    this.#to = sockaddrUnix(socketPath, "sendto");
    this.ident = ident.slice(0, 64);
    this.#fd = unixDatagramSocket(true);
  }
  get dropped(): number {
    return this.#dropped;
  }
  reopen(): void {}
  flush(): void {}
  line(text: Uint8Array, level: LineLevel, pid: number): boolean {
    try {
      return this.#send(text, level, pid);
    } catch (err) {
      // No syslog daemon (ENOENT, ECONNREFUSED) or a refused message: drop it, and say so once.
      if (this.#dropped++ === 0) {
        this.onFirstDrop(
          `output is being dropped: cannot log to ${quote(this.socketPath)}: ${
            err instanceof SystemError ? err.message : String(err)
          } (status --json counts the lines dropped)`,
        );
      }
      return true;
    }
  }
  /**
   * One of the supervisor's own lines, under its pid: not counted as
   * dropped output, and not retried (it also went to stderr).
   */
  own(text: Uint8Array, level: LineLevel): void {
    try {
      this.#send(text, level, ids.pid());
    } catch {
      // no syslog daemon: stderr had it
    }
  }
  #send(text: Uint8Array, level: LineLevel, pid: number): boolean {
    const pri = priority(level, this.facility);
    const head = encoder.encodeInto(syslogHeader(pri, this.ident, pid), this.#msg).written;
    const body = text.subarray(0, MAX_LINE); // a line is at most MAX_LINE; the header fits in the rest
    this.#msg.set(body, head);
    const msg = this.#msg.subarray(0, head + body.length);
    return sendDatagram(this.#fd, msg, this.#to, this.socketPath);
  }
  close(): void {
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * The sink of a target, or undefined when the child inherits our output.
 *
 * @param target where the output goes; null: the child shares ours
 * @param ident the syslog ident (the command's name)
 * @param onFirstDrop told once when output starts being dropped (no syslog
 *   daemon, a full disk)
 * @param programUid the program's user (`user`), whose own output file is fine too
 * @returns the sink
 * @throws {SystemError} when the file or the socket cannot be opened
 */
export function openSink(
  target: OutputTarget | null,
  ident: string,
  onFirstDrop: (why: string) => void,
  programUid?: number,
): Sink | undefined {
  switch (target?.kind) {
    case "file":
      return new FileSink(target.path, programUid, onFirstDrop);
    case "syslog":
      return new SyslogSink(target.facility, ident, undefined, onFirstDrop);
    case undefined:
      return undefined;
  }
}

/**
 * Write one of the supervisor's own messages where its output goes: the
 * file, syslog (under the supervisor's pid), or its stderr.
 *
 * @param sink the output sink, if any
 * @param level the message's level
 * @param message the text
 */
export function sayOwn(sink: Sink | undefined, level: LineLevel, message: string): void {
  if (sink instanceof FileSink) {
    if (sink.own(encoder.encode(`singleton-run[${ids.pid()}]: ${message}`))) return;
    // A full disk: stderr may still reach somebody, unless it is that file.
    if (sink.sharesStderr()) return;
  }
  writeStderr(message);
  if (sink instanceof SyslogSink) sink.own(encoder.encode(`singleton-run: ${message}`), level);
}

/**
 * Write a message on the supervisor's stderr.
 *
 * @param message the text
 */
export function writeStderr(message: string): void {
  try {
    writeAll(2, encoder.encode(`singleton-run[${ids.pid()}]: ${message}\n`));
  } catch {
    // stderr closed: nowhere to say it
  }
}

const chunkBuffer = new Uint8Array(READ_CHUNK);

/** One output pipe of one child, read a chunk at a time and cut into lines. */
export class LineReader {
  /** The unterminated end of the last read; allocated only when one is left over. */
  #partial: Uint8Array | undefined;
  #partialLen = 0;
  /** Complete lines read but not yet accepted by the sink (syslog back-pressure). */
  #pending: Uint8Array[] = [];
  eof = false;
  constructor(readonly fd: number, readonly level: LineLevel, readonly pid: number) {}

  /** Whether lines wait for the sink. */
  get blocked(): boolean {
    return this.#pending.length > 0;
  }

  /**
   * Read once and hand the complete lines to the sink. Lines are passed as
   * views into one shared buffer and copied only when the sink pushes back:
   * the hot path allocates nothing (ArrayBuffers that V8 collects late were
   * measured at +75 MB of RSS over 5,000 restarts).
   *
   * @returns false at end of file
   */
  readOnce(sink: Sink): boolean {
    const n = readNow(this.fd, chunkBuffer, `output pipe of pid ${this.pid}`);
    if (n === undefined) return true;
    if (n === 0) {
      this.eof = true;
      this.finish();
      return false;
    }
    const chunk = chunkBuffer.subarray(0, n);
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const end = nl < 0 ? chunk.length : nl;
      let piece = chunk.subarray(start, end);
      // A line longer than MAX_LINE is cut into MAX_LINE pieces.
      while (this.#partialLen + piece.length >= MAX_LINE) {
        const take = MAX_LINE - this.#partialLen;
        this.#emit(sink, this.#joined(piece.subarray(0, take)));
        piece = piece.subarray(take);
      }
      if (nl < 0) {
        this.#partial ??= new Uint8Array(MAX_LINE);
        this.#partial.set(piece, this.#partialLen);
        this.#partialLen += piece.length;
        return true;
      }
      const line = this.#joined(piece);
      this.#emit(sink, line.at(-1) === 13 ? line.subarray(0, -1) : line);
      start = nl + 1;
    }
    return true;
  }

  /** The partial line followed by `piece` (a view when there is no partial); clears the partial. */
  #joined(piece: Uint8Array): Uint8Array {
    if (this.#partialLen === 0) return piece;
    const line = new Uint8Array(this.#partialLen + piece.length);
    line.set(this.#partial!.subarray(0, this.#partialLen));
    line.set(piece, this.#partialLen);
    this.#partialLen = 0;
    return line;
  }

  #emit(sink: Sink, line: Uint8Array): void {
    if (this.#pending.length === 0 && sink.line(line, this.level, this.pid)) return;
    this.#pending.push(line.slice());
  }

  /** Hand pending lines to the sink; false when the sink pushed back. */
  flush(sink: Sink): boolean {
    while (this.#pending.length > 0) {
      if (!sink.line(this.#pending[0]!, this.level, this.pid)) return false;
      this.#pending.shift();
    }
    return true;
  }

  /** Take a last unterminated line as a line. */
  finish(): void {
    if (this.#partialLen > 0) this.#pending.push(this.#partial!.slice(0, this.#partialLen));
    this.#partialLen = 0;
  }

  close(): void {
    close(this.fd);
  }
}
