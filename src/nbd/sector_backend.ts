// What the gateway needs from the storage below it: whole-sector reads and writes of one register.
// replica_pool.ts implements it over the replicas; memory_backend.ts in-process for protocol tests.

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
  close(): Promise<void>;
}
