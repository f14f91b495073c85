/**
 * LogTape, at the exact version the library logs through. The library's own
 * modules import it from here by a full `npm:` specifier, never by a bare
 * name: a bare name resolves only through this repository's import map, so
 * the module would not load when imported by path or URL from another
 * project. An exact version resolves from Deno's cache without asking the
 * registry, so such an import works offline once cached.
 *
 * `deno.json` maps `@logtape/logtape` to this file, so the examples and tests,
 * which configure LogTape as an application would, load this same version.
 *
 * @module
 */

export * from "npm:@logtape/logtape@2.4.2";
