/**
 * Raising the open-file limit, as passthrough_hp does at start: a server
 * that keeps an fd per inode the kernel knows runs out at the default soft
 * limit (1024) long before memory does.
 *
 * @module
 */

import { Errno, SystemError } from "./errno.ts";
import { errno, libc, readSmallFile } from "./libc.ts";

const RLIMIT_NOFILE = 7;

/** The soft and hard RLIMIT_NOFILE. */
export interface FdLimit {
  soft: number;
  hard: number;
}

/** This process's RLIMIT_NOFILE. */
export function fdLimit(): FdLimit {
  const old = new BigUint64Array(2);
  if (libc.prlimit64(0, RLIMIT_NOFILE, null, new Uint8Array(old.buffer)) !== 0) {
    throw new SystemError("prlimit64", errno());
  }
  return { soft: Number(old[0]), hard: Number(old[1]) };
}

/**
 * Raise the soft limit to the hard one; with CAP_SYS_RESOURCE (root, unless a
 * container took it away) raise both to the kernel's `fs/nr_open` first.
 * Returns the limit now in force.
 */
export function raiseFdLimit(): FdLimit {
  const set = (n: number) =>
    libc.prlimit64(
      0,
      RLIMIT_NOFILE,
      new Uint8Array(new BigUint64Array([BigInt(n), BigInt(n)]).buffer),
      null,
    ) === 0;
  const now = fdLimit();
  let ceiling = now.hard;
  try {
    ceiling = Math.max(ceiling, Number(readSmallFile("/proc/sys/fs/nr_open").trim()));
  } catch { /* no procfs: keep the hard limit */ }
  if (ceiling > now.hard && set(ceiling)) return fdLimit();
  if (errno() !== Errno.EPERM && ceiling > now.hard) {
    // EPERM is the usual answer without CAP_SYS_RESOURCE; anything else is news.
    console.error(`denofuse: raising RLIMIT_NOFILE to ${ceiling}: errno ${errno()}`);
  }
  if (now.soft < now.hard) set(now.hard);
  return fdLimit();
}
