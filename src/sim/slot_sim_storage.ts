// The real SlotStore over the simulated file system (MemoryFileSystem), as a SimStorage: every
// file operation completes through the simulator's event queue, a crash is MemoryFileSystem's
// crash (optionally with torn writes, which the store's checksums must detect), and recovery is
// SlotStore.open on what survived.
import { pino } from "pino";
import { MemoryFileSystem } from "../storage/memory_file_io.js";
import type { SectorState, SectorTag } from "../storage/sector_state.js";
import type { PersistItem } from "../storage/sector_store.js";
import { SLOT_FILE } from "../storage/slot_format.js";
import { SlotStore } from "../storage/slot_store.js";
import { TagReservation } from "../storage/tag_reservation.js";
import type { EventQueue } from "./event_queue.js";
import type { FaultProfile } from "./fault_profile.js";
import type { Prng } from "./prng.js";
import type { SimStorage } from "./sim_storage.js";

const DIR = "/replica";
const silent = pino({ level: "silent" });

export class SlotSimStorage implements SimStorage {
  private readonly fs: MemoryFileSystem;
  private store: SlotStore | null = null;
  private tags: TagReservation | null = null;
  /** Bumped by a crash: completions of an older incarnation are ignored. */
  private epoch = 0;
  private readonly maxBatchSectors: number;
  private readonly growthSlots: number;
  private readonly counters = { droppedEntries: 0, tornWriteCrashes: 0 };
  /** Set whenever the store ran or an I/O completed: promise continuations may be waiting. */
  private touched = false;

  constructor(
    private readonly queue: EventQueue,
    private readonly rng: Prng,
    private readonly profile: FaultProfile,
  ) {
    const ioMaxUs = Math.max(1, Math.floor(profile.disk.syncMaxUs / 4));
    this.fs = new MemoryFileSystem({
      schedule: (complete) =>
        queue.after(rng.range(0, ioMaxUs), () => {
          this.touched = true;
          complete();
        }),
    });
    // Small batches and growth chunks too, so that runs split batches, grow the file slot by slot
    // or ahead, and cross meta pages (and crash in the middle of all that).
    this.maxBatchSectors = rng.pick([4, 64, 1024]);
    this.growthSlots = rng.pick([0, 1, 64]);
  }

  /** Runs `then` as a sim event of the current incarnation (never from inside a microtask). */
  private later<T>(promise: Promise<T>, then: (value: T) => void, onError: (err: unknown) => void): void {
    const epoch = this.epoch;
    this.touched = true;
    promise.then(
      (value) => this.queue.after(0, () => epoch === this.epoch && then(value)),
      (err: unknown) => this.queue.after(0, () => epoch === this.epoch && onError(err)),
    );
  }

  /** Through the store's own batched methods, the ones the replica driver calls. */
  loadMany(sectorIndexes: readonly number[], done: (states: Array<SectorState | null>) => void): void {
    const store = this.usable();
    this.later(store.loadMany(sectorIndexes), done, (err) => {
      throw err;
    });
  }

  loadTags(sectorIndexes: readonly number[], done: (tags: Array<SectorTag | null>) => void): void {
    const store = this.usable();
    this.later(store.loadTags(sectorIndexes), done, (err) => {
      throw err;
    });
  }

  persist(sectorIndex: number, state: SectorState, done: () => void): void {
    const store = this.usable();
    this.later(store.persist(sectorIndex, state), done, (err) => {
      throw err;
    });
  }

  persistMany(items: readonly PersistItem[], done: () => void): void {
    const store = this.usable();
    this.later(store.persistMany(items), done, (err) => {
      throw err;
    });
  }

  tagReservation(): bigint {
    if (this.tags === null) throw new Error("slot storage used while not recovered");
    return this.tags.reservedTs;
  }

  reserveTags(upToTs: bigint, done: () => void): void {
    if (this.tags === null) throw new Error("slot storage used while not recovered");
    this.later(this.tags.reserve(upToTs), done, (err) => {
      throw err;
    });
  }

  takeSettleNeeded(): boolean {
    const touched = this.touched;
    this.touched = false;
    return touched;
  }

  crash(): void {
    this.epoch++;
    this.touched = true;
    this.store = null;
    this.tags = null;
    if (this.profile.tornWrites) this.counters.tornWriteCrashes++;
    this.fs.crash({ random: () => this.rng.float(), tornWrites: this.profile.tornWrites });
  }

  recover(done: () => void): void {
    // As a replica opens them: the tag reservation first (it refuses a store without one).
    const opening = TagReservation.open({ fs: this.fs, dir: DIR, storeFile: SLOT_FILE, logger: silent }).then(
      async (tags) => {
        const store = await SlotStore.open({
          fs: this.fs,
          dir: DIR,
          logger: silent,
          maxBatchSectors: this.maxBatchSectors,
          growthSlots: this.growthSlots,
          // Drawn at every open: batches overlap in flight (depth > 1) when a crash hits, and a
          // store written at one depth recovers at another.
          commitDepth: this.rng.pick([1, 2, 3]),
        });
        return { tags, store };
      },
    );
    this.later(
      opening,
      ({ tags, store }) => {
        this.tags = tags;
        this.store = store;
        this.counters.droppedEntries += store.stats().recovery.droppedEntries;
        done();
      },
      (err) => {
        throw err;
      },
    );
  }

  recoveryCounters(): { droppedEntries: number; tornWriteCrashes: number } {
    return { ...this.counters };
  }

  private usable(): SlotStore {
    if (this.store === null) throw new Error("slot storage used while not recovered");
    return this.store;
  }
}
