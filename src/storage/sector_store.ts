// What the replica driver needs from stable storage. Implemented by the slot file store
// (real disks) and run under the simulator over a simulated file system.
import type { SectorState, SectorTag } from "./sector_state.js";

/** One sector's new state in a `persistMany` call. */
export interface PersistItem {
  sectorIndex: number;
  state: SectorState;
}

export interface SectorStore {
  /**
   * The latest state written for the sector (durable or not yet durable), or the initial state
   * `(0, 0, zeros)` if it was never written. Rejects with AtomicDiskError STORAGE_CORRUPT when the
   * stored record fails its checksum: corrupt state is never served silently.
   */
  load(sectorIndex: number): Promise<SectorState>;

  /**
   * Calls mark(i) for each i in [0, count) whose sector first + i the store holds (in any order,
   * maybe more than once). A sector is held when the store has any record of it: a state that is
   * durable, or queued to become durable, or known to be damaged; not held only if never written
   * here (or if its only record was lost with a torn batch at recovery). A persist counts from the
   * call on, so once it resolved the sector stays held. Takes time that grows with what the store
   * holds in the range rather than with count, so a map of a huge, mostly unwritten volume is cheap.
   */
  markHeld(first: number, count: number, mark: (i: number) => void): void;
  /**
   * Calls mark(p) for each p in [0, pages) whose page holds a sector markHeld would mark (in any
   * order, maybe more than once): page p is sectors [first + p * HELD_PAGE_SECTORS, first + (p + 1)
   * * HELD_PAGE_SECTORS), first a multiple of HELD_PAGE_SECTORS. Takes time that grows with the
   * pages written in the range, or with all pages written, whichever is fewer, not with pages.
   */
  markHeldPages(first: number, pages: number, mark: (p: number) => void): void;

  /**
   * The tag of what `load` would return, without reading the data: the store knows it from its
   * index. Rejects with STORAGE_CORRUPT for a sector known to be damaged (data damage that only a
   * data read can detect is not seen here).
   */
  loadTag(sectorIndex: number): Promise<SectorTag>;

  /**
   * `loadTag` for many sectors at once: one entry per requested sector, in order, its tag or null
   * where loadTag would reject with STORAGE_CORRUPT. Other failures reject.
   */
  loadTags(sectorIndexes: readonly number[]): Promise<Array<SectorTag | null>>;

  /**
   * Stores a new state for the sector. Resolves only once the state is durable (survives a crash);
   * concurrent persists share fsyncs (group commit). Persists of one sector take effect in call
   * order. The caller must not mutate `state.data` afterwards.
   */
  persist(sectorIndex: number, state: SectorState): Promise<void>;

  /**
   * Stores new states for distinct sectors together: resolves once every one of them is durable.
   * The same ordering and ownership rules as `persist` apply to each item; the store is free to
   * put all of them in one group commit, and the caller pays one completion instead of one per
   * sector.
   */
  persistMany(items: readonly PersistItem[]): Promise<void>;

  /**
   * `load` for many sectors at once (adjacent stored sectors may be read with one I/O). The result
   * has one entry per requested sector, in order: its state, or null when that sector's stored
   * record is corrupt (what `load` rejects with STORAGE_CORRUPT). Other failures reject.
   */
  loadMany(sectorIndexes: readonly number[]): Promise<Array<SectorState | null>>;

  /** Number of sectors that hold a written state (for metrics and tests). */
  writtenSectorCount(): number;

  /** Flushes and releases files. Pending persists complete first. */
  close(): Promise<void>;
}
