// The io_uring transport with a serving thread per kernel queue: every queue
// is served on its own CPU, data moved by the queue threads equals the
// source under concurrent readers and writers on every CPU, a FileSystem
// without fd-backed handles still works (its requests are handed over), one
// thread still serves every queue with threads=1, and a queue thread that
// dies ends the session without a hung client or a mount left behind.
import assert from "node:assert/strict";
import { Passthrough } from "../../examples/passthrough.ts";
import { PASSTHROUGH_QUEUE_SOURCE } from "../../gen/passthrough_queue_source.ts";
import { hello } from "../../examples/hello.ts";
import { possibleCpus } from "../../server/uring/transport.ts";
import { Errno, type FileSystem, mount, S, type Session, type SystemError } from "../../mod.ts";
import {
  isMounted,
  reap,
  run,
  sh,
  startServer,
  tempMountpoint,
  transportTest,
  uringTest,
} from "../helpers.ts";

const CPUS = possibleCpus();

/** Mount the passthrough of a fresh source in this process (clients run in others). */
async function withPassthroughSession(
  transport: "dev" | "io_uring",
  threads: number | undefined,
  fn: (mnt: string, src: string, s: Session, fs: Passthrough) => Promise<void>,
  backingIo: "ring" | "direct" = "ring",
  perQueue = false,
): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  try {
    const fs = new Passthrough(src);
    const s = await mount(fs, mnt, {
      perQueue: perQueue ? { source: PASSTHROUGH_QUEUE_SOURCE, data: fs.shared } : undefined,
      handleSignals: false,
      transport,
      threads,
      backingIo,
      defaultPermissions: true,
      atomicOTrunc: true,
      handleKillpriv: true,
    });
    try {
      await fn(mnt, src, s, fs);
    } finally {
      await s.unmount();
    }
    assert.equal(isMounted(mnt), false);
  } finally {
    await cleanup();
    await Deno.remove(src, { recursive: true });
  }
}

/**
 * On every CPU at once: write a 4 MiB file with O_DIRECT (64 KiB blocks),
 * copy a source file out through the mount, and read another back buffered.
 */
async function everyCpuWorkload(mnt: string, src: string): Promise<void> {
  for (let c = 0; c < CPUS; c++) {
    await sh(`head -c 3000017 /dev/urandom > ${src}/in${c}`);
  }
  await Promise.all(
    Array.from({ length: CPUS }, (_, c) =>
      sh(
        `taskset -c ${c} dd if=/dev/urandom of=${mnt}/out${c} bs=64k count=64 oflag=direct status=none && ` +
          `taskset -c ${c} dd if=${mnt}/in${c} of=/dev/null bs=128k iflag=direct status=none && ` +
          `taskset -c ${c} cp ${mnt}/in${c} ${src}/copy${c} && ` +
          `taskset -c ${c} sha256sum ${mnt}/out${c} > ${src}/sum${c}.txt`,
      )),
  );
  for (let c = 0; c < CPUS; c++) {
    assert.equal(await sh(`cmp ${src}/in${c} ${src}/copy${c} && echo same`), "same\n");
    const [through] = (await Deno.readTextFile(`${src}/sum${c}.txt`)).split(" ");
    const [direct] = (await sh(`sha256sum ${src}/out${c}`)).split(" ");
    assert.equal(through, direct);
    assert.equal((await Deno.stat(`${src}/out${c}`)).size, 4 * 1024 * 1024);
  }
}

