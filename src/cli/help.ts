/**
 * The help texts: each command's description, with its options listed from
 * the option table and their defaults from the control layer's constants.
 *
 * @module
 */

import { argOf, type Command, COMMANDS, type Defaults, octal, OPTION_LIST } from "./options.ts";
import { VERSION } from "./version.ts";

/** The program's name, as messages and the help spell it. */
export const NAME = "singleton-run";

/** Each command's usage line, without the program's name. */
export const USAGE: Record<Command, string> = {
  start: "start   (--pidfile PATH | --name NAME) [options] -- COMMAND [ARG...]",
  run: "run     (--pidfile PATH | --name NAME) [options] -- COMMAND [ARG...]",
  stop: "stop    (--pidfile PATH | NAME) [--retry SCHEDULE] [--oknodo]",
  status: "status  (--pidfile PATH | NAME) [--json]  |  status --lock URL",
  restart: "restart (--pidfile PATH | NAME) [options] [-- COMMAND [ARG...]]",
  reload: "reload  (--pidfile PATH | NAME) [--force]",
  signal: "signal  (--pidfile PATH SIGNAL | NAME SIGNAL)",
  reopen: "reopen  (--pidfile PATH | NAME)",
  list: "list    [--json] [--pidfile PATH...]   (alias: ls)",
};

/** Each command in a line. */
export const SUMMARY: Record<Command, string> = {
  start: "start COMMAND as a daemon; print its pid once it is ready",
  run: "take the lock and exec COMMAND in the foreground (same pid)",
  stop: "signal the daemon through a pidfd and wait until it is gone",
  status: "LSB status: 0 running, 1 stale pid file, 3 not running, 4 unknown",
  restart: "stop, then start, under one guard lock; print the new pid",
  reload: "send SIGHUP, unless it would end the program",
  signal: "send any signal (name, number, RTMIN+N; 0 only checks)",
  reopen: "make the supervisor or keeper reopen --output (after a log rotation)",
  list: "every service in DIR (and each --pidfile): state, pid, uptime, command",
};

/** What each command does, for its help and the manual page. */
export const DESCRIPTION: Record<Command, (d: Defaults) => string> = {
  start: (d) =>
    `Start COMMAND as a daemon: new session, cwd ${d.DEFAULT_CHDIR}, umask ${
      octal(d.DEFAULT_UMASK)
    }, stdin from
/dev/null, stdout and stderr to /dev/null or --output, no other inherited
descriptor but the pid file lock (fd 3; fd 4 when --notify-fd is 3).
Prints the daemon's pid once it is ready. Exit 3 if already running.`,
  run: () =>
    `Take the pid file lock, then exec COMMAND in the foreground: it keeps this
pid and the lock, and its exit status is ${NAME}'s. For systemd,
containers, cron and deno task scripts.`,
  stop: () =>
    `Signal the daemon through a pidfd (after re-checking that it holds the
lock, so a recycled pid is never signalled) and wait for the lock to be
released. A stale pid file is never signalled; it is emptied. A pid file
naming a live process no lock covers is neither signalled nor written
(exit 1) unless --exec PATH proves it runs that file. After a stop the pid
file is left empty. Exit 3 if not running; exit 1 if it still runs after
the schedule.`,
  status: () =>
    `Report the daemon's state without waiting for anything, as one line on
stdout (or JSON). Exit codes (LSB): 0 running, 1 not running but the pid
file names a pid (stale), 3 not running (or failed: its supervisor gave
up), 4 cannot tell (e.g. no permission; the reason goes to stderr).`,
  restart: () =>
    `Stop the daemon if it runs, then start COMMAND, under one hold of the guard
lock. Prints the new pid. Takes start's options and stop's --retry.
Without -- COMMAND, starts again what start recorded beside the pid file
(PIDFILE.record), in this environment plus the recorded --env values, with
the options given here over the recorded ones (exit 2 when there is no
record); with COMMAND, the new launch replaces the record.`,
  reload: () =>
    `Send SIGHUP to the daemon (re-read its configuration). First its signal
masks are read (/proc/PID/status; with --supervise, those of COMMAND's
current run): a program that neither catches, ignores nor blocks SIGHUP
would die of it, so reload refuses (exit 1) unless --force is given.
Exit 3 if not running.`,
  signal: () =>
    `Send SIGNAL to the daemon: a name (TERM, SIGTERM), a number (15), a
real-time signal (RTMIN+N, SIGRTMIN+N, RTMAX-N; RTMIN is 34 with glibc),
or 0 to check that it runs and could be signalled, sending nothing.
Exit 3 if not running.`,
  list: () =>
    `Report every service in the directory of services (DIR: $SINGLETON_RUN_DIR,
else /run/singleton-run for root, else $XDG_RUNTIME_DIR/singleton-run, else
/tmp/singleton-run-UID), and each --pidfile given, named by its path: one
aligned row each (name, state, pid, uptime, restarts, holder, cluster lock
and token, command), or with --json an array of what status --json prints,
each with its name. Nothing is waited for. Exit 0 when DIR could be read
(a missing DIR lists nothing).`,
  reopen: () =>
    `Make the process that writes --output (the supervisor, or the keeper of a
daemon started with --keeper --output) reopen the file, without signalling
COMMAND: the postrotate step of a logrotate 'create' rotation. Exit 3 if
not running; exit 1 when COMMAND writes its output itself, or when no
--output FILE was given.`,
};

