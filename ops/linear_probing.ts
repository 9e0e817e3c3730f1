/**
 * The one rule of removing from a linearly probed table without
 * tombstones (backward-shift deletion), shared by the tables that keep
 * node ids in shared memory (`backing_ids.ts`, `fs/shared_inodes.ts`):
 * when an entry leaves, each later entry of its run moves back into the
 * hole unless that would put it before its home slot.
 *
 * @module
 */

/**
 * Whether the entry at `k`, whose home slot is `home`, must stay where it
 * is while the slot `hole` (before it in the same run) is empty: true when
 * `home` lies cyclically in `(hole, k]`.
 */
export function staysBehindHole(hole: number, k: number, home: number): boolean {
  return hole <= k ? home > hole && home <= k : home > hole || home <= k;
}
