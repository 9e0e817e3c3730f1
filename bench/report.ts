/**
 * The benchmark's arithmetic and output, kept free of I/O so that tests can
 * check it on canned fio JSON: parsing fio's result, medians, ratios to the
 * tmpfs reference, targets, the Markdown table and the SVG chart.
 *
 * @module
 */

/** One fio or metadata job of the benchmark. */
export interface Job {
  /** Short id, used in JSON. */
  id: string;
  /** Label in the table. */
  label: string;
  /** What the number is: throughput, operations per second, or seconds. */
  unit: "MiB/s" | "IOPS" | "s";
  /** For fio jobs: `--rw` and `--bs`. */
  rw?: string;
  bs?: string;
  /**
   * Target as a ratio to tmpfs (from libfuse's passthrough_hp -o io_uring on
   * this machine): at least this for MiB/s and IOPS, at most this for seconds.
   * Used when the run has no peers to compare with.
   */
  target: number;
}

/** The jobs, in the order they run and print. */
export const JOBS: Job[] = [
  {
    id: "seqread",
    label: "seq read 1M",
    unit: "MiB/s",
    rw: "read",
    bs: "1M",
    target: 0.25,
  },
  {
    id: "randread",
    label: "rand read 4k",
    unit: "IOPS",
    rw: "randread",
    bs: "4k",
    target: 0.09,
  },
  {
    id: "seqwrite",
    label: "seq write 1M",
    unit: "MiB/s",
    rw: "write",
    bs: "1M",
    target: 0.47,
  },
  {
    id: "randwrite",
    label: "rand write 4k",
    unit: "IOPS",
    rw: "randwrite",
    bs: "4k",
    target: 0.12,
  },
  { id: "metadata", label: "metadata", unit: "s", target: 13 },
];

/** The configuration the other io_uring modes are measured against in `--modes`. */
export const MAINLINE = "io_uring:mainline";

/** io_uring must beat the classic transport by this much on rand read 4k. */
export const URING_OVER_DEV_RANDREAD = 1.3;

/** One measurement of one job on one configuration. */
export interface Sample {
  /** MiB/s, IOPS or seconds, as the job's unit says. */
  value: number;
  /** Server CPU seconds (user + system) during the job; 0 for tmpfs. */
  cpuSeconds: number;
  /** Server peak resident set (VmHWM) in KiB; 0 for tmpfs. */
  peakRssKiB: number;
  /**
   * Bytes of file data the server moved through its own memory, and
   * between backing files and the client's pages (zero-copy), from its
   * `--counters` (`--modes` only).
   */
  moved?: { throughServer: number; zeroCopy: number };
}

/** Every sample of a run: results[config][jobId] = samples, one per round. */
export type Results = Record<string, Record<string, Sample[]>>;

/** The number a fio JSON report gives for `job` (group_reporting: one job entry). */
export function parseFio(json: string, job: Job): number {
  const start = json.indexOf("{");
  if (start < 0) throw new Error("no JSON in fio's output");
  const report = JSON.parse(json.slice(start));
  const entry = report.jobs?.[0];
  if (!entry) throw new Error("fio's report has no job");
  const side = job.rw?.includes("read") ? entry.read : entry.write;
  if (!side || typeof side.bw_bytes !== "number") throw new Error("fio's report has no bw_bytes");
  return job.unit === "IOPS" ? side.iops : side.bw_bytes / (1 << 20);
}

/** The median (mean of the middle two for an even count). */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * A server configuration must be at least this fast relative to its peer
 * (value / theirs; for seconds, their time / ours) when it is `targeted`.
 */
export const PEER_TARGET = 1.0;

/** One row of the summary: a job on a configuration. */
export interface Row {
  job: string;
  config: string;
  unit: Job["unit"];
  median: number;
  /** value / tmpfs value (for seconds: how many times the tmpfs time). */
  ratioToTmpfs: number;
  /** Median CPU seconds of the server during the job. */
  cpuSeconds: number;
  /** Largest peak RSS of the server over the rounds, KiB. */
  peakRssKiB: number;
  /** Server CPU µs per client operation (a fio I/O; a create, stat or unlink); NaN without a count. */
  cpuUsPerOp: number;
  /** The configuration this row is measured against (see {@linkcode Comparison}), or null. */
  peer: string | null;
  /** Speed relative to the peer: value / theirs, for seconds their time / ours; null without a peer. */
  vsPeer: number | null;
  /** CPU µs per operation over the peer's; null without a peer or a count. */
  cpuVsPeer: number | null;
  /**
   * Bytes through the server's memory per MiB of file data served (summed
   * over the rounds), in KiB: 1024 when every byte passed through it, 0
   * with zero-copy; null when not counted or no file data moved.
   */
  throughServerKiBPerMiB: number | null;
  /**
   * Whether the row meets its target: a `targeted` row against
   * {@linkcode PEER_TARGET} × its peer (other rows null); in a run without
   * peers, every server row against the job's tmpfs `target` (tmpfs null).
   */
  meetsTarget: boolean | null;
}

