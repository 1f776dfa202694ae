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

export class CoreHarness {
  readonly cores: RegisterCore[] = [];
  readonly disks: Map<number, SectorState>[] = [];
  network: InFlight[] = [];
  persists: PendingPersist[] = [];
  /** Loads asked for; `tagOnly` for loadTag effects (answered with the tag alone). */
  loads: { rank: number; sectorIndex: number; tagOnly?: true }[] = [];
  readonly completed = new Map<number, Buffer | undefined>();
  readonly log: { rank: number; effect: CoreEffect }[] = [];
  #opCounter = 0;

  constructor(
    readonly replicaCount: number,
    options: { faults?: CoreFaults; cacheCapacitySectors?: number } = {},
  ) {
    for (let rank = 1; rank <= replicaCount; rank++) {
      this.cores.push(
        new RegisterCore({
          rank,
          replicaCount,
          newOpId: () => {
            const id = Buffer.alloc(16);
            id.writeUInt32BE(rank, 0);
            id.writeUInt32BE(++this.#opCounter, 12);
            return id;
          },
          faults: options.faults,
          cacheCapacitySectors: options.cacheCapacitySectors,
        }),
      );
      this.disks.push(new Map());
    }
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
        case "complete":
          this.completed.set(effect.token, effect.data);
          break;
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
          kind: "tagLoaded",
          sectorIndex: load.sectorIndex,
          tag: { ts: state.ts, wr: state.wr },
        });
      } else {
        this.step(load.rank, { kind: "loaded", sectorIndex: load.sectorIndex, state });
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
        this.serveLoads() + this.syncPersists() + this.deliver((m) => !down.has(m.to) && !down.has(m.from));
      if (moved === 0) return;
    }
    throw new Error("harness did not settle");
  }
}

export function sectorOf(byte: number): Buffer {
  return Buffer.alloc(4096, byte);
}
