// Hostile requests, without a mount: truncated headers, lengths that lie,
// names without NUL, oversized counts and every opcode (unknown ones too),
// fed to the passthrough through each transport's request layout: the real
// /dev/fuse transport reading a socket, and io_uring's header-plus-payload
// entry. Every request must get exactly one well-formed reply (or none for
// FORGET and a request whose header lies about its length), nothing may
// throw into the event loop, and the run must end.
//
// FUZZ_SEED and FUZZ_COUNT change the fixed seed and the count.
import assert from "node:assert/strict";
import { Errno } from "../../ffi/errno.ts";
import { check, close, libc } from "../../ffi/libc.ts";
import {
  InHeader,
  Opcode,
  opcodeName,
  OutHeader,
  UringEntInOut,
  UringReqHeader,
} from "../../ops/abi.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import { Dispatcher } from "../../ops/dispatch.ts";
import { Passthrough } from "../../fs/passthrough.ts";
import { DevTransport } from "../../server/dev/transport.ts";
import { DirectIo } from "../../server/io/direct_io.ts";
import { off } from "../../ffi/libc.ts";
import { SlotExchange } from "../../server/io/slot_exchange.ts";
import { fitUringRequest } from "../../server/uring/entry.ts";
import { FakeExchange } from "../fake_exchange.ts";
import { noneUnhandled, run } from "../helpers.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261123);
const COUNT = Number(Deno.env.get("FUZZ_COUNT") ?? 3000);
const inCI = Deno.env.get("CI") === "true";
const isRoot = libc.geteuid() === 0;

const net = Deno.dlopen("libc.so.6", {
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
}).symbols;

/** A small deterministic generator (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const KNOWN = Object.values(Opcode) as number[];
// DESTROY ends the file system (every node id is stale after it); the kernel
// sends it last, and so does this test.
const PICKED = KNOWN.filter((op) => op !== Opcode.DESTROY);
const UNKNOWN = [0, 19, 54, 60, 999, 4095, 4097, 0x7fffffff, 0xffffffff].filter((op) =>
  !KNOWN.includes(op)
);
const enc = new TextEncoder();
const NAMES: Uint8Array[] = [
  "a",
  "b",
  "f",
  "dir",
  ".",
  "..",
  "../escape",
  "x/y",
  "",
  "n".repeat(255),
  "n".repeat(256),
  "n".repeat(5000),
].map((s) => enc.encode(s)).concat([new Uint8Array([0xff, 0xfe, 0x41])]);

/** Opcodes whose argument starts with the file handle. */
const FH_FIRST = new Set<number>([
  Opcode.READ,
  Opcode.WRITE,
  Opcode.RELEASE,
  Opcode.FLUSH,
  Opcode.FSYNC,
  Opcode.READDIR,
  Opcode.READDIRPLUS,
  Opcode.RELEASEDIR,
  Opcode.FSYNCDIR,
  Opcode.GETLK,
  Opcode.SETLK,
  Opcode.SETLKW,
  Opcode.LSEEK,
  Opcode.COPY_FILE_RANGE,
  Opcode.COPY_FILE_RANGE_64,
  Opcode.FALLOCATE,
]);

/** What one generated request is and what its reply must be. */
interface Case {
  bytes: Uint8Array;
  unique: number;
  opcode: number;
  /** The header's len is the request's true length. */
  honest: boolean;
}

/** Builds hostile requests, learning node ids and handles from replies. */
class Generator {
  nodes: bigint[] = [1n, 0n, 2n, 999999n, 2n ** 53n, 2n ** 64n - 1n];
  handles: bigint[] = [0n, 1n, 3n, 2n ** 32n, 2n ** 64n - 1n];
  #unique = 100n;
  constructor(readonly r: () => number, readonly argSize: (opcode: number) => number) {}

  pick<T>(from: T[]): T {
    return from[Math.floor(this.r() * from.length)];
  }

  /** An interesting 64-bit value for an argument field. */
  value(): bigint {
    const x = this.r();
    if (x < 0.3) return this.pick(this.handles);
    if (x < 0.5) return BigInt(Math.floor(this.r() * 4096));
    if (x < 0.6) return this.pick(this.nodes);
    if (x < 0.8) return this.pick([0n, 1n, 0x7fffffffn, 0xffffffffn, 2n ** 63n, 2n ** 64n - 1n]);
    return BigInt(Math.floor(this.r() * 2 ** 32)) << BigInt(Math.floor(this.r() * 32));
  }