for (const backingIo of ["ring", "direct"] as const) {
  uringTest(
    `queue threads: every queue is served on its own CPU, with fixed-buffer data [${backingIo}]`,
    async () => {
      await withPassthroughSession("io_uring", undefined, async (mnt, src, s) => {
        assert.equal(s.transport, "io_uring");
        assert.equal(s.threads, CPUS);
        await everyCpuWorkload(mnt, src);
        const queues = s.counters.queues!;
        assert.equal(queues.length, CPUS);
        for (const q of queues) {
          assert.deepEqual(q.cpus, [q.qid]);
          assert.ok(q.requests > 0, `queue ${q.qid}: ${JSON.stringify(q)}`);
          // 64 direct writes of 64 KiB and 23 direct reads of 128 KiB at least,
          // served by the queue's own thread from the handle's backing fd.
          assert.ok(q.fixedWrites >= 64, `queue ${q.qid}: ${JSON.stringify(q)}`);
          assert.ok(q.fixedReads >= 23, `queue ${q.qid}: ${JSON.stringify(q)}`);
          // Lookups, opens and the rest were handed to the FileSystem's thread.
          assert.ok(q.forwarded > 0, `queue ${q.qid}: ${JSON.stringify(q)}`);
          assert.equal(q.replies, q.requests);
        }
        const total = s.counters.uring!;
        assert.equal(total.requests, queues.reduce((n, q) => n + q.requests, 0));
      }, backingIo);
    },
    120_000,
  );
}

transportTest(
  "queue threads: concurrent readers and writers on every CPU see the source",
  async (t) => {
    await withPassthroughSession(t, undefined, async (mnt, src, s) => {
      await everyCpuWorkload(mnt, src);
      if (t === "dev") {
        // /dev/fuse threads without a FileSystem of their own: they move the
        // data of fd-backed handles themselves and hand the rest over.
        // The calling thread's /dev/fuse loop is one of the serving threads.
        const threads = s.counters.devThreads!;
        assert.equal(threads.length, CPUS - 1);
        assert.equal(s.threads, CPUS);
        const sum = (k: "fdReads" | "fdWrites") => threads.reduce((n, c) => n + c[k], 0);
        assert.ok(sum("fdWrites") > 0 && sum("fdReads") > 0, JSON.stringify(s.counters));
        assert.ok(s.counters.dev.replies > 0, "handed-over requests answered");
      }
    });
    // With the calling thread alone.
    await withPassthroughSession(t, 1, async (mnt, src, s) => {
      await everyCpuWorkload(mnt, src);
      assert.equal(s.threads, 1);
      assert.equal(s.counters.devThreads, undefined);
    });
    // And with a passthrough in every serving thread (on /dev/fuse: a
    // thread per clone of the fd), each thread doing its share.
    await withPassthroughSession(
      t,
      undefined,
      async (mnt, src, s) => {
        await everyCpuWorkload(mnt, src);
        // On /dev/fuse the calling thread's loop (counters.dev) serves beside
        // the Workers; on io_uring it serves the first queue itself.
        const perThread = t === "dev"
          ? [s.counters.dev, ...s.counters.devThreads!]
          : s.counters.queues!;
        assert.equal(perThread.length, CPUS);
        assert.equal(s.threads, CPUS);
        const served = perThread.filter((c) => c.requests > 0);
        assert.ok(served.length >= Math.min(2, CPUS), JSON.stringify(perThread));
        // Every request a Worker or queue read was answered (the calling
        // thread's loop also reads FORGETs, which get no reply).
        for (const c of perThread.slice(t === "dev" ? 1 : 0)) assert.equal(c.replies, c.requests);
      },
      "ring",
      true,
    );
  },
  120_000,
);

uringTest("queue threads: threads=1 serves every queue from the main thread", async () => {
  await withPassthroughSession("io_uring", 1, async (mnt, src, s) => {
    assert.equal(s.threads, 1);
    // Counted per queue, none pinned: the main thread serves them all.
    const queues = s.counters.queues!;
    assert.equal(queues.length, CPUS);
    for (const q of queues) assert.deepEqual(q.cpus, []);
    assert.equal(queues.reduce((n, q) => n + q.requests, 0), s.counters.uring!.requests);
    await everyCpuWorkload(mnt, src);
    assert.ok(s.counters.uring!.fixedWrites >= 64 * CPUS);
  });
}, 120_000);

