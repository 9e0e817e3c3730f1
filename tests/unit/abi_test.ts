// The struct layouts of ops/abi.ts (and ffi/uring_abi.ts) against the kernel's own header: a C
// program compiled against <linux/fuse.h> prints sizeof/offsetof for every
// struct and field the installed header has; structs newer than the header
// are checked against the sizes of the 7.45 uapi header.
import assert from "node:assert/strict";
import * as abi from "../../ops/abi.ts";
import * as uring from "../../ffi/uring_abi.ts";

type Layout = Record<string, number>;

/** Our layout name -> C struct name. */
const structs: Record<string, string> = {
  InHeader: "fuse_in_header",
  OutHeader: "fuse_out_header",
  Attr: "fuse_attr",
  EntryOut: "fuse_entry_out",
  AttrOut: "fuse_attr_out",
  ForgetIn: "fuse_forget_in",
  BatchForgetIn: "fuse_batch_forget_in",
  ForgetOne: "fuse_forget_one",
  GetattrIn: "fuse_getattr_in",
  SetattrIn: "fuse_setattr_in",
  MknodIn: "fuse_mknod_in",
  MkdirIn: "fuse_mkdir_in",
  RenameIn: "fuse_rename_in",
  Rename2In: "fuse_rename2_in",
  LinkIn: "fuse_link_in",
  OpenIn: "fuse_open_in",
  CreateIn: "fuse_create_in",
  OpenOut: "fuse_open_out",
  ReleaseIn: "fuse_release_in",
  FlushIn: "fuse_flush_in",
  ReadIn: "fuse_read_in",
  WriteIn: "fuse_write_in",
  WriteOut: "fuse_write_out",
  StatfsOut: "fuse_kstatfs",
  FsyncIn: "fuse_fsync_in",
  SetxattrIn: "fuse_setxattr_in",
  GetxattrIn: "fuse_getxattr_in",
  GetxattrOut: "fuse_getxattr_out",
  AccessIn: "fuse_access_in",
  InterruptIn: "fuse_interrupt_in",
  NotifyInvalInodeOut: "fuse_notify_inval_inode_out",
  NotifyInvalEntryOut: "fuse_notify_inval_entry_out",
  NotifyDeleteOut: "fuse_notify_delete_out",
  NotifyStoreOut: "fuse_notify_store_out",
  NotifyRetrieveOut: "fuse_notify_retrieve_out",
  NotifyRetrieveIn: "fuse_notify_retrieve_in",
  FileLock: "fuse_file_lock",
  LkIn: "fuse_lk_in",
  LkOut: "fuse_lk_out",
  FallocateIn: "fuse_fallocate_in",
  LseekIn: "fuse_lseek_in",
  LseekOut: "fuse_lseek_out",
  CopyFileRangeIn: "fuse_copy_file_range_in",
  CopyFileRangeOut: "fuse_copy_file_range_out",
  StatxIn: "fuse_statx_in",
  StatxOut: "fuse_statx_out",
  InitIn: "fuse_init_in",
  InitOut: "fuse_init_out",
  Dirent: "fuse_dirent",
  DirentPlus: "fuse_direntplus",
  UringReqHeader: "fuse_uring_req_header",
  UringEntInOut: "fuse_uring_ent_in_out",
  UringCmdReq: "fuse_uring_cmd_req",
};

/** sizeof() of every struct in the 7.45 uapi header (include/uapi/linux/fuse.h). */
const uapiSizes: Record<string, number> = {
  InHeader: 40,
  OutHeader: 16,
  Attr: 88,
  EntryOut: 128,
  AttrOut: 104,
  ForgetIn: 8,
  BatchForgetIn: 8,
  ForgetOne: 16,
  GetattrIn: 16,
  SetattrIn: 88,
  MknodIn: 16,
  MkdirIn: 8,
  RenameIn: 8,
  Rename2In: 16,
  LinkIn: 8,
  OpenIn: 8,
  CreateIn: 16,
  OpenOut: 16,
  ReleaseIn: 24,
  FlushIn: 24,
  ReadIn: 40,
  WriteIn: 40,
  WriteOut: 8,
  StatfsOut: 80,
  FsyncIn: 16,
  SetxattrIn: 16,
  GetxattrIn: 8,
  GetxattrOut: 8,
  AccessIn: 8,
  InterruptIn: 8,
  NotifyInvalInodeOut: 24,
  NotifyInvalEntryOut: 16,
  NotifyDeleteOut: 24,
  NotifyStoreOut: 24,
  NotifyRetrieveOut: 32,
  NotifyRetrieveIn: 40,
  FileLock: 24,
  LkIn: 48,
  LkOut: 24,
  FallocateIn: 32,
  LseekIn: 24,
  LseekOut: 8,
  CopyFileRangeIn: 56,
  CopyFileRangeOut: 8,
  StatxIn: 24,
  StatxOut: 288,
  InitIn: 64,
  InitOut: 64,
  Dirent: 24, // up to the flexible name
  DirentPlus: 152,
  UringReqHeader: 288,
  UringEntInOut: 32,
  UringCmdReq: 24,
};

