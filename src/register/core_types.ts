// Events into and effects out of the register core (sans-IO, SPEC §2). The core never touches a
// socket, a file or a clock: drivers (src/net + src/storage for real, src/sim for simulation)
// feed it events and carry out the effects it returns, in order.
import type { SystemMessage } from "../protocol/messages.js";
import type { SectorState } from "../storage/sector_state.js";
import type { PersistItem } from "../storage/sector_store.js";

/** A driver-chosen handle for one client operation; echoed in its `complete` effect. */
export type ClientOpToken = number;
/** A core-chosen handle for one persist; the driver answers with `persisted` once durable. */
export type PersistToken = number;

export type CoreEvent =
  /**
   * A client command (sectors already validated against the volume size by the driver) on the run
   * [sectorIndex, sectorIndex + sectorCount); sectorCount defaults to 1 and is at most
   * MAX_RANGE_SECTORS. Each sector of a run is its own register: a run shares messages and waits
   * for the FIFO turn of every one of its sectors, nothing more.
   */
  | { kind: "clientRead"; token: ClientOpToken; sectorIndex: number; sectorCount?: number }
  /** `data` holds sectorCount * SECTOR_SIZE_BYTES bytes. */
  | { kind: "clientWrite"; token: ClientOpToken; sectorIndex: number; sectorCount?: number; data: Buffer }
  /**
   * Single-sector commands that arrived together, in arrival order; each is answered on its own.
   * The core may let them share messages (rule 8 in register_core.ts).
   */
  | { kind: "clientBatch"; ops: ClientBatchOp[] }
  /** A system message from any rank, this replica's own included (delivered without the network). */
  | { kind: "message"; message: SystemMessage }
  /** The persist with this token is durable. */
  | { kind: "persisted"; token: PersistToken }
  /**
   * Answers to `load` effects, one or many at once (states[i] for sectorIndexes[i], in order, so
   * a driver can answer a step's loads in one step); a null state means that stored record is
   * corrupt.
   */
  | {
      kind: "loadedMany";
      sectorIndexes: readonly number[];
      states: ReadonlyArray<SectorState | null>;
    }
  /** Answers to `loadTag` effects, as `loadedMany`; a null tag means the record is known corrupt. */
  | {
      kind: "tagsLoaded";
      sectorIndexes: readonly number[];
      tags: ReadonlyArray<{ ts: bigint; wr: number } | null>;
    }
  /** A `reserveTags` effect is durable: own tags with ts up to `upToTs` may be sent. */
  | { kind: "tagsReserved"; upToTs: bigint }
  /** Time passes; drives retransmission. `nowMs` never decreases. */
  | { kind: "tick"; nowMs: number };

/** One command of a `clientBatch`. */
export type ClientBatchOp =
  | { kind: "read"; token: ClientOpToken; sectorIndex: number }
  | { kind: "write"; token: ClientOpToken; sectorIndex: number; data: Buffer };

export type CoreEffect =
  /**
   * Send a system message to rank `to` (possibly this replica's own rank: deliver it back as a
   * `message` event later, never re-entrantly, without network or HMAC).
   */
  | { kind: "send"; to: number; message: SystemMessage }
  /**
   * Store these states (distinct sectors) durably, then report `persisted(token)` once all of them
   * are durable. Persists of one sector keep their order across effects.
   */
  | { kind: "persist"; token: PersistToken; items: PersistItem[] }
  /** Read the sector's stored state and report it in a `loadedMany` event. */
  | { kind: "load"; sectorIndex: number }
  /**
   * Look up only the tag of the sector's stored state (no data read; the store knows it from its
   * index) and report it in a `tagsLoaded` event.
   */
  | { kind: "loadTag"; sectorIndex: number }
  /**
   * Durably record that this replica may put timestamps up to `upToTs` in tags of its own (the
   * value only ever grows; it survives a crash and comes back as the `tagFloor` option), then
   * report `tagsReserved`.
   */
  | { kind: "reserveTags"; upToTs: bigint }
  /** The client operation finished; for reads `data` is the value read (every sector of the run). */
  | { kind: "complete"; token: ClientOpToken; data?: Buffer };

/**
 * Deliberately broken variants, for proving that the simulator catches bugs. Test-only: the CLI
 * and the replica process never set these.
 */
export interface CoreFaults {
  /** READ returns right after the query phase without writing back. */
  skipReadWriteBack?: boolean;
  /** ACK a WRITE_PROC before its persist is durable. */
  ackBeforeDurable?: boolean;
  /** Quorum of floor(N/2) instead of floor(N/2)+1. */
  quorumTooSmall?: boolean;
  /** Count every reply, duplicates from one rank included. */
  countDuplicateReplies?: boolean;
  /** Neither raise new tags above the restart floor nor wait for reservations (rule 2). */
  ignoreTagFloor?: boolean;
  /**
   * READ returns its own data, without a write-back, even when a peer reported a higher tag than
   * its own (rule 9 falls back to reading from everyone instead).
   */
  ownDataDespiteNewerTag?: boolean;
  /**
   * A load answer for several sectors gives every one of them the first sector's state or tag (an
   * off-by-one in a driver's batching; only events with more than one sector can show it).
   */
  misrouteLoadedStates?: boolean;
}

export interface RegisterCoreOptions {
  /** This replica's rank, 1..replicaCount. */
  rank: number;
  replicaCount: number;
  /** Fresh 16-byte operation ids (random UUIDs in production, seeded in simulation). */
  newOpId: () => Buffer;
  /** First retransmission delay of an unfinished phase; doubles up to retransmitMaxMs. */
  retransmitInitialMs?: number;
  retransmitMaxMs?: number;
  /**
   * The durable tag reservation at start (the last `reserveTags` value made durable): every
   * timestamp this replica ever put in a tag of its own before this start is at most this. 0 for a
   * replica that never wrote.
   */
  tagFloor?: bigint;
  /** Idle sectors kept in memory before least-recently-used ones are dropped. */
  cacheCapacitySectors?: number;
  faults?: CoreFaults;
}