/** How many client operations a job made: for fio, I/Os over `runtime` s; metadata, 3 per file. */
export interface OpCounts {
  /** fio's runtime in seconds. */
  runtime: number;
  /** Files of the metadata job. */
  files: number;
}

/**
 * Who is measured against whom. Without peers, server rows are judged by
 * their ratio to tmpfs; with peers, only `targeted` rows have a target.
 */
export interface Comparison {
  /** Configuration → the configuration it is measured against (it may be itself). */
  peers?: Record<string, string>;
  /** Configurations that must reach {@linkcode PEER_TARGET} × their peer's speed. */
  targeted?: string[];
}

/** The benchmark's own configurations, in the order they run: see bench/run.ts. */
export const OUR_CONFIGS = ["tmpfs", "dev", "io_uring", "default"];

/** A `--compare` server: its label and its command. */
export interface Compared {
  label: string;
  command: string;
  /** Whether it leaves file data to the kernel: its command does not say `nopassthrough`. */
  kernelPassthrough: boolean;
}

/**
 * A `--compare` argument, `[LABEL=]COMMAND`: without a label, the program's
 * name, with `-nopt` when the command says `--nopassthrough` or `-o
 * nopassthrough` (libfuse's passthrough_hp and this project spell it so).
 */
export function parseCompare(arg: string): Compared {
  const m = /^([\w.+-]+)=(.*)$/s.exec(arg);
  const command = (m ? m[2] : arg).trim();
  const kernelPassthrough = !/(^|[\s,])(--)?nopassthrough(?=$|[\s,])/.test(command);
  const program = command.split(/\s+/)[0].split("/").at(-1)!;
  return {
    label: m ? m[1] : program + (kernelPassthrough ? "" : "-nopt"),
    command,
    kernelPassthrough,
  };
}

/**
 * Who our configurations are measured against: `default` (as a user starts
 * it) against the first compared server with kernel passthrough, `io_uring`
 * and `dev` (the server moving the data) against the first without; the
 * first two are targeted.
 */
export function peersOf(compared: Compared[]): Comparison {
  const kernel = compared.find((c) => c.kernelPassthrough)?.label;
  const served = compared.find((c) => !c.kernelPassthrough)?.label;
  const peers: Record<string, string> = {};
  if (kernel) peers.default = kernel;
  if (served) peers.io_uring = peers.dev = served;
  return { peers, targeted: ["default", "io_uring"].filter((c) => peers[c]) };
}

function opsOf(job: Job, value: number, counts: OpCounts | undefined): number {
  if (!counts) return NaN;
  // IOPS × s, or MiB/s × s with 1 MiB blocks: the I/Os made.
  return job.unit === "s" ? 3 * counts.files : value * counts.runtime;
}

/** The summary of a run: per job and configuration, plus io_uring over dev per job. */
export interface Summary {
  rows: Row[];
  /** io_uring value over dev value (as speed), per job id. */
  uringOverDev: Record<string, number>;
  /** Whether io_uring reaches 1.3x dev on rand read 4k (null without both). */
  uringTargetMet: boolean | null;
}

/**
 * Medians, ratios and targets from raw samples. `configs[0]` is the
 * reference (tmpfs).
 */
