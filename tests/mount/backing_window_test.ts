// A handle that is a window of its backing fd (OpenReply.backingOffset and
// backingLength): reads start at the window's offset and end at its length,
// writes land inside it and one that would cross its end fails with EFBIG;
// through the dispatcher (the test kit), and on a mount on both transports,
// where the io_uring queue threads serve the window themselves.
import assert from "node:assert/strict";
import { Errno, FuseError } from "../../mod.ts";
import { TestSession } from "../../testing.ts";
import { PARTITIONS, windowFs } from "../fixtures/window_fs.ts";
import { run, sh, startServer, tempMountpoint, transportTest } from "../helpers.ts";

const IMAGE_SIZE = 65536;

async function image(): Promise<[string, string]> {
  const dir = await Deno.makeTempDir({ prefix: "denofuse-image-" });
  await sh(`head -c ${IMAGE_SIZE} /dev/urandom > ${dir}/image`);
  return [dir, `${dir}/image`];
}

const efbig = (e: unknown) => e instanceof FuseError && e.errno === Errno.EFBIG;

Deno.test("backing windows (test kit): reads and writes stay inside the window", async () => {
  const [dir, path] = await image();
  const fs = windowFs(path);
  try {
    const t = await TestSession.start(fs);
    const [, id, start, length] = PARTITIONS[0];
    const { fh } = await t.open(id, 2 /* O_RDWR */);
    const before = await Deno.readFile(path);
    assert.deepEqual(await t.read(id, fh, 0, 100), before.subarray(start, start + 100));
    assert.equal((await t.read(id, fh, length - 4, 100)).length, 4);
    assert.equal((await t.read(id, fh, length, 100)).length, 0);
    assert.equal(await t.write(id, fh, 0, new TextEncoder().encode("abc")), 3);
    assert.equal(await t.write(id, fh, length - 5, new Uint8Array(5).fill(7)), 5);
    await assert.rejects(t.write(id, fh, length - 4, new Uint8Array(5)), efbig);
    const after = await Deno.readFile(path);
    assert.equal(new TextDecoder().decode(after.subarray(start, start + 3)), "abc");
    assert.deepEqual(after.subarray(start + length - 5, start + length), new Uint8Array(5).fill(7));
    // Nothing outside the window changed.
    assert.deepEqual(after.subarray(0, start), before.subarray(0, start));
    assert.deepEqual(after.subarray(start + length), before.subarray(start + length));
    await t.release(id, fh);
  } finally {
    fs.destroy?.();
    await Deno.remove(dir, { recursive: true });
  }
});

for (const threads of [1, undefined]) {
  transportTest(
    `backing windows: partitions of an image on a mount (${
      threads ? "one thread" : "a thread per CPU"
    })`,
    async (transport) => {
      const [dir, path] = await image();
      const [mnt, cleanup] = await tempMountpoint();
      const options = [transport === "io_uring" ? "io_uring" : "no_io_uring"];
      if (threads) options.push(`threads=${threads}`);
      const { child } = await startServer([
        "tests/fixtures/window_fs.ts",
        path,
        mnt,
        "-o",
        options.join(","),
      ]);
      try {
        const before = await Deno.readFile(path);
        const slice = (b: Uint8Array, [, , start, length]: typeof PARTITIONS[number]) =>
          b.subarray(start, start + length);
        // Reads: each partition is its part of the image, and ends there.
        for (const p of PARTITIONS) {
          assert.deepEqual(await Deno.readFile(`${mnt}/${p[0]}`), slice(before, p));
        }
        // Writes land inside the partition; one past its end is refused.
        await sh(`dd if=/dev/urandom of=${dir}/new bs=4096 count=4 status=none`);
        await sh(`dd if=${dir}/new of=${mnt}/a bs=4096 conv=notrunc status=none`);
        const beyond = await run(
          "dd",
          `if=${dir}/new`,
          `of=${mnt}/a`,
          "bs=4096",
          "count=1",
          "seek=4",
          "conv=notrunc",
          "status=none",
        );
        assert.notEqual(beyond.code, 0);
        assert.match(beyond.stderr, /File too large/);
        const after = await Deno.readFile(path);
        assert.deepEqual(slice(after, PARTITIONS[0]), await Deno.readFile(`${dir}/new`));
        assert.deepEqual(after.subarray(0, 4096), before.subarray(0, 4096));
        assert.deepEqual(slice(after, PARTITIONS[1]), slice(before, PARTITIONS[1]));
        assert.deepEqual(after.subarray(53248), before.subarray(53248));
        child.kill("SIGINT");
        assert.equal((await child.status).code, 0);
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
        await child.stderr.cancel().catch(() => {});
        await cleanup();
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
