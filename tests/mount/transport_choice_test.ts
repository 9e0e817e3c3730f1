// Which transport a session uses, and the fallback when io_uring cannot be had.
import assert from "node:assert/strict";
import { hello } from "../../examples/hello.ts";
import { mount, MountError } from "../../mod.ts";
import { isMounted, tempMountpoint, uringTest } from "../helpers.ts";

const param = "/sys/module/fuse/parameters/enable_uring";

uringTest("transport: auto picks io_uring when the kernel offers it", async () => {
  const [mnt, cleanup] = await tempMountpoint();
  try {
    const notices: string[] = [];
    const s = await mount(hello, mnt, { handleSignals: false, onNotice: (m) => notices.push(m) });
    try {
      assert.equal(s.transport, "io_uring");
      assert.equal(s.fallbackReason, null);
      assert.equal(await Deno.readTextFile(`${mnt}/hello`), "Hello, World!\n");
      assert.ok(s.counters.uring!.requests > 0);
      assert.deepEqual(notices, []);
    } finally {
      await s.unmount();
    }
  } finally {
    await cleanup();
  }
});

uringTest(
  "transport: with enable_uring=N, auto falls back and says why once; io_uring fails",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    const before = (await Deno.readTextFile(param)).trim();
    await Deno.writeTextFile(param, "N");
    try {
      const notices: string[] = [];
      const s = await mount(hello, mnt, { handleSignals: false, onNotice: (m) => notices.push(m) });
      try {
        assert.equal(s.transport, "dev");
        assert.match(s.fallbackReason!, /enable_uring/);
        assert.equal(notices.length, 1);
        assert.match(notices[0], /serving over \/dev\/fuse: .*echo Y > .*enable_uring/);
        assert.equal(await Deno.readTextFile(`${mnt}/hello`), "Hello, World!\n");
        assert.equal(s.counters.uring, undefined);
      } finally {
        await s.unmount();
      }
      await assert.rejects(
        mount(hello, mnt, { handleSignals: false, transport: "io_uring" }),
        (e: Error) =>
          e instanceof MountError && /io_uring transport: .*enable_uring/.test(e.message),
      );
      assert.equal(isMounted(mnt), false);
      // Asking for /dev/fuse is not a fallback: nothing to say.
      const quiet: string[] = [];
      const d = await mount(hello, mnt, {
        handleSignals: false,
        transport: "dev",
        onNotice: (m) => quiet.push(m),
      });
      await d.unmount();
      assert.deepEqual(quiet, []);
    } finally {
      await Deno.writeTextFile(param, before);
      await cleanup();
    }
  },
);
