// `atomic-disk init`: writes a cluster file with fresh random keys.
import { writeFileSync } from "node:fs";
import type { CommandModule } from "yargs";
import { AtomicDiskError } from "../util/errors.js";
import { MAX_REPLICAS } from "../util/limits.js";
import { guarded } from "./cli_errors.js";
import { formatHostPort, newClusterConfigJson, parseHostPort } from "./config.js";

/** Default volume: 262144 sectors of 4 KiB = 1 GiB. */
export const DEFAULT_SECTORS = 262_144;

interface InitArgs {
  replicas?: number;
  addresses?: string;
  out: string;
  sectors: number;
  host: string;
  "base-port": number;
  force: boolean;
}

/** Replica addresses from --addresses, or --host with consecutive ports from --base-port. */
export function replicaAddresses(args: {
  replicas?: number;
  addresses?: string;
  host: string;
  basePort: number;
}): string[] {
  if (args.addresses !== undefined) {
    const list = args.addresses.split(",").map((a) => a.trim());
    for (const [i, a] of list.entries()) parseHostPort(a, `--addresses[${i}]`);
    if (args.replicas !== undefined && args.replicas !== list.length) {
      throw new AtomicDiskError("CONFIG_INVALID", `--replicas ${args.replicas} but ${list.length} addresses`);
    }
    return list;
  }
  const { replicas, host, basePort } = args;
  if (replicas === undefined || !Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new AtomicDiskError("CONFIG_INVALID", `--replicas must be an integer in 1..${MAX_REPLICAS}`);
  }
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + replicas - 1 > 65535) {
    throw new AtomicDiskError(
      "CONFIG_INVALID",
      `--base-port ${basePort} leaves no room for ${replicas} ports`,
    );
  }
  return Array.from({ length: replicas }, (_, i) => formatHostPort({ host, port: basePort + i }));
}

export function writeClusterConfig(args: {
  addresses: string[];
  out: string;
  sectors: number;
  force: boolean;
}): void {
  const { addresses, sectors } = args;
  const json = newClusterConfigJson({ replicas: addresses, sectors });
  try {
    writeFileSync(args.out, `${JSON.stringify(json, null, 2)}\n`, {
      flag: args.force ? "w" : "wx",
      mode: 0o600,
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") {
      throw new AtomicDiskError("CONFIG_INVALID", `${args.out} already exists (use --force to overwrite)`);
    }
    throw new AtomicDiskError("CONFIG_INVALID", `cannot write ${args.out}: ${code ?? err}`);
  }
}

export const initCommand: CommandModule<object, InitArgs> = {
  command: "init",
  describe: "Write a new cluster file with fresh random keys",
  builder: (y) =>
    y
      .option("replicas", {
        type: "number",
        describe: "number of replicas (on --host, ports from --base-port)",
      })
      .option("addresses", {
        type: "string",
        describe: "comma-separated host:port of each replica, rank order (e.g. replica1:7001,replica2:7001)",
      })
      .option("out", { type: "string", demandOption: true, describe: "cluster file to write" })
      .option("sectors", {
        type: "number",
        default: DEFAULT_SECTORS,
        describe: "volume size in 4 KiB sectors",
      })
      .option("host", { type: "string", default: "127.0.0.1", describe: "host of every replica" })
      .option("base-port", {
        type: "number",
        default: 7001,
        describe: "port of replica 1; rank r gets base+r-1",
      })
      .option("force", { type: "boolean", default: false, describe: "overwrite an existing file" }),
  handler: guarded(async (args: InitArgs) => {
    const addresses = replicaAddresses({
      ...(args.replicas !== undefined ? { replicas: args.replicas } : {}),
      ...(args.addresses !== undefined ? { addresses: args.addresses } : {}),
      host: args.host,
      basePort: args["base-port"],
    });
    writeClusterConfig({ addresses, out: args.out, sectors: args.sectors, force: args.force });
    process.stdout.write(`wrote ${args.out} (${addresses.length} replicas, ${args.sectors} sectors)\n`);
  }),
};
