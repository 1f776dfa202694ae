// Byte ranges of the exported disk as per-sector register operations. Partial sectors are a
// read-modify-write under a per-sector lock; every write takes that lock, so a whole-sector write
// cannot slip between the read and the write of someone else's RMW. At most `maxInflightSectors`
// sector commands run at once across all connections; big requests stream through that window
// and never allocate more than their own payload (TRIM/WRITE_ZEROES allocate nothing).
import { assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";
import { GATEWAY_MAX_INFLIGHT_SECTORS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import type { SectorBackend } from "./sector_backend.js";
import { SectorLocks } from "./sector_locks.js";
import { Semaphore } from "./semaphore.js";

const ZERO_SECTOR = Buffer.alloc(SECTOR_SIZE_BYTES);

function aborted(): AtomicDiskError {
  return new AtomicDiskError("QUORUM_TIMEOUT", "request abandoned after its timeout");
}

function isZero(data: Buffer): boolean {
  return data.equals(ZERO_SECTOR);
}

export class Volume {
  readonly sizeBytes: number;
  private readonly window: Semaphore;
  private readonly locks = new SectorLocks();

  constructor(
    private readonly backend: SectorBackend,
    maxInflightSectors = GATEWAY_MAX_INFLIGHT_SECTORS,
  ) {
    this.sizeBytes = backend.sectors * SECTOR_SIZE_BYTES;
    this.window = new Semaphore(maxInflightSectors);
  }

  /** Throws OUT_OF_RANGE unless [offset, offset+length) is a non-empty range inside the disk. */
  checkRange(offset: number, length: number): void {
    if (length <= 0 || offset < 0 || offset + length > this.sizeBytes) {
      throw new AtomicDiskError(
        "OUT_OF_RANGE",
        `range ${offset}+${length} outside disk of ${this.sizeBytes} bytes`,
      );
    }
  }

  /** Fills target[targetOffset .. targetOffset+length) with the disk bytes at offset. */
  async read(
    offset: number,
    length: number,
    target: Buffer,
    targetOffset: number,
    signal?: AbortSignal,
  ): Promise<void> {
    this.checkRange(offset, length);
    assert(targetOffset + length <= target.length, "read: target too small");
    await this.forEachSector(offset, length, signal, async (sector, from, to) => {
      const data = await this.backend.readSector(sector);
      const dest = targetOffset + sector * SECTOR_SIZE_BYTES + from - offset;
      data.copy(target, dest, from, to);
    });
  }

  async write(offset: number, data: Buffer, signal?: AbortSignal): Promise<void> {
    this.checkRange(offset, data.length);
    await this.forEachSector(offset, data.length, signal, (sector, from, to) => {
      const src = data.subarray(
        sector * SECTOR_SIZE_BYTES + from - offset,
        sector * SECTOR_SIZE_BYTES + to - offset,
      );
      return this.locks.withLock(sector, async () => {
        if (from === 0 && to === SECTOR_SIZE_BYTES) {
          await this.backend.writeSector(sector, src);
          return;
        }
        const current = await this.backend.readSector(sector);
        src.copy(current, from);
        await this.backend.writeSector(sector, current);
      });
    });
  }

  /**
   * Makes the range read as zeros. A sector that already reads as zero is left alone: a register
   * read costs no durable write, so zeroing never-written space (mkfs, nbdcopy) stays cheap.
   */
  async writeZeroes(offset: number, length: number, signal?: AbortSignal): Promise<void> {
    this.checkRange(offset, length);
    await this.forEachSector(offset, length, signal, (sector, from, to) =>
      this.locks.withLock(sector, async () => {
        const current = await this.backend.readSector(sector);
        if (isZero(current)) return;
        if (from === 0 && to === SECTOR_SIZE_BYTES) {
          await this.backend.writeSector(sector, ZERO_SECTOR);
          return;
        }
        current.fill(0, from, to);
        await this.backend.writeSector(sector, current);
      }),
    );
  }

  /**
   * Runs fn once per sector touched by the range, with byte bounds [from, to) inside that sector,
   * at most `window` at a time over the whole gateway. Waits for every started call; rejects with
   * the first error and starts no more sectors after one failed or after `signal` aborted (a
   * timed-out request must not keep feeding the window with sectors nobody waits for).
   */
  private forEachSector(
    offset: number,
    length: number,
    signal: AbortSignal | undefined,
    fn: (sector: number, from: number, to: number) => Promise<void>,
  ): Promise<void> {
    const first = Math.floor(offset / SECTOR_SIZE_BYTES);
    const end = offset + length;
    const last = Math.floor((end - 1) / SECTOR_SIZE_BYTES);
    return new Promise((resolve, reject) => {
      let running = 0;
      let launching = true;
      let failure: unknown;
      const settle = () => {
        if (launching || running > 0) return;
        if (failure === undefined) resolve();
        else reject(failure);
      };
      const launch = async () => {
        for (let sector = first; sector <= last && failure === undefined; sector++) {
          await this.window.acquire();
          if (failure === undefined && signal?.aborted === true) failure = aborted();
          if (failure !== undefined) {
            this.window.release();
            break;
          }
          const base = sector * SECTOR_SIZE_BYTES;
          const from = Math.max(offset, base) - base;
          const to = Math.min(end, base + SECTOR_SIZE_BYTES) - base;
          running++;
          fn(sector, from, to).then(
            () => {
              this.window.release();
              running--;
              settle();
            },
            (err: unknown) => {
              this.window.release();
              running--;
              if (failure === undefined) failure = err;
              settle();
            },
          );
        }
        launching = false;
        settle();
      };
      void launch();
    });
  }
}
