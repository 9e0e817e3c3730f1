// BackingIo: the ring and direct implementations give the same results on a
// scratch directory, and a call that blocks in the kernel does not hold up
// the calls behind it on the ring.
import assert from "node:assert/strict";
import { AT, check, close, cstr, libc, O } from "../../ffi/libc.ts";
import { SystemError } from "../../ffi/errno.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import { DirectIo } from "../../server/io/direct_io.ts";
import { RingIo } from "../../server/io/ring_io.ts";
import { uringMissing } from "../helpers.ts";

const STATX_BASIC_STATS = 0x7ff;
const FALLOC_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01;
const asRoot = libc.geteuid() === 0;

function statx(io: BackingIo, dirfd: number, name: string, flags = AT.SYMLINK_NOFOLLOW) {
  const buf = new Uint8Array(256);
  return io.statx(dirfd, cstr(name), flags, STATX_BASIC_STATS, buf).then(() => {
    const v = new DataView(buf.buffer);
    return {
      mode: v.getUint16(28, true),
      uid: v.getUint32(20, true),
      gid: v.getUint32(24, true),
      nlink: v.getUint32(16, true),
      size: Number(v.getBigUint64(40, true)),
      blocks: Number(v.getBigUint64(48, true)),
    };
  });
}

/** One scenario, run against either implementation; returns what it saw. */
async function scenario(io: BackingIo, dir: string): Promise<unknown[]> {
  const seen: unknown[] = [];
  const d = check(libc.open(cstr(dir), O.PATH | O.DIRECTORY | O.CLOEXEC, 0), "open");
  try {
    await io.mkdirat(d, cstr("sub"), 0o750);
    const fd = await io.openat(d, cstr("sub/f"), O.CREAT | O.RDWR | O.CLOEXEC, 0o640);
    const data = new Uint8Array(3 * 4096).map((_, i) => i % 251);
    seen.push(await io.pwrite(fd, data, 0));
    await io.fsync(fd, false);
    await io.fsync(fd, true);
    await io.fallocate(fd, FALLOC_PUNCH_HOLE_KEEP_SIZE, 4096, 4096);
    const back = new Uint8Array(3 * 4096);
    seen.push(await io.pread(fd, back, 0));
    seen.push(back.subarray(4096, 8192).every((b) => b === 0), back[8192] === data[8192]);
    await io.ftruncate(fd, 100);
    await io.close(fd);
    seen.push((await statx(io, d, "sub/f")).size);
    await io.symlinkat(cstr("f"), d, cstr("sub/l"));
    await io.linkat(d, cstr("sub/f"), d, cstr("sub/g"), 0);
    seen.push((await statx(io, d, "sub/g")).nlink);
    await io.renameat(d, cstr("sub/g"), d, cstr("sub/h"), 0);
    // RENAME_NOREPLACE refuses to replace; RENAME_EXCHANGE swaps.
    await assert.rejects(io.renameat(d, cstr("sub/h"), d, cstr("sub/l"), 1), /EEXIST/);
    await io.renameat(d, cstr("sub/h"), d, cstr("sub/l"), 2);
    seen.push(((await statx(io, d, "sub/h")).mode & 0o170000).toString(8));
    await io.unlinkat(d, cstr("sub/h"), 0);
    await io.unlinkat(d, cstr("sub/l"), 0);
    await io.unlinkat(d, cstr("sub/f"), 0);
    await io.unlinkat(d, cstr("sub"), AT.REMOVEDIR);
    // Errors name the call and carry the errno.
    const err = await io.openat(d, cstr("missing"), O.RDONLY, 0).catch((e) => e);
    assert.ok(err instanceof SystemError);
    seen.push(err.code, err.syscall);
    if (asRoot) {
      // A creating call as another user: what it creates is theirs.
      await io.mkdirat(d, cstr("theirs"), 0o700, { uid: 65534, gid: 65534 });
      const st = await statx(io, d, "theirs");
      seen.push(st.uid, st.gid);
      await io.unlinkat(d, cstr("theirs"), AT.REMOVEDIR);
      // and the server's own credentials are back afterwards.
      await io.mkdirat(d, cstr("mine"), 0o700);
      seen.push((await statx(io, d, "mine")).uid);
      await io.unlinkat(d, cstr("mine"), AT.REMOVEDIR);
    }
  } finally {
    close(d);
  }
  return seen;
}

Deno.test("backing io: ring and direct calls agree", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.chmod(dir, 0o1777); // other users may create here
  try {
    const direct = await scenario(new DirectIo(), dir);
    assert.deepEqual(direct.slice(0, 6), [12288, 12288, true, true, 100, 2]);
    assert.deepEqual(direct.slice(6, 9), ["120000", "ENOENT", "openat"]);
    if (asRoot) assert.deepEqual(direct.slice(9), [65534, 65534, 0]);
    if (uringMissing) return console.error(`ring half skipped: ${uringMissing}`);
    const io = RingIo.own();
    try {
      assert.deepEqual(await scenario(io, dir), direct);
    } finally {
      await io.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "backing io: a call blocked in the kernel does not hold up the next ones",
  ignore: uringMissing !== null,
  async fn() {
    const dir = await Deno.makeTempDir();
    const io = RingIo.own();
    try {
      const fifo = `${dir}/fifo`;
      check(libc.mknodat(AT.FDCWD, cstr(fifo), 0o10600, 0n), "mknodat");
      const spare = check(libc.open(cstr(fifo), O.RDONLY | O.NONBLOCK | O.CLOEXEC, 0), "open");
      const writer = check(libc.open(cstr(fifo), O.WRONLY | O.CLOEXEC, 0), "open");
      const reader = check(libc.open(cstr(fifo), O.RDONLY | O.CLOEXEC, 0), "open");
      // A read from an empty pipe waits until a writer writes.
      let done = false;
      const buf = new Uint8Array(16);
      const blocked = io.pread(reader, buf, -1).then((n) => {
        done = true;
        return n;
      });
      for (let i = 0; i < 50; i++) {
        const st = await statx(io, AT.FDCWD, dir);
        assert.equal(st.mode & 0o170000, 0o040000);
      }
      assert.equal(done, false, "the read completed before anything was written");
      const hello = cstr("hello");
      libc.write(writer, Deno.UnsafePointer.of(hello), 5n);
      assert.equal(await blocked, 5);
      assert.equal(new TextDecoder().decode(buf.subarray(0, 5)), "hello");
      for (const fd of [spare, writer, reader]) close(fd);
    } finally {
      await io.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
