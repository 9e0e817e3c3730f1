// The per-thread scratch buffers of backing calls: names become C strings
// of the right bytes whatever their length, a buffer is lent to one call at
// a time, and it comes back only once that call has settled.
import assert from "node:assert/strict";
import { SCRATCH_SIZE, withCString, withScratch } from "../../fs/scratch.ts";

const cString = (c: Uint8Array) => {
  const nul = c.indexOf(0);
  assert.ok(nul >= 0, "no NUL terminator");
  return new TextDecoder().decode(c.subarray(0, nul));
};

Deno.test("scratch: names of every length become their UTF-8 bytes and a NUL", async () => {
  for (const name of ["f", "é".repeat(127), "x".repeat(255), "x".repeat(256), "€".repeat(90)]) {
    const seen = await withCString(name, (c) => Promise.resolve(cString(c)));
    assert.equal(seen, name, `${name.length} units`);
  }
  // A name too long for a lent buffer gets its own (the call then reports ENAMETOOLONG).
  const long = await withCString("y".repeat(SCRATCH_SIZE), (c) => Promise.resolve(c.length));
  assert.equal(long, SCRATCH_SIZE + 1);
});

Deno.test("scratch: a buffer is lent to one call at a time and reused once it settles", async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  let first!: Uint8Array;
  const slow = withScratch(async (s) => {
    first = s.bytes;
    await held;
    s.bytes[0] = 7; // still ours while the call runs
    return s.bytes;
  });
  const other = await withScratch((s) => Promise.resolve(s.bytes));
  assert.notEqual(other, first, "two calls in flight share a buffer");
  release();
  assert.equal(await slow, first);
  assert.equal(first[0], 7);
  // Settled (even by a throw), the buffer is lent again rather than a new one made.
  await assert.rejects(withScratch(() => Promise.reject(new Error("failed call"))));
  const again = new Set<Uint8Array>();
  for (let i = 0; i < 10; i++) await withScratch((s) => Promise.resolve(again.add(s.bytes)));
  assert.equal(again.size, 1);
  assert.ok(again.has(first) || again.has(other));
});
