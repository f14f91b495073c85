/**
 * What the command prints: data on stdout (a pid, JSON, status's line),
 * messages on stderr, each one line with control characters escaped.
 *
 * A closed or broken stdout or stderr (`| head -0`, `>&-`) loses what was
 * printed there and nothing else: the action is done by then, and its exit
 * code stands.
 *
 * @module
 */

import { NAME } from "./help.ts";

const encoder = new TextEncoder();

let quiet = false;

/**
 * Drop every message but errors from now on (`--quiet`).
 *
 * @param on whether to
 */
export function setQuiet(on: boolean): void {
  quiet = on;
}

/**
 * Print one line of data on stdout.
 *
 * @param line the line, without its newline
 */
export function out(line: string): void {
  writeAll(Deno.stdout, line + "\n");
}

/**
 * Print a note on stderr, prefixed with the program's name: anything but an
 * error (an outcome of exit 3, a warning, what was done on the way), so
 * `--quiet` drops it.
 *
 * @param message the message
 */
export function say(message: string): void {
  if (!quiet) err(`${NAME}: ${message}`);
}

/**
 * Print an error on stderr, prefixed with the program's name, even under
 * `--quiet`: what made the command exit 1, 2 or 4.
 *
 * @param message the message
 */
export function complain(message: string): void {
  err(`${NAME}: ${message}`);
}

/**
 * Print one line on stderr as it is (control characters escaped).
 *
 * @param line the line
 */
export function err(line: string): void {
  writeAll(Deno.stderr, oneLine(line) + "\n");
}

/**
 * Write all of `text`, or as much as the reader takes: a reader gone (EPIPE)
 * or a descriptor closed loses the rest, never the action's outcome.
 */
function writeAll(stream: typeof Deno.stdout | typeof Deno.stderr, text: string): void {
  let bytes = encoder.encode(text);
  try {
    while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
  } catch {
    // No reader any more: nobody to tell.
  }
}

/** Control characters (a path or name holding a newline) shown escaped, so a message stays one line. */
function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => {
    const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
    return named[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}
