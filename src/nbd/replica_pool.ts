// Connections from the gateway to every replica (several per replica), implementing SectorBackend.
// Commands go to the least-loaded live connection of any replica; each replica coordinates the
// register operation itself, so any replica can serve any sector. A run of sectors travels as one
// range command (READ_RANGE / WRITE_RANGE); a run of one as the standard READ / WRITE.
//
// Failover without zombie writes (SPEC §4). A WRITE that reached a replica may still be running
// there even after our connection to it broke: the replica keeps coordinating it. If we resent the
// same write to another replica and later wrote something newer to that sector, the first copy could
// still finish afterwards and overwrite the newer value. So a WRITE whose connection failed is only
// resent where it cannot race itself:
//   - reconnect to the same replica; if that succeeds, resend there: the replica runs commands on
//     one sector in FIFO order, so the resent copy runs after the first one, never before. A range
//     write holds the FIFO position of every sector of its run, so the same holds for each of them;
//   - if the reconnect is refused (ECONNREFUSED), no process listens there: the old process is dead,
//     and a dead (or later restarted) process completes nothing, so the write may go elsewhere.
//     Only a refusal of an attempt that started after the write's connection failed counts;
//   - while another connection to the same replica is still up, the write is resent on it (same
//     process, same FIFO);
//   - if the reconnect hangs or fails otherwise, we cannot tell, so the write keeps waiting (the NBD
//     request times out with EIO; the gateway's per-sector lock keeps later writes of that sector
//     behind it until it settles).
// A slow write is never resent anywhere. READs have no side effect that matters, so they are
// retried at once on any live connection. Single-sector and range commands share these two paths
// (readAnywhere, writeWithoutZombies).
import type { ClusterConfig } from "../cli/config.js";
import { ReplicaConnection } from "../client/replica_connection.js";
import { bitmapBytes, orBitmapInto } from "../protocol/layouts.js";
import { type LatencySummary, LatencyWindow } from "../util/activity_log.js";
import { assert } from "../util/assert.js";
import { AtomicDiskError, isAtomicDiskError } from "../util/errors.js";
import {
  GATEWAY_WRITE_PACK_SECTORS,
  HELD_MAP_MAX_SECTORS,
  HELD_PAGES_MAX,
  MAX_RANGE_SECTORS,
  RECONNECT_INITIAL_MS,
  RECONNECT_MAX_MS,
  REPLICA_CONNECT_TIMEOUT_MS,
  SECTOR_SIZE_BYTES,
} from "../util/limits.js";
import { componentLogger, type Logger } from "../util/log.js";
import type { SectorBackend } from "./sector_backend.js";

/** The part of ReplicaConnection the pool uses (tests substitute fakes). */
export interface ReplicaLink {
  read(sectorIndex: number): Promise<Buffer>;
  write(sectorIndex: number, data: Buffer): Promise<void>;
  readRange(sectorIndex: number, sectorCount: number): Promise<Buffer>;
  zeroMap(sectorIndex: number, sectorCount: number): Promise<Buffer>;
  heldMap(sectorIndex: number, sectorCount: number): Promise<Buffer>;
  heldPages(firstSector: number, pageCount: number): Promise<Buffer>;
  writeRange(sectorIndex: number, data: Buffer): Promise<void>;
  /** Load: sectors of the commands in flight on this link (a range of k counts k). */
  inflight(): number;
  /** Single-sector writes wait on this link to leave together at the end of the turn. */
  gatheringWrites(): boolean;
  close(): void;
  onClose(listener: (err?: Error) => void): void;
}

/** Connects to replica `rank` (1-based); rejects with REPLICA_UNAVAILABLE (cause.code = errno). */
export type ConnectReplica = (rank: number) => Promise<ReplicaLink>;

export interface ReplicaPoolOptions {
  sectors: number;
  replicas: number;
  connectionsPerReplica: number;
  connect: ConnectReplica;
  log?: Logger;
  /** Index (0-based) of the replica writes go to first (tests); default random. */
  preferredReplica?: number;
}

type Outcome = "up" | "refused";

