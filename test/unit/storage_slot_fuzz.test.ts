// Random workloads (batch limits, growth, concurrent persists and runs of sectors) over the
// simulated disk, crashed at a random I/O operation (sometimes again during recovery, mostly with
// torn writes): every sector recovers to an old or new state, never older than acknowledged.
// STORAGE_FUZZ_SEEDS sets the seed count (default 200; a soak: STORAGE_FUZZ_SEEDS=20000).
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
import { seededRandom, silentLogger } from "./storage_test_support.js";

const FUZZ_SECTORS = [0, 1, 2, 3, 5, 8, 13, 21, 2 ** 35, ...range(64, 80)];
const FUZZ_MAX_VERSION = 80;

function randomScenario(seed: number): Scenario {
  return async (fs, h) => {
    const random = seededRandom(seed ^ 0x5bd1e995);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const store = await SlotStore.open({
      fs,
      dir: DIR,
      logger: silentLogger,
      maxBatchSectors: pick([1, 2, 5, 16, 64]),
      growthSlots: pick([0, 1, 64, 130]),
    });
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
    const workload = (seed: number): Workload => ({
      scenario: randomScenario(seed),
      sectors: FUZZ_SECTORS,
      maxVersion: FUZZ_MAX_VERSION,
    });
    let crashed = 0;
    const seeds = Number(process.env.STORAGE_FUZZ_SEEDS ?? 200);
    for (let seed = 1; seed <= seeds; seed++) {
      const total = await countOperations(workload(seed), seed);
      const pick = seededRandom(seed * 977);
      const crashAt = 1 + Math.floor(pick() * total);
      const recoveryCrashAt = pick() < 0.3 ? 1 + Math.floor(pick() * 20) : 0;
      if ((await runCase(crashAt, seed, pick() < 0.7, workload(seed), recoveryCrashAt)).crashed) crashed++;
    }
    expect(crashed).toBeGreaterThan(seeds * 0.8);
  });
});
