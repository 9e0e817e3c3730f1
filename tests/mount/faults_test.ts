// Faults of the backing file system reach the client as such, and nothing
// acknowledged is lost: EIO from a backing store that fails (another FUSE
// mount, tests/fixtures/faulty_fs.ts) and ENOSPC from a full tmpfs.
import assert from "node:assert/strict";
import {
  killServer,
  reap,
  run,
  sh,
  startServer,
  tempMountpoint,
  transportTest,
  withPassthrough,
} from "../helpers.ts";

const opt = (transport: string) => ["-o", transport === "io_uring" ? "io_uring" : "no_io_uring"];

transportTest(
  "faults: EIO from the backing store reaches the client; the rest still works",
  async (transport) => {
    const [faultyMnt, cleanFaulty] = await tempMountpoint();
    const [mnt, cleanMnt] = await tempMountpoint();
    const { child: faulty } = await startServer(["tests/fixtures/faulty_fs.ts", faultyMnt]);
    try {
      const { child } = await startServer([
        "examples/passthrough.ts",
        faultyMnt,
        mnt,
        ...opt(transport),
      ]);
      try {
        const read = await run("cat", `${mnt}/bad`);
        assert.notEqual(read.code, 0);
        assert.match(read.stderr, /Input\/output error/);
        const write = await run(
          "dd",
          "if=/dev/zero",
          `of=${mnt}/bad`,
          "bs=4k",
          "count=1",
          "conv=notrunc,fsync",
          "status=none",
        );
        assert.notEqual(write.code, 0);
        assert.match(write.stderr, /Input\/output error/);
        // The server and the good file are unaffected.
        assert.equal((await run("cat", `${mnt}/good`)).stdout, "good\n");
        await sh(`printf 'better\\n' > ${mnt}/good`);
        assert.equal((await run("cat", `${faultyMnt}/good`)).stdout, "better\n");
        child.kill("SIGTERM");
        assert.equal((await reap(child)).code, 0);
      } finally {
        await killServer(child);
        await cleanMnt();
      }
    } finally {
      faulty.kill("SIGTERM");
      await reap(faulty);
      await cleanFaulty();
    }
  },
);

transportTest(
  "faults: ENOSPC reaches the client; what was fsync'd before is on the source",
  async (transport) => {
    const src = await Deno.makeTempDir({ prefix: "denofuse-small-" });
    assert.equal((await run("mount", "-t", "tmpfs", "-o", "size=4m", "small", src)).code, 0);
    try {
      await withPassthrough(
        transport,
        async (mnt) => {
          // 1 MiB written and fsync'd: acknowledged.
          await sh(
            `head -c 1048576 /dev/urandom > /tmp/denofuse-kept-$$ && cp /tmp/denofuse-kept-$$ ${mnt}/kept && sync ${mnt}/kept && cmp /tmp/denofuse-kept-$$ ${src}/kept && rm /tmp/denofuse-kept-$$`,
          );
          // Then the file system fills up.
          const fill = await run(
            "dd",
            "if=/dev/zero",
            `of=${mnt}/fill`,
            "bs=64k",
            "count=200",
            "conv=fsync",
            "status=none",
          );
          assert.notEqual(fill.code, 0);
          assert.match(fill.stderr, /No space left on device/);
          const direct = await run(
            "dd",
            "if=/dev/zero",
            `of=${mnt}/direct`,
            "bs=64k",
            "count=10",
            "oflag=direct",
            "status=none",
          );
          assert.match(direct.stderr, /No space left on device/);
          // Nothing acknowledged was lost, and space comes back.
          assert.equal((await run("cmp", `${mnt}/kept`, `${src}/kept`)).code, 0);
          assert.equal((await sh(`stat -c %s ${src}/kept`)).trim(), "1048576");
          await Deno.remove(`${mnt}/fill`);
          await Deno.remove(`${mnt}/direct`).catch(() => {});
          assert.equal(
            (await run(
              "dd",
              "if=/dev/zero",
              `of=${mnt}/again`,
              "bs=64k",
              "count=16",
              "conv=fsync",
              "status=none",
            )).code,
            0,
          );
        },
        undefined,
        src,
      );
    } finally {
      await run("umount", "-l", src);
      await Deno.remove(src, { recursive: true });
    }
  },
);
