// The benchmark's parsing and arithmetic on canned fio JSON (real fio 3.33
// output captured on this machine), and its table and chart.
import assert from "node:assert/strict";
import {
  type IdleMemory,
  JOBS,
  markdownTable,
  median,
  memoryTable,
  parseCompare,
  parseFio,
  peersOf,
  perThreadKiB,
  type Results,
  rssVerdict,
  summarize,
  svgChart,
} from "../../bench/report.ts";

const job = (id: string) => JOBS.find((j) => j.id === id)!;
const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`../fixtures/${name}`, import.meta.url));

Deno.test("bench: fio JSON gives IOPS for 4k jobs and MiB/s for 1M jobs", () => {
  // randread.json: read.iops 25004.995005, read.bw_bytes 102420459.
  assert.equal(parseFio(fixture("fio_randread.json"), job("randread")), 25004.995005);
  // seqwrite.json: write.bw_bytes 4063362941 → 3875.12... MiB/s.
  const mibs = parseFio(fixture("fio_seqwrite.json"), job("seqwrite"));
  assert.ok(Math.abs(mibs - 4063362941 / 1048576) < 1e-9, String(mibs));
  // fio may print notices before the JSON; they are skipped.
  assert.equal(
    parseFio(
      "note: both iodepth >= 1 and synchronous I/O engine\n" + fixture("fio_randread.json"),
      job("randread"),
    ),
    25004.995005,
  );
  assert.throws(() => parseFio("fio: error", job("randread")), /no JSON/);
  assert.throws(() => parseFio('{"jobs": []}', job("randread")), /no job/);
});

Deno.test("bench: medians, ratios to tmpfs, io_uring over dev, and targets", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  const s = (value: number, cpuSeconds = 0, peakRssKiB = 0) => ({ value, cpuSeconds, peakRssKiB });
  const results: Results = {
    tmpfs: { randread: [s(1000), s(1200)], metadata: [s(0.1), s(0.1)] },
    dev: { randread: [s(80, 2, 70_000), s(100, 4, 71_000)], metadata: [s(1.5), s(1.2)] },
    io_uring: { randread: [s(130, 1, 90_000), s(120, 3, 80_000)], metadata: [s(1.4), s(1.0)] },
  };
  const sum = summarize(results, ["tmpfs", "dev", "io_uring"]);
  const row = (jobId: string, config: string) =>
    sum.rows.find((r) => r.job === jobId && r.config === config)!;
  assert.equal(row("randread", "tmpfs").median, 1100);
  assert.equal(row("randread", "dev").median, 90);
  assert.ok(Math.abs(row("randread", "io_uring").ratioToTmpfs - 125 / 1100) < 1e-12);
  assert.equal(row("randread", "io_uring").meetsTarget, true); // 0.1136 >= 0.09
  assert.equal(row("randread", "dev").meetsTarget, false); // 0.0818 < 0.09
  assert.equal(row("randread", "dev").cpuSeconds, 3);
  assert.equal(row("randread", "io_uring").peakRssKiB, 90_000);
  assert.ok(Math.abs(sum.uringOverDev.randread - 125 / 90) < 1e-12);
  assert.equal(sum.uringTargetMet, true); // 1.39 >= 1.3
  // Seconds: the ratio is how many times the tmpfs time, and lower meets the target.
  assert.ok(Math.abs(row("metadata", "dev").ratioToTmpfs - 13.5) < 1e-9);
  assert.equal(row("metadata", "dev").meetsTarget, false); // 13.5× > 13×
  assert.equal(row("metadata", "io_uring").meetsTarget, true); // 12×
  assert.equal(row("metadata", "tmpfs").meetsTarget, null);
  // Jobs without samples are left out, not reported as NaN.
  assert.equal(sum.rows.some((r) => r.job === "seqread"), false);

  const table = markdownTable(sum);
  assert.match(
    table,
    /^\| rand read 4k \| io_uring \| 125 IOPS \| 0\.114 \| {2}\| ≥ 0\.09 \| yes \| 1\.39 \(≥ 1\.3\) \| 2\.00 \| {2}\| {2}\| 88 \|$/m,
  );
  assert.match(table, /^\| metadata \| dev \| 1\.350 s \| 13\.5× \| {2}\| ≤ 13 \| no \|/m);
  assert.equal(table.split("\n").length, 2 + 6);

  const svg = svgChart(sum, "test <run>");
  assert.match(svg, /^<svg /);
  assert.match(svg, /test &lt;run&gt;/);
  assert.equal(svg.match(/class="bar"/g)?.length, 4); // 2 jobs x 2 servers
  // Metadata bars show speed: tmpfs time / time = 0.1 / 1.2 for io_uring.
  assert.match(svg, /metadata io_uring: 0\.083/);
});

