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
import {
  daemonize,
  getSyslogSink,
  LOG_DAEMON,
  onReload,
  onShutdown,
  PidFile,
  watchResources,
} from "../mod.ts";
// Signals go through a pidfd, so a recycled pid is never signalled (and no --allow-run).
import { close, pidfdOpen, pidfdSendSignal } from "../src/ffi/mod.ts";

function signal(pid: number, sig: number): boolean {
  const pidfd = pidfdOpen(pid);
  if (pidfd === undefined) return false;
  try {
    return pidfdSendSignal(pidfd, sig);
  } finally {
    close(pidfd);
  }
}

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
  const found = await PidFile.probe(pidFile);
  if (command === "status") {
    console.log(found.state === "running" ? `running (pid ${found.pid})` : found.state);
    Deno.exit(found.state === "running" ? 0 : 3);
  }
  if (found.state !== "running" || found.pid === undefined) {
    console.error(`not running (pid file "${pidFile}")`);
    Deno.exit(command === "stop" ? 0 : 1);
  }
  if (command === "reload") {
    Deno.exit(signal(found.pid, 1) ? 0 : 1);
  }
  if (command === "stop") {
    signal(found.pid, 15);
    const gone = await PidFile.waitForRelease(pidFile, { timeout: 10_000 });
    if (!gone) console.error(`pid ${found.pid} still holds "${pidFile}" after 10 s`);
    Deno.exit(gone ? 0 : 1);
  }
  console.error(`unknown command "${command}": use start, stop, reload or status`);
  Deno.exit(2);
}

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be a port number, got "${values.port}"`);
  Deno.exit(2);
}

// Everything before this line runs in the foreground only; from here on, in the daemon.
const daemon = values.foreground ? undefined : await daemonize({
  pidFile,
  ...(values.output === undefined ? {} : { output: absolute(values.output) }),
});

await configure({
  sinks: {
    out: values.foreground
      ? getConsoleSink()
      : getSyslogSink({ ident: "example-service", facility: LOG_DAEMON }),
  },
  loggers: [
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["out"] },
    { category: "example", lowestLevel: "info", sinks: ["out"] },
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
