/**
 * `singleton-run completion bash|zsh|fish`: a completion script for the
 * shell, generated from the option table, so it offers exactly the options
 * each command takes (and files, users, policies or signal names for their
 * values) and cannot drift from the parser.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { quote, RESTART_POLICIES, SIGNALS } from "../control/values.ts";
import { type AnyOption, argOf, type Command, COMMANDS, OPTION_LIST } from "./options.ts";
import { NAME, SUMMARY } from "./help.ts";
import { EXIT } from "./exit.ts";
import { out } from "./output.ts";

/** The shells a script can be made for. */
const SHELLS = ["bash", "zsh", "fish"] as const;
type Shell = typeof SHELLS[number];

/** What the value of an option completes to. */
type ValueKind =
  | { readonly kind: "file" | "directory" | "user" | "free" }
  | { readonly kind: "words"; readonly words: readonly string[] };

/** One option as a completion offers it. */
interface Offered {
  readonly name: string;
  /** Takes a value (or repeats with one). */
  readonly takesValue: boolean;
  readonly repeatable: boolean;
  readonly value: ValueKind;
  /** A short description: the help's first clause. */
  readonly about: string;
}

/** The commands that take `-- COMMAND [ARG...]`. */
const LAUNCHERS: readonly Command[] = ["start", "run", "restart"];

/** The signal names `signal` offers. */
const SIGNAL_NAMES: readonly string[] = Object.keys(SIGNALS);

/**
 * Run `completion SHELL`: print the script.
 *
 * @param args the arguments after `completion`
 * @returns the exit code
 * @throws {UsageError} without a shell this can make a script for
 */
export function completionCommand(args: readonly string[]): number {
  const shell = args[0];
  if (args.length !== 1 || !(SHELLS as readonly string[]).includes(shell!)) {
    throw new UsageError(
      shell === undefined
        ? `completion needs a shell: ${SHELLS.join(", ")}`
        : args.length > 1
        ? `unexpected argument ${quote(args[1]!)}`
        : `no completion for shell ${quote(shell)} (${SHELLS.join(", ")})`,
    );
  }
  out(completionScript(shell as Shell));
  return EXIT.OK;
}

/**
 * The completion script for a shell.
 *
 * @param shell bash, zsh or fish
 * @returns the script
 */
export function completionScript(shell: Shell): string {
  return shell === "bash" ? bash() : shell === "zsh" ? zsh() : fish();
}

/** The options of a command, as offered. */
function offered(cmd: Command): Offered[] {
  return OPTION_LIST.filter(([, spec]) => spec.commands.includes(cmd)).map(([, spec]) => ({
    name: spec.name,
    takesValue: spec.kind !== "switch",
    repeatable: spec.kind === "multi",
    value: valueKind(argOf(spec, cmd)),
    about: firstClause(typeof spec.help === "string" ? spec.help : spec.help(cmd)),
  }));
}

/** What an option's value completes to, from the placeholder the help shows. */
function valueKind(arg: string | undefined): ValueKind {
  switch (arg) {
    case "PATH":
    case "FILE":
      return { kind: "file" };
    case "DIR":
      return { kind: "directory" };
    case "USER[:GROUP]":
    case "USER":
      return { kind: "user" };
    case "POLICY":
      return { kind: "words", words: RESTART_POLICIES };
    default:
      return { kind: "free" };
  }
}

/** The help's text up to its first full pause, at most about 60 characters, for one line. */
function firstClause(help: string): string {
  const cut = help.search(/; |\. /);
  const clause = cut > 0 ? help.slice(0, cut) : help;
  if (clause.length <= 60) return clause;
  return clause.slice(0, clause.lastIndexOf(" ", 57)) + "...";
}

/** Every option name of every command, once. */
function allOptions(): AnyOption[] {
  return OPTION_LIST.map(([, spec]) => spec);
}

