/**
 * The io_uring transport's counters: what each queue did, kept in shared
 * memory so that the session's thread reads them while queue threads serve.
 *
 * @module
 */

/** Counters of the io_uring transport. */
export interface UringCounters {
  /** Requests received over the rings. */
  requests: number;
  /** Replies committed. */
  replies: number;
  /**
   * Reads from a backing fd into a request's payload memory (READ_FIXED on
   * the entry's slot; in the buffer-ring modes, READ into the kernel's
   * buffer; pread when direct).
   */
  fixedReads: number;
  /** Writes to a backing fd from a request's payload memory (as {@linkcode fixedReads}). */
  fixedWrites: number;
  /** Completions that handed an entry a new kernel-managed buffer (buffer-ring modes). */
  bufferSelects: number;
  /**
   * Requests with a payload whose completion named no buffer: the kernel
   * had the next request queued at the commit and reused the entry's buffer.
   */
  bufferKept: number;
  /** Reads from a backing fd straight into the client's pages (READ_FIXED, zero-copy). */
  zeroCopyReads: number;
  /** Writes to a backing fd straight from the client's pages (WRITE_FIXED, zero-copy). */
  zeroCopyWrites: number;
  /** Zero-copy requests whose data went through the entry's staging slot instead. */
  staged: number;
  /** Requests whose payload the kernel put in a buffer of the queue's pool (`bufpool` modes). */
  poolPayloads: number;
  /**
   * Bytes of file data moved through the server's memory: read from or
   * written to a backing fd through a payload slot, pool or kernel buffer,
   * staged, or copied for another thread. The kernel copies them once more
   * between that memory and the client's pages.
   */
  bytesThroughServer: number;
  /** Bytes of file data moved between a backing fd and the client's own pages (zero-copy). */
  bytesZeroCopy: number;
}

/** Per-queue counters in shared memory: one Float64 each, queue-major. */
export const QueueCounter = {
  requests: 0,
  replies: 1,
  fixedReads: 2,
  fixedWrites: 3,
  forwarded: 4,
  bufferSelects: 5,
  zeroCopyReads: 6,
  zeroCopyWrites: 7,
  staged: 8,
  bufferKept: 9,
  poolPayloads: 10,
  bytesThroughServer: 11,
  bytesZeroCopy: 12,
  COUNT: 13,
} as const;
