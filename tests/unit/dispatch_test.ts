import assert from "node:assert/strict";
import {
  Attr as AttrLayout,
  AttrOut,
  BatchForgetIn,
  Dirent,
  EntryOut,
  FATTR,
  ForgetIn,
  ForgetOne,
  FUSE_LK_FLOCK,
  FUSE_OPEN_KILL_SUIDGID,
  FUSE_WRITE_KILL_SUIDGID,
  GetxattrIn,
  LkIn,
  Opcode,
  OpenIn,
  ReadIn,
  ReleaseIn,
  SetattrIn,
  WriteIn,
} from "../../ops/abi.ts";
import { getU64, setU64 } from "../../ops/codec.ts";
import { Dispatcher } from "../../ops/dispatch.ts";
import { Errno, FuseError, S } from "../../mod.ts";
import type { FileSystem, SetAttr } from "../../mod.ts";
import { arg, FakeExchange, init, request, roundTrip } from "../fake_exchange.ts";

function fixture(fs: FileSystem) {
  const errors: string[] = [];
  const d = new Dispatcher(fs, { onError: (e, op) => errors.push(`${op}: ${e}`) });
  return { d, errors };
}

const fileAttr = { ino: 7, mode: S.IFREG | 0o640, size: 5, uid: 1000, gid: 100 };

Deno.test("dispatch: requests before INIT get EIO; INIT answers and resolves", async () => {
  const { d } = fixture({});
  const early = await roundTrip(d, request(Opcode.GETATTR, 1, arg(16)));
  assert.equal(early.replies[0].error, -Errno.EIO);
  const ex = await init(d);
  assert.equal(ex.replies[0].error, 0);
  const conn = await d.initialized;
  assert.equal(conn.minor, 45);
  assert.equal(conn.maxWrite, 1 << 20);
});

Deno.test("dispatch: unknown opcode and missing methods answer ENOSYS", async () => {
  const { d } = fixture({});
  await init(d);
  for (const op of [9999, Opcode.LOOKUP, Opcode.MKDIR, Opcode.IOCTL, Opcode.SETLK]) {
    const req = request(op, 1, arg(d.argSize(op)), "name");
    const ex = await roundTrip(d, req);
    assert.equal(ex.replies.length, 1, `op ${op}`);
    assert.equal(ex.replies[0].error, -Errno.ENOSYS, `op ${op}`);
    assert.equal(ex.replies[0].unique, req.unique);
  }
});

Deno.test("dispatch: defaults of libfuse for open, release, statfs", async () => {
  const { d } = fixture({});
  await init(d);
  for (const op of [Opcode.OPEN, Opcode.OPENDIR, Opcode.RELEASE, Opcode.RELEASEDIR]) {
    const ex = await roundTrip(d, request(op, 2, arg(d.argSize(op))));
    assert.equal(ex.replies[0].error, 0, `op ${op}`);
  }
  const st = await roundTrip(d, request(Opcode.STATFS, 1));
  assert.equal(st.replies[0].error, 0);
  assert.equal(st.replies[0].view.getUint32(44, true), 255); // namelen
});

Deno.test("dispatch: a request too short for its opcode gets EINVAL", async () => {
  let called = false;
  const { d } = fixture({ read: () => (called = true, new Uint8Array()) });
  await init(d);
  const ex = await roundTrip(d, request(Opcode.READ, 2, arg(ReadIn.SIZE - 8)));
  assert.equal(ex.replies[0].error, -Errno.EINVAL);
  assert.equal(called, false);
});

Deno.test("dispatch: lookup encodes entry_out with the caller's context", async () => {
  const seen: unknown[] = [];
  const { d } = fixture({
    lookup(ctx, parent, name) {
      seen.push([ctx.uid, ctx.gid, ctx.pid, parent, name]);
      if (name !== "file") throw new FuseError(Errno.ENOENT);
      return { nodeId: 42, generation: 3, attr: fileAttr, entryTimeout: 2.5 };
    },
  });
  await init(d);
  const ok = await roundTrip(d, request(Opcode.LOOKUP, 1, undefined, "file"));
  const r = ok.replies[0];
  assert.equal(r.error, 0);
  assert.equal(r.payload.length, EntryOut.SIZE);
  assert.equal(getU64(r.view, EntryOut.nodeid), 42);
  assert.equal(getU64(r.view, EntryOut.generation), 3);
  assert.equal(getU64(r.view, EntryOut.entry_valid), 2);
  assert.equal(r.view.getUint32(EntryOut.entry_valid_nsec, true), 500_000_000);
  assert.equal(getU64(r.view, EntryOut.attr_valid), 1);
  assert.equal(r.view.getUint32(EntryOut.attr + AttrLayout.mode, true), S.IFREG | 0o640);
  assert.equal(getU64(r.view, EntryOut.attr + AttrLayout.size), 5);
  assert.equal(r.view.getUint32(EntryOut.attr + AttrLayout.nlink, true), 1);
  const missing = await roundTrip(d, request(Opcode.LOOKUP, 1, undefined, "nope"));
  assert.equal(missing.replies[0].error, -Errno.ENOENT);
  assert.deepEqual(seen, [[1000, 100, 4242, 1, "file"], [1000, 100, 4242, 1, "nope"]]);
});

