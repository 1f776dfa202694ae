import { describe, expect, it } from "vitest";
import { runSimulation } from "../../src/sim/simulation.js";

// Seeds on which the simulator caught the real core misbehaving. Each stays here as a regression
// test; `it.fails` marks a bug that is still open (when it is fixed, `it.fails` itself fails:
// turn it into `it`).
describe("bugs the simulator found in the real core", () => {
  // Seed 50743, N=3, disk model, tiny core cache. A WRITE's query phase at r1 stalled behind a
  // partition while a concurrent WRITE (r2, tag 13.2) completed and r1 ACKed it durably. When r1's
  // query finally reached its majority, its highest VALUE was still the old 12.3 it had collected
  // before, so r1 picked tag 13.1 and persisted it as its own write, overwriting the durable 13.2
  // on its disk (its memory kept 13.2). After an eviction r1 reloaded 13.1: the ACKed 13.2 was
  // lost at r1 and readers saw v41 (13.1), then v42 (13.2) again: a new-old-new inversion. A crash
  // instead of the eviction loses it the same way. Fix: derive the new tag from
  // max(query maximum, this replica's issued tag) + 1, and never persist a tag below issuedTag.
  it("seed 50743 (N=3): a coordinator's own write must not overwrite a newer durable tag", async () => {
    const result = await runSimulation({ seed: 50743, steps: 3000, replicaCount: 3, storage: "model" });
    expect(result.ok, result.violation?.message).toBe(true);
  });

  // Seed 100795, N=3, disk model: the same bug. r1's WRITE (v80) collected VALUEs 31.3 (r2) and
  // its own older state, while r1 had meanwhile stored and ACKed 33.3 (v83, a completed write);
  // r1 persisted its own 32.1 over 33.3, so v83 survived only at r3, and the next write (v84)
  // picked 33.2 < 33.3: a read after v84 completed returned v83.
  it("seed 100795 (N=3): a completed write must not be lost to a stale coordinator's tag", async () => {
    const result = await runSimulation({ seed: 100795, steps: 3000, replicaCount: 3, storage: "model" });
    expect(result.ok, result.violation?.message).toBe(true);
  });
});
