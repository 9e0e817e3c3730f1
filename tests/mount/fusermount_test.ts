// Unprivileged mounts through fusermount3: a real non-root user mounts the
// passthrough, uses it, and unmounts it with Ctrl-C; what goes wrong on the
// way (no fusermount3, /dev/fuse closed to users) gets a clear message. Also
// the pieces: spawning a helper, fusermount3's options, sizing the queues to
// RLIMIT_MEMLOCK.
import assert from "node:assert/strict";
import { ChildProcess } from "../../ffi/spawn.ts";
import { SystemError } from "../../ffi/errno.ts";
import { close, libc, readSmallFile } from "../../ffi/libc.ts";
import { FUSERMOUNT, fusermountOptions } from "../../server/mount/fusermount.ts";
import { canPinNow, planQueueDepth, RING_RESERVE } from "../../server/uring/locked_memory.ts";
import { fuseConnectionAt } from "../../server/mount/mount.ts";
import { mount } from "../../server/session.ts";
import { hello } from "../../examples/hello.ts";
import {
  forceUnmount,
  isMounted,
  killServer,
  mountTest,
  reap,
  run,
  sh,
  startServer,
  tempMountpoint,
  uringMissing,
  waitFor,
} from "../helpers.ts";

const USER = "denofuse-test";
const inCI = Deno.env.get("CI") === "true";
const haveFusermount = (await run("sh", "-c", `command -v ${FUSERMOUNT}`)).code === 0;
if (!haveFusermount && !inCI) {
  console.error(`fusermount tests skipped: ${FUSERMOUNT} is missing (apt install fuse3)`);
}

/** A mount test that needs fusermount3 (mandatory in CI, where scripts/deps.sh installs it). */
function fusermountTest(name: string, fn: () => Promise<void>): void {
  if (!haveFusermount && !inCI) {
    Deno.test({ name, ignore: true, fn() {} });
    return;
  }
  mountTest(name, async () => {
    assert.ok(haveFusermount, `CI=true but ${FUSERMOUNT} is missing`);
    await fn();
  }, 90_000);
}

Deno.test("a spawned helper gets exactly its arguments, environment and fd 3; its stderr and status come back", async () => {
  const pipe = new Int32Array(2);
  assert.equal(libc.pipe2(new Uint8Array(pipe.buffer), 0o2000000), 0);
  try {
    const child = ChildProcess.spawn(
      "sh",
      ["-c", 'echo "$1 $X" >&3; env | grep -c . >&2; exit 3', "sh", "one two"],
      ["X=x"],
      pipe[1],
    );
    const exit = await child.wait();
    assert.deepEqual(exit, { code: 3, signal: null, stderr: "2" }); // X and sh's own PWD
    const buf = new Uint8Array(64);
    const n = libc.read(pipe[0], Deno.UnsafePointer.of(buf), 64n);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n)), "one two x\n");
  } finally {
    close(pipe[0]);
    close(pipe[1]);
  }
  const killed = ChildProcess.spawn("sh", ["-c", "kill -9 $$"], []).waitSync();
  assert.deepEqual(killed, { code: null, signal: 9, stderr: "" });
  assert.throws(
    () => ChildProcess.spawn("denofuse-no-such-program", [], []),
    (e) => e instanceof SystemError && e.code === "ENOENT",
  );
});

Deno.test("fusermount3 gets the options a user mount may have", () => {
  assert.equal(fusermountOptions({}), "nosuid,nodev,fsname=denofuse,subtype=denofuse");
  assert.equal(
    fusermountOptions({
      fsname: "src",
      subtype: "passthrough",
      allowOther: true,
      defaultPermissions: true,
      readOnly: true,
      maxRead: 65536,
    }),
    "nosuid,nodev,fsname=src,subtype=passthrough,allow_other,default_permissions,ro,max_read=65536",
  );
});

