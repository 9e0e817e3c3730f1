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
   * Used when the run has no `--compare` configuration.
   */
  target: number;
  /**
   * Target for the io_uring passthrough as its speed relative to the
   * `--compare` server measured in the same run (value / theirs; for
   * seconds, their time / ours): at least this.
   */
  compareTarget: number;
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
    compareTarget: 0.8,
  },
  {
    id: "randread",
    label: "rand read 4k",
    unit: "IOPS",
    rw: "randread",
    bs: "4k",
    target: 0.09,
    compareTarget: 0.6,
  },
  {
    id: "seqwrite",
    label: "seq write 1M",
    unit: "MiB/s",
    rw: "write",
    bs: "1M",
    target: 0.47,
    compareTarget: 0.8,
  },
  {
    id: "randwrite",
    label: "rand write 4k",
    unit: "IOPS",
    rw: "randwrite",
    bs: "4k",
    target: 0.12,
    compareTarget: 0.6,
  },
  { id: "metadata", label: "metadata", unit: "s", target: 13, compareTarget: 0.6 },
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
  /** Speed relative to the `compare` configuration (null without one, or for itself). */
  vsCompare: number | null;
  /**
   * In a comparison of io_uring modes (`--modes`): speed relative to the
   * `io_uring:mainline` row of the same job; else null.
   */
  vsMainline: number | null;
  /**
   * Whether the row meets its target: with a `compare` run, the io_uring
   * row against `compareTarget` (other rows null); without, every server
   * row against the tmpfs `target` (tmpfs null).
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

function opsOf(job: Job, value: number, counts: OpCounts | undefined): number {
  if (!counts) return NaN;
  // IOPS × s, or MiB/s × s with 1 MiB blocks: the I/Os made.
  return job.unit === "s" ? 3 * counts.files : value * counts.runtime;
}

/** The summary of a run: per job and configuration, plus io_uring over dev per job. */
export interface Summary {
  rows: Row[];
  /** (c)/(b): io_uring value over dev value, per job id. */
  uringOverDev: Record<string, number>;
  /** Whether io_uring reaches 1.3x dev on rand read 4k (null without both). */
  uringTargetMet: boolean | null;
}

/**
 * Medians, ratios and targets from raw samples. `configs[0]` is the
 * reference (tmpfs); a configuration named "compare" is the yardstick
 * server of `--compare`.
 */
export function summarize(
  results: Results,
  configs: string[],
  jobs: Job[] = JOBS,
  counts?: OpCounts,
): Summary {
  const rows: Row[] = [];
  const uringOverDev: Record<string, number> = {};
  const reference = configs[0];
  const hasCompare = configs.includes("compare");
  // A comparison of io_uring modes: ratios between them, no absolute targets
  // (it runs in an emulated guest, whose speed says nothing about the code's).
  const modes = configs.includes(MAINLINE);
  const med = (config: string, job: Job) =>
    median((results[config]?.[job.id] ?? []).map((s) => s.value));
  for (const job of jobs) {
    const base = med(reference, job);
    const theirs = hasCompare ? med("compare", job) : NaN;
    const mainline = modes ? med(MAINLINE, job) : NaN;
    for (const config of configs) {
      const samples = results[config]?.[job.id] ?? [];
      if (samples.length === 0) continue;
      const m = median(samples.map((s) => s.value));
      const ratio = m / base;
      const cpuSeconds = median(samples.map((s) => s.cpuSeconds));
      const vsCompare = !hasCompare || config === "compare" || config === reference
        ? null
        : job.unit === "s"
        ? theirs / m
        : m / theirs;
      rows.push({
        job: job.id,
        config,
        unit: job.unit,
        median: m,
        ratioToTmpfs: ratio,
        cpuSeconds,
        peakRssKiB: Math.max(...samples.map((s) => s.peakRssKiB)),
        cpuUsPerOp: config === reference ? NaN : cpuSeconds * 1e6 / opsOf(job, m, counts),
        vsCompare,
        vsMainline: !modes || !config.startsWith("io_uring:")
          ? null
          : job.unit === "s"
          ? mainline / m
          : m / mainline,
        meetsTarget: modes
          ? null
          : hasCompare
          ? config === "io_uring" && vsCompare !== null ? vsCompare >= job.compareTarget : null
          : config === reference
          ? null
          : job.unit === "s"
          ? ratio <= job.target
          : ratio >= job.target,
      });
    }
    const dev = rows.find((r) => r.job === job.id && r.config === "dev");
    const uring = rows.find((r) => r.job === job.id && r.config === "io_uring");
    if (dev && uring) {
      uringOverDev[job.id] = job.unit === "s"
        ? dev.median / uring.median
        : uring.median / dev.median;
    }
  }
  const rr = uringOverDev["randread"];
  return {
    rows,
    uringOverDev,
    uringTargetMet: rr === undefined ? null : rr >= URING_OVER_DEV_RANDREAD,
  };
}

