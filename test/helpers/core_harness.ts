// A tiny, fully controlled world for unit tests of the register core: N cores, an explicit
// message queue the test delivers (or drops) by hand, and stores whose persists become durable
// only when the test says so. The simulator in src/sim does the same with seeded faults.

import type { SystemMessage } from "../../src/protocol/messages.js";
import type { CoreEffect, CoreEvent, CoreFaults } from "../../src/register/core_types.js";
import { RegisterCore } from "../../src/register/register_core.js";
import { initialSectorState, type SectorState } from "../../src/storage/sector_state.js";
import type { PersistItem } from "../../src/storage/sector_store.js";

export interface InFlight {
  from: number;
  to: number;
  message: SystemMessage;
}

export interface PendingPersist {
  rank: number;
  token: number;
  /** The states of one persist effect: durable together when the test syncs it. */
  items: PersistItem[];
}

export interface HarnessOptions {
  faults?: CoreFaults;
  cacheCapacitySectors?: number;
  /** Leave tag reservations pending until the test calls syncReservations (default: granted at once). */
  manualReservations?: boolean;
}

export class CoreHarness {
  readonly cores: RegisterCore[] = [];
  readonly disks: Map<number, SectorState>[] = [];
  network: InFlight[] = [];
  persists: PendingPersist[] = [];
  /** Loads asked for; `tagOnly` for loadTag effects (answered with the tag alone). */
  loads: { rank: number; sectorIndex: number; tagOnly?: true }[] = [];
  readonly completed = new Map<number, Buffer | undefined>();
  readonly log: { rank: number; effect: CoreEffect }[] = [];
  /** Per rank: the durable tag reservation (rule 2), and reservations asked for, not yet durable. */
  readonly reserved: bigint[] = [];
  reservations: { rank: number; upToTs: bigint }[] = [];
  #opCounter = 0;
  #granting = false;
  readonly #options: HarnessOptions;

