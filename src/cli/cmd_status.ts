// `atomic-disk status`: asks every replica of a cluster file whether it is up and serving (one
// register READ through it, which needs a majority behind it), and with --held how many sectors
// its store holds (HELD_MAPs over the whole volume, from memory), so an operator sees which
// replicas are down and which missed writes while they were. Exit code 0 when a majority serves,
// 2 when not (1 stays for errors of the command itself).
import { pino } from "pino";
import type { CommandModule } from "yargs";
import { ReplicaConnection } from "../client/replica_connection.js";
import { countBits, setBitRuns } from "../protocol/layouts.js";
import {
  HELD_MAP_MAX_SECTORS,
  HELD_PAGE_SECTORS,
  HELD_PAGES_MAX,
  SECTOR_SIZE_BYTES,
  STATUS_HELD_MAPS_IN_FLIGHT,
} from "../util/limits.js";
import { setRootLogger } from "../util/log.js";
import { DroppingLogDestination } from "../util/log_destination.js";
import { guarded } from "./cli_errors.js";
import { type ClusterConfig, formatHostPort, loadClusterConfig } from "./config.js";

/** READs timed after the first, whose median is reported. */
const READ_SAMPLES = 5;

/** Exit code of a cluster without a serving majority. */
export const STATUS_UNAVAILABLE_EXIT_CODE = 2;

interface StatusArgs {
  config: string;
  json: boolean;
  held: boolean;
  "timeout-ms": number;
}

export interface ReplicaStatus {
  rank: number;
  address: string;
  /** A connection was made. */
  up: boolean;
  /** A READ of sector 0 coordinated by this replica completed (a majority answered it). */
  serving: boolean;
  /** Median time of READ_SAMPLES further READs, one at a time. */
  readMs?: number;
  /** With --held: sectors its store holds. */
  heldSectors?: number;
  error?: string;
}

export interface ClusterStatus {
  replicas: ReplicaStatus[];
  sectors: number;
  majority: number;
  serving: number;
  available: boolean;
}

