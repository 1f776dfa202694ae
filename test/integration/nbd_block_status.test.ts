// BLOCK_STATUS (base:allocation) on a real gateway and 3-replica cluster: never-written space is a
// hole that reads as zeros, anything a write reached is data, even while replicas come and go,
// and copy tools (nbdcopy, qemu-img convert) use it to skip the holes.
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReplicaConnection } from "../../src/client/replica_connection.js";
import { bitAt } from "../../src/protocol/layouts.js";
import { HELD_PAGE_SECTORS } from "../../src/util/limits.js";
import { type Gateway, python, runAsync, startGateway } from "./nbd_gateway.js";

const S = 4096;
const MiB = 1024 * 1024;
const SECTORS = 256 * 1024; // 1 GiB
const SIZE = SECTORS * S;
/** base:allocation flags: NBD_STATE_HOLE | NBD_STATE_ZERO. */
const HOLE = 3;
const DATA = 0;
let gw: Gateway;

beforeAll(async () => {
  gw = await startGateway({ sectors: SECTORS, extraArgs: ["--activity-log-ms", "200"] });
}, 60_000);

afterAll(async () => {
  await gw?.stop();
});

async function qemuIo(...commands: string[]): Promise<void> {
  const r = await runAsync("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), gw.uri]);
  expect(r.status, r.stderr + r.stdout).toBe(0);
}

async function probe(mode: "write" | "map", offset: number, length: number) {
  const r = await python("nbd_block_status.py", [gw.uri, mode, String(offset), String(length)]);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { extents: number[][]; req_one: number[][] };
}

/** The gateway's NBD bytes read so far, summed over its activity lines. */
function gatewayBytesRead(): number {
  return readFileSync(gw.logPath, "utf8")
    .split("\n")
    .filter((l) => l.includes('"msg":"activity"'))
    .reduce((total, l) => total + ((JSON.parse(l) as { bytesRead?: number }).bytesRead ?? 0), 0);
}

describe("nbd BLOCK_STATUS", () => {
  it("maps never-written space as hole+zero and every sector a write reached as data, for libnbd, nbdinfo and qemu-img", async () => {
    await qemuIo(
      "write -P 7 1M 64k",
      "write -P 0 3M 4k", // zeros, but written: data
      "write -z 5M 1M", // WRITE_ZEROES of never-written space writes nothing: stays a hole
      "write -P 9 4097 10", // a partial sector: its read-modify-write writes the whole sector
    );
    const expected = [
      [0, S, HOLE],
      [S, S, DATA],
      [2 * S, MiB - 2 * S, HOLE],
      [MiB, 64 * 1024, DATA],
      [MiB + 64 * 1024, 2 * MiB - 64 * 1024, HOLE],
      [3 * MiB, S, DATA],
      [3 * MiB + S, SIZE - 3 * MiB - S, HOLE],
    ];
    const map = await probe("map", 0, SIZE);
    expect(map.extents).toEqual(expected);
    // REQ_ONE: exactly one extent, the first one.
    expect(map.req_one).toEqual([[S, HOLE]]);
    // Unaligned: the extents start and end exactly at the bytes asked for.
    const inner = await probe("map", S + 100, MiB + 5);
    expect(inner.extents).toEqual([
      [S + 100, S - 100, DATA],
      [2 * S, MiB - 2 * S, HOLE],
      [MiB, S + 105, DATA],
    ]);
    expect(inner.req_one).toEqual([[S - 100, DATA]]);

    const nbdinfo = await runAsync("nbdinfo", ["--map", "--json", gw.uri]);
    expect(nbdinfo.status, nbdinfo.stderr).toBe(0);
    const described = (JSON.parse(nbdinfo.stdout) as { offset: number; length: number; type: number }[]).map(
      (e) => [e.offset, e.length, e.type],
    );
    expect(described).toEqual(expected);

    const qemu = await runAsync("qemu-img", ["map", "--output=json", "-f", "raw", gw.uri]);
    expect(qemu.status, qemu.stderr).toBe(0);
    const qmap = (
      JSON.parse(qemu.stdout) as { start: number; length: number; data: boolean; zero: boolean }[]
    ).map((e) => [e.start, e.length, e.data, e.zero]);
    expect(qmap).toEqual(expected.map(([o, l, f]) => [o, l, f === DATA, f === HOLE]));
  });

  it("shows a write acknowledged while a replica was down as data, after it returns holding nothing there and with another one down", async () => {
    const offset = 300 * MiB;
    await gw.cluster.kill(3);
    await probe("write", offset, S);
    await gw.cluster.start(3);
    // Replica 3 alone has no record of the sector: a map from its answer alone would call it a hole.
    const { host, port } = gw.cluster.addresses[2]!;
    const r3 = await ReplicaConnection.connect({ host, port, clientKey: gw.cluster.config.clientKey });
    try {
      expect(bitAt(await r3.heldMap(offset / S, 1), 0)).toBe(false);
      // Nor of any sector of its page (HELD_PAGES), which no other write reached.
      const page = Math.floor(offset / S / HELD_PAGE_SECTORS) * HELD_PAGE_SECTORS;
      expect(bitAt(await r3.heldPages(page, 1), 0)).toBe(false);
    } finally {
      r3.close();
    }
    const around = await probe("map", offset - S, 3 * S);
    expect(around.extents).toEqual([
      [offset - S, S, HOLE],
      [offset, S, DATA],
      [offset + S, S, HOLE],
    ]);
    await gw.cluster.kill(1);
    try {
      const withoutOne = await probe("map", offset - S, 3 * S);
      expect(withoutOne.extents).toEqual(around.extents);
    } finally {
      await gw.cluster.start(1);
    }
  }, 60_000);

  it("lets nbdcopy and qemu-img convert copy the sparse 1 GiB volume reading only about its written data", async () => {
    const data = 8 * MiB;
    await qemuIo(`write -P 3 700M ${data}`);
    const raw = join(gw.cluster.dir, "copy.raw");
    const qcow2 = join(gw.cluster.dir, "copy.qcow2");
    await new Promise((r) => setTimeout(r, 500));
    const before = gatewayBytesRead();
    const copy = await runAsync("nbdcopy", [gw.uri, raw], 120_000);
    expect(copy.status, copy.stderr).toBe(0);
    const convert = await runAsync(
      "qemu-img",
      ["convert", "-f", "raw", "-O", "qcow2", gw.uri, qcow2],
      120_000,
    );
    expect(convert.status, convert.stderr).toBe(0);
    try {
      const cmp = await runAsync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, qcow2]);
      expect(cmp.status, cmp.stdout + cmp.stderr).toBe(0);
      const check = await runAsync("qemu-io", [
        "-f",
        "raw",
        "-c",
        `read -P 3 700M ${data}`,
        "-c",
        "read -P 7 1M 64k",
        raw,
      ]);
      expect(check.status, check.stdout + check.stderr).toBe(0);
      expect(check.stdout).not.toContain("Pattern verification failed");
      // Both copies together read the written data (8 MiB and the earlier test's few sectors) twice,
      // not the 2 GiB that two full reads of the volume would be.
      await new Promise((r) => setTimeout(r, 500));
      const read = gatewayBytesRead() - before;
      expect(read).toBeGreaterThanOrEqual(2 * data);
      expect(read).toBeLessThan(2 * data + 8 * MiB);
    } finally {
      rmSync(raw, { force: true });
      rmSync(qcow2, { force: true });
    }
  }, 180_000);
});