function layout(name: string): Layout {
  return (abi as unknown as Record<string, Layout>)[name];
}

Deno.test("abi: every layout has the size of the 7.45 uapi struct", () => {
  for (const name of Object.keys(structs)) {
    assert.equal(layout(name).SIZE, uapiSizes[name], name);
  }
});

Deno.test("abi: fields lie inside their struct, in increasing order", () => {
  for (const name of Object.keys(structs)) {
    const fields = Object.entries(layout(name)).filter(([k]) => !/^[A-Z_]+$/.test(k));
    let last = -1;
    for (const [field, offset] of fields) {
      assert.ok(offset > last, `${name}.${field} at ${offset} after ${last}`);
      assert.ok(offset < layout(name).SIZE, `${name}.${field} inside ${layout(name).SIZE}`);
      last = offset;
    }
  }
});

const header = "/usr/include/linux/fuse.h";
const haveCc = await new Deno.Command("sh", { args: ["-c", "command -v cc"] })
  .output().then((o) => o.success, () => false);
const headerText = await Deno.readTextFile(header).catch(() => "");

Deno.test({
  name: "abi: offsets and sizes match the installed <linux/fuse.h> (compiled with cc)",
  ignore: (!haveCc || !headerText) && Deno.env.get("CI") !== "true",
  async fn() {
    assert.ok(haveCc && headerText, "CI needs cc and linux-libc-dev for this check");
    const checks: string[] = [];
    const expected: string[] = [];
    for (const [name, cname] of Object.entries(structs)) {
      const body = new RegExp(`struct ${cname} \\{([^}]*)\\}`).exec(headerText)?.[1];
      if (!body) continue; // newer than this header: covered by the uapi sizes
      const members = new Set([...body.matchAll(/(\w+)(\[[^\]]*\])?;/g)].map((m) => m[1]));
      checks.push(`printf("${name}.SIZE %zu\\n", sizeof(struct ${cname}));`);
      if (name === "Dirent") continue; // sizeof stops at the flexible name
      expected.push(`${name}.SIZE ${layout(name).SIZE}`);
      for (const [field, offset] of Object.entries(layout(name))) {
        if (/^[A-Z_]+$/.test(field) || !members.has(field)) continue;
        checks.push(
          `printf("${name}.${field} %zu\\n", __builtin_offsetof(struct ${cname}, ${field}));`,
        );
        expected.push(`${name}.${field} ${offset}`);
      }
    }
    const dir = await Deno.makeTempDir();
    try {
      const src = `${dir}/abi.c`;
      await Deno.writeTextFile(
        src,
        `#include <stdio.h>\n#include <linux/fuse.h>\nint main(void) {\n${
          checks.join("\n")
        }\nreturn 0;\n}\n`,
      );
      const cc = await new Deno.Command("cc", { args: ["-o", `${dir}/abi`, src] }).output();
      assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
      const run = await new Deno.Command(`${dir}/abi`).output();
      const actual = new TextDecoder().decode(run.stdout).trim().split("\n")
        .filter((l) => !l.startsWith("Dirent.SIZE"));
      assert.deepEqual(actual, expected);
      assert.ok(actual.length > 150, `checked only ${actual.length} sizes and offsets`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("abi: opcode names are unique and named", () => {
  const values = Object.values(abi.Opcode);
  assert.equal(new Set(values).size, values.length);
  assert.equal(abi.opcodeName(abi.Opcode.LOOKUP), "LOOKUP");
  assert.equal(abi.opcodeName(9999), "OPCODE_9999");
  assert.equal(abi.InitFlag.OVER_IO_URING, 1n << 41n);
});

Deno.test({
  name: "abi: flag constants equal the macros of <linux/fuse.h>",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const names: [string, number][] = [
      ["FUSE_RELEASE_FLUSH", abi.FUSE_RELEASE_FLUSH],
      ["FUSE_RELEASE_FLOCK_UNLOCK", abi.FUSE_RELEASE_FLOCK_UNLOCK],
      ["FUSE_WRITE_CACHE", abi.FUSE_WRITE_CACHE],
      ["FUSE_WRITE_LOCKOWNER", abi.FUSE_WRITE_LOCKOWNER],
      ["FUSE_WRITE_KILL_SUIDGID", abi.FUSE_WRITE_KILL_SUIDGID],
      ["FUSE_OPEN_KILL_SUIDGID", abi.FUSE_OPEN_KILL_SUIDGID],
      ["FUSE_READ_LOCKOWNER", abi.FUSE_READ_LOCKOWNER],
      ["FUSE_FSYNC_FDATASYNC", abi.FUSE_FSYNC_FDATASYNC],
      ["FUSE_HANDLE_KILLPRIV_V2", Number(abi.InitFlag.HANDLE_KILLPRIV_V2)],
      ["FATTR_KILL_SUIDGID", abi.FATTR.KILL_SUIDGID],
    ];
    const dir = await Deno.makeTempDir();
    try {
      const body = names.map(([n]) => `printf("${n} %llu\\n", (unsigned long long)(${n}));`);
      await Deno.writeTextFile(
        `${dir}/flags.c`,
        `#include <stdio.h>\n#include <linux/fuse.h>\nint main(void) {\n${body.join("\n")}\n}\n`,
      );
      const cc = await new Deno.Command("cc", { args: ["-o", `${dir}/flags`, `${dir}/flags.c`] })
        .output();
      assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
      const out = new TextDecoder().decode(
        (await new Deno.Command(`${dir}/flags`).output()).stdout,
      );
      assert.deepEqual(out.trim().split("\n"), names.map(([n, v]) => `${n} ${v}`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * The uapi headers a kernel build left beside its bzImage (`include/` of
 * each build under `cache`, or the directory `named`) whose fuse.h has
 * `marker`: the only place a kernel's ABI newer than the installed headers is.
 */
async function kernelHeaders(
  named: string | undefined,
  cache: string,
  marker: string,
): Promise<string | null> {
  const candidates = named ? [named] : [];
  try {
    for await (const e of Deno.readDir(cache)) candidates.push(`${cache}/${e.name}/include`);
  } catch { /* no cache */ }
  for (const dir of candidates) {
    const text = await Deno.readTextFile(`${dir}/linux/fuse.h`).catch(() => "");
    if (text.includes(marker)) return dir;
  }
  return null;
}

/** Compile a program printing `values` (name, C expression) with the headers in `include`. */
async function printedByC(include: string, values: [string, string][]): Promise<string[]> {
  const dir = await Deno.makeTempDir();
  try {
    const body = values.map(([n, c]) => `printf("${n} %llu\\n", (unsigned long long)(${c}));`);
    await Deno.writeTextFile(
      `${dir}/abi.c`,
      `#include <stdio.h>\n#include <stddef.h>\n#include <linux/fuse.h>\n` +
        `#include <linux/io_uring.h>\nint main(void) {\n${body.join("\n")}\n}\n`,
    );
    const cc = await new Deno.Command("cc", {
      args: ["-I", include, "-o", `${dir}/abi`, `${dir}/abi.c`],
    }).output();
    assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
    const out = await new Deno.Command(`${dir}/abi`).output();
    return new TextDecoder().decode(out.stdout).trim().split("\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * The seed kernel's patched uapi headers (left beside its bzImage by
 * ../shared/seed-kernel/build.sh), or SEED_KERNEL_INCLUDE: the buffer-ring
 * series' ABI exists only there.
 */
function seedHeaders(): Promise<string | null> {
  const cache = Deno.env.get("SEED_KERNEL_CACHE") ?? "/var/cache/denofuse-seed-kernel";
  return kernelHeaders(Deno.env.get("SEED_KERNEL_INCLUDE"), cache, "FUSE_URING_BUF_RING");
}

/**
 * Mainline 7.3's uapi headers (left beside its bzImage by
 * ../shared/mainline-kernel/build.sh), or MAINLINE_KERNEL_INCLUDE: FUSE
 * 7.46, with io_uring buffer pools and zero-copy.
 */
function mainlineHeaders(): Promise<string | null> {
  const cache = Deno.env.get("MAINLINE_KERNEL_CACHE") ?? "/var/cache/denofuse-mainline-kernel";
  return kernelHeaders(Deno.env.get("MAINLINE_KERNEL_INCLUDE"), cache, "FUSE_HAS_IO_URING_BUFPOOL");
}

const seedInclude = await seedHeaders();

Deno.test({
  name: "abi: the buffer-ring series' constants and layouts match the seed kernel's headers",
  // CI builds the seed kernel before the tests, so there the headers must be found.
  ignore: (!haveCc || !seedInclude) && Deno.env.get("CI") !== "true",
  async fn() {
    assert.ok(haveCc && seedInclude, "CI needs cc and the seed kernel's headers (build.sh)");
    const values: [string, string, number | bigint][] = [
      ["FUSE_URING_BUF_RING", "FUSE_URING_BUF_RING", abi.FUSE_URING_BUF_RING],
      ["FUSE_URING_ZERO_COPY", "FUSE_URING_ZERO_COPY", abi.FUSE_URING_ZERO_COPY],
      ["REGISTER_KMBUF", "IORING_REGISTER_KMBUF_RING", uring.IORING_REGISTER_KMBUF_RING],
      ["UNREGISTER_KMBUF", "IORING_UNREGISTER_KMBUF_RING", uring.IORING_UNREGISTER_KMBUF_RING],
      ["BPF_FILTER", "IORING_REGISTER_BPF_FILTER", uring.IORING_REGISTER_KMBUF_RING_AS_POSTED],
      ["OFF_KMBUF", "IORING_OFF_KMBUF_RING", uring.IORING_OFF_KMBUF_RING],
      ["OFF_KMBUF_SHIFT", "IORING_OFF_KMBUF_SHIFT", uring.IORING_OFF_KMBUF_SHIFT],
      ["CQE_F_BUFFER", "IORING_CQE_F_BUFFER", uring.IORING_CQE_F_BUFFER],
      ["CQE_BUFFER_SHIFT", "IORING_CQE_BUFFER_SHIFT", uring.IORING_CQE_BUFFER_SHIFT],
      ["cmd_req.SIZE", "sizeof(struct fuse_uring_cmd_req)", abi.UringCmdReq.SIZE],
      ["cmd_req.qid", "offsetof(struct fuse_uring_cmd_req, qid)", abi.UringCmdReq.qid],
      [
        "cmd_req.init.flags",
        "offsetof(struct fuse_uring_cmd_req, init.flags)",
        abi.UringCmdReq.init_flags,
      ],
      [
        "cmd_req.init.queue_depth",
        "offsetof(struct fuse_uring_cmd_req, init.queue_depth)",
        abi.UringCmdReq.init_queue_depth,
      ],
      ["req_header.SIZE", "sizeof(struct fuse_uring_req_header)", abi.UringReqHeader.SIZE],
      ["buf_reg.SIZE", "sizeof(struct io_uring_buf_reg)", uring.IoUringBufReg.SIZE],
      [
        "buf_reg.buf_size",
        "offsetof(struct io_uring_buf_reg, buf_size)",
        uring.IoUringBufReg.buf_size,
      ],
      [
        "buf_reg.ring_entries",
        "offsetof(struct io_uring_buf_reg, ring_entries)",
        uring.IoUringBufReg.ring_entries,
      ],
      ["buf_reg.bgid", "offsetof(struct io_uring_buf_reg, bgid)", uring.IoUringBufReg.bgid],
      ["buf_reg.flags", "offsetof(struct io_uring_buf_reg, flags)", uring.IoUringBufReg.flags],
      [
        "buf_reg.min_left",
        "offsetof(struct io_uring_buf_reg, min_left)",
        uring.IoUringBufReg.min_left,
      ],
    ];
    const printed = await printedByC(seedInclude!, values.map(([n, c]) => [n, c]));
    assert.deepEqual(printed, values.map(([n, , v]) => `${n} ${v}`));
  },
});

const mainlineInclude = await mainlineHeaders();

Deno.test({
  name: "abi: mainline 7.3's buffer pools and zero-copy (FUSE 7.46) match its headers",
  // CI builds the mainline kernel before the tests, so there the headers must be found.
  ignore: (!haveCc || !mainlineInclude) && Deno.env.get("CI") !== "true",
  async fn() {
    assert.ok(haveCc && mainlineInclude, "CI needs cc and mainline 7.3's headers (build.sh)");
    const req = "struct fuse_uring_cmd_req";
    const ent = "struct fuse_uring_ent_in_out";
    const values: [string, string, number | bigint][] = [
      ["MINOR", "FUSE_KERNEL_MINOR_VERSION", abi.FUSE_KERNEL_MINOR_VERSION],
      ["CMD_FIXED", "IORING_URING_CMD_FIXED", uring.IORING_URING_CMD_FIXED],
      ["HAS_BUFPOOL", "FUSE_HAS_IO_URING_BUFPOOL", abi.InitFlag.HAS_IO_URING_BUFPOOL],
      ["FOPEN_ZERO_COPY", "FOPEN_IO_URING_ZERO_COPY", abi.FOPEN.IO_URING_ZERO_COPY],
      ["REGISTER", "FUSE_IO_URING_CMD_REGISTER", abi.UringCmd.REGISTER],
      ["COMMIT", "FUSE_IO_URING_CMD_COMMIT_AND_FETCH", abi.UringCmd.COMMIT_AND_FETCH],
      ["ADD_QUEUE", "FUSE_IO_URING_CMD_ADD_QUEUE", abi.UringPoolCmd.ADD_QUEUE],
      ["ADD_BUFPOOL", "FUSE_IO_URING_CMD_ADD_BUFPOOL", abi.UringPoolCmd.ADD_BUFPOOL],
      ["QUEUE_ZERO_COPY", "FUSE_URING_ZERO_COPY", abi.FUSE_URING_POOL_ZERO_COPY],
      ["ENT_ZERO_COPY", "FUSE_URING_ENT_ZERO_COPY", abi.FUSE_URING_ENT_ZERO_COPY],
      ["cmd_req.SIZE", `sizeof(${req})`, abi.UringPoolCmdReq.SIZE],
      ["cmd_req.flags", `offsetof(${req}, flags)`, abi.UringPoolCmdReq.flags],
      ["cmd_req.commit_id", `offsetof(${req}, commit_id)`, abi.UringPoolCmdReq.commit_id],
      ["cmd_req.qid", `offsetof(${req}, qid)`, abi.UringPoolCmdReq.qid],
      ["cmd_req.uaddr", `offsetof(${req}, bufpool.uaddr)`, abi.UringPoolCmdReq.bufpool_uaddr],
      ["cmd_req.len", `offsetof(${req}, bufpool.len)`, abi.UringPoolCmdReq.bufpool_len],
      [
        "cmd_req.reserved",
        `offsetof(${req}, bufpool.reserved)`,
        abi.UringPoolCmdReq.bufpool_reserved,
      ],
      [
        "cmd_req.zc_index",
        `offsetof(${req}, ent_zero_copy_buf_index)`,
        abi.UringPoolCmdReq.ent_zero_copy_buf_index,
      ],
      ["ent.SIZE", `sizeof(${ent})`, abi.UringEntInOut.SIZE],
      ["ent.flags", `offsetof(${ent}, flags)`, abi.UringEntInOut.flags],
      ["ent.commit_id", `offsetof(${ent}, commit_id)`, abi.UringEntInOut.commit_id],
      ["ent.payload_sz", `offsetof(${ent}, payload_sz)`, abi.UringEntInOut.payload_sz],
      ["ent.offset", `offsetof(${ent}, offset)`, abi.UringEntInOut.offset],
      ["header.SIZE", "sizeof(struct fuse_uring_req_header)", abi.UringReqHeader.SIZE],
      [
        "header.op_in",
        "offsetof(struct fuse_uring_req_header, op_in)",
        abi.UringReqHeader.op_in,
      ],
      [
        "header.ent",
        "offsetof(struct fuse_uring_req_header, ring_ent_in_out)",
        abi.UringReqHeader.ring_ent_in_out,
      ],
    ];
    const printed = await printedByC(mainlineInclude!, values.map(([n, c]) => [n, c]));
    assert.deepEqual(printed, values.map(([n, , v]) => `${n} ${v}`));
  },
});

Deno.test({
  name: "abi: notification codes match enum fuse_notify_code in <linux/fuse.h>",
  ignore: !headerText && Deno.env.get("CI") !== "true",
  fn() {
    for (const [name, value] of Object.entries(abi.NotifyCode)) {
      const m = new RegExp(`FUSE_NOTIFY_${name}\\s*=\\s*(\\d+)`).exec(headerText);
      assert.equal(Number(m?.[1]), value, name);
    }
  },
});
