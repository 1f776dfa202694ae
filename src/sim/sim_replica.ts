// One simulated replica: the real RegisterCore plus a driver that carries out its effects the way
// the production driver does, but against the simulated network, disk and clock. A crash drops the
// core with everything in flight to it; a restart builds a NEW core over the recovered disk.
import type { SystemMessage } from "../protocol/messages.js";
import type { ClientOpToken, CoreEffect, CoreEvent, CoreFaults } from "../register/core_types.js";
import { RegisterCore } from "../register/register_core.js";
import type { PersistItem } from "../storage/sector_store.js";
import { assert, unreachable } from "../util/assert.js";
import { CORE_TICK_MS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import type { EventQueue } from "./event_queue.js";
import type { Prng } from "./prng.js";
import type { NetworkEndpoint, SimNetwork } from "./sim_network.js";
import type { SimStorage } from "./sim_storage.js";
import type { Trace } from "./trace.js";
import { peekValue } from "./value_codec.js";

export interface ReplicaHooks {
  /** A client operation coordinated here finished. */
  onComplete(rank: number, token: ClientOpToken, data: Buffer | undefined): void;
  /** A persist effect is being carried out (the simulator checks rule 2's tag uniqueness). */
  onPersist(rank: number, items: readonly PersistItem[]): void;
  /** Fault injection: decides after each persist whether to crash soon (null: no). */
  crashDelayAfterPersistUs(): number | null;
  /** Fault injection: decides after each update message sent to a peer whether to crash soon. */
  crashDelayAfterUpdateUs(): number | null;
  /** Fault injection: whether to crash part-way through carrying out one step's effects. */
  crashMidStep(): boolean;
  /** Whether fault injection is still on (crashes scheduled earlier are dropped once it stops). */
  faultsActive(): boolean;
  /** Delay of a message to self (no network, but still a separate, later event). */
  selfDelayUs(): number;
  /** The replica went down (crash); its coordinated operations are lost. */
  onCrash(rank: number): void;
}

export interface ReplicaSetup {
  rank: number;
  replicaCount: number;
  queue: EventQueue;
  rng: Prng;
  trace: Trace;
  storage: SimStorage;
  faults?: CoreFaults;
  cacheCapacitySectors?: number;
  retransmitInitialMs?: number;
  hooks: ReplicaHooks;
}

type Status = "up" | "down" | "recovering";

export class SimReplica implements NetworkEndpoint {
  readonly rank: number;
  private status: Status = "down";
  private incarnation = 0;
  private core: RegisterCore | null = null;
  private network: SimNetwork | null = null;
  /** Loads of the step being carried out, when this incarnation batches them (batchingLoads). */
  private readonly stepLoads: number[] = [];
  private readonly stepTagLoads: number[] = [];
  crashCount = 0;
  /** Load answers that carried more than one sector (see batchingLoads). */
  multiSectorLoads = 0;

  constructor(private readonly setup: ReplicaSetup) {
    this.rank = setup.rank;
  }

  attach(network: SimNetwork): void {
    this.network = network;
  }

  get isUp(): boolean {
    return this.status === "up";
  }

  get isDown(): boolean {
    return this.status === "down";
  }

  liveIncarnation(): number | null {
    return this.status === "up" ? this.incarnation : null;
  }

  /** Starts (or restarts) from the disk: recover storage, then a fresh core and its ticks. */
  start(): void {
    assert(this.status === "down", `replica ${this.rank} is not down`);
    const { queue, trace, storage } = this.setup;
    this.status = "recovering";
    this.incarnation++;
    const incarnation = this.incarnation;
    trace.record(queue.nowUs, `r${this.rank} recovering #${incarnation}`);
    storage.recover(() => {
      if (this.incarnation !== incarnation || this.status !== "recovering") return;
      this.core = new RegisterCore({
        rank: this.rank,
        replicaCount: this.setup.replicaCount,
        newOpId: () => this.setup.rng.bytes(16),
        faults: this.setup.faults,
        cacheCapacitySectors: this.setup.cacheCapacitySectors,
        retransmitInitialMs: this.setup.retransmitInitialMs,
        tagFloor: storage.tagReservation(),
      });
      this.status = "up";
      trace.record(queue.nowUs, `r${this.rank} up #${incarnation}`);
      // Ticks start at a random phase so replicas do not retransmit in lockstep.
      queue.after(this.setup.rng.range(0, CORE_TICK_MS * 1000), () => this.tick(incarnation));
    });
  }

  crash(): void {
    if (this.status === "down") return;
    const { queue, trace, storage } = this.setup;
    this.status = "down";
    this.core = null;
    this.stepLoads.length = 0;
    this.stepTagLoads.length = 0;
    this.crashCount++;
    storage.crash();
    trace.record(queue.nowUs, `r${this.rank} crash #${this.incarnation}`);
    this.setup.hooks.onCrash(this.rank);
  }

  private tick(incarnation: number): void {
    if (this.incarnation !== incarnation || this.status !== "up") return;
    this.step({ kind: "tick", nowMs: this.setup.queue.nowMs });
    if (this.incarnation === incarnation && this.status === "up") {
      this.setup.queue.after(CORE_TICK_MS * 1000, () => this.tick(incarnation));
    }
  }

  /** A client command from the workload (this replica must be up). */
  submit(event: Extract<CoreEvent, { kind: "clientRead" | "clientWrite" | "clientBatch" }>): void {
    assert(this.status === "up", "client commands go to replicas that are up");
    this.step(event);
  }

  /** A message from the network, for the given incarnation. */
  receive(message: SystemMessage, incarnation: number): void {
    if (this.incarnation !== incarnation || this.status !== "up") return;
    this.setup.trace.record(this.setup.queue.nowUs, `r${this.rank} <- ${describeMessage(message)}`);
    this.step({ kind: "message", message });
  }

  private step(event: CoreEvent): void {
    const core = this.core;
    assert(core !== null, "step on a replica that is down");
    const effects = core.step(event);
    const incarnation = this.incarnation;
    const cut =
      this.setup.hooks.crashMidStep() && effects.length > 0 ? this.setup.rng.int(effects.length) : -1;
    for (let i = 0; i < effects.length; i++) {
      if (i === cut) {
        this.setup.trace.record(this.setup.queue.nowUs, `r${this.rank} crash mid-step after ${i} effects`);
        this.crash();
        return;
      }
      // An effect (e.g. a buggified crash) may have taken this replica down.
      if (this.incarnation !== incarnation || this.status !== "up") return;
      this.apply(effects[i]!, incarnation);
    }
    // A crash while carrying out the effects emptied both lists (crash()).
    if (this.stepLoads.length > 0) this.startLoads(this.stepLoads.splice(0), incarnation);
    if (this.stepTagLoads.length > 0) this.startTagLoads(this.stepTagLoads.splice(0), incarnation);
  }

  /**
   * The production driver hands all the loads of one step to the store together and answers them
   * in one event; the simulator does that in half of the incarnations (by rank and incarnation, so
   * no random draw) and answers each load on its own in the others, so the core sees both.
   */
  private batchingLoads(): boolean {
    return (this.rank + this.incarnation) % 2 === 0;
  }

  private startLoads(sectorIndexes: number[], incarnation: number): void {
    this.setup.storage.loadMany(sectorIndexes, (states) => {
      if (this.answerLoads(incarnation, "loaded", sectorIndexes, states))
        this.step({ kind: "loadedMany", sectorIndexes, states });
    });
  }

  private startTagLoads(sectorIndexes: number[], incarnation: number): void {
    this.setup.storage.loadTags(sectorIndexes, (tags) => {
      if (this.answerLoads(incarnation, "loaded tags", sectorIndexes, tags))
        this.step({ kind: "tagsLoaded", sectorIndexes, tags });
    });
  }

  /** Traces a load answer; false when it belongs to an incarnation that is gone (dropped). */
  private answerLoads(
    incarnation: number,
    what: string,
    sectorIndexes: readonly number[],
    answers: ReadonlyArray<{ ts: bigint; wr: number } | null>,
  ): boolean {
    if (this.incarnation !== incarnation || this.status !== "up") return false;
    const sectors = sectorIndexes.map((sectorIndex, i) => {
      const answer = answers[i]!;
      return `s${sectorIndex} ${answer === null ? "corrupt" : `${answer.ts}.${answer.wr}`}`;
    });
    this.setup.trace.record(this.setup.queue.nowUs, `r${this.rank} ${what} ${sectors.join(" ")}`);
    if (sectorIndexes.length > 1) this.multiSectorLoads++;
    return true;
  }

  /** Fault injection: a crash of this incarnation `inUs` from now (if faults are still on then). */
  private maybeCrashLater(inUs: number | null, incarnation: number): void {
    if (inUs === null) return;
    this.setup.queue.after(inUs, () => {
      if (this.incarnation === incarnation && this.status === "up" && this.setup.hooks.faultsActive())
        this.crash();
    });
  }

  private apply(effect: CoreEffect, incarnation: number): void {
    const { queue, trace, storage, hooks } = this.setup;
    switch (effect.kind) {
      case "send": {
        if (effect.to === this.rank) {
          // Same rules as any message, but no network: a separate, later event of this incarnation.
          const message = effect.message;
          queue.after(hooks.selfDelayUs(), () => this.receive(message, incarnation));
        } else {
          this.network!.send(this.rank, effect.to, effect.message);
          const kind = effect.message.kind;
          if (kind === "writeProc" || kind === "writeRangeProc")
            this.maybeCrashLater(hooks.crashDelayAfterUpdateUs(), incarnation);
        }
        return;
      }
      case "persist": {
        const { token, items } = effect;
        hooks.onPersist(this.rank, items);
        const durable = () => {
          if (this.incarnation !== incarnation || this.status !== "up") return;
          const what = items.map(({ sectorIndex, state }) => `s${sectorIndex} ${state.ts}.${state.wr}`);
          trace.record(queue.nowUs, `r${this.rank} durable ${what.join(" ")}`);
          this.step({ kind: "persisted", token });
        };
        if (items.length === 1) storage.persist(items[0]!.sectorIndex, items[0]!.state, durable);
        else storage.persistMany(items, durable);
        this.maybeCrashLater(hooks.crashDelayAfterPersistUs(), incarnation);
        return;
      }
      case "load":
        if (this.batchingLoads()) this.stepLoads.push(effect.sectorIndex);
        else this.startLoads([effect.sectorIndex], incarnation);
        return;
      case "loadTag":
        if (this.batchingLoads()) this.stepTagLoads.push(effect.sectorIndex);
        else this.startTagLoads([effect.sectorIndex], incarnation);
        return;
      case "reserveTags": {
        const { upToTs } = effect;
        storage.reserveTags(upToTs, () => {
          if (this.incarnation !== incarnation || this.status !== "up") return;
          trace.record(queue.nowUs, `r${this.rank} tags reserved to ${upToTs}`);
          this.step({ kind: "tagsReserved", upToTs });
        });
        this.maybeCrashLater(hooks.crashDelayAfterPersistUs(), incarnation);
        return;
      }
      case "complete":
        hooks.onComplete(this.rank, effect.token, effect.data);
        return;
      default:
        unreachable(effect);
    }
  }
}

export function describeMessage(message: SystemMessage): string {
  const head = `${message.kind} from r${message.sender} op ${message.opId.toString("hex", 0, 4)} s${message.sectorIndex}`;
  if (message.kind === "value" || message.kind === "writeProc") {
    return `${head} ${message.ts}.${message.wr} v${peekValue(message.data)}`;
  }
  if (message.kind === "rangeValue" || message.kind === "writeRangeProc") {
    const sectors = message.tags.map(
      (tag, i) => `${tag.ts}.${tag.wr}:v${peekValue(message.data.subarray(i * SECTOR_SIZE_BYTES))}`,
    );
    return `${head}+${message.sectorCount} [${sectors.join(" ")}]`;
  }
  if (message.kind === "tagRangeValue")
    return `${head}+${message.sectorCount} max ${message.ts}.${message.wr}`;
  if (message.kind === "tagsRangeValue")
    return `${head}+${message.sectorCount} [${message.tags.map((tag) => `${tag.ts}.${tag.wr}`).join(" ")}]`;
  if ("sectorCount" in message) return `${head}+${message.sectorCount}`;
  return head;
}
