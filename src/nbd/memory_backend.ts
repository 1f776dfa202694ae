// An in-process SectorBackend holding only written sectors: for protocol tests and local experiments.
import { assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";
import { SECTOR_SIZE_BYTES } from "../util/limits.js";
import type { SectorBackend } from "./sector_backend.js";

export class MemoryBackend implements SectorBackend {
  private readonly data = new Map<number, Buffer>();
  /** Artificial latency so tests can observe concurrency and reordering. */
  constructor(
    readonly sectors: number,
    private readonly delayMs = 0,
  ) {}

  async readSector(index: number): Promise<Buffer> {
    await this.pause();
    this.check(index);
    const stored = this.data.get(index);
    return stored === undefined ? Buffer.alloc(SECTOR_SIZE_BYTES) : Buffer.from(stored);
  }

  async writeSector(index: number, data: Buffer): Promise<void> {
    assert(data.length === SECTOR_SIZE_BYTES, "writeSector: data must be one sector");
    const copy = Buffer.from(data);
    await this.pause();
    this.check(index);
    this.data.set(index, copy);
  }

  async close(): Promise<void> {}

  /** Sectors ever written (tests check that zeroing does not allocate). */
  get storedSectors(): number {
    return this.data.size;
  }

  private check(index: number): void {
    if (index < 0 || index >= this.sectors) {
      throw new AtomicDiskError("INVALID_SECTOR_INDEX", `sector ${index} out of range`);
    }
  }

  private pause(): Promise<void> {
    return this.delayMs > 0 ? new Promise((r) => setTimeout(r, this.delayMs)) : Promise.resolve();
  }
}
