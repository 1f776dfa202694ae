// `atomic-disk sim` replays one seed of the deterministic simulator exactly; `atomic-disk sim-soak`
// runs many seeds across N = 1, 3, 5. Both exit 1 on a violation and print how to replay it.
import type { CommandModule } from "yargs";
import { runSeeds } from "../sim/run_seeds.js";
import { CORE_FAULT_NAMES, type CoreFaultName, runSimulation, type SimResult } from "../sim/simulation.js";
import { guarded } from "./cli_errors.js";

interface SimArgs {
  seed: number;
  steps: number;
  replicas: number;
  faults: "all" | "none";
  storage: "model" | "slots";
  variant?: string;
  verbose: boolean;
}

interface SoakArgs {
  seeds: number;
  start: number;
  steps: number;
  variant?: string;
}

function parseVariant(variant: string | undefined): CoreFaultName | undefined {
  if (variant === undefined) return undefined;
  if (!(CORE_FAULT_NAMES as readonly string[]).includes(variant)) {
    throw new Error(`--variant must be one of ${CORE_FAULT_NAMES.join(", ")}`);
  }
  return variant as CoreFaultName;
}

function summaryLine(result: SimResult): string {
  const o = result.options;
  const s = result.stats;
  const head = `seed ${o.seed} N=${o.replicaCount} steps ${o.steps} storage ${o.storage ?? "model"}${o.variant ? ` variant ${o.variant}` : ""}`;
  const body =
    `${s.ops} ops (${s.answered} answered, ${s.unanswered} unanswered), ${s.crashes} crashes, ` +
    `${s.messages} messages (${s.dropped} dropped, ${s.duplicated} duplicated), ` +
    `${s.events} events, sim time ${(s.simTimeMs / 1000).toFixed(1)} s`;
  return `${head}: ${result.ok ? "OK" : `VIOLATION (${result.violation!.kind})`}; ${body}; digest ${result.digest}`;
}

function printViolation(result: SimResult): void {
  const v = result.violation!;
  console.log(`${v.kind} violation: ${v.message}`);
  if (result.traceTail.length > 0) {
    console.log("last events:");
    for (const line of result.traceTail) console.log(`  ${line}`);
  }
  console.log(`replay: ${result.replay}`);
  const o = result.options;
  if ((o.storage ?? "model") === "slots" && o.variant === undefined && (o.faults ?? "all") === "all") {
    console.log(`    or: make sim SEED=${o.seed} STEPS=${o.steps} REPLICAS=${o.replicaCount}`);
  }
}

export const simCommand: CommandModule<object, SimArgs> = {
  command: "sim",
  describe: "run one seed of the deterministic simulator (same seed, same history, same digest)",
  builder: (y) =>
    y
      .option("seed", { type: "number", demandOption: true, describe: "the seed to run" })
      .option("steps", { type: "number", default: 4000, describe: "simulated events with faults" })
      .option("replicas", { type: "number", default: 3, describe: "replica count N" })
      .option("faults", { choices: ["all", "none"] as const, default: "all" as const })
      .option("storage", {
        choices: ["model", "slots"] as const,
        default: "slots" as const,
        describe: "disk model, or the real SlotStore (the replicas' store) over the simulated file system",
      })
      .option("variant", {
        type: "string",
        describe: `a deliberately broken core: ${CORE_FAULT_NAMES.join(", ")}`,
      })
      .option("verbose", { type: "boolean", default: false, describe: "print every event" }),
  handler: guarded(async (args: SimArgs) => {
    const variant = parseVariant(args.variant);
    const result = await runSimulation({
      seed: args.seed,
      steps: args.steps,
      replicaCount: args.replicas,
      faults: args.faults,
      storage: args.storage,
      ...(variant === undefined ? {} : { variant }),
      ...(args.verbose ? { log: (line: string) => console.log(line) } : {}),
    });
    console.log(summaryLine(result));
    if (!result.ok) {
      printViolation(result);
      process.exitCode = 1;
    }
  }),
};

export const simSoakCommand: CommandModule<object, SoakArgs> = {
  command: "sim-soak",
  describe: "run many simulator seeds across N = 1, 3, 5 with every fault enabled",
  builder: (y) =>
    y
      .option("seeds", { type: "number", default: 3000, describe: "how many seeds" })
      .option("start", { type: "number", default: 1, describe: "first seed" })
      .option("steps", { type: "number", default: 3000, describe: "simulated events with faults per seed" })
      .option("variant", { type: "string", describe: "a deliberately broken core (expect failures)" }),
  handler: guarded(async (args: SoakArgs) => {
    const variant = parseVariant(args.variant);
    const progressEvery = Math.max(1, Math.floor(args.seeds / 20));
    const summary = await runSeeds({
      start: args.start,
      count: args.seeds,
      steps: args.steps,
      ...(variant === undefined ? {} : { variant }),
      onResult: (result, index) => {
        if (!result.ok) {
          console.log(summaryLine(result));
          console.log(`  ${result.violation!.message.split("\n")[0]}`);
          console.log(`  replay: ${result.replay}`);
        }
        if ((index + 1) % progressEvery === 0) console.log(`... ${index + 1}/${args.seeds} seeds`);
      },
    });
    console.log(
      `sim-soak: ${summary.runs} seeds from ${args.start}, ${summary.failures.length} failed, ` +
        `${(summary.elapsedMs / 1000).toFixed(1)} s (${summary.seedsPerSecond.toFixed(1)} seeds/s)`,
    );
    if (summary.failures.length > 0) process.exitCode = 1;
  }),
};
