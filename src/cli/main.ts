#!/usr/bin/env node
// The atomic-disk command line: one binary, one verb per role.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { exitWithError } from "./cli_errors.js";
import { benchReplicasCommand } from "./cmd_bench_replicas.js";
import { devCommand } from "./cmd_dev.js";
import { initCommand } from "./cmd_init.js";
import { nbdCommand } from "./cmd_nbd.js";
import { replicaCommand } from "./cmd_replica.js";

const cli = yargs(hideBin(process.argv))
  .scriptName("atomic-disk")
  .strict()
  .demandCommand(1, "name a command (see --help)")
  .command(initCommand)
  .command(replicaCommand)
  .command(nbdCommand)
  .command(devCommand)
  .command(benchReplicasCommand)
  .fail((message, err) => {
    exitWithError(err ?? new Error(message));
  })
  .help();

try {
  await cli.parseAsync();
} catch (err) {
  exitWithError(err);
}
