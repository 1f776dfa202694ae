// The register algorithm of SPEC §2 as a pure state machine: events in, effects out, no I/O.
//
// Safety arguments for the choices that go beyond the letter of the spec (each one is exercised by
// the simulator in src/sim):
//
// 1. ACK only when durable. A replica ACKs WRITE_PROC(T) only once its *durable* tag is >= T.
//    This also covers a duplicate WRITE_PROC that arrives while the first copy's persist is still
//    in flight (answering "not newer, ACK" at once would acknowledge a non-durable state), and a
//    WRITE_PROC whose tag is superseded by a newer persist that is not yet durable.
//
// 2. Unique tags across crashes, with the coordinator's own store off the critical path. A writer
//    picks (maxts + 1, rank). If it could crash after some replica stored (t, rank, v) and, after
//    restarting, pick (t, rank) again for another value, two values would share a tag and reads
//    could flip between them. SPEC §2 prevents that by making the coordinator store its new state
//    durably before any WRITE_PROC leaves, which puts one fsync in front of the peers' on every
//    write. Instead, a replica keeps a durable *tag reservation* R (reserveTags): it sends a tag
//    (t, rank) of its own only once t <= R is durable, and after a restart (tagFloor = the R that
//    survived) every new tag of its own has t > that R. So every tag (t, rank) sent before a crash
//    has t <= R_durable < every tag sent after it: tags stay unique. Given that, the coordinator
//    is simply one of the replicas its WRITE_PROC goes to (it stores the state when its own copy
//    arrives, like any replica, ACKs once durable, and counts towards the majority like any
//    other): exactly ABD with a writer that is not a replica, whose correctness needs no store at
//    the writer. Reservations are TAG_RESERVATION_STEP ahead, so one is written per restart and
//    then once per 2^20 increments of the highest timestamp. A write's query still includes the
//    coordinator's own VALUE (it keeps the new tag above what this replica stored, rule 5).
//
// 3. VALUE (and TAG_VALUE, and their range forms) reports the replica's *durable* state only
//    (never a persist still in flight). A durable tag never decreases, and every ACK was sent for
//    a durable tag, so this is as good as the latest state for the algorithm. It buys a safe fast
//    path (SPEC §2 "optimizations"): when the quorum of a READ's answers all carry the highest
//    tag, that value is already durable on a majority and any later query intersects that
//    majority, so the write-back can be skipped.
//
// 4. Corrupt local state (storage checksum failure) is never served: READ_PROC (and, once the
//    damage is known, READ_TAG_PROC) gets no answer (as if this replica were down for that
//    sector) and a WRITE_PROC heals the sector by storing the incoming state; until that persist
//    is durable the sector stays corrupt (unserved, and not reloaded, since the store would
//    return the state still in flight), then it may be ACKed. A WRITE coordinated here waits,
//    because it needs its own VALUE (rule 2), until another coordinator's write or read heals it
//    (a READ coordinated here falls back to the other replicas' data, rule 9).
//    When only the sector's tag was loaded (rule 7) and a later data load finds the data corrupt,
//    the issued tag is already the stored one, so only a higher tag heals it; ACKs for lower tags
//    are still right (this replica durably holds a higher tag), and reads never count this
//    replica's data until it is healed, so any read quorum still meets a write quorum at a
//    replica that answers (a tag it reported before the damage was found is rule 9's last case).
//
// 5. A coordinator's new tag is (max(query maximum, own issued tag).ts + 1, rank). The query
//    maximum alone (SPEC §2) can be below a tag this replica stored meanwhile for a concurrent
//    write; persisting the lower tag afterwards would roll back a durable, ACKed state on this
//    disk. Found by the simulator (seeds 50743 and 100795). Any tag above the query maximum keeps
//    ABD's argument intact, so taking the larger base is safe.
//
// 6. Range operations (extensions 0x82..0x8B) are the per-sector algorithm run for every sector of
//    a run [start, start + count) at once, sharing messages: one query and one update message per
//    rank carry all the run's sectors. Per sector this is exactly ABD: a range WRITE's query phase
//    asks for the highest durable tag over the run (TAG_RANGE_VALUE), which bounds every sector's
//    tag from above, so the single new tag (max(query maximum, own issued tags of the run).ts + 1,
//    rank) is above each sector's query maximum and own issued tag (rule 5); WRITE_RANGE_PROC
//    leaves, to every replica this one included, once this replica's tag reservation covers it
//    (rule 2). A range READ keeps, per sector, the highest-tagged value and how many ranks
//    reported it; it skips its write-back only when every sector of the run meets rule 3's
//    condition, and otherwise writes back each sector with its own highest tag (WRITE_RANGE_PROC
//    carries a tag per sector). A replica answers a range message only when it could answer the
//    single-sector message for every sector of the run (rule 4: a corrupt sector makes it stay
//    silent), and ACKs a WRITE_RANGE_PROC only once every sector's durable tag covers that
//    sector's tag (rule 1). A range operation enters the FIFO of every sector of its run at once,
//    in arrival order, and starts when it heads all of them: any two operations sharing sectors
//    are then in the same order in every shared FIFO, so they can never wait for each other in a
//    cycle. A run need not be consecutive: the messages carry their sector list, and all of the
//    above holds for any set of distinct sectors.
//
// 7. Tag-only loads. READ_TAG_PROC, WRITE_PROC and their range forms (READ_TAG_RANGE_PROC,
//    READ_TAGS_RANGE_PROC, WRITE_RANGE_PROC) need a sector's durable tag, not its data, so an
//    uncached sector is looked up with `loadTag` (the store answers from its in-memory index, no
//    disk read); only READ_PROC / READ_RANGE_PROC load the data, and since rule 9 a READ sends
//    those to its own replica only. A loaded tag or state is taken only while no persist of the
//    sector is in flight (the store reports the latest persisted state, durable or not, and only a
//    durable one may be shown, rule 3); a data load is not even started while one is in flight,
//    since its durable completion makes the state known anyway.
//
// 8. Batches. Single-sector client commands that reach the replica together (`clientBatch`) are
//    grouped into operations over sector sets (rule 6), one for reads and one for writes, each
//    command keeping its own answer. A command whose sector is busy here (an operation running or
//    queued) or already in the current group is not grouped, and a repeat closes the groups first,
//    so per-sector arrival order is kept and no command waits behind another sector's FIFO. Each
//    command takes effect between its arrival and its answer, as alone.
//
// 9. Reads move data from one replica. A READ's query sends READ_PROC (READ_RANGE_PROC for a
//    run or a batch) to this replica only, and READ_TAG_PROC (READ_TAGS_RANGE_PROC: a tag per
//    sector) to the others, which answer from their index without loading data (rule 7). The
//    query completes once a majority has answered and either this replica's own answer is among
//    them or every sector's highest tag came with data; then, per sector, T = the highest tag
//    reported and c = how many ranks reported exactly T.
//    - Why returning data that came from one replica, with tags that came from others, is still
//      ABD: ABD's query needs only two things of its replies, that they come from a majority and
//      were sent after the read began, and it uses them only to choose T; the value returned is
//      then T's value. Tags are unique per value (rule 2, across crashes too), so a VALUE
//      carrying T, this replica's own or any peer's, holds exactly T's value, wherever it came
//      from. Reports are of durable state (rule 3), so a TAG_VALUE is as good as a VALUE for
//      choosing T and counting c. Retransmissions ask with the standard READ_PROC (a replica
//      that does not know the tag types drops them, SPEC §1.4, and answers the retry), so any
//      VALUE with T may supply the data; usually it is the own one.
//    - Fast path: if c >= majority, T is durable on a majority, so every later query meets a
//      replica holding T or newer, and the read returns without a write-back (rule 3's
//      argument). Otherwise the read writes back (T, its value) as before, for each sector with its
//      own T (rule 6): a T reported by fewer than a majority (say only the own replica) may sit
//      on a minority that a later query misses, and returning T, then a later read returning an
//      older value, would be a new-old inversion.
//    - Fallback: if some sector's T came only from TAG answers (a peer holds a newer value than
//      this replica: a write or write-back that has not reached it yet), T's value is unknown
//      here. Returning the own, older value could return a value older than a write that already
//      completed, so the read runs its query again under a fresh id, asking every replica for
//      data (SPEC §2 as written; TAG answers do not count there), and continues from that query.
//    - Liveness: the own answer may never come (a corrupt sector stays silent, rule 4). A read
//      whose query has its majority but lacks some sector's data waits for its own answer only
//      until its next retransmission time, then falls back as above; the fallback needs no
//      answer from this replica. The fallback counts VALUEs only, so a replica whose data went
//      bad behind an intact tag (it may report T before a data load finds the damage) is never
//      taken for a holder of the data: it stays silent to READ_PROC, as in the spec's algorithm,
//      and since at most N - c < majority replicas did not report T, any majority of VALUEs
//      still includes one holding T or newer.
import type {
  RangeAckMessage,
  RangeValueMessage,
  ReadRangeProcMessage,
  ReadTagRangeProcMessage,
  ReadTagsRangeProcMessage,
  SystemMessage,
  TagRangeValueMessage,
  TagsRangeValueMessage,
  TagValueMessage,
  ValueMessage,
  WireTag,
  WriteProcMessage,
  WriteRangeProcMessage,
} from "../protocol/messages.js";
import { compareTags, type SectorState } from "../storage/sector_state.js";
import type { PersistItem } from "../storage/sector_store.js";
import { assert, unreachable } from "../util/assert.js";
import {
  CORE_CACHE_SECTORS,
  MAX_RANGE_SECTORS,
  MAX_REPLICAS,
  RETRANSMIT_INITIAL_MS,
  RETRANSMIT_MAX_MS,
  SECTOR_SIZE_BYTES,
  TAG_RESERVATION_STEP,
} from "../util/limits.js";
import type {
  ClientBatchOp,
  ClientOpToken,
  CoreEffect,
  CoreEvent,
  CoreFaults,
  PersistToken,
  RegisterCoreOptions,
} from "./core_types.js";

