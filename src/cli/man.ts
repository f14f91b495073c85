/**
 * The manual page, `singleton-run.1`, rendered in roff from the option table
 * and the help's texts, so it names every option the parser takes, with the
 * same help and defaults. `deno task man` writes it to
 * `dist/singleton-run.1` (or the path given); `man -l` shows it.
 *
 * @module
 */

import {
  type AnyOption,
  argOf,
  type Command,
  COMMANDS,
  type Defaults,
  OPTION_LIST,
} from "./options.ts";
import { DESCRIPTION, DURATIONS, listWords, NAME, SUMMARY, USAGE } from "./help.ts";
import { VERSION } from "./version.ts";

/** Text for roff: backslashes and hyphens escaped, no line taken for a request. */
function esc(text: string): string {
  return text.replace(/\\/g, "\\e").replace(/-/g, "\\-").replace(/^([.'])/gm, "\\&$1");
}

/** Text in bold, or in italics, as roff escapes. */
const bold = (text: string) => `\\fB${esc(text)}\\fR`;
const italic = (text: string) => `\\fI${esc(text)}\\fR`;

/** A paragraph of the help's text: its line breaks were only for a terminal. */
function paragraph(text: string): string {
  return esc(text.replace(/\n/g, " "));
}

/**
 * Group the commands an option is in by what a per-command text says.
 *
 * @returns each distinct text with the commands that have it
 */
function byCommand(
  commands: readonly Command[],
  text: (cmd: Command) => string | undefined,
): [string | undefined, Command[]][] {
  const groups = new Map<string | undefined, Command[]>();
  for (const cmd of commands) {
    const t = text(cmd);
    groups.set(t, [...(groups.get(t) ?? []), cmd]);
  }
  return [...groups];
}

/** One option's entry: its name and value, what it does, where, and its default. */
function optionEntry(defaults: Defaults, spec: AnyOption): string[] {
  const arg = argOf(spec);
  const lines = [".TP", `${bold(`--${spec.name}`)}${arg ? ` ${italic(arg)}` : ""}`];
  const helps = byCommand(
    spec.commands,
    (cmd) => typeof spec.help === "string" ? spec.help : spec.help(cmd),
  );
  for (const [text, cmds] of helps) {
    const where = helps.length > 1 ? `With ${listWords(cmds)}: ` : "";
    lines.push(`${esc(where)}${paragraph(text!)}.`);
    if (helps.length > 1) lines.push(".br");
  }
  if (helps.length > 1) lines.pop();
  const commands = spec.commands.length === COMMANDS.length
    ? "every command"
    : listWords(spec.commands);
  lines.push(".br", `${esc(`Taken by ${commands}`)}${supervised(spec)}.`);
  const shown = byCommand(spec.commands, (cmd) => spec.shown?.(defaults, cmd))
    .filter(([text]) => text !== undefined);
  for (const [text, cmds] of shown) {
    const where = shown.length > 1 || cmds.length < spec.commands.length
      ? ` (${listWords(cmds)})`
      : "";
    lines.push(`Default${esc(where)}: ${esc(text!)}.`);
  }
  return lines;
}

/** ", with --supervise" for an option that goes with it (everywhere, or in some commands). */
function supervised(spec: AnyOption): string {
  if (spec.needs === "supervise") return esc(", with --supervise");
  if (spec.supervisedIn) return esc(` (${listWords(spec.supervisedIn)}: only with --supervise)`);
  return "";
}

/**
 * The manual page, in roff.
 *
 * @param defaults the control layer's module, for the defaults shown
 * @returns the page
 */
export function manPage(defaults: Defaults): string {
  const lines = [
    `.TH ${NAME.toUpperCase()} 1 "" "${NAME} ${VERSION}" "User Commands"`,
    // Option names must not be hyphenated at a line end (a search for one would miss it).
    ".nh",
    ".ad l",
    ".SH NAME",
    `${esc(NAME)} \\- run exactly one instance of a program`,
    ".SH SYNOPSIS",
    ".nf",
    ...COMMANDS.map((c) => `${bold(NAME)} ${esc(USAGE[c].replace(/ +/, " "))}`),
    `${bold(NAME)} ${esc("--help | --version | help COMMAND | completion bash|zsh|fish")}`,
    ".fi",
    ".SH DESCRIPTION",
    esc(
      `${NAME} runs COMMAND as a single-instance daemon: its pid file is kept flock-locked ` +
        "for the daemon's whole life, and start, stop, status, restart, reload and signal are " +
        "race-free, serialized by a guard file beside the pid file (PIDFILE.lock).",
    ),
    ".PP",
    esc(
      "stdout carries only data (a pid, status's line or its JSON); messages go to stderr, " +
        "one line each, starting with the program's name.",
    ),
    ".SH COMMANDS",
  ];
  for (const c of COMMANDS) {
    const options = OPTION_LIST.filter(([, spec]) => spec.commands.includes(c))
      .map(([, spec]) => bold(`--${spec.name}`));
    lines.push(
      ".TP",
      bold(c),
      `${paragraph(SUMMARY[c])}.`,
      ".br",
      paragraph(DESCRIPTION[c](defaults)),
      ".br",
      `Options: ${options.join(", ")}.`,
    );
  }
  lines.push(
    ".TP",
    bold("completion bash|zsh|fish"),
    esc("Print a completion script for the shell, made from the same option table."),
    ".SH OPTIONS",
    esc("Options take --name value or --name=value."),
  );
  for (const [, spec] of OPTION_LIST) lines.push(...optionEntry(defaults, spec));
  lines.push(
    ".SH DURATIONS",
    esc(DURATIONS),
    esc(
      "The waits of a stop schedule (--retry, --stop-schedule) are durations too: " +
        "TERM/500ms/KILL/2s.",
    ),
    ".SH EXIT STATUS",
    ".TP",
    "0",
    "done",
    ".TP",
    "1",
    esc(
      "failed when acted on: paths, permissions, programs, readiness, timeouts, a reload refused",
    ),
    ".TP",
    "2",
    esc("usage error: an unknown option, a missing --pidfile or COMMAND, a malformed value"),
    ".TP",
    "3",
    esc(
      "nothing to do: already running (start, restart, run), not running (the others); for " +
        "run also a --wait that ran out, a later --replace, a --once-per slot done " +
        "(--conflict-exit-code changes it)",
    ),
    ".TP",
    "124",
    esc("run --max-runtime: COMMAND ran longer and was stopped"),
    ".PP",
    esc(
      "status uses the LSB codes: 0 running, 1 stale pid file, 3 not running, 4 cannot tell; " +
        "run exits with COMMAND's status once it has exec'd.",
    ),
    ".SH FILES",
    ".TP",
    italic("PIDFILE"),
    esc("the daemon's pid, locked with flock(2) while it runs; left empty after a stop"),
    ".TP",
    italic("PIDFILE.lock"),
    esc("the guard file (--guard), locked around every action but status"),
    ".TP",
    italic("PIDFILE.state"),
    esc("the supervisor's state (--supervise), which status reads"),
    ".SH SEE ALSO",
    `${bold("start-stop-daemon")}(8), ${bold("flock")}(1), ${bold("flock")}(2), ${
      bold("daemon")
    }(7)`,
  );
  return lines.join("\n") + "\n";
}

if (import.meta.main) {
  const path = Deno.args[0] ?? "dist/singleton-run.1";
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(path, manPage(await import("../control/mod.ts")));
  console.log(path);
}