/** Rejects after `ms` with `what` timed out; the promise raced against it keeps running. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function replicaStatus(
  config: ClusterConfig,
  rank: number,
  options: { held: boolean; timeoutMs: number },
): Promise<ReplicaStatus> {
  const address = config.replicas[rank - 1]!;
  const status: ReplicaStatus = { rank, address: formatHostPort(address), up: false, serving: false };
  let connection: ReplicaConnection;
  try {
    connection = await ReplicaConnection.connect({
      host: address.host,
      port: address.port,
      clientKey: config.clientKey,
      connectTimeoutMs: options.timeoutMs,
    });
  } catch (err) {
    status.error = (err as Error).message;
    return status;
  }
  status.up = true;
  try {
    await within(connection.read(0), options.timeoutMs, "a READ through it");
    status.serving = true;
    // The first READ pays for cold code paths on both ends: report the median of the next ones.
    const timesMs: number[] = [];
    for (let i = 0; i < READ_SAMPLES; i++) {
      const startedMs = performance.now();
      await within(connection.read(0), options.timeoutMs, "a READ through it");
      timesMs.push(performance.now() - startedMs);
    }
    timesMs.sort((a, b) => a - b);
    status.readMs = Math.round(timesMs[READ_SAMPLES >> 1]! * 1000) / 1000;
    if (options.held) {
      // HELD_PAGES first (8 for 1 TiB), then HELD_MAPs of the held pages only, a few in flight: a
      // 1 TiB volume written all over is 8192 maps.
      const pages = Math.ceil(config.sectors / HELD_PAGE_SECTORS);
      const maps: Array<[number, number]> = [];
      for (let page = 0; page < pages; page += HELD_PAGES_MAX) {
        const count = Math.min(HELD_PAGES_MAX, pages - page);
        const bits = await within(
          connection.heldPages(page * HELD_PAGE_SECTORS, count),
          options.timeoutMs,
          "a HELD_PAGES",
        );
        for (const [from, to] of setBitRuns(bits, count)) {
          const end = Math.min(config.sectors, (page + to) * HELD_PAGE_SECTORS);
          for (let first = (page + from) * HELD_PAGE_SECTORS; first < end; first += HELD_MAP_MAX_SECTORS) {
            maps.push([first, Math.min(HELD_MAP_MAX_SECTORS, end - first)]);
          }
        }
      }
      let held = 0;
      let next = 0;
      const worker = async () => {
        while (next < maps.length) {
          const [first, count] = maps[next++]!;
          const bits = await within(connection.heldMap(first, count), options.timeoutMs, "a HELD_MAP");
          held += countBits(bits, count);
        }
      };
      await Promise.all(Array.from({ length: STATUS_HELD_MAPS_IN_FLIGHT }, worker));
      status.heldSectors = held;
    }
  } catch (err) {
    status.error = (err as Error).message;
  } finally {
    connection.close();
  }
  return status;
}

export async function clusterStatus(
  config: ClusterConfig,
  options: { held: boolean; timeoutMs: number },
): Promise<ClusterStatus> {
  const replicas = await Promise.all(config.replicas.map((_, i) => replicaStatus(config, i + 1, options)));
  const majority = Math.floor(config.replicas.length / 2) + 1;
  const serving = replicas.filter((r) => r.serving).length;
  return { replicas, sectors: config.sectors, majority, serving, available: serving >= majority };
}

function gib(sectors: number): string {
  return `${((sectors * SECTOR_SIZE_BYTES) / 2 ** 30).toFixed(1)} GiB`;
}

export function formatStatus(status: ClusterStatus): string {
  const lines = [
    `cluster: ${status.replicas.length} replicas, ${status.sectors} sectors (${gib(status.sectors)}); a majority is ${status.majority}`,
  ];
  const width = Math.max(...status.replicas.map((r) => r.address.length));
  for (const r of status.replicas) {
    const state = r.serving ? "serving" : r.up ? "up, not serving" : "down";
    const parts = [`  replica ${r.rank}  ${r.address.padEnd(width)}  ${state}`];
    if (r.readMs !== undefined) parts.push(`read ${r.readMs} ms`);
    if (r.heldSectors !== undefined) parts.push(`holds ${r.heldSectors} sectors`);
    if (r.error !== undefined) parts.push(r.error);
    lines.push(parts.join("; "));
  }
  lines.push(
    status.available
      ? `${status.serving} of ${status.replicas.length} replicas serving: the volume is available`
      : `${status.serving} of ${status.replicas.length} replicas serving: fewer than a majority, the volume is NOT available`,
  );
  return `${lines.join("\n")}\n`;
}

export const statusCommand: CommandModule<object, StatusArgs> = {
  command: "status",
  describe: "Show which replicas are up and serving (exit code 2 when fewer than a majority serve)",
  builder: (y) =>
    y
      .option("config", { type: "string", demandOption: true, describe: "cluster file" })
      .option("json", { type: "boolean", default: false, describe: "print one JSON object" })
      .option("held", {
        type: "boolean",
        default: false,
        describe: "also count the sectors each replica holds (one HELD_MAP per 128 MiB of volume)",
      })
      .option("timeout-ms", {
        type: "number",
        default: 3000,
        describe: "how long a connect, the READ and each HELD_MAP may take",
      }),
  handler: guarded(async (args: StatusArgs) => {
    // Connection logs would mix into the report; only problems go to stderr.
    setRootLogger(
      pino({ level: process.env.ATOMIC_DISK_LOG_LEVEL ?? "warn" }, new DroppingLogDestination(2)),
    );
    const config = loadClusterConfig(args.config);
    const status = await clusterStatus(config, { held: args.held, timeoutMs: args["timeout-ms"] });
    process.stdout.write(args.json ? `${JSON.stringify(status)}\n` : formatStatus(status));
    if (!status.available) process.exitCode = STATUS_UNAVAILABLE_EXIT_CODE;
  }),
};
