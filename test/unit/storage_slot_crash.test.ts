// Crash at every I/O operation of a scenario (over the simulated disk, with and without torn
// writes), and at every operation of the recovery after a crash, then recover: every sector must
// be one of the states persisted to it, at least as new as the last acknowledged one, and the
// recovered store must keep exactly that across further writes and reopens.
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
  type Workload,
} from "./storage_slot_crash_support.js";
import { silentLogger } from "./storage_test_support.js";

const SINGLES = [0, 1, 2, 3, 2 ** 33];
/** A run that crosses a group boundary (64 slots) when it is written in one go. */
const RUN = range(100, 70);

/**
 * Concurrent and sequential persists (one sector twice in a batch), a run larger than a batch
 * (persistMany spanning batches), overwrites that free slots and later batches that reuse them,
 * and a file that grows (by `growthSlots` ahead, or slot by slot when 0) across meta pages.
 */
function scenario(growthSlots: number): Scenario {
  return async (fs, h) => {
    const [a, b, c, d, e] = SINGLES as [number, number, number, number, number];
    const store = await SlotStore.open({
      fs,
      dir: DIR,
      logger: silentLogger,
      maxBatchSectors: 32,
      growthSlots,
    });
    await Promise.all([persist(store, h, a, 1), persist(store, h, b, 1), persist(store, h, c, 1)]);
    await Promise.all([persist(store, h, a, 2), persist(store, h, d, 1), persist(store, h, a, 3)]);
    await persistMany(store, h, RUN, 1);
    await Promise.all([
      persistMany(store, h, RUN.slice(0, 40), 2),
      persist(store, h, b, 2),
      persist(store, h, e, 1),
    ]);
    await persist(store, h, c, 2);
    await Promise.all([
      persistMany(store, h, RUN.slice(20), 3),
      persist(store, h, a, 4),
      persist(store, h, e, 2),
    ]);
    await store.close();
  };
}

const workload = (growthSlots: number): Workload => ({
  scenario: scenario(growthSlots),
  sectors: [...SINGLES, ...RUN],
  maxVersion: 6,
});

describe("SlotStore crash consistency (simulated disk)", () => {
  for (const growthSlots of [0, 64]) {
    const how = growthSlots === 0 ? "slot by slot" : `${growthSlots} slots ahead`;

    it(`(file growing ${how}) after a crash at every I/O operation, with and without torn writes, every sector is an old or new state and every acknowledged persist survives`, async () => {
      const total = await countOperations(workload(growthSlots), 1);
      expect(total).toBeGreaterThan(40);
      let crashes = 0;
      for (let k = 1; k <= total; k++) {
        for (const torn of [false, true]) {
          if ((await runCase(k, k * 7 + (torn ? 1 : 0), torn, workload(growthSlots))).crashed) crashes++;
        }
      }
      // The seed changes completion order, hence the operation count, a little.
      expect(crashes).toBeGreaterThan(1.8 * total);
    });

    it(`(file growing ${how}) survives a second crash during recovery, at every I/O operation of the recovery`, async () => {
      const total = await countOperations(workload(growthSlots), 1);
      let recoveryCrashes = 0;
      for (let k = 2; k <= total; k += 6) {
        for (let j = 1; j <= 16; j++) {
          if ((await runCase(k, k * 31 + j, true, workload(growthSlots), j)).recoveryCrashed)
            recoveryCrashes++;
        }
      }
      // Most of the 16 land inside the recovery (it takes about a dozen operations).
      expect(recoveryCrashes).toBeGreaterThan(total / 6);
    });
  }
});
