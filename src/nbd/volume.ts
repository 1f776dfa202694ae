// Byte ranges of the exported disk as register operations. A request is cut into pieces: a partial
// head or tail sector is a read-modify-write of that one sector; the whole sectors in between go out
// as runs of up to MAX_RANGE_SECTORS sectors, one range command each (every sector of a run is still
// its own register). Every write holds the per-sector lock of each sector it writes (a run takes its
// locks in ascending order, so overlapping runs and RMWs never deadlock), so no write can slip
// between the read and the write of someone else's RMW. At most `maxInflightSectors` sectors are in
// flight at once across all connections (a run of k sectors counts k); big requests stream through
// that window piece by piece and never allocate more than their own payload (WRITE_ZEROES holds one
// held bitmap per 4 GiB and one ZERO_MAP bitmap per run in flight, and shares one zero buffer;
// TRIM allocates nothing).
import { bitAt, bitmapBytes, bitRunEnd, orBitmapInto, setBitRuns } from "../protocol/layouts.js";
import { assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";
import {
  GATEWAY_MAX_INFLIGHT_SECTORS,
  HELD_MAP_MAX_SECTORS,
  HELD_PAGE_SECTORS,
  HELD_PAGES_MAX,
  MAX_RANGE_SECTORS,
  NBD_BLOCK_STATUS_MAX_BYTES,
  SECTOR_SIZE_BYTES,
} from "../util/limits.js";
import type { SectorBackend } from "./sector_backend.js";
import { SectorLocks } from "./sector_locks.js";
import { Semaphore } from "./semaphore.js";

// A full-size run must fit the gateway's window, or every big request would crawl in small runs.
assert(GATEWAY_MAX_INFLIGHT_SECTORS >= MAX_RANGE_SECTORS, "the gateway window must hold a full run");

const ZERO_SECTOR = Buffer.alloc(SECTOR_SIZE_BYTES);
/** Shared source of every zeroing range write; backends never modify or keep write data. */
const ZERO_RUN = Buffer.alloc(MAX_RANGE_SECTORS * SECTOR_SIZE_BYTES);

/**
 * What a request's owner sets once nobody waits for it any more (its timeout fired). An
 * AbortSignal fits, but one per request cost ~5% of the gateway's CPU under random 4 KiB writes.
 */
export interface Cancellation {
  readonly aborted: boolean;
}

function aborted(): AtomicDiskError {
  return new AtomicDiskError("QUORUM_TIMEOUT", "request abandoned after its timeout");
}

function isZero(data: Buffer): boolean {
  return data.equals(ZERO_SECTOR);
}

/**
 * One piece of a request: either a run of `count` whole sectors starting at `sector`, or (partial)
 * the bytes [from, to) of the single sector `sector`.
 */
export type Piece =
  | { partial: false; sector: number; count: number }
  | { partial: true; sector: number; from: number; to: number };

/**
 * The pieces of the byte range [offset, offset + length) in ascending order: a partial head
 * sector, runs of whole sectors of at most `maxRun` sectors, a partial tail sector.
 */
export function* piecesOf(offset: number, length: number, maxRun: number): Generator<Piece> {
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    const sector = Math.floor(pos / SECTOR_SIZE_BYTES);
    const base = sector * SECTOR_SIZE_BYTES;
    if (pos !== base || end - pos < SECTOR_SIZE_BYTES) {
      const to = Math.min(end, base + SECTOR_SIZE_BYTES) - base;
      yield { partial: true, sector, from: pos - base, to };
      pos = base + to;
      continue;
    }
    const count = Math.min(Math.floor((end - pos) / SECTOR_SIZE_BYTES), maxRun);
    yield { partial: false, sector, count };
    pos += count * SECTOR_SIZE_BYTES;
  }
}

function sectorsOf(piece: Piece): number {
  return piece.partial ? 1 : piece.count;
}

/** `lengthBytes` consecutive bytes that were never written (a hole, reads as zeros), or may have been. */
export interface AllocationExtent {
  lengthBytes: number;
  hole: boolean;
}

