import { describe, expect, it } from "vitest";
import { runSeeds } from "../../src/sim/run_seeds.js";
import { CORE_FAULT_NAMES, runSimulation } from "../../src/sim/simulation.js";

// Each deliberately broken core (RegisterCoreOptions.faults, test-only) must be caught within the
// seed budget the normal test run uses. These bugs need N >= 3 (with N = 1 the coordinator is the
// whole quorum, so none of them can lose anything), and some need duplicates or partitions, which
// each seed's fault mix turns on at random.
const SEED_BUDGET = 100;
const STEPS = 2000;

describe("broken variants of the core are caught", () => {
  for (const variant of CORE_FAULT_NAMES) {
    it(`catches ${variant} within ${SEED_BUDGET} seeds, and the same seed passes with the real core`, async () => {
      const summary = await runSeeds({
        start: 1,
        count: SEED_BUDGET,
        steps: STEPS,
        replicaCounts: [3, 5],
        variant,
        stopOnFirst: true,
      });
      expect(summary.failures.length, `${variant} was not caught in ${SEED_BUDGET} seeds`).toBe(1);
      const caught = summary.failures[0]!;
      expect(caught.violation!.kind).toBe("linearizability");
      expect(caught.replay).toContain(`--variant ${variant}`);
      const { variant: _broken, ...realCore } = caught.options;
      const control = await runSimulation(realCore);
      expect(control.ok, control.violation?.message).toBe(true);
    }, 120_000);
  }
});
