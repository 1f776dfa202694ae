// What a simulated replica needs from its disk, in callback form so that every completion can be
// routed through the simulator's event queue. Two implementations: SimDisk (a small model) and
// SlotSimStorage (the real SlotStore over the in-memory file system).
import type { SectorState, SectorTag } from "../storage/sector_state.js";
import type { PersistItem } from "../storage/sector_store.js";

export interface SimStorage {
  /**
   * Latest stored states (durable or not), one per sector in the order asked; null for a sector
   * whose record the storage detects as corrupt. The replica asks for one sector or for all the
   * loads of one core step together (as the production driver does).
   */
  loadMany(sectorIndexes: readonly number[], done: (states: Array<SectorState | null>) => void): void;
  /** The tags of what `loadMany` would return; null for a sector the storage knows is corrupt. */
  loadTags(sectorIndexes: readonly number[], done: (tags: Array<SectorTag | null>) => void): void;
  /** Stores a state; `done` runs once it is durable, and never if a crash comes first. */
  persist(sectorIndex: number, state: SectorState, done: () => void): void;
  /**
   * Stores states of distinct sectors; `done` runs once all of them are durable, and never if a
   * crash comes first (each sector may independently survive the crash, old or new).
   */
  persistMany(items: readonly PersistItem[], done: () => void): void;
  /** The durable tag reservation (register core rule 2) as the last recovery found it, or since. */
  tagReservation(): bigint;
  /** Durably raises the tag reservation; `done` once durable, never if a crash comes first. */
  reserveTags(upToTs: bigint, done: () => void): void;
  /** Power loss: whatever was not durable may be lost; pending callbacks never run. */
  crash(): void;
  /** Makes the storage usable again after a crash (or at first start); `done` when ready. */
  recover(done: () => void): void;
  /** What recoveries found so far (the slot store reports the entries of torn batches it dropped). */
  recoveryCounters(): { droppedEntries: number; tornWriteCrashes: number };
  /**
   * True if promises may have been resolved since the last call (the simulator then lets all
   * microtasks settle before the next event); resets the flag. Callback-only storage: never.
   */
  takeSettleNeeded(): boolean;
}