  next(): Case {
    const opcode = this.r() < 0.9 ? this.pick(PICKED) : this.pick(UNKNOWN);
    const want = this.argSize(opcode);
    // Mostly the right size, sometimes short or long.
    const x = this.r();
    const size = x < 0.8 ? want : x < 0.9 ? Math.floor(this.r() * want) : want + 8;
    const arg = new Uint8Array(size);
    const av = new DataView(arg.buffer);
    for (let o = 0; o + 8 <= size; o += 8) {
      av.setBigUint64(o, this.r() < 0.5 ? this.value() : 0n, true);
    }
    // Small modes, flags and sizes are more useful than random ones.
    if (size >= 8 && this.r() < 0.5) {
      av.setUint32(
        4 * Math.floor(this.r() * Math.floor(size / 4)),
        Math.floor(this.r() * 0o200000),
        true,
      );
    }
    // Most requests on a handle name one that is open.
    if (size >= 8 && FH_FIRST.has(opcode) && this.r() < 0.7) {
      av.setBigUint64(0, this.pick(this.handles.slice(5)) ?? 0n, true);
    }
    const parts: Uint8Array[] = [];
    const names = Math.floor(this.r() * 3);
    for (let i = 0; i < names; i++) {
      parts.push(this.pick(NAMES));
      if (this.r() < 0.9) parts.push(new Uint8Array(1)); // the NUL, usually
    }
    if (this.r() < 0.2) {
      parts.push(Uint8Array.from({ length: Math.floor(this.r() * 9000) }, () => this.r() * 256));
    }
    const body = parts.reduce((n, p) => n + p.length, 0);
    // A WRITE or READ whose size is the data it carries, or a page, mostly.
    if ((opcode === Opcode.WRITE || opcode === Opcode.READ) && size >= 24 && this.r() < 0.7) {
      av.setUint32(16, opcode === Opcode.WRITE ? body : 4096, true);
      av.setBigUint64(8, BigInt(Math.floor(this.r() * 8192)), true);
    }
    const len = InHeader.SIZE + size + body;
    const bytes = new Uint8Array(len);
    const v = new DataView(bytes.buffer);
    const honest = this.r() < 0.95;
    v.setUint32(InHeader.len, honest ? len : len + 1 + Math.floor(this.r() * 100), true);
    v.setUint32(InHeader.opcode, opcode, true);
    const unique = this.#unique += 2n;
    v.setBigUint64(InHeader.unique, unique, true);
    v.setBigUint64(InHeader.nodeid, this.pick(this.nodes), true);
    v.setUint32(InHeader.uid, this.r() < 0.7 ? 0 : 1000, true);
    v.setUint32(InHeader.gid, this.r() < 0.7 ? 0 : 1000, true);
    v.setUint32(InHeader.pid, 4242, true);
    bytes.set(arg, InHeader.SIZE);
    let at = InHeader.SIZE + size;
    for (const p of parts) bytes.set(p, (at += p.length) - p.length);
    return { bytes, unique: Number(unique), opcode, honest };
  }

  /** Learn node ids and handles from a successful reply. */
  learn(opcode: number, payload: DataView): void {
    const entryOps: number[] = [
      Opcode.LOOKUP,
      Opcode.MKDIR,
      Opcode.MKNOD,
      Opcode.SYMLINK,
      Opcode.LINK,
    ];
    if (payload.byteLength >= 8 && (entryOps.includes(opcode) || opcode === Opcode.CREATE)) {
      this.nodes.push(payload.getBigUint64(0, true));
    }
    if (opcode === Opcode.CREATE && payload.byteLength >= 128 + 8) {
      this.handles.push(payload.getBigUint64(128, true));
    }
    if ((opcode === Opcode.OPEN || opcode === Opcode.OPENDIR) && payload.byteLength >= 8) {
      this.handles.push(payload.getBigUint64(0, true));
    }
  }
}