interface Tag {
  ts: bigint;
  wr: number;
}

const ZERO_TAG: Tag = { ts: 0n, wr: 0 };

/**
 * The shared value of a sector entry's lists while empty: most cached sectors never wait for
 * anything, and four arrays each made the entry five objects for the garbage collector to trace
 * (the cache holds thousands). Frozen, so a push that bypasses `appended` fails loudly.
 */
const NONE = Object.freeze([]) as unknown as never[];

/** `list` with `item` at the end: a new array in place of NONE, otherwise `list` itself. */
function appended<T>(list: T[], item: T): T[] {
  if (list === NONE) return [item];
  list.push(item);
  return list;
}

/** More than half of the replicas. */
export function quorumSize(replicaCount: number): number {
  assert(Number.isInteger(replicaCount) && replicaCount >= 1, "replicaCount must be a positive integer");
  return Math.floor(replicaCount / 2) + 1;
}

/** Who gets (part of) an operation's answer: sectors [first, first + count) of its set. */
interface Completion {
  token: ClientOpToken;
  first: number;
  count: number;
}

interface ClientOp {
  kind: "read" | "write";
  /** Strictly increasing; one sector uses the standard single-sector messages. */
  sectors: number[];
  /** One for a client command (a range command covers every sector); one per sector for a batch. */
  completions: Completion[];
  /** The value to write, sectors.length sectors in the order of `sectors` (writes only). */
  data: Buffer | null;
}

interface Phase {
  kind: "query" | "update";
  /** Ranks that answered this phase (each counts once). */
  answered: Set<number>;
  /** Replies counted; equals answered.size unless the countDuplicateReplies fault is on. */
  replyCount: number;
  /** The message resent to ranks that have not answered (may differ from the first one sent). */
  retransmitMessage: SystemMessage;
  retransmitAtMs: number;
  retransmitDelayMs: number;
}

interface ActiveOp {
  client: ClientOp;
  opId: Buffer;
  /** null between the two phases, while the new tag waits for the tag reservation (rule 2). */
  phase: Phase | null;
  /**
   * Rule 9: a read's query that asks only this replica for data and the others for tags; false
   * for writes and for a read's fallback query, which asks every replica for data.
   */
  optimistic: boolean;
  /**
   * Highest tag of the query phase, with the data of a VALUE carrying it (null while only
   * TAG_VALUEs reported it).
   */
  best: { ts: bigint; wr: number; data: Buffer | null } | null;
  /** This replica's own VALUE in the query (single-sector reads; used by a broken variant only). */
  own: { ts: bigint; wr: number; data: Buffer } | null;
  /** How many distinct ranks reported exactly `best`'s tag. */
  bestCount: number;
  /** The state a write stores and then imposes (set once the query phase completes). */
  written: SectorState | null;
  /** Range operations (count > 1) only; null otherwise. */
  range: RangeProgress | null;
}

/** What a range operation (rule 6) accumulates across its phases. */
interface RangeProgress {
  /**
   * Range READ query: per sector, the highest tag seen, the data of a RANGE_VALUE carrying it
   * (null while only TAGS_RANGE_VALUEs reported it, rule 9) and how many ranks reported it.
   */
  bestTags: Tag[];
  bestData: (Buffer | null)[];
  bestCounts: number[];
  /** This replica's own RANGE_VALUE data in a read's query (used by a broken variant only). */
  ownData: Buffer | null;
  /** What the update phase imposes: a tag per sector and count sectors of data. */
  writtenTags: WireTag[] | null;
  writtenData: Buffer | null;
}

/** A WRITE_RANGE_PROC waiting for its sectors to become durable (rule 6). */
interface RangeAckWaiter {
  to: number;
  opId: Buffer;
  sectors: number[];
  /** Sectors whose durable tag does not cover their tag yet. */
  remaining: number;
}

type RangeProcMessage =
  | ReadRangeProcMessage
  | ReadTagRangeProcMessage
  | ReadTagsRangeProcMessage
  | WriteRangeProcMessage;

/** A range READ_PROC / READ_TAG_PROC(S) / WRITE_PROC waiting for sectors of its run to load. */
interface RangeDeferral {
  message: RangeProcMessage;
  missing: number;
}

interface AckWaiter {
  to: number;
  opId: Buffer;
  tag: Tag;
  /** Set when this sector is one of a WRITE_RANGE_PROC's run: the ACK is the run's RANGE_ACK. */
  range: RangeAckWaiter | null;
}

interface SectorEntry {
  sectorIndex: number;
  /** Touched since the eviction scan last passed it (second-chance LRU, see #evictIdle). */
  used: boolean;
  /** The durable state, shown to READ_PROC (rule 3); null until loaded. */
  state: SectorState | null;
  /** Rule 7: the durable tag is known (durableTag) though the data is not loaded. */
  tagOnly: boolean;
  loading: "tag" | "data" | null;
  corrupt: boolean;
  /** Highest tag of any persist issued for this sector (durable or not). */
  issuedTag: Tag;
  /** Highest tag known durable. */
  durableTag: Tag;
  pendingPersists: number;
  ackWaiters: AckWaiter[];
  /** READ_PROC / WRITE_PROC that arrived before the state was loaded, in arrival order. */
  deferred: SystemMessage[];
  /** Range messages waiting (also) for this sector to load. */
  deferredRanges: RangeDeferral[];
  /** Range messages being deferred that cover this sector: keeps the entry from eviction. */
  pins: number;
  /** Client operations waiting for their turn on this sector (a range op is in each of its sectors' queues). */
  queue: ClientOp[];
  /** The coordinated operation running on this sector (a range op is active on all its sectors). */
  active: ActiveOp | null;
}

