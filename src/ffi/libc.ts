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
 *
 * Each synchronous call that can fail is wrapped so that errno is read the
 * moment it returns a failure (-1, a negative number, or NULL), before any
 * other JavaScript runs: an allocation in between may start a garbage
 * collection, and a first-use dlopen may run, either of which can change
 * errno (seen as an ENOENT from flock under load).
 */
function lazySymbols(path: string): Libc {
  const errnoAt = Deno.dlopen(path, { __errno_location: symbols.__errno_location }).symbols
    .__errno_location();
  // A typed array over this thread's errno: reading it is a plain load, not a
  // function call, so no V8 interrupt (a GC step, which may make system calls)
  // can run between the failing call and the read.
  const errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(errnoAt!, 4));
  const bound: Record<string, unknown> = {};
  return new Proxy(bound, {
    get(target, name) {
      if (typeof name !== "string" || !(name in symbols)) return undefined;
      if (!(name in target)) {
        const def = symbols[name as keyof typeof symbols] as Deno.ForeignFunction;
        const fn = Deno.dlopen(path, { [name]: def } as Deno.ForeignLibraryInterface)
          .symbols[name] as ((...args: unknown[]) => unknown) | null;
        target[name] = fn === null || def.nonblocking || !FAILING_RESULTS.has(String(def.result))
          ? fn
          : (...args: unknown[]) => {
            const r = fn(...args);
            if (typeof r === "object" ? r === null : (r as number | bigint) < 0) {
              lastErrno = errnoCell[0]!;
            }
            return r;
          };
      }
      return target[name];
    },
  }) as unknown as Libc;
}

/** Result types through which a call can report failure. */
const FAILING_RESULTS = new Set(["i32", "isize", "i64", "pointer"]);

let lastErrno = 0;

/**
 * errno as the last failing synchronous call left it (captured the moment
 * that call returned). Not meaningful after a `nonblocking: true` call,
 * which ran on another thread.
 *
 * @returns errno
 */
export function errno(): number {
  return lastErrno;
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