/** What every reply must look like, whichever layout carried it. */
function checkReply(
  c: Case,
  error: number,
  payload: number,
  capacity: number,
  tooLong = false,
): void {
  assert.ok(error <= 0 && error > -4096, `opcode ${c.opcode}: error ${error}`);
  assert.ok(payload >= 0 && payload <= capacity, `opcode ${c.opcode}: payload ${payload}`);
  if (error !== 0) assert.equal(payload, 0, `opcode ${c.opcode}: an error with a payload`);
  if (tooLong) assert.equal(error, -Errno.EINVAL, "a payload larger than its memory");
  else if (UNKNOWN.includes(c.opcode)) assert.equal(error, -Errno.ENOSYS);
}

/** A nodev tmpfs of 16 MiB: no write the fuzzer makes can reach a device or fill a disk. */
async function withScratch(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denofuse-fuzz-" });
  const m = await run("mount", "-t", "tmpfs", "-o", "size=16m,nodev,nosuid,mode=0777", "fuzz", dir);
  assert.equal(m.code, 0, m.stderr);
  try {
    await fn(dir);
  } finally {
    await run("umount", "-l", dir);
    await Deno.remove(dir, { recursive: true });
  }
}

const ignore = !inCI && !isRoot;

/**
 * A fuzz test: `body` drives a dispatcher over a fresh passthrough on a
 * scratch tmpfs. Nothing may go unhandled, and nothing but a failed backing
 * call (a SystemError) may reach `onError`.
 */
function fuzzTest(name: string, body: (d: Dispatcher) => Promise<void>): void {
  Deno.test(
    { name, ignore, sanitizeResources: false, sanitizeOps: false },
    () =>
      withScratch((dir) =>
        noneUnhandled(async () => {
          const errors: string[] = [];
          const fs = new Passthrough(dir);
          const d = new Dispatcher(fs, {
            onError: (e, op) => errors.push(`${op}: ${(e as Error)?.stack ?? e}`),
          });
          try {
            await body(d);
          } finally {
            fs.destroy();
          }
          assert.deepEqual(
            errors.filter((e) => !e.includes("SystemError")).map((e) => e.slice(0, 300)),
            [],
          );
        })
      ),
  );
}