class Replica {
  readonly links: Array<ReplicaLink | undefined>;
  private waiters: Array<{ after: number; resolve: (outcome: Outcome) => void }> = [];
  /** Numbers connect attempts to this replica in the order they started. */
  private attempts = 0;
  /** Reads and writes this replica completed since the activity log last asked. */
  readonly completed = new LatencyWindow();

  constructor(
    readonly rank: number,
    slots: number,
  ) {
    this.links = new Array<ReplicaLink | undefined>(slots).fill(undefined);
  }

  isUp(): boolean {
    return this.links.some((l) => l !== undefined);
  }

  /** Sectors in flight over all of this replica's connections. */
  inflight(): number {
    let sectors = 0;
    for (const link of this.links) if (link !== undefined) sectors += link.inflight();
    return sectors;
  }

  bestLink(): ReplicaLink | undefined {
    let best: ReplicaLink | undefined;
    for (const link of this.links) {
      if (link !== undefined && (best === undefined || link.inflight() < best.inflight())) best = link;
    }
    return best;
  }

  /**
   * Where a write goes on this replica: the link already gathering this turn's single-sector
   * writes, so that they leave as one WRITE_SECTORS (one frame, one HMAC, one group in the
   * coordinator's core) rather than one per link; otherwise the least loaded. Measured with fio
   * randwrite 4k QD32 and two links per replica, writes spread by load alone ran 10-16% slower
   * than with a single link.
   */
  writeLink(): ReplicaLink | undefined {
    for (const link of this.links) if (link?.gatheringWrites()) return link;
    return this.bestLink();
  }

  /** Called when a connect attempt starts; its number goes back to notifyRefused. */
  attemptStarted(): number {
    return ++this.attempts;
  }

  /**
   * Next thing learned about this replica: a live connection ("up" at once if there is one), or a
   * refusal from a connect attempt that started after this call. An older refusal proves nothing
   * about a process our write may have reached since.
   */
  nextOutcome(): Promise<Outcome> {
    if (this.isUp()) return Promise.resolve("up");
    const after = this.attempts;
    return new Promise((resolve) => this.waiters.push({ after, resolve }));
  }

  notifyUp(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve("up");
  }

  notifyRefused(attempt: number): void {
    const keep: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (attempt > w.after) w.resolve("refused");
      else keep.push(w);
    }
    this.waiters = keep;
  }

  /** Shutdown: release every waiter (they then see the pool closed). */
  releaseAll(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve("refused");
  }
}

function isRefused(err: unknown): boolean {
  if (!isAtomicDiskError(err, "REPLICA_UNAVAILABLE")) return false;
  const cause = err.cause as NodeJS.ErrnoException | undefined;
  return cause?.code === "ECONNREFUSED";
}

export class ReplicaPool implements SectorBackend {
  readonly sectors: number;
  private readonly replicas: Replica[];
  private readonly log: Logger;
  private anyUpWaiters: Array<() => void> = [];
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Index of the replica writes prefer: random, so that several gateways prefer different ones. */
  private readonly preferredFirst: number;

  constructor(private readonly options: ReplicaPoolOptions) {
    assert(
      options.replicas >= 1 && options.connectionsPerReplica >= 1,
      "pool needs replicas and connections",
    );
    this.sectors = options.sectors;
    this.log = options.log ?? componentLogger("nbd", { part: "replica_pool" });
    this.replicas = Array.from(
      { length: options.replicas },
      (_, i) => new Replica(i + 1, options.connectionsPerReplica),
    );
    this.preferredFirst = options.preferredReplica ?? Math.floor(Math.random() * options.replicas);
  }

  /** A pool over the cluster's replicas using real ReplicaConnections. */
  static forCluster(config: ClusterConfig, connectionsPerReplica: number): ReplicaPool {
    return new ReplicaPool({
      sectors: config.sectors,
      replicas: config.replicas.length,
      connectionsPerReplica,
      connect: (rank) => {
        const address = config.replicas[rank - 1]!;
        return ReplicaConnection.connect({
          host: address.host,
          port: address.port,
          clientKey: config.clientKey,
          connectTimeoutMs: REPLICA_CONNECT_TIMEOUT_MS,
          // The 4 KiB writes in flight together share a command (WRITE_SECTORS).
          batchWrites: true,
        });
      },
    });
  }

