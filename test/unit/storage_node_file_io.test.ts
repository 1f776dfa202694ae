import { readFile } from "node:fs/promises";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { WriteRegion } from "../../src/storage/file_io.js";
import { readFully } from "../../src/storage/file_io.js";
import { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import { nodeFileSystem } from "../../src/storage/node_file_io.js";
import { withTempDir } from "./storage_test_support.js";

function filled(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buf[i] = (i * 31 + seed) & 0xff;
  return buf;
}

/** Regions of odd sizes and offsets: page-by-page splitting must still put every byte in place. */
const regions: WriteRegion[] = [
  { position: 1000, buffers: [filled(5000, 1), filled(100, 2), filled(8192, 3)], newPages: true },
  { position: 20_000, buffers: [filled(4096, 4), filled(4096, 5)] },
  { position: 40_960, buffers: [filled(1, 6)], newPages: true },
  { position: 45_000, buffers: [filled(12_345, 7)], newPages: true },
  { position: 60_000, buffers: [filled(20_000, 8), filled(30_000, 9)], newPages: true },
];

function expected(): Buffer {
  const end = Math.max(...regions.map((r) => r.position + r.buffers.reduce((n, b) => n + b.length, 0)));
  const out = Buffer.alloc(end);
  for (const r of regions) Buffer.concat(r.buffers as Buffer[]).copy(out, r.position);
  return out;
}

describe("writeRegions", () => {
  it("on a real file writes every region's bytes where they belong, new pages split into small calls", async () => {
    await withTempDir(async (dir) => {
      const file = await nodeFileSystem.open(path.join(dir, "f"), { create: true });
      await file.writeRegions(regions);
      await file.datasync();
      await file.close();
      expect((await readFile(path.join(dir, "f"))).equals(expected())).toBe(true);
    });
  });

  it("on the simulated disk writes the same bytes", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/d");
    const file = await fs.open("/d/f", { create: true });
    await file.writeRegions(regions);
    const want = expected();
    const got = Buffer.alloc(want.length);
    expect(await readFully(file, got, 0, want.length, 0)).toBe(want.length);
    expect(got.equals(want)).toBe(true);
  });
});
