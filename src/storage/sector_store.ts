// What the replica driver needs from stable storage. Implemented by the journaled file store
// (real disks) and run under the simulator over a simulated file system.
import type { SectorState, SectorTag } from "./sector_state.js";

export interface SectorStore {
  /**
   * The latest state written for the sector (durable or not yet durable), or the initial state
   * `(0, 0, zeros)` if it was never written. Rejects with AtomicDiskError STORAGE_CORRUPT when the
   * stored record fails its checksum: corrupt state is never served silently.
   */
  load(sectorIndex: number): Promise<SectorState>;

  /**
   * The tag of what `load` would return, without reading the data: the store knows it from its
   * index. Rejects with STORAGE_CORRUPT for a sector known to be damaged (data damage that only a
   * data read can detect is not seen here).
   */
  loadTag(sectorIndex: number): Promise<SectorTag>;

  /**
   * Stores a new state for the sector. Resolves only once the state is durable (survives a crash);
   * concurrent persists share fsyncs (group commit). Persists of one sector take effect in call
   * order. The caller must not mutate `state.data` afterwards.
   */
  persist(sectorIndex: number, state: SectorState): Promise<void>;

  /** Number of sectors that hold a written state (for metrics and tests). */
  writtenSectorCount(): number;

  /** Flushes and releases files. Pending persists complete first. */
  close(): Promise<void>;
}