export class Volume {
  readonly sizeBytes: number;
  private readonly window: Semaphore;
  private readonly locks = new SectorLocks();
  /** Longest run one piece covers: a full range command, unless the window is smaller. */
  private readonly maxRun: number;

  constructor(
    private readonly backend: SectorBackend,
    maxInflightSectors = GATEWAY_MAX_INFLIGHT_SECTORS,
  ) {
    this.sizeBytes = backend.sectors * SECTOR_SIZE_BYTES;
    this.window = new Semaphore(maxInflightSectors);
    this.maxRun = Math.min(MAX_RANGE_SECTORS, maxInflightSectors);
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
    signal?: Cancellation,
  ): Promise<void> {
    this.checkRange(offset, length);
    assert(targetOffset + length <= target.length, "read: target too small");
    await this.forEachPiece(offset, length, signal, async (piece) => {
      const dest = targetOffset + piece.sector * SECTOR_SIZE_BYTES - offset;
      if (piece.partial) {
        const data = await this.backend.readSector(piece.sector);
        data.copy(target, dest + piece.from, piece.from, piece.to);
        return;
      }
      const data = await this.backend.readSectors(piece.sector, piece.count);
      data.copy(target, dest);
    });
  }

  async write(offset: number, data: Buffer, signal?: Cancellation): Promise<void> {
    this.checkRange(offset, data.length);
    await this.forEachPiece(offset, data.length, signal, (piece) => {
      const start = piece.sector * SECTOR_SIZE_BYTES - offset;
      if (!piece.partial) {
        const src = data.subarray(start, start + piece.count * SECTOR_SIZE_BYTES);
        return this.locks.withLocks(piece.sector, piece.count, () =>
          this.backend.writeSectors(piece.sector, src),
        );
      }
      const src = data.subarray(start + piece.from, start + piece.to);
      return this.locks.withLock(piece.sector, async () => {
        const current = await this.backend.readSector(piece.sector);
        src.copy(current, piece.from);
        await this.backend.writeSector(piece.sector, current);
      });
    });
  }