Deno.test("bench: --compare arguments: labels, and which data path each server takes", () => {
  const hp = "/opt/libfuse/build/example/passthrough_hp";
  assert.deepEqual(parseCompare(`${hp} --foreground -o io_uring`), {
    label: "passthrough_hp",
    command: `${hp} --foreground -o io_uring`,
    kernelPassthrough: true,
  });
  assert.equal(
    parseCompare(`${hp} --foreground --nopassthrough -o io_uring`).label,
    "passthrough_hp-nopt",
  );
  assert.equal(parseCompare(`${hp} -o io_uring,nopassthrough`).kernelPassthrough, false);
  // A word that merely contains it is not the option.
  assert.equal(parseCompare(`${hp} -o io_uring --no-nopassthroughs`).kernelPassthrough, true);
  const labelled = parseCompare(`hp2=${hp} -o x=y`);
  assert.equal(labelled.label, "hp2");
  assert.equal(labelled.command, `${hp} -o x=y`);
  // A path with "=" after the program is no label.
  assert.equal(parseCompare(`${hp} -o a=b`).label, "passthrough_hp");
  const both = [parseCompare(`${hp} -o io_uring`), parseCompare(`${hp} --nopassthrough`)];
  assert.deepEqual(peersOf(both), {
    peers: {
      default: "passthrough_hp",
      io_uring: "passthrough_hp-nopt",
      dev: "passthrough_hp-nopt",
    },
    targeted: ["default", "io_uring"],
  });
  assert.deepEqual(peersOf([both[1]]), {
    peers: { io_uring: "passthrough_hp-nopt", dev: "passthrough_hp-nopt" },
    targeted: ["io_uring"],
  });
  assert.deepEqual(peersOf([]), { peers: {}, targeted: [] });
});

Deno.test("bench: against compared servers, targets are ratios to peers; CPU per operation", () => {
  const s = (value: number, cpuSeconds = 0) => ({ value, cpuSeconds, peakRssKiB: 1024 });
  const results: Results = {
    tmpfs: { randread: [s(1000)], seqwrite: [s(9000)], metadata: [s(0.1)] },
    dev: { randread: [s(100, 3)], seqwrite: [s(3000, 5)], metadata: [s(4, 2)] },
    io_uring: { randread: [s(140, 2)], seqwrite: [s(7000, 6)], metadata: [s(2.5, 1.5)] },
    default: { randread: [s(900, 1)], seqwrite: [s(8800, 1)], metadata: [s(2.2, 1.5)] },
    hp: { randread: [s(800, 1)], seqwrite: [s(9000, 1)], metadata: [s(2, 1)] },
    "hp-nopt": { randread: [s(200, 2)], seqwrite: [s(7000, 4)], metadata: [s(2, 1)] },
  };
  const configs = ["tmpfs", "dev", "io_uring", "default", "hp", "hp-nopt"];
  const comparison = {
    peers: { default: "hp", io_uring: "hp-nopt", dev: "hp-nopt" },
    targeted: ["default", "io_uring"],
  };
  const sum = summarize(results, configs, comparison, { runtime: 10, files: 1000 });
  const row = (jobId: string, config: string) =>
    sum.rows.find((r) => r.job === jobId && r.config === config)!;
  // Speed relative to the peer: 140 / 200; for seconds, 2 / 2.5.
  assert.equal(row("randread", "io_uring").peer, "hp-nopt");
  assert.equal(row("randread", "io_uring").vsPeer, 0.7);
  assert.equal(row("randread", "io_uring").meetsTarget, false); // < 1.0
  assert.equal(row("seqwrite", "io_uring").vsPeer, 1);
  assert.equal(row("seqwrite", "io_uring").meetsTarget, true); // ≥ 1.0
  assert.equal(row("metadata", "io_uring").vsPeer, 0.8);
  assert.equal(row("randread", "default").peer, "hp");
  assert.equal(row("randread", "default").vsPeer, 1.125);
  assert.equal(row("randread", "default").meetsTarget, true);
  assert.equal(row("seqwrite", "default").meetsTarget, false); // 8800 / 9000
  assert.equal(row("randread", "dev").vsPeer, 0.5);
  assert.equal(row("randread", "dev").meetsTarget, null); // dev is not targeted
  assert.equal(row("randread", "hp").vsPeer, null);
  assert.equal(row("randread", "hp").meetsTarget, null);
  assert.equal(row("randread", "tmpfs").meetsTarget, null); // no tmpfs targets with peers
  // CPU per operation: 2 s over 140 IOPS × 10 s; metadata: 1.5 s over 3 × 1000 ops.
  assert.ok(Math.abs(row("randread", "io_uring").cpuUsPerOp - 2e6 / 1400) < 1e-9);
  assert.equal(row("metadata", "io_uring").cpuUsPerOp, 500);
  assert.ok(Number.isNaN(row("randread", "tmpfs").cpuUsPerOp));
  // ... and over the peer's: 500 / 333.3 µs.
  assert.ok(Math.abs(row("metadata", "io_uring").cpuVsPeer! - 1.5) < 1e-9);
  assert.equal(row("metadata", "hp").cpuVsPeer, null);
  // io_uring over dev: 1.4 on rand read, and as speed for seconds (4 / 2.5).
  assert.equal(sum.uringOverDev.metadata, 1.6);
  const table = markdownTable(sum);
  assert.match(
    table,
    /^\| rand read 4k \| io_uring \| 140 IOPS \| 0\.140 \| 0\.70 \(hp-nopt\) \| ≥ 1× peer \| no \| 1\.40 \(≥ 1\.3\) \| 2\.00 \| 1428\.6 \| 1\.43 \| 1 \|$/m,
  );
  assert.match(
    table,
    /^\| metadata \| hp \| 2\.000 s \| 20\.0× \| {2}\| {2}\| {2}\| {2}\| 1\.00 \| 333\.3 \| {2}\| 1 \|$/m,
  );
  assert.equal(table.split("\n").length, 2 + 3 * 6);
  const svg = svgChart(sum, "peers");
  assert.equal((svg.match(/class="bar"/g) ?? []).length, 3 * 5);
  // A target mark over each targeted bar: default and io_uring on 3 jobs.
  assert.equal((svg.match(/stroke-dasharray/g) ?? []).length, 2 * 3);
});

