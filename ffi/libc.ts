/**
 * libc, bound with `Deno.dlopen`: the raw symbols, and thin wrappers that turn
 * a failed call into a {@linkcode SystemError}.
 *
 * errno is per thread. Every errno-sensitive call here is synchronous, so it
 * runs on the calling JS thread and errno can be read right after it. Calls
 * marked `nonblocking` run on Deno's blocking pool; they are used only to
 * wait (poll), where the return value says all we need.
 *
 * ssize_t results of read/write are declared `i32`: the low half of the
 * register holds the exact value for any transfer below 2 GiB (ours are at
 * most a few MiB), and it spares a bigint allocation per call on the hot path.
 *
 * @module
 */

import { SystemError } from "./errno.ts";

const symbols = {
  __errno_location: { parameters: [], result: "pointer" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "pointer", "usize"], result: "i32" },
  write: { parameters: ["i32", "pointer", "usize"], result: "i32" },
  writev: { parameters: ["i32", "pointer", "i32"], result: "i32" },
  pread64: { parameters: ["i32", "pointer", "usize", "i64"], result: "i32" },
  pwrite64: { parameters: ["i32", "pointer", "usize", "i64"], result: "i32" },
  poll: { parameters: ["pointer", "u64", "i32"], result: "i32" },
  poll_wait: {
    name: "poll",
    parameters: ["pointer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  mount: {
    parameters: ["buffer", "buffer", "buffer", "u64", "buffer"],
    result: "i32",
  },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  /** umount2 on Deno's blocking pool (its errno is the pool thread's, not readable here). */
  umount2_wait: {
    name: "umount2",
    parameters: ["buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  mmap: {
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
  },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  mlock: { parameters: ["pointer", "usize"], result: "i32" },
  munlock: { parameters: ["pointer", "usize"], result: "i32" },
  statx: {
    parameters: ["i32", "buffer", "i32", "u32", "buffer"],
    result: "i32",
  },
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  getdents64: { parameters: ["i32", "pointer", "usize"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  fsync: { parameters: ["i32"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  copy_file_range: {
    parameters: ["i32", "buffer", "i32", "buffer", "usize", "u32"],
    result: "i64",
  },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  fchmodat: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  fchownat: {
    parameters: ["i32", "buffer", "u32", "u32", "i32"],
    result: "i32",
  },
  fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
  utimensat: {
    parameters: ["i32", "buffer", "buffer", "i32"],
    result: "i32",
  },
  futimens: { parameters: ["i32", "buffer"], result: "i32" },
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  mknodat: { parameters: ["i32", "buffer", "u32", "u64"], result: "i32" },
  symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i32" },
  readlinkat: {
    parameters: ["i32", "buffer", "buffer", "usize"],
    result: "i64",
  },
  linkat: {
    parameters: ["i32", "buffer", "i32", "buffer", "i32"],
    result: "i32",
  },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  renameat2: {
    parameters: ["i32", "buffer", "i32", "buffer", "u32"],
    result: "i32",
  },
  getxattr: {
    parameters: ["buffer", "buffer", "buffer", "usize"],
    result: "i64",
  },
  setxattr: {
    parameters: ["buffer", "buffer", "buffer", "usize", "i32"],
    result: "i32",
  },
  listxattr: { parameters: ["buffer", "buffer", "usize"], result: "i64" },
  removexattr: { parameters: ["buffer", "buffer"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  prlimit64: { parameters: ["i32", "i32", "buffer", "buffer"], result: "i32" },
  name_to_handle_at: {
    parameters: ["i32", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  open_by_handle_at: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** fcntl with an integer argument (F_GETFL, F_SETFL). */
  fcntl_int: { name: "fcntl", parameters: ["i32", "i32", "i64"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  syscall: {
    parameters: ["i64", "i64", "i64", "i64", "i64", "i64"],
    result: "i64",
  },
  dup: { parameters: ["i32"], result: "i32" },
  realpath: { parameters: ["buffer", "buffer"], result: "pointer" },
  getuid: { parameters: [], result: "u32" },
  geteuid: { parameters: [], result: "u32" },
  getegid: { parameters: [], result: "u32" },
  getgid: { parameters: [], result: "u32" },
  getpid: { parameters: [], result: "i32" },
  umask: { parameters: ["u32"], result: "u32" },
  setfsuid: { parameters: ["u32"], result: "i32" },
  setfsgid: { parameters: ["u32"], result: "i32" },
  sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  // fusermount3: a socket to receive the fd on, a child process to run it.
  access: { parameters: ["buffer", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32" },
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  posix_spawnp: {
    parameters: ["buffer", "buffer", "buffer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type LibC = Deno.DynamicLibrary<typeof symbols>["symbols"];
let opened: LibC | null = null;

/**
 * The raw libc symbols. Prefer the checked wrappers below. libc is opened
 * on the first use of any of them, so importing this module (or mod.ts,
 * for its types) needs no `--allow-ffi`; each symbol's getter then
 * replaces itself with the function, so calls cost nothing extra.
 */
export const libc: LibC = {} as LibC;
for (const name of Object.keys(symbols) as (keyof LibC)[]) {
  Object.defineProperty(libc, name, {
    configurable: true,
    enumerable: true,
    get() {
      opened ??= Deno.dlopen("libc.so.6", symbols).symbols;
      Object.defineProperty(libc, name, { value: opened[name], enumerable: true });
      return opened[name];
    },
  });
}

// errno lives at a fixed address per thread; a module instance lives on one
// thread (the main thread or one Worker), so the address can be cached.
let errnoView: Deno.UnsafePointerView | null = null;

/** The calling thread's errno, as left by the last synchronous libc call. */
export function errno(): number {
  errnoView ??= new Deno.UnsafePointerView(libc.__errno_location()!);
  return errnoView.getInt32(0);
}

/** Throws a {@linkcode SystemError} for `syscall` if `ret` is negative. */
export function check(ret: number, syscall: string, detail?: string): number {
  if (ret < 0) throw new SystemError(syscall, errno(), detail);
  return ret;
}

/**
 * `pread(fd, ptr, length, offset)` into pinned memory (a transport's reply
 * slot); the bytes read. Throws a {@linkcode SystemError} on failure.
 */
export function preadPinned(
  fd: number,
  ptr: Deno.PointerValue,
  length: number,
  offset: number,
): number {
  return check(libc.pread64(fd, ptr, BigInt(length), BigInt(offset)), "pread", `fd ${fd}`);
}

/** `pwrite(fd, ptr, length, offset)` from pinned memory; as {@linkcode preadPinned}. */
export function pwritePinned(
  fd: number,
  ptr: Deno.PointerValue,
  length: number,
  offset: number,
): number {
  return check(libc.pwrite64(fd, ptr, BigInt(length), BigInt(offset)), "pwrite", `fd ${fd}`);
}

/** Like {@linkcode check}, for calls whose result is a 64-bit bigint. */
export function check64(
  ret: bigint,
  syscall: string,
  detail?: string,
): number {
  if (ret < 0n) throw new SystemError(syscall, errno(), detail);
  return Number(ret);
}

/**
 * An offset or length as the kernel's signed 64-bit `loff_t`: what arrives
 * as an unsigned 64-bit field keeps its bits (a huge value turns negative
 * and the call answers EINVAL) rather than failing the FFI conversion.
 */
export function off(n: number): bigint {
  return BigInt.asIntN(64, BigInt(n));
}

const encoder = new TextEncoder();

/** A NUL-terminated C string for a path or name argument. */
export function cstr(s: string | Uint8Array): Uint8Array<ArrayBuffer> {
  const bytes = typeof s === "string" ? encoder.encode(s) : s;
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Open flags and other constants of the Linux ABI used across the project. */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DIRECT: 0o40000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  NOATIME: 0o1000000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

/** `AT_*` flags for the *at() family. */
export const AT = {
  FDCWD: -100,
  SYMLINK_NOFOLLOW: 0x100,
  REMOVEDIR: 0x200,
  SYMLINK_FOLLOW: 0x400,
  NO_AUTOMOUNT: 0x800,
  EMPTY_PATH: 0x1000,
  STATX_SYNC_AS_STAT: 0,
} as const;

/** File type bits of `st_mode`. */
export const S = {
  IFMT: 0o170000,
  IFSOCK: 0o140000,
  IFLNK: 0o120000,
  IFREG: 0o100000,
  IFBLK: 0o060000,
  IFDIR: 0o040000,
  IFCHR: 0o020000,
  IFIFO: 0o010000,
} as const;

const F_SETFL = 4;

/**
 * Set the status flags of `fd` (fcntl F_SETFL: O_NONBLOCK, O_APPEND,
 * O_DIRECT...). Returns fcntl's result: on an fd just opened it cannot fail.
 */
export function setFdFlags(fd: number, flags: number): number {
  return libc.fcntl_int(fd, F_SETFL, BigInt(flags));
}

/** The address of `buffer`'s memory, for a struct that points to it (iovec, msghdr, argv). */
export function addressOf(buffer: ArrayBufferView): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer as BufferSource)));
}

/** Open `path` with `flags`; returns the fd. */
export function open(path: string, flags: number, mode = 0): number {
  return check(libc.open(cstr(path), flags | O.CLOEXEC, mode), "open", path);
}

/** Close `fd`, ignoring EINTR as Linux recommends. */
export function close(fd: number): void {
  libc.close(fd);
}

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_IXGRP = 0o010;
const STATX_MODE = 2;
const STATX_GID = 0x10;
const statxBuffer = new Uint8Array(256);
const EMPTY_PATH = new Uint8Array(1);

/**
 * Clear the setuid bit, and the setgid bit, of the file open as `fd`, as
 * the kernel does when a caller without CAP_FSETID writes or truncates
 * (what FUSE_HANDLE_KILLPRIV_V2 leaves to the server): setgid goes when the
 * file is group-executable or `callerGid` is not its group (only the
 * caller's primary group is known). `fd` may be an O_PATH fd; the change is
 * then made through /proc.
 */
export function clearSuidSgid(fd: number, callerGid: number): void {
  check(libc.statx(fd, EMPTY_PATH, AT.EMPTY_PATH, STATX_MODE | STATX_GID, statxBuffer), "statx");
  const v = new DataView(statxBuffer.buffer);
  const mode = v.getUint16(28, true);
  let cleared = mode & ~S_ISUID;
  if ((mode & S_IXGRP) || v.getUint32(24, true) !== callerGid) cleared &= ~S_ISGID;
  if (cleared === mode) return;
  if (libc.fchmod(fd, cleared & 0o7777) === 0) return;
  check(libc.fchmodat(AT.FDCWD, cstr(`/proc/self/fd/${fd}`), cleared & 0o7777, 0), "fchmodat");
}

/** Run the calling thread on the given CPUs only (`sched_setaffinity` of this thread). */
export function pinThread(cpus: readonly number[]): void {
  const mask = new Uint8Array(128); // room for 1024 CPUs
  for (const cpu of cpus) mask[cpu >> 3] |= 1 << (cpu & 7);
  check(libc.sched_setaffinity(0, BigInt(mask.length), mask), "sched_setaffinity", `${cpus}`);
}

/** The target of symlink `path` (readlink(2)), e.g. `/proc/self/exe`: this Deno executable. */
export function readLink(path: string): string {
  const buf = new Uint8Array(4096);
  const n = check64(
    libc.readlinkat(AT.FDCWD, cstr(path), buf, BigInt(buf.length)),
    "readlink",
    path,
  );
  return new TextDecoder().decode(buf.subarray(0, n));
}

/** Read a small file (under /proc or /sys) through libc, with no Deno permission. */
export function readSmallFile(path: string): string {
  const fd = open(path, O.RDONLY);
  try {
    const chunk = new Uint8Array(4096);
    const ptr = Deno.UnsafePointer.of(chunk);
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      const n = check(libc.read(fd, ptr, BigInt(chunk.length)), "read", path);
      if (n === 0) return text + decoder.decode();
      text += decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  } finally {
    close(fd);
  }
}

/** Whether this process has capability `cap` (a `CAP_*` number) in its effective set. */
export function hasCapability(cap: number): boolean {
  try {
    const hex = /^CapEff:\s*([0-9a-f]+)/m.exec(readSmallFile("/proc/self/status"))?.[1];
    return hex !== undefined && ((BigInt("0x" + hex) >> BigInt(cap)) & 1n) === 1n;
  } catch {
    return false;
  }
}