Deno.test("dispatch: async methods overlap; rejections and stray errors become errnos", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const { d, errors } = fixture({
    async getattr(_ctx, nodeId) {
      if (nodeId === 2) await gate;
      if (nodeId === 3) throw new FuseError(Errno.EACCES);
      if (nodeId === 4) throw new TypeError("bug in the file system");
      return { ...fileAttr, ino: nodeId };
    },
  });
  await init(d);
  const slow = roundTrip(d, request(Opcode.GETATTR, 2, arg(16)));
  const fast = await roundTrip(d, request(Opcode.GETATTR, 5, arg(16)));
  assert.equal(getU64(fast.replies[0].view, AttrOut.attr + AttrLayout.ino), 5);
  release();
  assert.equal(getU64((await slow).replies[0].view, AttrOut.attr + AttrLayout.ino), 2);
  assert.equal(
    (await roundTrip(d, request(Opcode.GETATTR, 3, arg(16)))).replies[0].error,
    -Errno.EACCES,
  );
  assert.equal(
    (await roundTrip(d, request(Opcode.GETATTR, 4, arg(16)))).replies[0].error,
    -Errno.EIO,
  );
  assert.equal(errors.length, 1);
  assert.match(errors[0], /GETATTR: TypeError: bug in the file system/);
});

Deno.test("dispatch: FORGET and BATCH_FORGET are never answered", async () => {
  const forgotten: [number, number][] = [];
  const { d } = fixture({ forget: (n, c) => void forgotten.push([n, c]) });
  await init(d);
  const one = await roundTrip(
    d,
    request(Opcode.FORGET, 9, arg(ForgetIn.SIZE, (v) => setU64(v, 0, 3))),
  );
  assert.equal(one.replies.length, 0);
  assert.ok(one.released);
  const records = arg(2 * ForgetOne.SIZE, (v) => {
    setU64(v, 0, 10);
    setU64(v, 8, 1);
    setU64(v, 16, 11);
    setU64(v, 24, 2);
  });
  const batch = await roundTrip(
    d,
    request(
      Opcode.BATCH_FORGET,
      0,
      arg(BatchForgetIn.SIZE, (v) => v.setUint32(0, 2, true)),
      records,
    ),
  );
  assert.equal(batch.replies.length, 0);
  assert.deepEqual(forgotten, [[9, 3], [10, 1], [11, 2]]);
  // A file system without forget: still no reply.
  const bare = fixture({});
  await init(bare.d);
  const none = await roundTrip(bare.d, request(Opcode.FORGET, 9, arg(ForgetIn.SIZE)));
  assert.equal(none.replies.length, 0);
});

Deno.test("dispatch: read answers bytes, clipped to the request, or from an fd", async () => {
  const { d } = fixture({
    read: (_c, nodeId, _fh, offset, size) =>
      nodeId === 2
        ? new TextEncoder().encode("0123456789").subarray(offset, offset + size + 5)
        : { fd: 99, offset, length: size },
  });
  await init(d);
  const readArg = (offset: number, size: number) =>
    arg(ReadIn.SIZE, (v) => {
      setU64(v, ReadIn.offset, offset);
      v.setUint32(ReadIn.size, size, true);
    });
  const bytes = await roundTrip(d, request(Opcode.READ, 2, readArg(3, 4)));
  assert.equal(new TextDecoder().decode(bytes.replies[0].payload), "3456");
  const fd = await roundTrip(d, request(Opcode.READ, 3, readArg(0, 4096)));
  assert.equal(fd.replies[0].payload.length, 4096);
  assert.equal(fd.replies[0].payload[100], 0x46);
});

