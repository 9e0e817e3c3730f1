/**
 * What each FileSystem method must answer, checked at run time before the
 * answer is encoded. TypeScript checks an author's types, but not a value
 * that came through `any`, JSON or plain JavaScript: a `read` that returns a
 * string, or a `lookup` that returns an Attr instead of an Entry, must fail
 * that one request with EIO and say why, never reach the encoder, the reply
 * buffer or the ring.
 *
 * The checks look only at what the encoders read, and cost a few `typeof`s
 * per answer; READ and WRITE of a handle with a backing fd never run them.
 *
 * @module
 */

import type { Request } from "./request.ts";
import { WriteIn } from "./abi.ts";

/** The shape an answer must have. */
export interface AnswerShape {
  /** What a method must return, as its author would write it. */
  readonly expected: string;
  /** What is wrong with `value` (e.g. "a string"), or undefined when it is well-formed. */
  problem(value: unknown, r: Request): string | undefined;
}

/** Thrown into `onError` (once per method) when a method answers with the wrong shape. */
export class AnswerError extends TypeError {
  /** The FileSystem method that answered. */
  readonly method: string;

  /** `method` answered `problem`; it should have answered `expected`. */
  constructor(method: string, problem: string, expected: string) {
    super(`${method} returned ${problem}; expected ${expected}`);
    this.name = "AnswerError";
    this.method = method;
  }
}

