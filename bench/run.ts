/**
 * The benchmark: fio and a metadata job on a fresh tmpfs, through the
 * passthrough example and optionally through other FUSE servers, side by
 * side in one run.
 *
 *     deno task bench [--quick] [--rounds N] [--runtime S] [--size SIZE]
 *                     [--files N] [--compare '[LABEL=]COMMAND' ...] [--modes]
 *                     [--pools N,...] [--numjobs N] [--only JOB,...]
 *                     [--server-options OPT,...] [--out DIR]
 *
 * Configurations: `tmpfs` itself; `dev` and `io_uring`, the passthrough
 * serving file data itself (`-o no_io_uring,nopassthrough` and
 * `-o io_uring,nopassthrough`); `default`, the passthrough as a user starts
 * it (no options: io_uring when the kernel offers it, kernel passthrough as
 * root); and one per `--compare`, run as `COMMAND SOURCE MOUNTPOINT` (e.g.
 * libfuse's passthrough_hp; it may fork to the background), labelled LABEL
 * or after the command's program (`-nopt` added when it says
 * `nopassthrough`). Each round runs them in turn, in alternating order; a
 * server is started for each job so that its CPU time and peak RSS belong
 * to that job. Prints a Markdown table and writes JSON and an SVG chart
 * under bench/results/.
 *
 * Peers: `default` is measured against the first compared server that
 * keeps kernel passthrough (a command without `nopassthrough`), `io_uring`
 * and `dev` against the first that does not; `default` and `io_uring` must
 * be at least as fast as their peers ({@linkcode PEER_TARGET}).
 *
 * `--modes` compares the io_uring modes instead (`-o io_uring_mode=...`),
 * those the kernel has: on Linux 7.3+ mainline, bufpool (also with a pool
 * of 2 buffers for 8 entries) and bufpool_zero_copy; on the seed kernel
 * mainline, buf_ring and zero_copy. Each server runs with `--counters`, and
 * the table gives the bytes of file data that passed through its memory
 * per MiB served, which emulation does not distort. `deno task bench:guest`
 * runs it in the mainline 7.3 guest (`bash scripts/guest.sh seed bench` in
 * the seed kernel's), where only ratios between modes mean anything.
 * `--pools 1,2,8` compares pool sizes instead (each buffer-pool mode with a
 * pool of that many buffers); `--numjobs N` sets fio's clients per data job
 * (default 2, each with one I/O in flight), `--only seqread,metadata` the
 * jobs, `--server-options OPT,...` more `-o` options for every server of
 * ours (e.g. `entry_timeout=86400,attr_timeout=86400`, passthrough_hp's
 * cache policy, to compare metadata at equal caching).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { libc, readSmallFile } from "../ffi/libc.ts";
import { memoryKiB, sh } from "./proc.ts";
import { probeBufferPools } from "../server/pool_probe.ts";
import { bufferRingMissing } from "../server/probe.ts";
import {
  type Comparison,
  type IdleMemory,
  type Job,
  JOBS,
  MAINLINE,
  markdownTable,
  memoryTable,
  OUR_CONFIGS,
  parseCompare,
  parseFio,
  PEER_TARGET,
  peersOf,
  type Results,
  type Sample,
  summarize,
  svgChart,
} from "./report.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    runtime: { type: "string" },
    size: { type: "string" },
    files: { type: "string" },
    compare: { type: "string", multiple: true },
    modes: { type: "boolean", default: false },
    pools: { type: "string" },
    numjobs: { type: "string" },
    only: { type: "string" },
    "server-options": { type: "string" },
    out: { type: "string", default: new URL("./results", import.meta.url).pathname },
  },
});
const quick = values.quick!;
const rounds = Number(values.rounds ?? 2);
const runtime = Number(values.runtime ?? (quick ? 2 : 15));
const size = values.size ?? (quick ? "128M" : "1G");
const files = Number(values.files ?? (quick ? 1000 : 10000));
// fio's clients per data job (each with one I/O in flight: ioengine sync).
const numjobs = Number(values.numjobs ?? 2);
const jobs = values.only ? JOBS.filter((j) => values.only!.split(",").includes(j.id)) : JOBS;
// --pools 1,2,8: the buffer-pool modes with pools of that many buffers, instead of the modes.
const poolSizes = values.pools?.split(",").map(Number) ?? [];
if (
  !(numjobs >= 1) || jobs.length === 0 ||
  poolSizes.some((n) => !(Number.isInteger(n) && n >= 1))
) {
  console.error("bench: --numjobs takes a positive number, --only job ids, --pools e.g. 1,2,8");
  Deno.exit(2);
}
if (poolSizes.length > 0 && !values.modes) {
  console.error("bench: --pools compares pool sizes of the io_uring modes: it goes with --modes");
  Deno.exit(2);
}
if (!(rounds >= 1 && runtime >= 1 && files >= 1) || !/^\d+[KMG]$/.test(size)) {
  console.error("bench: --rounds, --runtime and --files take positive numbers, --size e.g. 1G");
  Deno.exit(2);
}
if (libc.geteuid() !== 0) {
  console.error("bench: run as root (it mounts a tmpfs and FUSE file systems)");
  Deno.exit(1);
}

const repo = new URL("..", import.meta.url).pathname;

const compared = (values.compare ?? []).map(parseCompare);
const labels = compared.map((c) => c.label);
if (labels.some((l, i) => OUR_CONFIGS.includes(l) || labels.indexOf(l) !== i || l === "")) {
  console.error(
    `bench: each --compare needs a label of its own (LABEL=COMMAND): ${labels.join(", ")}`,
  );
  Deno.exit(2);
}
if (values.modes && compared.length > 0) {
  console.error("bench: --modes compares io_uring modes with each other; it takes no --compare");
  Deno.exit(2);
}
const CLK_TCK = 100;

function mountedFuse(path: string): boolean {
  return readSmallFile("/proc/self/mountinfo").split("\n").some((l) =>
    l.split(" ")[4] === path && / - fuse/.test(l)
  );
}

/** Pids with /dev/fuse open. */
function fuseServers(): Set<number> {
  const pids = new Set<number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      for (const fd of Deno.readDirSync(`/proc/${e.name}/fd`)) {
        if (Deno.readLinkSync(`/proc/${e.name}/fd/${fd.name}`) === "/dev/fuse") {
          pids.add(Number(e.name));
          break;
        }
      }
    } catch { /* gone, or not ours to read */ }
  }
  return pids;
}