Deno.test("bench: --modes compares io_uring modes with mainline, without absolute targets", () => {
  const s = (value: number) => ({ value, cpuSeconds: 1, peakRssKiB: 2048 });
  const results: Results = {
    tmpfs: { randread: [s(1000)], metadata: [s(0.1)] },
    "io_uring:mainline": { randread: [s(100), s(120)], metadata: [s(4)] },
    "io_uring:buf_ring": { randread: [s(99)], metadata: [s(5)] },
    "io_uring:zero_copy": { randread: [s(132)], metadata: [s(4.4)] },
  };
  const configs = ["tmpfs", "io_uring:mainline", "io_uring:buf_ring", "io_uring:zero_copy"];
  const peers = Object.fromEntries(configs.slice(1).map((c) => [c, "io_uring:mainline"]));
  const sum = summarize(results, configs, { peers });
  const row = (jobId: string, config: string) =>
    sum.rows.find((r) => r.job === jobId && r.config === config)!;
  // Medians 110 / 99 / 132: ratios to mainline; for seconds, as speed (4 / 5).
  assert.equal(row("randread", "io_uring:mainline").vsPeer, 1);
  assert.equal(row("randread", "io_uring:buf_ring").vsPeer, 0.9);
  assert.equal(row("randread", "io_uring:zero_copy").vsPeer, 1.2);
  assert.equal(row("metadata", "io_uring:buf_ring").vsPeer, 0.8);
  assert.equal(row("randread", "tmpfs").vsPeer, null);
  for (const r of sum.rows) assert.equal(r.meetsTarget, null);
  const table = markdownTable(sum);
  assert.match(
    table,
    /^\| rand read 4k \| io_uring:zero_copy \| 132 IOPS \| 0\.132 \| 1\.20 \(io_uring:mainline\) \|/m,
  );
  // A row is not shown against itself.
  assert.match(table, /^\| rand read 4k \| io_uring:mainline \| 110 IOPS \| 0\.110 \| {2}\|/m);
  const svg = svgChart(sum, "modes");
  assert.equal((svg.match(/class="bar"/g) ?? []).length, 6);
  assert.doesNotMatch(svg, /stroke-dasharray/); // no target lines
});

