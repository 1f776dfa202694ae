import { describe, expect, it } from "vitest";
import { runSimulation, type StorageMode } from "../../src/sim/simulation.js";

// Bugs the simulator caught in the real core, kept as regression tests. A seed names one run of
// one version of the simulator: when the simulator changes how it draws, a seed may stop hitting
// the old scenario, so each case lists the seeds that reproduced it at the time of writing.
describe("bugs the simulator found in the real core (fixed)", () => {
  // Stale tag from a slow query (first seen at seeds 50743 and 100795 of an earlier simulator;
  // fixed in 71852d1). A WRITE's query at r1 stalled behind a partition while a concurrent WRITE
  // (r2, tag 13.2) completed and r1 stored and ACKed 13.2 durably. When r1's query finally reached
  // a majority, its highest VALUE was the old 12.3 it had collected before, so r1 picked tag 13.1
  // and persisted it as its own write over the durable 13.2 on its disk. After an eviction or a
  // crash r1 served 13.1: the ACKed 13.2 was gone at r1, and readers saw v41 (13.1), then v42
  // (13.2) again, or a completed write vanished. Fix: new tag above max(query maximum, own issued
  // tag), and persists of a sector must rise in tag order (asserted).
  const witnesses: { seed: number; storage: StorageMode }[] = [
    { seed: 200518, storage: "slots" },
    { seed: 200635, storage: "model" },
    { seed: 201070, storage: "slots" },
  ];
  for (const { seed, storage } of witnesses) {
    it(`seed ${seed} (N=3, ${storage}): a coordinator's own write never overwrites a newer durable tag`, async () => {
      const result = await runSimulation({ seed, steps: 6000, replicaCount: 3, storage });
      expect(result.ok, result.violation?.message).toBe(true);
    });
  }
});
