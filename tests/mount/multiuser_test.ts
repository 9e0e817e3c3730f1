// Multi-user POSIX semantics on a shared mount (-o allow_other, with
// default_permissions as the passthrough mounts): the same script, run as
// root and as two other users, in the mount and in a plain directory on
// the backing file system, must print the same outcomes and leave the same
// modes, owners and times. It covers NAME_MAX, sticky directories, the
// owner and write-permission rules of utimensat, chmod/chown by others and
// setgid directories. Each user has a umask of its own, and the server
// another (027).
import assert from "node:assert/strict";
import {
  dataPathArgs,
  dataPathTest,
  killServer,
  run,
  sh,
  startServer,
  tempMountpoint,
  transportTest,
  withPassthrough,
} from "../helpers.ts";

const A = 60001, B = 60002, GROUP = 60003;
const n255 = "n".repeat(255), m255 = "m".repeat(255), l255 = "l".repeat(255);
const n256 = "n".repeat(256);

/** The servers run with a umask no user has. */
const SERVER_UMASK = ["sh", "-c", 'umask 027 && exec "$@"', "sh"];

/** `t LABEL CMD...`: prints `LABEL: ok`, or the error's last words. */
const PRELUDE = `t() { l="$1"; shift; if o=$("$@" 2>&1); then echo "$l: ok"; ` +
  `else echo "$l: \${o##*: }"; fi; }`;

/** What each user does, in order: [uid or "root", supplementary groups, commands]. */
const phases: [number | "root", number[], string[]][] = [
  ["root", [], [
    `t "setup" sh -c 'mkdir sticky shared sgid && chmod 1777 sticky && chmod 0777 shared && chgrp ${GROUP} sgid && chmod 2777 sgid'`,
  ]],
  [A, [GROUP], [
    `t "A creates a 255-byte name" touch shared/${n255}`,
    `t "A creates a 256-byte name" touch shared/${n256}`,
    `t "A makes a 256-byte directory" mkdir shared/${n256}`,
    `t "A makes a 256-byte symlink" ln -s x shared/${n256}`,
    `t "A renames to 256 bytes" mv shared/${n255} shared/${n256}`,
    `t "A renames to 255 bytes" mv shared/${n255} shared/${m255}`,
    `t "A links at 255 bytes" ln shared/${m255} shared/${l255}`,
    `t "A stats 256 bytes" stat shared/${n256}`,
    `t "A makes a 255-byte directory" mkdir shared/d${n255.slice(1)}`,
    `t "A writes in sticky" sh -c 'echo a > sticky/a && echo a > sticky/a2'`,
    `t "A makes a writable file" sh -c 'echo a > shared/rw && chmod 666 shared/rw'`,
    `t "A makes a read-only file" sh -c 'echo a > shared/ro && chmod 644 shared/ro'`,
    `t "A creates in setgid dir" sh -c 'touch sgid/f && mkdir sgid/d'`,
  ]],
  [B, [], [
    `t "B removes A's file in sticky" rm -f sticky/a`,
    `t "B renames A's file in sticky" mv sticky/a sticky/b0`,
    `t "B writes in sticky" sh -c 'echo b > sticky/b'`,
    `t "B renames over A's file in sticky" mv sticky/b sticky/a2`,
    `t "B touches A's writable file (now)" touch shared/rw`,
    `t "B sets A's writable file's times" touch -d @1000000000 shared/rw`,
    `t "B sets A's writable file's mtime" touch -m -d @1000000000 shared/rw`,
    `t "B touches A's read-only file" touch shared/ro`,
    `t "B chmods A's file" chmod 600 shared/rw`,
    `t "B chowns A's file" chown ${B} shared/rw`,
    `t "B removes A's file outside sticky" rm -f shared/ro`,
  ]],
  [A, [GROUP], [
    `t "A sets own times" touch -d @1100000000 shared/rw`,
    `t "A sets own atime only" touch -a -d @1200000000 shared/rw`,
    `t "A moves own file in sticky" mv sticky/a sticky/a3`,
    `t "A chgrps to a group it is not in" chgrp 60009 shared/rw`,
    `t "A chgrps to its group" chgrp ${GROUP} shared/rw`,
    `t "A chowns to B" chown ${B} shared/rw`,
  ]],
  ["root", [], [
    `t "root removes B's file in sticky" rm sticky/b`,
    `t "root sets times" touch -m -d @1300000000 sticky/a2`,
  ]],
];

