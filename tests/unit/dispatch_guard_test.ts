// What must never escape the dispatcher: a throwing debug or onError
// callback, a transport whose reply throws, a short INIT. Each request still
// gets an answer (or a clean refusal) and no exception reaches a microtask.
import assert from "node:assert/strict";
import { GetattrIn, InitIn, Opcode } from "../../ops/abi.ts";
import { Dispatcher } from "../../ops/dispatch.ts";
import { InterruptBoard } from "../../ops/interrupts.ts";
import { Errno, S } from "../../mod.ts";
import type { FileSystem } from "../../mod.ts";
import { arg, FakeExchange, init, request, roundTrip } from "../fake_exchange.ts";
import { noneUnhandled } from "../helpers.ts";

const attr = { ino: 1, mode: S.IFDIR | 0o755 };

/** Run `fn` and collect what console.error printed meanwhile. */
async function capturingErrors(fn: () => Promise<void>): Promise<string[]> {
  const printed: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => printed.push(args.map(String).join(" "));
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return printed;
}

Deno.test("guard: a debug callback that throws is reported once; requests are still answered", async () => {
  let calls = 0;
  const d = new Dispatcher({ getattr: () => attr }, {
    debug: () => {
      calls++;
      throw new Error("broken logger");
    },
  });
  const printed = await capturingErrors(async () => {
    await noneUnhandled(async () => {
      await init(d);
      for (let i = 0; i < 3; i++) {
        const ex = await roundTrip(d, request(Opcode.GETATTR, 1, arg(GetattrIn.SIZE)));
        assert.equal(ex.replies[0].error, 0);
      }
    });
  });
  assert.ok(calls > 6);
  assert.equal(printed.filter((l) => l.includes("debug callback")).length, 1, printed.join("\n"));
});

Deno.test("guard: an onError that throws still lets the failed request get EIO", async () => {
  const fs: FileSystem = {
    getattr: () => Promise.reject(new TypeError("bug in the file system")),
    statfs: () => {
      throw new RangeError("sync bug");
    },
  };
  const d = new Dispatcher(fs, {
    onError: () => {
      throw new Error("broken onError");
    },
  });
  const printed = await capturingErrors(() =>
    noneUnhandled(async () => {
      await init(d);
      const a = await roundTrip(d, request(Opcode.GETATTR, 1, arg(GetattrIn.SIZE)));
      assert.equal(a.replies[0].error, -Errno.EIO);
      const b = await roundTrip(d, request(Opcode.STATFS, 1));
      assert.equal(b.replies[0].error, -Errno.EIO);
    })
  );
  assert.equal(printed.filter((l) => l.includes("onError callback")).length, 1);
});

Deno.test("guard: a transport whose reply throws loses no exception to a microtask", async () => {
  let resolveLater!: () => void;
  const later = new Promise<void>((r) => resolveLater = r);
  const d = new Dispatcher({
    getattr: async () => {
      await later;
      return attr;
    },
    lookup: () => ({ nodeId: 2, attr }),
  });
  await init(d);
  const printed = await capturingErrors(() =>
    noneUnhandled(async () => {
      for (
        const req of [
          request(Opcode.GETATTR, 1, arg(GetattrIn.SIZE)),
          request(Opcode.LOOKUP, 1, undefined, "x"),
        ]
      ) {
        const ex = new FakeExchange(
          req.bytes,
          d.argSize(new DataView(req.bytes.buffer).getUint32(4, true)),
        );
        let tried = 0;
        ex.reply = () => {
          tried++;
          throw new Error("transport gone");
        };
        d.dispatch(ex); // the sync path (lookup) must not throw either
        resolveLater();
        await new Promise((r) => setTimeout(r, 5));
        assert.equal(tried, 1);
      }
    })
  );
  assert.equal(printed.filter((l) => l.includes("a reply threw")).length, 1);
});

Deno.test("guard: an INIT shorter than fuse_init_in is refused with EINVAL", async () => {
  const d = new Dispatcher({});
  const short = arg(8, (v) => {
    v.setUint32(InitIn.major, 7, true);
    v.setUint32(InitIn.minor, 45, true);
  });
  const ex = await roundTrip(d, request(Opcode.INIT, 0, short));
  assert.equal(ex.replies[0].error, -Errno.EINVAL);
  await assert.rejects(d.initialized, /shorter than fuse_init_in/);
  assert.equal(d.connection, null);
});

Deno.test("interrupt: INTERRUPT aborts the request's signal, here or in another dispatcher", async () => {
  const board = new InterruptBoard();
  const waits: FileSystem = {
    getattr: (ctx) =>
      new Promise((_, reject) => {
        ctx.signal.throwIfAborted(); // interrupted before it asked
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
      }),
  };
  const here = new Dispatcher(waits, { interrupts: board });
  const there = new Dispatcher(waits, { interrupts: new InterruptBoard(board.buffer) });
  await init(here);
  await init(there);
  // A dispatcher's wait on the board does not hold a process open (a transport
  // does); this test has no transport, so hold it open while it runs.
  const alive = setInterval(() => {}, 1000);
  const interrupt = (target: number) =>
    request(Opcode.INTERRUPT, 0, arg(8, (v) => v.setBigUint64(0, BigInt(target), true)));
  for (const [served, told] of [[here, here], [there, here]] as const) {
    const slow = request(Opcode.GETATTR, 1, arg(GetattrIn.SIZE));
    const pending = roundTrip(served, slow);
    await new Promise((r) => setTimeout(r, 5));
    const ex = new FakeExchange(interrupt(slow.unique).bytes, 8);
    told.dispatch(ex);
    assert.equal(ex.released, true); // INTERRUPT itself gets no reply
    assert.deepEqual(ex.replies, []);
    assert.equal((await pending).replies[0].error, -Errno.EINTR);
  }
  // An interrupt that arrives before the method asks for its signal still counts.
  const early = request(Opcode.GETATTR, 1, arg(GetattrIn.SIZE));
  here.dispatch(new FakeExchange(interrupt(early.unique).bytes, 8));
  assert.equal((await roundTrip(there, early)).replies[0].error, -Errno.EINTR);
  clearInterval(alive);
});
