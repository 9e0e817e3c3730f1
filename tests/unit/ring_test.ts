// The ring layer without FUSE: submission, completion dispatch, fixed
// buffers, errors, and liburing's struct layout checked with offsetof.
import assert from "node:assert/strict";
import { cstr, O } from "../../ffi/libc.ts";
import { PinnedRegion } from "../../ffi/memory.ts";
import { IoUringLayout, Ring } from "../../ffi/ring.ts";
import {
  linkNext,
  prepClose,
  prepFsync,
  prepNop,
  prepOpenat,
  prepReadFixed,
  prepStatx,
  prepWrite,
  prepWriteFixed,
} from "../../ffi/sqe.ts";
import { SystemError } from "../../mod.ts";

const haveUring = await new Deno.Command("sh", {
  args: ["-c", "ldconfig -p | grep -q 'liburing.so.2 '"],
}).output().then((o) => o.success, () => false);
const inCI = Deno.env.get("CI") === "true";
const ignore = !haveUring && !inCI;

async function settle(ring: Ring, ...ops: Promise<number>[]): Promise<number[]> {
  const results = ops.map((p) => p.then((v) => v, (e: SystemError) => -e.errno));
  ring.submit();
  while (ring.inFlight > 0) {
    await ring.wait();
    ring.reap();
  }
  return await Promise.all(results);
}

Deno.test({ name: "ring: NOPs complete, in any number, through one submit", ignore }, async () => {
  const ring = new Ring({ entries: 8 });
  try {
    assert.equal(ring.sqEntries, 8);
    assert.equal(ring.cqEntries, 16);
    // More operations than SQ entries: sqe() submits when the queue is full.
    const ops = Array.from(
      { length: 20 },
      () => ring.submitOp("nop", (at) => prepNop(ring.sqes, at)),
    );
    assert.deepEqual(await settle(ring, ...ops), new Array(20).fill(0));
    assert.equal(ring.inFlight, 0);
  } finally {
    await ring.close();
  }
});