fuzzTest(
  `fuzz: the /dev/fuse transport over a socket, ${COUNT} hostile requests (seed ${SEED})`,
  async (d) => {
    // SOCK_SEQPACKET keeps each request and reply one message, as /dev/fuse does.
    const pair = new Int32Array(2);
    assert.equal(
      net.socketpair(1, 5 | 0o4000, /* SOCK_NONBLOCK */ 0, new Uint8Array(pair.buffer)),
      0,
    );
    const [ours, theirs] = pair;
    const transport = new DevTransport(theirs, d, 16, 128 * 1024 + 4096);
    const serving = transport.run();
    const replies = new Map<number, { error: number; payload: Uint8Array }>();
    const buf = new Uint8Array(256 * 1024);
    const drain = () => {
      for (;;) {
        const n = libc.read(ours, Deno.UnsafePointer.of(buf), BigInt(buf.length));
        if (n <= 0) return;
        const v = new DataView(buf.buffer, 0, n);
        assert.ok(n >= OutHeader.SIZE);
        assert.equal(v.getUint32(OutHeader.len, true), n);
        const unique = Number(v.getBigUint64(OutHeader.unique, true));
        assert.ok(!replies.has(unique), `two replies to ${unique}`);
        replies.set(unique, {
          error: v.getInt32(OutHeader.error, true),
          payload: buf.slice(OutHeader.SIZE, n),
        });
      }
    };
    const send = (bytes: Uint8Array) => {
      for (;;) {
        const n = libc.write(ours, Deno.UnsafePointer.of(bytes), BigInt(bytes.length));
        if (n === bytes.length) return;
        drain(); // the socket is full: let the transport catch up
      }
    };
    const sent = new Map<number, Case>();
    const wait = async (unique: number) => {
      const start = Date.now();
      let interrupted = false;
      while (!replies.has(unique)) {
        drain();
        // A request that waits (SETLKW on a lock another handle holds) is
        // interrupted, as the kernel does when its caller gets a signal.
        if (!interrupted && Date.now() - start > PATIENCE_MS) {
          send(interruptBytes(unique));
          interrupted = true;
        }
        if (Date.now() - start > 10_000) {
          const c = sent.get(unique);
          throw new Error(`no reply to request ${unique} (${c ? opcodeName(c.opcode) : "?"})`);
        }
        await new Promise((r) => setTimeout(r, 1));
      }
      return replies.get(unique)!;
    };
    try {
      const initReq = initBytes();
      send(initReq.bytes);
      assert.equal((await wait(initReq.unique)).error, 0);
      const gen = new Generator(prng(SEED), (op) => d.argSize(op));
      const cases: Case[] = [];
      for (let i = 0; i < COUNT; i++) {
        const c = gen.next();
        cases.push(c);
        sent.set(c.unique, c);
        send(c.bytes);
        // Keep a few in flight, and learn from replies as they come.
        if (i % 8 === 7) {
          const settle = cases.slice(-8).filter(expectsReply);
          for (const s of settle) {
            const r = await wait(s.unique);
            if (r.error === 0) gen.learn(s.opcode, new DataView(r.payload.buffer));
          }
        }
      }
      for (const c of cases.filter(expectsReply)) {
        const r = await wait(c.unique);
        checkReply(c, r.error, r.payload.length, 128 * 1024);
        if (c.bytes.length - InHeader.SIZE < d.argSize(c.opcode) && !UNKNOWN.includes(c.opcode)) {
          assert.equal(r.error, -Errno.EINVAL, `short argument of opcode ${c.opcode}`);
        }
      }
      await new Promise((r) => setTimeout(r, 50));
      drain();
      for (const c of cases.filter((c) => !expectsReply(c))) {
        // A malformed INTERRUPT or NOTIFY_REPLY may be refused (EINVAL).
        const r = replies.get(c.unique);
        if ((c.opcode === Opcode.INTERRUPT || c.opcode === Opcode.NOTIFY_REPLY) && r) {
          assert.ok(r.error < 0);
        } else if (c.opcode !== Opcode.INTERRUPT && c.opcode !== Opcode.NOTIFY_REPLY) {
          assert.ok(!r, `a reply to ${c.opcode} that needs none`);
        }
      }
      const answered = cases.filter(expectsReply).length;
      const succeeded = new Set(
        cases.filter((c) => replies.get(c.unique)?.error === 0).map((c) => opcodeName(c.opcode)),
      );
      console.log(
        `  ${answered} replies checked, ${cases.length - answered} without reply; ` +
          `${succeeded.size} opcodes succeeded at least once: ${[...succeeded].join(" ")}`,
      );
      assert.ok(answered > COUNT / 2);
      // Deep enough to matter: hostile requests also reach working nodes and handles.
      assert.ok(succeeded.size >= 15, `only ${succeeded.size} opcodes ever succeeded`);
      for (const op of ["OPEN", "RELEASE"]) {
        assert.ok(succeeded.has(op), `no ${op} ever succeeded`);
      }
    } finally {
      transport.stop();
      close(ours); // the transport's read then fails: its loop ends
      await serving.catch(() => {});
      await transport.close();
      close(theirs);
    }
  },
);

/** FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY and requests whose header lies get no reply. */
function expectsReply(c: Case): boolean {
  return c.honest && !NO_REPLY.has(c.opcode);
}
const NO_REPLY = new Set<number>([
  Opcode.FORGET,
  Opcode.BATCH_FORGET,
  Opcode.INTERRUPT,
  Opcode.NOTIFY_REPLY,
]);

/** How long a request may wait before the test interrupts it. */
const PATIENCE_MS = 500;

/** An INTERRUPT of request `target`. */
function interruptBytes(target: number): Uint8Array {
  const bytes = new Uint8Array(InHeader.SIZE + 8);
  const v = new DataView(bytes.buffer);
  v.setUint32(InHeader.len, bytes.length, true);
  v.setUint32(InHeader.opcode, Opcode.INTERRUPT, true);
  v.setBigUint64(InHeader.unique, BigInt(target) | (1n << 63n), true); // FUSE_INT_REQ_BIT
  v.setBigUint64(InHeader.SIZE, BigInt(target), true);
  return bytes;
}

function initBytes(): { bytes: Uint8Array; unique: number } {
  const bytes = new Uint8Array(InHeader.SIZE + 104);
  const v = new DataView(bytes.buffer);
  v.setUint32(InHeader.len, bytes.length, true);
  v.setUint32(InHeader.opcode, Opcode.INIT, true);
  v.setBigUint64(InHeader.unique, 2n, true);
  v.setUint32(InHeader.SIZE, 7, true);
  v.setUint32(InHeader.SIZE + 4, 45, true);
  v.setUint32(InHeader.SIZE + 8, 131072, true);
  return { bytes, unique: 2 };
}