uringTest(
  "queue threads: a FileSystem without fd-backed handles is answered by its thread",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      const s = await mount(hello, mnt, { handleSignals: false, transport: "io_uring" });
      try {
        assert.equal(s.threads, CPUS);
        const cats = await Promise.all(
          Array.from({ length: CPUS }, (_, c) => sh(`taskset -c ${c} cat ${mnt}/hello`)),
        );
        assert.deepEqual(cats, Array(CPUS).fill("Hello, World!\n"));
        assert.equal(await sh(`ls ${mnt}`), "hello\n");
        const queues = s.counters.queues!;
        const sum = (k: "forwarded" | "fixedReads" | "requests") =>
          queues.reduce((n, q) => n + q[k], 0);
        assert.ok(sum("forwarded") > 0);
        assert.equal(sum("forwarded"), sum("requests"));
        assert.equal(sum("fixedReads"), 0);
      } finally {
        await s.unmount();
      }
    } finally {
      await cleanup();
    }
  },
);

uringTest(
  "queue threads: a queue thread that dies aborts the connection; no client hangs",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    // A file whose read never answers: its client is still waiting when the thread dies.
    let stuck = 0;
    const fs: FileSystem = {
      ...hello,
      lookup: (_ctx, _parent, name) => {
        if (name !== "stuck") return hello.lookup!(_ctx, _parent, name);
        return { nodeId: 3, attr: { ino: 3, mode: S.IFREG | 0o444, size: 10 } };
      },
      getattr: (ctx, nodeId) =>
        nodeId === 3 ? { ino: 3, mode: S.IFREG | 0o444, size: 10 } : hello.getattr!(ctx, nodeId),
      open: () => ({ directIo: true }),
      read: () => {
        stuck++;
        return new Promise(() => {});
      },
    };
    try {
      const s = await mount(fs, mnt, { handleSignals: false, transport: "io_uring" });
      const client = new Deno.Command("cat", {
        args: [`${mnt}/stuck`],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      for (let i = 0; i < 200 && stuck === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(stuck, 1, "the client's read reached the file system");
      const inject = (s as unknown as Record<symbol, (i: number) => void>)[
        Symbol.for("denofuse.injectQueueFault")
      ];
      inject.call(s, 0);
      await assert.rejects(s.closed, /queue thread 0 died: .*fault injected/);
      const status = await client.status; // the test's time limit catches a hang
      assert.notEqual(status.code, 0);
      assert.match(
        new TextDecoder().decode(await new Response(client.stderr).arrayBuffer()),
        /connected|aborted/i,
      );
      assert.equal(isMounted(mnt), false);
      // The mountpoint is usable again.
      const again = await mount(hello, mnt, { handleSignals: false });
      assert.equal(await sh(`cat ${mnt}/hello`), "Hello, World!\n");
      await again.unmount();
    } finally {
      await cleanup();
    }
  },
);

uringTest("queue threads: -o threads and -d as a user runs the passthrough", async () => {
  const [mnt, cleanup] = await tempMountpoint();
  const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  try {
    const bad = await run(
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "examples/passthrough.ts",
      src,
      mnt,
      "-o",
      "threads=0",
    );
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /-o threads needs a positive whole number/);
    assert.equal(isMounted(mnt), false);
    const child = new Deno.Command(Deno.execPath(), {
      // nopassthrough: the READ this test follows must reach the server.
      args: [
        "run",
        "--allow-ffi",
        "examples/passthrough.ts",
        src,
        mnt,
        "-d",
        "-o",
        "threads=2,nopassthrough",
      ],
      cwd: new URL("../..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let out = "";
      while (!out.includes("mounted on")) {
        const { value, done } = await stdout.read();
        if (done) throw new Error(`server exited early: ${out}`);
        out += value;
      }
      assert.match(out, /over io_uring/);
      await Deno.writeTextFile(`${src}/f`, "data");
      // Read on the last CPU: its queue is served by a Worker (the calling
      // thread serves the first).
      assert.equal(await sh(`taskset -c ${CPUS - 1} cat ${mnt}/f`), "data");
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      const log = await stderr;
      const threads = Math.min(2, CPUS);
      assert.match(
        log,
        new RegExp(
          `io_uring: mainline mode, ${CPUS} queues x 8 entries .* ${threads} queue threads`,
        ),
      );
      for (let q = 0; q < CPUS; q++) {
        // Thread w serves queues w, w + threads, ... on their CPUs.
        const cpus = Array.from({ length: CPUS }, (_, c) => c).filter((c) =>
          c % threads === q % threads
        );
        assert.match(log, new RegExp(`io_uring: queue ${q} served on CPU ${cpus.join(",")},`));
      }
      // Requests served by a queue thread are logged too.
      assert.match(log, /opcode: READ \(15\).* on queue \d/);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await stdout.cancel().catch(() => {});
      await stderr.catch(() => {});
    }
    assert.equal(isMounted(mnt), false);
  } finally {
    await cleanup();
    await Deno.remove(src, { recursive: true });
  }
});

for (const backingIo of ["ring", "direct"] as const) {
  uringTest(
    `queue threads: a passthrough in every queue thread answers everything there [${backingIo}]`,
    async () => {
      await withPassthroughSession(
        "io_uring",
        undefined,
        async (mnt, src, s, fs) => {
          assert.equal(s.threads, CPUS);
          await everyCpuWorkload(mnt, src);
          // Metadata on every CPU: create, list, rename, stat and remove 200 files each.
          await Promise.all(
            Array.from({ length: CPUS }, (_, c) =>
              sh(
                `taskset -c ${c} sh -c 'mkdir ${mnt}/d${c} && cd ${mnt}/d${c} && ` +
                  `for i in $(seq 200); do echo $i > f$i; done && ls -l | wc -l > ../n${c} && ` +
                  `for i in $(seq 100); do mv f$i g$i; done && cat g1 f101 && rm g5 f150'`,
              )),
          );
          for (let c = 0; c < CPUS; c++) {
            assert.equal(await Deno.readTextFile(`${src}/n${c}`), "201\n"); // "total" + 200
            const names = (await sh(`ls ${src}/d${c} | sort`)).trim().split("\n");
            assert.equal(names.length, 198);
            assert.ok(names.includes("g1") && names.includes("f101") && !names.includes("g5"));
            assert.equal(await Deno.readTextFile(`${src}/d${c}/g100`), "100\n");
          }
          const queues = s.counters.queues!;
          for (const q of queues) {
            assert.ok(q.requests > 400, `queue ${q.qid}: ${JSON.stringify(q)}`);
            assert.equal(q.forwarded, 0, `queue ${q.qid}: nothing handed over`);
            assert.equal(q.replies, q.requests);
          }
          // The queue threads' lookups are in the one shared inode table:
          // FORGET (over /dev/fuse, to this thread's instance) releases them.
          assert.ok(fs.heldInodes > 400 * CPUS / 2, `held ${fs.heldInodes}`);
          await Deno.writeTextFile("/proc/sys/vm/drop_caches", "2");
          const deadline = Date.now() + 10_000;
          while (fs.heldInodes > 20 && Date.now() < deadline) {
            await new Promise((r) => setTimeout(r, 50));
          }
          assert.ok(fs.heldInodes <= 20, `still held: ${fs.heldInodes}`);
          assert.equal(await sh(`cat ${mnt}/d0/g2`), "2\n"); // looked up again
        },
        backingIo,
        true,
      );
    },
    120_000,
  );
}

transportTest(
  "queue threads: a serving thread of the passthrough that dies ends the session",
  async (t) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    try {
      await Deno.writeTextFile(`${src}/f`, "data");
      const fs = new Passthrough(src);
      const s = await mount(fs, mnt, {
        handleSignals: false,
        transport: t,
        defaultPermissions: true,
        perQueue: { source: PASSTHROUGH_QUEUE_SOURCE, data: fs.shared },
      });
      assert.equal(s.threads, CPUS);
      assert.equal(await sh(`cat ${mnt}/f`), "data");
      // The kernel's NOTIFY_REPLY would reach a thread that did not ask: refused at once.
      await assert.rejects(
        s.notify.retrieve(1, 0, 4096),
        (e: SystemError) => e.errno === Errno.EOPNOTSUPP && /perQueue/.test(e.message),
      );
      const inject = (s as unknown as Record<symbol, (i: number) => void>)[
        Symbol.for("denofuse.injectQueueFault")
      ];
      // The last Worker: on /dev/fuse the calling thread's loop is one of the
      // CPUS serving threads; on io_uring a Worker serves each queue here.
      const last = t === "dev" ? CPUS - 2 : CPUS - 1;
      inject.call(s, last);
      const name = t === "dev" ? `/dev/fuse thread ${last}` : `queue thread ${last}`;
      await assert.rejects(s.closed, new RegExp(`${name} died: .*fault injected`));
      assert.equal(isMounted(mnt), false);
      // Nothing is left to hang on: the mountpoint is a plain directory again.
      const after = await run("cat", `${mnt}/f`);
      assert.notEqual(after.code, 0);
      assert.match(after.stderr, /No such file/);
    } finally {
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);

transportTest(
  "queue threads: hello's command line exits on SIGTERM with its threads",
  async (t) => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      // hello has no FileSystem per thread: its serving threads hand requests over.
      const opt = t === "io_uring" ? "io_uring" : "no_io_uring";
      const { child, out } = await startServer(["examples/hello.ts", mnt, "-o", opt]);
      try {
        assert.match(out, new RegExp(`over ${t}`));
        const cats = await Promise.all(
          Array.from({ length: CPUS }, (_, c) => sh(`taskset -c ${c} cat ${mnt}/hello`)),
        );
        assert.deepEqual(cats, Array(CPUS).fill("Hello, World!\n"));
        child.kill("SIGTERM");
        assert.equal((await reap(child)).code, 0); // nothing left to keep the process alive
        assert.equal(isMounted(mnt), false);
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
    } finally {
      await cleanup();
    }
  },
);

/** Context switches (voluntary and not) of `pid`'s main thread and each of its `worker-*` threads. */
function workerSwitches(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    const dir = `/proc/${pid}/task/${t.name}`;
    const main = t.name === String(pid);
    if (!main && !Deno.readTextFileSync(`${dir}/comm`).startsWith("worker-")) continue;
    const status = Deno.readTextFileSync(`${dir}/status`);
    const n = [...status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)]
      .reduce((sum, m) => sum + Number(m[1]), 0);
    out.set(t.name, n);
  }
  return out;
}

uringTest(
  "queue threads: an idle mount's queue threads sleep in the kernel, no wake-ups",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    const { child } = await startServer(["examples/passthrough.ts", src, mnt, "-o", "io_uring"]);
    try {
      // Every queue thread has served (and gone idle again).
      const online = [...Array(navigator.hardwareConcurrency).keys()].join(" ");
      await sh(`for c in ${online}; do taskset -c $c ls ${mnt} > /dev/null; done`);
      await new Promise((r) => setTimeout(r, 500));
      // The calling thread serves the first queue, a Worker each of the others.
      const before = workerSwitches(child.pid);
      assert.equal(before.size, navigator.hardwareConcurrency, "a serving thread per CPU");
      await new Promise((r) => setTimeout(r, 3000));
      const after = workerSwitches(child.pid);
      for (const [tid, n] of before) {
        // At most one a second (they used to wake every 100 ms: 30 here).
        assert.ok(
          after.get(tid)! - n <= 3,
          `thread ${tid} woke ${after.get(tid)! - n} times in 3 s`,
        );
      }
      // And still serves at once.
      assert.equal((await run("ls", mnt)).code, 0);
    } finally {
      child.kill("SIGTERM");
      await reap(child);
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);