function cpuSeconds(pid: number): number {
  const stat = readSmallFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime
}

/** A running server: its process, the pid that holds /dev/fuse, and (ours) its stderr. */
interface Server {
  child: Deno.ChildProcess;
  pid: number;
  stderr: Promise<string> | null;
}

/** The passthrough's `-o` options for one of our configurations (none: as a user starts it). */
function oursOptions(config: string): string[] {
  const more = values["server-options"] ? `,${values["server-options"]}` : "";
  // dev and io_uring measure the transports: the server moves the file data.
  if (config === "dev") return ["-o", `no_io_uring,nopassthrough${more}`];
  if (config === "io_uring") return ["-o", `io_uring,nopassthrough${more}`];
  if (config.startsWith("io_uring:")) {
    // io_uring:MODE, or io_uring:MODE/N for a pool of N buffers.
    const [mode, buffers] = config.slice("io_uring:".length).split("/");
    const pool = buffers ? `,io_uring_bufpool_buffers=${buffers}` : "";
    return ["--counters", "-o", `io_uring,nopassthrough,io_uring_mode=${mode}${pool}${more}`];
  }
  return more ? ["-o", more.slice(1)] : [];
}

/** The modes `--modes` compares: those this kernel has, by what it says. */
function modeConfigs(): string[] {
  const pools = probeBufferPools();
  if (pools.pools && poolSizes.length > 0) {
    const modes = pools.zeroCopy ? ["bufpool", "bufpool_zero_copy"] : ["bufpool"];
    return modes.flatMap((m) => poolSizes.map((n) => `io_uring:${m}/${n}`));
  }
  if (pools.pools) {
    const zc = pools.zeroCopy ? ["io_uring:bufpool_zero_copy", "io_uring:bufpool_zero_copy/2"] : [];
    return [MAINLINE, "io_uring:bufpool", "io_uring:bufpool/2", ...zc];
  }
  const missing = bufferRingMissing();
  if (missing === null) return [MAINLINE, "io_uring:buf_ring", "io_uring:zero_copy"];
  console.error(
    `bench: --modes needs buffer pools (${pools.detail}) or the seeds' series (${missing})`,
  );
  Deno.exit(1);
}

/** What a server run with `--counters` says it moved, from its stderr. */
function movedBy(stderr: string): Sample["moved"] {
  const line = stderr.split("\n").find((l) => l.startsWith("counters: "));
  const u = line ? JSON.parse(line.slice("counters: ".length)).uring : undefined;
  return u ? { throughServer: u.bytesThroughServer, zeroCopy: u.bytesZeroCopy } : undefined;
}

