// Modes as the caller asked: the kernel masks a created object's mode with
// the caller's umask before it sends the request, so the server's own umask
// must not mask it again. The server runs with umask 027, the callers with
// 0, 002, 022 and 077; every creating call (open O_CREAT, mkdir, mknod of a
// FIFO, a copy that creates with the source's mode, a symlink) must leave the
// modes the same calls leave on the source's own file system, on both
// transports, with one serving thread and with a thread per CPU, with backing
// calls direct and through io_uring.
import assert from "node:assert/strict";
import { sh, transportTest, withPassthrough } from "../helpers.ts";

const CALLER_UMASKS = ["0", "002", "022", "077"];

/** Under each umask, create one object of every kind in `dir`; their modes, sorted. */
async function createAll(dir: string): Promise<string> {
  for (const u of CALLER_UMASKS) {
    await sh(
      `cd '${dir}' && umask ${u} && touch f${u} && mkdir d${u} && mkfifo p${u} && ` +
        `cp /bin/true x${u} && ln -s f${u} l${u} && : > r${u}`,
    );
  }
  return sh(`cd '${dir}' && stat -c '%n %A' * | sort`);
}

const SERVER_UMASK = ["sh", "-c", 'umask 027 && exec "$@"', "sh"];

const PLACEMENTS: [string, string[]][] = [
  ["one thread", ["-o", "threads=1"]],
  ["a thread per CPU", []],
  ["backing calls through io_uring", ["-o", "backing_io=ring"]],
];

for (const [placement, args] of PLACEMENTS) {
  transportTest(
    `umask: modes are the caller's, never the server's (${placement})`,
    (transport) =>
      withPassthrough(
        transport,
        async (mnt, src) => {
          const ref = await Deno.makeTempDir({ dir: src + "/..", prefix: "denofuse-ref-" });
          try {
            const expected = await createAll(ref);
            // The reference shows what the rule is: group write kept under 002, nothing under 0.
            assert.match(expected, /^f002 -rw-rw-r--$/m);
            assert.match(expected, /^d0 drwxrwxrwx$/m);
            assert.match(expected, /^x077 -rwx------$/m);
            assert.equal(await createAll(mnt), expected);
            // And the backing files have them too, not only what the mount reports.
            assert.equal(await sh(`cd '${src}' && stat -c '%n %A' * | sort`), expected);
          } finally {
            await Deno.remove(ref, { recursive: true });
          }
        },
        args,
        undefined,
        SERVER_UMASK,
      ),
    60_000,
  );
}
