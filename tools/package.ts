/**
 * `deno task package`: `dist/singleton-run`, the command as one file for a
 * Linux server that has no Deno. It is `package_stub.sh` followed by a tar.gz
 * of four files:
 *
 * - `deno`: the pinned Deno runtime, from npm (the platform package that the
 *   `deno` npm package installs), since `deno compile`'s own runtime comes
 *   only from Deno's download host;
 * - `singleton-run.js`: the command, bundled (`deno task bundle`);
 * - `postgres.js`: the PostgreSQL client, bundled, so a `postgres://` lock
 *   loads it from the file, not from npm at run time (as any user, offline);
 * - `import_map.json`: maps the client's `npm:` specifier to that file.
 *
 * The stub runs them with the permissions in `permissions.ts`. It needs `sh`,
 * `tar`, `gzip`, `sha256sum`, `stat` and glibc on the server. This build needs
 * `npm` (and the registry, or npm's cache), `tar` and `gzip`.
 *
 * @module
 */

import { POSTGRES_CLIENT } from "../src/deps/postgres.ts";
import { PERMISSIONS } from "./permissions.ts";

/** The Deno the package carries: the one this repository is built and tested with. */
const DENO_VERSION = "2.9.6";

const ROOT = new URL("../", import.meta.url).pathname;
const OUT = `${ROOT}dist/singleton-run`;
const FILES = ["deno", "singleton-run.js", "postgres.js", "import_map.json"] as const;

/** The npm platform package holding Deno's binary, and `uname -m` there. */
function platform(): { npm: string; arch: string } {
  if (Deno.build.os !== "linux") throw new Error(`no package for ${Deno.build.os}: Linux only`);
  if (Deno.build.arch === "x86_64") return { npm: "@deno/linux-x64-glibc", arch: "x86_64" };
  return { npm: "@deno/linux-arm64-glibc", arch: "aarch64" };
}

/** Run a program; its stdout, or an error naming it and its stderr. */
async function run(program: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(cwd === undefined ? {} : { cwd }),
  }).output().catch((err) => {
    throw new Error(`cannot run ${program}: ${err.message}`);
  });
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`${program} ${args.join(" ")} failed: ${text.decode(out.stderr).trim()}`);
  }
  return text.decode(out.stdout);
}

/** The Deno binary from npm, as `work/deno`. */
async function fetchDeno(work: string, npmPackage: string): Promise<void> {
  const packed = JSON.parse(
    await run("npm", [
      "pack",
      "--json",
      `${npmPackage}@${DENO_VERSION}`,
      "--pack-destination",
      work,
    ]),
  ) as { filename: string }[];
  const tarball = `${work}/${packed[0]!.filename}`;
  await run("tar", ["-xzf", tarball, "-C", work, "package/deno"]);
  await Deno.rename(`${work}/package/deno`, `${work}/deno`);
  await Deno.remove(tarball);
  const version = await run(`${work}/deno`, ["--version"]);
  if (!version.startsWith(`deno ${DENO_VERSION} `)) {
    throw new Error(`${npmPackage}@${DENO_VERSION} holds ${version.split("\n")[0]}`);
  }
}

/** The PostgreSQL client bundled as `work/postgres.js`, and the map that points its specifier there. */
async function bundleClient(work: string): Promise<void> {
  const entry = `${work}/client.ts`;
  await Deno.writeTextFile(entry, `export { default } from "${POSTGRES_CLIENT}";\n`);
  await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--minify",
    "--platform",
    "deno",
    "-o",
    `${work}/postgres.js`,
    entry,
  ], work);
  await Deno.remove(entry);
  const map = { imports: { [POSTGRES_CLIENT]: "./postgres.js" } };
  await Deno.writeTextFile(`${work}/import_map.json`, JSON.stringify(map) + "\n");
}

/** SHA-256 in hex, as sha256sum prints it. */
async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The hashes the stub checks the unpacked files against (sha256sum's format), and their hash. */
async function manifest(work: string): Promise<{ text: string; hash: string }> {
  const lines = FILES.map(async (f) =>
    `${await sha256(await Deno.readFile(`${work}/${f}`))}  ${f}`
  );
  const text = (await Promise.all(lines)).join("\n");
  return { text, hash: await sha256(new TextEncoder().encode(text)) };
}

/** `work/payload.tar.gz`: the same bytes for the same files (owner, times, order; no gzip name or time). */
async function payload(work: string): Promise<Uint8Array> {
  await run("sh", [
    "-c",
    'tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf - "$@" | gzip -6n > payload.tar.gz',
    "sh",
    ...FILES,
  ], work);
  return await Deno.readFile(`${work}/payload.tar.gz`);
}

/** The stub with its values filled in; the payload starts on the line after its last. */
async function stub(values: Record<string, string>): Promise<Uint8Array> {
  let text = await Deno.readTextFile(`${ROOT}tools/package_stub.sh`);
  for (const [key, value] of Object.entries(values)) {
    text = text.replaceAll(`@${key}@`, () => value);
  }
  text = text.replace("@SKIP@", String(text.split("\n").length));
  return new TextEncoder().encode(text);
}

/** Write dist/singleton-run. */
async function main(): Promise<void> {
  const { npm, arch } = platform();
  const work = await Deno.makeTempDir({ prefix: "singleton-run-package-" });
  try {
    await fetchDeno(work, npm);
    await bundleClient(work);
    await Deno.copyFile(`${ROOT}dist/singleton-run.js`, `${work}/singleton-run.js`);
    const { text, hash } = await manifest(work);
    const head = await stub({
      HASH: hash,
      NAME: hash.slice(0, 16),
      FILES: FILES.join(" "),
      MANIFEST: text,
      ARCH: arch,
      PERMISSIONS: PERMISSIONS.join(" "),
    });
    const tail = await payload(work);
    const file = new Uint8Array(head.length + tail.length);
    file.set(head);
    file.set(tail, head.length);
    await Deno.writeFile(`${OUT}.new`, file);
    await Deno.chmod(`${OUT}.new`, 0o755);
    await Deno.rename(`${OUT}.new`, OUT);
    const size = `${(file.length / 1e6).toFixed(1)} MB`;
    console.log(`${OUT}: ${size}, Deno ${DENO_VERSION}, cache entry ${hash.slice(0, 16)}`);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`deno task package: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