async function startServer(
  config: string,
  src: string,
  mnt: string,
  more: string[] = [],
): Promise<Server> {
  const other = compared.find((c) => c.label === config);
  const before = other ? fuseServers() : null;
  const command = other ? ["sh", "-c", `${other.command} "$0" "$1"`, src, mnt] : [
    Deno.execPath(),
    "run",
    "--allow-ffi",
    `${repo}examples/passthrough.ts`,
    src,
    mnt,
    ...oursOptions(config),
    ...more,
  ];
  const counted = command.includes("--counters");
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    stdout: "null",
    stderr: counted ? "piped" : "inherit",
  }).spawn();
  const stderr = counted ? new Response(child.stderr).text() : null;
  const deadline = Date.now() + 20_000;
  while (!mountedFuse(mnt)) {
    if (Date.now() > deadline) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      throw new Error(`${config}: not mounted on ${mnt} after 20 s`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // Ours is the process itself; another server may have forked, so take the
  // process that newly holds /dev/fuse.
  const pid = before ? [...fuseServers()].find((p) => !before.has(p)) : child.pid;
  if (pid === undefined) throw new Error(`${config}: no new process holds /dev/fuse`);
  return { child, pid, stderr };
}

async function stopServer(server: Server, mnt: string): Promise<void> {
  await sh(`umount ${mnt}`);
  const exited = server.child.status;
  const timeout = new Promise((r) => setTimeout(r, 10_000, "timeout"));
  if (await Promise.race([exited, timeout]) === "timeout") {
    server.child.kill("SIGKILL");
    await exited;
  }
}

async function runJob(job: Job, dir: string): Promise<number> {
  if (job.id === "metadata") {
    await Deno.mkdir(`${dir}/meta`);
    const out = await sh(
      `${Deno.execPath()} run --allow-ffi ${repo}bench/meta_client.ts ${dir}/meta ${files}`,
    );
    await Deno.remove(`${dir}/meta`);
    return JSON.parse(out).total;
  }
  const out = await sh(
    `fio --name=${job.id} --directory=${dir} --filename_format='bench.$jobnum' ` +
      `--rw=${job.rw} --bs=${job.bs} --direct=1 --ioengine=sync --numjobs=${numjobs} ` +
      `--size=${size} ` +
      `--time_based --runtime=${runtime} --group_reporting --output-format=json`,
  );
  return parseFio(out, job);
}

const configs = values.modes ? ["tmpfs", ...modeConfigs()] : [...OUR_CONFIGS, ...labels];
// Modes against mainline; pool sizes against the first size of their mode.
const comparison: Comparison = values.modes
  ? {
    peers: Object.fromEntries(
      configs.slice(1).map((
        c,
      ) => [c, poolSizes.length ? `${c.split("/")[0]}/${poolSizes[0]}` : MAINLINE]),
    ),
  }
  : peersOf(compared);

/**
 * Each server's resident memory once it has served a little and gone idle:
 * ours at several thread counts (io_uring threads stop at one per queue,
 * /dev/fuse threads may outnumber the CPUs), so that what one more serving
 * thread costs is measured, not guessed; each compared server as started.
 */
async function idleMemory(): Promise<IdleMemory[]> {
  const cpus = navigator.hardwareConcurrency;
  const counts = (config: string) =>
    config === "dev"
      ? [...new Set([1, 2, 4, 8, cpus])].sort((a, b) => a - b)
      : [...new Set([1, Math.min(2, cpus), cpus])];
  const out: IdleMemory[] = [];
  for (const config of configs.filter((c) => c !== "tmpfs")) {
    const ours = !compared.some((c) => c.label === config);
    for (const threads of ours ? counts(config) : [null]) {
      const server = await startServer(
        config,
        src,
        mnt,
        threads === null ? [] : ["-o", `threads=${threads}`],
      );
      try {
        // Serve a little: write, read back, list; then let it settle.
        await sh(
          `dd if=/dev/zero of=${mnt}/idle bs=1M count=8 status=none && ` +
            `cat ${mnt}/idle > /dev/null && ls -l ${mnt} > /dev/null && rm ${mnt}/idle`,
        );
        await new Promise((r) => setTimeout(r, 3000));
        out.push({ config, threads, rssKiB: memoryKiB(server.pid, "VmRSS") });
      } finally {
        await stopServer(server, mnt);
      }
      console.error(`memory ${config} threads=${threads ?? "-"}: ${out.at(-1)!.rssKiB} KiB`);
    }
  }
  return out;
}

const results: Results = Object.fromEntries(configs.map((c) => [c, {}]));
const memory: IdleMemory[] = [];
const base = await Deno.makeTempDir({ prefix: "denofuse-bench-" });
const src = `${base}/src`;
const mnt = `${base}/mnt`;
await Deno.mkdir(src);
await Deno.mkdir(mnt);
const sizeBytes = Number(size.slice(0, -1)) * { K: 1 << 10, M: 1 << 20, G: 1 << 30 }[size.at(-1)!]!;
const tmpfsBytes = 2 * sizeBytes + (512 << 20);
await sh(`mount -t tmpfs -o size=${tmpfsBytes} denofuse-bench ${src}`);
const started = new Date();
try {
  // Lay out the two job files once; every job and configuration reuses them.
  await sh(
    `fio --name=layout --directory=${src} --filename_format='bench.$jobnum' --rw=write ` +
      `--bs=1M --numjobs=${numjobs} --size=${size} --output=/dev/null`,
  );
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? configs : [...configs].reverse();
    for (const config of order) {
      for (const job of jobs) {
        let sample: Sample;
        if (config === "tmpfs") {
          sample = { value: await runJob(job, src), cpuSeconds: 0, peakRssKiB: 0 };
        } else {
          const server = await startServer(config, src, mnt);
          try {
            const cpu0 = cpuSeconds(server.pid);
            const value = await runJob(job, mnt);
            sample = {
              value,
              cpuSeconds: cpuSeconds(server.pid) - cpu0,
              peakRssKiB: memoryKiB(server.pid, "VmHWM"),
            };
          } finally {
            await stopServer(server, mnt);
          }
          if (server.stderr) sample.moved = movedBy(await server.stderr);
        }
        (results[config][job.id] ??= []).push(sample);
        console.error(
          `round ${round + 1}/${rounds} ${config} ${job.label}: ${
            sample.value.toFixed(3)
          } ${job.unit}`,
        );
      }
    }
  }
  if (!values.modes) memory.push(...await idleMemory());
} finally {
  await sh(`umount ${mnt} 2>/dev/null || true; umount ${src}`);
  await Deno.remove(base, { recursive: true });
}

