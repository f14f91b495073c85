/**
 * A small HTTP service that is a well-behaved daemon: one instance (a locked
 * PID file), readiness, graceful shutdown within the SIGTERM window,
 * configuration reloaded on SIGHUP, logs in the system log, a leak watch.
 *
 *   deno task example                 start it (the command returns once it serves)
 *   deno task example reload          SIGHUP: re-read the configuration
 *   deno task example stop            SIGTERM, and wait until it has let go of the lock
 *   deno task example status
 *
 * Options: --port N (8080), --pid-file PATH, --config PATH, --output PATH,
 * --foreground (no daemon: logs to the console, Ctrl-C to stop).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { configure, getConsoleSink, getLogger } from "@logtape/logtape";
import { daemonize, getSyslogSink, onReload, onShutdown, watchResources } from "../mod.ts";
// The package's `./control` export: signals go through a pidfd, so a recycled
// pid is never signalled (and no --allow-run is needed).
import { NotRunningError, reload, statusSync, stop } from "../src/control/mod.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    port: { type: "string", default: "8080" },
    "pid-file": {
      type: "string",
      default: `${Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp"}/example-service.pid`,
    },
    config: { type: "string", default: new URL("./config.json", import.meta.url).pathname },
    output: { type: "string" },
    foreground: { type: "boolean", default: false },
  },
});
const command = positionals[0] ?? "start";
const pidFile = values["pid-file"];
const absolute = (p: string) => (p.startsWith("/") ? p : `${Deno.cwd()}/${p}`);
const configPath = absolute(values.config); // the daemon runs in /

if (command !== "start") {
  Deno.exit(await control(command));
}

/** status, reload or stop: the exit code, as an init script expects it. */
async function control(command: string): Promise<number> {
  try {
    switch (command) {
      case "status": {
        const found = statusSync(pidFile);
        console.log(found.state === "running" ? `running (pid ${found.pid})` : found.state);
        return found.code;
      }
      case "reload":
        await reload({ pidfile: pidFile });
        return 0;
      case "stop":
        await stop({ pidfile: pidFile });
        return 0;
      default:
        console.error(`unknown command "${command}": use start, stop, reload or status`);
        return 2;
    }
  } catch (err) {
    if (!(err instanceof NotRunningError)) throw err;
    console.error(`not running (pid file "${pidFile}")`);
    return command === "stop" ? 0 : 1;
  }
}

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be a port number, got "${values.port}"`);
  Deno.exit(2);
}

// Everything before this line runs in the foreground only; from here on, in the daemon.
const daemon = values.foreground ? undefined : await daemonize({
  pidfile: pidFile,
  ...(values.output === undefined ? {} : { output: absolute(values.output) }),
});

await configure({
  sinks: {
    out: values.foreground
      ? getConsoleSink()
      : getSyslogSink({ ident: "example-service", facility: "daemon" }),
  },
  loggers: [
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["out"] },
    { category: "example", lowestLevel: "info", sinks: ["out"] },
    // The library's own lines (a shutdown starting, a cleanup that failed).
    { category: "singleton-run", lowestLevel: "info", sinks: ["out"] },
  ],
});
const logger = getLogger("example");

interface Config {
  greeting: string;
}
async function readConfig(): Promise<Config> {
  const parsed = JSON.parse(await Deno.readTextFile(configPath));
  if (typeof parsed?.greeting !== "string") throw new Error(`${configPath}: "greeting" missing`);
  return parsed;
}
let config = await readConfig(); // a broken configuration fails the start, with its message

const server = Deno.serve({
  port,
  hostname: "127.0.0.1",
  onListen: ({ port }) => logger.info("listening on 127.0.0.1:{port}", { port }),
}, () => new Response(`${config.greeting}\n`));

onShutdown(async () => {
  logger.info("stopping: draining connections");
  await server.shutdown();
  logger.info("stopped");
}, { timeout: 4000 });

onReload(async () => {
  try {
    config = await readConfig();
    logger.info("configuration reloaded: {greeting}", { greeting: config.greeting });
  } catch (err) {
    logger.error("reload failed, keeping the old configuration: {err}", { err: String(err) });
  }
});

watchResources({
  interval: 30_000,
  maxRssKiB: 256 * 1024,
  maxFds: 512,
  onWarn: (w) => logger.warning(w.message),
});

daemon?.ready(`serving on port ${port}`);
