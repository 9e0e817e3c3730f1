/**
 * denofuse: FUSE file systems in TypeScript for Deno, with no compiled addon
 * and no libfuse. Implement {@linkcode FileSystem}, then {@linkcode mount}:
 *
 * ```ts
 * import { type FileSystem, mount, S } from "./mod.ts";
 *
 * const fs: FileSystem = {
 *   getattr: () => ({ ino: 1, mode: S.IFDIR | 0o755, nlink: 2 }),
 * };
 * const session = await mount(fs, "/mnt/empty");
 * await session.closed; // Ctrl-C unmounts
 * ```
 *
 * Run with `deno run --allow-ffi` as root (or with CAP_SYS_ADMIN).
 *
 * @module
 */

export type {
  Attr,
  ConnectionInfo,
  CreateReply,
  Entry,
  FdSink,
  FdSource,
  FileLock,
  FileSystem,
  MaybePromise,
  OpenReply,
  ReadReply,
  RequestContext,
  SetAttr,
  SetTime,
  StatFs,
  WriteReply,
} from "./ops/filesystem.ts";
export { LOCK_TO_EOF, LockType } from "./ops/filesystem.ts";
export { InterruptBoard } from "./ops/interrupts.ts";
export type { BackingIo, Caller } from "./ops/backing_io.ts";
export type { Exchange } from "./ops/exchange.ts";
export { DirectoryList, DirectoryPlusList } from "./ops/directory.ts";
export { FuseError } from "./ops/error.ts";
export { AnswerError } from "./ops/answers.ts";
export { type BackingFdShared, BackingFdTable, type BackingWindow } from "./ops/backing_fds.ts";
export { BackingIds, type BackingIdsShared } from "./ops/backing_ids.ts";
export { Errno, type ErrnoName, errnoName, SystemError } from "./ffi/errno.ts";
export { S } from "./ffi/libc.ts";
export {
  closeFile,
  fstatFile,
  O,
  openFile,
  preadFile,
  pwriteFile,
  readLink,
  statFile,
} from "./fs/files.ts";
export { FUSE_ROOT_ID } from "./ops/abi.ts";
export type { Connection, DispatcherOptions } from "./ops/dispatch.ts";
export type { InitOptions } from "./ops/init.ts";
export {
  mount,
  type MountOptions,
  Session,
  type SessionCounters,
  SIGNAL_EXIT_GRACE_MS,
  type TransportChoice,
} from "./server/session.ts";
export { type KernelMountOptions, MountError } from "./server/mount/mount.ts";
export { Notifier } from "./server/notifier.ts";
export { formatProbe, probe, type ProbeLine } from "./server/probe.ts";
export type { TransportCounters } from "./server/dev/transport.ts";
export type { UringCounters } from "./server/uring/counters.ts";
export type { UringMode } from "./server/uring/modes/mode.ts";
export type { QueueCounters } from "./server/uring/queues.ts";
export type { PerQueueFileSystem, PerQueueModule } from "./server/workers/messages.ts";
export { type FileSystemFactory, serveQueueThread } from "./server/queue_thread.ts";
export {
  MOUNT_OPTIONS_HELP,
  type MountCommandLine,
  parseMountArgs,
  runMain,
  serveFromCommandLine,
  type ServerOption,
  serverOptionsHelp,
  UsageError,
  VERSION,
} from "./server/cli.ts";
