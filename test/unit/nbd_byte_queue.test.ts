// The NBD byte queue: exact takes across chunk boundaries, and payloads that never pin a chunk.
import { describe, expect, it } from "vitest";
import { ByteQueue } from "../../src/nbd/byte_queue.js";

const bytes = (n: number, seed: number) =>
  Buffer.from(Array.from({ length: n }, (_, i) => (seed + i) & 0xff));

describe("nbd byte queue", () => {
  it("takeOwned returns the bytes without sharing the socket chunk they came in", async () => {
    const q = new ByteQueue();
    // Sizes above Buffer's 4 KiB pool threshold, so that distinct buffers never share a pool slab.
    const chunk = bytes(20_000, 1);
    q.push(chunk);
    const head = await q.take(10);
    expect(head.buffer).toBe(chunk.buffer); // a plain take may be a view
    const owned = await q.takeOwned(8_000);
    expect(owned).toEqual(chunk.subarray(10, 8_010));
    expect(owned.buffer).not.toBe(chunk.buffer);
    chunk.fill(0);
    expect(owned).toEqual(bytes(20_000, 1).subarray(10, 8_010));
  });

  it("takeOwned gathers a payload spread over chunks into one buffer of exactly its size", async () => {
    const q = new ByteQueue();
    const parts = [bytes(7_000, 1), bytes(8_000, 2), bytes(9_000, 3)];
    const pending = q.takeOwned(20_000);
    for (const part of parts) q.push(part);
    const owned = await pending;
    expect(owned).toEqual(Buffer.concat(parts).subarray(0, 20_000));
    for (const part of parts) expect(owned.buffer).not.toBe(part.buffer);
    expect(await q.take(4_000)).toEqual(Buffer.concat(parts).subarray(20_000));
  });
});
