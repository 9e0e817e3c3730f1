/**
 * The small buffers a backing call needs while it runs (a name as a C
 * string, a `struct statx`), lent from a per-thread pool instead of
 * allocated per request. In Deno every new ArrayBuffer is a `calloc` that
 * the collector later frees from one of its own threads; under load the two
 * contend for malloc's lock, and one 256-byte buffer cost about 2.5 µs here
 * (a whole passthrough GETATTR, statx included, costs about 6 µs).
 *
 * A buffer goes back to the pool only when the call that used it has
 * settled: a ring operation's completion means the kernel is done with it.
 *
 * @module
 */

import { cstr } from "../ffi/libc.ts";

/** Bytes per buffer: a name of NAME_MAX bytes and its NUL, or one `struct statx`. */
export const SCRATCH_SIZE = 256;
/** Buffers kept for reuse per thread (more are allocated, and dropped, under a burst). */
const KEEP = 64;

/** One lent buffer and a view of it. */
export interface Scratch {
  /** The memory. */
  bytes: Uint8Array<ArrayBuffer>;
  /** The same memory, for reading a struct. */
  view: DataView<ArrayBuffer>;
}

const pool: Scratch[] = [];
const encoder = new TextEncoder();

function take(): Scratch {
  const s = pool.pop();
  if (s) return s;
  const bytes = new Uint8Array(SCRATCH_SIZE);
  return { bytes, view: new DataView(bytes.buffer) };
}

function give(s: Scratch): void {
  if (pool.length < KEEP) pool.push(s);
}

/** Run `fn` with a lent buffer; it is returned once `fn`'s promise settles. */
export async function withScratch<T>(fn: (s: Scratch) => Promise<T>): Promise<T> {
  const s = take();
  try {
    return await fn(s);
  } finally {
    give(s);
  }
}

/**
 * Run `fn` with `name` as a NUL-terminated C string, in a lent buffer when
 * it fits (else a new one: the backing call then reports ENAMETOOLONG).
 */
export async function withCString<T>(name: string, fn: (c: Uint8Array) => Promise<T>): Promise<T> {
  const s = take();
  try {
    // encodeInto stops where the buffer ends: all read and room left for the NUL means it fit.
    const { read, written } = encoder.encodeInto(name, s.bytes);
    if (read < name.length || written === SCRATCH_SIZE) return await fn(cstr(name));
    s.bytes[written] = 0;
    return await fn(s.bytes);
  } finally {
    give(s);
  }
}
