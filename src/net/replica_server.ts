// One replica process's network side: a single TCP listener for clients and peers, outbound
// links to every other rank, and the register-core driver over the on-disk sector store.
import { mkdirSync, statSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { type ClusterConfig, formatHostPort } from "../cli/config.js";
import type { SectorStore } from "../storage/sector_store.js";
import { TagReservation } from "../storage/tag_reservation.js";
import { startActivityLog } from "../util/activity_log.js";
import { assert } from "../util/assert.js";
import { CRC32_IMPLEMENTATION } from "../util/crc32.js";
import { AtomicDiskError } from "../util/errors.js";
import {
  ACTIVITY_LOG_INTERVAL_MS,
  BAD_INPUT_LOG_INTERVAL_MS,
  MAX_CLIENT_CONNECTIONS,
  MAX_UNIDENTIFIED_CONNECTIONS,
} from "../util/limits.js";
import { componentLogger, type Logger } from "../util/log.js";
import { ConnectionAdmission, type ConnectionAdmissionStats } from "./connection_admission.js";
import { type DataDirLock, lockDataDir } from "./data_dir_lock.js";
import { InboundConnection, type InboundCounters } from "./inbound_connection.js";
import { PeerLink } from "./peer_link.js";
import { RateLimitedLog } from "./rate_limited_log.js";
import { ReplicaDriver, type ReplicaDriverStats } from "./replica_driver.js";

export interface StartReplicaOptions {
  config: ClusterConfig;
  /** 1-based; the replica listens at config.replicas[rank - 1]. */
  rank: number;
  dataDir: string;
  logger?: Logger;
  /** Bind address override (e.g. 0.0.0.0 in a container whose config names a service host). */
  listenHost?: string;
  /** Opens the sector store in the given directory; the slot file store by default. */
  openStore?: (dir: string, logger: Logger) => Promise<SectorStore>;
  /** Called after a storage failure; the default logs and exits the process (recovery is from disk). */
  onFatal?: (err: unknown) => void;
  /** Interval of the activity log lines (default ACTIVITY_LOG_INTERVAL_MS); 0: none. */
  activityLogMs?: number;
}

export interface ReplicaStats {
  driver: ReplicaDriverStats;
  /** Whether the register core is being ticked: only while an operation may need to retransmit. */
  ticking: boolean;
  inbound: InboundCounters;
  connections: number;
  admission: ConnectionAdmissionStats;
  peers: Record<number, { sentFrames: number; droppedFrames: number; connects: number }>;
}

export interface RunningReplica {
  port: number;
  stats(): ReplicaStats;
  close(): Promise<void>;
}

/** Directory inside the data dir that the sector store owns. */
export const STORE_SUBDIR = "store";

function prepareDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new AtomicDiskError("DATA_DIR_UNUSABLE", `cannot create data dir ${dataDir}: ${code ?? err}`);
  }
  if (!statSync(dataDir).isDirectory()) {
    throw new AtomicDiskError("DATA_DIR_UNUSABLE", `data dir ${dataDir} is not a directory`);
  }
}

async function openSlotStore(dir: string, logger: Logger): Promise<SectorStore> {
  const [{ SlotStore }, { nodeFileSystem }] = await Promise.all([
    import("../storage/slot_store.js"),
    import("../storage/node_file_io.js"),
  ]);
  return SlotStore.open({ fs: nodeFileSystem, dir, logger });
}