  /** Starts connecting every slot; resolves after each slot's first attempt settled. */
  async start(): Promise<void> {
    const first: Promise<void>[] = [];
    for (const replica of this.replicas) {
      for (let slot = 0; slot < replica.links.length; slot++)
        first.push(this.connectSlot(replica, slot, RECONNECT_INITIAL_MS));
    }
    await Promise.all(first);
    const up = this.replicas.filter((r) => r.isUp()).map((r) => r.rank);
    this.log.info({ up, replicas: this.replicas.length }, "replica pool started");
  }

  /** Ranks with at least one live connection. */
  upRanks(): number[] {
    return this.replicas.filter((r) => r.isUp()).map((r) => r.rank);
  }

  readSector(index: number): Promise<Buffer> {
    return this.readAnywhere((link) => link.read(index));
  }

  writeSector(index: number, data: Buffer): Promise<void> {
    assert(data.length === SECTOR_SIZE_BYTES, "writeSector: data must be one sector");
    return this.writeWithoutZombies(index, 1, (link) => link.write(index, data));
  }

  readSectors(index: number, count: number): Promise<Buffer> {
    assertRun(count);
    if (count === 1) return this.readSector(index);
    return this.readAnywhere((link) => link.readRange(index, count));
  }

  zeroMap(index: number, count: number): Promise<Buffer> {
    assertRun(count);
    return this.readAnywhere((link) => link.zeroMap(index, count));
  }

  /**
   * The OR of the HELD_MAP answers of a majority of the replicas, each from its own store. A write
   * acknowledged before this call is durable on a majority, and any two majorities share a
   * replica, so a sector that none of the answering majority holds was never so written and reads
   * as zeros. Asks every live replica and settles with the first majority of answers, so one slow
   * or dead replica does not hold it up; waits while fewer than a majority are up.
   */
  heldMap(index: number, count: number): Promise<Buffer> {
    assert(
      Number.isSafeInteger(count) && count >= 1 && count <= HELD_MAP_MAX_SECTORS,
      `a HELD_MAP covers 1..${HELD_MAP_MAX_SECTORS} sectors, not ${count}`,
    );
    return this.majorityOr(count, (link) => link.heldMap(index, count));
  }

  /** As heldMap, a bit per page of HELD_PAGE_SECTORS sectors (HELD_PAGES). */
  heldPages(firstSector: number, pageCount: number): Promise<Buffer> {
    assert(
      Number.isSafeInteger(pageCount) && pageCount >= 1 && pageCount <= HELD_PAGES_MAX,
      `a HELD_PAGES covers 1..${HELD_PAGES_MAX} pages, not ${pageCount}`,
    );
    return this.majorityOr(pageCount, (link) => link.heldPages(firstSector, pageCount));
  }

