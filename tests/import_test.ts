/**
 * The module, `./control` and the command load when imported by a file URL
 * or an http URL from a project that has no import map of ours (a temporary
 * directory outside the repository, with no deno.json), with a Deno cache of
 * their own, and again offline once cached (`--cached-only`, the http server
 * gone).
 */

import assert from "node:assert/strict";
import { freePort } from "../testing/cluster.ts";
import { ROOT, Sandbox, sr, STARTS_FINE, type Variant } from "./cli/harness.ts";
import { PERMISSIONS } from "../tools/permissions.ts";

/** A project of a user's: a temporary directory with no deno.json, and its own Deno cache. */
async function project(): Promise<{ dir: string; env: Record<string, string> } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "singleton-run-user-project-" });
  assert(!dir.startsWith(ROOT), "outside the repository");
  return {
    dir,
    env: { DENO_DIR: `${dir}/.deno-cache` },
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/**
 * What a user's program does with the package: import the module and the
 * control API (printing what it got), and run the command (start with a
 * supervisor, status, stop; and a status of a PostgreSQL lock, which loads
 * the client package, on a port where nothing listens).
 */
async function useEverything(
  base: string,
  flags: readonly string[],
  user: { dir: string; env: Record<string, string> },
): Promise<void> {
  const script = `${user.dir}/main.ts`;
  await Deno.writeTextFile(
    script,
    `import { daemonize, PidFile } from "${base}mod.ts";\n` +
      `import { start, status } from "${base}src/control/mod.ts";\n` +
      `console.log(typeof daemonize, typeof PidFile, typeof start, typeof status);\n`,
  );
  const imported = await sr(
    { name: "user", cmd: [Deno.execPath(), "run", ...flags, script] },
    [],
    { cwd: user.dir, env: user.env, timeoutMs: 120_000 },
  );
  assert.equal(imported.code, 0, imported.stderr);
  assert.equal(imported.stdout, "function function function function\n");

  const command: Variant = {
    name: "url",
    cmd: [Deno.execPath(), "run", ...flags, `${base}cli.ts`],
  };
  const run = (args: string[]) =>
    sr(command, args, { cwd: user.dir, env: user.env, timeoutMs: 120_000 });
  await using sb = await Sandbox.create();
  const daemon = ["--supervise", "--pidfile", sb.pidfile, "--", "sleep", "600"];
  const started = await run(["start", ...STARTS_FINE, ...daemon]);
  assert.equal(started.code, 0, started.stderr);
  sb.track(Number(started.stdout));
  const running = await run(["status", "--pidfile", sb.pidfile]);
  assert.equal(running.code, 0, running.stderr);
  assert.match(running.stdout, /^running \(pid \d+/);
  const stopped = await run(["stop", "--pidfile", sb.pidfile]);
  assert.equal(stopped.code, 0, stopped.stderr);

  const lock = await run(["status", "--lock", `postgres://u@127.0.0.1:${freePort()}/db?name=x`]);
  assert.equal(lock.code, 4, lock.stderr);
  assert.match(lock.stderr, /cannot reach PostgreSQL/, "the client loaded and tried to connect");
}

/** Every .ts file of the library (what mod.ts, ./control and cli.ts can load), relative to the root. */
function librarySources(): string[] {
  const out = ["mod.ts", "cli.ts"];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(`${ROOT}${dir}`)) {
      if (e.isDirectory) walk(`${dir}/${e.name}`);
      else if (e.name.endsWith(".ts")) out.push(`${dir}/${e.name}`);
    }
  };
  walk("src");
  return out;
}

Deno.test("the library names each npm package once, at an exact version, in src/deps/, and imports nothing by a bare name", () => {
  const versions = new Map<string, Set<string>>();
  for (const file of librarySources()) {
    // Code only: doc comments show imports as a user's project would write them.
    const code = Deno.readTextFileSync(`${ROOT}${file}`).split("\n")
      .filter((line) => !/^\s*(\*|\/\/)/.test(line)).join("\n");
    for (const [, spec] of code.matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)) {
      assert.match(spec!, /^(\.{1,2}\/|node:|npm:)/, `${file} imports "${spec}" by a bare name`);
    }
    for (const [spec, name, version] of code.matchAll(/"(?:npm|jsr):(@?[^@"]+)@([^"]*)"/g)) {
      assert(
        file.startsWith("src/deps/"),
        `${file} names ${spec}: package versions live in src/deps/`,
      );
      assert.match(version!, /^\d+\.\d+\.\d+$/, `${spec} in ${file}: an exact version`);
      versions.set(name!, (versions.get(name!) ?? new Set()).add(version!));
    }
  }
  assert.deepEqual([...versions.keys()].sort(), ["@logtape/logtape", "postgres"]);
  for (const [name, found] of versions) assert.equal(found.size, 1, `${name}: one version`);
});

Deno.test("mod.ts, ./control and cli.ts load by file URL from a project without our import map, and offline once cached", async () => {
  await using user = await project();
  await useEverything(new URL("../", import.meta.url).href, PERMISSIONS, user);
  await useEverything(
    new URL("../", import.meta.url).href,
    [...PERMISSIONS, "--cached-only"],
    user,
  );
});

Deno.test("mod.ts, ./control and cli.ts load by http URL, and from the cache once the server is gone", async () => {
  await using user = await project();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.includes("..")) return new Response("no", { status: 400 });
    try {
      return new Response(await Deno.readFile(`${ROOT}${path.slice(1)}`), {
        // As a web server would: the package's deno.json is imported as JSON (its version).
        headers: {
          "content-type": path.endsWith(".json") ? "application/json" : "application/typescript",
        },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const host = `127.0.0.1:${server.addr.port}`;
  const flags = [...PERMISSIONS, `--allow-import=${host}`];
  try {
    await useEverything(`http://${host}/`, flags, user);
  } finally {
    await server.shutdown();
  }
  await useEverything(`http://${host}/`, [...flags, "--cached-only"], user);
});
