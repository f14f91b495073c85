/**
 * The version `--version` prints: the package's own, read from deno.json,
 * so a release changes it in one place.
 *
 * @module
 */

import meta from "../../deno.json" with { type: "json" };

/** The version `--version` prints. */
export const VERSION: string = meta.version;
