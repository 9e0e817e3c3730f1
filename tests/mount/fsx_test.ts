// fsx-style random operations (after the kernel's fsx): one file through the
// mount gets thousands of seeded random writes, reads, truncates, mmap reads
// and writes, O_DIRECT reads and writes and reopens, checked after each step
// against a model in memory, and at the end against the backing file read
// directly. It runs with the kernel moving the data (FUSE_PASSTHROUGH) and
// with the server moving it, where page cache, mmap and O_DIRECT meet.
import assert from "node:assert/strict";
import { errno, libc, O } from "../../ffi/libc.ts";
import { PinnedRegion } from "../../ffi/memory.ts";
import { closeFile, fstatFile, openFile, preadFile, pwriteFile } from "../../fs/files.ts";
import { dataPathArgs, dataPathTest, withPassthrough } from "../helpers.ts";

const OPS = 10000;
const MAX_SIZE = 1 << 20;
const MAX_IO = 64 << 10;
const PAGE = 4096;
const PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;

/** xorshift32: the same sequence for the same seed, so a failure can be replayed. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/** A shared mapping of `length` bytes of the file open at `fd`, from `offset`. */
function mapping(fd: number, length: number, offset: number, prot: number): Deno.PointerObject {
  const p = libc.mmap(null, BigInt(length), prot, MAP_SHARED, fd, BigInt(offset));
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    throw new Error(`mmap: errno ${errno()}`);
  }
  return p;
}

function unmap(p: Deno.PointerObject, length: number): void {
  if (libc.munmap(p, BigInt(length)) !== 0) throw new Error(`munmap: errno ${errno()}`);
}

/** The model: the bytes the file must hold. */
class Model {
  bytes = new Uint8Array(0);
  write(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.bytes.length) this.resize(offset + data.length);
    this.bytes.set(data, offset);
  }
  resize(size: number): void {
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
    this.bytes = next;
  }
}

function random(rand: (n: number) => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  crypto.getRandomValues(out.subarray(0, Math.min(length, 65536)));
  // Mark every byte with the step too, so a stale page is never mistaken for fresh.
  out[0] = rand(256);
  return out;
}

function fsx(path: string, seed: number): Model {
  const rand = prng(seed);
  const model = new Model();
  let fd = openFile(path, O.RDWR | O.CREAT | O.TRUNC);
  let direct = openFile(path, O.RDWR | O.DIRECT);
  // O_DIRECT wants page-aligned memory: a region of whole pages.
  const aligned = new PinnedRegion(MAX_IO);
  const alignedBytes = aligned.bytes;
  const log: string[] = [];
  const where = () => `seed ${seed}, step ${log.length}: ${log.slice(-5).join("; ")}`;
  const expectRange = (got: Uint8Array, offset: number, length: number) => {
    const want = model.bytes.subarray(offset, Math.min(offset + length, model.bytes.length));
    assert.equal(got.length, want.length, `short or long read at ${offset}+${length}; ${where()}`);
    const bad = got.findIndex((b, i) => b !== want[i]);
    assert.equal(bad, -1, `byte ${offset + bad} differs; ${where()}`);
  };
  try {
    for (let step = 0; step < OPS; step++) {
      const size = model.bytes.length;
      const op = rand(100);
      if (op < 25) {
        const offset = rand(MAX_SIZE), length = 1 + rand(MAX_IO);
        const data = random(rand, Math.min(length, MAX_SIZE - offset));
        log.push(`write ${offset}+${data.length}`);
        assert.equal(pwriteFile(fd, data, offset), data.length, where());
        model.write(offset, data);
      } else if (op < 50) {
        const offset = rand(size + PAGE), length = 1 + rand(MAX_IO);
        log.push(`read ${offset}+${length}`);
        expectRange(preadFile(fd, length, offset), offset, length);
      } else if (op < 58) {
        const length = rand(MAX_SIZE);
        log.push(`truncate ${length}`);
        assert.equal(libc.ftruncate(fd, BigInt(length)), 0, where());
        model.resize(length);
      } else if (op < 68 && size > 0) {
        // mmap read of a page-aligned window inside the file.
        const offset = rand(Math.ceil(size / PAGE)) * PAGE;
        const length = Math.min(size - offset, 1 + rand(MAX_IO));
        log.push(`mapread ${offset}+${length}`);
        const p = mapping(fd, length, offset, PROT_READ);
        try {
          expectRange(
            new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, length)).slice(),
            offset,
            length,
          );
        } finally {
          unmap(p, length);
        }
      } else if (op < 78 && size > 0) {
        // mmap write inside the file (a shared mapping cannot grow it).
        const offset = rand(Math.ceil(size / PAGE)) * PAGE;
        const length = Math.min(size - offset, 1 + rand(MAX_IO));
        const data = random(rand, length);
        log.push(`mapwrite ${offset}+${length}`);
        const p = mapping(fd, length, offset, PROT_READ | PROT_WRITE);
        try {
          new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, length)).set(data);
        } finally {
          unmap(p, length);
        }
        model.write(offset, data);
      } else if (op < 86) {
        // O_DIRECT: aligned offsets, lengths and buffer.
        const offset = rand(MAX_SIZE / PAGE) * PAGE;
        const length = Math.min(MAX_SIZE - offset, (1 + rand(MAX_IO / PAGE)) * PAGE);
        const ptr = Deno.UnsafePointer.of(alignedBytes);
        if (rand(2)) {
          const data = random(rand, length);
          alignedBytes.set(data);
          log.push(`dwrite ${offset}+${length}`);
          assert.equal(libc.pwrite64(direct, ptr, BigInt(length), BigInt(offset)), length, where());
          model.write(offset, data);
        } else {
          log.push(`dread ${offset}+${length}`);
          const n = libc.pread64(direct, ptr, BigInt(length), BigInt(offset));
          assert.ok(n >= 0, `O_DIRECT read: errno ${errno()}; ${where()}`);
          expectRange(alignedBytes.slice(0, n), offset, length);
        }
      } else if (op < 90) {
        log.push("reopen");
        closeFile(fd);
        closeFile(direct);
        fd = openFile(path, O.RDWR);
        direct = openFile(path, O.RDWR | O.DIRECT);
      } else {
        log.push("fstat");
      }
      assert.equal(fstatFile(fd).size, model.bytes.length, `size; ${where()}`);
    }
  } finally {
    closeFile(fd);
    closeFile(direct);
    aligned.close();
  }
  return model;
}

dataPathTest(
  `fsx: ${OPS} random writes, reads, truncates, mmap and O_DIRECT reads and writes match a model`,
  (transport, data) =>
    withPassthrough(transport, async (mnt, src) => {
      const seed = Date.now() % 1_000_000;
      const model = fsx(`${mnt}/f`, seed);
      // The backing file holds exactly what the model does, read directly ...
      const backing = await Deno.readFile(`${src}/f`);
      assert.equal(backing.length, model.bytes.length, `seed ${seed}`);
      assert.equal(backing.findIndex((b, i) => b !== model.bytes[i]), -1, `seed ${seed}`);
      // ... and through the mount, after every handle was released.
      const again = await Deno.readFile(`${mnt}/f`);
      assert.equal(again.findIndex((b, i) => b !== model.bytes[i]), -1, `seed ${seed}`);
    }, dataPathArgs(data)),
  120_000,
);
