// `atomic-disk init`: writes a cluster file with fresh random keys.
import { writeFileSync } from "node:fs";
import type { CommandModule } from "yargs";
import { AtomicDiskError } from "../util/errors.js";
import { MAX_REPLICAS } from "../util/limits.js";
import { guarded } from "./cli_errors.js";
import { formatHostPort, newClusterConfigJson } from "./config.js";

/** Default volume: 262144 sectors of 4 KiB = 1 GiB. */
export const DEFAULT_SECTORS = 262_144;

interface InitArgs {
  replicas: number;
  out: string;
  sectors: number;
  host: string;
  "base-port": number;
  force: boolean;
}

export function writeClusterConfig(args: {
  replicas: number;
  out: string;
  sectors: number;
  host: string;
  basePort: number;
  force: boolean;
}): void {
  const { replicas, sectors, host, basePort } = args;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new AtomicDiskError("CONFIG_INVALID", `--replicas must be an integer in 1..${MAX_REPLICAS}`);
  }
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + replicas - 1 > 65535) {
    throw new AtomicDiskError(
      "CONFIG_INVALID",
      `--base-port ${basePort} leaves no room for ${replicas} ports`,
    );
  }
  const addresses = Array.from({ length: replicas }, (_, i) => formatHostPort({ host, port: basePort + i }));
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
      .option("replicas", { type: "number", demandOption: true, describe: "number of replicas" })
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
    writeClusterConfig({
      replicas: args.replicas,
      out: args.out,
      sectors: args.sectors,
      host: args.host,
      basePort: args["base-port"],
      force: args.force,
    });
    process.stdout.write(`wrote ${args.out} (${args.replicas} replicas, ${args.sectors} sectors)\n`);
  }),
};