/**
 * Each user's umask: all differ from each other and from the server's, so
 * a mode masked by the wrong one shows in the listing.
 */
const UMASK = { root: "022", [A]: "002", [B]: "077" } as Record<number | "root", string>;

/** Run every phase in `dir`; what the script printed. */
async function script(dir: string): Promise<string> {
  let out = "";
  for (const [who, groups, commands] of phases) {
    const body = `${PRELUDE}; umask ${UMASK[who]}; cd '${dir}' && ${commands.join("; ")}`;
    const as = who === "root" ? [] : [
      "setpriv",
      `--reuid=${who}`,
      `--regid=${who}`,
      groups.length ? `--groups=${groups.join(",")}` : "--clear-groups",
    ];
    const r = as.length ? await run(as[0], ...as.slice(1), "sh", "-c", body) : await run(
      "sh",
      "-c",
      body,
    );
    assert.equal(r.stderr, "", r.stderr);
    out += r.stdout;
  }
  return out;
}

/** Names (length-abbreviated), types, modes, owners, sizes, and the explicitly set times. */
function listing(dir: string): Promise<string> {
  return sh(
    // Directory sizes are each file system's own business.
    `cd '${dir}' && find . \\( -type d -printf '%p %y %m %U:%G\\n' \\) -o ` +
      `-printf '%p %y %m %U:%G %s\\n' | sed -E 's/([a-z])\\1{40,}/\\1.../g' ` +
      `| sort && stat -c '%n %X %Y' shared/rw && stat -c '%n %Y' sticky/a2`,
  );
}

dataPathTest(
  "multi-user: NAME_MAX, sticky directories, utimensat and ownership rules match the backing file system",
  (transport, data) =>
    withPassthrough(
      transport,
      async (mnt, src) => {
        await Deno.chmod(mnt, 0o755);
        const ref = await Deno.makeTempDir({ dir: src + "/..", prefix: "denofuse-ref-" });
        await Deno.chmod(ref, 0o755);
        try {
          const expected = await script(ref);
          // The reference says what the rules are; make sure it says something.
          assert.match(expected, /B removes A's file in sticky: Operation not permitted/);
          assert.match(expected, /A creates a 256-byte name: File name too long/);
          assert.match(expected, /B sets A's writable file's times: Operation not permitted/);
          assert.match(expected, /B touches A's writable file \(now\): ok/);
          assert.match(expected, /A chgrps to its group: ok/);
          assert.equal(await script(mnt), expected);
          const reference = await listing(ref);
          assert.match(reference, /\/sgid\/d d 2775 60001:60003/);
          assert.equal(await listing(mnt), reference);
        } finally {
          await Deno.remove(ref, { recursive: true });
        }
      },
      ["-o", "allow_other", ...dataPathArgs(data)],
      undefined,
      SERVER_UMASK,
    ),
  120_000,
);

transportTest(
  "multi-user: memfs follows the same rules as the backing file system",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    const ref = await Deno.makeTempDir({ prefix: "denofuse-ref-" });
    await Deno.chmod(ref, 0o755);
    const { child } = await startServer([
      "examples/memfs.ts",
      mnt,
      "-o",
      `allow_other,${transport === "io_uring" ? "io_uring" : "no_io_uring"}`,
    ], SERVER_UMASK);
    try {
      assert.equal(await script(mnt), await script(ref));
      assert.equal(await listing(mnt), await listing(ref));
    } finally {
      await killServer(child);
      await cleanup();
      await Deno.remove(ref, { recursive: true });
    }
  },
  120_000,
);
