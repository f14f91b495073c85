/**
 * The `singleton-run` command: parses arguments, calls the control layer,
 * prints, and exits with the documented code. No system calls of its own.
 *
 * ```
 * singleton-run start   --pidfile PATH [options] -- COMMAND [ARG...]
 * singleton-run run     --pidfile PATH [options] -- COMMAND [ARG...]
 * singleton-run stop    --pidfile PATH [--retry SCHEDULE] [--oknodo]
 * singleton-run status  --pidfile PATH [--json]
 * singleton-run restart --pidfile PATH [options] -- COMMAND [ARG...]
 * singleton-run reload  --pidfile PATH [--force]
 * singleton-run signal  --pidfile PATH SIGNAL
 * singleton-run reopen  --pidfile PATH
 * singleton-run --help | --version | help COMMAND | completion bash|zsh|fish
 * ```
 *
 * Exit codes: 0 done; 1 failed; 2 usage error; 3 nothing to do (already
 * running, or not running). `status` uses the LSB codes 0, 1, 3, 4.
 *
 * This entry first checks whether it was started again by itself as one of
 * its internal stages (the --user privilege drop, the supervisor), which
 * must load nothing of the command line's code.
 *
 * @module
 */

import { INTERNAL_FLAG } from "./src/launch/internal.ts";
import { execute, EXIT, type Outcome, VERSION } from "./src/cli/main.ts";

export { EXIT, VERSION };

/**
 * Run the command with these arguments.
 *
 * @param args the arguments, without the program name
 * @returns the exit code (`run` does not return when it execs)
 */
export async function main(args: readonly string[]): Promise<number> {
  return (await outcome(args)).code;
}

async function outcome(args: readonly string[]): Promise<Outcome> {
  if (args[0] !== INTERNAL_FLAG) return await execute(args);
  // An internal stage: this program started again by itself (see src/launch/internal.ts).
  const role: string | undefined = args[1];
  if (role === "privilege") {
    const { runStage } = await import("./src/launch/privilege.ts");
    return { code: await runStage(args.slice(2)), awaited: true };
  }
  if (role === "job") {
    const { runJobStage } = await import("./src/launch/job.ts");
    return { code: await runJobStage(args.slice(2)), awaited: true };
  }
  if (role === "supervisor" || role === "keeper") {
    const { superviseStage } = await import("./src/supervisor/stage.ts");
    return { code: await superviseStage(args.slice(2)), awaited: true };
  }
  try {
    Deno.stderr.writeSync(
      new TextEncoder().encode(`singleton-run: unknown internal stage ${JSON.stringify(role)}\n`),
    );
  } catch {
    // stderr closed: nothing to do.
  }
  return { code: 2, awaited: false };
}

if (import.meta.main) {
  const { code, awaited } = await outcome(Deno.args);
  // A command that awaited something may have left work pending (a timer, a
  // wait on a child): exit at once. One that ran synchronously to its end
  // (status, list, help) ends as a script ends, and only then does Deno
  // store this module's compiled code for the next run: exiting at once,
  // every status compiled it again, about 11 ms.
  if (awaited) Deno.exit(code);
  Deno.exitCode = code;
}
