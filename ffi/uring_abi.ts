/**
 * io_uring's kernel interface as this project uses it: opcodes, setup and
 * SQE flags, the SQE layout, and the kernel-managed buffer rings of the
 * FUSE buffer-ring series. (FUSE's own structs are in ops/abi.ts; both are
 * checked against the kernel's headers by tests/unit/abi_test.ts and
 * tests/unit/ring_test.ts.)
 *
 * @module
 */

/** io_uring opcodes used by this project. */
export const IORING_OP = {
  NOP: 0,
  READV: 1,
  WRITEV: 2,
  FSYNC: 3,
  READ_FIXED: 4,
  WRITE_FIXED: 5,
  FALLOCATE: 17,
  OPENAT: 18,
  CLOSE: 19,
  STATX: 21,
  READ: 22,
  WRITE: 23,
  OPENAT2: 28,
  RENAMEAT: 35,
  UNLINKAT: 36,
  MKDIRAT: 37,
  SYMLINKAT: 38,
  LINKAT: 39,
  MSG_RING: 40,
  URING_CMD: 46,
  FTRUNCATE: 55,
} as const;

/** `io_uring_setup` flags. */
export const IORING_SETUP = {
  CQSIZE: 1 << 3,
  SUBMIT_ALL: 1 << 7,
  COOP_TASKRUN: 1 << 8,
  SQE128: 1 << 10,
  CQE32: 1 << 11,
} as const;

/** SQE flags. */
export const IOSQE = {
  FIXED_FILE: 1,
  IO_DRAIN: 2,
  IO_LINK: 4,
  IO_HARDLINK: 8,
  CQE_SKIP_SUCCESS: 64,
} as const;
/** `fsync_flags` for IORING_OP_FSYNC. */
export const IORING_FSYNC_DATASYNC = 1;

/** Byte offsets inside a 64-byte SQE (the first half of a 128-byte one). */
export const Sqe = {
  opcode: 0,
  flags: 1,
  ioprio: 2,
  fd: 4,
  off: 8, // also addr2, and cmd_op for URING_CMD
  addr: 16,
  len: 24,
  opFlags: 28, // rw_flags, open_flags, statx_flags, fsync_flags, uring_cmd_flags ...
  userData: 32,
  bufIndex: 40,
  personality: 42,
  fileIndex: 44,
  cmd: 48, // 80 bytes of command with SQE128
} as const;

/**
 * `sqe->uring_cmd_flags` (at `Sqe.opFlags`): the command's buffer is fixed
 * buffer `sqe->buf_index` of this ring (a FUSE queue's registered buffer pool).
 */
export const IORING_URING_CMD_FIXED = 1 << 0;

// The kernel-managed buffer rings of the FUSE buffer-ring series (v4 as
// ported to 7.2; see ops/abi.ts for the series' FUSE side).

/** io_uring_register opcodes of kernel-managed buffer rings (38/39 on the 7.2 port). */
export const IORING_REGISTER_KMBUF_RING = 38;
/** See {@linkcode IORING_REGISTER_KMBUF_RING}. */
export const IORING_UNREGISTER_KMBUF_RING = 39;
/** The numbers v4 was posted with: 37 is IORING_REGISTER_BPF_FILTER on 7.1+, so never tried. */
export const IORING_REGISTER_KMBUF_RING_AS_POSTED = 37;
/** mmap offset of a kernel-managed ring's buffers, plus `bgid << IORING_OFF_KMBUF_SHIFT`. */
export const IORING_OFF_KMBUF_RING = 0x88000000n;
/** See {@linkcode IORING_OFF_KMBUF_RING}. */
export const IORING_OFF_KMBUF_SHIFT = 16n;
/** CQE flag: the completion carries a selected buffer id (mainline io_uring). */
export const IORING_CQE_F_BUFFER = 1 << 0;
/** The buffer id sits in the CQE flags above this shift. */
export const IORING_CQE_BUFFER_SHIFT = 16;

/**
 * `struct io_uring_buf_reg` (mainline; the series reads `buf_size` where a
 * provided ring has `ring_addr`): what IORING_REGISTER_KMBUF_RING takes.
 */
export const IoUringBufReg = {
  SIZE: 40,
  ring_addr: 0,
  buf_size: 0,
  ring_entries: 8,
  bgid: 12,
  flags: 14,
  min_left: 16,
  resv: 20,
} as const;