  /** The OR of the `count`-bit answers of `ask` from a majority of replicas (see heldMap). */
  private majorityOr(count: number, ask: (link: ReplicaLink) => Promise<Buffer>): Promise<Buffer> {
    const quorum = Math.floor(this.replicas.length / 2) + 1;
    const held = Buffer.alloc(bitmapBytes(count));
    const answered = new Set<Replica>();
    const asking = new Set<Replica>();
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        settled = true;
        reject(err);
      };
      const askAll = (): void => {
        if (settled) return;
        if (this.closed) {
          fail(shuttingDown());
          return;
        }
        for (const replica of this.replicas) {
          if (answered.has(replica) || asking.has(replica)) continue;
          const link = replica.bestLink();
          if (link === undefined) continue;
          asking.add(replica);
          ask(link).then(
            (bits) => {
              asking.delete(replica);
              if (settled) return;
              assert(bits.length === held.length, "a map answer has a bit per sector or page");
              orBitmapInto(held, 0, bits);
              answered.add(replica);
              if (answered.size >= quorum) {
                settled = true;
                resolve(held);
              }
            },
            (err: unknown) => {
              asking.delete(replica);
              if (settled) return;
              if (isAtomicDiskError(err, "REPLICA_UNAVAILABLE")) void this.forget(link).then(askAll);
              else fail(err);
            },
          );
        }
        if (answered.size + asking.size < quorum) this.anyUpWaiters.push(askAll);
      };
      askAll();
    });
  }

  writeSectors(index: number, data: Buffer): Promise<void> {
    assert(data.length % SECTOR_SIZE_BYTES === 0, "writeSectors: data must be whole sectors");
    const count = data.length / SECTOR_SIZE_BYTES;
    assertRun(count);
    if (count === 1) return this.writeSector(index, data);
    return this.writeWithoutZombies(index, count, (link) => link.writeRange(index, data));
  }

  /** Runs a read on the least-loaded live connection, again elsewhere each time one fails. */
  private async readAnywhere(read: (link: ReplicaLink) => Promise<Buffer>): Promise<Buffer> {
    for (;;) {
      const found = this.anyLink();
      const link = found instanceof Promise ? await found : found;
      const startedMs = performance.now();
      try {
        const data = await read(link);
        this.replicaOf(link)?.completed.record(startedMs);
        return data;
      } catch (err) {
        if (!isAtomicDiskError(err, "REPLICA_UNAVAILABLE") || this.closed) throw err;
        // Reads are safe to retry anywhere.
        await this.forget(link);
      }
    }
  }

  /**
   * Runs a write of sectors [index, index + count) on one replica and resends it only where it
   * cannot race an earlier copy of itself: see the comment at the top of the file.
   */
  private async writeWithoutZombies(
    index: number,
    count: number,
    write: (link: ReplicaLink) => Promise<void>,
  ): Promise<void> {
    const first = this.anyReplica();
    let replica = first instanceof Promise ? await first : first;
    for (;;) {
      const link = replica.writeLink();
      if (link !== undefined) {
        const startedMs = performance.now();
        try {
          await write(link);
          replica.completed.record(startedMs);
          return;
        } catch (err) {
          if (!isAtomicDiskError(err, "REPLICA_UNAVAILABLE") || this.closed) throw err;
          await this.forget(link);
        }
      }
      // The write may still be running at this replica: see the comment at the top of the file.
      const outcome = await replica.nextOutcome();
      if (this.closed) throw shuttingDown();
      if (outcome === "refused") {
        this.log.info(
          { rank: replica.rank, sector: index, sectors: count },
          "replica refused reconnect; rerouting write",
        );
        replica = await this.anyReplica(replica);
      }
    }
  }

  /**
   * Per replica rank, the reads and writes (a run counts once) it completed since the last call,
   * with their latency from sent to answered; undefined if none did.
   */
  takeActivity(): Record<number, LatencySummary> | undefined {
    const out: Record<number, LatencySummary> = {};
    let any = false;
    for (const replica of this.replicas) {
      const summary = replica.completed.take();
      if (summary === undefined) continue;
      out[replica.rank] = summary;
      any = true;
    }
    return any ? out : undefined;
  }

  private replicaOf(link: ReplicaLink): Replica | undefined {
    return this.replicas.find((r) => r.links.includes(link));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const replica of this.replicas) {
      for (const link of replica.links) link?.close();
      replica.releaseAll();
    }
    const waiters = this.anyUpWaiters;
    this.anyUpWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Stops choosing a connection that failed before its close event arrived (which reconnects it),
   * and lets that event run: otherwise a retry loop could pick the same dead link forever.
   */
  private async forget(link: ReplicaLink): Promise<void> {
    for (const replica of this.replicas) {
      const slot = replica.links.indexOf(link);
      if (slot >= 0) replica.links[slot] = undefined;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }

  /**
   * The least-loaded live connection of any replica, waiting until one exists. Picked in the same
   * tick as the caller sends on it when one is up, so commands issued together spread out.
   */
  private anyLink(): ReplicaLink | Promise<ReplicaLink> {
    return this.pickLink() ?? this.waitFor(() => this.pickLink());
  }

  /** The live replica with the least load, preferring any but `avoid`; waits until one is up. */
  private anyReplica(avoid?: Replica): Replica | Promise<Replica> {
    return this.pickReplica(avoid) ?? this.waitFor(() => this.pickReplica(avoid));
  }

  private pickLink(): ReplicaLink | undefined {
    if (this.closed) return undefined;
    let best: ReplicaLink | undefined;
    for (const replica of this.replicas) {
      const link = replica.bestLink();
      if (link !== undefined && (best === undefined || link.inflight() < best.inflight())) best = link;
    }
    return best;
  }

  /**
   * Where a write goes: the first live replica, in this pool's preference order, with fewer than
   * GATEWAY_WRITE_PACK_SECTORS in flight; when all are that busy, the least loaded. Concentrating
   * writes lets one coordinator group them (register core rule 8: one query and one update
   * message per peer, one fsync, for the whole group), where spreading them makes every replica
   * coordinate small groups: measured with 32 random 4 KiB writes in flight, 4.2k writes/s at
   * 294 µs of replica CPU each on one coordinator against 2.8k/s at 539 µs spread over three.
   * Reads are spread (pickLink): a read's coordinator receives the data, so it is the busy one.
   */
  private pickReplica(avoid: Replica | undefined): Replica | undefined {
    if (this.closed) return undefined;
    for (let i = 0; i < this.replicas.length; i++) {
      const replica = this.replicas[(this.preferredFirst + i) % this.replicas.length]!;
      if (replica !== avoid && replica.isUp() && replica.inflight() < GATEWAY_WRITE_PACK_SECTORS) {
        return replica;
      }
    }
    let best: Replica | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (const replica of this.replicas) {
      const link = replica.bestLink();
      if (link === undefined) continue;
      const load = link.inflight() + (replica === avoid ? 1e9 : 0);
      if (load < bestLoad) {
        best = replica;
        bestLoad = load;
      }
    }
    return best;
  }

  /** Waits until `pick` finds something after a replica came up; throws once the pool closed. */
  private async waitFor<T>(pick: () => T | undefined): Promise<T> {
    for (;;) {
      if (this.closed) throw shuttingDown();
      const found = pick();
      if (found !== undefined) return found;
      await new Promise<void>((resolve) => this.anyUpWaiters.push(resolve));
    }
  }

  private async connectSlot(replica: Replica, slot: number, backoffMs: number): Promise<void> {
    if (this.closed) return;
    let link: ReplicaLink;
    const attempt = replica.attemptStarted();
    try {
      link = await this.options.connect(replica.rank);
    } catch (err) {
      if (this.closed) return;
      if (isRefused(err)) replica.notifyRefused(attempt);
      this.log.debug({ rank: replica.rank, slot, err: (err as Error).message }, "replica connect failed");
      this.schedule(
        () => void this.connectSlot(replica, slot, Math.min(backoffMs * 2, RECONNECT_MAX_MS)),
        backoffMs,
      );
      return;
    }
    if (this.closed) {
      link.close();
      return;
    }
    assert(replica.links[slot] === undefined, "slot connected twice");
    replica.links[slot] = link;
    const wasUp = replica.links.filter((l) => l !== undefined).length > 1;
    if (!wasUp) this.log.info({ rank: replica.rank }, "replica up");
    link.onClose(() => {
      if (replica.links[slot] === link) replica.links[slot] = undefined;
      if (this.closed) return;
      if (!replica.isUp()) this.log.warn({ rank: replica.rank }, "replica down; reconnecting");
      this.schedule(() => void this.connectSlot(replica, slot, RECONNECT_INITIAL_MS), RECONNECT_INITIAL_MS);
    });
    replica.notifyUp();
    const waiters = this.anyUpWaiters;
    this.anyUpWaiters = [];
    for (const w of waiters) w();
  }

  private schedule(fn: () => void, delayMs: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, delayMs);
    this.timers.add(timer);
  }
}

function shuttingDown(): AtomicDiskError {
  return new AtomicDiskError("SHUTTING_DOWN", "gateway is shutting down");
}

function assertRun(count: number): void {
  assert(
    Number.isSafeInteger(count) && count >= 1 && count <= MAX_RANGE_SECTORS,
    `a run holds 1..${MAX_RANGE_SECTORS} sectors, not ${count}`,
  );
}
