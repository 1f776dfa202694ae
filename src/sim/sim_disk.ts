// A small disk model: writes go to a pending list and become durable only when a sync completes
// (group commit: a sync covers every write issued before it started). A crash discards pending
// writes, except that for each sector some prefix of its pending writes may already have reached
// the platter: after the crash the sector holds its old or one of its newer states, never a mix.
import { initialSectorState, type SectorState, type SectorTag } from "../storage/sector_state.js";
import type { PersistItem } from "../storage/sector_store.js";
import type { EventQueue } from "./event_queue.js";
import type { Prng } from "./prng.js";
import type { SimStorage } from "./sim_storage.js";

export interface DiskTiming {
  syncMinUs: number;
  syncMaxUs: number;
  loadMaxUs: number;
}

interface PendingWrite {
  sectorIndex: number;
  state: SectorState;
  done: () => void;
}

export class SimDisk implements SimStorage {
  private readonly durable = new Map<number, SectorState>();
  /** Durable or not: what a load returns (SectorStore semantics). */
  private readonly latest = new Map<number, SectorState>();
  private pending: PendingWrite[] = [];
  private syncing: PendingWrite[] | null = null;
  /** Bumped by a crash so that completions scheduled before it do nothing. */
  private epoch = 0;
  syncCount = 0;
  private durableReservation = 0n;
  private pendingReservation = 0n;

  constructor(
    private readonly queue: EventQueue,
    private readonly rng: Prng,
    private readonly timing: DiskTiming,
  ) {}

  loadMany(sectorIndexes: readonly number[], done: (states: Array<SectorState | null>) => void): void {
    const epoch = this.epoch;
    // One read of every sector asked for, when it completes, as a real disk read does: a persist
    // issued while the load was in flight (durable or not) is what it returns.
    this.queue.after(this.rng.range(0, this.timing.loadMaxUs), () => {
      if (epoch !== this.epoch) return;
      done(
        sectorIndexes.map((sectorIndex) => {
          const state = this.latest.get(sectorIndex);
          return state === undefined ? initialSectorState() : { ...state, data: Buffer.from(state.data) };
        }),
      );
    });
  }

  loadTags(sectorIndexes: readonly number[], done: (tags: Array<SectorTag | null>) => void): void {
    this.loadMany(sectorIndexes, (states) =>
      done(states.map((state) => (state === null ? null : { ts: state.ts, wr: state.wr }))),
    );
  }

  persist(sectorIndex: number, state: SectorState, done: () => void): void {
    this.latest.set(sectorIndex, state);
    this.pending.push({ sectorIndex, state, done });
    this.maybeStartSync();
  }

  persistMany(items: readonly PersistItem[], done: () => void): void {
    let left = items.length;
    if (left === 0) {
      this.queue.after(0, done);
      return;
    }
    // Each item is its own pending write (a crash keeps any subset); done after the last is durable.
    for (const { sectorIndex, state } of items) {
      this.persist(sectorIndex, state, () => {
        if (--left === 0) done();
      });
    }
  }

  tagReservation(): bigint {
    return this.durableReservation;
  }

  reserveTags(upToTs: bigint, done: () => void): void {
    const epoch = this.epoch;
    this.pendingReservation = upToTs > this.pendingReservation ? upToTs : this.pendingReservation;
    this.queue.after(this.rng.range(this.timing.syncMinUs, this.timing.syncMaxUs), () => {
      if (epoch !== this.epoch) return;
      if (upToTs > this.durableReservation) this.durableReservation = upToTs;
      done();
    });
  }

  private maybeStartSync(): void {
    if (this.syncing !== null || this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.syncing = batch;
    const epoch = this.epoch;
    this.queue.after(this.rng.range(this.timing.syncMinUs, this.timing.syncMaxUs), () => {
      if (epoch !== this.epoch) return;
      this.syncing = null;
      this.syncCount++;
      for (const write of batch) this.durable.set(write.sectorIndex, write.state);
      // One sync makes the whole batch durable at once: its completions may be reported in any order.
      const reported = this.rng.chance(0.5) ? this.rng.shuffle([...batch]) : batch;
      for (const write of reported) write.done();
      this.maybeStartSync();
    });
  }

  crash(): void {
    this.epoch++;
    // A reservation being written may or may not have reached the disk.
    if (this.rng.chance(0.5)) this.durableReservation = this.pendingReservation;
    this.pendingReservation = this.durableReservation;
    const unsynced = [...(this.syncing ?? []), ...this.pending];
    this.syncing = null;
    this.pending = [];
    const bySector = new Map<number, SectorState[]>();
    for (const write of unsynced) {
      const list = bySector.get(write.sectorIndex);
      if (list === undefined) bySector.set(write.sectorIndex, [write.state]);
      else list.push(write.state);
    }
    for (const [sectorIndex, states] of bySector) {
      // Writes of one sector reach the platter in order; the crash cuts that sequence anywhere.
      const reached = this.rng.int(states.length + 1);
      if (reached > 0) this.durable.set(sectorIndex, states[reached - 1]!);
    }
    this.latest.clear();
    for (const [sectorIndex, state] of this.durable) this.latest.set(sectorIndex, state);
  }

  recoveryCounters(): { droppedEntries: number; tornWriteCrashes: number } {
    // This model has no entries to tear: a crash leaves each sector whole, old or new.
    return { droppedEntries: 0, tornWriteCrashes: 0 };
  }

  takeSettleNeeded(): boolean {
    return false;
  }

  recover(done: () => void): void {
    const epoch = this.epoch;
    this.queue.after(this.rng.range(0, this.timing.loadMaxUs), () => {
      if (epoch === this.epoch) done();
    });
  }
}