Deno.test({ name: "ring: fixed-buffer write and read, statx, fsync, errors", ignore }, async () => {
  const ring = new Ring({ entries: 16 });
  const buf = new PinnedRegion(65536);
  const iov = new PinnedRegion(16);
  const dir = await Deno.makeTempDir();
  const path = cstr(`${dir}/f`);
  const pinnedPath = new PinnedRegion(path.length);
  pinnedPath.bytes.set(path);
  try {
    ring.registerSparseBuffers(4);
    iov.view.setBigUint64(0, buf.address, true);
    iov.view.setBigUint64(8, BigInt(buf.size), true);
    ring.updateBuffers(3, iov.pointer, 1);

    const s = ring.sqes;
    const [fd] = await settle(
      ring,
      ring.submitOp(
        "openat",
        (at) => prepOpenat(s, at, -100, pinnedPath.address, O.RDWR | O.CREAT | O.CLOEXEC, 0o600),
      ),
    );
    assert.ok(fd >= 0);
    const text = new TextEncoder().encode("fixed buffers from TypeScript");
    buf.bytes.set(text, 4096);
    const [written, synced] = await settle(
      ring,
      ring.submitOp("write_fixed", (at) => {
        prepWriteFixed(s, at, fd, buf.address + 4096n, text.length, 10, 3);
        linkNext(s, at);
      }),
      ring.submitOp("fsync", (at) => prepFsync(s, at, fd, true)),
    );
    assert.equal(written, text.length);
    assert.equal(synced, 0);
    const onDisk = await Deno.readFile(`${dir}/f`);
    assert.deepEqual(onDisk.subarray(10), text);

    buf.bytes.fill(0);
    const [read] = await settle(
      ring,
      ring.submitOp("read_fixed", (at) => prepReadFixed(s, at, fd, buf.address, 4096, 0, 3)),
    );
    assert.equal(read, 10 + text.length); // short read at EOF
    assert.deepEqual(buf.bytes.subarray(10, read), text);

    const [st] = await settle(
      ring,
      ring.submitOp(
        "statx",
        (at) => prepStatx(s, at, -100, pinnedPath.address, 0, 0x7ff, buf.address),
      ),
    );
    assert.equal(st, 0);
    assert.equal(Number(buf.view.getBigUint64(40, true)), 10 + text.length); // stx_size

    // Errors come back as errnos: a bad fd, and a buffer index with no buffer.
    const [badFd, noBuffer, closed] = await settle(
      ring,
      ring.submitOp("write", (at) => prepWrite(s, at, 9999, buf.address, 1, 0)),
      ring.submitOp("read_fixed", (at) => prepReadFixed(s, at, fd, buf.address, 16, 0, 0)),
      ring.submitOp("close", (at) => prepClose(s, at, fd)),
    );
    assert.equal(badFd, -9); // EBADF
    assert.equal(noBuffer, -14); // EFAULT: slot 0 of the sparse table is empty
    assert.equal(closed, 0);
    // submitOp itself rejects with a SystemError naming the call.
    const failing = ring.submitOp("write", (at) => prepWrite(s, at, 9999, 0n, 0, 0));
    failing.catch(() => {});
    await settle(ring);
    await assert.rejects(
      failing,
      (e: Error) => e instanceof SystemError && e.code === "EBADF" && e.syscall === "write",
    );
  } finally {
    await ring.close();
    buf.close();
    iov.close();
    pinnedPath.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "ring: struct io_uring offsets match liburing.h (compiled with cc)",
  ignore: ignore || (!inCI && !await Deno.stat("/usr/include/liburing.h").catch(() => null)),
  async fn() {
    const fields: [string, string][] = [
      ["sq", "sq"],
      ["cq", "cq"],
      ["ringFd", "ring_fd"],
      ["sqKhead", "sq.khead"],
      ["sqKtail", "sq.ktail"],
      ["sqSqes", "sq.sqes"],
      ["sqSqeHead", "sq.sqe_head"],
      ["sqSqeTail", "sq.sqe_tail"],
      ["sqRingMask", "sq.ring_mask"],
      ["sqRingEntries", "sq.ring_entries"],
      ["cqKhead", "cq.khead"],
      ["cqKtail", "cq.ktail"],
      ["cqCqes", "cq.cqes"],
      ["cqRingMask", "cq.ring_mask"],
      ["cqRingEntries", "cq.ring_entries"],
    ];
    const lines = fields.map(([name, c]) => {
      const [outer, inner] = c.split(".");
      const expr = inner
        ? `offsetof(struct io_uring_${outer}, ${inner})`
        : `offsetof(struct io_uring, ${outer})`;
      return `printf("${name} %zu\\n", (size_t)(${expr}));`;
    });
    lines.push(`printf("SIZE %zu\\n", sizeof(struct io_uring));`);
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(
        `${dir}/o.c`,
        `#include <stdio.h>\n#include <stddef.h>\n#include <liburing.h>\nint main(void){\n${
          lines.join("\n")
        }\nreturn 0;}\n`,
      );
      const cc = await new Deno.Command("cc", { args: ["-o", `${dir}/o`, `${dir}/o.c`] }).output();
      assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
      const out = new TextDecoder().decode((await new Deno.Command(`${dir}/o`).output()).stdout);
      const L = IoUringLayout as Record<string, number>;
      const expected = fields.map(([name]) => `${name} ${L[name]}`).concat(`SIZE ${L.SIZE}`);
      assert.deepEqual(out.trim().split("\n"), expected);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test(
  { name: "ring: far more operations than the CQ holds, never reaped in between", ignore },
  async () => {
    // SQ 8, CQ 16: 2000 NOPs pile up completions the kernel must hold back
    // (or refuse new SQEs for); sqe() waits them out instead of throwing, and
    // every completion still reaches its handler exactly once.
    const ring = new Ring({ entries: 8 });
    try {
      let done = 0;
      const ops: Promise<number>[] = [];
      for (let i = 0; i < 2000; i++) {
        ops.push(ring.submitOp("nop", (at) => prepNop(ring.sqes, at)).then((v) => (done++, v)));
      }
      assert.deepEqual(await settle(ring, ...ops), new Array(2000).fill(0));
      assert.equal(done, 2000);
      assert.equal(ring.inFlight, 0);
      assert.equal(ring.hasUnsubmitted, false);
    } finally {
      await ring.close();
    }
  },
);
