// A reply that comes in the last microtask turns before an io_uring queue
// thread blocks in the kernel must still be committed: the thread may not
// sleep with a commit prepared and not submitted (the client would wait
// until some other request woke that thread).
import assert from "node:assert/strict";
import { mount } from "../../mod.ts";
import { lateReplyFs } from "../fixtures/late_reply_fs.ts";
import { sh, tempMountpoint, uringTest } from "../helpers.ts";

/** Microtask turns swept: well past the loop's settling turns (SETTLE_TURNS, 32). */
const MAX_TURNS = 96;

uringTest("io_uring: a reply made just before the queue thread sleeps is committed", async () => {
  const [mnt, cleanup] = await tempMountpoint();
  try {
    const session = await mount(lateReplyFs(), mnt, {
      transport: "io_uring",
      handleSignals: false,
      perQueue: { module: import.meta.resolve("../fixtures/late_reply_queue.ts") },
    });
    try {
      // One request at a time, all from CPU 0, so that nothing else wakes its
      // queue thread. A reply left unsubmitted shows as a stat still waiting
      // after 3 s (uninterruptibly: the request is with the server); it is
      // then released by another request on that queue, and named.
      const stuck = (await sh(
        `for n in $(seq 0 ${MAX_TURNS}); do ` +
          `taskset -c 0 stat -c %i ${mnt}/t$n-x > /dev/null & p=$!; ` +
          `for i in $(seq 300); do kill -0 $p 2> /dev/null || break; sleep 0.01; done; ` +
          `if kill -0 $p 2> /dev/null; then echo t$n; ` +
          `taskset -c 0 stat ${mnt}/release > /dev/null 2>&1; fi; ` +
          `wait $p; done`,
      )).trim();
      assert.equal(stuck, "", `LOOKUPs answered only once another request came: ${stuck}`);
    } finally {
      await session.unmount();
    }
  } finally {
    await cleanup();
  }
}, 240_000);
