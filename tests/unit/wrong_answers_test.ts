// A FileSystem that answers wrongly never breaks the request stream: for
// every operation in the table, a method that answers with the wrong shape
// (undefined, null, a string, a number, {}, an array) or fails with
// something that is not an Error gets its request one reply, EIO (a method
// whose answer is not used succeeds), is reported once with its name, and
// the next request is served. Mount-free, through the testing kit; the
// mounted version is tests/mount/wrong_answers_mount_test.ts.
import assert from "node:assert/strict";
import { AnswerError, Errno, FUSE_ROOT_ID } from "../../mod.ts";
import { ANY } from "../../ops/answers.ts";
import { Opcode, opcodeName, ReadIn, WriteIn } from "../../ops/abi.ts";
import { OPERATIONS } from "../../ops/operations.ts";
import { TestSession } from "../../testing.ts";
import { WRONG_ANSWERS, wrongAnswer } from "../fixtures/wrong_answers.ts";

/** The names that follow each opcode's fixed argument. */
function namesOf(opcode: number): string[] {
  switch (opcode) {
    case Opcode.SYMLINK:
      return ["link", "target"];
    case Opcode.RENAME:
    case Opcode.RENAME2:
      return ["from", "to"];
    case Opcode.SETXATTR:
      return ["user.x"];
    case Opcode.LOOKUP:
    case Opcode.MKNOD:
    case Opcode.MKDIR:
    case Opcode.UNLINK:
    case Opcode.RMDIR:
    case Opcode.LINK:
    case Opcode.CREATE:
    case Opcode.GETXATTR:
    case Opcode.REMOVEXATTR:
      return ["name"];
  }
  return [];
}

/** A well-formed request of `opcode`: its fixed argument zeroed but for the sizes. */
function argumentOf(opcode: number, size: number): Uint8Array {
  const a = new Uint8Array(size);
  const v = new DataView(a.buffer);
  if (opcode === Opcode.READ || opcode === Opcode.READDIR || opcode === Opcode.READDIRPLUS) {
    v.setUint32(ReadIn.size, 4096, true);
  }
  if (opcode === Opcode.WRITE) v.setUint32(WriteIn.size, 5, true);
  return a;
}

const good = {
  lookup: () => ({ nodeId: 2, attr: { ino: 2, mode: 0o100644 } }),
};

/** The wrong-looking values that are right answers of some methods. */
const ALSO_RIGHT: Record<string, string[]> = {
  readlink: ["string"], // a target may be a string
  open: ["object"], // {}: no handle, no flags
  opendir: ["object"],
  statfs: ["object"], // {}: an empty file system
};

for (const [key, op] of Object.entries(OPERATIONS)) {
  const opcode = Number(key);
  Deno.test(`wrong answers: ${opcodeName(opcode)} (${op.method}) gets one reply, EIO`, async () => {
    for (const kind of WRONG_ANSWERS) {
      const reported: unknown[] = [];
      const fs = { ...good, [op.method]: () => wrongAnswer(kind) };
      const t = await TestSession.start(fs, { onError: (e) => reported.push(e) });
      const data = opcode === Opcode.WRITE ? [new Uint8Array(5)] : namesOf(opcode);
      const arg = argumentOf(opcode, op.request?.SIZE ?? 0);
      const failure = kind === "rejected" || kind === "thrown";
      const right = !failure && (op.answer === ANY || ALSO_RIGHT[op.method]?.includes(kind));
      // Twice: a wrong answer is reported once per method.
      for (let i = 0; i < 2; i++) {
        const reply = await t.exchange(opcode, FUSE_ROOT_ID, arg, ...data);
        assert.equal(reply?.error, right ? 0 : -Errno.EIO, `${op.method} answering ${kind}`);
      }
      if (failure) {
        // Not an Error, yet reported as it was thrown, every time.
        assert.equal(reported.length, 2);
        assert.ok(!(reported[0] instanceof AnswerError));
      } else if (!right) {
        assert.equal(reported.length, 1, `${op.method} answering ${kind}: ${reported}`);
        assert.ok(reported[0] instanceof AnswerError);
        assert.match(reported[0].message, new RegExp(`^${op.method} returned .+; expected .+`));
      } else assert.deepEqual(reported, []);
      // The next request is served.
      if (op.method !== "lookup") assert.equal((await t.lookup(1, "f")).nodeId, 2);
      await new Promise((r) => setTimeout(r, 0));
      const c = t.counts;
      assert.equal(c.requests, c.replies + c.released, JSON.stringify(c));
    }
  });
}

Deno.test("wrong answers: the report names the method, what it returned and what it must", async () => {
  const reported: string[] = [];
  const t = await TestSession.start({
    ...good,
    open: () => ({ fh: 1 }),
    read: () => "hello" as unknown as Uint8Array,
    getattr: () => ({ ino: 1 }) as never,
  }, { onError: (e) => reported.push((e as Error).message) });
  await assert.rejects(t.read(2, 1, 0, 10), (e: { errno: number }) => e.errno === Errno.EIO);
  await assert.rejects(t.getattr(1), (e: { errno: number }) => e.errno === Errno.EIO);
  await assert.rejects(t.lookup(1, "x").then(() => t.read(2, 1, 0, 1)));
  assert.deepEqual(reported, [
    "read returned a string; expected Uint8Array or { fd, offset, length }",
    "getattr returned an Attr with mode: undefined; expected an Attr { ino, mode, ... }",
  ]);
});

Deno.test("wrong answers: a write may not claim more than was sent", async () => {
  const reported: string[] = [];
  const t = await TestSession.start({ ...good, write: () => 6 }, {
    onError: (e) => reported.push((e as Error).message),
  });
  await assert.rejects(
    t.write(2, 1, 0, new Uint8Array(5)),
    (e: { errno: number }) => e.errno === Errno.EIO,
  );
  assert.match(reported[0], /^write returned 6, more than the 5 bytes sent/);
});
