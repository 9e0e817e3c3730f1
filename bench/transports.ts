/**
 * The two transports side by side on the same file: dd (bs=1M, direct) and
 * fio (seq read 1M, rand read 4k; 2 jobs, sync engine, direct I/O), over a
 * file system whose reads and writes answer with fd sources and sinks of a
 * file on tmpfs. Configurations alternate order each round; the tmpfs file
 * itself is measured in the same run as the reference.
 *
 *     ./deno run -A bench/transports.ts [--rounds N] [--runtime S] [--size MiB]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { cstr, libc, O } from "../ffi/libc.ts";
import { mount } from "../mod.ts";
import { backedFs } from "../tests/fixtures/backed_fs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "2" },
    runtime: { type: "string", default: "10" },
    size: { type: "string", default: "1024" },
  },
});
const rounds = Number(values.rounds);
const runtime = Number(values.runtime);
const sizeMiB = Number(values.size);

async function sh(cmd: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", cmd], stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd}: ${text}`);
  return text;
}

/** dd's own "copied, S s, R unit/s" line, as MiB/s. */
function ddMiBs(text: string): number {
  const m = /copied, ([\d.]+) s/.exec(text);
  const bytes = /^(\d+) bytes/m.exec(text);
  if (!m || !bytes) throw new Error(`unparsed dd output: ${text}`);
  return Number(bytes[1]) / Number(m[1]) / (1 << 20);
}

async function fio(file: string, rw: string, bs: string): Promise<{ mibs: number; iops: number }> {
  const out = await sh(
    `fio --name=job --filename=${file} --rw=${rw} --bs=${bs} --direct=1 --ioengine=sync ` +
      `--numjobs=2 --size=${sizeMiB}M --time_based --runtime=${runtime} --group_reporting ` +
      `--output-format=json`,
  );
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  const side = rw.includes("read") ? job.read : job.write;
  return { mibs: side.bw_bytes / (1 << 20), iops: side.iops };
}

type Row = Record<string, number[]>;
const results: Record<string, Row> = { tmpfs: {}, dev: {}, io_uring: {} };
const add = (config: string, job: string, v: number) => (results[config][job] ??= []).push(v);

async function workload(config: string, file: string) {
  add(
    config,
    "dd read 1M (MiB/s)",
    ddMiBs(await sh(`dd if=${file} of=/dev/null bs=1M iflag=direct`)),
  );
  add(
    config,
    "dd write 1M (MiB/s)",
    ddMiBs(
      await sh(`dd if=/dev/zero of=${file} bs=1M count=${sizeMiB} oflag=direct conv=notrunc`),
    ),
  );
  add(config, "fio seq read 1M (MiB/s)", (await fio(file, "read", "1M")).mibs);
  add(config, "fio rand read 4k (IOPS)", (await fio(file, "randread", "4k")).iops);
  add(config, "fio rand write 4k (IOPS)", (await fio(file, "randwrite", "4k")).iops);
}

const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "denofuse-bench-" });
const mnt = await Deno.makeTempDir({ prefix: "denofuse-bench-mnt-" });
const data = `${dir}/data`;
await sh(`dd if=/dev/urandom of=${data} bs=1M count=${sizeMiB} status=none`);
const fd = libc.open(cstr(data), O.RDWR | O.CLOEXEC, 0);
try {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? ["tmpfs", "dev", "io_uring"] : ["io_uring", "dev", "tmpfs"];
    for (const config of order) {
      if (config === "tmpfs") {
        await workload(config, data);
        continue;
      }
      const session = await mount(backedFs({ data: fd }), mnt, {
        handleSignals: false,
        transport: config as "dev" | "io_uring",
      });
      try {
        if (session.transport !== config) throw new Error(`got ${session.transport}`);
        await workload(config, `${mnt}/data`);
      } finally {
        await session.unmount();
      }
    }
    console.error(`round ${round + 1}/${rounds} done`);
  }
} finally {
  libc.close(fd);
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(mnt, { recursive: true });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
console.log(`| job (median of ${rounds}) | tmpfs | dev | io_uring | io_uring/dev |`);
console.log("|---|---|---|---|---|");
for (const job of Object.keys(results.tmpfs)) {
  const [t, d, u] = ["tmpfs", "dev", "io_uring"].map((c) => median(results[c][job]));
  console.log(
    `| ${job} | ${t.toFixed(0)} | ${d.toFixed(0)} | ${u.toFixed(0)} | ${(u / d).toFixed(2)} |`,
  );
}
