// The backing-id table's bookkeeping, without a kernel: opens that are
// served (not whole files) take and free slots as passed-through ones do.
import assert from "node:assert/strict";
import { BackingIds } from "../../ops/backing_ids.ts";

/** Slots of the table in use (a node id in them), and slots left marked otherwise. */
function occupancy(ids: BackingIds): { used: number; other: number } {
  const nodes = new Float64Array(ids.shared.nodes);
  let used = 0, other = 0;
  for (const n of nodes) {
    if (n > 0) used++;
    else if (n !== 0) other++;
  }
  return { used, other };
}

Deno.test("backing ids: released opens leave no marks, so lookups stay short however many came and went", () => {
  const ids = new BackingIds(-1);
  const capacity = new Float64Array(ids.shared.nodes).length;
  // Four times the table's size in distinct inodes, 64 of them open at a time.
  const open: [number, number][] = [];
  for (let i = 1; i <= 4 * capacity; i++) {
    const node = i * 7919;
    assert.equal(ids.acquire(node, i % 1000, -1, false, false), 0); // served: no backing id
    open.push([node, i % 1000]);
    if (open.length > 64) ids.release(...open.shift()!);
  }
  assert.deepEqual(occupancy(ids), { used: 64, other: 0 });
  for (const [node, fh] of open) ids.release(node, fh);
  assert.deepEqual(occupancy(ids), { used: 0, other: 0 });
});

Deno.test("backing ids: every open of an inode finds its slot, whatever was removed around it", () => {
  const ids = new BackingIds(-1);
  const capacity = new Float64Array(ids.shared.nodes).length;
  // Node ids that collide (same home slot) and their neighbours, opened twice each.
  const nodes = Array.from({ length: 200 }, (_, i) => (i + 1) * capacity * 3 + (i % 3));
  nodes.forEach((n, i) => {
    ids.acquire(n, 2 * i, -1, false, false);
    ids.acquire(n, 2 * i + 1, -1, false, false);
  });
  assert.equal(occupancy(ids).used, nodes.length);
  // Closing one open of every other inode keeps them all; closing the second frees them.
  nodes.forEach((n, i) => i % 2 === 0 && ids.release(n, 2 * i));
  assert.equal(occupancy(ids).used, nodes.length);
  nodes.forEach((n, i) => i % 2 === 0 && ids.release(n, 2 * i + 1));
  assert.equal(occupancy(ids).used, nodes.length / 2);
  // The rest are still found (a release finds its slot and frees it exactly at its last open).
  nodes.forEach((n, i) => i % 2 === 1 && ids.release(n, 2 * i));
  assert.equal(occupancy(ids).used, nodes.length / 2);
  nodes.forEach((n, i) => i % 2 === 1 && ids.release(n, 2 * i + 1));
  assert.deepEqual(occupancy(ids), { used: 0, other: 0 });
});
