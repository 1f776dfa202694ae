// Many seeds in a row (the test suite and `atomic-disk sim-soak`). Seed i picks its replica count
// and storage from i itself, so every failure is replayed by the one command it prints.
import type { FaultMode } from "./fault_profile.js";
import {
  type CoreFaultName,
  runSimulation,
  type SimOptions,
  type SimResult,
  type StorageMode,
} from "./simulation.js";

export interface SeedPlan {
  start: number;
  count: number;
  steps: number;
  replicaCounts?: readonly number[];
  /** "mixed": alternate the disk model and the real slot store between seeds. */
  storage?: StorageMode | "mixed";
  faults?: FaultMode;
  variant?: CoreFaultName;
  /** Stop at the first violation (to measure how fast a broken core is caught). */
  stopOnFirst?: boolean;
  onResult?: (result: SimResult, index: number) => void;
}

export interface SeedSummary {
  runs: number;
  failures: SimResult[];
  elapsedMs: number;
  seedsPerSecond: number;
}

export function optionsForSeed(plan: SeedPlan, seed: number): SimOptions {
  const counts = plan.replicaCounts ?? [1, 3, 5];
  const storage = plan.storage ?? "mixed";
  const options: SimOptions = {
    seed,
    steps: plan.steps,
    replicaCount: counts[seed % counts.length]!,
    storage: storage === "mixed" ? (Math.floor(seed / counts.length) % 2 === 0 ? "model" : "slots") : storage,
    faults: plan.faults ?? "all",
  };
  if (plan.variant !== undefined) options.variant = plan.variant;
  return options;
}

export async function runSeeds(plan: SeedPlan): Promise<SeedSummary> {
  const started = performance.now();
  const failures: SimResult[] = [];
  let runs = 0;
  for (let i = 0; i < plan.count; i++) {
    const result = await runSimulation(optionsForSeed(plan, plan.start + i));
    runs++;
    if (!result.ok) failures.push(result);
    plan.onResult?.(result, i);
    if (!result.ok && plan.stopOnFirst) break;
  }
  const elapsedMs = performance.now() - started;
  return { runs, failures, elapsedMs, seedsPerSecond: runs / Math.max(elapsedMs / 1000, 1e-9) };
}
