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
import { EXIT, main as command, VERSION } from "./src/cli/main.ts";

export { EXIT, VERSION };

/**
 * Run the command with these arguments.
 *
 * @param args the arguments, without the program name
 * @returns the exit code (`run` does not return when it execs)
 */
export async function main(args: readonly string[]): Promise<number> {
  if (args[0] === INTERNAL_FLAG) {
    // An internal stage: this program started again by itself (see src/launch/internal.ts).
    const role: string | undefined = args[1];
    if (role === "privilege") {
      const { runStage } = await import("./src/launch/privilege.ts");
      return runStage(args.slice(2));
    }
    if (role === "job") {
      const { runJobStage } = await import("./src/launch/job.ts");
      return runJobStage(args.slice(2));
    }
    if (role === "supervisor" || role === "keeper") {
      const { superviseStage } = await import("./src/supervisor/stage.ts");
      return superviseStage(args.slice(2));
    }
    try {
      Deno.stderr.writeSync(
        new TextEncoder().encode(`singleton-run: unknown internal stage ${JSON.stringify(role)}\n`),
      );
    } catch {
      // stderr closed: nothing to do.
    }
    return 2;
  }
  return await command(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