function ratio(x: number | null): string {
  return x === null ? "" : x.toFixed(2);
}

function fmt(x: number, unit: Job["unit"]): string {
  if (!Number.isFinite(x)) return "-";
  if (unit === "s") return x.toFixed(3);
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

/**
 * The summary as a Markdown table (one line per job and configuration).
 * "vs compare" is the speed relative to the `--compare` server; the target
 * is against it when there is one, else against tmpfs.
 */
export function markdownTable(summary: Summary, jobs: Job[] = JOBS): string {
  const lines = [
    "| job | config | median | ratio to tmpfs | vs compare | target | met | io_uring/dev | " +
    "server CPU s | CPU µs/op | peak RSS MiB |",
    "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
  ];
  const hasCompare = summary.rows.some((r) => r.config === "compare");
  const modes = summary.rows.some((r) => r.vsMainline !== null);
  if (modes) lines[0] = lines[0].replace("| vs compare |", "| vs mainline |");
  for (const job of jobs) {
    for (const r of summary.rows.filter((r) => r.job === job.id)) {
      const target = r.meetsTarget === null
        ? ""
        : hasCompare
        ? `≥ ${job.compareTarget}× compare`
        : `${job.unit === "s" ? "≤" : "≥"} ${job.target}`;
      const met = r.meetsTarget === null ? "" : r.meetsTarget ? "yes" : "no";
      const cd = r.config === "io_uring" && summary.uringOverDev[job.id] !== undefined
        ? summary.uringOverDev[job.id].toFixed(2) +
          (job.id === "randread" ? ` (≥ ${URING_OVER_DEV_RANDREAD})` : "")
        : "";
      const server = r.config !== "tmpfs";
      const perOp = server && Number.isFinite(r.cpuUsPerOp) ? r.cpuUsPerOp.toFixed(1) : "";
      lines.push(
        `| ${job.label} | ${r.config} | ${fmt(r.median, r.unit)} ${r.unit} | ` +
          `${r.ratioToTmpfs.toFixed(r.unit === "s" ? 1 : 3)}${r.unit === "s" ? "×" : ""} | ` +
          `${ratio(modes ? r.vsMainline : r.vsCompare)} | ` +
          `${target} | ${met} | ${cd} | ${server ? r.cpuSeconds.toFixed(2) : ""} | ${perOp} | ` +
          `${server ? (r.peakRssKiB / 1024).toFixed(0) : ""} |`,
      );
    }
  }
  return lines.join("\n");
}

const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1"];

function escapeXml(s: string): string {
  return s.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!,
  );
}

/**
 * A grouped bar chart of speed relative to tmpfs (value / tmpfs for
 * throughput, tmpfs time / time for metadata), one group per job and one
 * bar per server configuration, with each job's target as a dashed line.
 */
