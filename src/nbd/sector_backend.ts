// What the gateway needs from the storage below it: whole-sector reads and writes of registers,
// one sector or a run of 1..MAX_RANGE_SECTORS consecutive sectors (each sector stays its own
// register; a run is only carried in one command). replica_pool.ts implements it over the replicas;
// memory_backend.ts in-process for protocol tests.

export interface SectorBackend {
  /** Number of sectors of the volume. */
  readonly sectors: number;
  /** Resolves with exactly SECTOR_SIZE_BYTES bytes that the caller may keep and modify. */
  readSector(index: number): Promise<Buffer>;
  /**
   * Resolves once the write is durable on a majority. `data` is exactly SECTOR_SIZE_BYTES; the
   * backend must neither modify nor keep it after the promise settles (the zero buffer is shared).
   */
  writeSector(index: number, data: Buffer): Promise<void>;
  /**
   * Sectors [index, index + count), count in 1..MAX_RANGE_SECTORS: resolves with exactly
   * count * SECTOR_SIZE_BYTES bytes (sector i at i * SECTOR_SIZE_BYTES) the caller may keep and modify.
   */
  readSectors(index: number, count: number): Promise<Buffer>;
  /**
   * Writes sectors [index, index + data.length / SECTOR_SIZE_BYTES), a run of 1..MAX_RANGE_SECTORS
   * whole sectors; resolves once every one of them is durable on a majority. Same ownership rule
   * for `data` as writeSector.
   */
  writeSectors(index: number, data: Buffer): Promise<void>;
  /**
   * Which sectors of [index, index + count), count in 1..MAX_RANGE_SECTORS, read as all zeros: a
   * register read of the run (it sees every write acknowledged before it) that answers a bit per
   * sector, bit (7 - i % 8) of byte i / 8 for sector index + i, instead of the data.
   */
  zeroMap(index: number, count: number): Promise<Buffer>;
  /**
   * Which sectors of [index, index + count), count in 1..HELD_MAP_MAX_SECTORS, may have been
   * written: same bitmap layout, bit set unless the sector certainly reads as zeros because no
   * write of it was ever acknowledged. Cheap (no register operation, no data), for BLOCK_STATUS.
   */
  heldMap(index: number, count: number): Promise<Buffer>;
  /**
   * As heldMap, a bit per page of HELD_PAGE_SECTORS sectors: pages [0, pageCount) from firstSector
   * (a multiple of HELD_PAGE_SECTORS; the last page starts inside the volume and may end past
   * it), count in 1..HELD_PAGES_MAX; a page's bit is clear only if every sector of it would be
   * clear in a heldMap.
   */
  heldPages(firstSector: number, pageCount: number): Promise<Buffer>;
  close(): Promise<void>;
}
