import { describe, expect, it } from "vitest";
import type { SystemMessage } from "../../src/protocol/messages.js";
import { EventQueue } from "../../src/sim/event_queue.js";
import { Prng } from "../../src/sim/prng.js";
import { SimDisk } from "../../src/sim/sim_disk.js";
import { type NetworkEndpoint, SimNetwork } from "../../src/sim/sim_network.js";
import { Trace } from "../../src/sim/trace.js";
import { decodeValue, encodeValue } from "../../src/sim/value_codec.js";
import type { SectorState } from "../../src/storage/sector_state.js";

function drain(queue: EventQueue): void {
  while (queue.runNext()) {}
}

function state(ts: number, valueId: number): SectorState {
  return { ts: BigInt(ts), wr: 1, data: encodeValue(valueId) };
}

function loadNow(disk: SimDisk, queue: EventQueue, sectorIndex: number): SectorState | null {
  let loaded: SectorState | null | undefined;
  disk.loadMany([sectorIndex], (states) => {
    expect(states.length).toBe(1);
    loaded = states[0];
  });
  drain(queue);
  expect(loaded).not.toBeUndefined();
  return loaded!;
}

describe("PRNG and event queue", () => {
  it("gives the same stream for the same seed and different streams for different seeds", () => {
    const a = new Prng(99);
    const b = new Prng(99);
    const c = new Prng(100);
    const xs = Array.from({ length: 8 }, () => a.nextU32());
    expect(Array.from({ length: 8 }, () => b.nextU32())).toEqual(xs);
    expect(Array.from({ length: 8 }, () => c.nextU32())).not.toEqual(xs);
  });

  it("runs events in time order, ties in insertion order", () => {
    const queue = new EventQueue();
    const order: string[] = [];
    queue.at(20, () => order.push("b"));
    queue.at(10, () => order.push("a"));
    queue.at(20, () => order.push("c"));
    drain(queue);
    expect(order).toEqual(["a", "b", "c"]);
    expect(queue.nowUs).toBe(20);
  });
});

describe("disk model", () => {
  const timing = { syncMinUs: 100, syncMaxUs: 1_000, loadMaxUs: 10 };

  it("reports a persist durable only after its sync, and a crash before that loses or keeps it whole", () => {
    let kept = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const queue = new EventQueue();
      const disk = new SimDisk(queue, new Prng(seed), timing);
      let durable = false;
      disk.persist(5, state(1, 11), () => {
        durable = true;
      });
      expect(durable).toBe(false);
      disk.crash();
      drain(queue);
      expect(durable).toBe(false); // the callback of a crashed write never runs
      const after = loadNow(disk, queue, 5)!;
      const value = decodeValue(after.data);
      expect([0, 11]).toContain(value); // old or new, never a mix
      if (value === 11) kept++;
    }
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(40);
  });

  it("keeps every durable write across a crash", () => {
    const queue = new EventQueue();
    const disk = new SimDisk(queue, new Prng(3), timing);
    let durable = false;
    disk.persist(5, state(1, 11), () => {
      durable = true;
    });
    drain(queue);
    expect(durable).toBe(true);
    disk.persist(5, state(2, 12), () => {});
    disk.crash();
    const after = loadNow(disk, queue, 5)!;
    expect([11, 12]).toContain(decodeValue(after.data));
  });
});

describe("network model", () => {
  function setup(faults: Partial<SimNetwork["faults"]>) {
    const queue = new EventQueue();
    const received: { to: number; message: SystemMessage }[] = [];
    const incarnations = [1, 1, 1];
    const endpoints: NetworkEndpoint[] = incarnations.map((_, i) => ({
      liveIncarnation: () => incarnations[i]!,
      receive: (message) => received.push({ to: i + 1, message }),
    }));
    const network = new SimNetwork(queue, new Prng(1), new Trace(), endpoints);
    network.faults = { ...network.faults, ...faults };
    const message: SystemMessage = { kind: "ack", sender: 1, opId: Buffer.alloc(16, 7), sectorIndex: 3 };
    return { queue, network, received, incarnations, message };
  }

  it("delivers a copy, never the sender's buffer", () => {
    const { queue, network, received, message } = setup({});
    network.send(1, 2, message);
    drain(queue);
    expect(received).toHaveLength(1);
    expect(received[0]!.message.opId.equals(message.opId)).toBe(true);
    expect(received[0]!.message.opId).not.toBe(message.opId);
  });

  it("drops across a partition until healed", () => {
    const { queue, network, received, message } = setup({});
    network.partition([[1], [2, 3]]);
    network.send(1, 2, message);
    network.send(2, 3, message);
    drain(queue);
    expect(received.map((r) => r.to)).toEqual([3]);
    network.heal();
    network.send(1, 2, message);
    drain(queue);
    expect(received.map((r) => r.to)).toEqual([3, 2]);
  });

  it("duplicates messages when asked to", () => {
    const { queue, network, received, message } = setup({ duplicateProbability: 1 });
    network.send(1, 2, message);
    drain(queue);
    expect(received).toHaveLength(2);
  });

  it("drops a message whose target restarted while it was in flight", () => {
    const { queue, network, received, incarnations, message } = setup({});
    network.send(1, 2, message);
    incarnations[1] = 2;
    drain(queue);
    expect(received).toHaveLength(0);
  });

  it("reorders messages between the same two replicas", () => {
    const { queue, network, received } = setup({ delayMinUs: 0, delayMaxUs: 10_000 });
    for (let i = 0; i < 20; i++) {
      network.send(1, 2, { kind: "ack", sender: 1, opId: Buffer.alloc(16, i), sectorIndex: i });
    }
    drain(queue);
    const order = received.map((r) => r.message.sectorIndex);
    expect(order).toHaveLength(20);
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
  });
});