/**
 * The overview `--help` prints.
 *
 * @returns the text
 */
export function mainHelp(): string {
  return `${NAME} ${VERSION}: run exactly one instance of a program, its pid file
kept flock-locked for its whole life, with race-free start and stop.

Usage:
${COMMANDS.map((c) => `  ${NAME} ${USAGE[c]}`).join("\n")}
  ${NAME} --help | --version | help COMMAND | completion bash|zsh|fish

Commands:
${COMMANDS.map((c) => `  ${c.padEnd(8)} ${SUMMARY[c]}`).join("\n")}

A NAME selects the pid file DIR/NAME.pid, DIR being $SINGLETON_RUN_DIR, else
/run/singleton-run for root, else $XDG_RUNTIME_DIR/singleton-run, else
/tmp/singleton-run-UID (start, run and restart make it when missing).

Exit codes: 0 done, 1 failed, 2 usage error, 3 nothing to do (already
running for start/restart/run, not running for stop/reload/signal).
Messages go to stderr (with --quiet, errors only); stdout carries only data
(a pid, JSON, status's line).

${wrap(DURATIONS, WIDTH).join("\n")}

Run '${NAME} help COMMAND' for a command's options.`;
}

/**
 * One command's help, its options from the table.
 *
 * @param cmd the command
 * @param defaults the control layer's module, for the defaults shown
 * @returns the text
 */
export function commandHelp(cmd: Command, defaults: Defaults): string {
  const lines = [
    `Usage: ${NAME} ${USAGE[cmd].replace(/ +/, " ")}`,
    "",
    DESCRIPTION[cmd](defaults),
    "",
    "Options:",
  ];
  for (const [, spec] of OPTION_LIST) {
    if (!spec.commands.includes(cmd)) continue;
    const arg = argOf(spec, cmd);
    const left = `  --${spec.name}${arg ? ` ${arg}` : ""}`;
    const shown = spec.shown?.(defaults, cmd);
    const text = (spec.supervisedIn?.includes(cmd) ? "with --supervise: " : "") +
      (typeof spec.help === "string" ? spec.help : spec.help(cmd)) +
      (shown === undefined ? "" : ` (default ${shown})`);
    const wrapped = wrap(text, WIDTH - COLUMN);
    if (left.length < COLUMN - 1) {
      lines.push(left.padEnd(COLUMN) + wrapped[0]);
      wrapped.shift();
    } else lines.push(left);
    for (const line of wrapped) lines.push(" ".repeat(COLUMN) + line);
  }
  if (
    OPTION_LIST.some(([, spec]) => spec.commands.includes(cmd) && argOf(spec, cmd)?.includes("DUR"))
  ) {
    lines.push("", ...wrap(DURATIONS, WIDTH));
  }
  return lines.join("\n");
}

/** The duration grammar, in a sentence. */
export const DURATIONS = "A duration (DUR) is 500ms, 5s, 2m or 1h; a bare number is seconds " +
  "(milliseconds for --ready-after).";

const COLUMN = 25;
const WIDTH = 79;

/**
 * Words as a list in a sentence: "a", "a and b", "a, b and c".
 *
 * @param words the words
 * @returns the list
 */
export function listWords(words: readonly string[]): string {
  return words.length < 2
    ? words.join("")
    : `${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
}

/** Words into lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  lines.push(line);
  return lines;
}