/** Opened before the sector store (it refuses a store whose tag file is gone). */
async function openTagReservation(dir: string, logger: Logger): Promise<TagReservation> {
  const [{ nodeFileSystem }, { SLOT_FILE }] = await Promise.all([
    import("../storage/node_file_io.js"),
    import("../storage/slot_format.js"),
  ]);
  return TagReservation.open({ fs: nodeFileSystem, dir, storeFile: SLOT_FILE, logger });
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") {
        reject(new AtomicDiskError("ADDRESS_IN_USE", `address ${host}:${port} is already in use`));
      } else {
        reject(
          new AtomicDiskError(
            "ADDRESS_IN_USE",
            `cannot listen on ${host}:${port}: ${err.code ?? err.message}`,
          ),
        );
      }
    };
    server.once("error", onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

export async function startReplica(options: StartReplicaOptions): Promise<RunningReplica> {
  const { config, rank, dataDir } = options;
  const replicaCount = config.replicas.length;
  assert(
    Number.isInteger(rank) && rank >= 1 && rank <= replicaCount,
    `rank ${rank} not in 1..${replicaCount}`,
  );
  const address = config.replicas[rank - 1]!;
  const logger = options.logger ?? componentLogger("replica", { rank });
  const onFatal =
    options.onFatal ??
    ((err: unknown) => {
      logger.fatal({ err }, "storage failure; exiting so that recovery starts from disk");
      process.exit(1);
    });

  prepareDataDir(dataDir);
  const lock: DataDirLock = lockDataDir(dataDir);
  let store: SectorStore | undefined;
  let tags: TagReservation | undefined;
  try {
    const storeDir = join(dataDir, STORE_SUBDIR);
    try {
      mkdirSync(storeDir, { recursive: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new AtomicDiskError("DATA_DIR_UNUSABLE", `cannot create ${storeDir}: ${code ?? err}`);
    }
    const storeLogger = logger.child({ part: "store" });
    const openTags = await openTagReservation(storeDir, storeLogger);
    tags = openTags;
    const openStore: SectorStore = await (options.openStore !== undefined
      ? options.openStore(storeDir, storeLogger)
      : openSlotStore(storeDir, storeLogger));
    store = openStore;

    const peers = new Map<number, PeerLink>();
    for (let r = 1; r <= replicaCount; r++) {
      if (r !== rank) peers.set(r, new PeerLink(r, config.replicas[r - 1]!, logger));
    }
    const driver = new ReplicaDriver({
      rank,
      replicaCount,
      systemKey: config.systemKey,
      store: openStore,
      tags: openTags,
      peers,
      logger,
      onFatal,
    });
    const counters: InboundCounters = {
      droppedMessages: 0,
      droppedBytes: 0,
      badTags: 0,
      rejectedCommands: 0,
    };
    const badInputLog = new RateLimitedLog(logger, BAD_INPUT_LOG_INTERVAL_MS);
    const connections = new Set<InboundConnection>();
    const admission = new ConnectionAdmission({
      maxUnidentified: MAX_UNIDENTIFIED_CONNECTIONS,
      maxClients: MAX_CLIENT_CONNECTIONS,
      log: new RateLimitedLog(logger, BAD_INPUT_LOG_INTERVAL_MS),
    });
    const handler = {
      clientCommand: driver.clientCommand.bind(driver),
      systemMessage: driver.peerMessage.bind(driver),
    };
    const server = createServer((socket: Socket) => {
      const connection = new InboundConnection({
        socket,
        clientKey: config.clientKey,
        systemKey: config.systemKey,
        sectors: config.sectors,
        replicaCount,
        handler,
        counters,
        badInputLog,
        admission,
        logger,
      });
      connections.add(connection);
      connection.onClose(() => connections.delete(connection));
      logger.debug({ remote: connection.remote }, "connection accepted");
    });
    server.on("error", (err) => logger.error({ err }, "listener error"));

    const host = options.listenHost ?? address.host;
    await listen(server, host, address.port);
    driver.start();
    for (const link of peers.values()) link.start();
    const activityLogMs = options.activityLogMs ?? ACTIVITY_LOG_INTERVAL_MS;
    const activityLog =
      activityLogMs > 0
        ? startActivityLog({
            logger,
            intervalMs: activityLogMs,
            take: () => {
              const activity = driver.takeActivity();
              return activity === null ? null : { ...activity, connections: connections.size };
            },
          })
        : undefined;
    const boundAddress = server.address();
    const port = typeof boundAddress === "object" && boundAddress !== null ? boundAddress.port : address.port;
    logger.info(
      {
        listen: formatHostPort({ host, port }),
        replicas: replicaCount,
        sectors: config.sectors,
        crc32: CRC32_IMPLEMENTATION,
      },
      "replica listening",
    );

    let closing: Promise<void> | undefined;
    return {
      port,
      stats: () => ({
        driver: { ...driver.stats },
        ticking: driver.isTicking(),
        inbound: { ...counters },
        connections: connections.size,
        admission: admission.stats(),
        peers: Object.fromEntries([...peers].map(([r, link]) => [r, { ...link.stats }])),
      }),
      close: () => {
        closing ??= (async () => {
          activityLog?.stop();
          driver.stop();
          for (const link of peers.values()) link.close();
          for (const connection of connections) connection.destroy();
          await new Promise<void>((resolve) => server.close(() => resolve()));
          try {
            await openStore.close();
            await openTags.close();
          } finally {
            lock.release();
          }
          logger.info(
            {
              driver: driver.stats,
              inbound: counters,
              peers: Object.fromEntries([...peers].map(([r, link]) => [r, link.stats])),
            },
            "replica stopped",
          );
        })();
        return closing;
      },
    };
  } catch (err) {
    if (store !== undefined) await store.close().catch(() => {});
    if (tags !== undefined) await tags.close().catch(() => {});
    lock.release();
    throw err;
  }
}
