// Random workloads (batch limits, growth, commit depths 1-3, concurrent persists and runs of
// sectors, issued in waves that meet batches still syncing) over the simulated disk, crashed at a
// random I/O operation (sometimes again during recovery, mostly with torn writes) and recovered by a
// store of a random depth: every sector recovers to an old or new state, never older than
// acknowledged. STORAGE_FUZZ_SEEDS sets the seed count (default 300; a soak: STORAGE_FUZZ_SEEDS=20000).
import { describe, expect, it } from "vitest";
import { SlotStore } from "../../src/storage/slot_store.js";
import {
  countOperations,
  DIR,
  persist,
  persistMany,
  range,
  runCase,
  type Scenario,
  versionOf,
  type Workload,
} from "./storage_slot_crash_support.js";
import { seededRandom, silentLogger, turns } from "./storage_test_support.js";

const FUZZ_SECTORS = [0, 1, 2, 3, 5, 8, 13, 21, 2 ** 35, ...range(64, 80)];
const FUZZ_MAX_VERSION = 80;
const DEPTHS = [1, 2, 3];

function randomScenario(seed: number, commitDepth: number): Scenario {
  return async (fs, h) => {
    const random = seededRandom(seed ^ 0x5bd1e995);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const store = await SlotStore.open({
      fs,
      dir: DIR,
      logger: silentLogger,
      maxBatchSectors: pick([1, 2, 5, 16, 64]),
      growthSlots: pick([0, 1, 64, 130]),
      commitDepth,
    });
    h.store = store;
    const latest = new Map<number, number>();
    const next = (s: number) => {
      const v = (latest.get(s) ?? 0) + 1;
      latest.set(s, v);
      return v;
    };
    const rounds = 3 + Math.floor(random() * 6);
    for (let round = 0; round < rounds; round++) {
      const writes: Promise<void>[] = [];
      const n = 1 + Math.floor(random() * 5);
      for (let i = 0; i < n; i++) {
        if (random() < 0.3) {
          const run = range(64 + Math.floor(random() * 60), 1 + Math.floor(random() * 20));
          writes.push(persistMany(store, h, run, run.map(next)));
        } else {
          const sector = pick(FUZZ_SECTORS);
          writes.push(persist(store, h, sector, next(sector)));
          if (random() < 0.3) {
            // load serves the latest state, durable or not.
            expect(versionOf(sector, await store.load(sector), FUZZ_MAX_VERSION)).toBe(latest.get(sector));
          }
        }
        // The next calls of the round a turn or two later: batches of this round still sync.
        if (random() < 0.5) await turns(1 + Math.floor(random() * 2));
      }
      await Promise.all(writes);
    }
    if (random() < 0.5) await store.close();
  };
}

describe("SlotStore crash fuzz (simulated disk)", () => {
  it("random workloads crashed at random points recover to an old or new state of every sector", {
    timeout: 600_000,
  }, async () => {
    const workload = (seed: number, depth: number): Workload => ({
      scenario: randomScenario(seed, depth),
      sectors: FUZZ_SECTORS,
      maxVersion: FUZZ_MAX_VERSION,
      slowSyncs: true,
    });
    let crashed = 0;
    /** Crashes with at least two batches in flight, per depth. */
    const pipelined = new Map<number, number>();
    const seeds = Number(process.env.STORAGE_FUZZ_SEEDS ?? 300);
    for (let seed = 1; seed <= seeds; seed++) {
      const depth = DEPTHS[seed % DEPTHS.length]!;
      const w = workload(seed, depth);
      const total = await countOperations(w, seed);
      const pick = seededRandom(seed * 977);
      const crashAt = 1 + Math.floor(pick() * total);
      const recoveryCrashAt = pick() < 0.3 ? 1 + Math.floor(pick() * 20) : 0;
      const tornWrites = pick() < 0.7;
      const reopenDepth = DEPTHS[Math.floor(pick() * DEPTHS.length)]!;
      const result = await runCase(w, { crashAt, seed, tornWrites, recoveryCrashAt, reopenDepth });
      if (result.crashed) crashed++;
      expect(result.inFlightAtCrash).toBeLessThanOrEqual(depth);
      if (result.inFlightAtCrash >= 2) pipelined.set(depth, (pipelined.get(depth) ?? 0) + 1);
    }
    expect(crashed).toBeGreaterThan(seeds * 0.8);
    expect(pipelined.get(1) ?? 0).toBe(0);
    for (const depth of [2, 3]) expect(pipelined.get(depth) ?? 0).toBeGreaterThan(seeds / DEPTHS.length / 10);
  });
});
