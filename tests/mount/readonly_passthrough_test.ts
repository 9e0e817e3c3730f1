// A subclass of the library's Passthrough that refuses writes, mounted and
// used with ordinary tools: reads work, every change fails with EROFS, and
// the source is untouched.
import assert from "node:assert/strict";
import { CHANGING_OPERATIONS, Passthrough } from "../../passthrough.ts";
import { Errno, FuseError, mount, type RequestContext } from "../../mod.ts";
import { run, sh, tempMountpoint, transportTest } from "../helpers.ts";

const erofs = (): never => {
  throw new FuseError(Errno.EROFS);
};

// The README's example, as it is there.
class ReadOnlyPassthrough extends Passthrough {
  override open(ctx: RequestContext, nodeId: number, flags: number) {
    if ((flags & 3) !== 0 || (flags & 0o1000)) erofs(); // O_WRONLY, O_RDWR, O_TRUNC
    return super.open(ctx, nodeId, flags);
  }
}
for (const op of CHANGING_OPERATIONS) {
  Object.defineProperty(ReadOnlyPassthrough.prototype, op, { value: erofs });
}

transportTest(
  "library: a read-only Passthrough subclass reads, and refuses every change",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    await sh(`mkdir ${src}/d && echo kept > ${src}/d/f && chmod 755 ${src}`);
    const fs = new ReadOnlyPassthrough(src);
    const session = await mount(fs, mnt, {
      transport,
      handleSignals: false,
      defaultPermissions: true,
    });
    try {
      // Used from other processes (never from the serving thread).
      assert.equal((await run("cat", `${mnt}/d/f`)).stdout, "kept\n");
      assert.equal((await run("ls", `${mnt}/d`)).stdout, "f\n");
      for (
        const cmd of [
          `echo x > ${mnt}/d/f`,
          `echo x >> ${mnt}/d/f`,
          `echo x > ${mnt}/d/new`,
          `mkdir ${mnt}/e`,
          `rm ${mnt}/d/f`,
          `mv ${mnt}/d/f ${mnt}/d/g`,
          `ln ${mnt}/d/f ${mnt}/d/h`,
          `ln -s f ${mnt}/d/s`,
          `chmod 600 ${mnt}/d/f`,
          `touch ${mnt}/d/f`,
          `truncate -s 0 ${mnt}/d/f`,
        ]
      ) {
        const r = await run("sh", "-c", cmd);
        assert.notEqual(r.code, 0, cmd);
        assert.match(r.stderr, /Read-only file system/, cmd);
      }
      assert.equal(await sh(`cd ${src} && find . | sort && cat d/f`), ".\n./d\n./d/f\nkept\n");
    } finally {
      await session.unmount();
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);