Deno.test("dispatch: write passes the payload and answers the count", async () => {
  let got = "";
  const { d } = fixture({
    write: (
      _c,
      _n,
      _fh,
      offset,
      data,
    ) => (got = `${offset}:${new TextDecoder().decode(data)}`, data.length),
  });
  await init(d);
  const payload = new TextEncoder().encode("hello");
  const w = arg(WriteIn.SIZE, (v) => {
    setU64(v, WriteIn.offset, 10);
    v.setUint32(WriteIn.size, payload.length, true);
  });
  const ex = await roundTrip(d, request(Opcode.WRITE, 2, w, payload));
  assert.equal(ex.replies[0].view.getUint32(0, true), 5);
  assert.equal(got, "10:hello");
});

Deno.test("dispatch: setattr decodes only the valid fields", async () => {
  let changes: SetAttr | undefined;
  const { d } = fixture({ setattr: (_c, _n, c) => (changes = c, fileAttr) });
  await init(d);
  const a = arg(SetattrIn.SIZE, (v) => {
    v.setUint32(SetattrIn.valid, FATTR.MODE | FATTR.SIZE | FATTR.MTIME | FATTR.ATIME_NOW, true);
    v.setUint32(SetattrIn.mode, 0o600, true);
    setU64(v, SetattrIn.size, 123);
    setU64(v, SetattrIn.mtime, 1_700_000_000);
    v.setUint32(SetattrIn.mtimensec, 5, true);
    v.setUint32(SetattrIn.uid, 77, true); // not valid: must be ignored
  });
  const ex = await roundTrip(d, request(Opcode.SETATTR, 2, a));
  assert.equal(ex.replies[0].error, 0);
  assert.deepEqual(changes, {
    mode: 0o600,
    size: 123,
    atime: "now",
    mtime: { sec: 1_700_000_000, nsec: 5 },
  });
});

Deno.test("dispatch: readdir fills dirents until the buffer is full", async () => {
  const names = Array.from({ length: 100 }, (_, i) => `entry-${i}`);
  const { d } = fixture({
    readdir(_c, _n, _fh, offset, list) {
      for (let i = offset; i < names.length; i++) {
        if (!list.add(names[i], i + 10, S.IFREG, i + 1)) break;
      }
    },
  });
  await init(d);
  const ex = await roundTrip(
    d,
    request(Opcode.READDIR, 1, arg(ReadIn.SIZE, (v) => v.setUint32(ReadIn.size, 256, true))),
  );
  const { payload, view } = ex.replies[0];
  assert.ok(payload.length <= 256 && payload.length > 200, `${payload.length}`);
  const seen: string[] = [];
  for (let at = 0; at < payload.length;) {
    const len = view.getUint32(at + Dirent.namelen, true);
    seen.push(new TextDecoder().decode(payload.subarray(at + Dirent.SIZE, at + Dirent.SIZE + len)));
    assert.equal(getU64(view, at + Dirent.off), seen.length);
    assert.equal(view.getUint32(at + Dirent.type, true), S.IFREG >> 12);
    at += (Dirent.SIZE + len + 7) & ~7;
  }
  assert.deepEqual(seen, names.slice(0, seen.length));
});

Deno.test("dispatch: getxattr answers the size when asked, ERANGE when too small", async () => {
  const value = new TextEncoder().encode("some value");
  const { d } = fixture({ getxattr: () => value, listxattr: () => ["user.a", "user.bb"] });
  await init(d);
  const get = (size: number) =>
    roundTrip(
      d,
      request(
        Opcode.GETXATTR,
        2,
        arg(GetxattrIn.SIZE, (v) => v.setUint32(0, size, true)),
        "user.x",
      ),
    );
  assert.equal((await get(0)).replies[0].view.getUint32(0, true), value.length);
  assert.deepEqual((await get(64)).replies[0].payload, value);
  assert.equal((await get(3)).replies[0].error, -Errno.ERANGE);
  const list = await roundTrip(
    d,
    request(Opcode.LISTXATTR, 2, arg(GetxattrIn.SIZE, (v) => v.setUint32(0, 64, true))),
  );
  assert.equal(new TextDecoder().decode(list.replies[0].payload), "user.a\0user.bb\0");
});

Deno.test("dispatch: a name that is not UTF-8 is refused with EILSEQ", async () => {
  const { d } = fixture({ lookup: () => ({ nodeId: 2, attr: fileAttr }) });
  await init(d);
  const ex = await roundTrip(
    d,
    request(Opcode.LOOKUP, 1, undefined, new Uint8Array([0xff, 0xfe, 0])),
  );
  assert.equal(ex.replies[0].error, -Errno.EILSEQ);
});

