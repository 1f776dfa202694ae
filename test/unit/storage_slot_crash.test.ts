// Crash at every I/O operation of a scenario (over the simulated disk, with and without torn
// writes), and at every operation of the recovery after a crash, then recover: every sector must
// be one of the states persisted to it, at least as new as the last acknowledged one, and the
// recovered store must keep exactly that across further writes and reopens. Run at commit depths
// 1, 2 and 3 (with syncs slow enough that batches overlap: several are in flight at many of the
// crashes), each case recovered by a store of some depth, often not the one that wrote the file.
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
import { silentLogger, turns } from "./storage_test_support.js";

const SINGLES = [0, 1, 2, 3, 2 ** 33];
/** A run that crosses a group boundary (64 slots) when it is written in one go. */
const RUN = range(100, 70);
const DEPTHS = [1, 2, 3];

/**
 * Concurrent and sequential persists (one sector twice in a batch, and in two batches in flight),
 * a run larger than a batch (persistMany spanning batches), overwrites that free slots and later
 * batches that reuse them, and a file that grows (by `growthSlots` ahead, or slot by slot when 0)
 * across meta pages. Calls are issued a turn apart without waiting for the earlier ones, so a
 * store of depth > 1 writes them while earlier batches sync.
 */
function scenario(growthSlots: number, commitDepth: number): Scenario {
  return async (fs, h) => {
    const [a, b, c, d, e] = SINGLES as [number, number, number, number, number];
    const store = await SlotStore.open({
      fs,
      dir: DIR,
      logger: silentLogger,
      maxBatchSectors: 32,
      growthSlots,
      commitDepth,
    });
    h.store = store;
    const inFlight: Promise<void>[] = [];
    const issue = async (...calls: Promise<void>[]) => {
      inFlight.push(...calls);
      await turns(1);
    };
    await Promise.all([persist(store, h, a, 1), persist(store, h, b, 1), persist(store, h, c, 1)]);
    await issue(persist(store, h, a, 2));
    await issue(persist(store, h, d, 1), persist(store, h, a, 3));
    await issue(persistMany(store, h, RUN, 1));
    await issue(persistMany(store, h, RUN.slice(0, 40), 2), persist(store, h, b, 2), persist(store, h, e, 1));
    await Promise.all(inFlight);
    await persist(store, h, c, 2);
    await issue(persistMany(store, h, RUN.slice(20), 3));
    await issue(persist(store, h, a, 4));
    await issue(persist(store, h, e, 2), persist(store, h, c, 3));
    await Promise.all(inFlight);
    await store.close();
  };
}

const workload = (growthSlots: number, depth: number): Workload => ({
  scenario: scenario(growthSlots, depth),
  sectors: [...SINGLES, ...RUN],
  maxVersion: 6,
  slowSyncs: true,
});

/** The depth of the store recovering case k: every combination of writer and recoverer occurs. */
const reopenDepth = (k: number, depth: number) => DEPTHS[(k + depth) % DEPTHS.length]!;

describe("SlotStore crash consistency (simulated disk)", () => {
  for (const depth of DEPTHS) {
    for (const growthSlots of [0, 64]) {
      const how = `commit depth ${depth}, file growing ${growthSlots === 0 ? "slot by slot" : `${growthSlots} slots ahead`}`;

      it(`(${how}) after a crash at every I/O operation, with and without torn writes, every sector is an old or new state and every acknowledged persist survives, recovered at any depth`, async () => {
        const w = workload(growthSlots, depth);
        const total = await countOperations(w, 1);
        expect(total).toBeGreaterThan(40);
        let crashes = 0;
        /** Crashes with this many batches in flight. */
        const inFlight = new Map<number, number>();
        for (let k = 1; k <= total; k++) {
          for (const tornWrites of [false, true]) {
            const seed = k * 7 + (tornWrites ? 1 : 0);
            const result = await runCase(w, {
              crashAt: k,
              seed,
              tornWrites,
              reopenDepth: reopenDepth(k, depth),
            });
            if (!result.crashed) continue;
            crashes++;
            inFlight.set(result.inFlightAtCrash, (inFlight.get(result.inFlightAtCrash) ?? 0) + 1);
          }
        }
        // The seed changes completion order, hence the operation count, a little.
        expect(crashes).toBeGreaterThan(1.8 * total);
        // Never more than `depth` batches in flight; with depth > 1, many crashes hit a full pipeline.
        expect(Math.max(...inFlight.keys())).toBe(depth);
        expect(inFlight.get(depth) ?? 0).toBeGreaterThan(crashes / 10);
      });

      it(`(${how}) survives a second crash during recovery, at every I/O operation of the recovery, by a store of any depth`, async () => {
        const w = workload(growthSlots, depth);
        const total = await countOperations(w, 1);
        let recoveryCrashes = 0;
        for (let k = 2; k <= total; k += 8) {
          for (let j = 1; j <= 16; j++) {
            // Every depth recovers: one below the writer's must settle the writer's window before
            // it records its own (a crash in between must not shrink the window).
            for (const reopen of DEPTHS) {
              const options = {
                crashAt: k,
                seed: k * 31 + j,
                tornWrites: true,
                recoveryCrashAt: j,
                reopenDepth: reopen,
              };
              if ((await runCase(w, options)).recoveryCrashed) recoveryCrashes++;
            }
          }
        }
        // Most of the 16 land inside the recovery (it takes about a dozen operations).
        expect(recoveryCrashes).toBeGreaterThan((DEPTHS.length * total) / 8);
      });
    }
  }
});