describe("nbd BLOCK_STATUS on a 1 TiB volume", () => {
  const TiB = 1024 ** 4;
  let big: Gateway;

  beforeAll(async () => {
    big = await startGateway({ sectors: TiB / S });
  }, 60_000);

  afterAll(async () => {
    await big?.stop();
  });

  it("maps a 1 TiB volume with two small writes into exact extents for nbdinfo and qemu-img", async () => {
    const at = [300 * 1024 ** 3 + 5 * S, TiB - 2 * MiB];
    for (const offset of at) {
      const r = await runAsync("qemu-io", ["-f", "raw", "-c", `write -P 5 ${offset} 1M`, big.uri]);
      expect(r.status, r.stderr + r.stdout).toBe(0);
    }
    const expected = [
      [0, at[0]!, HOLE],
      [at[0]!, MiB, DATA],
      [at[0]! + MiB, at[1]! - at[0]! - MiB, HOLE],
      [at[1]!, MiB, DATA],
      [at[1]! + MiB, MiB, HOLE],
    ];
    const nbdinfo = await runAsync("nbdinfo", ["--map", "--json", big.uri], 60_000);
    expect(nbdinfo.status, nbdinfo.stderr).toBe(0);
    const described = (JSON.parse(nbdinfo.stdout) as { offset: number; length: number; type: number }[]).map(
      (e) => [e.offset, e.length, e.type],
    );
    expect(described).toEqual(expected);
    const qemu = await runAsync("qemu-img", ["map", "--output=json", "-f", "raw", big.uri], 60_000);
    expect(qemu.status, qemu.stderr).toBe(0);
    const qmap = (
      JSON.parse(qemu.stdout) as { start: number; length: number; data: boolean; zero: boolean }[]
    ).map((e) => [e.start, e.length, e.data, e.zero]);
    expect(qmap).toEqual(expected.map(([o, l, f]) => [o, l, f === DATA, f === HOLE]));
  }, 120_000);
});
