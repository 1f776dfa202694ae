// `atomic-disk nbd`: the NBD gateway. Speaks NBD to clients (kernel nbd-client, qemu, libnbd) on
// TCP or a unix socket and the atdd client protocol to the replicas of the cluster file.
import type { CommandModule } from "yargs";
import { parseListenAddress } from "../nbd/listen_address.js";
import { ReplicaPool } from "../nbd/replica_pool.js";
import { NbdServer } from "../nbd/server.js";
import { startActivityLog } from "../util/activity_log.js";
import { AtomicDiskError } from "../util/errors.js";
import { NBD_REQUEST_TIMEOUT_MS } from "../util/limits.js";
import { componentLogger } from "../util/log.js";
import { type ActivityLogArgs, activityLogMs, withActivityLogOption } from "./activity_option.js";
import { stopWhenParentExits } from "./child_processes.js";
import { guarded } from "./cli_errors.js";
import { loadClusterConfig } from "./config.js";

/** Two connections per replica keep a replica busy while the other connection's replies are parsed. */
const DEFAULT_CONNECTIONS_PER_REPLICA = 2;

interface NbdArgs extends ActivityLogArgs {
  config: string;
  listen: string;
  export: string;
  "timeout-ms": number;
  "connections-per-replica": number;
}

export const nbdCommand: CommandModule<object, NbdArgs> = {
  command: "nbd",
  describe: "Run the NBD gateway in front of the cluster's replicas",
  builder: (y) =>
    withActivityLogOption(y)
      .option("config", { type: "string", demandOption: true, describe: "cluster file" })
      .option("listen", {
        type: "string",
        default: "127.0.0.1:10809",
        describe: "host:port or unix:/path/to.sock",
      })
      .option("export", { type: "string", default: "", describe: 'export name ("" also selects it)' })
      .option("timeout-ms", {
        type: "number",
        default: NBD_REQUEST_TIMEOUT_MS,
        describe: "a request not done by then fails with EIO (keep below nbd-client -t)",
      })
      .option("connections-per-replica", {
        type: "number",
        default: DEFAULT_CONNECTIONS_PER_REPLICA,
        describe: "TCP connections to each replica",
      }),
  handler: guarded(async (args: NbdArgs) => {
    const config = loadClusterConfig(args.config);
    const listen = parseListenAddress(args.listen);
    const timeoutMs = args["timeout-ms"];
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
      throw new AtomicDiskError(
        "CONFIG_INVALID",
        `--timeout-ms must be a positive integer, got ${timeoutMs}`,
      );
    }
    const connections = args["connections-per-replica"];
    if (!Number.isSafeInteger(connections) || connections < 1 || connections > 64) {
      throw new AtomicDiskError(
        "CONFIG_INVALID",
        `--connections-per-replica must be in 1..64, got ${connections}`,
      );
    }
    const activityMs = activityLogMs(args);
    const log = componentLogger("nbd");
    const pool = ReplicaPool.forCluster(config, connections);
    let server: NbdServer;
    try {
      server = await NbdServer.start({ backend: pool, listen, exportName: args.export, timeoutMs, log });
    } catch (err) {
      await pool.close();
      throw err;
    }
    // Listening first: clients may connect while replicas are still coming up (their requests wait).
    await pool.start();
    const activityLog =
      activityMs > 0
        ? startActivityLog({
            logger: log,
            intervalMs: activityMs,
            take: () => {
              const requests = server.activity.take();
              // Which replica answered how fast: a slow or overloaded one stands out.
              const replicas = pool.takeActivity();
              if (requests === null && replicas === undefined) return null;
              return { ...(requests ?? {}), replicas };
            },
          })
        : undefined;
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "stopping");
      activityLog?.stop();
      server.close().then(
        () => process.exit(0),
        (err) => {
          log.error({ err }, "unclean stop");
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    stopWhenParentExits(stop);
  }),
};
