/**
 * liburing.so.2 (Debian's liburing2), bound with `Deno.dlopen`.
 *
 * liburing's functions return `-errno` rather than setting errno, so they are
 * safe to call from any thread. Everything liburing only has as a static
 * inline helper (SQE preparation, CQE peeking and advancing) is written in
 * TypeScript over the mmapped rings in `ring.ts`.
 *
 * The library is opened lazily: a machine without liburing still serves FUSE
 * over `/dev/fuse`, and only asking for the io_uring transport fails.
 *
 * @module
 */

import { SystemError } from "./errno.ts";

const symbols = {
  io_uring_queue_init_params: {
    parameters: ["u32", "pointer", "pointer"],
    result: "i32",
  },
  io_uring_queue_exit: { parameters: ["pointer"], result: "void" },
  io_uring_submit: { parameters: ["pointer"], result: "i32" },
  io_uring_submit_and_wait: { parameters: ["pointer", "u32"], result: "i32" },
  io_uring_enter: {
    parameters: ["u32", "u32", "u32", "u32", "pointer"],
    result: "i32",
  },
  /** The same call on Deno's blocking pool: used only to wait. */
  io_uring_enter_wait: {
    name: "io_uring_enter",
    parameters: ["u32", "u32", "u32", "u32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  io_uring_wait_cqe_timeout: {
    parameters: ["pointer", "pointer", "pointer"],
    result: "i32",
  },
  io_uring_register: {
    parameters: ["u32", "u32", "pointer", "u32"],
    result: "i32",
  },
  io_uring_register_buffers: {
    parameters: ["pointer", "pointer", "u32"],
    result: "i32",
  },
  io_uring_register_buffers_sparse: {
    parameters: ["pointer", "u32"],
    result: "i32",
  },
  io_uring_register_buffers_update_tag: {
    parameters: ["pointer", "u32", "pointer", "pointer", "u32"],
    result: "i32",
  },
  io_uring_unregister_buffers: { parameters: ["pointer"], result: "i32" },
  io_uring_register_files: {
    parameters: ["pointer", "pointer", "u32"],
    result: "i32",
  },
  io_uring_register_buf_ring: {
    parameters: ["pointer", "pointer", "u32"],
    result: "i32",
  },
  io_uring_unregister_buf_ring: {
    parameters: ["pointer", "i32"],
    result: "i32",
  },
  io_uring_register_ring_fd: { parameters: ["pointer"], result: "i32" },
  io_uring_register_personality: { parameters: ["pointer"], result: "i32" },
  io_uring_get_probe_ring: { parameters: ["pointer"], result: "pointer" },
  io_uring_free_probe: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The liburing symbols this project uses. */
export type LiburingSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let loaded: LiburingSymbols | undefined;
let loadError: Error | undefined;

/**
 * liburing's symbols, loading `liburing.so.2` on first use. Throws an error
 * that says which package to install when the library is missing.
 */
export function liburing(): LiburingSymbols {
  if (loaded) return loaded;
  if (loadError) throw loadError;
  try {
    loaded = Deno.dlopen("liburing.so.2", symbols).symbols;
    return loaded;
  } catch (e) {
    loadError = new Error(
      `cannot load liburing.so.2 (install Debian's liburing2): ${(e as Error).message}`,
    );
    throw loadError;
  }
}

/** Throws a {@linkcode SystemError} if a liburing result is a negative errno. */
export function checkUring(ret: number, call: string, detail?: string): number {
  if (ret < 0) throw new SystemError(call, -ret, detail);
  return ret;
}
