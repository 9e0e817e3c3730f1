// The passthrough's shared inode table, without a mount: two views of one
// buffer (as two queue threads have) agree on nodes, lookup counts and
// FORGET; node ids are never reused; a full table says so.
import assert from "node:assert/strict";
import { InodeFlag, NO_FD, SharedInodeTable } from "../../fs/shared_inodes.ts";

const key = (ino: number, minor = 1) => ({ major: 8, minor, ino });

Deno.test("shared inodes: one backing object is one node, whichever view looks it up", () => {
  const a = new SharedInodeTable(16);
  a.setRoot(100, key(2));
  const b = new SharedInodeTable(a.buffer);
  assert.equal(b.fd(1), 100);
  const first = a.lookup(key(2 ** 40 + 7), 101, 0)!;
  assert.deepEqual(first, { nodeId: first.nodeId, added: true });
  // The other view finds it: its own fd was not taken (the caller closes it).
  assert.deepEqual(b.lookup(key(2 ** 40 + 7), 102, 0), { nodeId: first.nodeId, added: false });
  assert.equal(b.fd(first.nodeId), 101);
  // Same inode number on another device is another object.
  const other = b.lookup(key(2 ** 40 + 7, 2), 103, InodeFlag.SYMLINK)!;
  assert.notEqual(other.nodeId, first.nodeId);
  assert.equal(a.flags(other.nodeId) & InodeFlag.SYMLINK, InodeFlag.SYMLINK);
  assert.equal(a.size, 3);
  // Two lookups: the first FORGET of one keeps it, the second releases its fd.
  assert.equal(a.forget(first.nodeId, 1), -1);
  assert.equal(b.forget(first.nodeId, 1), 101);
  assert.equal(a.fd(first.nodeId), -1); // stale from now on
  assert.equal(a.forget(first.nodeId, 1), -1);
  assert.equal(a.size, 2);
  // The slot is reused with a new generation: a new node id.
  const again = a.lookup(key(2 ** 40 + 7), 104, 0)!;
  assert.equal(again.added, true);
  assert.notEqual(again.nodeId, first.nodeId);
  assert.equal(again.nodeId % 2 ** 20, first.nodeId % 2 ** 20);
  // The root is never forgotten; ref counts a lookup of ".".
  assert.equal(a.forget(1, 5), -1);
  assert.equal(a.ref(again.nodeId), true);
  assert.equal(a.forget(again.nodeId, 1), -1);
  assert.equal(a.forget(again.nodeId, 1), 104);
  assert.equal(a.ref(again.nodeId), false);
});

Deno.test("shared inodes: refHeld counts a lookup only of a known node that holds an fd", () => {
  const t = new SharedInodeTable(16);
  t.setRoot(10, key(1));
  const held = t.lookup(key(5), 11, 0)!.nodeId;
  const handleOnly = t.lookup(key(6), NO_FD, 0)!.nodeId;
  assert.equal(t.refHeld(key(5)), held);
  assert.equal(t.refHeld(key(6)), 0); // its inode number may belong to another file by now
  assert.equal(t.refHeld(key(7)), 0);
  // Two lookups of `held`: one FORGET keeps it.
  assert.equal(t.forget(held, 1), -1);
  assert.equal(t.forget(held, 1), 11);
  assert.equal(t.refHeld(key(5)), 0);
  assert.equal(t.forget(handleOnly, 1), NO_FD);
});

Deno.test("shared inodes: a full table refuses, unique numbers, drain once", () => {
  const t = new SharedInodeTable(4); // slots 2 and 3 after the root
  t.setRoot(10, key(1));
  assert.equal(t.lookup(key(2), 11, 0)!.added, true);
  assert.equal(t.lookup(key(3), 12, 0)!.added, true);
  assert.equal(t.lookup(key(4), 13, 0), null);
  const u = new SharedInodeTable(t.buffer);
  assert.deepEqual([t.unique(), u.unique(), t.unique()], [1, 2, 3]);
  assert.deepEqual(t.drain().sort(), [10, 11, 12]);
  assert.deepEqual(u.drain(), []);
  assert.equal(t.size, 0);
  assert.throws(() => new SharedInodeTable(1), RangeError);
});

Deno.test("shared inodes: lookups and forgets in any order keep every node findable (removal shifts, no tombstones)", () => {
  // A small table (index of 128 entries) and more keys than it holds at once, so that
  // runs in the index collide, wrap around, and are cut by removals all the time.
  const table = new SharedInodeTable(64);
  table.setRoot(3, key(1));
  const model = new Map<number, { nodeId: number; count: number; fd: number }>();
  let seed = 12345;
  const random = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (let step = 0, nextFd = 10; step < 50_000; step++) {
    const ino = 2 + random(120);
    const known = model.get(ino);
    if (known && random(2) === 0) {
      const fd = table.forget(known.nodeId, 1);
      known.count--;
      assert.equal(fd, known.count === 0 ? known.fd : -1, `forget of ino ${ino}`);
      if (known.count === 0) model.delete(ino);
      continue;
    }
    if (!known && model.size >= 62) continue; // full: not what this test is about
    const found = table.lookup(key(ino), nextFd, 0);
    assert.ok(found, `lookup of ino ${ino} at step ${step}`);
    assert.equal(found.added, !known, `ino ${ino} at step ${step}`);
    if (known) {
      assert.equal(found.nodeId, known.nodeId);
      known.count++;
    } else model.set(ino, { nodeId: found.nodeId, count: 1, fd: nextFd++ });
  }
  assert.equal(table.size, model.size + 1);
});

Deno.test("shared inodes: the index grows with the nodes, and every view finds them across growth", () => {
  const a = new SharedInodeTable(8192);
  a.setRoot(3, key(1));
  const b = new SharedInodeTable(a.buffer);
  // A hundred nodes use the first page of the index only.
  const ids: number[] = [];
  for (let i = 0; i < 100; i++) ids.push((i % 2 ? a : b).lookup(key(1000 + i), 10 + i, 0)!.nodeId);
  assert.equal(a.indexInUse, 1024);
  // Five thousand: grown to keep it at most half full; both views still find every node.
  for (let i = 100; i < 5000; i++) {
    ids.push((i % 2 ? a : b).lookup(key(1000 + i), 10 + i, 0)!.nodeId);
  }
  assert.equal(b.indexInUse, 16384);
  for (let i = 0; i < 5000; i++) {
    assert.deepEqual((i % 2 ? b : a).lookup(key(1000 + i), -1, 0), {
      nodeId: ids[i],
      added: false,
    });
  }
  // Forgetting them all (two lookups each) leaves the root alone.
  for (let i = 0; i < 5000; i++) {
    assert.equal(a.forget(ids[i], 1), -1);
    assert.equal(b.forget(ids[i], 1), 10 + i);
  }
  assert.equal(a.size, 1);
  assert.equal(b.lookup(key(1), -1, 0)!.nodeId, 1);
});
