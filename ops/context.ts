/**
 * The {@linkcode RequestContext} the dispatcher hands a FileSystem method.
 *
 * @module
 */

import type { BackingIo } from "./backing_io.ts";
import type { RequestContext } from "./filesystem.ts";

/**
 * A request's {@linkcode RequestContext}: plain fields, and the signal made
 * on first use. A class, so that its getter is shared on the prototype (an
 * object literal would make a getter closure per request).
 */
export class Context implements RequestContext {
  constructor(
    readonly unique: number,
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
    readonly io: BackingIo,
    readonly killSuidgid: boolean,
    signalFor: (unique: number) => AbortSignal,
  ) {
    this.#signalFor = signalFor;
  }

  #signalFor: (unique: number) => AbortSignal;

  get signal(): AbortSignal {
    return this.#signalFor(this.unique);
  }
}
