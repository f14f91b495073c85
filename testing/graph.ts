/**
 * What a command loads before it does anything: the modules reached from
 * the entry by static imports, as `deno info` sees the graph. A dynamic
 * import is followed only where the test says the command goes, so a test
 * can check that a command path leaves heavy or optional code unloaded.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;

interface Dependency {
  readonly code?: { readonly specifier: string };
  readonly isDynamic?: boolean;
}

/**
 * The repository's modules loaded statically from `cli.ts` and from each
 * of `entries` (paths from the repository's root).
 *
 * @param entries modules the command reaches (its handler, loaded on demand)
 * @returns the loaded modules' paths from the repository's root (other URLs as they are)
 * @throws {Error} when an entry is not in cli.ts's graph (a typo would check nothing)
 */
export async function staticallyLoaded(...entries: string[]): Promise<string[]> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", `${ROOT}cli.ts`],
    stdout: "piped",
  }).output();
  const graph = JSON.parse(new TextDecoder().decode(info.stdout)) as {
    modules: { specifier: string; dependencies?: Dependency[] }[];
    redirects: Record<string, string>;
  };
  const byUrl = new Map(graph.modules.map((m) => [m.specifier, m]));
  const loaded = new Set<string>();
  const visit = (url: string) => {
    url = graph.redirects[url] ?? url;
    if (loaded.has(url)) return;
    loaded.add(url);
    for (const d of byUrl.get(url)?.dependencies ?? []) {
      if (d.code && !d.isDynamic) visit(d.code.specifier);
    }
  };
  for (const entry of ["cli.ts", ...entries]) {
    const url = `file://${ROOT}${entry}`;
    if (!byUrl.has(url)) throw new Error(`${entry} is not reached from cli.ts`);
    visit(url);
  }
  return [...loaded].map((u) => u.replace(`file://${ROOT}`, ""));
}