  /**
   * Makes the range read as zeros. Space that no write ever reached is left alone: HELD_PAGES and
   * HELD_MAPs find it (see allocation), so zeroing never-written space (mkfs, nbdcopy of a sparse
   * image) stays cheap. The rest is zeroed run by run (zeroHeld).
   */
  async writeZeroes(offset: number, length: number, signal?: Cancellation): Promise<void> {
    this.checkRange(offset, length);
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      // One BLOCK_STATUS reply's worth at a time (up to a sector boundary): a huge request holds
      // one bitmap of at most 128 KiB, and its HELD_PAGES cover the whole chunk at once.
      const chunkEnd =
        (Math.floor(pos / SECTOR_SIZE_BYTES) + NBD_BLOCK_STATUS_MAX_BYTES / SECTOR_SIZE_BYTES) *
        SECTOR_SIZE_BYTES;
      const extents = await this.allocation(pos, end - pos, chunkEnd - pos, Number.POSITIVE_INFINITY, signal);
      // The held extents zero concurrently; the window bounds their sectors in flight together.
      const zeroing: Promise<void>[] = [];
      for (const extent of extents) {
        if (!extent.hole) zeroing.push(this.zeroHeld(pos, extent.lengthBytes, signal));
        pos += extent.lengthBytes;
      }
      await settleAll(zeroing);
    }
  }

  /**
   * Zeroes [offset, offset + length), leaving alone the sectors that already read as zero: a
   * register read costs no durable write. A run is read with one ZERO_MAP (a register read that
   * answers a bit per sector, not the data) and only its sub-runs that are not zero yet are written.
   */
  private zeroHeld(offset: number, length: number, signal?: Cancellation): Promise<void> {
    return this.forEachPiece(offset, length, signal, (piece) => {
      if (piece.partial) {
        return this.locks.withLock(piece.sector, async () => {
          const current = await this.backend.readSector(piece.sector);
          if (isZero(current)) return;
          current.fill(0, piece.from, piece.to);
          await this.backend.writeSector(piece.sector, current);
        });
      }
      return this.locks.withLocks(piece.sector, piece.count, async () => {
        const zeros = await this.backend.zeroMap(piece.sector, piece.count);
        const writes: Promise<void>[] = [];
        for (const [first, count] of nonZeroRuns(zeros, piece.count)) {
          writes.push(
            this.backend.writeSectors(piece.sector + first, ZERO_RUN.subarray(0, count * SECTOR_SIZE_BYTES)),
          );
        }
        await settleAll(writes);
      });
    });
  }

  /**
   * Which bytes from `offset` on were never written: consecutive extents covering [offset, offset
   * + length), or only its first maxBytes (a BLOCK_STATUS reply may describe less than was asked).
   * At most `maxExtents` extents: a reply has a cap, and the extents past it are never built.
   * With one (NBD_CMD_FLAG_REQ_ONE) the range is examined in rounds until that extent has ended:
   * HELD_MAP_MAX_SECTORS first, each round twice the one before (qemu asks with REQ_ONE over
   * gigabytes of hole: a few rounds of maps asked at once, not one 128 MiB map after the other).
   * The sectors touched are each looked at whole; the extents are clipped to the range at its
   * ends. A hole (see markHeld and SectorBackend.heldMap) reads as zeros: no write to it was
   * acknowledged before the call.
   */
  async allocation(
    offset: number,
    length: number,
    maxBytes: number,
    maxExtents: number,
    signal?: Cancellation,
  ): Promise<AllocationExtent[]> {
    this.checkRange(offset, length);
    assert(maxBytes >= SECTOR_SIZE_BYTES, "allocation: maxBytes must hold a sector");
    assert(maxExtents >= 1, "allocation: maxExtents must be positive");
    const firstOnly = maxExtents === 1;
    const end = offset + Math.min(length, maxBytes);
    const first = Math.floor(offset / SECTOR_SIZE_BYTES);
    const sectors = Math.ceil(end / SECTOR_SIZE_BYTES) - first;
    // One bitmap for the whole range, filled round by round (markHeld); every round starts a
    // multiple of HELD_MAP_MAX_SECTORS (so of 8) sectors in.
    assert(HELD_MAP_MAX_SECTORS % 8 === 0, "rounds start on a byte of the bitmap");
    const held = Buffer.alloc(bitmapBytes(sectors));
    const pages = await this.heldPageRuns(first, first + sectors);
    let examined = 0;
    let roundSectors = firstOnly ? HELD_MAP_MAX_SECTORS : sectors;
    while (examined < sectors) {
      if (signal?.aborted === true) throw aborted();
      const round = Math.min(roundSectors, sectors - examined);
      roundSectors *= 2;
      await this.markHeld(first, examined, examined + round, pages, held);
      examined += round;
      if (firstOnly && bitRunEnd(held, 0, examined) < examined) break;
    }
    const extents: AllocationExtent[] = [];
    let pos = offset;
    for (let i = 0; i < examined; ) {
      const j = bitRunEnd(held, i, examined);
      const stop = Math.min(end, (first + j) * SECTOR_SIZE_BYTES);
      extents.push({ lengthBytes: stop - pos, hole: !bitAt(held, i) });
      if (extents.length === maxExtents) break;
      pos = stop;
      i = j;
    }
    return extents;
  }

  /**
   * The runs [first page, end page) of pages of HELD_PAGE_SECTORS sectors over sectors [start,
   * end) that some replica of a majority holds a sector of (HELD_PAGES, a bit per page). A page
   * none of them holds has no sector that an acknowledged write reached (heldMap's argument), and
   * over a big sparse volume that is nearly every page. Asked once per request, whatever rounds
   * follow.
   */
  private async heldPageRuns(start: number, end: number): Promise<Array<[number, number]>> {
    const firstPage = Math.floor(start / HELD_PAGE_SECTORS);
    const endPage = Math.ceil(end / HELD_PAGE_SECTORS);
    const runs: Array<[number, number]> = [];
    const asks: Promise<void>[] = [];
    for (let page = firstPage; page < endPage; page += HELD_PAGES_MAX) {
      const count = Math.min(HELD_PAGES_MAX, endPage - page);
      asks.push(
        this.backend.heldPages(page * HELD_PAGE_SECTORS, count).then((bits) => {
          assert(bits.length === bitmapBytes(count), "a HELD_PAGES answer has a bit per page");
          for (const [from, to] of setBitRuns(bits, count)) runs.push([page + from, page + to]);
        }),
      );
    }
    await settleAll(asks);
    return runs;
  }

  /**
   * Sets in `held` (bit i for sector first + i) the bits of sectors [first + from, first + to)
   * that may have been written; `from` is a multiple of 8. HELD_MAPs go only to the held pages
   * (`pageRuns`, from heldPageRuns); the sectors of every other page stay clear. A map starts a
   * multiple of 8 sectors in (a few sectors before its page where the page does not start on a
   * byte of `held`), and is ORed in, so maps that share a byte cannot undo each other.
   */
  private async markHeld(
    first: number,
    from: number,
    to: number,
    pageRuns: ReadonlyArray<readonly [number, number]>,
    held: Buffer,
  ): Promise<void> {
    assert(from % 8 === 0 && from < to, "markHeld: from starts a byte of the bitmap");
    const start = first + from;
    const end = first + to;
    const maps: Promise<void>[] = [];
    for (const [runFirstPage, runEndPage] of pageRuns) {
      // The run's sectors, clipped to the range, the start moved back onto a byte of `held`.
      const runStart = Math.max(start, runFirstPage * HELD_PAGE_SECTORS);
      const runEnd = Math.min(end, runEndPage * HELD_PAGE_SECTORS);
      if (runStart >= runEnd) continue;
      for (
        let at = runStart - first - ((runStart - first) % 8);
        at < runEnd - first;
        at += HELD_MAP_MAX_SECTORS
      ) {
        const count = Math.min(HELD_MAP_MAX_SECTORS, runEnd - first - at);
        maps.push(
          this.backend.heldMap(first + at, count).then((bits) => {
            assert(bits.length === bitmapBytes(count), "a HELD_MAP answer has a bit per sector");
            orBitmapInto(held, at >> 3, bits);
          }),
        );
      }
    }
    await settleAll(maps);
  }

  /**
   * Runs fn once per piece of the range (see piecesOf), at most `window` sectors at a time over the
   * whole gateway. Waits for every started call; rejects with the first error and starts no more
   * pieces after one failed or after `signal` aborted (a timed-out request must not keep feeding
   * the window with sectors nobody waits for).
   */
  private forEachPiece(
    offset: number,
    length: number,
    signal: Cancellation | undefined,
    fn: (piece: Piece) => Promise<void>,
  ): Promise<void> {
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
        for (const piece of piecesOf(offset, length, this.maxRun)) {
          if (failure !== undefined) break;
          const permits = sectorsOf(piece);
          await this.window.acquire(permits);
          if (failure === undefined && signal?.aborted === true) failure = aborted();
          if (failure !== undefined) {
            this.window.release(permits);
            break;
          }
          running++;
          fn(piece).then(
            () => {
              this.window.release(permits);
              running--;
              settle();
            },
            (err: unknown) => {
              this.window.release(permits);
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

/** [first, count] of each maximal run of the `sectors` sectors of a ZERO_MAP bitmap that are not all zero. */
function* nonZeroRuns(zeros: Buffer, sectors: number): Generator<[number, number]> {
  let start = -1;
  for (let i = 0; i <= sectors; i++) {
    const zero = i === sectors || bitAt(zeros, i);
    if (!zero && start < 0) start = i;
    if (zero && start >= 0) {
      yield [start, i - start];
      start = -1;
    }
  }
}

/** Waits for every promise (none left running behind the locks), then rejects with the first error. */
async function settleAll(promises: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === "rejected") throw r.reason;
}
