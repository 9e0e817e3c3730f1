// A FileSystem that answers wrongly never breaks a real mount: memfs
// (tests/fixtures/wrong_answers_server.ts) with one method at a time
// answering each wrong kind, driven by ordinary system calls on both
// transports, with one serving thread and with a thread per CPU. The caller
// gets EIO (success where the method's answer is not used), the mount keeps
// serving, every request is dispatched once and answered once, and each
// method's wrong answer is reported once.
import assert from "node:assert/strict";
import { AT, cstr, errno, libc, O } from "../../ffi/libc.ts";
import { Errno } from "../../mod.ts";
import { WRONG_ANSWERS, type WrongAnswer } from "../fixtures/wrong_answers.ts";
import { killServer, tempMountpoint, transportTest } from "../helpers.ts";

const ok = (n: number | bigint) => n >= 0 ? 0 : errno();

/** Run `fn` and give the errno it failed with (0: it succeeded). */
async function errnoOf(fn: () => unknown): Promise<number> {
  try {
    const r = await fn();
    return typeof r === "number" ? r : 0;
  } catch (e) {
    const m = /os error (\d+)/.exec(String(e));
    if (!m) throw e;
    return Number(m[1]);
  }
}

/** With `fd` of `path` opened by libc (`flags`), run `fn`; its errno. */
function withFd(path: string, flags: number, fn: (fd: number) => number): number {
  const fd = libc.open(cstr(path), flags | O.CLOEXEC, 0);
  if (fd < 0) return errno();
  try {
    return fn(fd);
  } finally {
    libc.close(fd);
  }
}