const summary = summarize(results, configs, comparison, { runtime, files }, jobs);
const table = markdownTable(summary, jobs);
const title = `denofuse bench ${values.modes ? "of io_uring modes " : ""}` +
  `${started.toISOString().slice(0, 16)}Z` + (quick ? " (quick)" : "") + `, ${rounds} rounds`;
console.log(`${title}\n\n${table}`);
for (const r of summary.rows.filter((r) => r.vsPeer !== null && r.peer !== r.config)) {
  const target = r.meetsTarget === null
    ? ""
    : ` (target ≥ ${PEER_TARGET}: ${r.meetsTarget ? "met" : "not met"})`;
  console.log(`${r.config} / ${r.peer} on ${r.job}: ${r.vsPeer!.toFixed(2)}${target}`);
}
if (memory.length > 0) console.log(`\n${memoryTable(memory, summary)}`);
if (!values.modes && summary.uringOverDev.randread !== undefined) {
  console.log(
    `io_uring/dev on rand read 4k: ${summary.uringOverDev.randread?.toFixed(2)} ` +
      `(target ≥ 1.3: ${summary.uringTargetMet ? "met" : "not met"})`,
  );
}
await Deno.mkdir(values.out!, { recursive: true });
const kind = values.modes ? (poolSizes.length ? "pools-" : "modes-") : "";
const stem = `${values.out}/${quick ? "quick-" : ""}${kind}` +
  started.toISOString().replace(/[:.]/g, "-");
await Deno.writeTextFile(
  `${stem}.json`,
  JSON.stringify(
    {
      started: started.toISOString(),
      kernel: (await sh("uname -r")).trim(),
      cpus: navigator.hardwareConcurrency,
      options: {
        quick,
        rounds,
        runtime,
        size,
        files,
        compare: compared,
        modes: values.modes,
        pools: poolSizes,
        numjobs,
        jobs: jobs.map((j) => j.id),
        serverOptions: values["server-options"] ?? null,
      },
      configs,
      comparison,
      results,
      summary,
      memory,
    },
    null,
    2,
  ) + "\n",
);
await Deno.writeTextFile(`${stem}.svg`, svgChart(summary, title, jobs) + "\n");
console.log(`\nwrote ${stem}.json and ${stem}.svg`);
