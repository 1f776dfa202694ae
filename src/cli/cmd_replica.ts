// `atomic-disk replica`: one replica process; SIGTERM/SIGINT close it cleanly.
import type { CommandModule } from "yargs";
import { type RunningReplica, startReplica } from "../net/replica_server.js";
import { AtomicDiskError } from "../util/errors.js";
import { componentLogger } from "../util/log.js";
import { type ActivityLogArgs, activityLogMs, withActivityLogOption } from "./activity_option.js";
import { stopWhenParentExits } from "./child_processes.js";
import { guarded } from "./cli_errors.js";
import { loadClusterConfig } from "./config.js";

interface ReplicaArgs extends ActivityLogArgs {
  config: string;
  rank: number;
  data: string;
  "listen-host"?: string;
}

export const replicaCommand: CommandModule<object, ReplicaArgs> = {
  command: "replica",
  describe: "Run one replica",
  builder: (y) =>
    withActivityLogOption(y)
      .option("config", { type: "string", demandOption: true, describe: "cluster file" })
      .option("rank", { type: "number", demandOption: true, describe: "this replica's rank (1-based)" })
      .option("data", { type: "string", demandOption: true, describe: "data directory (created if missing)" })
      .option("listen-host", {
        type: "string",
        describe: "bind address instead of the config's host (e.g. 0.0.0.0 in a container)",
      }),
  handler: guarded(async (args: ReplicaArgs) => {
    const config = loadClusterConfig(args.config);
    const rank = args.rank;
    if (!Number.isInteger(rank) || rank < 1 || rank > config.replicas.length) {
      throw new AtomicDiskError(
        "CONFIG_INVALID",
        `--rank must be in 1..${config.replicas.length}, got ${rank}`,
      );
    }
    const activityMs = activityLogMs(args);
    const logger = componentLogger("replica", { rank });
    // Handlers go in before the listener opens: a SIGTERM that lands while the replica starts
    // (a supervisor that saw the port open) must still stop it cleanly, lock file released.
    let replica: RunningReplica | undefined;
    let stopRequested = false;
    const stop = (signal: string) => {
      if (stopRequested) return;
      stopRequested = true;
      logger.info({ signal }, "stopping");
      if (replica !== undefined) closeAndExit(replica);
    };
    const closeAndExit = (running: RunningReplica) => {
      running.close().then(
        () => process.exit(0),
        (err) => {
          logger.error({ err }, "unclean stop");
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    stopWhenParentExits(stop);
    replica = await startReplica({
      config,
      rank,
      dataDir: args.data,
      logger,
      activityLogMs: activityMs,
      ...(args["listen-host"] !== undefined ? { listenHost: args["listen-host"] } : {}),
    });
    if (stopRequested) closeAndExit(replica);
  }),
};
