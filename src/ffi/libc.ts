/**
 * Loads libc once, on first use, so that `--help` needs no `--allow-ffi`, and
 * turns a failed call into a {@link SystemError}.
 *
 * @module
 */

import { currentPlatform, type Platform } from "./platform.ts";
import { SystemError, type SystemErrorOptions } from "./errors.ts";
import { type Libc, symbols } from "./symbols.ts";

let loaded: { lib: Libc; platform: Platform } | undefined;

/**
 * The libc symbols, loading the library on the first call.
 *
 * @returns the symbol table
 * @throws {Error} when the platform is unsupported or the library cannot load
 */
export function libc(): Libc {
  return load().lib;
}

/**
 * The platform table the library was loaded for.
 *
 * @returns the table
 */
export function platform(): Platform {
  return load().platform;
}

function load(): { lib: Libc; platform: Platform } {
  if (loaded) return loaded;
  const plat = currentPlatform();
  try {
    loaded = { lib: lazySymbols(plat.libc), platform: plat };
  } catch (cause) {
    const hint = cause instanceof Deno.errors.NotCapable ? " (run with --allow-ffi)" : "";
    throw new Error(`cannot load ${plat.libc} on ${plat.name}${hint}`, { cause });
  }
  return loaded;
}

/**
 * The symbol table, each symbol bound on its first use: Deno.dlopen costs
 * about 0.14 ms per symbol (12 ms for the whole table), and a `status` uses
 * a dozen of them. The library itself is opened once by the dynamic loader.
 */
function lazySymbols(path: string): Libc {
  // Fail now, not at the first call, when the library cannot be opened at all.
  Deno.dlopen(path, { getpid: symbols.getpid }).close();
  const bound: Record<string, unknown> = {};
  return new Proxy(bound, {
    get(target, name) {
      if (typeof name !== "string" || !(name in symbols)) return undefined;
      if (!(name in target)) {
        const one = {
          [name]: symbols[name as keyof typeof symbols],
        } as Deno.ForeignLibraryInterface;
        target[name] = Deno.dlopen(path, one).symbols[name];
      }
      return target[name];
    },
  }) as unknown as Libc;
}

/**
 * The current thread's errno. Read it right after the failing synchronous
 * call: a `nonblocking: true` call ran on another thread.
 *
 * @returns errno
 */
export function errno(): number {
  const where = libc().__errno_location();
  return new Deno.UnsafePointerView(where!).getInt32();
}

/**
 * Throw a {@link SystemError} when a call returned -1 (or less than zero).
 *
 * @param result the call's return value
 * @param syscall its name, for the message
 * @param options the path it was made on
 * @returns the result, when not an error
 * @throws {SystemError} with the errno read now
 */
export function check(result: number, syscall: string, options?: SystemErrorOptions): number {
  if (result < 0) throw new SystemError(syscall, errno(), options);
  return result;
}

/**
 * Throw a {@link SystemError} when a posix_spawn-family call, which returns the
 * error number instead of setting errno, did not return 0.
 *
 * @param result the call's return value
 * @param syscall its name
 * @param options the path it was made on
 * @throws {SystemError} carrying the returned number
 */
export function checkReturned(result: number, syscall: string, options?: SystemErrorOptions): void {
  if (result !== 0) throw new SystemError(syscall, result, options);
}