/** A word in single quotes for bash and zsh, where a backslash is literal. */
function sq(text: string): string {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** A word in single quotes for fish, where a backslash escapes a quote or itself. */
function fq(text: string): string {
  return `'${text.replace(/[\\']/g, "\\$&")}'`;
}

function bash(): string {
  /** A case branch for the options whose value is of this kind; none when there are none. */
  const branch = (kind: ValueKind["kind"], body: string): string[] => {
    const names = allOptions().filter((o) =>
      o.kind !== "switch" && valueKind(argOf(o)).kind === kind
    );
    return names.length === 0 ? [] : [`    ${names.map((o) => `--${o.name}`).join("|")}) ${body}`];
  };
  const words = allOptions().filter((o) => valueKind(argOf(o)).kind === "words").map((o) => {
    const v = valueKind(argOf(o)) as { words: readonly string[] };
    return `    --${o.name}) COMPREPLY=($(compgen -W ${
      sq(v.words.join(" "))
    } -- "$cur")); return ;;`;
  });
  const perCommand = COMMANDS.map((c) =>
    `    ${c}) opts=${sq(offered(c).map((o) => `--${o.name}`).concat("--help").join(" "))} ;;`
  );
  return `# bash completion for ${NAME}; generated by '${NAME} completion bash'.
# Load it with: source <(${NAME} completion bash)
_singleton_run() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]}
  local cmd=\${COMP_WORDS[1]} i opts
  if ((COMP_CWORD == 1)); then
    COMPREPLY=($(compgen -W ${
    sq([...COMMANDS, "help", "completion", "--help", "--version"].join(" "))
  } -- "$cur"))
    return
  fi
  case $cmd in
    help) ((COMP_CWORD == 2)) && COMPREPLY=($(compgen -W ${
    sq(COMMANDS.join(" "))
  } -- "$cur")); return ;;
    completion) ((COMP_CWORD == 2)) && COMPREPLY=($(compgen -W ${
    sq(SHELLS.join(" "))
  } -- "$cur")); return ;;
  esac
  for ((i = 2; i < COMP_CWORD; i++)); do
    if [[ \${COMP_WORDS[i]} == -- ]]; then
      # COMMAND and its arguments.
      if ((i + 1 == COMP_CWORD)); then COMPREPLY=($(compgen -c -- "$cur"))
      else compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); fi
      return
    fi
  done
  case $prev in
${
    [
      ...branch(
        "file",
        'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return ;;',
      ),
      ...branch(
        "directory",
        'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")); return ;;',
      ),
      ...branch("user", 'COMPREPLY=($(compgen -u -- "$cur")); return ;;'),
      ...words,
      ...branch("free", "return ;;"),
    ].join("\n")
  }
  esac
  case $cmd in
${perCommand.join("\n")}
    *) return ;;
  esac
  if [[ $cur == -* || $cmd != signal ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W ${sq(SIGNAL_NAMES.join(" "))} -- "$cur"))
  fi
}
complete -F _singleton_run ${NAME}
`;
}

/** zsh's _arguments quoting: brackets and colons in a description are escaped. */
function zshAbout(text: string): string {
  return text.replace(/([[\]:\\])/g, "\\$1");
}

function zsh(): string {
  const action = (v: ValueKind): string =>
    v.kind === "file"
      ? "_files"
      : v.kind === "directory"
      ? "_files -/"
      : v.kind === "user"
      ? "_users"
      : v.kind === "words"
      ? `(${v.words.join(" ")})`
      : " ";
  const spec = (o: Offered) =>
    sq(
      `${o.repeatable ? "*" : ""}--${o.name}[${zshAbout(o.about)}]` +
        (o.takesValue ? `:${o.name}:${action(o.value)}` : ""),
    );
  const perCommand = COMMANDS.map((c) => {
    const rest = LAUNCHERS.includes(c)
      ? ` ${sq("--[COMMAND follows]")}`
      : c === "signal"
      ? ` ${sq(`1:signal:(${SIGNAL_NAMES.join(" ")})`)}`
      : "";
    return `    (${c}) _arguments -S : ${offered(c).map(spec).join(" ")} ${
      sq("--help[show the help]")
    }${rest} ;;`;
  });
  const described = COMMANDS.map((c) => sq(`${c}:${SUMMARY[c].replace(/:/g, "\\:")}`));
  return `#compdef ${NAME}
# zsh completion for ${NAME}; generated by '${NAME} completion zsh'.
# Load it with: source <(${NAME} completion zsh), after compinit.
_singleton_run() {
  local -a subcommands
  subcommands=(${
    described.join(" ")
  } 'help:show a command'"'"'s options' 'completion:print a completion script')
  if (( CURRENT == 2 )); then
    _describe -t commands command subcommands
    _arguments '--help[show the help]' '--version[show the version]'
    return
  fi
  local cmd=$words[2] dashdash=\${words[(i)--]}
  if (( dashdash < CURRENT )); then
    # COMMAND and its arguments, completed as a command line of their own.
    shift $dashdash words
    (( CURRENT -= dashdash ))
    _normal
    return
  fi
  shift words
  (( CURRENT-- ))
  case $cmd in
    (help) _arguments ${sq(`1:command:(${COMMANDS.join(" ")})`)} ;;
    (completion) _arguments ${sq(`1:shell:(${SHELLS.join(" ")})`)} ;;
${perCommand.join("\n")}
  esac
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _singleton_run "$@"
else
  compdef _singleton_run ${NAME}
fi
`;
}

function fish(): string {
  const lines = [
    `# fish completion for ${NAME}; generated by '${NAME} completion fish'.`,
    `# Load it with: ${NAME} completion fish | source`,
    `complete -c ${NAME} -e`,
    `function __singleton_run_after_dashdash`,
    `    contains -- -- (commandline -opc)`,
    `end`,
    `complete -c ${NAME} -f`,
    `complete -c ${NAME} -n __fish_use_subcommand -l help -d 'show the help'`,
    `complete -c ${NAME} -n __fish_use_subcommand -l version -d 'show the version'`,
  ];
  for (const c of COMMANDS) {
    lines.push(`complete -c ${NAME} -n __fish_use_subcommand -a ${c} -d ${fq(SUMMARY[c])}`);
  }
  lines.push(
    `complete -c ${NAME} -n __fish_use_subcommand -a help -d ${fq("show a command's options")}`,
    `complete -c ${NAME} -n __fish_use_subcommand -a completion -d 'print a completion script'`,
    `complete -c ${NAME} -n '__fish_seen_subcommand_from help' -a ${fq(COMMANDS.join(" "))}`,
    `complete -c ${NAME} -n '__fish_seen_subcommand_from completion' -a ${fq(SHELLS.join(" "))}`,
  );
  const value = (v: ValueKind): string =>
    v.kind === "file"
      ? " -r -F"
      : v.kind === "directory"
      ? ` -x -a '(__fish_complete_directories)'`
      : v.kind === "user"
      ? ` -x -a '(__fish_complete_users)'`
      : v.kind === "words"
      ? ` -x -a ${fq(v.words.join(" "))}`
      : " -x";
  for (const c of COMMANDS) {
    const when = `'__fish_seen_subcommand_from ${c}; and not __singleton_run_after_dashdash'`;
    for (const o of offered(c)) {
      lines.push(
        `complete -c ${NAME} -n ${when} -l ${o.name}${o.takesValue ? value(o.value) : ""} -d ${
          fq(o.about)
        }`,
      );
    }
    lines.push(`complete -c ${NAME} -n ${when} -l help -d 'show the help'`);
    if (c === "signal") {
      lines.push(`complete -c ${NAME} -n ${when} -a ${fq(SIGNAL_NAMES.join(" "))}`);
    }
  }
  lines.push(
    `complete -c ${NAME} -n '__fish_seen_subcommand_from ${
      LAUNCHERS.join(" ")
    }; and __singleton_run_after_dashdash' -F -a '(__fish_complete_command)'`,
  );
  return lines.join("\n") + "\n";
}
