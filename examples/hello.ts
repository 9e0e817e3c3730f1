/**
 * The smallest useful file system: a read-only root holding one file.
 *
 *     deno run --allow-ffi examples/hello.ts MOUNTPOINT [-d] [-o no_io_uring]
 *     cat MOUNTPOINT/hello        # Hello, World!
 *
 * Ctrl-C unmounts.
 *
 * @module
 */

import { type Attr, Errno, type FileSystem, FuseError, S, serveFromCommandLine } from "../mod.ts";

const ROOT = 1;
const HELLO = 2;
const content = new TextEncoder().encode("Hello, World!\n");

const attrs: Record<number, Attr> = {
  [ROOT]: { ino: ROOT, mode: S.IFDIR | 0o755, nlink: 2 },
  [HELLO]: { ino: HELLO, mode: S.IFREG | 0o444, size: content.length },
};

/** The hello file system. */
export const hello: FileSystem = {
  lookup(_ctx, parent, name) {
    if (parent !== ROOT || name !== "hello") throw new FuseError(Errno.ENOENT);
    return { nodeId: HELLO, attr: attrs[HELLO] };
  },
  getattr(_ctx, nodeId) {
    return attrs[nodeId] ?? Promise.reject(new FuseError(Errno.ENOENT));
  },
  open(_ctx, nodeId, flags) {
    if (nodeId !== HELLO) throw new FuseError(Errno.EISDIR);
    if ((flags & 3) !== 0) throw new FuseError(Errno.EACCES); // read-only
    return { keepCache: true };
  },
  read(_ctx, _nodeId, _fh, offset, size) {
    return content.subarray(offset, offset + size);
  },
  readdir(_ctx, nodeId, _fh, offset, list) {
    if (nodeId !== ROOT) throw new FuseError(Errno.ENOTDIR);
    const entries: [string, number, number][] = [
      [".", ROOT, S.IFDIR],
      ["..", ROOT, S.IFDIR],
      ["hello", HELLO, S.IFREG],
    ];
    for (let i = offset; i < entries.length; i++) {
      const [name, ino, mode] = entries[i];
      if (!list.add(name, ino, mode, i + 1)) break;
    }
  },
};

if (import.meta.main) {
  await serveFromCommandLine(hello, "examples/hello.ts", { fsname: "hello", subtype: "hello" });
}
