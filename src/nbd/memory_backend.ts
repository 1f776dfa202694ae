// An in-process SectorBackend holding only written sectors: for protocol tests and local experiments.
import { bitmapOfMarked, zeroBitmap } from "../protocol/layouts.js";
import { assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";
import { HELD_PAGE_SECTORS, MAX_RANGE_SECTORS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import type { SectorBackend } from "./sector_backend.js";

export class MemoryBackend implements SectorBackend {
  private readonly data = new Map<number, Buffer>();
  /** Artificial latency so tests can observe concurrency and reordering. */
  constructor(
    readonly sectors: number,
    private readonly delayMs = 0,
  ) {}

  readSector(index: number): Promise<Buffer> {
    return this.readSectors(index, 1);
  }

  writeSector(index: number, data: Buffer): Promise<void> {
    assert(data.length === SECTOR_SIZE_BYTES, "writeSector: data must be one sector");
    return this.writeSectors(index, data);
  }

  async readSectors(index: number, count: number): Promise<Buffer> {
    assertRun(count);
    await this.pause();
    this.check(index, count);
    const out = Buffer.alloc(count * SECTOR_SIZE_BYTES);
    for (let i = 0; i < count; i++) this.data.get(index + i)?.copy(out, i * SECTOR_SIZE_BYTES);
    return out;
  }

  async zeroMap(index: number, count: number): Promise<Buffer> {
    return zeroBitmap(await this.readSectors(index, count), count);
  }

  async heldMap(index: number, count: number): Promise<Buffer> {
    await this.pause();
    this.check(index, count);
    return bitmapOfMarked(count, (mark) => {
      for (const sector of this.data.keys())
        if (sector >= index && sector < index + count) mark(sector - index);
    });
  }

  async heldPages(firstSector: number, pageCount: number): Promise<Buffer> {
    await this.pause();
    assert(firstSector % HELD_PAGE_SECTORS === 0, "heldPages: firstSector must start a page");
    this.check(firstSector + (pageCount - 1) * HELD_PAGE_SECTORS, 1);
    const end = firstSector + pageCount * HELD_PAGE_SECTORS;
    return bitmapOfMarked(pageCount, (mark) => {
      for (const sector of this.data.keys())
        if (sector >= firstSector && sector < end)
          mark(Math.floor((sector - firstSector) / HELD_PAGE_SECTORS));
    });
  }

  async writeSectors(index: number, data: Buffer): Promise<void> {
    assert(data.length % SECTOR_SIZE_BYTES === 0, "writeSectors: data must be whole sectors");
    const count = data.length / SECTOR_SIZE_BYTES;
    assertRun(count);
    const copies = Array.from({ length: count }, (_, i) =>
      Buffer.from(data.subarray(i * SECTOR_SIZE_BYTES, (i + 1) * SECTOR_SIZE_BYTES)),
    );
    await this.pause();
    this.check(index, count);
    for (const [i, copy] of copies.entries()) this.data.set(index + i, copy);
  }

  async close(): Promise<void> {}

  /** Sectors ever written (tests check that zeroing does not allocate). */
  get storedSectors(): number {
    return this.data.size;
  }

  private check(index: number, count: number): void {
    if (index < 0 || index + count > this.sectors) {
      throw new AtomicDiskError("INVALID_SECTOR_INDEX", `sectors ${index}+${count} out of range`);
    }
  }

  private pause(): Promise<void> {
    return this.delayMs > 0 ? new Promise((r) => setTimeout(r, this.delayMs)) : Promise.resolve();
  }
}

function assertRun(count: number): void {
  assert(
    Number.isSafeInteger(count) && count >= 1 && count <= MAX_RANGE_SECTORS,
    `a run holds 1..${MAX_RANGE_SECTORS} sectors, not ${count}`,
  );
}
