// Bulk data through the gateway with real tools: nbdcopy in and out (compared byte for byte) and
// fio's nbd engine writing at queue depth 32 and verifying what it wrote.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, runAsync, startGateway } from "./nbd_gateway.js";

const SIZE_BYTES = 64 * 1024 * 1024;
let gw: Gateway;
let dir: string;

beforeAll(async () => {
  gw = await startGateway({ sectors: SIZE_BYTES / 4096 });
  dir = mkdtempSync(join(tmpdir(), "atomic-disk-nbdcopy-"));
}, 60_000);

afterAll(async () => {
  await gw?.stop();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe("nbd gateway bulk I/O", () => {
  it("nbdcopy copies 64 MiB in and back out unchanged", async () => {
    const src = join(dir, "src.img");
    const back = join(dir, "back.img");
    writeFileSync(src, randomBytes(SIZE_BYTES));
    const put = await runAsync("nbdcopy", ["--flush", src, gw.uri], 150_000);
    expect(put.status, put.stderr).toBe(0);
    const get = await runAsync("nbdcopy", [gw.uri, back], 150_000);
    expect(get.status, get.stderr).toBe(0);
    const cmp = await runAsync("cmp", [src, back]);
    expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
    // A different image must not compare equal (the comparison can fail).
    writeFileSync(src, randomBytes(4096), { flag: "r+" });
    expect((await runAsync("cmp", ["-s", src, back])).status).toBe(1);
  }, 300_000);

  it("fio --ioengine=nbd random 4 KiB writes at queue depth 32 verify clean", async () => {
    const r = await runAsync(
      "fio",
      [
        "--name=verify",
        "--ioengine=nbd",
        `--uri=${gw.uri}`,
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=32",
        "--size=16M",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_state_save=0",
        "--output-format=json",
      ],
      150_000,
    );
    expect(r.status, r.stderr).toBe(0);
    const job = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0];
    expect(job.error).toBe(0);
    expect(job.write.total_ios).toBeGreaterThanOrEqual(4096);
    expect(job.read.total_ios).toBeGreaterThanOrEqual(4096);
  }, 200_000);
});
