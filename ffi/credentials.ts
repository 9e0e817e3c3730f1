/**
 * Acting for a caller: a server running as root creates files with the
 * caller's fsuid and fsgid, so that what a user creates through the mount
 * is theirs. fsuid and fsgid belong to the calling thread.
 *
 * @module
 */

import { libc } from "./libc.ts";

/** The file system ids a call acts with. */
export interface FsIds {
  /** File system uid. */
  readonly uid: number;
  /** File system gid. */
  readonly gid: number;
}

let root: boolean | undefined;
let ownGid: number | undefined;

/** Whether this server runs as root (only root can act as another user); asked once. */
export function asRoot(): boolean {
  return root ??= libc.geteuid() === 0;
}

/**
 * Run `fn` with the fsuid/fsgid of `caller` (when running as root; an
 * unprivileged server can only create as itself). fsuid is per thread, and
 * synchronous FFI calls run on this one. A caller who is root with the
 * server's group needs no switch: four system calls saved on every create
 * by root.
 */
export function asCaller<T>(caller: FsIds | undefined, fn: () => T): T {
  if (!caller || !asRoot()) return fn();
  const gid = ownGid ??= libc.getegid();
  if (caller.uid === 0 && caller.gid === gid) return fn();
  libc.setfsgid(caller.gid);
  libc.setfsuid(caller.uid);
  try {
    return fn();
  } finally {
    libc.setfsuid(0);
    libc.setfsgid(gid);
  }
}
