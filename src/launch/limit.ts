/**
 * The time limit of a job (`run --max-runtime`): what stays beside the job
 * to stop it once it has run too long, and to exit 124 then (timeout(1)'s
 * code), or with the job's own status otherwise.
 *
 * Whatever stays must be the job's parent (only a parent learns how a child
 * ended) and must keep `run`'s pid (it is what cron or a service manager
 * waits for), so `run` execs into it. A Deno process would cost over 15 MiB of PSS; a
 * POSIX shell about 0.6 MiB (bench/jobs.ts measures both). So the
 * enforcer is `/bin/sh` running the script below, with one `sleep` at a time
 * as its clock (`wait`'s own notices, such as "Terminated", go to /dev/null:
 * the job's status is the answer): it starts the job stage (`job.ts`) in the background, which
 * becomes the job with the pid file naming it and the lock on its own
 * descriptor, and waits for it. The shell never holds the lock: the stage
 * gets it through a socket (SCM_RIGHTS), so the lock lives exactly as long
 * as the job (and whatever inherits its descriptor), and an enforcer that is
 * killed leaves the job running with its lock, without the limit.
 *
 * A shell acts on processes by pid, so each pid is checked first to be its
 * own child that has not ended (field 4 of `/proc/PID/stat` is the parent,
 * and a child's pid is not handed out again before its parent reaps it).
 *
 * @module
 */

import { signalName } from "../ffi/signals.ts";
import { formatDuration } from "./duration.ts";
import type { Schedule } from "./schedule.ts";
import type { LaunchSpec } from "./spec.ts";

/** The shell that enforces the limit. */
export const ENFORCER_SHELL = "/bin/sh";

/**
 * The enforcer, in POSIX sh (dash, bash, busybox ash). Its arguments: the
 * limit in centiseconds; 1 to signal the job's process group; the stop
 * schedule as words (a signal number, `+CS` for a wait in centiseconds,
 * `forever` before what repeats); the message's two halves; then the
 * stage's argv. The clock starts when the stage says the job starts
 * (SIGURG, just before its exec: the stage's own start-up is not the job's
 * run time); it is `/proc/uptime` (which does not jump with the wall clock),
 * read again after each `sleep` of at most 5 s: a timer whose enforcer is
 * gone ends within that.
 */
export const ENFORCER_SCRIPT = `limit=$1 group=$2 schedule=$3 who=$4 what=$5
shift 5
started= timer= woke=
trap 'started=1 woke=151' URG
exec 8<&0
"$@" 0<&8 8<&- &
job=$!
exec 8<&-
target=$job
[ "$group" = 1 ] && target=-$job
child() {
  _p=$2
  { read -r _s </proc/"$1"/stat; } 2>/dev/null || return 1
  set -- \${_s##*) }
  [ "$1" != Z ] && [ "$2" = "$_p" ]
}
keep_time() {
  (
    fired=0
    trap 'child "$!" "$me" && kill "$!" 2>/dev/null; exit "$fired"' TERM
    { read -r me _ </proc/self/stat; } 2>/dev/null
    now() { read -r now _ </proc/uptime; now=$((\${now%.*} * 100 + 1\${now#*.} - 100)); }
    until_() {
      while now; [ "$now" -lt "$1" ]; do
        left=$(($1 - now))
        [ "$left" -gt 500 ] && left=500
        sleep "$((left / 100)).$((left / 10 % 10))$((left % 10))" &
        wait "$!"
        child "$me" "$$" || exit 0
      done
    }
    steps() {
      for w; do
        case $w in
          +*) now; until_ $((now + \${w#+})) ;;
          *) child "$job" "$$" || exit 124; kill -s "$w" -- "$target" 2>/dev/null ;;
        esac
      done
    }
    now; until_ $((now + limit))
    fired=124
    case " $schedule " in
      *" forever "*) steps \${schedule%%forever*}; again=\${schedule#*forever} ;;
      *) steps $schedule; again= ;;
    esac
    while [ -n "$again" ]; do steps $again; done
    exit 124
  ) </dev/null >/dev/null 2>&1 &
  timer=$!
}
forward() { woke=$1; child "$job" "$$" && kill -s "$2" -- "$target" 2>/dev/null; }
trap 'forward 143 15' TERM
trap 'forward 129 1' HUP
trap 'forward 138 10' USR1
trap 'forward 140 12' USR2
if [ "$group" = 1 ]; then
  trap 'forward 130 2' INT
  trap 'forward 131 3' QUIT
else
  trap '' INT QUIT
fi
prev=
while :; do
  [ -n "$started" ] && [ -z "$timer" ] && keep_time
  woke=
  wait "$job" 2>/dev/null; status=$?
  { [ -n "$woke" ] && [ "$status" = "$woke" ]; } || break
  prev=$status
  [ "$woke" = 151 ] && prev=
done
[ "$status" = 127 ] && [ -n "$prev" ] && status=$prev
if [ -n "$timer" ]; then
  child "$timer" "$$" && kill -s 15 "$timer" 2>/dev/null
  wait "$timer" 2>/dev/null
  if [ $? = 124 ]; then
    printf '%s (pid %s) %s\\n' "$who" "$job" "$what" >&2
    exit 124
  fi
fi
exit "$status"
`;

/** Centiseconds, rounded up: the enforcer's unit. */
function centiseconds(ms: number): number {
  return Math.ceil(ms / 10);
}

/**
 * A stop schedule as the enforcer's words: a signal number, `+CS` for a
 * wait, `forever` before what repeats (at the very end: wait without end).
 *
 * @param schedule the schedule
 * @returns the words, space-separated
 */
export function scheduleWords(schedule: Schedule): string {
  const words: string[] = [];
  schedule.steps.forEach((step, i) => {
    if (i === schedule.repeatAt) words.push("forever");
    words.push("signal" in step ? String(step.signal) : `+${centiseconds(step.waitMs)}`);
  });
  if (schedule.repeatAt === schedule.steps.length) words.push("forever");
  return words.join(" ");
}

/**
 * The argv that runs a job under its time limit: the shell, the enforcer,
 * its arguments, then the job stage's argv.
 *
 * @param spec the job (its limit, stop schedule, process group and name)
 * @param stage the argv of the stage that becomes the job
 * @returns the argv; `[0]` is {@link ENFORCER_SHELL}
 */
export function enforcerArgv(spec: LaunchSpec, stage: readonly string[]): string[] {
  const limitMs = spec.maxRuntimeMs!;
  const first = spec.stopSchedule.steps[0];
  const signal = first && "signal" in first ? signalName(first.signal) : "its stop schedule";
  return [
    ENFORCER_SHELL,
    "-c",
    ENFORCER_SCRIPT,
    "singleton-run",
    String(centiseconds(limitMs)),
    spec.killGroup ? "1" : "0",
    scheduleWords(spec.stopSchedule),
    `singleton-run: ${spec.name}`,
    `ran longer than --max-runtime ${formatDuration(limitMs)}: stopped (${signal}${
      spec.killGroup ? " to its process group" : ""
    }), exit 124`,
    ...stage,
  ];
}
