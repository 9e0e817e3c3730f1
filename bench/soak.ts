/**
 * The soak: does the passthrough's memory stay bounded under a long mixed
 * load? It serves a fresh tmpfs with `examples/passthrough.ts` and, for
 * `--minutes` (default 10), runs in turn fio random read/write (4k, direct),
 * the metadata client (create, stat, unlink), a tree copy and listing, and
 * a round of locks and symlinks, while sampling the server's RSS every 5 s. It
 * prints the first and last minute's peak RSS and whether the last stays
 * within 10 % of the first (flat), and writes JSON under bench/results/ with
 * the peak of every minute.
 *
 *     deno task bench:soak [--minutes N] [--transport io_uring|dev] [--out DIR]
 *
 * Memory is judged here, never in a timed test: the machine is shared.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { libc } from "../ffi/libc.ts";
import { memoryKiB, sh } from "./proc.ts";
import { rssVerdict } from "./report.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    minutes: { type: "string", default: "10" },
    transport: { type: "string", default: "io_uring" },
    out: { type: "string", default: new URL("./results", import.meta.url).pathname },
  },
});
const minutes = Number(values.minutes);
const transport = values.transport!;
if (!(minutes > 0) || !["io_uring", "dev"].includes(transport)) {
  console.error("bench:soak: --minutes takes a positive number, --transport io_uring or dev");
  Deno.exit(2);
}
if (libc.geteuid() !== 0) {
  console.error("bench:soak: run as root (it mounts a tmpfs and a FUSE file system)");
  Deno.exit(1);
}
const repo = new URL("..", import.meta.url).pathname;

const base = await Deno.makeTempDir({ prefix: "denofuse-soak-" });
const src = `${base}/src`, mnt = `${base}/mnt`;
await Deno.mkdir(src);
await Deno.mkdir(mnt);
await sh(`mount -t tmpfs -o size=2g soak ${src}`);
const server = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "--allow-ffi",
    `${repo}examples/passthrough.ts`,
    src,
    mnt,
    "-o",
    transport === "dev" ? "no_io_uring" : "io_uring",
  ],
  stdout: "piped",
  stderr: "inherit",
}).spawn();
const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
for (let said = ""; !said.includes("mounted on");) {
  const { value, done } = await reader.read();
  if (done) throw new Error("the server exited before mounting");
  said += value;
}
reader.releaseLock();
server.stdout.cancel().catch(() => {});

/**
 * Run one phase of the load; a phase that takes over {@linkcode PHASE_LIMIT_S}
 * (a request the server never answered) ends the soak as a failure, since
 * memory sampled over a stalled load says nothing.
 */
async function phase(cmd: string): Promise<void> {
  try {
    await sh(`timeout --kill-after=5 ${PHASE_LIMIT_S} sh -c '${cmd.replaceAll("'", "'\\''")}'`);
  } catch (e) {
    throw new Error(
      `stalled or failed (limit ${PHASE_LIMIT_S} s): ${cmd}: ${(e as Error).message}`,
    );
  }
}
const PHASE_LIMIT_S = 180;

const samples: { t: number; rssKiB: number }[] = [];
const start = Date.now();
const sampler = setInterval(
  () => samples.push({ t: (Date.now() - start) / 1000, rssKiB: memoryKiB(server.pid, "VmRSS") }),
  5000,
);
samples.push({ t: 0, rssKiB: memoryKiB(server.pid, "VmRSS") });
const rounds: Record<string, number> = { fio: 0, metadata: 0, tree: 0, locks: 0 };
try {
  const deadline = start + minutes * 60_000;
  await sh(`mkdir -p ${mnt}/meta ${mnt}/tree`);
  while (Date.now() < deadline) {
    await phase(
      `fio --name=soak --directory=${mnt} --rw=randrw --bs=4k --direct=1 --ioengine=sync ` +
        `--numjobs=2 --size=64M --time_based --runtime=20 --group_reporting --output=/dev/null`,
    );
    rounds.fio++;
    await phase(`${Deno.execPath()} run --allow-ffi ${repo}bench/meta_client.ts ${mnt}/meta 2000`);
    rounds.metadata++;
    await phase(
      `cp -a /usr/share/doc ${mnt}/tree/doc && ls -lR ${mnt}/tree > /dev/null && ` +
        `rm -rf ${mnt}/tree/doc`,
    );
    rounds.tree++;
    await phase(
      `for i in $(seq 50); do flock -x ${mnt}/meta true; ln -sfn x$i ${mnt}/link; ` +
        `touch -h ${mnt}/link; done`,
    );
    rounds.locks++;
  }
} finally {
  clearInterval(sampler);
  samples.push({ t: (Date.now() - start) / 1000, rssKiB: memoryKiB(server.pid, "VmRSS") });
  await sh(`umount ${mnt}`).catch(() => server.kill("SIGKILL"));
  await server.status;
  await sh(`umount ${src}`);
  await Deno.remove(base, { recursive: true });
}

const verdict = rssVerdict(samples);
const mib = (k: number) => (k / 1024).toFixed(1);
console.log(
  `soak over ${transport}, ${minutes} min (${JSON.stringify(rounds)} rounds): RSS first minute ` +
    `peak ${mib(verdict.firstKiB)} MiB, last minute peak ${mib(verdict.lastKiB)} MiB, overall ` +
    `peak ${mib(verdict.peakKiB)} MiB: ${verdict.bounded ? "bounded" : "GROWING"}`,
);
await Deno.mkdir(values.out!, { recursive: true });
const file = `${values.out}/soak-${transport}-${
  new Date().toISOString().replaceAll(":", "-")
}.json`;
await Deno.writeTextFile(
  file,
  JSON.stringify({ transport, minutes, rounds, verdict, samples }, null, 2) + "\n",
);
console.log(`wrote ${file}`);
if (!verdict.bounded) Deno.exit(1);
