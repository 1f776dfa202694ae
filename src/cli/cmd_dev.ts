// `atomic-disk dev`: a whole local cluster in one command — N replica child processes plus the
// NBD gateway child — for `make run`. Children are stopped by pid on SIGINT/SIGTERM, and stop
// themselves when dev dies any other way (stopWhenParentExits).
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { CommandModule } from "yargs";
import { AtomicDiskError } from "../util/errors.js";
import {
  freeLoopbackPorts,
  hasExited,
  replicaArgs,
  replicaLogPath,
  spawnCli,
  stopChild,
  waitListening,
} from "./child_processes.js";
import { guarded } from "./cli_errors.js";
import { DEFAULT_SECTORS } from "./cmd_init.js";
import { loadClusterConfig, newClusterConfigJson, parseHostPort } from "./config.js";

/** How long a fresh replica may take to accept connections before dev gives up. */
const DEV_START_TIMEOUT_MS = 15_000;

interface DevArgs {
  data: string;
  listen: string;
  replicas: number;
  sectors: number;
}

export const devCommand: CommandModule<object, DevArgs> = {
  command: "dev",
  describe: "Run a local cluster (replicas + NBD gateway) as child processes",
  builder: (y) =>
    y
      .option("data", { type: "string", demandOption: true, describe: "directory for config, data and logs" })
      .option("listen", { type: "string", default: "127.0.0.1:10809", describe: "NBD gateway address" })
      .option("replicas", { type: "number", default: 3, describe: "replicas in a new cluster" })
      .option("sectors", { type: "number", default: DEFAULT_SECTORS, describe: "sectors in a new cluster" }),
  handler: guarded(async (args: DevArgs) => {
    const dir = resolve(args.data);
    const listen = parseHostPort(args.listen, "--listen");
    try {
      mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new AtomicDiskError(
        "DATA_DIR_UNUSABLE",
        `cannot create ${dir}: ${(err as NodeJS.ErrnoException).code}`,
      );
    }
    const configPath = join(dir, "cluster.json");
    if (!existsSync(configPath)) {
      const ports = await freeLoopbackPorts(args.replicas);
      const json = newClusterConfigJson({
        replicas: ports.map((p) => `127.0.0.1:${p}`),
        sectors: args.sectors,
      });
      writeFileSync(configPath, `${JSON.stringify(json, null, 2)}\n`, { mode: 0o600 });
    }
    const config = loadClusterConfig(configPath);

    const children: ChildProcess[] = [];
    let stopping = false;
    const stopAll = async (code: number) => {
      if (stopping) return;
      stopping = true;
      await Promise.all(children.map(stopChild));
      process.exit(code);
    };
    process.on("SIGINT", () => void stopAll(0));
    process.on("SIGTERM", () => void stopAll(0));

    const watch = (child: ChildProcess, name: string, logPath: string, essential: boolean) => {
      child.once("exit", (code, signal) => {
        if (stopping) return;
        process.stderr.write(
          `atomic-disk dev: ${name} exited (${signal ?? `code ${code}`}); see ${logPath}\n`,
        );
        if (essential) void stopAll(1);
      });
    };

    try {
      for (let rank = 1; rank <= config.replicas.length; rank++) {
        const logPath = replicaLogPath(dir, rank);
        const child = spawnCli(replicaArgs(configPath, rank, dir), logPath);
        children.push(child);
        watch(child, `replica ${rank}`, logPath, false);
      }
      await Promise.all(
        config.replicas.map((address, i) => waitListening(address, children[i]!, DEV_START_TIMEOUT_MS)),
      );

      const gatewayLog = join(dir, "gateway.log");
      const gateway = spawnCli(["nbd", "--config", configPath, "--listen", args.listen], gatewayLog);
      children.push(gateway);
      watch(gateway, "NBD gateway", gatewayLog, true);
      await waitListening(listen, gateway, DEV_START_TIMEOUT_MS);
    } catch (err) {
      stopping = true;
      await Promise.all(children.filter((c) => !hasExited(c)).map(stopChild));
      throw err;
    }

    const url = `nbd://${args.listen}`;
    process.stdout.write(
      [
        `atomic-disk dev: ${config.replicas.length} replicas + NBD gateway running (data and logs in ${dir})`,
        `  inspect:  nbdinfo ${url}`,
        `  kernel:   nbd-client ${listen.host} ${listen.port} /dev/nbd0 -b 4096`,
        `  qemu:     qemu-img info ${url}`,
        `  health:   node ${process.argv[1]} status --config ${configPath} --held`,
        "  stop:     Ctrl-C",
        "",
      ].join("\n"),
    );
  }),
};