interface Trigger {
  /** Made while every method answers rightly. */
  setup?: (mnt: string, tag: string) => Promise<void>;
  /** The system call that makes the kernel ask the method; its errno. */
  call: (mnt: string, tag: string) => Promise<number> | number;
  /** The caller never sees the method's answer (RELEASE). */
  unseen?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * For each method memfs has (and release, which has a default), a system
 * call that reaches it. (Without opendir the session tells the kernel not to
 * send OPENDIR at all.)
 */
const TRIGGERS: Record<string, Trigger> = {
  lookup: { call: (m, t) => errnoOf(() => Deno.lstat(`${m}/nx-${t}`)) },
  getattr: {
    call: (m) =>
      errnoOf(async () => {
        using f = await Deno.open(`${m}/f`);
        await sleep(15); // past the (0 s) attribute timeout's jiffy
        await f.stat();
      }),
  },
  setattr: { call: (m) => errnoOf(() => Deno.chmod(`${m}/f`, 0o640)) },
  readlink: { call: (m) => errnoOf(() => Deno.readLink(`${m}/l`)) },
  symlink: { call: (m, t) => errnoOf(() => Deno.symlink("f", `${m}/s-${t}`)) },
  mknod: { call: (m, t) => ok(libc.mknodat(AT.FDCWD, cstr(`${m}/n-${t}`), 0o10644, 0n)) },
  mkdir: { call: (m, t) => errnoOf(() => Deno.mkdir(`${m}/d-${t}`)) },
  unlink: {
    setup: (m, t) => Deno.writeTextFile(`${m}/u-${t}`, "x"),
    call: (m, t) => errnoOf(() => Deno.remove(`${m}/u-${t}`)),
  },
  rmdir: {
    setup: (m, t) => Deno.mkdir(`${m}/r-${t}`),
    call: (m, t) => errnoOf(() => Deno.remove(`${m}/r-${t}`)),
  },
  rename: {
    setup: (m, t) => Deno.writeTextFile(`${m}/m-${t}`, "x"),
    call: (m, t) => errnoOf(() => Deno.rename(`${m}/m-${t}`, `${m}/m2-${t}`)),
  },
  link: { call: (m, t) => errnoOf(() => Deno.link(`${m}/f`, `${m}/h-${t}`)) },
  open: { call: (m) => errnoOf(() => Deno.open(`${m}/f`).then((f) => f.close())) },
  create: {
    call: (m, t) =>
      errnoOf(() => Deno.open(`${m}/c-${t}`, { create: true, write: true }).then((f) => f.close())),
  },
  read: { call: (m) => errnoOf(() => Deno.readTextFile(`${m}/f`)) },
  write: {
    call: (m) =>
      errnoOf(async () => {
        using f = await Deno.open(`${m}/f`, { write: true });
        await f.write(new TextEncoder().encode("H"));
      }),
  },
  statfs: { call: (m) => withFd(m, O.PATH, (fd) => ok(libc.fstatfs(fd, new Uint8Array(120)))) },
  release: { call: (m) => errnoOf(() => Deno.open(`${m}/f`).then((f) => f.close())), unseen: true },
  setxattr: {
    call: (m) => ok(libc.setxattr(cstr(`${m}/f`), cstr("user.t"), new Uint8Array(1), 1n, 0)),
  },
  getxattr: {
    call: (m) => ok(libc.getxattr(cstr(`${m}/f`), cstr("user.a"), new Uint8Array(64), 64n)),
  },
  listxattr: { call: (m) => ok(libc.listxattr(cstr(`${m}/f`), new Uint8Array(256), 256n)) },
  removexattr: {
    setup: (m, t) => {
      const name = cstr(`user.r${t}`);
      assert.equal(libc.setxattr(cstr(`${m}/f`), name, new Uint8Array(1), 1n, 0), 0);
      return Promise.resolve();
    },
    call: (m, t) => ok(libc.removexattr(cstr(`${m}/f`), cstr(`user.r${t}`))),
  },
  readdir: { call: (m) => errnoOf(() => Array.fromAsync(Deno.readDir(`${m}/d`))) },
  fallocate: {
    call: (m) => withFd(`${m}/f`, O.RDWR, (fd) => ok(libc.fallocate(fd, 0, 0n, 16n))),
  },
  lseek: { call: (m) => withFd(`${m}/f`, O.RDONLY, (fd) => ok(libc.lseek(fd, 0n, 3))) },
};

/** The wrong-looking values that are right answers (as in wrong_answers_test.ts). */
const ALSO_RIGHT: Record<string, string[]> = {
  readlink: ["string"],
  open: ["object"],
  statfs: ["object"],
};
/** Methods whose answer is not used: any value is fine. */
const VOID = new Set([
  "unlink",
  "rmdir",
  "rename",
  "release",
  "setxattr",
  "removexattr",
  "readdir",
  "fallocate",
]);

/** The server, and one line per command. */
class Control {
  #lines: ReadableStreamDefaultReader<string>;
  #buffered = "";
  constructor(readonly child: Deno.ChildProcess) {
    this.#lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }
  async line(): Promise<string> {
    while (!this.#buffered.includes("\n")) {
      const { value, done } = await this.#lines.read();
      if (done) throw new Error(`server ended: ${this.#buffered}`);
      this.#buffered += value;
    }
    const nl = this.#buffered.indexOf("\n");
    const line = this.#buffered.slice(0, nl);
    this.#buffered = this.#buffered.slice(nl + 1);
    return line;
  }
  async say(command: string): Promise<string> {
    const w = this.child.stdin.getWriter();
    await w.write(new TextEncoder().encode(command + "\n"));
    w.releaseLock();
    return this.line();
  }
}

for (const threads of [1, 2]) {
  transportTest(
    `wrong answers on a mount: EIO, one reply each, serving on (threads=${threads})`,
    async (transport) => {
      const [mnt, cleanup] = await tempMountpoint();
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-ffi",
          "tests/fixtures/wrong_answers_server.ts",
          mnt,
          transport,
          `${threads}`,
        ],
        cwd: new URL("../..", import.meta.url).pathname,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const server = new Control(child);
      try {
        assert.match(await server.line(), new RegExp(`mounted on .* over ${transport}`));
        await Deno.writeTextFile(`${mnt}/f`, "hello");
        await Deno.mkdir(`${mnt}/d`);
        await Deno.writeTextFile(`${mnt}/d/inside`, "");
        await Deno.symlink("f", `${mnt}/l`);
        assert.equal(libc.setxattr(cstr(`${mnt}/f`), cstr("user.a"), new Uint8Array(1), 1n, 0), 0);
        const wronglyAnswered = new Set<string>();
        for (const [method, trigger] of Object.entries(TRIGGERS)) {
          for (const kind of WRONG_ANSWERS) {
            const tag = `${method}-${kind}`;
            await trigger.setup?.(mnt, tag);
            assert.equal(await server.say(`wrong ${method} ${kind}`), "ok");
            const got = await trigger.call(mnt, tag);
            assert.equal(await server.say("right"), "ok");
            const failure = kind === "rejected" || kind === "thrown";
            const right = trigger.unseen ||
              (!failure && (VOID.has(method) || ALSO_RIGHT[method]?.includes(kind as WrongAnswer)));
            if (!right && !failure) wronglyAnswered.add(method);
            assert.equal(got, right ? 0 : Errno.EIO, `${method} answering ${kind}`);
            // Still serving, rightly.
            assert.equal(await Deno.readTextFile(`${mnt}/f`), "hello");
          }
        }
        const report = JSON.parse(await server.say("report"));
        assert.deepEqual(report.anomalies, []);
        assert.ok(report.requests > 500, `${report.requests} requests`);
        // Once per method, with its name.
        assert.deepEqual(
          report.reported.map((m: string) => m.split(" ")[0]).sort(),
          [...wronglyAnswered].sort(),
        );
        if (report.uring) assert.equal(report.uring.replies, report.uring.requests);
        child.kill("SIGTERM");
        assert.equal((await child.status).code, 0);
      } finally {
        await killServer(child).catch(() => {});
        await cleanup();
      }
    },
    120_000,
  );
}
