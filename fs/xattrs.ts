/**
 * Extended attributes of a backing inode, by its `/proc/self/fd/N` path:
 * the inode itself, symlinks included (the kernel stops at the inode a
 * magic link jumps to, and applies its own rules: no `user.*` on links).
 *
 * @module
 */

import { check, check64, cstr, libc } from "../ffi/libc.ts";

/** The largest value (and list) the kernel passes: XATTR_SIZE_MAX. */
const XATTR_SIZE_MAX = 65536;
const decoder = new TextDecoder();
/**
 * Room for any value or list, one per thread: the calls are synchronous and
 * their results copied out, so one buffer serves every request instead of
 * 64 KiB allocated (and left for the collector) per getxattr.
 */
const scratch = new Uint8Array(XATTR_SIZE_MAX);

/** setxattr(2). */
export function setXattr(path: Uint8Array, name: string, value: Uint8Array, flags: number): void {
  const v = new Uint8Array(value);
  check(libc.setxattr(path, cstr(name), v, BigInt(v.length), flags | 0), "setxattr");
}

/** getxattr(2): the value. */
export function getXattr(path: Uint8Array, name: string): Uint8Array {
  const n = check64(libc.getxattr(path, cstr(name), scratch, BigInt(scratch.length)), "getxattr");
  return scratch.slice(0, n);
}

/** listxattr(2): the names. */
export function listXattrs(path: Uint8Array): string[] {
  const n = check64(libc.listxattr(path, scratch, BigInt(scratch.length)), "listxattr");
  return n === 0 ? [] : decoder.decode(scratch.subarray(0, n - 1)).split("\0");
}

/** removexattr(2). */
export function removeXattr(path: Uint8Array, name: string): void {
  check(libc.removexattr(path, cstr(name)), "removexattr");
}
