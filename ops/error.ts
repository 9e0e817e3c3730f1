/**
 * The error a FileSystem method throws to fail a request.
 *
 * @module
 */

import { Errno, errnoName } from "../ffi/errno.ts";

/**
 * Fails the current request with an errno, e.g.
 * `throw new FuseError(Errno.ENOENT)` or `throw FuseError.of("ENOENT")`.
 * The caller of the system call sees that errno.
 */
export class FuseError extends Error {
  /** The positive errno returned to the caller. */
  readonly errno: number;

  /**
   * Fail with `errno`.
   * @param errno a positive errno value, e.g. `Errno.ENOENT`
   */
  constructor(errno: number, message?: string) {
    super(message ?? errnoName(errno));
    this.name = "FuseError";
    this.errno = errno;
  }

  /** A FuseError for an errno name: `FuseError.of("ENOENT")`. */
  static of(name: keyof typeof Errno, message?: string): FuseError {
    return new FuseError(Errno[name], message);
  }
}