Deno.test("bench: --modes gives the KiB of file data through the server per MiB served", () => {
  const s = (value: number, throughServer: number, zeroCopy: number) => ({
    value,
    cpuSeconds: 1,
    peakRssKiB: 2048,
    moved: { throughServer, zeroCopy },
  });
  const MiB = 1 << 20;
  const results: Results = {
    tmpfs: { seqread: [{ value: 1000, cpuSeconds: 0, peakRssKiB: 0 }] },
    "io_uring:bufpool": { seqread: [s(90, 64 * MiB, 0), s(100, 32 * MiB, 0)] },
    // A quarter through the server (say, staged), the rest zero-copy.
    "io_uring:bufpool_zero_copy": { seqread: [s(120, 16 * MiB, 48 * MiB)] },
  };
  const configs = ["tmpfs", "io_uring:bufpool", "io_uring:bufpool_zero_copy"];
  const sum = summarize(results, configs, { peers: { "io_uring:bufpool_zero_copy": configs[1] } });
  const row = (config: string) => sum.rows.find((r) => r.config === config)!;
  assert.equal(row("io_uring:bufpool").throughServerKiBPerMiB, 1024);
  assert.equal(row("io_uring:bufpool_zero_copy").throughServerKiBPerMiB, 256);
  assert.equal(row("tmpfs").throughServerKiBPerMiB, null);
  const table = markdownTable(sum, [job("seqread")]);
  assert.match(table, /\| KiB through server per MiB \|$/m);
  assert.match(table, /^\| seq read 1M \| io_uring:bufpool_zero_copy \| .* \| 256 \|$/m);
  // Runs that counted nothing keep the table as it was.
  assert.doesNotMatch(markdownTable(summarize({ tmpfs: results.tmpfs }, ["tmpfs"])), /through/);
});

Deno.test("bench: a soak's RSS is bounded when the last minute stays near the first", () => {
  const flat = Array.from(
    { length: 121 },
    (_, i) => ({ t: i * 5, rssKiB: 200_000 + (i % 3) * 1000 }),
  );
  const v = rssVerdict(flat);
  assert.equal(v.firstKiB, 202_000);
  assert.equal(v.lastKiB, 202_000);
  assert.equal(v.bounded, true);
  // A leak of 1 MiB per sample: 120 MiB more by the end.
  const leak = flat.map((s, i) => ({ t: s.t, rssKiB: 200_000 + i * 1024 }));
  const w = rssVerdict(leak);
  assert.equal(w.bounded, false);
  assert.equal(w.peakKiB, 200_000 + 120 * 1024);
  // Every minute's peak, in order: ten minutes and the last sample's.
  assert.equal(v.perMinuteKiB.length, 10);
  assert.equal(w.perMinuteKiB[0], 200_000 + 12 * 1024);
  assert.equal(w.perMinuteKiB.at(-1), 200_000 + 120 * 1024);
  // Flat means the last minute's peak within 10 % of the first's: 10 % passes, 11 % fails.
  const grown = (by: number) =>
    rssVerdict(flat.map((s) => ({ t: s.t, rssKiB: s.t > 540 ? 202_000 * by : 202_000 })));
  assert.equal(grown(1.1).bounded, true);
  assert.equal(grown(1.11).bounded, false);
});

Deno.test("bench: the memory table gives peak RSS, idle RSS by threads, and the per-thread cost", () => {
  const memory: IdleMemory[] = [
    { config: "dev", threads: 1, rssKiB: 50 * 1024 },
    { config: "dev", threads: 2, rssKiB: 80 * 1024 },
    { config: "dev", threads: 4, rssKiB: 100 * 1024 },
    { config: "dev", threads: 8, rssKiB: 140 * 1024 },
    { config: "hp", threads: null, rssKiB: 70 * 1024 },
  ];
  // From 2 threads on, 10 MiB a thread exactly; the first extra thread paid 30.
  assert.equal(perThreadKiB(memory.filter((m) => m.config === "dev")), 10 * 1024);
  assert.equal(perThreadKiB(memory.filter((m) => m.config === "hp")), null);
  const sum = summarize(
    { dev: { seqread: [{ value: 100, cpuSeconds: 1, peakRssKiB: 150 * 1024 }] } },
    ["dev"],
  );
  const table = memoryTable(memory, sum);
  assert.match(
    table,
    /^\| dev \| 150\.0 \| 1: 50\.0, 2: 80\.0, 4: 100\.0, 8: 140\.0 \| 30\.0 \| 10\.0 \|$/m,
  );
  assert.match(table, /^\| hp \| {2}\| default: 70\.0 \| {2}\| {2}\|$/m);
});

Deno.test("bench: the committed soak stayed flat and under 250 MiB", () => {
  // The newest soak result committed under bench/results (the bar).
  const dir = new URL("../../bench/results/", import.meta.url);
  const soaks = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
    /^soak-.*\.json$/.test(n)
  ).sort((a, b) => a.slice(a.lastIndexOf("-20")).localeCompare(b.slice(b.lastIndexOf("-20"))));
  assert.ok(soaks.length > 0, "no soak result under bench/results");
  const newest = JSON.parse(Deno.readTextFileSync(new URL(soaks.at(-1)!, dir)));
  const v = rssVerdict(newest.samples);
  assert.equal(newest.minutes, 10, soaks.at(-1));
  assert.equal(v.bounded, true, `${soaks.at(-1)}: ${JSON.stringify(v)}`);
  assert.ok(v.peakKiB <= 250 * 1024, `${soaks.at(-1)}: peak ${v.peakKiB} KiB`);
});