  constructor(
    readonly replicaCount: number,
    options: HarnessOptions = {},
  ) {
    this.#options = options;
    for (let rank = 1; rank <= replicaCount; rank++) {
      this.reserved.push(0n);
      this.cores.push(this.#newCore(rank));
      this.disks.push(new Map());
    }
  }

  #newCore(rank: number): RegisterCore {
    return new RegisterCore({
      rank,
      replicaCount: this.replicaCount,
      newOpId: () => {
        const id = Buffer.alloc(16);
        id.writeUInt32BE(rank, 0);
        id.writeUInt32BE(++this.#opCounter, 12);
        return id;
      },
      faults: this.#options.faults,
      cacheCapacitySectors: this.#options.cacheCapacitySectors,
      tagFloor: this.reserved[rank - 1],
    });
  }

  /**
   * A crash and restart of `rank`: what was not durable is gone (its pending persists and
   * reservations, and every message to it), and a new core starts from its disk and the durable
   * tag reservation.
   */
  restart(rank: number): void {
    this.persists = this.persists.filter((p) => p.rank !== rank);
    this.reservations = this.reservations.filter((r) => r.rank !== rank);
    this.loads = this.loads.filter((l) => l.rank !== rank);
    this.network = this.network.filter((m) => m.to !== rank);
    this.cores[rank - 1] = this.#newCore(rank);
  }

  /** Makes pending tag reservations (optionally of one rank) durable and reports them. */
  syncReservations(rank?: number): number {
    const now = this.reservations.filter((r) => rank === undefined || r.rank === rank);
    this.reservations = this.reservations.filter((r) => !(rank === undefined || r.rank === rank));
    for (const r of now) {
      if (r.upToTs > this.reserved[r.rank - 1]!) this.reserved[r.rank - 1] = r.upToTs;
      this.step(r.rank, { kind: "tagsReserved", upToTs: r.upToTs });
    }
    return now.length;
  }

  core(rank: number): RegisterCore {
    return this.cores[rank - 1]!;
  }

  step(rank: number, event: CoreEvent): CoreEffect[] {
    const effects = this.core(rank).step(event);
    for (const effect of effects) {
      this.log.push({ rank, effect });
      switch (effect.kind) {
        case "send":
          this.network.push({ from: rank, to: effect.to, message: effect.message });
          break;
        case "persist":
          this.persists.push({ rank, token: effect.token, items: effect.items });
          break;
        case "load":
          this.loads.push({ rank, sectorIndex: effect.sectorIndex });
          break;
        case "loadTag":
          this.loads.push({ rank, sectorIndex: effect.sectorIndex, tagOnly: true });
          break;
        case "reserveTags":
          this.reservations.push({ rank, upToTs: effect.upToTs });
          break;
        case "complete":
          this.completed.set(effect.token, effect.data);
          break;
      }
    }
    // Reservations are rare and not what most tests look at: granted at once unless asked not to.
    if (!this.#options.manualReservations && this.reservations.length > 0 && !this.#granting) {
      this.#granting = true;
      try {
        this.syncReservations();
      } finally {
        this.#granting = false;
      }
    }
    return effects;
  }

  read(rank: number, token: number, sectorIndex: number): void {
    this.step(rank, { kind: "clientRead", token, sectorIndex });
  }

  write(rank: number, token: number, sectorIndex: number, data: Buffer): void {
    this.step(rank, { kind: "clientWrite", token, sectorIndex, data });
  }

  /** Answers every pending load from the disks. */
  serveLoads(): number {
    const loads = this.loads;
    this.loads = [];
    for (const load of loads) {
      const state = this.disks[load.rank - 1]!.get(load.sectorIndex) ?? initialSectorState();
      if (load.tagOnly) {
        this.step(load.rank, {
          kind: "tagsLoaded",
          sectorIndexes: [load.sectorIndex],
          tags: [{ ts: state.ts, wr: state.wr }],
        });
      } else {
        this.step(load.rank, { kind: "loadedMany", sectorIndexes: [load.sectorIndex], states: [state] });
      }
    }
    return loads.length;
  }

  /** Makes every pending persist (optionally only of one rank) durable and reports it. */
  syncPersists(rank?: number): number {
    const now = this.persists.filter((p) => rank === undefined || p.rank === rank);
    this.persists = this.persists.filter((p) => !(rank === undefined || p.rank === rank));
    for (const p of now) {
      for (const { sectorIndex, state } of p.items) this.disks[p.rank - 1]!.set(sectorIndex, state);
      this.step(p.rank, { kind: "persisted", token: p.token });
    }
    return now.length;
  }

  /** Delivers queued messages accepted by `filter` (others stay queued); returns how many. */
  deliver(filter: (m: InFlight) => boolean = () => true): number {
    const now = this.network.filter(filter);
    this.network = this.network.filter((m) => !filter(m));
    for (const m of now) this.step(m.to, { kind: "message", message: m.message });
    return now.length;
  }

  /** Runs loads, persists and deliveries until nothing moves, skipping messages to/from `down`. */
  settle(down: Set<number> = new Set(), maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      const moved =
        this.serveLoads() +
        this.syncPersists() +
        this.syncReservations() +
        this.deliver((m) => !down.has(m.to) && !down.has(m.from));
      if (moved === 0) return;
    }
    throw new Error("harness did not settle");
  }
}

export function sectorOf(byte: number): Buffer {
  return Buffer.alloc(4096, byte);
}

/** The sectors of sectorOf(b) for each byte, back to back: a run's data. */
export function run(...bytes: number[]): Buffer {
  return Buffer.concat(bytes.map(sectorOf));
}

/** A client write of `data` (whole sectors) from `start`, at replica `rank`. */
export function writeRange(h: CoreHarness, rank: number, token: number, start: number, data: Buffer): void {
  h.step(rank, { kind: "clientWrite", token, sectorIndex: start, sectorCount: data.length / 4096, data });
}

/** A client read of `count` sectors from `start`, at replica `rank`. */
export function readRange(h: CoreHarness, rank: number, token: number, start: number, count: number): void {
  h.step(rank, { kind: "clientRead", token, sectorIndex: start, sectorCount: count });
}

/** Single-sector client reads that reach replica `rank` together (rule 8): [token, sector] each. */
export function readBatch(h: CoreHarness, rank: number, reads: [token: number, sector: number][]): void {
  h.step(rank, {
    kind: "clientBatch",
    ops: reads.map(([token, sectorIndex]) => ({ kind: "read", token, sectorIndex })),
  });
}

/** Single-sector client writes that reach replica `rank` together: [token, sector, fill byte] each. */
export function writeBatch(
  h: CoreHarness,
  rank: number,
  writes: [token: number, sector: number, fill: number][],
): void {
  h.step(rank, {
    kind: "clientBatch",
    ops: writes.map(([token, sectorIndex, fill]) => ({
      kind: "write",
      token,
      sectorIndex,
      data: sectorOf(fill),
    })),
  });
}
