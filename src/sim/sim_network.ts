// The simulated network between replicas: each message is delayed independently (so messages
// overtake each other), and may be dropped or duplicated; sets of replicas can be partitioned from
// each other and healed. A message is delivered only if its target is still the same incarnation
// it was sent to (a TCP connection does not survive a restart of its peer) and the two ends are
// connected both when it leaves and when it arrives.
import type { SystemMessage } from "../protocol/messages.js";
import { assert } from "../util/assert.js";
import type { EventQueue } from "./event_queue.js";
import type { Prng } from "./prng.js";
import type { Trace } from "./trace.js";

export interface NetworkFaults {
  dropProbability: number;
  duplicateProbability: number;
  delayMinUs: number;
  delayMaxUs: number;
  /** Chance that a message takes a long detour (up to longDelayMaxUs): deep reordering. */
  longDelayProbability: number;
  longDelayMaxUs: number;
}

export const NO_NETWORK_FAULTS: NetworkFaults = {
  dropProbability: 0,
  duplicateProbability: 0,
  delayMinUs: 100,
  delayMaxUs: 2_000,
  longDelayProbability: 0,
  longDelayMaxUs: 0,
};

export interface NetworkEndpoint {
  /** Current incarnation if the replica is up, null if it is down or restarting. */
  liveIncarnation(): number | null;
  receive(message: SystemMessage, incarnation: number): void;
}

export class SimNetwork {
  faults: NetworkFaults = NO_NETWORK_FAULTS;
  /** Partition group of each rank (index rank - 1); ranks in different groups cannot talk. */
  private group: number[];
  sentCount = 0;
  droppedCount = 0;
  duplicatedCount = 0;

  constructor(
    private readonly queue: EventQueue,
    private readonly rng: Prng,
    private readonly trace: Trace,
    private readonly endpoints: readonly NetworkEndpoint[],
  ) {
    this.group = endpoints.map(() => 0);
  }

  connected(from: number, to: number): boolean {
    return this.group[from - 1] === this.group[to - 1];
  }

  /** Splits the replicas into the given groups (each rank in exactly one). */
  partition(groups: readonly (readonly number[])[]): void {
    const group = this.endpoints.map(() => -1);
    groups.forEach((ranks, g) => {
      for (const rank of ranks) group[rank - 1] = g;
    });
    assert(
      group.every((g) => g >= 0),
      "every rank belongs to a partition group",
    );
    this.group = group;
    this.trace.record(this.queue.nowUs, `partition ${groups.map((ranks) => ranks.join(",")).join(" | ")}`);
  }

  heal(): void {
    if (this.group.every((g) => g === 0)) return;
    this.group = this.endpoints.map(() => 0);
    this.trace.record(this.queue.nowUs, "heal");
  }

  get partitioned(): boolean {
    return this.group.some((g) => g !== 0);
  }

  /** A message from one replica to another (never to itself: self-delivery skips the network). */
  send(from: number, to: number, message: SystemMessage): void {
    assert(from !== to, "messages to self do not use the network");
    this.sentCount++;
    const target = this.endpoints[to - 1];
    assert(target !== undefined, `no replica with rank ${to}`);
    const incarnation = target.liveIncarnation();
    if (incarnation === null || !this.connected(from, to) || this.rng.chance(this.faults.dropProbability)) {
      this.droppedCount++;
      return;
    }
    // The wire carries bytes: the receiver must never share a buffer with the sender.
    const copy = copyMessage(message);
    this.schedule(from, to, copy, incarnation);
    if (this.rng.chance(this.faults.duplicateProbability)) {
      this.duplicatedCount++;
      this.schedule(from, to, copy, incarnation);
    }
  }

  private schedule(from: number, to: number, message: SystemMessage, incarnation: number): void {
    const f = this.faults;
    let delayUs = this.rng.range(f.delayMinUs, Math.max(f.delayMinUs, f.delayMaxUs));
    if (this.rng.chance(f.longDelayProbability)) delayUs += this.rng.range(0, f.longDelayMaxUs);
    this.queue.after(delayUs, () => {
      const target = this.endpoints[to - 1]!;
      if (target.liveIncarnation() !== incarnation || !this.connected(from, to)) {
        this.droppedCount++;
        return;
      }
      target.receive(message, incarnation);
    });
  }
}

export function copyMessage(message: SystemMessage): SystemMessage {
  const opId = Buffer.from(message.opId);
  if (message.kind === "value" || message.kind === "writeProc") {
    return { ...message, opId, data: Buffer.from(message.data) };
  }
  return { ...message, opId };
}