export function summarize(
  results: Results,
  configs: string[],
  comparison: Comparison = {},
  counts?: OpCounts,
  jobs: Job[] = JOBS,
): Summary {
  const rows: Row[] = [];
  const uringOverDev: Record<string, number> = {};
  const reference = configs[0];
  const peers = comparison.peers ?? {};
  const targeted = new Set(comparison.targeted ?? []);
  const byTmpfs = Object.keys(peers).length === 0;
  const samplesOf = (config: string, job: Job) => results[config]?.[job.id] ?? [];
  for (const job of jobs) {
    // Speed: higher is better for every unit (seconds are inverted).
    const speed = (value: number) => (job.unit === "s" ? 1 / value : value);
    const stats = new Map<string, { median: number; cpuSeconds: number; cpuUsPerOp: number }>();
    for (const config of configs) {
      const samples = samplesOf(config, job);
      if (samples.length === 0) continue;
      const m = median(samples.map((s) => s.value));
      const cpu = median(samples.map((s) => s.cpuSeconds));
      stats.set(config, {
        median: m,
        cpuSeconds: cpu,
        cpuUsPerOp: config === reference ? NaN : cpu * 1e6 / opsOf(job, m, counts),
      });
    }
    const base = stats.get(reference)?.median ?? NaN;
    for (const config of configs) {
      const own = stats.get(config);
      if (!own) continue;
      const theirs = peers[config] === undefined ? undefined : stats.get(peers[config]);
      const vsPeer = theirs ? speed(own.median) / speed(theirs.median) : null;
      const cpuVsPeer = theirs && Number.isFinite(own.cpuUsPerOp / theirs.cpuUsPerOp)
        ? own.cpuUsPerOp / theirs.cpuUsPerOp
        : null;
      const ratio = own.median / base;
      const moved = samplesOf(config, job).map((s) => s.moved).filter((m) => m !== undefined);
      const through = moved.reduce((n, m) => n + m.throughServer, 0);
      const served = through + moved.reduce((n, m) => n + m.zeroCopy, 0);
      rows.push({
        job: job.id,
        config,
        unit: job.unit,
        median: own.median,
        ratioToTmpfs: ratio,
        cpuSeconds: own.cpuSeconds,
        peakRssKiB: Math.max(...samplesOf(config, job).map((s) => s.peakRssKiB)),
        cpuUsPerOp: own.cpuUsPerOp,
        peer: theirs ? peers[config] : null,
        vsPeer,
        cpuVsPeer,
        throughServerKiBPerMiB: served > 0 ? through / served * 1024 : null,
        meetsTarget: byTmpfs
          ? config === reference
            ? null
            : job.unit === "s"
            ? ratio <= job.target
            : ratio >= job.target
          : targeted.has(config) && vsPeer !== null
          ? vsPeer >= PEER_TARGET
          : null,
      });
    }
    const dev = stats.get("dev"), uring = stats.get("io_uring");
    if (dev && uring) uringOverDev[job.id] = speed(uring.median) / speed(dev.median);
  }
  const rr = uringOverDev["randread"];
  return {
    rows,
    uringOverDev,
    uringTargetMet: rr === undefined ? null : rr >= URING_OVER_DEV_RANDREAD,
  };
}