/** A short description of a value for an error message: "a string", "null", "an array". */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Uint8Array) return "a Uint8Array";
  if (value instanceof Promise) return "a Promise inside the answer";
  const t = typeof value;
  if (t === "object") {
    const keys = Object.keys(value as object);
    return keys.length === 0 ? "{}" : `an object { ${keys.slice(0, 6).join(", ")} }`;
  }
  return t === "undefined" ? "undefined" : `${/^[aeiou]/.test(t) ? "an" : "a"} ${t}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A count, offset or id: an integer in 0..2^53. */
function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** A file descriptor: an integer in 0..2^31. */
function isFd(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 2 ** 31;
}

/** What is wrong with field `key` of `o` that must be a number (absent allowed if `optional`). */
function numberField(o: Record<string, unknown>, key: string, optional: boolean): string | null {
  const v = o[key];
  if (v === undefined && optional) return null;
  if (typeof v === "number") return null;
  return `${key}: ${describe(v)}`;
}

/** The first wrong field of `o` among `required` and `optional` numbers, or null. */
function numbers(
  o: Record<string, unknown>,
  required: readonly string[],
  optional: readonly string[],
): string | null {
  for (const k of required) {
    const bad = numberField(o, k, false);
    if (bad) return bad;
  }
  for (const k of optional) {
    const bad = numberField(o, k, true);
    if (bad) return bad;
  }
  return null;
}

const ATTR_OPTIONAL = [
  "nlink",
  "uid",
  "gid",
  "rdev",
  "size",
  "blocks",
  "blksize",
  "atimeSec",
  "atimeNsec",
  "mtimeSec",
  "mtimeNsec",
  "ctimeSec",
  "ctimeNsec",
] as const;

/** Absent or a number: the optional fields' rule, written out for speed. */
function optionalNumber(v: unknown): boolean {
  return v === undefined || typeof v === "number";
}

/** The common case of an Attr, field by field (property reads the JIT can cache). */
function isPlainAttr(a: Record<string, unknown>): boolean {
  return isCount(a.ino) && typeof a.mode === "number" && optionalNumber(a.size) &&
    optionalNumber(a.nlink) && optionalNumber(a.uid) && optionalNumber(a.gid) &&
    optionalNumber(a.rdev) && optionalNumber(a.blocks) && optionalNumber(a.blksize) &&
    optionalNumber(a.atimeSec) && optionalNumber(a.atimeNsec) &&
    optionalNumber(a.mtimeSec) && optionalNumber(a.mtimeNsec) &&
    optionalNumber(a.ctimeSec) && optionalNumber(a.ctimeNsec);
}

function attrProblem(v: unknown, what = "an Attr"): string | undefined {
  if (!isObject(v)) return describe(v);
  if (isPlainAttr(v)) return undefined;
  if (!isCount(v.ino)) return `${what} whose ino is ${describe(v.ino)}`;
  const bad = numbers(v, ["mode"], ATTR_OPTIONAL);
  return bad ? `${what} with ${bad}` : undefined;
}

function entryProblem(v: unknown): string | undefined {
  if (!isObject(v)) return describe(v);
  if (!isCount(v.nodeId)) return `an Entry whose nodeId is ${describe(v.nodeId)}`;
  if (!isObject(v.attr)) return `an Entry whose attr is ${describe(v.attr)}`;
  const bad = numbers(v, [], ["generation", "entryTimeout", "attrTimeout"]);
  if (bad) return `an Entry with ${bad}`;
  return attrProblem(v.attr, "an Entry whose attr is an Attr");
}

function openProblem(v: unknown): string | undefined {
  if (!isObject(v)) return describe(v);
  if (v.fh !== undefined && !isCount(v.fh)) return `an OpenReply whose fh is ${describe(v.fh)}`;
  if (v.backingFd !== undefined && !isFd(v.backingFd)) {
    return `an OpenReply whose backingFd is ${describe(v.backingFd)}`;
  }
  if (v.backingOffset !== undefined && !isCount(v.backingOffset)) {
    return `an OpenReply whose backingOffset is ${describe(v.backingOffset)}`;
  }
  if (v.backingLength !== undefined && !isCount(v.backingLength)) {
    return `an OpenReply whose backingLength is ${describe(v.backingLength)}`;
  }
  return undefined;
}

const ENTRY_EXPECTED = "an Entry { nodeId, attr: { ino, mode, ... } }";

/** Any answer: the method's result is not used (methods answering `void`). */
export const ANY: AnswerShape = { expected: "nothing", problem: () => undefined };

/** lookup, mknod, mkdir, symlink, link. */
export const ENTRY: AnswerShape = { expected: ENTRY_EXPECTED, problem: entryProblem };

/** getattr, setattr. */
export const ATTR: AnswerShape = {
  expected: "an Attr { ino, mode, ... }",
  problem: (v) => attrProblem(v),
};

/** open, opendir. */
export const OPEN: AnswerShape = {
  expected: "an OpenReply ({} or { fh, ... })",
  problem: openProblem,
};

/** create. */
export const CREATE: AnswerShape = {
  expected: `a CreateReply { entry: ${ENTRY_EXPECTED}, fh, ... }`,
  problem: (v) => {
    const bad = openProblem(v);
    if (bad) return bad;
    const entry = entryProblem((v as Record<string, unknown>).entry);
    return entry ? `a CreateReply whose entry is ${entry}` : undefined;
  },
};

/** read: bytes, or where to read them. */
export const READ: AnswerShape = {
  expected: "Uint8Array or { fd, offset, length }",
  problem: (v) => {
    if (v instanceof Uint8Array) return undefined;
    if (!isObject(v)) return describe(v);
    if (!isFd(v.fd)) return `an FdSource whose fd is ${describe(v.fd)}`;
    if (!isCount(v.offset)) return `an FdSource whose offset is ${describe(v.offset)}`;
    if (!isCount(v.length)) return `an FdSource whose length is ${describe(v.length)}`;
    return undefined;
  },
};

/** write: the count written (at most what was sent), or where to write. */
export const WRITE: AnswerShape = {
  expected: "the number of bytes written (0..size) or { fd, offset }",
  problem: (v, r) => {
    if (typeof v === "number") {
      const size = r.u32(WriteIn.size);
      if (!isCount(v)) return `the number ${v}`;
      return v <= size ? undefined : `${v}, more than the ${size} bytes sent`;
    }
    if (!isObject(v)) return describe(v);
    if (!isFd(v.fd)) return `an FdSink whose fd is ${describe(v.fd)}`;
    if (!isCount(v.offset)) return `an FdSink whose offset is ${describe(v.offset)}`;
    return undefined;
  },
};

/** readlink. */
export const LINK_TARGET: AnswerShape = {
  expected: "a string or Uint8Array",
  problem: (v) => typeof v === "string" || v instanceof Uint8Array ? undefined : describe(v),
};

/** statx: a Linux struct statx. */
export const STATX: AnswerShape = {
  expected: "a Uint8Array of 256 bytes or more (struct statx)",
  problem: (v) =>
    v instanceof Uint8Array
      ? v.length >= 256 ? undefined : `a Uint8Array of ${v.length} bytes`
      : describe(v),
};

/** statfs. */
export const STATFS: AnswerShape = {
  expected: "a StatFs ({} or { blocks, bfree, ... })",
  problem: (v) => {
    if (!isObject(v)) return describe(v);
    const bad = numbers(v, [], [
      "blocks",
      "bfree",
      "bavail",
      "files",
      "ffree",
      "bsize",
      "namelen",
      "frsize",
    ]);
    return bad ? `a StatFs with ${bad}` : undefined;
  },
};

/** getxattr. */
export const BYTES: AnswerShape = {
  expected: "a Uint8Array",
  problem: (v) => v instanceof Uint8Array ? undefined : describe(v),
};

/** listxattr. */
export const NAMES: AnswerShape = {
  expected: "an array of strings",
  problem: (v) => {
    if (!Array.isArray(v)) return describe(v);
    const i = v.findIndex((n) => typeof n !== "string");
    return i < 0 ? undefined : `an array whose element ${i} is ${describe(v[i])}`;
  },
};

/** getlk. */
export const LOCK: AnswerShape = {
  expected: "a FileLock { start, end, type, pid }",
  problem: (v) => {
    if (!isObject(v)) return describe(v);
    const bad = numbers(v, ["start", "end", "type", "pid"], []);
    return bad ? `a FileLock with ${bad}` : undefined;
  },
};

/** lseek: the resulting offset. */
export const OFFSET: AnswerShape = {
  expected: "an offset (an integer, 0 or more)",
  problem: (v) => isCount(v) ? undefined : describe(v),
};

/** copyFileRange: bytes copied, at most what was asked. */
export function countUpTo(limitField: number, expected: string): AnswerShape {
  return {
    expected,
    problem: (v, r) => isCount(v) && v <= r.u64(limitField) ? undefined : describe(v),
  };
}
