/**
 * Locked memory: io_uring's fixed buffers are pinned pages, charged to the
 * user's RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK (root has). A
 * user's default limit (8 MiB on Debian) holds fewer 1 MiB slots than the
 * default queues want, so the server sizes its queues to fit before it
 * offers FUSE-over-io_uring at INIT: once the kernel has agreed to it, no
 * request is served until every queue has registered its entries.
 *
 * @module
 */

import { hasCapability, libc } from "../../ffi/libc.ts";
import { liburing } from "../../ffi/liburing.ts";
import { PinnedRegion } from "../../ffi/memory.ts";
import { Ring } from "../../ffi/ring.ts";

const RLIMIT_MEMLOCK = 8;
const CAP_IPC_LOCK = 14;
const RLIM_INFINITY = 0xffffffffffffffffn;

/**
 * The bytes this process may pin (Infinity when nothing limits it), after
 * raising the soft RLIMIT_MEMLOCK to the hard one.
 */
export function lockedMemoryBudget(): number {
  if (hasCapability(CAP_IPC_LOCK)) return Infinity;
  const limit = new BigUint64Array(2);
  const bytes = new Uint8Array(limit.buffer);
  if (libc.prlimit64(0, RLIMIT_MEMLOCK, null, bytes) !== 0) return Infinity;
  if (limit[0] < limit[1]) {
    const raised = new BigUint64Array([limit[1], limit[1]]);
    if (libc.prlimit64(0, RLIMIT_MEMLOCK, new Uint8Array(raised.buffer), null) === 0) {
      limit[0] = limit[1];
    }
  }
  return limit[0] === RLIM_INFINITY ? Infinity : Number(limit[0]);
}

/**
 * What the budget keeps back for the rings themselves: recent kernels charge
 * their submission and completion queues to the same limit.
 */
export const RING_RESERVE = 1 << 20;

/** Ring entries per io_uring queue when none are asked for. */
export const DEFAULT_QUEUE_DEPTH = 8;

/**
 * Whether io_uring can pin `bytes` more for this user now: a trial
 * registration, undone at once. The limit is the user's, shared by all
 * their processes: another server of theirs may hold part of it.
 */
export async function canPinNow(bytes: number): Promise<boolean> {
  const memory = new PinnedRegion(bytes);
  const iovec = new PinnedRegion(16);
  iovec.view.setBigUint64(0, memory.address, true);
  iovec.view.setBigUint64(8, BigInt(memory.size), true);
  let ring: Ring | null = null;
  try {
    ring = new Ring({ entries: 2 });
    ring.registerSparseBuffers(1);
    ring.updateBuffers(0, iovec.pointer, 1);
    return true;
  } catch {
    return false;
  } finally {
    // Unregistered before the ring goes: that unpins (and uncharges) at once.
    if (ring) liburing().io_uring_unregister_buffers(ring.pointer);
    await ring?.close();
    iovec.close();
    memory.close();
  }
}

/**
 * How many entries per queue io_uring gets, so that the fixed buffers of
 * `queues` x entries x `slotBytes` fit in this process's locked-memory
 * `budget` besides {@linkcode RING_RESERVE}, and (where a limit applies)
 * can be pinned now: `asked` (or the default) if they fit; else, when none
 * was asked for, the most that do. A string says why none can be had.
 */
export async function planQueueDepth(
  asked: number | undefined,
  queues: number,
  slotBytes: number,
  budget: number = lockedMemoryBudget(),
  canPin: (bytes: number) => Promise<boolean> = canPinNow,
): Promise<number | string> {
  const wanted = asked ?? DEFAULT_QUEUE_DEPTH;
  let fitting = Math.min(wanted, Math.floor((budget - RING_RESERVE) / (queues * slotBytes)));
  if (budget !== Infinity) {
    while (fitting >= 1 && !await canPin(queues * fitting * slotBytes + RING_RESERVE)) fitting--;
  }
  if (fitting >= 1 && (fitting === wanted || asked === undefined)) return fitting;
  const entries = fitting < 1 ? 1 : wanted;
  const need = mebibytes(queues * entries * slotBytes + RING_RESERVE);
  return `io_uring's fixed buffers need ${need} of locked memory (${queues} queues x ` +
    `${entries} entries x ${mebibytes(slotBytes)}, and the rings) and RLIMIT_MEMLOCK allows ` +
    `${mebibytes(budget)} for this user's processes together: raise it (ulimit -l; systemd: ` +
    "LimitMEMLOCK=), or lower max_write and max_read";
}

/** `bytes` as "8 MiB". */
function mebibytes(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20 * 10) / 10} MiB`;
}
