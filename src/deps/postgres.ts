/**
 * The PostgreSQL client, at an exact version (why exact and why a full
 * `npm:` specifier: see `logtape.ts` beside this file). `deno task package`
 * reads {@link POSTGRES_CLIENT} to carry the same client in the single file.
 *
 * @module
 */

import type Postgres from "npm:postgres@3.4.9";

/**
 * The specifier the client is loaded by, on first use: a value, not a
 * literal import, so the bundle does not inline the client (inlined, its
 * Node built-ins, net, tls, crypto and more, would load at every start, lock
 * or not). The same version as the type import above.
 */
export const POSTGRES_CLIENT = "npm:postgres@3.4.9";

/** The client's default export: `postgres(url, options)`. */
export type PostgresClient = typeof Postgres;
