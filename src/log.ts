/**
 * The library's diagnostics go through LogTape, under the category
 * `["singleton-run", ...]`, as LogTape asks of libraries: nothing is written
 * anywhere until the application (the CLI, the supervisor, or a program that
 * imports this module) configures a sink for that category.
 *
 * @module
 */

import { getLogger, type Logger } from "./deps/logtape.ts";

/** The root category of every logger of this library. */
export const LOG_CATEGORY = "singleton-run";

/**
 * The logger of one part of the library.
 *
 * @param part the sub-category, such as "supervisor" or "daemonize"
 * @returns the logger for `["singleton-run", part]`
 */
export function logger(part: string): Logger {
  return getLogger([LOG_CATEGORY, part]);
}

/**
 * A finished sentence as a LogTape message: LogTape reads `{name}` in a
 * message as a placeholder, so braces in a path or an error text are
 * doubled to be printed as they are.
 *
 * @param text the sentence
 * @returns the message template that renders as `text`
 */
export function literal(text: string): string {
  return text.replaceAll("{", "{{").replaceAll("}", "}}");
}
