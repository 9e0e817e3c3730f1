// kill -9 of the passthrough while a client holds a file open: what was
// written before is in the source, new calls get ENOTCONN and never hang,
// umount -l clears the mount and a new server mounts there again. With
// kernel passthrough the open file keeps its backing file (the kernel holds
// it, not the server), so reads and writes through that fd still reach the
// source until it is closed; with the server moving the data they fail.
import assert from "node:assert/strict";
import { errno, libc, O } from "../../ffi/libc.ts";
import { Errno } from "../../ffi/errno.ts";
import { openFile, preadFile, pwriteFile } from "../../fs/files.ts";
import {
  dataPathArgs,
  dataPathTest,
  isMounted,
  killServer,
  reap,
  run,
  startServer,
  tempMountpoint,
  waitFor,
} from "../helpers.ts";

/** Whether `e` is a SystemError with ENOTCONN (for assert.throws). */
const notConnected = (e: unknown) => (e as { errno?: number }).errno === Errno.ENOTCONN;

dataPathTest(
  "kill -9 with a file open: the source keeps what was written, calls get ENOTCONN, umount -l clears it",
  async (transport, data) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    await Deno.writeTextFile(`${src}/f`, "0123456789");
    const args = [
      "examples/passthrough.ts",
      src,
      mnt,
      "-o",
      transport === "io_uring" ? "io_uring" : "no_io_uring",
      ...dataPathArgs(data),
    ];
    const { child } = await startServer(args);
    let fd = -1;
    try {
      fd = openFile(`${mnt}/f`, O.RDWR);
      assert.equal(pwriteFile(fd, new TextEncoder().encode("ab"), 0), 2);
      child.kill("SIGKILL");
      await reap(child);
      // The connection ends when the last reference to /dev/fuse goes.
      await waitFor(async () => /not connected/.test((await run("stat", mnt)).stderr));
      assert.throws(() => openFile(`${mnt}/f`), notConnected);
      assert.throws(() => Deno.readDirSync(mnt).next(), Deno.errors.NotConnected);
      if (data === "kernel") {
        // The kernel holds the backing file: the open fd still reaches the source.
        assert.equal(new TextDecoder().decode(preadFile(fd, 10, 0)), "ab23456789");
        assert.equal(pwriteFile(fd, new TextEncoder().encode("Z"), 9), 1);
        assert.equal(await Deno.readTextFile(`${src}/f`), "ab2345678Z");
      } else {
        assert.throws(() => preadFile(fd, 10, 0), notConnected);
        assert.throws(() => pwriteFile(fd, new Uint8Array(1), 9), notConnected);
        assert.equal(await Deno.readTextFile(`${src}/f`), "ab23456789");
      }
      // close: the FLUSH cannot be sent; the fd is gone all the same.
      assert.equal(libc.close(fd), -1);
      assert.equal(errno(), Errno.ENOTCONN);
      fd = -1;
      assert.equal((await run("umount", "-l", mnt)).code, 0);
      await waitFor(() => Promise.resolve(!isMounted(mnt)));
      // A new server mounts there and serves the same file.
      const again = await startServer(args);
      try {
        assert.equal((await Deno.readTextFile(`${mnt}/f`)).slice(0, 2), "ab");
      } finally {
        await killServer(again.child);
      }
    } finally {
      if (fd >= 0) libc.close(fd);
      await killServer(child);
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);
