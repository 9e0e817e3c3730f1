/**
 * What an entry of the operation table (`operations.ts`) is: the request
 * struct, decoder, FileSystem method, encoder and default of one opcode,
 * typed against the method it names ({@linkcode operation}), so that a
 * decoder that passes the wrong arguments, or an encoder that expects the
 * wrong result, does not compile.
 *
 * @module
 */

import type { AnswerShape } from "./answers.ts";
import type { BackingFdTable } from "./backing_fds.ts";
import type { BackingIds } from "./backing_ids.ts";
import type { FileSystem, RequestContext } from "./filesystem.ts";
import type { Request } from "./request.ts";

/** The FileSystem methods that answer requests: those taking a RequestContext first. */
export type OperationMethod = {
  [K in keyof FileSystem]-?: NonNullable<FileSystem[K]> extends
    (ctx: RequestContext, ...args: infer _) => unknown ? K : never;
}[keyof FileSystem];

/** The arguments of method `K` after the RequestContext. */
export type ArgsOf<K extends OperationMethod> = NonNullable<FileSystem[K]> extends
  (ctx: RequestContext, ...args: infer A) => unknown ? A : never;

/** What method `K` resolves to. */
export type ResultOf<K extends OperationMethod> = Awaited<ReturnType<NonNullable<FileSystem[K]>>>;

/** What the table's functions use besides the request: the dispatcher's settings and state. */
export interface OperationContext {
  /** Seconds the kernel caches names. */
  readonly entryTimeout: number;
  /** Seconds the kernel caches attributes. */
  readonly attrTimeout: number;
  /** Handles whose data is an fd, served without calling `read` and `write`. */
  readonly backingFds: BackingFdTable;
  /** Receives a line for the debug log, when there is one. */
  readonly debug?: (line: string) => void;
  /** Reply to `r` once `length` settles (a write the transport finishes itself). */
  replyLater(r: Request, length: Promise<number>): void;
  /** Kernel passthrough, when the connection has it (see ops/backing_ids.ts). */
  readonly backingIds: BackingIds | null;
  /** Opens served from a backing fd allow io_uring zero-copy (FOPEN_IO_URING_ZERO_COPY). */
  readonly zeroCopyOpens: boolean;
}

/** How one opcode is served, typed against its method `K`. */
export interface Operation<K extends OperationMethod> {
  /** The request's fixed struct: a shorter request is refused with EINVAL. */
  readonly request?: { readonly SIZE: number };
  /** The FileSystem method that answers. */
  readonly method: K;
  /** What the method must answer: checked before `encode` sees it (ops/answers.ts). */
  readonly answer: AnswerShape;
  /** The method's arguments after the RequestContext. Throws a FuseError for a malformed request. */
  decode(r: Request, c: OperationContext): ArgsOf<K>;
  /**
   * Write the result into the reply's memory and return its length; -1
   * when the transport replies itself (data read from an fd).
   */
  encode(value: ResultOf<K>, r: Request, c: OperationContext, args: ArgsOf<K>): number;
  /** The answer of a file system without the method (default: ENOSYS). */
  readonly missing?: () => ResultOf<K>;
  /** Runs before the method (or its absence) answers. */
  readonly before?: (args: ArgsOf<K>, c: OperationContext) => void;
  /** Where the flag asking to clear setuid/setgid is: a u32 field and its bit. */
  readonly killSuidgid?: { readonly field: number; readonly bit: number };
  /** Another entry that serves this request instead (SETLK with FUSE_LK_FLOCK is flock). */
  readonly variant?: (r: Request) => ServedOperation | undefined;
}

/** An {@linkcode Operation} with its method's types erased, as the table holds it. */
export interface ServedOperation {
  /** See {@linkcode Operation.request}. */
  readonly request?: { readonly SIZE: number };
  /** See {@linkcode Operation.method}. */
  readonly method: OperationMethod;
  /** See {@linkcode Operation.answer}. */
  readonly answer: AnswerShape;
  /** See {@linkcode Operation.decode}. */
  decode(r: Request, c: OperationContext): unknown[];
  /** See {@linkcode Operation.encode}. */
  encode(value: unknown, r: Request, c: OperationContext, args: unknown[]): number;
  /** See {@linkcode Operation.missing}. */
  readonly missing?: () => unknown;
  /** See {@linkcode Operation.before}. */
  readonly before?: (args: unknown[], c: OperationContext) => void;
  /** See {@linkcode Operation.killSuidgid}. */
  readonly killSuidgid?: { readonly field: number; readonly bit: number };
  /** See {@linkcode Operation.variant}. */
  readonly variant?: (r: Request) => ServedOperation | undefined;
}

/** An entry of the table: how method `method` serves its opcode, checked against its signature. */
export function operation<K extends OperationMethod>(
  method: K,
  o: NoInfer<Omit<Operation<K>, "method">>,
): ServedOperation {
  return { ...o, method } as unknown as ServedOperation;
}
