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
// 2. Unique tags across crashes. A writer picks (maxts + 1, rank). If the coordinator could crash
//    after some replica stored (t, rank, v) and, after restarting, pick (t, rank) again for another
//    value, two values would share a tag and reads could flip between them. Two rules prevent it:
//    the coordinator's own store of its new tag is durable before any WRITE_PROC leaves (SPEC §2)
//    and is not shown to READ_PROCs until then; and a WRITE's query phase always includes the
//    coordinator's own VALUE. So any tag (t, r) that exists anywhere is durable at r (or r holds a
//    larger tag), r's next query sees ts >= t, and the next tag is larger.
//
// 3. VALUE reports the replica's *durable* state only (never a persist still in flight). A durable
//    tag never decreases, and every ACK was sent for a durable tag, so this is as good as the
//    latest state for the algorithm. It buys a safe fast path (SPEC §2 "optimizations"): when the
//    quorum of VALUEs of a READ all carry the highest tag, that value is already durable on a
//    majority and any later query intersects that majority, so the write-back can be skipped.
//
// 4. Corrupt local state (storage checksum failure) is never served: READ_PROC gets no answer (as
//    if this replica were down for that sector) and a WRITE_PROC heals the sector by storing the
//    incoming state; until that persist is durable the sector stays corrupt (unserved, and not
//    reloaded, since the store would return the state still in flight), then it may be ACKed. A WRITE coordinated here waits,
//    because it needs its own VALUE (rule 2), until another coordinator's write or read heals it.
//
// 5. A coordinator's new tag is (max(query maximum, own issued tag).ts + 1, rank). The query
//    maximum alone (SPEC §2) can be below a tag this replica stored meanwhile for a concurrent
//    write; persisting the lower tag afterwards would roll back a durable, ACKed state on this
//    disk. Found by the simulator (seeds 50743 and 100795). Any tag above the query maximum keeps
//    ABD's argument intact, so taking the larger base is safe.
import type { SystemMessage, TagValueMessage, ValueMessage, WriteProcMessage } from "../protocol/messages.js";
import { compareTags, type SectorState } from "../storage/sector_state.js";
import { assert, unreachable } from "../util/assert.js";
import {
  CORE_CACHE_SECTORS,
  MAX_REPLICAS,
  RETRANSMIT_INITIAL_MS,
  RETRANSMIT_MAX_MS,
  SECTOR_SIZE_BYTES,
} from "../util/limits.js";
import type {
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

/** More than half of the replicas. */
export function quorumSize(replicaCount: number): number {
  assert(Number.isInteger(replicaCount) && replicaCount >= 1, "replicaCount must be a positive integer");
  return Math.floor(replicaCount / 2) + 1;
}

interface ClientOp {
  token: ClientOpToken;
  kind: "read" | "write";
  /** The value to write (writes only). */
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
  /** null while the write waits for its own durable store between the two phases. */
  phase: Phase | null;
  /** Highest-tagged VALUE of the query phase (data is null when it came from a TAG_VALUE). */
  best: { ts: bigint; wr: number; data: Buffer | null } | null;
  /** How many distinct ranks reported exactly `best`'s tag. */
  bestCount: number;
  /** The state a write stores and then imposes (set once the query phase completes). */
  written: SectorState | null;
}

interface AckWaiter {
  to: number;
  opId: Buffer;
  tag: Tag;
}

interface SectorEntry {
  sectorIndex: number;
  /** The durable state, shown to READ_PROC (rule 3); null until loaded. */
  state: SectorState | null;
  loading: boolean;
  corrupt: boolean;
  /** Highest tag of any persist issued for this sector (durable or not). */
  issuedTag: Tag;
  /** Highest tag known durable. */
  durableTag: Tag;
  pendingPersists: number;
  ackWaiters: AckWaiter[];
  /** READ_PROC / WRITE_PROC that arrived before the state was loaded, in arrival order. */
  deferred: SystemMessage[];
  queue: ClientOp[];
  active: ActiveOp | null;
}

interface PersistRecord {
  sectorIndex: number;
  state: SectorState;
  /** Set when this is a coordinator's own store of its new tag (rule 2). */
  ownWrite: ActiveOp | null;
}

function maxTag(a: Tag, b: Tag): Tag {
  return compareTags(a, b) >= 0 ? a : b;
}

function tagOf(state: SectorState): Tag {
  return { ts: state.ts, wr: state.wr };
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
  /** Sectors whose coordinated operation is in a phase that may need retransmission. */
  readonly #activeSectors = new Set<number>();
  readonly #persists = new Map<PersistToken, PersistRecord>();
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
        this.#onClientOp(event.sectorIndex, { token: event.token, kind: "read", data: null });
        break;
      case "clientWrite":
        assert(event.data.length === SECTOR_SIZE_BYTES, "client write must carry one sector");
        this.#onClientOp(event.sectorIndex, { token: event.token, kind: "write", data: event.data });
        break;
      case "message":
        this.#onMessage(event.message);
        break;
      case "persisted":
        this.#onPersisted(event.token);
        break;
      case "loaded":
        this.#onLoaded(event.sectorIndex, event.state);
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
        state: null,
        loading: false,
        corrupt: false,
        issuedTag: ZERO_TAG,
        durableTag: ZERO_TAG,
        pendingPersists: 0,
        ackWaiters: [],
        deferred: [],
        queue: [],
        active: null,
      };
    } else {
      // Re-insert to mark it most recently used.
      this.#sectors.delete(sectorIndex);
    }
    this.#sectors.set(sectorIndex, entry);
    return entry;
  }

  #isIdle(entry: SectorEntry): boolean {
    return (
      entry.active === null &&
      entry.queue.length === 0 &&
      entry.pendingPersists === 0 &&
      entry.ackWaiters.length === 0 &&
      entry.deferred.length === 0 &&
      !entry.loading
    );
  }

  #evictIdle(): void {
    let excess = this.#sectors.size - this.#cacheCapacitySectors;
    if (excess <= 0) return;
    for (const [sectorIndex, entry] of this.#sectors) {
      if (excess <= 0) break;
      // Only idle sectors leave memory: their state is whatever the store returns on the next load.
      if (this.#isIdle(entry)) {
        this.#sectors.delete(sectorIndex);
        excess--;
      }
    }
  }

  // ---- replica role: READ_PROC / WRITE_PROC ---------------------------------------------------

  #onMessage(message: SystemMessage): void {
    assert(message.sender >= 1 && message.sender <= this.#replicaCount, "sender rank out of range");
    switch (message.kind) {
      case "readProc":
      case "readTagProc":
      case "writeProc": {
        const entry = this.#entry(message.sectorIndex);
        if (entry.state === null && !entry.corrupt) {
          entry.deferred.push(message);
          this.#ensureLoading(entry);
          return;
        }
        this.#handleProc(entry, message);
        return;
      }
      case "value":
      case "tagValue":
        this.#onValue(message);
        return;
      case "ack":
        this.#onAck(message);
        return;
      default:
        unreachable(message);
    }
  }

  #ensureLoading(entry: SectorEntry): void {
    if (entry.loading) return;
    entry.loading = true;
    this.#effects.push({ kind: "load", sectorIndex: entry.sectorIndex });
  }

  #onLoaded(sectorIndex: number, state: SectorState | null): void {
    const entry = this.#sectors.get(sectorIndex);
    assert(entry?.loading === true, "loaded without a load in flight");
    entry.loading = false;
    if (state === null) {
      entry.corrupt = true;
    } else {
      assert(state.data.length === SECTOR_SIZE_BYTES, "loaded state must hold one sector");
      entry.state = state;
      // A sector is loaded only when nothing is in flight for it, so what the store holds is durable.
      entry.issuedTag = maxTag(entry.issuedTag, tagOf(state));
      entry.durableTag = maxTag(entry.durableTag, tagOf(state));
    }
    const deferred = entry.deferred;
    entry.deferred = [];
    for (const message of deferred) this.#handleProc(entry, message);
  }

  #handleProc(entry: SectorEntry, message: SystemMessage): void {
    if (message.kind === "readProc" || message.kind === "readTagProc") {
      // Rule 4: corrupt state is never served.
      if (entry.corrupt || entry.state === null) return;
      const state = entry.state;
      const header = { sender: this.#rank, opId: message.opId, sectorIndex: entry.sectorIndex };
      if (message.kind === "readTagProc") {
        this.#send(message.sender, { kind: "tagValue", ...header, ts: state.ts, wr: state.wr });
      } else {
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
      this.#persist(entry, { ts: message.ts, wr: message.wr, data: message.data }, null);
    }
    const waiter: AckWaiter = { to: message.sender, opId: message.opId, tag: incoming };
    if (this.#faults.ackBeforeDurable || compareTags(entry.durableTag, incoming) >= 0) {
      this.#sendAck(entry.sectorIndex, waiter);
    } else {
      entry.ackWaiters.push(waiter);
    }
  }

  #sendAck(sectorIndex: number, waiter: AckWaiter): void {
    this.#send(waiter.to, { kind: "ack", sender: this.#rank, opId: waiter.opId, sectorIndex });
  }

  #persist(entry: SectorEntry, state: SectorState, ownWrite: ActiveOp | null): void {
    // Persists of a sector take effect in call order, so they must rise in tag order: a lower tag
    // stored after a higher one would silently roll back a durable (maybe ACKed) state.
    assert(compareTags(state, entry.issuedTag) > 0, "persists of a sector rise in tag order");
    const token = this.#nextPersistToken++;
    entry.issuedTag = maxTag(entry.issuedTag, tagOf(state));
    entry.pendingPersists++;
    this.#persists.set(token, { sectorIndex: entry.sectorIndex, state, ownWrite });
    this.#effects.push({ kind: "persist", token, sectorIndex: entry.sectorIndex, state });
  }

  #onPersisted(token: PersistToken): void {
    const record = this.#persists.get(token);
    assert(record !== undefined, `persisted for unknown token ${token}`);
    this.#persists.delete(token);
    const entry = this.#sectors.get(record.sectorIndex);
    assert(entry !== undefined && entry.pendingPersists > 0, "persisted for a sector with no persist");
    entry.pendingPersists--;
    const tag = tagOf(record.state);
    entry.durableTag = maxTag(entry.durableTag, tag);
    // Rules 2 and 3: a state becomes visible to READ_PROC only once durable. Persists of a sector
    // may be reported out of order, so the shown state only moves forward.
    if (entry.state === null || compareTags(tag, tagOf(entry.state)) > 0) entry.state = record.state;
    entry.corrupt = false;
    if (record.ownWrite !== null) this.#startUpdatePhase(entry, record.ownWrite);
    if (entry.ackWaiters.length > 0) {
      const waiting = entry.ackWaiters;
      entry.ackWaiters = [];
      for (const waiter of waiting) {
        if (compareTags(entry.durableTag, waiter.tag) >= 0) this.#sendAck(entry.sectorIndex, waiter);
        else entry.ackWaiters.push(waiter);
      }
    }
  }

  // ---- coordinator role -----------------------------------------------------------------------

  #onClientOp(sectorIndex: number, op: ClientOp): void {
    const entry = this.#entry(sectorIndex);
    entry.queue.push(op);
    if (entry.active === null) this.#startNext(entry);
  }

  #startNext(entry: SectorEntry): void {
    assert(entry.active === null, "one coordinated operation per sector at a time");
    const client = entry.queue.shift();
    if (client === undefined) return;
    const opId = this.#newOpId();
    assert(opId.length === 16, "operation ids are 16 bytes");
    const op: ActiveOp = { client, opId, phase: null, best: null, bestCount: 0, written: null };
    entry.active = op;
    const readProc: SystemMessage = {
      kind: "readProc",
      sender: this.#rank,
      opId,
      sectorIndex: entry.sectorIndex,
    };
    // A write needs only tags from its query. Retransmissions use the standard READ_PROC, so a
    // replica that does not know the extension still answers (with a full VALUE) on the retry.
    const first: SystemMessage = client.kind === "write" ? { ...readProc, kind: "readTagProc" } : readProc;
    this.#startPhase(entry, op, "query", first, readProc);
  }

  #startPhase(
    entry: SectorEntry,
    op: ActiveOp,
    kind: Phase["kind"],
    message: SystemMessage,
    retransmitMessage: SystemMessage = message,
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
    for (let rank = 1; rank <= this.#replicaCount; rank++) this.#send(rank, message);
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
    // A read returns data: only full VALUEs can answer its query.
    if (message.kind === "tagValue" && op.client.kind === "read") return;
    const phase = op.phase!;
    if (!this.#recordReply(phase, message.sender)) return;
    const order = op.best === null ? 1 : compareTags(message, op.best);
    if (order > 0) {
      op.best = { ts: message.ts, wr: message.wr, data: message.kind === "value" ? message.data : null };
      op.bestCount = 1;
    } else if (order === 0) {
      op.bestCount++;
    }
    if (phase.replyCount < this.#quorum) return;
    // Rule 2: a write's query must include this replica's own state.
    if (op.client.kind === "write" && !phase.answered.has(this.#rank)) return;
    this.#finishQuery(entry, op);
  }

  #finishQuery(entry: SectorEntry, op: ActiveOp): void {
    const best = op.best;
    assert(best !== null, "a completed query phase has a value");
    op.phase = null;
    this.#activeSectors.delete(entry.sectorIndex);
    if (op.client.kind === "read") {
      // Rule 3 fast path: a majority already holds the highest tag durably.
      assert(best.data !== null, "a read's query holds full VALUEs only");
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
    // issued, since a concurrent WRITE_PROC may have been stored here after our own VALUE left.
    // biome-ignore lint/complexity/useMathMinMax: Math.max does not take bigints
    const baseTs = best.ts > entry.issuedTag.ts ? best.ts : entry.issuedTag.ts;
    const written: SectorState = { ts: baseTs + 1n, wr: this.#rank, data: op.client.data };
    op.written = written;
    // Store locally first (SPEC §2, rule 2); the update phase starts when this is durable.
    this.#persist(entry, written, op);
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
    const phase = op.phase!;
    if (!this.#recordReply(phase, message.sender)) return;
    if (phase.replyCount < this.#quorum) return;
    op.phase = null;
    this.#activeSectors.delete(entry.sectorIndex);
    this.#complete(entry, op, op.client.kind === "read" ? op.written!.data : undefined);
  }

  #complete(entry: SectorEntry, op: ActiveOp, data: Buffer | undefined): void {
    assert(entry.active === op, "completing the active operation");
    entry.active = null;
    const effect: CoreEffect = { kind: "complete", token: op.client.token };
    if (op.client.kind === "read") {
      assert(data !== undefined && data.length === SECTOR_SIZE_BYTES, "a read returns one sector");
      effect.data = data;
    }
    this.#effects.push(effect);
    this.#startNext(entry);
  }

  // ---- time -----------------------------------------------------------------------------------

  #onTick(nowMs: number): void {
    assert(nowMs >= this.#nowMs, "time never goes backwards");
    this.#nowMs = nowMs;
    for (const sectorIndex of this.#activeSectors) {
      const phase = this.#sectors.get(sectorIndex)?.active?.phase;
      assert(phase != null, "active sector has a phase");
      if (nowMs < phase.retransmitAtMs) continue;
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
