/**
 * C strings and NULL-terminated pointer arrays whose buffers stay alive as
 * long as the object that made them.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Encode a string as a NUL-terminated C string, sized by bytes.
 *
 * @param value the string
 * @param what what the string is, for the error message
 * @returns the bytes, ending in one NUL
 * @throws {TypeError} if the string itself holds a NUL, which C would cut short
 */
export function cstr(value: string, what = "string"): Uint8Array<ArrayBuffer> {
  if (value.includes("\0")) {
    throw new TypeError(`${what} must not contain a NUL byte: ${JSON.stringify(value)}`);
  }
  const bytes = encoder.encode(value);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * Read a NUL-terminated C string from a pointer.
 *
 * @param pointer the address, or null
 * @returns the string, or `undefined` for a null pointer
 */
export function readCString(pointer: Deno.PointerValue): string | undefined {
  if (pointer === null) return undefined;
  return new Deno.UnsafePointerView(pointer).getCString();
}

/**
 * Decode bytes read from a descriptor.
 *
 * @param bytes the bytes
 * @returns the text (invalid UTF-8 becomes U+FFFD)
 */
export function decode(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/**
 * A `char *[]` ending in NULL (argv, envp), holding every string it points to,
 * so nothing is collected while C reads it. Keep the object in a variable
 * until the call that uses {@link CStringArray.buffer} has returned.
 */
export class CStringArray {
  readonly #strings: Uint8Array<ArrayBuffer>[];
  readonly #pointers: BigUint64Array<ArrayBuffer>;

  /**
   * @param values the strings, in order
   * @param what what they are, for the error message on a NUL byte
   */
  constructor(values: readonly string[], what = "argument") {
    this.#strings = values.map((v) => cstr(v, what));
    this.#pointers = new BigUint64Array(values.length + 1);
    this.#strings.forEach((s, i) => {
      this.#pointers[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)));
    });
  }

  /** The pointer array, for a `char *const[]` parameter. */
  get buffer(): BigUint64Array<ArrayBuffer> {
    return this.#pointers;
  }
}
