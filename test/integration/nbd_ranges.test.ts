// Range commands end to end: a real gateway process cuts NBD requests into READ_RANGE/WRITE_RANGE
// runs plus single-sector read-modify-writes, against a real 3-replica cluster.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Command } from "../../src/nbd/constants.js";
import type { RawClient } from "../unit/nbd_raw_client.js";
import { type Gateway, startGateway, transmissionClient } from "./nbd_gateway.js";

const S = 4096;
const SECTORS = 16 * 1024; // 64 MiB
let gw: Gateway;
let c: RawClient;
let cookie = 0n;
/** What the disk must hold: the test applies every acknowledged request here too. */
const model = Buffer.alloc(24 * 1024 * 1024);

beforeAll(async () => {
  gw = await startGateway({ sectors: SECTORS });
  c = await transmissionClient(gw);
}, 60_000);

afterAll(async () => {
  c?.close();
  await gw?.stop();
});

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = ((seed * 131 + i * 7) % 251) + 1;
  return b;
}

async function write(offset: number, data: Buffer): Promise<void> {
  c.sendRequest(Command.Write, ++cookie, BigInt(offset), data.length, data);
  expect(await c.simpleReply()).toMatchObject({ error: 0, cookie });
  data.copy(model, offset);
}

async function zero(offset: number, length: number): Promise<void> {
  c.sendRequest(Command.WriteZeroes, ++cookie, BigInt(offset), length);
  expect(await c.simpleReply()).toMatchObject({ error: 0, cookie });
  model.fill(0, offset, offset + length);
}

async function expectDiskMatchesModel(): Promise<void> {
  const chunk = 8 * 1024 * 1024;
  for (let offset = 0; offset < model.length; offset += chunk) {
    c.sendRequest(Command.Read, ++cookie, BigInt(offset), chunk);
    const r = await c.simpleReply(chunk);
    expect(r.error).toBe(0);
    const want = model.subarray(offset, offset + chunk);
    if (!r.data.equals(want)) {
      let i = 0;
      while (r.data[i] === want[i]) i++;
      throw new Error(`disk differs from the model at byte ${offset + i}`);
    }
  }
}

describe("nbd gateway over range commands", () => {
  it("writes an unaligned 3 MiB span (RMW head + runs + RMW tail) and reads back every byte", async () => {
    await write(5 * S + 123, pattern(3 * 1024 * 1024 + 1000, 1));
    await expectDiskMatchesModel();
  });

  it("writes and reads back a stream of 16 aligned 1 MiB requests", async () => {
    for (let i = 0; i < 16; i++) await write(4 * 1024 * 1024 + i * 1024 * 1024, pattern(1024 * 1024, 10 + i));
    await expectDiskMatchesModel();
  });

  it("WRITE_ZEROES over a partly written area leaves exactly zeros, and sub-sector data around it intact", async () => {
    await write(22 * 1024 * 1024 + 17, pattern(5000, 3));
    await zero(2 * S + 9, 20 * 1024 * 1024);
    await expectDiskMatchesModel();
  });

  it("keeps every sub-sector write when 32 hit the same sectors while a 1 MiB run is in flight", async () => {
    const requests: Array<{ offset: number; data: Buffer }> = [];
    for (let i = 0; i < 32; i++) requests.push({ offset: 1024 * 1024 + i * 100, data: pattern(64, 40 + i) });
    // The small writes share sector 256 (disjoint bytes, each a read-modify-write); the run is elsewhere.
    requests.push({ offset: 2 * 1024 * 1024, data: pattern(1024 * 1024, 99) });
    for (const r of requests) c.sendRequest(Command.Write, ++cookie, BigInt(r.offset), r.data.length, r.data);
    const seen = new Set<bigint>();
    for (const _ of requests) {
      const reply = await c.simpleReply();
      expect(reply.error).toBe(0);
      seen.add(reply.cookie);
    }
    expect(seen.size).toBe(requests.length);
    for (const r of requests) r.data.copy(model, r.offset);
    await expectDiskMatchesModel();
  });
});