/** The io_uring entry layout: header and argument in the header buffer, names and data in the payload. */
class FuzzEntry extends SlotExchange {
  readonly io: BackingIo = new DirectIo();
  replies: { error: number; length: number }[] = [];
  #settle!: () => void;
  readonly done = new Promise<void>((r) => this.#settle = r);

  reply(_unique: number, error: number, length: number): void {
    this.replies.push({ error, length });
    this.#settle();
  }

  noReply(): void {
    this.reply(0, -Errno.EIO, 0); // as the transport does: an entry always commits
  }

  protected readInto(fd: number, offset: number, length: number): number {
    const at = Deno.UnsafePointer.offset(Deno.UnsafePointer.of(this.outBytes)!, this.outOffset);
    return check(libc.pread64(fd, at!, BigInt(length), off(offset)), "pread");
  }

  protected writeFrom(fd: number, offset: number, length: number): number {
    const at = Deno.UnsafePointer.offset(Deno.UnsafePointer.of(this.data)!, this.dataOffset);
    return check(libc.pwrite64(fd, at!, BigInt(length), off(offset)), "pwrite");
  }
}

fuzzTest(
  `fuzz: the io_uring entry layout, ${COUNT} hostile requests (seed ${SEED})`,
  async (d) => {
    const slotSize = 64 * 1024;
    const dispatch = async (c: Case, lie: number) => {
      const header = new DataView(new ArrayBuffer(UringReqHeader.SIZE));
      const payload = new DataView(new ArrayBuffer(slotSize));
      const entry = new FuzzEntry(header, 0, UringReqHeader.op_in, payload, 0, slotSize);
      const headBytes = new Uint8Array(header.buffer);
      // The kernel's split: fuse_in_header in in_out, the argument in op_in, the rest in the payload.
      headBytes.set(c.bytes.subarray(0, InHeader.SIZE));
      const argSize = Math.min(d.argSize(c.opcode), c.bytes.length - InHeader.SIZE);
      headBytes.set(c.bytes.subarray(InHeader.SIZE, InHeader.SIZE + Math.min(argSize, 128)), 128);
      const rest = c.bytes.subarray(InHeader.SIZE + argSize, InHeader.SIZE + argSize + slotSize);
      new Uint8Array(payload.buffer).set(rest);
      const ent = UringReqHeader.ring_ent_in_out + UringEntInOut.payload_sz;
      header.setUint32(ent, rest.length + lie, true);
      const refused = fitUringRequest(entry, c.opcode, d.argSize(c.opcode), slotSize);
      if (refused) entry.reply(0, -refused, 0);
      else d.dispatch(entry);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const patience = setTimeout(() => {
        // INTERRUPT always comes over /dev/fuse: the one-buffer layout.
        const interrupt = interruptBytes(c.unique);
        d.dispatch(new FakeExchange(interrupt, d.argSize(Opcode.INTERRUPT)));
      }, PATIENCE_MS);
      await Promise.race([
        entry.done,
        new Promise((_, reject) =>
          timer = setTimeout(() => reject(new Error(`no reply to opcode ${c.opcode}`)), 10_000)
        ),
      ]);
      clearTimeout(timer);
      clearTimeout(patience);
      await null;
      assert.equal(
        entry.replies.length,
        1,
        `opcode ${c.opcode}: ${entry.replies.length} replies`,
      );
      const [r] = entry.replies;
      checkReply(c, r.error, r.length, slotSize, lie > slotSize);
      if (r.error === 0) {
        gen.learn(c.opcode, new DataView(payload.buffer, 0, Math.max(r.length, 0)));
      }
    };
    const gen = new Generator(prng(SEED + 1), (op) => d.argSize(op));
    const init = initBytes();
    await dispatch({ ...init, opcode: Opcode.INIT, honest: true }, 0);
    const r = prng(SEED + 2);
    for (let i = 0; i < COUNT; i++) {
      // payload_sz is the kernel's word: sometimes more than arrived, or than fits.
      const x = r();
      await dispatch(gen.next(), x < 0.9 ? 0 : x < 0.95 ? 100 : slotSize + 1);
    }
  },
);
