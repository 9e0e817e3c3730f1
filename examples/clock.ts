/**
 * A file system whose content changes on its own, kept fresh with
 * notifications: `now` holds the current time, and the one name in
 * `seconds/` is the current second. The kernel may cache attributes, names
 * and pages for an hour; each second the file system tells it what changed
 * (`session.notify`), as a network or database file system would.
 *
 *     deno run --allow-ffi examples/clock.ts MOUNTPOINT
 *     cat MOUNTPOINT/now; sleep 1; cat MOUNTPOINT/now   # two times
 *     ls MOUNTPOINT/seconds                             # the current second
 *
 * @module
 */

import { Errno, type FileSystem, FuseError, mount, runMain, S } from "../mod.ts";

const ROOT = 1, NOW = 2, SECONDS = 3;
/** The node of `seconds/SS`: one per second of the minute. */
const second = (name: string) => 100 + Number(name);
const encoder = new TextEncoder();

/** The clock's state: what `now` says and the name in `seconds/`. */
class Clock {
  text = new Uint8Array();
  second = "";
  constructor() {
    this.tick();
  }
  /** Move to the current time; returns the name `seconds/` had before. */
  tick(): string {
    const was = this.second;
    const date = new Date();
    this.text = encoder.encode(date.toISOString() + "\n");
    this.second = String(date.getUTCSeconds()).padStart(2, "0");
    return was;
  }
}

/** The clock file system over `clock`. */
export function clockFs(clock: Clock): FileSystem {
  const attr = (nodeId: number) =>
    nodeId === NOW
      ? { ino: NOW, mode: S.IFREG | 0o444, size: clock.text.length }
      : nodeId >= 100
      ? { ino: nodeId, mode: S.IFREG | 0o444 }
      : { ino: nodeId, mode: S.IFDIR | 0o555, nlink: 2 };
  return {
    lookup(_ctx, parent, name) {
      const nodeId = parent === ROOT && name === "now"
        ? NOW
        : parent === ROOT && name === "seconds"
        ? SECONDS
        : parent === SECONDS && name === clock.second
        ? second(name)
        : 0;
      if (!nodeId) throw new FuseError(Errno.ENOENT);
      return { nodeId, attr: attr(nodeId) };
    },
    getattr: (_ctx, nodeId) => attr(nodeId),
    // keepCache: the kernel keeps the pages until told otherwise.
    open: () => ({ keepCache: true }),
    read: (_ctx, _nodeId, _fh, offset, size) => clock.text.slice(offset, offset + size),
    readdir(_ctx, nodeId, _fh, offset, list) {
      const names: [string, number, number][] = nodeId === ROOT
        ? [["now", NOW, S.IFREG], ["seconds", SECONDS, S.IFDIR]]
        : [[clock.second, second(clock.second), S.IFREG]];
      for (let i = offset; i < names.length; i++) {
        if (!list.add(names[i][0], names[i][1], names[i][2], i + 1)) break;
      }
    },
  };
}

if (import.meta.main) {
  await runMain("examples/clock.ts", "MOUNTPOINT", async (cli) => {
    const clock = new Clock();
    const session = await mount(clockFs(clock), cli.positionals[0], {
      fsname: "clock",
      entryTimeout: 3600,
      attrTimeout: 3600,
      ...cli.options,
    });
    const timer = setInterval(() => {
      const was = clock.tick();
      // New size and content of `now`; the old second's name is gone.
      session.notify.invalInode(NOW);
      if (was !== clock.second) session.notify.delete(SECONDS, second(was), was);
    }, 1000);
    session.closed.finally(() => clearInterval(timer));
    return session;
  });
}
