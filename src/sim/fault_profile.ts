// How harsh one run is. Each seed draws its own mix ("swarm testing"): some runs hammer one kind
// of fault, others mix them all, which finds more bugs than one fixed average mix.

import type { Prng } from "./prng.js";
import type { DiskTiming } from "./sim_disk.js";
import type { NetworkFaults } from "./sim_network.js";

export type FaultMode = "all" | "none";

export interface FaultProfile {
  network: NetworkFaults;
  disk: DiskTiming;
  /** Per simulated event: chance to crash a random live replica. */
  crashPerStep: number;
  restartMinUs: number;
  restartMaxUs: number;
  /** Per persist: chance to crash that replica a little later (before or after it is durable). */
  crashAfterPersist: number;
  /** Per step of a core: chance to crash part-way through carrying out its effects. */
  crashMidStep: number;
  /**
   * Per update message (WRITE_PROC / WRITE_RANGE_PROC) a coordinator sends: chance to crash it a
   * little later, often before its own copy is durable (the window register core rule 2 covers).
   */
  crashAfterUpdate: number;
  /** Per simulated event: chance to partition the replicas (when not partitioned). */
  partitionPerStep: number;
  partitionMinUs: number;
  partitionMaxUs: number;
  selfDelayMaxUs: number;
  /** Core tuning: a tiny sector cache forces evictions and reloads; short retransmits overlap. */
  coreCacheSectors: number | undefined;
  retransmitInitialMs: number | undefined;
  /** Torn writes when the real slot store runs (its checksums must catch them). */
  tornWrites: boolean;
}

export function quietProfile(): FaultProfile {
  return {
    network: {
      dropProbability: 0,
      duplicateProbability: 0,
      delayMinUs: 100,
      delayMaxUs: 2_000,
      longDelayProbability: 0,
      longDelayMaxUs: 0,
    },
    disk: { syncMinUs: 50, syncMaxUs: 2_000, loadMaxUs: 200 },
    crashPerStep: 0,
    restartMinUs: 10_000,
    restartMaxUs: 100_000,
    crashAfterPersist: 0,
    crashMidStep: 0,
    crashAfterUpdate: 0,
    partitionPerStep: 0,
    partitionMinUs: 0,
    partitionMaxUs: 0,
    selfDelayMaxUs: 500,
    coreCacheSectors: undefined,
    retransmitInitialMs: undefined,
    tornWrites: false,
  };
}

export function drawProfile(rng: Prng, mode: FaultMode): FaultProfile {
  const quiet = quietProfile();
  if (mode === "none") return quiet;
  const delayMaxUs = rng.pick([1_000, 5_000, 20_000]);
  return {
    network: {
      dropProbability: rng.pick([0, 0.01, 0.05, 0.2]),
      duplicateProbability: rng.pick([0, 0.02, 0.1, 0.4]),
      delayMinUs: rng.pick([50, 500]),
      delayMaxUs,
      longDelayProbability: rng.pick([0, 0.02, 0.1]),
      longDelayMaxUs: rng.pick([50_000, 300_000]),
    },
    disk: {
      syncMinUs: rng.pick([10, 500]),
      syncMaxUs: rng.pick([1_000, 5_000, 30_000]),
      loadMaxUs: rng.pick([10, 1_000, 5_000]),
    },
    crashPerStep: rng.pick([0, 0.0005, 0.002, 0.006]),
    restartMinUs: 1_000,
    restartMaxUs: rng.pick([50_000, 500_000, 2_000_000]),
    crashAfterPersist: rng.pick([0, 0.005, 0.03]),
    crashMidStep: rng.pick([0, 0.001, 0.005]),
    partitionPerStep: rng.pick([0, 0.001, 0.004]),
    partitionMinUs: 10_000,
    partitionMaxUs: rng.pick([200_000, 1_000_000, 3_000_000]),
    selfDelayMaxUs: rng.pick([100, delayMaxUs]),
    coreCacheSectors: rng.pick([undefined, 1, 2]),
    retransmitInitialMs: rng.pick([undefined, 20]),
    tornWrites: rng.chance(0.5),
    // Drawn last, so that the draws above stay what they were before it existed.
    crashAfterUpdate: rng.pick([0, 0.01, 0.05]),
  };
}
