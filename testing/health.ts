/**
 * What the liveness tests and the bench share: a free TCP port, and the
 * fixture HTTP server (tests/cli/fixtures/health_server.py), which answers
 * every GET with its pid.
 *
 * @module
 */

import { ROOT } from "./process.ts";

/** The fixture server: `python3 SERVER --port N [--listen-after S] [--term-file F]`. */
export const HEALTH_SERVER = `${ROOT}/tests/cli/fixtures/health_server.py`;

/** Python without pyenv's shim (a shell script that costs a second to start here). */
export const PYTHON = "/usr/bin/python3";

/**
 * A TCP port on 127.0.0.1 that nothing listens on now.
 *
 * @returns the port
 */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * GET the fixture server on a port.
 *
 * @param port the port
 * @param timeoutMs the longest wait for an answer
 * @returns the pid that answered, or undefined when none did
 */
export async function answeringPid(port: number, timeoutMs = 2000): Promise<number | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    return res.ok ? Number(await res.text()) : undefined;
  } catch {
    return undefined;
  }
}
