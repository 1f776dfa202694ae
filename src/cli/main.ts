#!/usr/bin/env -S node --initial-old-space-size=256
// The atomic-disk command line: one binary, one verb per role. Only the module of the verb being
// run is loaded (all of them for --help), so a replica starts without paying for the gateway,
// the simulator or the benchmark. The shebang carries SERVER_NODE_FLAGS (node_flags.ts; a unit
// test keeps the two equal).
import type { CommandModule } from "yargs";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { exitWithError } from "./cli_errors.js";
import { hasServerNodeFlags, SERVER_NODE_FLAGS } from "./node_flags.js";

// biome-ignore lint/suspicious/noExplicitAny: yargs command modules differ in their argument types.
type AnyCommand = CommandModule<object, any>;

const verbs: Record<string, () => Promise<AnyCommand>> = {
  init: async () => (await import("./cmd_init.js")).initCommand,
  replica: async () => (await import("./cmd_replica.js")).replicaCommand,
  nbd: async () => (await import("./cmd_nbd.js")).nbdCommand,
  dev: async () => (await import("./cmd_dev.js")).devCommand,
  status: async () => (await import("./cmd_status.js")).statusCommand,
  "bench-replicas": async () => (await import("./cmd_bench_replicas.js")).benchReplicasCommand,
  sim: async () => (await import("./cmd_sim.js")).simCommand,
  "sim-soak": async () => (await import("./cmd_sim.js")).simSoakCommand,
};

try {
  const args = hideBin(process.argv);
  const verb = args[0];
  const load = verb === undefined ? undefined : verbs[verb];
  if ((verb === "replica" || verb === "nbd") && !hasServerNodeFlags()) {
    process.stderr.write(
      `atomic-disk ${verb}: node was started without ${SERVER_NODE_FLAGS.join(" ")}; ` +
        "it works, with more garbage-collection CPU (run the atomic-disk script, or pass the flags to node)\n",
    );
  }
  const commands =
    load !== undefined ? [await load()] : await Promise.all(Object.values(verbs).map((l) => l()));
  let cli = yargs(args)
    .scriptName("atomic-disk")
    .strict()
    .demandCommand(1, "name a command (see --help)")
    .fail((message, err) => {
      exitWithError(err ?? new Error(message));
    })
    .help();
  for (const command of commands) cli = cli.command(command);
  await cli.parseAsync();
} catch (err) {
  exitWithError(err);
}