Deno.test("dispatch: a read larger than the reply slot is clipped to the slot", async () => {
  const asked: number[] = [];
  const { d } = fixture({
    read: (_c, _n, _fh, offset, size) => (asked.push(size), { fd: 5, offset, length: 1 << 20 }),
  });
  await init(d);
  const big = arg(ReadIn.SIZE, (v) => v.setUint32(ReadIn.size, 1 << 20, true));
  const ex = await roundTrip(d, request(Opcode.READ, 2, big), 8192);
  assert.deepEqual(asked, [8192]);
  assert.equal(ex.replies[0].payload.length, 8192);
});

Deno.test("dispatch: a handle with a backing fd is read and written without the method, kill-suid flag and all, until RELEASE", async () => {
  const calls: string[] = [];
  const { d } = fixture({
    open: (
      ctx,
      _n,
      _flags,
    ) => (calls.push(`open kill=${ctx.killSuidgid}`), { fh: 7, backingFd: 5 }),
    read: () => (calls.push("read"), new Uint8Array(3)),
    write: () => (calls.push("write"), 0),
  });
  await init(d);
  const open = arg(
    OpenIn.SIZE,
    (v) => v.setUint32(OpenIn.open_flags, FUSE_OPEN_KILL_SUIDGID, true),
  );
  assert.equal((await roundTrip(d, request(Opcode.OPEN, 2, open))).replies[0].error, 0);
  // A WRITE to the handle goes to its fd, with the kernel's request to clear setuid.
  const fdWrites: string[] = [];
  const payload = new TextEncoder().encode("abc");
  const w = request(
    Opcode.WRITE,
    2,
    arg(WriteIn.SIZE, (v) => {
      setU64(v, WriteIn.fh, 7);
      v.setUint32(WriteIn.size, 3, true);
      v.setUint32(WriteIn.write_flags, FUSE_WRITE_KILL_SUIDGID, true);
    }),
    payload,
  );
  const ex = new class extends FakeExchange {
    override writeDataToFd(fd: number, offset: number, killSuidgid: boolean): number {
      fdWrites.push(`fd ${fd} at ${offset} kill=${killSuidgid}`);
      return this.dataLength;
    }
  }(w.bytes, d.argSize(Opcode.WRITE));
  d.dispatch(ex);
  await ex.done;
  assert.equal(ex.replies[0].view.getUint32(0, true), 3);
  assert.deepEqual(fdWrites, ["fd 5 at 0 kill=true"]);
  const readOf = () =>
    request(
      Opcode.READ,
      2,
      arg(ReadIn.SIZE, (v) => {
        setU64(v, ReadIn.fh, 7);
        v.setUint32(ReadIn.size, 10, true);
      }),
    );
  assert.equal((await roundTrip(d, readOf())).replies[0].payload[0], 0x46); // from the fd
  // RELEASE takes the fd out of service even with no release method: reads go to `read`.
  const release = arg(ReleaseIn.SIZE, (v) => setU64(v, ReleaseIn.fh, 7));
  assert.equal((await roundTrip(d, request(Opcode.RELEASE, 2, release))).replies[0].error, 0);
  assert.equal((await roundTrip(d, readOf())).replies[0].payload.length, 3);
  assert.deepEqual(calls, ["open kill=true", "read"]);
});

Deno.test("dispatch: SETLK with FUSE_LK_FLOCK is flock, without it a POSIX lock; SETLKW waits", async () => {
  const calls: string[] = [];
  const { d } = fixture({
    setlk: (_c, _n, fh, owner, lock, wait) =>
      void calls.push(`setlk ${fh} ${owner} ${lock.type} ${lock.start}-${lock.end} wait=${wait}`),
    flock: (_c, _n, fh, owner, type, wait) =>
      void calls.push(`flock ${fh} ${owner} ${type} wait=${wait}`),
  });
  await init(d);
  const lk = (flags: number) =>
    arg(LkIn.SIZE, (v) => {
      setU64(v, LkIn.fh, 3);
      v.setBigUint64(LkIn.owner, 0xffff_0000_0000_0001n, true);
      setU64(v, LkIn.lk + 8, 99); // end
      v.setUint32(LkIn.lk + 16, 1, true); // F_WRLCK
      v.setUint32(LkIn.lk_flags, flags, true);
    });
  for (const [op, flags] of [[Opcode.SETLK, 0], [Opcode.SETLKW, FUSE_LK_FLOCK]]) {
    assert.equal((await roundTrip(d, request(op, 2, lk(flags)))).replies[0].error, 0);
  }
  assert.deepEqual(calls, [
    "setlk 3 18446462598732840961 1 0-99 wait=false",
    "flock 3 18446462598732840961 1 wait=true",
  ]);
});