function fmt(x: number, unit: Job["unit"]): string {
  if (!Number.isFinite(x)) return "-";
  if (unit === "s") return x.toFixed(3);
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

/**
 * The summary as a Markdown table (one line per job and configuration).
 * "vs peer" is the speed relative to the configuration named after it; the
 * target is against the peer when the run has peers, else against tmpfs.
 */
export function markdownTable(summary: Summary, jobs: Job[] = JOBS): string {
  // The bytes-through-server column only where a run counted them (--modes).
  const moved = summary.rows.some((r) => r.throughServerKiBPerMiB !== null);
  const lines = [
    "| job | config | median | ratio to tmpfs | vs peer | target | met | io_uring/dev | " +
    "server CPU s | CPU µs/op | CPU/op vs peer | peak RSS MiB |" +
    (moved ? " KiB through server per MiB |" : ""),
    "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|" + (moved ? "---:|" : ""),
  ];
  const byTmpfs = summary.rows.every((r) => r.peer === null);
  for (const job of jobs) {
    for (const r of summary.rows.filter((r) => r.job === job.id)) {
      const target = r.meetsTarget === null
        ? ""
        : byTmpfs
        ? `${job.unit === "s" ? "≤" : "≥"} ${job.target}`
        : `≥ ${PEER_TARGET}× peer`;
      const met = r.meetsTarget === null ? "" : r.meetsTarget ? "yes" : "no";
      const cd = r.config === "io_uring" && summary.uringOverDev[job.id] !== undefined
        ? summary.uringOverDev[job.id].toFixed(2) +
          (job.id === "randread" ? ` (≥ ${URING_OVER_DEV_RANDREAD})` : "")
        : "";
      const server = r.config !== "tmpfs";
      const perOp = server && Number.isFinite(r.cpuUsPerOp) ? r.cpuUsPerOp.toFixed(1) : "";
      const vs = r.vsPeer === null || r.peer === r.config
        ? ""
        : `${r.vsPeer.toFixed(2)} (${r.peer})`;
      const cpuVs = r.cpuVsPeer === null || r.peer === r.config ? "" : r.cpuVsPeer.toFixed(2);
      lines.push(
        `| ${job.label} | ${r.config} | ${fmt(r.median, r.unit)} ${r.unit} | ` +
          `${r.ratioToTmpfs.toFixed(r.unit === "s" ? 1 : 3)}${r.unit === "s" ? "×" : ""} | ` +
          `${vs} | ${target} | ${met} | ${cd} | ${server ? r.cpuSeconds.toFixed(2) : ""} | ` +
          `${perOp} | ${cpuVs} | ${server ? (r.peakRssKiB / 1024).toFixed(0) : ""} |` +
          (moved ? ` ${r.throughServerKiBPerMiB?.toFixed(0) ?? ""} |` : ""),
      );
    }
  }
  return lines.join("\n");
}

const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948"];

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

/**
 * A grouped bar chart of speed relative to tmpfs (value / tmpfs for
 * throughput, tmpfs time / time for metadata), one group per job and one
 * bar per server configuration; a dashed mark over a bar is its target.
 */
export function svgChart(summary: Summary, title: string, jobs: Job[] = JOBS): string {
  const configs = [...new Set(summary.rows.map((r) => r.config))].filter((c) => c !== "tmpfs");
  const rowOf = (job: Job, config: string) =>
    summary.rows.find((r) => r.job === job.id && r.config === config);
  const speed = (r: Row) => (r.unit === "s" ? 1 / r.ratioToTmpfs : r.ratioToTmpfs);
  const byTmpfs = summary.rows.every((r) => r.peer === null);
  // A targeted row's target as speed relative to tmpfs, or null.
  const targetSpeed = (job: Job, r: Row): number | null => {
    if (r.meetsTarget === null) return null;
    if (byTmpfs) return job.unit === "s" ? 1 / job.target : job.target;
    const peer = rowOf(job, r.peer!);
    return peer ? speed(peer) * PEER_TARGET : null;
  };
  const max = Math.max(
    0.1,
    ...summary.rows.filter((r) => r.config !== "tmpfs").flatMap((r) => {
      const t = targetSpeed(jobs.find((j) => j.id === r.job)!, r);
      return t === null ? [speed(r)] : [speed(r), t];
    }),
  ) * 1.1;
  const W = 900, H = 380, left = 50, bottom = 300, top = 50;
  const groupW = (W - left - 20) / jobs.length;
  const barW = Math.min(40, (groupW - 20) / Math.max(1, configs.length));
  const y = (v: number) => bottom - (v / max) * (bottom - top);
  const anyTarget = summary.rows.some((r) => r.meetsTarget !== null);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `<text x="${W / 2}" y="36" text-anchor="middle">speed relative to tmpfs (1 = tmpfs)${
      !anyTarget ? "" : byTmpfs ? "; dashed: target" : `; dashed: ${PEER_TARGET}× the bar's peer`
    }</text>`,
    `<line x1="${left}" y1="${bottom}" x2="${W - 10}" y2="${bottom}" stroke="black"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="black"/>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    out.push(
      `<text x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text>`,
      `<line x1="${left}" y1="${y(v)}" x2="${W - 10}" y2="${y(v)}" stroke="#ddd"/>`,
    );
  }
  jobs.forEach((job, j) => {
    const x0 = left + j * groupW + (groupW - barW * configs.length) / 2;
    configs.forEach((config, c) => {
      const row = rowOf(job, config);
      if (!row) return;
      const v = speed(row);
      const x = x0 + c * barW;
      out.push(
        `<rect class="bar" x="${x}" y="${y(v)}" width="${barW - 2}" ` +
          `height="${bottom - y(v)}" fill="${COLORS[c % COLORS.length]}">` +
          `<title>${escapeXml(`${job.label} ${config}: ${v.toFixed(3)}`)}</title></rect>`,
        `<text x="${x + barW / 2 - 1}" y="${y(v) - 3}" text-anchor="middle" ` +
          `font-size="9">${v.toFixed(2)}</text>`,
      );
      const t = targetSpeed(job, row);
      if (t !== null) {
        out.push(
          `<line x1="${x - 1}" y1="${y(t)}" x2="${x + barW - 1}" y2="${y(t)}" ` +
            `stroke="black" stroke-width="2" stroke-dasharray="4 2"/>`,
        );
      }
    });
    out.push(
      `<text x="${left + j * groupW + groupW / 2}" y="${bottom + 16}" text-anchor="middle">` +
        `${escapeXml(job.label)}</text>`,
    );
  });
  const legendW = (W - left) / Math.max(1, configs.length);
  configs.forEach((config, c) => {
    const x = left + c * legendW;
    out.push(
      `<rect x="${x}" y="${H - 44}" width="12" height="12" fill="${COLORS[c % COLORS.length]}"/>`,
      `<text x="${x + 16}" y="${H - 34}">${escapeXml(config)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n");
}

/** A server's resident memory once idle, at a number of serving threads (null: as started). */
export interface IdleMemory {
  config: string;
  threads: number | null;
  rssKiB: number;
}

/**
 * One serving thread's cost: the least-squares slope of idle RSS over the
 * thread counts measured from 2 on (the first extra thread also pays for
 * what every thread shares: code paged in, shared tables), in KiB; null
 * with fewer than two such counts.
 */
export function perThreadKiB(points: IdleMemory[]): number | null {
  const xs = points.filter((p) => p.threads !== null && p.threads >= 2);
  if (xs.length < 2) return null;
  const mx = xs.reduce((a, p) => a + p.threads!, 0) / xs.length;
  const my = xs.reduce((a, p) => a + p.rssKiB, 0) / xs.length;
  const sxy = xs.reduce((a, p) => a + (p.threads! - mx) * (p.rssKiB - my), 0);
  const sxx = xs.reduce((a, p) => a + (p.threads! - mx) ** 2, 0);
  return sxx > 0 ? sxy / sxx : null;
}

/**
 * The memory table: per configuration, its peak RSS over every job, its
 * idle RSS at each thread count measured, what the first extra thread
 * added, and what each further one adds ({@linkcode perThreadKiB}).
 */
export function memoryTable(memory: IdleMemory[], summary: Summary): string {
  const mib = (k: number) => (k / 1024).toFixed(1);
  const lines = [
    "| config | peak RSS MiB (all jobs) | idle RSS MiB by serving threads | 1 → 2 threads MiB | " +
    "per further thread MiB |",
    "|---|---:|---|---:|---:|",
  ];
  for (const config of [...new Set(memory.map((m) => m.config))]) {
    const points = memory.filter((m) => m.config === config);
    const peak = Math.max(
      0,
      ...summary.rows.filter((r) => r.config === config).map((r) => r.peakRssKiB),
    );
    const idle = points.map((p) => `${p.threads ?? "default"}: ${mib(p.rssKiB)}`).join(", ");
    const one = points.find((p) => p.threads === 1), two = points.find((p) => p.threads === 2);
    const first = one && two ? mib(two.rssKiB - one.rssKiB) : "";
    const slope = perThreadKiB(points);
    lines.push(
      `| ${config} | ${peak ? mib(peak) : ""} | ${idle} | ${first} | ` +
        `${slope === null ? "" : mib(slope)} |`,
    );
  }
  return lines.join("\n");
}

/** What a soak's RSS samples say (see bench/soak.ts). */
export interface RssVerdict {
  /** Peak RSS in the first minute, KiB. */
  firstKiB: number;
  /** Peak RSS in the last minute, KiB. */
  lastKiB: number;
  /** Peak RSS overall, KiB. */
  peakKiB: number;
  /** Peak RSS of each whole or partial minute, KiB, in order. */
  perMinuteKiB: number[];
  /** The last minute's peak is within {@linkcode SOAK_FLAT} of the first minute's. */
  bounded: boolean;
}

/** How much the last minute's peak RSS of a soak may exceed the first minute's: 10 %. */
export const SOAK_FLAT = 0.1;

/** Judge RSS samples (seconds since start, KiB) of a soak: bounded, or growing. */
export function rssVerdict(samples: { t: number; rssKiB: number }[]): RssVerdict {
  const end = Math.max(...samples.map((s) => s.t));
  const peak = (from: number, to: number) =>
    Math.max(0, ...samples.filter((s) => s.t >= from && s.t <= to).map((s) => s.rssKiB));
  const firstKiB = peak(0, 60);
  const lastKiB = peak(Math.max(0, end - 60), end);
  const perMinuteKiB = [];
  for (let m = 0; m * 60 < end; m++) perMinuteKiB.push(peak(m * 60, Math.min(end, (m + 1) * 60)));
  return {
    firstKiB,
    lastKiB,
    peakKiB: peak(0, end),
    perMinuteKiB,
    bounded: lastKiB <= firstKiB * (1 + SOAK_FLAT),
  };
}
