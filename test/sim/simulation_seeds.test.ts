import { describe, expect, it } from "vitest";
import { runSeeds } from "../../src/sim/run_seeds.js";
import { runSimulation } from "../../src/sim/simulation.js";

// The real register core under every fault (crashes at any event, crashes right after persists,
// torn writes under the real slot store, drops, duplicates, reordering, partitions), a few
// hundred seeds across N = 1, 3, 5. The soak (`make sim-soak`) runs thousands.
const SEEDS_PER_N = 100;
const STEPS = 3000;

function report(failures: Awaited<ReturnType<typeof runSeeds>>["failures"]): string {
  return failures
    .map((f) => `${f.violation!.kind}: ${f.replay}\n${f.violation!.message.slice(0, 2000)}`)
    .join("\n\n");
}

describe("the real core under the simulator", () => {
  for (const n of [1, 3, 5]) {
    it(`passes ${SEEDS_PER_N} seeds with every fault enabled at N=${n} (model disk and slot store)`, async () => {
      const summary = await runSeeds({
        start: 10_000 * n,
        count: SEEDS_PER_N,
        steps: STEPS,
        replicaCounts: [n],
      });
      expect(summary.failures.length, report(summary.failures)).toBe(0);
      expect(summary.runs).toBe(SEEDS_PER_N);
    }, 120_000);
  }

  it("actually exercises the faults: crashes, lost operations, drops and duplicates happen", async () => {
    let crashes = 0;
    let unanswered = 0;
    let dropped = 0;
    let duplicated = 0;
    let multiSectorLoads = 0;
    await runSeeds({
      start: 1,
      count: 12,
      steps: STEPS,
      replicaCounts: [3],
      onResult: (r) => {
        crashes += r.stats.crashes;
        unanswered += r.stats.unanswered;
        dropped += r.stats.dropped;
        duplicated += r.stats.duplicated;
        multiSectorLoads += r.stats.multiSectorLoads;
      },
    });
    expect(crashes).toBeGreaterThan(10);
    // The loads of one core step answered together, as the production driver answers them.
    expect(multiSectorLoads).toBeGreaterThan(10);
    expect(unanswered).toBeGreaterThan(5);
    expect(dropped).toBeGreaterThan(50);
    expect(duplicated).toBeGreaterThan(10);
  }, 60_000);

  it("runs the real slot store through crashes with torn writes, and stays linearizable", async () => {
    let tornWriteCrashes = 0;
    const summary = await runSeeds({
      start: 700,
      count: 20,
      steps: STEPS,
      replicaCounts: [1, 3],
      storage: "slots",
      onResult: (r) => {
        tornWriteCrashes += r.stats.tornWriteCrashes;
      },
    });
    expect(summary.failures.length, report(summary.failures)).toBe(0);
    expect(tornWriteCrashes).toBeGreaterThan(10);
  }, 60_000);

  it("reports a liveness violation when operations stall after the faults stop", async () => {
    // Sabotaged simulator: the network keeps dropping everything in the quiet phase.
    const result = await runSimulation({
      seed: 3,
      steps: 300,
      replicaCount: 3,
      sabotage: "stallAfterFaults",
    });
    expect(result.ok).toBe(false);
    expect(result.violation!.kind).toBe("liveness");
  });

  it("completes every operation and gives every answer without faults", async () => {
    for (const n of [1, 3, 5]) {
      const result = await runSimulation({ seed: n, steps: 1500, replicaCount: n, faults: "none" });
      expect(result.ok, result.violation?.message).toBe(true);
      expect(result.stats.unanswered).toBe(0);
      expect(result.stats.crashes).toBe(0);
    }
  });
});
