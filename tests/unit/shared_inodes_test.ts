// The passthrough's shared inode table, without a mount: two views of one
// buffer (as two queue threads have) agree on nodes, lookup counts and
// FORGET; node ids are never reused; a full table says so.
import assert from "node:assert/strict";
import { InodeFlag, SharedInodeTable } from "../../fs/shared_inodes.ts";

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
