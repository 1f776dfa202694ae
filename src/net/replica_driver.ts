// Drives one RegisterCore with real I/O (core_types.ts): client commands and peer messages in,
// effects carried out in order. Sends to peers go through their links; sends to this replica's own
// rank come back as `message` events from a microtask (never re-entrantly, no network, no HMAC).
import { randomBytes } from "node:crypto";
import { v4 as uuidv4 } from "uuid";
import { encodeSystemMessageFrame, type Frame } from "../protocol/codec.js";
import { bitmapOfMarked, zeroBitmap } from "../protocol/layouts.js";
import {
  type ClientCommand,
  type ClientCommandName,
  OP_ID_BYTES,
  ResponseStatus,
  type SystemMessage,
} from "../protocol/messages.js";
import type { ClientBatchOp, CoreEffect, CoreEvent } from "../register/core_types.js";
import { RegisterCore } from "../register/register_core.js";
import type { SectorStore } from "../storage/sector_store.js";
import { LatencyWindow } from "../util/activity_log.js";
import { assert, unreachable } from "../util/assert.js";
import { CORE_TICK_MS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import type { Logger } from "../util/log.js";
import type { InboundConnection } from "./inbound_connection.js";
import type { PeerLink } from "./peer_link.js";

/** Most single-sector commands handed to the core as one batch (its groups hold at most 256). */
const BATCH_MAX_COMMANDS = 256;

/** Op ids drawn per refill of the random pool. */
const OP_ID_POOL = 256;

interface PendingClientOp {
  connection: InboundConnection;
  requestNumber: bigint;
  command: ClientCommandName;
  /** Range commands: echoed in the response. */
  sectorCount: number | undefined;
  /** performance.now() at arrival (activity latencies). */
  startedMs: number;
  /**
   * WRITE_SECTORS: its sectors' writes not yet complete. Each sector is a write of its own with
   * its own token, all mapped to this one record; the response goes out when the last completes.
   */
  remaining?: number;
}

/** What the driver needs of the tag reservation (tag_reservation.ts). */
export interface TagReservationStore {
  readonly reservedTs: bigint;
  reserve(upToTs: bigint): Promise<void>;
}

export interface ReplicaDriverOptions {
  rank: number;
  replicaCount: number;
  systemKey: Buffer;
  store: SectorStore;
  /** The durable tag reservation (register core rule 2). */
  tags: TagReservationStore;
  /** Links indexed by rank; the entry of this replica's own rank is unused. */
  peers: Map<number, PeerLink>;
  logger: Logger;
  /** A storage failure: the in-memory state can no longer be trusted to match the disk. */
  onFatal: (err: unknown) => void;
}

export interface ReplicaDriverStats {
  clientOps: number;
  completedOps: number;
  selfMessages: number;
  peerMessagesIn: number;
  spoofedSelfMessages: number;
}

/** What the replica did since the activity log last asked (activity_log.ts). */
interface ActivityWindow {
  readCommands: LatencyWindow;
  writeCommands: LatencyWindow;
  /** From the persist effect to durable: the group commit's share of a write's latency. */
  persists: LatencyWindow;
  sectorsRead: number;
  sectorsWritten: number;
  sectorsPersisted: number;
  peerMessagesIn: number;
}

function emptyActivity(): ActivityWindow {
  return {
    readCommands: new LatencyWindow(),
    writeCommands: new LatencyWindow(),
    persists: new LatencyWindow(),
    sectorsRead: 0,
    sectorsWritten: 0,
    sectorsPersisted: 0,
    peerMessagesIn: 0,
  };
}

export class ReplicaDriver {
  private readonly core: RegisterCore;
  private readonly pending = new Map<number, PendingClientOp>();
  private nextToken = 1;
  private selfQueue: SystemMessage[] = [];
  /** Data loads asked for by the step being carried out. */
  private loads: number[] = [];
  /** Tag loads asked for by the step being carried out: answered together, in one step. */
  private tagLoads: number[] = [];
  /** Single-sector client commands of this event-loop turn, in arrival order. */
  private batched: ClientBatchOp[] = [];
  private batchFlush: NodeJS.Immediate | null = null;
  private selfDrainScheduled = false;
  private tickTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Broadcasts repeat one message object per rank: encode (and HMAC) it once. */
  private lastEncoded: SystemMessage | null = null;
  private lastFrame: Frame | null = null;
  private activity = emptyActivity();
  readonly stats: ReplicaDriverStats = {
    clientOps: 0,
    completedOps: 0,
    selfMessages: 0,
    peerMessagesIn: 0,
    spoofedSelfMessages: 0,
  };

  constructor(private readonly options: ReplicaDriverOptions) {
    this.core = new RegisterCore({
      rank: options.rank,
      replicaCount: options.replicaCount,
      newOpId: () => this.newOpId(),
      tagFloor: options.tags.reservedTs,
    });
  }

  /** Random bytes for op ids, drawn in bulk: one getrandom per OP_ID_POOL ids, not one per id. */
  private opIdPool = Buffer.alloc(0);
  private opIdPoolOffset = 0;

  /** A random (v4) UUID as 16 bytes. */
  private newOpId(): Buffer {
    if (this.opIdPoolOffset + OP_ID_BYTES > this.opIdPool.length) {
      this.opIdPool = randomBytes(OP_ID_BYTES * OP_ID_POOL);
      this.opIdPoolOffset = 0;
    }
    const random = this.opIdPool.subarray(this.opIdPoolOffset, this.opIdPoolOffset + OP_ID_BYTES);
    this.opIdPoolOffset += OP_ID_BYTES;
    return uuidv4({ random }, Buffer.allocUnsafe(OP_ID_BYTES));
  }

  /**
   * Ticks only while the core needs them (an operation it coordinates may have to retransmit): an
   * idle replica then sleeps instead of waking 20 times a second. Before any other event after a
   * pause the core gets one tick with the current time, so a new phase's retransmission time is
   * counted from now, not from when the ticks stopped.
   */
  start(): void {
    this.run({ kind: "tick", nowMs: performance.now() });
  }

  private readonly tick = (): void => {
    this.run({ kind: "tick", nowMs: performance.now() });
  };

  /** Whether the core's clock is being ticked (tests: an idle replica does not tick). */
  isTicking(): boolean {
    return this.tickTimer !== null;
  }

  /** Stops ticking and ignores every later completion; in-flight client ops get no answer. */
  stop(): void {
    this.stopped = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.tickTimer = null;
    this.pending.clear();
    this.selfQueue = [];
    this.batched = [];
    if (this.batchFlush !== null) clearImmediate(this.batchFlush);
    this.batchFlush = null;
  }

  clientCommand(connection: InboundConnection, command: ClientCommand): void {
    if (this.stopped) return;
    const token = this.nextToken++;
    const { requestNumber, sectorIndex } = command;
    const startedMs = performance.now();
    this.stats.clientOps++;
    switch (command.kind) {
      // Single-sector commands of one event-loop turn go to the core together, so that it can
      // let them share messages (rule 8 of the core).
      case "clientRead":
        this.pending.set(token, {
          connection,
          requestNumber,
          command: "read",
          sectorCount: undefined,
          startedMs,
        });
        this.batch({ kind: "read", token, sectorIndex });
        return;
      case "clientWrite":
        this.pending.set(token, {
          connection,
          requestNumber,
          command: "write",
          sectorCount: undefined,
          startedMs,
        });
        this.batch({ kind: "write", token, sectorIndex, data: command.data });
        return;
      case "clientReadRange":
      case "clientZeroMap": {
        // Batched commands arrived first: they go first (per-sector arrival order).
        this.flushBatch();
        const { sectorCount } = command;
        this.pending.set(token, {
          connection,
          requestNumber,
          // A ZERO_MAP is the run's register read; only its answer differs (see complete()).
          command: command.kind === "clientZeroMap" ? "zeroMap" : "readRange",
          sectorCount,
          startedMs,
        });
        this.run({ kind: "clientRead", token, sectorIndex, sectorCount });
        return;
      }
      case "clientWriteRange": {
        this.flushBatch();
        const { sectorCount, data } = command;
        this.pending.set(token, {
          connection,
          requestNumber,
          command: "writeRange",
          sectorCount,
          startedMs,
        });
        this.run({ kind: "clientWrite", token, sectorIndex, sectorCount, data });
        return;
      }
      case "clientHeldMap":
      case "clientHeldPages": {
        // Not a register operation: this replica's own index, answered at once.
        const { sectorCount } = command;
        const { store } = this.options;
        const pages = command.kind === "clientHeldPages";
        const bits = bitmapOfMarked(sectorCount, (mark) =>
          pages
            ? store.markHeldPages(sectorIndex, sectorCount, mark)
            : store.markHeld(sectorIndex, sectorCount, mark),
        );
        this.stats.completedOps++;
        connection.completeCommand({
          kind: "clientResponse",
          command: pages ? "heldPages" : "heldMap",
          status: ResponseStatus.Ok,
          requestNumber,
          sectorCount,
          data: bits,
        });
        return;
      }
      case "clientWriteSectors": {
        // As that many WRITEs arriving together: single-sector ops of this turn's batch.
        const { sectorCount, sectors, data } = command;
        const op: PendingClientOp = {
          connection,
          requestNumber,
          command: "writeSectors",
          sectorCount,
          startedMs,
          remaining: sectorCount,
        };
        for (let i = 0; i < sectorCount; i++) {
          const part = i === 0 ? token : this.nextToken++;
          this.pending.set(part, op);
          const sectorData = data.subarray(i * SECTOR_SIZE_BYTES, (i + 1) * SECTOR_SIZE_BYTES);
          this.batch({ kind: "write", token: part, sectorIndex: sectors[i]!, data: sectorData });
        }
        return;
      }
      default:
        unreachable(command);
    }
  }

  private batch(op: ClientBatchOp): void {
    this.batched.push(op);
    if (this.batched.length >= BATCH_MAX_COMMANDS) {
      this.flushBatch();
      return;
    }
    if (this.batchFlush === null) this.batchFlush = setImmediate(this.flushBatch);
  }

  private readonly flushBatch = (): void => {
    if (this.batchFlush !== null) clearImmediate(this.batchFlush);
    this.batchFlush = null;
    if (this.batched.length === 0) return;
    const ops = this.batched;
    this.batched = [];
    this.run({ kind: "clientBatch", ops });
  };

  peerMessage(message: SystemMessage): void {
    if (this.stopped) return;
    // Only this process speaks for its rank; a copy from the network is a misconfigured twin.
    if (message.sender === this.options.rank) {
      this.stats.spoofedSelfMessages++;
      return;
    }
    this.stats.peerMessagesIn++;
    this.activity.peerMessagesIn++;
    this.options.peers.get(message.sender)?.kick();
    this.run({ kind: "message", message });
  }

  private run(event: CoreEvent): void {
    if (this.stopped) return;
    if (this.tickTimer === null && event.kind !== "tick") {
      // Nothing in the clock's way: the core is idle, so this tick has no effects.
      const effects = this.core.step({ kind: "tick", nowMs: performance.now() });
      assert(effects.length === 0, "a tick of an idle core does nothing");
    }
    const effects = this.core.step(event);
    try {
      for (const effect of effects) this.apply(effect);
      if (this.loads.length > 0) this.startLoads();
      if (this.tagLoads.length > 0) this.startTagLoads();
      if (this.core.needsTicks() !== (this.tickTimer !== null)) {
        if (this.tickTimer === null) this.tickTimer = setInterval(this.tick, CORE_TICK_MS);
        else {
          clearInterval(this.tickTimer);
          this.tickTimer = null;
        }
      }
    } finally {
      // The encoding cache only spans one step, so a message object the core reuses later is
      // never sent with stale bytes.
      this.lastEncoded = null;
      this.lastFrame = null;
    }
  }

  /** The data loads of one step go to the store together, so adjacent sectors share reads. */
  private startLoads(): void {
    const sectors = this.loads;
    this.loads = [];
    this.options.store.loadMany(sectors).then(
      (states) => {
        for (const [i, sectorIndex] of sectors.entries()) {
          if (states[i] === null) this.options.logger.error({ sectorIndex }, "corrupt sector record");
        }
        this.run({ kind: "loadedMany", sectorIndexes: sectors, states });
      },
      (err) => this.fatal(err),
    );
  }

  /** The tag loads of one step: one store call and one core step for all of them. */
  private startTagLoads(): void {
    const sectors = this.tagLoads;
    this.tagLoads = [];
    this.options.store.loadTags(sectors).then(
      (tags) => this.run({ kind: "tagsLoaded", sectorIndexes: sectors, tags }),
      (err) => this.fatal(err),
    );
  }

  private apply(effect: CoreEffect): void {
    switch (effect.kind) {
      case "send":
        this.send(effect.to, effect.message);
        return;
      case "persist": {
        const token = effect.token;
        const { store } = this.options;
        const items = effect.items;
        const startedMs = performance.now();
        const durable =
          items.length === 1
            ? store.persist(items[0]!.sectorIndex, items[0]!.state)
            : store.persistMany(items);
        durable.then(
          () => {
            this.activity.persists.record(startedMs);
            this.activity.sectorsPersisted += items.length;
            this.run({ kind: "persisted", token });
          },
          (err) => this.fatal(err),
        );
        return;
      }
      case "load":
        this.loads.push(effect.sectorIndex);
        return;
      case "loadTag":
        this.tagLoads.push(effect.sectorIndex);
        return;
      case "reserveTags": {
        const { upToTs } = effect;
        this.options.tags.reserve(upToTs).then(
          () => this.run({ kind: "tagsReserved", upToTs }),
          (err) => this.fatal(err),
        );
        return;
      }
      case "complete":
        this.complete(effect.token, effect.data);
        return;
      default:
        unreachable(effect);
    }
  }

  private send(to: number, message: SystemMessage): void {
    if (to === this.options.rank) {
      this.stats.selfMessages++;
      this.selfQueue.push(message);
      if (!this.selfDrainScheduled) {
        this.selfDrainScheduled = true;
        queueMicrotask(this.drainSelf);
      }
      return;
    }
    const link = this.options.peers.get(to);
    assert(link !== undefined, `no link to rank ${to}`);
    if (!link.canSend()) {
      // Dropped before paying for the HMAC; the core retransmits the unfinished phase later.
      link.stats.droppedFrames++;
      return;
    }
    if (this.lastEncoded !== message) {
      this.lastEncoded = message;
      this.lastFrame = encodeSystemMessageFrame(message, this.options.systemKey);
    }
    link.send(this.lastFrame!);
  }

  private readonly drainSelf = (): void => {
    this.selfDrainScheduled = false;
    const batch = this.selfQueue;
    this.selfQueue = [];
    for (const message of batch) this.run({ kind: "message", message });
  };

  private complete(token: number, data: Buffer | undefined): void {
    const op = this.pending.get(token);
    if (op === undefined) return;
    this.pending.delete(token);
    if (op.remaining !== undefined && --op.remaining > 0) return;
    this.stats.completedOps++;
    const isRead = op.command === "read" || op.command === "readRange" || op.command === "zeroMap";
    // Single-sector commands carry no sector count.
    const sectors = op.sectorCount ?? 1;
    if (isRead) {
      this.activity.readCommands.record(op.startedMs);
      this.activity.sectorsRead += sectors;
    } else {
      this.activity.writeCommands.record(op.startedMs);
      this.activity.sectorsWritten += sectors;
    }
    if (isRead) assert(data !== undefined, "a completed read carries its value");
    // A client that went away simply loses its reply.
    if (!op.connection.isOpen()) return;
    op.connection.completeCommand({
      kind: "clientResponse",
      command: op.command,
      status: ResponseStatus.Ok,
      requestNumber: op.requestNumber,
      ...(op.sectorCount !== undefined ? { sectorCount: op.sectorCount } : {}),
      ...(isRead ? { data: op.command === "zeroMap" ? zeroBitmap(data!, sectors) : data } : {}),
    });
  }

  /**
   * Completed client commands (count and latency from arrival to answer, reads and writes), sectors
   * read, written and made durable, and peer messages since the last call; null if nothing happened.
   */
  takeActivity(): Record<string, unknown> | null {
    const a = this.activity;
    this.activity = emptyActivity();
    const reads = a.readCommands.take();
    const writes = a.writeCommands.take();
    const persists = a.persists.take();
    if (reads === undefined && writes === undefined && persists === undefined && a.peerMessagesIn === 0)
      return null;
    // The summary of an empty kind is undefined, which the JSON line leaves out.
    return {
      reads,
      writes,
      persists,
      sectorsRead: a.sectorsRead,
      sectorsWritten: a.sectorsWritten,
      sectorsPersisted: a.sectorsPersisted,
      peerMessagesIn: a.peerMessagesIn,
    };
  }

  private fatal(err: unknown): void {
    if (this.stopped) return;
    this.stop();
    this.options.onFatal(err);
  }
}
