/**
 * Signal names and numbers (Linux, the same on x86_64 and aarch64).
 *
 * @module
 */

/** Signal numbers by name, without the `SIG` prefix. */
export const SIGNALS = {
  HUP: 1,
  INT: 2,
  QUIT: 3,
  ILL: 4,
  TRAP: 5,
  ABRT: 6,
  BUS: 7,
  FPE: 8,
  KILL: 9,
  USR1: 10,
  SEGV: 11,
  USR2: 12,
  PIPE: 13,
  ALRM: 14,
  TERM: 15,
  STKFLT: 16,
  CHLD: 17,
  CONT: 18,
  STOP: 19,
  TSTP: 20,
  TTIN: 21,
  TTOU: 22,
  URG: 23,
  XCPU: 24,
  XFSZ: 25,
  VTALRM: 26,
  PROF: 27,
  WINCH: 28,
  IO: 29,
  PWR: 30,
  SYS: 31,
} as const;

/** A signal name without the `SIG` prefix. */
export type SignalName = keyof typeof SIGNALS;

const NAMES: ReadonlyMap<number, SignalName> = new Map(
  Object.entries(SIGNALS).map(([name, n]) => [n, name as SignalName]),
);

/**
 * The lowest real-time signal number a program sees on Linux with glibc: the
 * kernel's first is 32, but glibc keeps 32 and 33 for its threads, so its
 * `SIGRTMIN` (what `kill -l` prints as `RTMIN`) is 34.
 */
export const SIGRTMIN = 34;
/** The highest real-time signal number on Linux. */
export const SIGRTMAX = 64;

/**
 * Parse a signal as an administrator writes it: `TERM`, `SIGTERM`, `term`,
 * `15`, or a real-time signal as `RTMIN`, `RTMIN+N`, `SIGRTMIN+N`, `RTMAX`,
 * `RTMAX-N` (as kill(1) and `kill -l` spell them).
 *
 * @param text the signal
 * @returns its number, or `undefined` when it is not a signal
 */
export function parseSignal(text: string): number | undefined {
  if (/^[0-9]+$/.test(text)) {
    const n = Number(text);
    return n >= 1 && n <= SIGRTMAX ? n : undefined;
  }
  const name = text.toUpperCase().replace(/^SIG/, "");
  const rt = /^RT(MIN|MAX)(?:([+-])([0-9]{1,2}))?$/.exec(name);
  if (rt) {
    const offset = rt[2] === undefined ? 0 : Number(rt[3]);
    if (rt[2] !== undefined && rt[2] !== (rt[1] === "MIN" ? "+" : "-")) return undefined;
    const n = rt[1] === "MIN" ? SIGRTMIN + offset : SIGRTMAX - offset;
    return n >= SIGRTMIN && n <= SIGRTMAX ? n : undefined;
  }
  return Object.hasOwn(SIGNALS, name) ? SIGNALS[name as SignalName] : undefined;
}

/**
 * The conventional name of a signal number.
 *
 * @param signal the number
 * @returns `"SIGTERM"`, or `"SIG<n>"` for a real-time or unknown signal
 */
export function signalName(signal: number): string {
  const name = NAMES.get(signal);
  return name ? `SIG${name}` : `SIG${signal}`;
}

/** The Deno name of a signal number, for `Deno.addSignalListener`. */
export function denoSignal(signal: number): Deno.Signal | undefined {
  const name = NAMES.get(signal);
  return name ? (`SIG${name}` as Deno.Signal) : undefined;
}