export function svgChart(summary: Summary, title: string, jobs: Job[] = JOBS): string {
  const configs = [...new Set(summary.rows.map((r) => r.config))].filter((c) => c !== "tmpfs");
  const speed = (r: Row) => (r.unit === "s" ? 1 / r.ratioToTmpfs : r.ratioToTmpfs);
  // With a compare server, the io_uring target is a share of its speed.
  const compareRow = (j: Job) => summary.rows.find((r) => r.job === j.id && r.config === "compare");
  const hasCompare = configs.includes("compare");
  const targets = summary.rows.some((r) => r.meetsTarget !== null);
  const targetSpeed = (j: Job) => {
    if (!targets) return 0;
    const c = compareRow(j);
    if (hasCompare) return c ? speed(c) * j.compareTarget : 0;
    return j.unit === "s" ? 1 / j.target : j.target;
  };
  const max = Math.max(
    0.1,
    ...summary.rows.filter((r) => r.config !== "tmpfs").map(speed),
    ...jobs.map(targetSpeed),
  ) * 1.1;
  const W = 760, H = 360, left = 50, bottom = 300, top = 50;
  const groupW = (W - left - 20) / jobs.length;
  const barW = Math.min(40, (groupW - 20) / Math.max(1, configs.length));
  const y = (v: number) => bottom - (v / max) * (bottom - top);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `<text x="${W / 2}" y="36" text-anchor="middle">speed relative to tmpfs (1 = tmpfs)${
      !targets ? "" : `; dashed: target${hasCompare ? " for io_uring (0.6× or 0.8× compare)" : ""}`
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
      const row = summary.rows.find((r) => r.job === job.id && r.config === config);
      if (!row) return;
      const v = speed(row);
      out.push(
        `<rect class="bar" x="${x0 + c * barW}" y="${y(v)}" width="${barW - 2}" ` +
          `height="${bottom - y(v)}" fill="${COLORS[c % COLORS.length]}">` +
          `<title>${escapeXml(`${job.label} ${config}: ${v.toFixed(3)}`)}</title></rect>`,
        `<text x="${x0 + c * barW + barW / 2 - 1}" y="${y(v) - 3}" text-anchor="middle" ` +
          `font-size="9">${v.toFixed(2)}</text>`,
      );
    });
    const t = targetSpeed(job);
    if (targets) {
      out.push(
        `<line x1="${x0 - 4}" y1="${y(t)}" x2="${x0 + barW * configs.length + 2}" y2="${y(t)}" ` +
          `stroke="black" stroke-dasharray="4 3"/>`,
      );
    }
    out.push(
      `<text x="${left + j * groupW + groupW / 2}" y="${bottom + 16}" text-anchor="middle">` +
        `${escapeXml(job.label)}</text>`,
    );
  });
  configs.forEach((config, c) => {
    out.push(
      `<rect x="${left + c * 120}" y="${H - 24}" width="12" height="12" fill="${
        COLORS[c % COLORS.length]
      }"/>`,
      `<text x="${left + c * 120 + 16}" y="${H - 14}">${escapeXml(config)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n");
}

/** What a soak's RSS samples say (see bench/soak.ts). */
export interface RssVerdict {
  /** Peak RSS in the first minute, KiB. */
  firstKiB: number;
  /** Peak RSS in the last minute, KiB. */
  lastKiB: number;
  /** Peak RSS overall, KiB. */
  peakKiB: number;
  /** The last minute's peak is within 25 % + 32 MiB of the first minute's. */
  bounded: boolean;
}

/** Judge RSS samples (seconds since start, KiB) of a soak: bounded, or growing. */
export function rssVerdict(samples: { t: number; rssKiB: number }[]): RssVerdict {
  const end = Math.max(...samples.map((s) => s.t));
  const peak = (from: number, to: number) =>
    Math.max(0, ...samples.filter((s) => s.t >= from && s.t <= to).map((s) => s.rssKiB));
  const firstKiB = peak(0, 60);
  const lastKiB = peak(Math.max(0, end - 60), end);
  return {
    firstKiB,
    lastKiB,
    peakKiB: peak(0, end),
    bounded: lastKiB <= firstKiB * 1.25 + 32 * 1024,
  };
}
