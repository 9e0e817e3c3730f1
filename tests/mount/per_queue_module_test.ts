// An author's own FileSystem in every serving thread without a bundle
// script: `perQueue: { module }` names its queue-thread entry, which the
// session bundles (deno bundle through posix_spawnp) before mounting.
import assert from "node:assert/strict";
import { mount, MountError } from "../../mod.ts";
import { whoamiFs } from "../fixtures/whoami_fs.ts";
import { sh, tempMountpoint, transportTest } from "../helpers.ts";
import { possibleCpus } from "../../server/uring/transport.ts";

const CPUS = possibleCpus();

transportTest(
  "perQueue module: the author's FileSystem answers in every serving thread",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      const session = await mount(whoamiFs("session thread"), mnt, {
        transport,
        handleSignals: false,
        perQueue: { module: import.meta.resolve("../fixtures/whoami_queue.ts"), data: "ok" },
      });
      try {
        assert.equal(session.threads, CPUS);
        // Requests from every CPU are answered by the instances in the serving
        // threads: all of them on io_uring (each queue's thread); on /dev/fuse
        // the session's thread reads the device too, so some may be its own.
        const seen = await Promise.all(
          Array.from({ length: 10 * CPUS }, (_, i) => sh(`taskset -c ${i % CPUS} cat ${mnt}/who`)),
        );
        const counts = new Map<string, number>();
        for (const s of seen) counts.set(s.trim(), (counts.get(s.trim()) ?? 0) + 1);
        if (transport === "io_uring") {
          assert.deepEqual([...counts], [["queue thread ok", 10 * CPUS]]);
        } else {
          assert.ok((counts.get("queue thread ok") ?? 0) > 0, JSON.stringify([...counts]));
          const others = [...counts.keys()].filter((k) =>
            !/^(queue thread ok|session thread)$/.test(k)
          );
          assert.deepEqual(others, []);
        }
      } finally {
        await session.unmount();
      }
    } finally {
      await cleanup();
    }
  },
);

transportTest(
  "perQueue module: one that does not bundle is a clear error, and nothing is mounted",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      await assert.rejects(
        mount(whoamiFs("x"), mnt, {
          transport,
          handleSignals: false,
          perQueue: { module: import.meta.resolve("../fixtures/no_such_module.ts") },
        }),
        (e) =>
          e instanceof MountError && /deno bundle .*no_such_module\.ts failed: .+/.test(e.message),
      );
      await assert.rejects(
        mount(whoamiFs("x"), mnt, {
          transport,
          handleSignals: false,
          perQueue: { module: "relative.ts" },
        }),
        (e) => e instanceof MountError && /file: URL or an absolute path/.test(e.message),
      );
      assert.equal((await sh(`grep -c ' ${mnt} ' /proc/mounts || true`)).trim(), "0");
    } finally {
      await cleanup();
    }
  },
);
