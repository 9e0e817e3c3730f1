/**
 * The passthrough file system as a library: `Passthrough` serves a source
 * directory, forwarding every operation to it, in the manner of libfuse's
 * passthrough_hp (`examples/passthrough.ts` is the command line around it).
 *
 * Extension points, for a passthrough with one change:
 *
 * - **Every operation is a public method** of the `FileSystem` interface;
 *   a subclass overrides the ones it changes and calls `super` for the
 *   rest. Throw a `FuseError` to refuse.
 * - **Nodes** are made by `lookup` (and the creating calls, which end in a
 *   lookup): an override of `lookup` sees every name the kernel resolves.
 * - **File data** does not pass through `read` and `write`: `open` and
 *   `create` answer with `backingFd`, and the session moves the bytes
 *   itself. To see or change data, override `open`/`create` and answer
 *   without `backingFd` (then `read` and `write` are called), or refuse
 *   write access in `open` (a read-only passthrough).
 * - **Backing calls** go through `ctx.io` (io_uring where available).
 * - **Threads**: with `perQueue` the session runs the *base* class in every
 *   queue thread (from a bundle), so a subclass must not be given
 *   `perQueue`; without it, queue threads hand requests to the subclass on
 *   the session's thread.
 *
 * ```ts
 * import { CHANGING_OPERATIONS, Passthrough } from "@denofuse/denofuse/passthrough";
 * import { Errno, FuseError, mount, type RequestContext } from "@denofuse/denofuse";
 *
 * const erofs = (): never => {
 *   throw new FuseError(Errno.EROFS);
 * };
 * // The source, read-only: opening for writing and every change fail with EROFS.
 * class ReadOnlyPassthrough extends Passthrough {
 *   override open(ctx: RequestContext, nodeId: number, flags: number) {
 *     if ((flags & 3) !== 0 || (flags & 0o1000)) erofs(); // O_WRONLY, O_RDWR, O_TRUNC
 *     return super.open(ctx, nodeId, flags);
 *   }
 * }
 * for (const op of CHANGING_OPERATIONS) {
 *   Object.defineProperty(ReadOnlyPassthrough.prototype, op, { value: erofs });
 * }
 * await mount(new ReadOnlyPassthrough("/srv/data"), "/mnt/data", { defaultPermissions: true });
 * ```
 *
 * @module
 */

export {
  attrFromStatx,
  CHANGING_OPERATIONS,
  COPY_CHUNK,
  Passthrough,
  type PassthroughShared,
} from "./fs/passthrough.ts";
