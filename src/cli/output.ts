/**
 * What the command prints: data on stdout (a pid, JSON, status's line),
 * messages on stderr, each one line with control characters escaped.
 *
 * @module
 */

import { NAME } from "./help.ts";

const encoder = new TextEncoder();

/**
 * Print one line of data on stdout.
 *
 * @param line the line, without its newline
 */
export function out(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/**
 * Print one message on stderr, prefixed with the program's name.
 *
 * @param message the message
 */
export function say(message: string): void {
  err(`${NAME}: ${message}`);
}

/**
 * Print one line on stderr as it is (control characters escaped).
 *
 * @param line the line
 */
export function err(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(oneLine(line) + "\n"));
  } catch {
    // stderr closed: nothing to do.
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
