/**
 * Linux errno numbers and names, and the typed error every failed system call
 * becomes.
 *
 * @module
 */

/** Linux errno values (x86_64 and aarch64 share them). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  ENODATA: 61,
  ETIME: 62,
  EPROTO: 71,
  EOVERFLOW: 75,
  EBADFD: 77,
  EILSEQ: 84,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNABORTED: 103,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
  EOWNERDEAD: 130,
} as const;

/** The name of an errno value, e.g. `"ENOENT"`. */
export type ErrnoName = keyof typeof Errno;

const names = new Map<number, string>(
  Object.entries(Errno).map(([name, value]) => [value, name]),
);

/** The symbolic name of `errno` (`"ENOENT"`), or `"E<number>"` if unknown. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `E${errno}`;
}

/**
 * A failed system call: carries the errno, its name and the call, so that a
 * caller can both branch on `errno` and print something a person understands.
 */
export class SystemError extends Error {
  /** The errno value, e.g. 2. */
  readonly errno: number;
  /** The errno name, e.g. `"ENOENT"`. */
  readonly code: string;
  /** The call that failed, e.g. `"openat"`. */
  readonly syscall: string;

  /**
   * An error for a failed call.
   * @param syscall the call that failed
   * @param errno the errno it set
   * @param detail what it was called on (a path, an fd), for the message
   */
  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ""}: ${code} (${errno})`);
    this.name = "SystemError";
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}