Deno.test("io_uring queues are sized to what RLIMIT_MEMLOCK lets this user pin", async () => {
  const MiB = 1 << 20;
  const plan = (asked: number | undefined, budget: number, free = budget) =>
    planQueueDepth(asked, 2, MiB, budget, (bytes) => Promise.resolve(bytes <= free));
  assert.equal(await plan(undefined, Infinity), 8);
  // Debian's default 8 MiB: 2 queues x 3 MiB, and the rings.
  assert.equal(await plan(undefined, 8 * MiB), 3);
  assert.equal(await plan(undefined, 2 * MiB + RING_RESERVE), 1);
  // Another process of the user holds some: what can be pinned now decides.
  assert.equal(await plan(undefined, 8 * MiB, 5 * MiB), 2);
  // Not even one entry per queue: no io_uring, and the message says why and what to do.
  assert.match(
    String(await plan(undefined, 2 * MiB)),
    /need 3 MiB of locked memory .* allows 2 MiB .*: raise it \(ulimit -l/,
  );
  // A depth asked for is given or refused, never shrunk behind the user's back.
  assert.equal(await plan(4, 9 * MiB), 4);
  assert.match(String(await plan(4, 8 * MiB)), /2 queues x 4 entries x 1 MiB/);
  // The trial registration itself: a few pages can be pinned here.
  assert.equal(await canPinNow(16384), true);
});

fusermountTest(
  "-o fusermount: root mounts through fusermount3, and unmounting goes back through it",
  async () => {
    const mnt = await Deno.makeTempDir({ prefix: "denofuse-mnt-" });
    try {
      const session = await mount(hello, mnt, {
        subtype: "hello",
        fusermount: true,
        transport: "dev",
        handleSignals: false,
      });
      try {
        assert.equal(session.mountedBy, "fusermount3");
        assert.equal(await Deno.readTextFile(`${mnt}/hello`), "Hello, World!\n");
        assert.match(mountLine(mnt), /fuse\.hello .*nosuid,nodev.*user_id=0/);
      } finally {
        await session.unmount();
      }
      assert.equal(fuseConnectionAt(mnt), null);
    } finally {
      await forceUnmount(mnt);
      await Deno.remove(mnt, { recursive: true });
    }
  },
);

fusermountTest(
  "-o auto_unmount: fusermount3 unmounts when the server dies, even by SIGKILL",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    try {
      // Over /dev/fuse: fusermount3 3.14 unmounts what answers ENOTCONN (see MountOptions).
      const args = ["examples/passthrough.ts", src, mnt, "-o", "auto_unmount,no_io_uring"];
      const { child } = await startServer(args);
      assert.match(mountLine(mnt), /fuse\.passthrough .*user_id=0/);
      await killServer(child); // no chance to clean up
      await waitFor(() => Promise.resolve(!isMounted(mnt)), 5000);
    } finally {
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);

fusermountTest(
  "a user other than root mounts the passthrough, uses it, and Ctrl-C unmounts it",
  async () => {
    const user = await testUser();
    const place = await Deno.makeTempDir({ prefix: "denofuse-user-" });
    const devFuseMode = Deno.statSync("/dev/fuse").mode! & 0o7777;
    let server: Deno.ChildProcess | null = null;
    const [src, mnt, mnt2] = [`${place}/src`, `${place}/mnt`, `${place}/mnt2`];
    try {
      const repo = await stageForUser(user, place);
      await sh(
        `mkdir ${src} ${mnt} ${mnt2} ${place}/deno-dir && echo hello > ${src}/hello && ` +
          `chown -R ${user.uid}:${user.gid} ${place} && chmod 755 ${place}`,
      );
      // As the user, with a clean environment (plus `env`).
      const as = (...env: string[]): [string, ...string[]] => [
        ...user.setpriv,
        "env",
        "-i",
        `HOME=${place}`,
        `DENO_DIR=${place}/deno-dir`,
        "PATH=/usr/local/bin:/usr/bin:/bin",
        ...env,
      ];
      const args = [`${repo.dir}/examples/passthrough.ts`, src, mnt];
      const serve = (...env: string[]) =>
        run(...as(...env), repo.deno, "run", "--allow-ffi", ...args);

      // fusermount3 opens /dev/fuse as the user: where it may not, say how to fix it.
      await Deno.chmod("/dev/fuse", 0o600);
      const closed = await serve();
      assert.equal(closed.code, 1, closed.stderr);
      assert.match(closed.stderr, /\/dev\/fuse is not open to user \d+ .*chmod 666 \/dev\/fuse/);
      await Deno.chmod("/dev/fuse", 0o666);
      // No fusermount3 in PATH: name the package.
      const missing = await serve("PATH=/nonexistent");
      assert.equal(missing.code, 1, missing.stderr);
      assert.match(missing.stderr, /fusermount3 is not installed.*apt install fuse3/);
      assert.ok(!isMounted(mnt));

      const started = await startServer(args, as(), repo.deno);
      server = started.child;
      // Kernel passthrough (the passthrough's default) needs CAP_SYS_ADMIN: it says so and
      // serves the data itself.
      const said = server.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let notices = "";
      while (!notices.includes("\n")) notices += (await said.read()).value ?? "\n";
      said.releaseLock();
      assert.match(notices, /kernel passthrough needs CAP_SYS_ADMIN \(root\): serving file data/);
      assert.match(
        started.out,
        uringMissing ? /over dev/ : /over io_uring/,
        "io_uring works for a user too (its queues sized to RLIMIT_MEMLOCK)",
      );
      assert.match(
        mountLine(mnt),
        new RegExp(`nosuid,nodev.*user_id=${user.uid},group_id=${user.gid}`),
      );

      // The user works in it with ordinary tools; the source shows the result.
      const script = `cd ${mnt} && cat hello && mkdir d && echo one > d/a && mv d/a d/b && ` +
        `dd if=/dev/urandom of=big bs=64k count=40 status=none && cmp big ${src}/big && ` +
        `ln -s b d/link && ls -A . d && rm hello`;
      const used = await run(...as(), "sh", "-c", script);
      assert.equal(used.code, 0, used.stderr);
      assert.equal(used.stdout, "hello\n.:\nbig\nd\nhello\n\nd:\nb\nlink\n");
      assert.equal(await Deno.readTextFile(`${src}/d/b`), "one\n");
      assert.equal((await Deno.lstat(`${src}/d/link`)).isSymlink, true);
      assert.equal((await Deno.stat(`${src}/big`)).size, 40 * 65536);
      // Without allow_other, not even root gets in: the kernel's rule for user mounts.
      const root = await run("stat", `${mnt}/big`);
      assert.match(root.stderr, /Permission denied/);

      // A second mount of the same user, while the first holds most of the
      // user's locked memory: it still mounts (fewer ring entries, or /dev/fuse).
      const second = await startServer([args[0], src, mnt2], as(), repo.deno);
      try {
        const read = await run(...as(), "cat", `${mnt2}/d/b`);
        assert.equal(read.stdout, "one\n", read.stderr);
        second.child.kill("SIGINT");
        assert.equal((await reap(second.child)).code, 0);
      } finally {
        await killServer(second.child);
      }
      assert.ok(!isMounted(mnt2));

      // Ctrl-C: the server unmounts through fusermount3 -u and exits cleanly.
      server.kill("SIGINT");
      const status = await reap(server);
      server = null;
      assert.equal(status.code, 0);
      assert.ok(!isMounted(mnt), "the mount is gone");
    } finally {
      if (server) await killServer(server);
      await forceUnmount(mnt);
      await forceUnmount(mnt2);
      await Deno.chmod("/dev/fuse", devFuseMode);
      await Deno.remove(place, { recursive: true });
    }
  },
);

/** The /proc/mounts line of the mount at `path`. */
function mountLine(path: string): string {
  return readSmallFile("/proc/mounts").split("\n").find((l) => l.split(" ")[1] === path) ?? "";
}

/** The test user, and the command prefix that runs a command as it. */
interface TestUser {
  uid: number;
  gid: number;
  setpriv: [string, ...string[]];
}

/** The test user (created, as a system user with no home and no shell, if missing). */
async function testUser(): Promise<TestUser> {
  if ((await run("id", "-u", USER)).code !== 0) {
    await sh(
      `useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${USER}`,
    );
  }
  const uid = Number((await sh(`id -u ${USER}`)).trim());
  const gid = Number((await sh(`id -g ${USER}`)).trim());
  return { uid, gid, setpriv: ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups"] };
}

/**
 * The sources and a Deno binary the test user can read: this checkout and
 * Deno as they are when they are (a clone under /root is not), else copies
 * in `place`.
 */
async function stageForUser(
  user: TestUser,
  place: string,
): Promise<{ dir: string; deno: string }> {
  const repo = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
  const can = async (test: string) => (await run(...user.setpriv, "sh", "-c", test)).code === 0;
  let dir = repo;
  if (!await can(`test -r '${repo}/examples/passthrough.ts'`)) {
    dir = `${place}/repo`;
    await sh(
      `mkdir ${dir} && cd '${repo}' && cp -r deno.json mod.ts passthrough.ts testing.ts ` +
        `examples ffi fs ops server ${dir}/`,
    );
  }
  let deno = Deno.execPath();
  if (!await can(`test -x '${deno}'`)) {
    await sh(`cp '${deno}' ${place}/deno`);
    deno = `${place}/deno`;
  }
  return { dir, deno };
}
