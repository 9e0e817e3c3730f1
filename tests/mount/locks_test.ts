// Locks through the passthrough are locks on the backing file (open file
// description locks and flock), so they conflict with processes using the
// source directly; a waiting lock never blocks the server and ends when its
// caller is interrupted (INTERRUPT aborts the request's signal).
import assert from "node:assert/strict";
import { check, close, errno, libc, O, open } from "../../ffi/libc.ts";
import { Errno } from "../../ffi/errno.ts";
import { dataPathArgs, dataPathTest, run, waitFor, withPassthrough } from "../helpers.ts";

const F_GETLK = 5, F_SETLK = 6, F_OFD_SETLK = 37;
const F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2;

function lockStruct(type: number, start = 0, len = 0): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(32);
  const v = new DataView(f.buffer);
  v.setInt16(0, type, true);
  v.setBigInt64(8, BigInt(start), true);
  v.setBigInt64(16, BigInt(len), true);
  return f;
}

function spawn(cmd: string, ...args: string[]): Deno.ChildProcess {
  return new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "null" }).spawn();
}

/** Reads what `child` prints: each call, the next chunk, or null if none comes within `ms`. */
function output(child: Deno.ChildProcess): (ms: number) => Promise<string | null> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let next: Promise<string> | null = null;
  return async (ms) => {
    next ??= reader.read().then((r) => r.value ?? "");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const got = await Promise.race([
      next,
      new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
    ]);
    clearTimeout(timer);
    if (got !== null) next = null;
    return got;
  };
}

dataPathTest(
  "locks: POSIX locks and flock through the mount conflict with the source's own users",
  (transport, data) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.writeTextFile(`${src}/f`, "0123456789".repeat(10));
      const tryLock = (path: string) =>
        run(Deno.execPath(), "run", "--allow-ffi", "tests/fixtures/try_posix_lock.ts", path);
      // A lock taken on the source directly (bytes 10..19) ...
      const direct = open(`${src}/f`, O.RDWR);
      try {
        check(libc.fcntl(direct, F_OFD_SETLK, lockStruct(F_WRLCK, 10, 10)), "fcntl");
        // ... makes a lock through the mount fail, and F_GETLK names it.
        assert.equal((await tryLock(`${mnt}/f`)).stdout, "EAGAIN\n");
        const viaMount = open(`${mnt}/f`, O.RDWR);
        try {
          const probe = lockStruct(F_RDLCK, 0, 0);
          check(libc.fcntl(viaMount, F_GETLK, probe), "fcntl F_GETLK");
          const v = new DataView(probe.buffer);
          assert.deepEqual(
            [v.getInt16(0, true), v.getBigInt64(8, true), v.getBigInt64(16, true)],
            [F_WRLCK, 10n, 10n],
          );
          // Bytes outside it are free.
          check(libc.fcntl(viaMount, F_SETLK, lockStruct(F_WRLCK, 50, 10)), "fcntl F_SETLK");
          // And the mount's lock is seen from the source.
          assert.equal(libc.fcntl(direct, F_OFD_SETLK, lockStruct(F_WRLCK, 55, 1)), -1);
          assert.equal(errno(), Errno.EAGAIN);
          check(libc.fcntl(viaMount, F_SETLK, lockStruct(F_UNLCK, 50, 10)), "fcntl unlock");
          check(libc.fcntl(direct, F_OFD_SETLK, lockStruct(F_WRLCK, 55, 1)), "fcntl");
        } finally {
          close(viaMount);
        }
      } finally {
        close(direct);
      }
      assert.equal((await tryLock(`${mnt}/f`)).stdout, "locked\n");
      // flock on the source excludes flock through the mount, and back.
      const holder = spawn("flock", "-x", `${src}/f`, "cat");
      await new Promise((r) => setTimeout(r, 200));
      assert.equal((await run("flock", "-n", "-x", `${mnt}/f`, "true")).code, 1);
      assert.equal((await run("flock", "-n", "-s", `${mnt}/f`, "true")).code, 1);
      await holder.stdin.close();
      assert.equal((await holder.status).code, 0);
      assert.equal((await run("flock", "-n", "-x", `${mnt}/f`, "true")).code, 0);
    }, dataPathArgs(data)),
);

dataPathTest(
  "locks: a waiting lock gets it when freed, and a killed waiter is let go at once",
  (transport, data) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.writeTextFile(`${src}/f`, "x");
      const direct = open(`${src}/f`, O.RDWR);
      let waiter: Deno.ChildProcess | null = null;
      try {
        check(libc.fcntl(direct, F_OFD_SETLK, lockStruct(F_WRLCK)), "fcntl");
        // F_SETLKW through the mount waits while the source holds the lock ...
        waiter = spawn(
          Deno.execPath(),
          "run",
          "--allow-ffi",
          "tests/fixtures/wait_posix_lock.ts",
          `${mnt}/f`,
        );
        const said = output(waiter);
        assert.equal(await said(600), null, "F_SETLKW returned while the lock was held");
        // ... and the server still serves everything else meanwhile.
        assert.equal(await Deno.readTextFile(`${mnt}/f`), "x");
        check(libc.fcntl(direct, F_OFD_SETLK, lockStruct(F_UNLCK)), "fcntl unlock");
        assert.equal(await said(5000), "locked\n");
        await waiter.stdin.close();
        await waiter.status;
        waiter = null;
        // A flock waiter whose caller is killed: the kernel sends INTERRUPT,
        // the server gives up the wait, and the caller dies at once.
        // The waiter's lock goes with its RELEASE, which the kernel sends
        // in the background after the process exits.
        await waitFor(() =>
          Promise.resolve(libc.fcntl(direct, F_OFD_SETLK, lockStruct(F_WRLCK)) === 0)
        );
        const flockHolder = spawn("flock", "-x", `${src}/f`, "cat");
        await new Promise((r) => setTimeout(r, 200));
        waiter = spawn("flock", "-x", `${mnt}/f`, "true");
        await new Promise((r) => setTimeout(r, 300));
        const started = Date.now();
        waiter.kill("SIGKILL");
        await waiter.status;
        waiter = null;
        assert.ok(Date.now() - started < 2000, `the killed waiter took ${Date.now() - started} ms`);
        await flockHolder.stdin.close();
        await flockHolder.status;
        assert.equal((await run("flock", "-n", "-x", `${mnt}/f`, "true")).code, 0);
      } finally {
        close(direct);
        if (waiter) {
          try {
            waiter.kill("SIGKILL");
          } catch { /* gone */ }
          await waiter.status;
        }
      }
    }, dataPathArgs(data)),
);