interface PersistRecord {
  items: PersistItem[];
  /**
   * Keep the data in the sector cache once durable. Only for a sector that owns its buffer: a
   * view into a run's buffer would keep the whole run (up to 1 MiB) alive for as long as any one
   * of its sectors stays cached, so for runs only the tag is kept (rule 7) and reads load.
   */
  cacheData: boolean;
}

function maxTag(a: Tag, b: Tag): Tag {
  return compareTags(a, b) >= 0 ? a : b;
}

function tagOf(state: SectorState): Tag {
  return { ts: state.ts, wr: state.wr };
}

function sameSectors(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function concatSectors(sectors: Buffer[]): Buffer {
  const out = Buffer.allocUnsafe(sectors.length * SECTOR_SIZE_BYTES);
  for (const [i, data] of sectors.entries()) data.copy(out, i * SECTOR_SIZE_BYTES);
  return out;
}

/**
 * Loaded data at most this large (a read of a few adjacent sectors) may stay in the cache: a view
 * into a bigger read is dropped once used (#dropBorrowedData).
 */
const CACHED_BUFFER_MAX_BYTES = 16 * SECTOR_SIZE_BYTES;

/** Whether a sector's data is (at most) a short read's buffer, so caching it pins little. */
function ownsItsMemory(data: Buffer): boolean {
  return data.buffer.byteLength <= CACHED_BUFFER_MAX_BYTES;
}

/** How far the sector cache may grow past its capacity before an eviction scan (see #evictIdle). */
export function evictionSlack(capacitySectors: number): number {
  return Math.max(1, Math.floor(capacitySectors / 16));
}

/**
 * Sector i of a run, as a view. Runs (WRITE_RANGE_PROC, any length) are persisted as views and
 * not cached (PersistRecord.cacheData): copying out their sectors to cache them cost an allocation
 * per sector per replica, and the external memory it churned drove V8 into a mark-compact about
 * twice a second under random 4 KiB writes; since reads take data only from their coordinator
 * (rule 9), a cached copy at the other replicas was seldom used anyway.
 */
function sectorOfRun(run: Buffer, i: number): Buffer {
  return run.subarray(i * SECTOR_SIZE_BYTES, (i + 1) * SECTOR_SIZE_BYTES);
}

export class RegisterCore {
  readonly #rank: number;
  readonly #replicaCount: number;
  readonly #quorum: number;
  readonly #newOpId: () => Buffer;
  readonly #retransmitInitialMs: number;
  readonly #retransmitMaxMs: number;
  readonly #cacheCapacitySectors: number;
  readonly #faults: CoreFaults;

  /** Sectors with any state in memory; Map order is least-recently-used first. */
  readonly #sectors = new Map<number, SectorEntry>();
  /** #evictIdle scans once the cache holds more sectors than this. */
  #evictAbove: number;
  /** Sectors whose coordinated operation is in a phase that may need retransmission. */
  readonly #activeSectors = new Set<number>();
  readonly #persists = new Map<PersistToken, PersistRecord>();
  /** Rule 2: new own tags are above this (every own tag of an earlier incarnation is not). */
  readonly #tagFloor: bigint;
  /** Rule 2: own tags up to this timestamp are durably reserved. */
  #reservedTs: bigint;
  /** The highest reservation asked for (durable or in flight). */
  #requestedTs: bigint;
  #awaitingReservation: Array<{ ts: bigint; start: () => void }> = [];
  #nextPersistToken: PersistToken = 1;
  #nowMs = 0;
  #effects: CoreEffect[] = [];

  constructor(options: RegisterCoreOptions) {
    const { rank, replicaCount } = options;
    assert(
      Number.isInteger(replicaCount) && replicaCount >= 1 && replicaCount <= MAX_REPLICAS,
      "replicaCount",
    );
    assert(Number.isInteger(rank) && rank >= 1 && rank <= replicaCount, "rank out of range");
    this.#rank = rank;
    this.#replicaCount = replicaCount;
    this.#faults = options.faults ?? {};
    this.#quorum = this.#faults.quorumTooSmall
      ? Math.max(1, Math.floor(replicaCount / 2))
      : quorumSize(replicaCount);
    this.#newOpId = options.newOpId;
    this.#retransmitInitialMs = options.retransmitInitialMs ?? RETRANSMIT_INITIAL_MS;
    this.#retransmitMaxMs = options.retransmitMaxMs ?? RETRANSMIT_MAX_MS;
    this.#cacheCapacitySectors = options.cacheCapacitySectors ?? CORE_CACHE_SECTORS;
    this.#evictAbove = this.#cacheCapacitySectors + evictionSlack(this.#cacheCapacitySectors);
    this.#tagFloor = options.tagFloor ?? 0n;
    assert(this.#tagFloor >= 0n && this.#tagFloor < 1n << 64n, "tag floor is a u64");
    this.#reservedTs = this.#tagFloor;
    this.#requestedTs = this.#tagFloor;
    assert(this.#retransmitInitialMs > 0 && this.#retransmitMaxMs >= this.#retransmitInitialMs, "retransmit");
  }

  /** Sectors currently held in memory (for tests and metrics). */
  residentSectorCount(): number {
    return this.#sectors.size;
  }

  step(event: CoreEvent): CoreEffect[] {
    assert(this.#effects.length === 0, "step is not re-entrant");
    switch (event.kind) {
      case "clientRead":
      case "clientWrite": {
        const count = event.sectorCount ?? 1;
        assert(Number.isInteger(count) && count >= 1 && count <= MAX_RANGE_SECTORS, "sector count");
        const data = event.kind === "clientWrite" ? event.data : null;
        if (data !== null) assert(data.length === count * SECTOR_SIZE_BYTES, "client write data size");
        const kind = event.kind === "clientWrite" ? "write" : "read";
        const sectors = Array.from({ length: count }, (_, i) => event.sectorIndex + i);
        this.#onClientOp({ kind, sectors, completions: [{ token: event.token, first: 0, count }], data });
        break;
      }
      case "clientBatch":
        this.#onClientBatch(event.ops);
        break;
      case "message":
        this.#onMessage(event.message);
        break;
      case "persisted":
        this.#onPersisted(event.token);
        break;
      case "loadedMany":
        assert(event.states.length === event.sectorIndexes.length, "a state per loaded sector");
        for (let i = 0; i < event.sectorIndexes.length; i++) {
          this.#onLoaded(event.sectorIndexes[i]!, event.states[this.#faults.misrouteLoadedStates ? 0 : i]!);
        }
        break;
      case "tagsLoaded":
        assert(event.tags.length === event.sectorIndexes.length, "a tag per loaded sector");
        for (let i = 0; i < event.sectorIndexes.length; i++) {
          this.#onTagLoaded(event.sectorIndexes[i]!, event.tags[this.#faults.misrouteLoadedStates ? 0 : i]!);
        }
        break;
      case "tagsReserved":
        this.#onTagsReserved(event.upToTs);
        break;
      case "tick":
        this.#onTick(event.nowMs);
        break;
      default:
        unreachable(event);
    }
    this.#evictIdle();
    const effects = this.#effects;
    this.#effects = [];
    return effects;
  }

  // ---- sector entries -------------------------------------------------------------------------

  #entry(sectorIndex: number): SectorEntry {
    assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0, "sector index");
    let entry = this.#sectors.get(sectorIndex);
    if (entry === undefined) {
      entry = {
        sectorIndex,
        used: false,
        state: null,
        tagOnly: false,
        loading: null,
        corrupt: false,
        issuedTag: ZERO_TAG,
        durableTag: ZERO_TAG,
        pendingPersists: 0,
        ackWaiters: NONE,
        deferred: NONE,
        deferredRanges: NONE,
        pins: 0,
        queue: NONE,
        active: null,
      };
      this.#sectors.set(sectorIndex, entry);
    } else {
      entry.used = true;
    }
    return entry;
  }

  #isIdle(entry: SectorEntry): boolean {
    return (
      entry.active === null &&
      entry.queue.length === 0 &&
      entry.pendingPersists === 0 &&
      entry.ackWaiters.length === 0 &&
      entry.deferred.length === 0 &&
      entry.pins === 0 &&
      entry.loading === null
    );
  }

  /**
   * Second-chance LRU over the Map's insertion order: a touch only sets `used` (a Map delete and
   * re-insert per touched sector showed up at ~4% of replica CPU with 256-sector messages); the scan
   * moves used entries to the back once, clearing the bit, and drops idle unused ones. Scans run
   * only once the cache is a slack (1/16) over its capacity, and bring it back to the capacity: a
   * scan on every step over the front of the Map, which holds the holes its deletions leave until
   * V8 compacts the table, took 45% of the core's time with 256-sector writes over a volume larger
   * than the cache. A scan that finds too few idle sectors waits for another slack of growth.
   */
  #evictIdle(): void {
    const size = this.#sectors.size;
    if (size <= this.#evictAbove) return;
    let excess = size - this.#cacheCapacitySectors;
    // Re-inserted entries come round again in the same iteration: visit each at most once.
    let visits = size;
    for (const [sectorIndex, entry] of this.#sectors) {
      if (excess <= 0 || visits-- <= 0) break;
      if (entry.used) {
        entry.used = false;
        this.#sectors.delete(sectorIndex);
        this.#sectors.set(sectorIndex, entry);
        continue;
      }
      // Only idle sectors leave memory: their state is whatever the store returns on the next load.
      if (this.#isIdle(entry)) {
        this.#sectors.delete(sectorIndex);
        excess--;
      }
    }
    this.#evictAbove =
      Math.max(this.#cacheCapacitySectors, this.#sectors.size) + evictionSlack(this.#cacheCapacitySectors);
  }

  // ---- replica role: READ_PROC / WRITE_PROC ---------------------------------------------------

  #onMessage(message: SystemMessage): void {
    assert(message.sender >= 1 && message.sender <= this.#replicaCount, "sender rank out of range");
    switch (message.kind) {
      case "readProc":
      case "readTagProc":
      case "writeProc":
        this.#dispatchProc(this.#entry(message.sectorIndex), message);
        return;
      case "value":
      case "tagValue":
        this.#onValue(message);
        return;
      case "ack":
        this.#onAck(message);
        return;
      case "readRangeProc":
      case "readTagRangeProc":
      case "readTagsRangeProc":
      case "writeRangeProc":
        this.#onRangeProc(message);
        return;
      case "rangeValue":
      case "tagRangeValue":
      case "tagsRangeValue":
        this.#onRangeValue(message);
        return;
      case "rangeAck":
        this.#onRangeAck(message);
        return;
      default:
        unreachable(message);
    }
  }

  /** Can a message be handled on this sector now? Corrupt sectors are handled (by silence). */
  #ready(entry: SectorEntry, needsData: boolean): boolean {
    return entry.corrupt || entry.state !== null || (!needsData && entry.tagOnly);
  }

  #dispatchProc(entry: SectorEntry, message: SystemMessage): void {
    const needsData = message.kind === "readProc";
    if (this.#ready(entry, needsData)) {
      this.#handleProc(entry, message);
      return;
    }
    entry.deferred = appended(entry.deferred, message);
    this.#requestLoad(entry, needsData);
  }

  /** Rule 7: the tag from the store's index, or the whole state when data is needed. */
  #requestLoad(entry: SectorEntry, needsData: boolean): void {
    // One load at a time; waiting messages are looked at again when it completes.
    if (entry.loading !== null) return;
    // A persist in flight will make the state known when it is durable.
    if (needsData && entry.pendingPersists > 0) return;
    entry.loading = needsData ? "data" : "tag";
    this.#effects.push({ kind: needsData ? "load" : "loadTag", sectorIndex: entry.sectorIndex });
  }

  #onLoaded(sectorIndex: number, state: SectorState | null): void {
    const entry = this.#sectors.get(sectorIndex);
    assert(entry?.loading === "data", "loaded without a load in flight");
    entry.loading = null;
    if (state === null) {
      entry.corrupt = true;
    } else if (
      entry.state === null &&
      entry.pendingPersists === 0 &&
      compareTags(tagOf(state), entry.durableTag) >= 0
    ) {
      assert(state.data.length === SECTOR_SIZE_BYTES, "loaded state must hold one sector");
      // Nothing in flight for this sector (rule 7): what the store holds is durable. A load older
      // than a persist that became durable meanwhile (its data not cached) is stale: load again.
      entry.state = state;
      entry.issuedTag = maxTag(entry.issuedTag, tagOf(state));
      entry.durableTag = maxTag(entry.durableTag, tagOf(state));
    }
    this.#retryDeferred(entry);
    this.#dropBorrowedData(entry);
  }

  /**
   * A loaded state whose data is a view into a larger read (the store reads adjacent sectors
   * together) is not kept in the cache once nothing waits for it: it would keep the whole read
   * alive. Only the tag stays known (rule 7).
   */
  #dropBorrowedData(entry: SectorEntry): void {
    const state = entry.state;
    if (state === null || ownsItsMemory(state.data)) return;
    if (entry.pins > 0 || entry.deferred.length > 0) return;
    entry.state = null;
    entry.tagOnly = true;
  }

  #onTagLoaded(sectorIndex: number, tag: Tag | null): void {
    const entry = this.#sectors.get(sectorIndex);
    assert(entry?.loading === "tag", "tag loaded without a load in flight");
    entry.loading = null;
    if (tag === null) {
      entry.corrupt = true;
    } else if (entry.state === null && entry.pendingPersists === 0) {
      entry.tagOnly = true;
      entry.issuedTag = maxTag(entry.issuedTag, tag);
      entry.durableTag = maxTag(entry.durableTag, tag);
    }
    this.#retryDeferred(entry);
  }

  /** Handles what waited for this sector and can go now; asks for loads for the rest. */
  #retryDeferred(entry: SectorEntry): void {
    if (entry.deferred.length > 0) {
      const deferred = entry.deferred;
      entry.deferred = NONE;
      for (const message of deferred) this.#dispatchProc(entry, message);
    }
    if (entry.deferredRanges.length > 0) {
      const ranges = entry.deferredRanges;
      entry.deferredRanges = NONE;
      for (const deferral of ranges) {
        const needsData = deferral.message.kind === "readRangeProc";
        if (!this.#ready(entry, needsData)) {
          entry.deferredRanges = appended(entry.deferredRanges, deferral);
          this.#requestLoad(entry, needsData);
        } else if (--deferral.missing === 0) {
          this.#runRangeProc(deferral.message);
        }
      }
    }
  }

  #handleProc(entry: SectorEntry, message: SystemMessage): void {
    if (message.kind === "readProc" || message.kind === "readTagProc") {
      // Rule 4: corrupt state is never served.
      if (entry.corrupt) return;
      const header = { sender: this.#rank, opId: message.opId, sectorIndex: entry.sectorIndex };
      if (message.kind === "readTagProc") {
        const tag = this.#durableTagOf(entry);
        this.#send(message.sender, { kind: "tagValue", ...header, ts: tag.ts, wr: tag.wr });
      } else {
        const state = entry.state;
        assert(state !== null, "READ_PROC is handled once the data is loaded");
        this.#send(message.sender, {
          kind: "value",
          ...header,
          ts: state.ts,
          wr: state.wr,
          data: state.data,
        });
      }
      return;
    }
    assert(message.kind === "writeProc", "only READ_PROC and WRITE_PROC are handled here");
    this.#onWriteProc(entry, message);
  }

  #onWriteProc(entry: SectorEntry, message: WriteProcMessage): void {
    const incoming: Tag = { ts: message.ts, wr: message.wr };
    // A corrupt entry was never given an issued tag, so any written tag heals it; it stays
    // corrupt (unserved, not reloaded) until that persist is durable.
    if (compareTags(incoming, entry.issuedTag) > 0) {
      // Cached once durable only if the data owns its memory: a client's WRITE_SECTORS hands in
      // views into one buffer of all its sectors, which one cached sector would keep alive.
      const cacheData = ownsItsMemory(message.data);
      this.#persist([entry], [{ ts: message.ts, wr: message.wr, data: message.data }], cacheData);
    }
    const waiter: AckWaiter = { to: message.sender, opId: message.opId, tag: incoming, range: null };
    if (this.#faults.ackBeforeDurable || compareTags(entry.durableTag, incoming) >= 0) {
      this.#sendAck(entry.sectorIndex, waiter);
    } else {
      entry.ackWaiters = appended(entry.ackWaiters, waiter);
    }
  }

  /** What TAG_VALUE reports: the durable tag (rule 3), from the state or a tag-only load (rule 7). */
  #durableTagOf(entry: SectorEntry): Tag {
    if (entry.state !== null) return tagOf(entry.state);
    assert(entry.tagOnly, "a tag is reported only once known");
    return entry.durableTag;
  }

  #sendAck(sectorIndex: number, waiter: AckWaiter): void {
    this.#send(waiter.to, { kind: "ack", sender: this.#rank, opId: waiter.opId, sectorIndex });
  }

  /**
   * One persist effect for new states of distinct sectors (states[i] for entries[i]): the store
   * makes them durable together and reports once.
   */
  #persist(entries: SectorEntry[], states: SectorState[], cacheData: boolean): void {
    assert(entries.length === states.length && entries.length > 0, "a persist has states");
    const token = this.#nextPersistToken++;
    const items: PersistItem[] = new Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      const state = states[i]!;
      // Persists of a sector take effect in call order, so they must rise in tag order: a lower
      // tag stored after a higher one would silently roll back a durable (maybe ACKed) state.
      assert(compareTags(state, entry.issuedTag) > 0, "persists of a sector rise in tag order");
      entry.issuedTag = tagOf(state);
      entry.pendingPersists++;
      items[i] = { sectorIndex: entry.sectorIndex, state };
    }
    this.#persists.set(token, { items, cacheData });
    this.#effects.push({ kind: "persist", token, items });
  }

  #onPersisted(token: PersistToken): void {
    const record = this.#persists.get(token);
    assert(record !== undefined, `persisted for unknown token ${token}`);
    this.#persists.delete(token);
    for (const { sectorIndex, state } of record.items) {
      const entry = this.#sectors.get(sectorIndex);
      assert(entry !== undefined && entry.pendingPersists > 0, "persisted for a sector with no persist");
      entry.pendingPersists--;
      const tag = tagOf(state);
      entry.durableTag = maxTag(entry.durableTag, tag);
      // Rules 2 and 3: a state becomes visible to READ_PROC only once durable. Persists of a
      // sector may be reported out of order: only the newest durable one is shown (or, for an
      // uncached run, its tag alone, rule 7).
      if (compareTags(tag, entry.durableTag) === 0) {
        // A range message waiting on this sector (pinned) is served the data rather than made to
        // load it again, so that a stream of writes cannot keep it waiting.
        entry.state = record.cacheData || entry.pins > 0 ? state : null;
        if (entry.state === null) entry.tagOnly = true;
      }
      entry.corrupt = false;
      if (entry.deferred.length > 0 || entry.deferredRanges.length > 0) this.#retryDeferred(entry);
      if (entry.ackWaiters.length > 0) {
        const waiting = entry.ackWaiters;
        entry.ackWaiters = NONE;
        for (const waiter of waiting) {
          if (compareTags(entry.durableTag, waiter.tag) < 0)
            entry.ackWaiters = appended(entry.ackWaiters, waiter);
          else if (waiter.range === null) this.#sendAck(entry.sectorIndex, waiter);
          else if (--waiter.range.remaining === 0) this.#sendRangeAck(waiter.range);
        }
      }
    }
  }

  // ---- coordinator role -----------------------------------------------------------------------

  #onClientOp(op: ClientOp): void {
    // Rule 6: the operation joins every FIFO of its run in one step.
    for (const sector of op.sectors) {
      const entry = this.#entry(sector);
      entry.queue = appended(entry.queue, op);
    }
    this.#tryStart(op);
  }

  /** Rule 8: groups independent single-sector commands into operations over sector sets. */
  #onClientBatch(ops: ClientBatchOp[]): void {
    type Item = { token: ClientOpToken; sector: number; data: Buffer | null };
    const groups: Record<"read" | "write", Item[]> = { read: [], write: [] };
    const grouped = new Set<number>();
    const flush = () => {
      for (const kind of ["read", "write"] as const) {
        const items = groups[kind].sort((a, b) => a.sector - b.sector);
        groups[kind] = [];
        if (items.length === 0) continue;
        this.#onClientOp({
          kind,
          sectors: items.map((item) => item.sector),
          completions: items.map((item, i) => ({ token: item.token, first: i, count: 1 })),
          data: kind === "write" ? concatSectors(items.map((item) => item.data!)) : null,
        });
      }
      grouped.clear();
    };
    for (const op of ops) {
      const data = op.kind === "write" ? op.data : null;
      if (data !== null) assert(data.length === SECTOR_SIZE_BYTES, "a batched write carries one sector");
      if (grouped.has(op.sectorIndex)) flush();
      const entry = this.#sectors.get(op.sectorIndex);
      if (entry !== undefined && (entry.active !== null || entry.queue.length > 0)) {
        const completions = [{ token: op.token, first: 0, count: 1 }];
        this.#onClientOp({ kind: op.kind, sectors: [op.sectorIndex], completions, data });
        continue;
      }
      groups[op.kind].push({ token: op.token, sector: op.sectorIndex, data });
      grouped.add(op.sectorIndex);
      if (groups[op.kind].length === MAX_RANGE_SECTORS) flush();
    }
    flush();
  }

  /** Starts `client` if it heads the FIFO of every sector of its run and none of them is busy. */
  #tryStart(client: ClientOp): void {
    for (const sector of client.sectors) {
      const entry = this.#sectors.get(sector);
      assert(entry !== undefined, "a queued operation keeps its sectors in memory");
      if (entry.active !== null || entry.queue[0] !== client) return;
    }
    const opId = this.#newOpId();
    assert(opId.length === 16, "operation ids are 16 bytes");
    const op: ActiveOp = {
      client,
      opId,
      phase: null,
      optimistic: false,
      best: null,
      own: null,
      bestCount: 0,
      written: null,
      range: null,
    };
    for (const sector of client.sectors) {
      const entry = this.#sectors.get(sector)!;
      entry.queue.shift();
      entry.active = op;
    }
    const entry = this.#sectors.get(client.sectors[0]!)!;
    if (client.sectors.length > 1) {
      this.#startRangeOp(entry, op);
      return;
    }
    const readProc: SystemMessage = {
      kind: "readProc",
      sender: this.#rank,
      opId,
      sectorIndex: entry.sectorIndex,
    };
    const readTagProc: SystemMessage = { ...readProc, kind: "readTagProc" };
    // A write needs only tags from its query. Retransmissions use the standard READ_PROC, so a
    // replica that does not know the extension still answers (with a full VALUE) on the retry.
    if (client.kind === "write") {
      this.#startPhase(entry, op, "query", readTagProc, readProc);
      return;
    }
    // Rule 9: a read asks only itself for the data, the others for their tags.
    op.optimistic = true;
    this.#startPhase(entry, op, "query", readTagProc, readProc, readProc);
  }

  /**
   * Sends `message` to every replica (`ownMessage` to this one) and waits for their answers;
   * ranks that have not answered get `retransmitMessage` at each retransmission time.
   */
  #startPhase(
    entry: SectorEntry,
    op: ActiveOp,
    kind: Phase["kind"],
    message: SystemMessage,
    retransmitMessage: SystemMessage = message,
    ownMessage: SystemMessage = message,
  ): void {
    op.phase = {
      kind,
      answered: new Set(),
      replyCount: 0,
      retransmitMessage,
      retransmitAtMs: this.#nowMs + this.#retransmitInitialMs,
      retransmitDelayMs: this.#retransmitInitialMs,
    };
    this.#activeSectors.add(entry.sectorIndex);
    for (let rank = 1; rank <= this.#replicaCount; rank++) {
      this.#send(rank, rank === this.#rank ? ownMessage : message);
    }
  }

  /** Records a reply; true when it is new (or counted anyway under the duplicate-counting fault). */
  #recordReply(phase: Phase, sender: number): boolean {
    const fresh = !phase.answered.has(sender);
    phase.answered.add(sender);
    if (fresh || this.#faults.countDuplicateReplies) {
      phase.replyCount++;
      return true;
    }
    return false;
  }

  #currentOp(message: SystemMessage, phaseKind: Phase["kind"]): [SectorEntry, ActiveOp] | null {
    const entry = this.#sectors.get(message.sectorIndex);
    const op = entry?.active;
    if (entry === undefined || op == null || op.phase === null) return null;
    if (op.phase.kind !== phaseKind || !op.opId.equals(message.opId)) return null;
    return [entry, op];
  }

  #onValue(message: ValueMessage | TagValueMessage): void {
    const current = this.#currentOp(message, "query");
    if (current === null) return;
    const [entry, op] = current;
    if (op.range !== null) return;
    const isRead = op.client.kind === "read";
    // A read's fallback query (rule 9) needs data: only full VALUEs answer it.
    if (message.kind === "tagValue" && isRead && !op.optimistic) return;
    const phase = op.phase!;
    if (!this.#recordReply(phase, message.sender)) return;
    const data = message.kind === "value" ? message.data : null;
    const order = op.best === null ? 1 : compareTags(message, op.best);
    if (order > 0) {
      op.best = { ts: message.ts, wr: message.wr, data };
      op.bestCount = 1;
    } else if (order === 0) {
      op.bestCount++;
      // Any VALUE with the highest tag holds that tag's value (rule 2: one value per tag).
      if (op.best!.data === null) op.best!.data = data;
    }
    if (isRead && data !== null && message.sender === this.#rank) {
      op.own = { ts: message.ts, wr: message.wr, data };
    }
    if (phase.replyCount < this.#quorum) return;
    const ownIn = phase.answered.has(this.#rank);
    // Rule 2: a write's query must include this replica's own state.
    if (!isRead && !ownIn) return;
    // Rule 9: without the highest tag's data, a read waits for its own answer until the next
    // retransmission time (then it falls back, see #onTick).
    if (isRead && op.best!.data === null && !ownIn) return;
    this.#finishQuery(entry, op);
  }

  #finishQuery(entry: SectorEntry, op: ActiveOp): void {
    const best = op.best;
    assert(best !== null, "a completed query phase has a value");
    op.phase = null;
    this.#activeSectors.delete(entry.sectorIndex);
    if (op.client.kind === "read") {
      if (best.data === null) {
        // Rule 9: a peer reported a newer tag than this replica's: read from every replica.
        if (this.#faults.ownDataDespiteNewerTag && op.own !== null) {
          this.#complete(entry, op, op.own.data);
          return;
        }
        this.#startFullRead(entry, op);
        return;
      }
      // Rule 3 fast path: a majority already holds the highest tag durably.
      const value: SectorState = { ts: best.ts, wr: best.wr, data: best.data };
      if (this.#faults.skipReadWriteBack || op.bestCount >= this.#quorum) {
        this.#complete(entry, op, value.data);
        return;
      }
      op.written = value;
      this.#startUpdatePhase(entry, op);
      return;
    }
    assert(op.client.data !== null, "a write carries data");
    // Rule 5: the new tag is above the query's maximum *and* above every tag this replica has
    // issued, since a concurrent WRITE_PROC may have been stored here after our own VALUE left;
    // rule 2: and above the restart floor.
    // biome-ignore lint/complexity/useMathMinMax: Math.max does not take bigints
    const ts = this.#newOwnTs(best.ts > entry.issuedTag.ts ? best.ts : entry.issuedTag.ts);
    op.written = { ts, wr: this.#rank, data: op.client.data };
    // Rule 2: WRITE_PROC goes to every replica, this one included, once the tag is reserved.
    this.#whenReserved(ts, () => this.#startUpdatePhase(entry, op));
  }

  /** A timestamp for a new own tag above `baseTs` and above the restart floor (rule 2). */
  #newOwnTs(baseTs: bigint): bigint {
    const floor = this.#faults.ignoreTagFloor ? 0n : this.#tagFloor;
    return (baseTs > floor ? baseTs : floor) + 1n;
  }

  /** Runs `start` once own tags with timestamp `ts` are reserved durably (rule 2). */
  #whenReserved(ts: bigint, start: () => void): void {
    assert(ts < 1n << 64n, "timestamps are u64");
    if (ts <= this.#reservedTs || this.#faults.ignoreTagFloor) {
      start();
      return;
    }
    this.#awaitingReservation.push({ ts, start });
    if (ts > this.#requestedTs) {
      const upToTs = ts + TAG_RESERVATION_STEP;
      this.#requestedTs = upToTs < 1n << 64n ? upToTs : (1n << 64n) - 1n;
      this.#effects.push({ kind: "reserveTags", upToTs: this.#requestedTs });
    }
  }

  #onTagsReserved(upToTs: bigint): void {
    assert(upToTs <= this.#requestedTs, "a reservation that was never asked for");
    if (upToTs > this.#reservedTs) this.#reservedTs = upToTs;
    if (this.#awaitingReservation.length === 0) return;
    const waiting = this.#awaitingReservation;
    this.#awaitingReservation = [];
    for (const w of waiting) {
      if (w.ts <= this.#reservedTs) w.start();
      else this.#awaitingReservation.push(w);
    }
  }

  #startUpdatePhase(entry: SectorEntry, op: ActiveOp): void {
    const written = op.written;
    assert(written !== null && entry.active === op, "update phase of the active operation");
    this.#startPhase(entry, op, "update", {
      kind: "writeProc",
      sender: this.#rank,
      opId: op.opId,
      sectorIndex: entry.sectorIndex,
      ts: written.ts,
      wr: written.wr,
      data: written.data,
    });
  }

  #onAck(message: SystemMessage): void {
    const current = this.#currentOp(message, "update");
    if (current === null) return;
    const [entry, op] = current;
    if (op.range !== null) return;
    const phase = op.phase!;
    if (!this.#recordReply(phase, message.sender)) return;
    if (phase.replyCount < this.#quorum) return;
    op.phase = null;
    this.#activeSectors.delete(entry.sectorIndex);
    this.#complete(entry, op, op.client.kind === "read" ? op.written!.data : undefined);
  }

  #complete(entry: SectorEntry, op: ActiveOp, data: Buffer | undefined): void {
    assert(entry.active === op, "completing the active operation");
    const { sectors } = op.client;
    if (op.client.kind === "read") {
      assert(
        data !== undefined && data.length === sectors.length * SECTOR_SIZE_BYTES,
        "a read returns its run",
      );
    }
    for (const { token, first, count } of op.client.completions) {
      const effect: CoreEffect = { kind: "complete", token };
      if (data !== undefined) {
        effect.data =
          op.client.completions.length === 1
            ? data
            : data.subarray(first * SECTOR_SIZE_BYTES, (first + count) * SECTOR_SIZE_BYTES);
      }
      this.#effects.push(effect);
    }
    for (const sector of sectors) {
      const sectorEntry = this.#sectors.get(sector);
      assert(sectorEntry?.active === op, "a range operation is active on all its sectors");
      sectorEntry.active = null;
    }
    for (const sector of sectors) {
      const next = this.#sectors.get(sector)!.queue[0];
      if (next !== undefined) this.#tryStart(next);
    }
  }

  // ---- range operations (rule 6) ---------------------------------------------------------------

  #startRangeOp(entry: SectorEntry, op: ActiveOp): void {
    const { kind, sectors } = op.client;
    op.range = {
      bestTags: [],
      bestData: [],
      bestCounts: [],
      ownData: null,
      writtenTags: null,
      writtenData: null,
    };
    const header = {
      sender: this.#rank,
      opId: op.opId,
      sectorIndex: sectors[0]!,
      sectorCount: sectors.length,
      sectors,
    };
    if (kind === "write") {
      this.#startPhase(entry, op, "query", { kind: "readTagRangeProc", ...header });
      return;
    }
    // Rule 9: data from this replica, a tag per sector from the others; retransmissions ask for
    // data (a replica that does not know READ_TAGS_RANGE_PROC drops it, SPEC §1.4).
    op.optimistic = true;
    const readRangeProc: SystemMessage = { kind: "readRangeProc", ...header };
    this.#startPhase(
      entry,
      op,
      "query",
      { kind: "readTagsRangeProc", ...header },
      readRangeProc,
      readRangeProc,
    );
  }

  /**
   * Rule 9's fallback: the read's query again, under a fresh operation id (replies to the first
   * one are ignored), asking every replica for data as SPEC §2 does. `entry` is the sector the
   * operation's phases are kept under (the first of a run).
   */
  #startFullRead(entry: SectorEntry, op: ActiveOp): void {
    assert(op.client.kind === "read" && entry.active === op, "a fallback is a read's");
    op.optimistic = false;
    op.opId = this.#newOpId();
    assert(op.opId.length === 16, "operation ids are 16 bytes");
    op.best = null;
    op.own = null;
    op.bestCount = 0;
    const header = { sender: this.#rank, opId: op.opId, sectorIndex: entry.sectorIndex };
    const range = op.range;
    if (range === null) {
      this.#startPhase(entry, op, "query", { kind: "readProc", ...header });
      return;
    }
    range.bestTags = [];
    range.bestData = [];
    range.bestCounts = [];
    range.ownData = null;
    const { sectors } = op.client;
    this.#startPhase(entry, op, "query", {
      kind: "readRangeProc",
      ...header,
      sectorCount: sectors.length,
      sectors,
    });
  }

  /** The active range operation a reply is for, or null (stale, other phase, or not matching). */
  #currentRangeOp(
    message: RangeValueMessage | TagRangeValueMessage | TagsRangeValueMessage | RangeAckMessage,
    phaseKind: Phase["kind"],
  ): [SectorEntry, ActiveOp, RangeProgress] | null {
    const current = this.#currentOp(message, phaseKind);
    if (current === null) return null;
    const [entry, op] = current;
    if (op.range === null || !sameSectors(op.client.sectors, message.sectors)) return null;
    return [entry, op, op.range];
  }

  #onRangeValue(message: RangeValueMessage | TagRangeValueMessage | TagsRangeValueMessage): void {
    const current = this.#currentRangeOp(message, "query");
    if (current === null) return;
    const [entry, op, range] = current;
    const isRead = op.client.kind === "read";
    // A write's query takes the highest tag over the run; a read's takes a tag per sector with its
    // data, or (while optimistic, rule 9) without.
    const accepted = isRead
      ? message.kind === "rangeValue" || (message.kind === "tagsRangeValue" && op.optimistic)
      : message.kind === "tagRangeValue";
    if (!accepted) return;
    const phase = op.phase!;
    if (!this.#recordReply(phase, message.sender)) return;
    if (message.kind === "tagRangeValue") {
      if (op.best === null || compareTags(message, op.best) > 0) {
        op.best = { ts: message.ts, wr: message.wr, data: null };
      }
    } else {
      const data = message.kind === "rangeValue" ? message.data : null;
      for (let i = 0; i < op.client.sectors.length; i++) {
        const tag = message.tags[i]!;
        const best = range.bestTags[i];
        const order = best === undefined ? 1 : compareTags(tag, best);
        if (order > 0) {
          range.bestTags[i] = { ts: tag.ts, wr: tag.wr };
          range.bestData[i] = data === null ? null : sectorOfRun(data, i);
          range.bestCounts[i] = 1;
        } else if (order === 0) {
          range.bestCounts[i]!++;
          // As in #onValue: any RANGE_VALUE with the highest tag holds that tag's value.
          if (range.bestData[i] === null && data !== null) {
            range.bestData[i] = sectorOfRun(data, i);
          }
        }
      }
      if (data !== null && message.sender === this.#rank) range.ownData = data;
    }
    if (phase.replyCount < this.#quorum) return;
    const ownIn = phase.answered.has(this.#rank);
    // Rule 2: a write's query must include this replica's own state.
    if (!isRead && !ownIn) return;
    // Rule 9: as in #onValue, a read without every sector's data waits for its own answer.
    if (isRead && !ownIn && !this.#rangeDataKnown(op, range)) return;
    op.phase = null;
    this.#activeSectors.delete(entry.sectorIndex);
    if (isRead) this.#finishRangeReadQuery(entry, op, range);
    else this.#finishRangeWriteQuery(op, range);
  }

  /** Whether a range read's query has the data of every sector's highest tag (rule 9). */
  #rangeDataKnown(op: ActiveOp, range: RangeProgress): boolean {
    for (let i = 0; i < op.client.sectors.length; i++) if (range.bestData[i] == null) return false;
    return true;
  }

  #finishRangeReadQuery(entry: SectorEntry, op: ActiveOp, range: RangeProgress): void {
    const count = op.client.sectors.length;
    if (!this.#rangeDataKnown(op, range)) {
      // Rule 9: a peer reported a newer tag than this replica's for some sector: read from all.
      if (this.#faults.ownDataDespiteNewerTag && range.ownData !== null) {
        this.#complete(entry, op, Buffer.from(range.ownData));
        return;
      }
      this.#startFullRead(entry, op);
      return;
    }
    const data = Buffer.allocUnsafe(count * SECTOR_SIZE_BYTES);
    let settled = true;
    for (let i = 0; i < count; i++) {
      range.bestData[i]!.copy(data, i * SECTOR_SIZE_BYTES);
      if (range.bestCounts[i]! < this.#quorum) settled = false;
    }
    range.bestData = [];
    if (this.#faults.skipReadWriteBack || settled) {
      this.#complete(entry, op, data);
      return;
    }
    // Each sector is written back with its own highest tag (rule 6).
    range.writtenTags = range.bestTags;
    range.writtenData = data;
    this.#startRangeUpdatePhase(op);
  }

  #finishRangeWriteQuery(op: ActiveOp, range: RangeProgress): void {
    const { sectors, data } = op.client;
    const count = sectors.length;
    assert(op.best !== null && data !== null, "a completed range write query has a tag and data");
    // Rule 5, over the run: above the query maximum and every tag issued here for the run.
    let baseTs = op.best.ts;
    for (const sector of sectors) {
      const issued = this.#sectors.get(sector)!.issuedTag.ts;
      if (issued > baseTs) baseTs = issued;
    }
    const tag: WireTag = { ts: this.#newOwnTs(baseTs), wr: this.#rank };
    range.writtenTags = Array.from({ length: count }, () => tag);
    range.writtenData = data;
    // Rule 2: WRITE_RANGE_PROC goes to every replica, this one included, once the tag is reserved.
    this.#whenReserved(tag.ts, () => this.#startRangeUpdatePhase(op));
  }

  #startRangeUpdatePhase(op: ActiveOp): void {
    const { sectors } = op.client;
    const range = op.range;
    assert(range !== null && range.writtenTags !== null && range.writtenData !== null, "range update");
    const entry = this.#sectors.get(sectors[0]!)!;
    assert(entry.active === op, "update phase of the active operation");
    this.#startPhase(entry, op, "update", {
      kind: "writeRangeProc",
      sender: this.#rank,
      opId: op.opId,
      sectorIndex: sectors[0]!,
      sectorCount: sectors.length,
      sectors,
      tags: range.writtenTags,
      data: range.writtenData,
    });
  }

  #onRangeAck(message: RangeAckMessage): void {
    const current = this.#currentRangeOp(message, "update");
    if (current === null) return;
    const [entry, op, range] = current;
    const phase = op.phase!;
    if (!this.#recordReply(phase, message.sender)) return;
    if (phase.replyCount < this.#quorum) return;
    op.phase = null;
    this.#activeSectors.delete(entry.sectorIndex);
    this.#complete(entry, op, op.client.kind === "read" ? range.writtenData! : undefined);
  }

  // ---- replica role for range messages (rule 6) -----------------------------------------------

  #onRangeProc(message: RangeProcMessage): void {
    const { sectors } = message;
    assert(
      sectors.length === message.sectorCount && sectors.length >= 1 && sectors.length <= MAX_RANGE_SECTORS,
      "range sector count",
    );
    const deferral: RangeDeferral = { message, missing: 0 };
    const needsData = message.kind === "readRangeProc";
    for (const sector of sectors) {
      const entry = this.#entry(sector);
      entry.pins++;
      if (!this.#ready(entry, needsData)) {
        entry.deferredRanges = appended(entry.deferredRanges, deferral);
        deferral.missing++;
        this.#requestLoad(entry, needsData);
      }
    }
    if (deferral.missing === 0) this.#runRangeProc(message);
  }

  /** Handles a range message once every sector of its run is loaded (or known corrupt). */
  #runRangeProc(message: RangeProcMessage): void {
    const { sectors } = message;
    const count = sectors.length;
    // A sector that was ready when the message arrived may have lost its cached data since (an
    // uncached run's persist became durable, rule 7): wait for it again, still pinned.
    const needsData = message.kind === "readRangeProc";
    const again: RangeDeferral = { message, missing: 0 };
    for (const sector of sectors) {
      const entry = this.#sectors.get(sector)!;
      if (this.#ready(entry, needsData)) continue;
      entry.deferredRanges = appended(entry.deferredRanges, again);
      again.missing++;
      this.#requestLoad(entry, needsData);
    }
    if (again.missing > 0) return;
    const entries: SectorEntry[] = [];
    for (const sector of sectors) {
      const entry = this.#sectors.get(sector);
      assert(entry !== undefined && entry.pins > 0, "a deferred range keeps its sectors in memory");
      entry.pins--;
      entries.push(entry);
    }
    const header = {
      sender: this.#rank,
      opId: message.opId,
      sectorIndex: message.sectorIndex,
      sectorCount: count,
      sectors,
    };
    switch (message.kind) {
      case "readTagRangeProc":
      case "readTagsRangeProc":
      case "readRangeProc": {
        // Rule 4: one corrupt sector and the whole run goes unanswered here.
        if (entries.some((entry) => entry.corrupt)) return;
        if (message.kind === "readTagRangeProc") {
          let best: Tag = ZERO_TAG;
          for (const entry of entries) best = maxTag(best, this.#durableTagOf(entry));
          this.#send(message.sender, { kind: "tagRangeValue", ...header, ts: best.ts, wr: best.wr });
          return;
        }
        if (message.kind === "readTagsRangeProc") {
          // Rule 9: a tag per sector, from the index (rule 7): no data is loaded for this.
          const tags = entries.map((entry) => this.#durableTagOf(entry));
          this.#send(message.sender, { kind: "tagsRangeValue", ...header, tags });
          return;
        }
        const states = entries.map((entry) => {
          assert(entry.state !== null, "READ_RANGE_PROC is handled once the data is loaded");
          return entry.state;
        });
        const data = Buffer.allocUnsafe(count * SECTOR_SIZE_BYTES);
        for (const [i, state] of states.entries()) state.data.copy(data, i * SECTOR_SIZE_BYTES);
        this.#send(message.sender, { kind: "rangeValue", ...header, tags: states.map(tagOf), data });
        for (const entry of entries) this.#dropBorrowedData(entry);
        return;
      }
      case "writeRangeProc":
        this.#onWriteRangeProc(entries, message);
        return;
      default:
        unreachable(message);
    }
  }

  #onWriteRangeProc(entries: SectorEntry[], message: WriteRangeProcMessage): void {
    assert(
      message.tags.length === entries.length && message.data.length === entries.length * SECTOR_SIZE_BYTES,
      "WRITE_RANGE_PROC carries a tag and a sector per sector of its run",
    );
    const waiter: RangeAckWaiter = {
      to: message.sender,
      opId: message.opId,
      sectors: message.sectors,
      remaining: 0,
    };
    const newer: SectorEntry[] = [];
    const states: SectorState[] = [];
    // Sectors with the same tag (one write's run) share one waiter: it sits in each of their lists
    // and counts down once per sector that becomes durable.
    let shared: AckWaiter | undefined;
    for (const [i, entry] of entries.entries()) {
      const incoming = message.tags[i]!;
      // As #onWriteProc, sector by sector (rules 1 and 4).
      if (compareTags(incoming, entry.issuedTag) > 0) {
        newer.push(entry);
        states.push({ ts: incoming.ts, wr: incoming.wr, data: sectorOfRun(message.data, i) });
      }
      if (!this.#faults.ackBeforeDurable && compareTags(entry.durableTag, incoming) < 0) {
        if (shared === undefined || compareTags(shared.tag, incoming) !== 0) {
          shared = { to: message.sender, opId: message.opId, tag: incoming, range: waiter };
        }
        entry.ackWaiters = appended(entry.ackWaiters, shared);
        waiter.remaining++;
      }
    }
    if (newer.length > 0) this.#persist(newer, states, false);
    if (waiter.remaining === 0) this.#sendRangeAck(waiter);
  }

  #sendRangeAck(waiter: RangeAckWaiter): void {
    this.#send(waiter.to, {
      kind: "rangeAck",
      sender: this.#rank,
      opId: waiter.opId,
      sectorIndex: waiter.sectors[0]!,
      sectorCount: waiter.sectors.length,
      sectors: waiter.sectors,
    });
  }

  // ---- time -----------------------------------------------------------------------------------

  /**
   * Whether a tick could do anything: some operation this replica coordinates is in a phase that
   * may need retransmission. Otherwise a tick only moves the clock, so a driver may stop ticking
   * (and must tick once, with the current time, before the next event: a phase's retransmission
   * time is counted from the core's clock).
   */
  needsTicks(): boolean {
    return this.#activeSectors.size > 0;
  }

  #onTick(nowMs: number): void {
    assert(nowMs >= this.#nowMs, "time never goes backwards");
    this.#nowMs = nowMs;
    for (const sectorIndex of this.#activeSectors) {
      const entry = this.#sectors.get(sectorIndex);
      const op = entry?.active;
      const phase = op?.phase;
      assert(entry !== undefined && op != null && phase != null, "active sector has a phase");
      if (nowMs < phase.retransmitAtMs) continue;
      // Rule 9: a read's optimistic query that has its majority but neither its own answer nor the
      // highest tag's data (this replica's sector may be corrupt, rule 4) reads from everyone.
      if (op.optimistic && phase.kind === "query" && phase.replyCount >= this.#quorum) {
        this.#startFullRead(entry, op);
        continue;
      }
      // Stubborn links: resend to the ranks that have not answered this phase yet.
      for (let rank = 1; rank <= this.#replicaCount; rank++) {
        if (!phase.answered.has(rank)) this.#send(rank, phase.retransmitMessage);
      }
      phase.retransmitDelayMs = Math.min(phase.retransmitDelayMs * 2, this.#retransmitMaxMs);
      phase.retransmitAtMs = nowMs + phase.retransmitDelayMs;
    }
  }

  #send(to: number, message: SystemMessage): void {
    this.#effects.push({ kind: "send", to, message });
  }
}
