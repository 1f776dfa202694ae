// Unit tests of the sans-IO register core (SPEC §2), driven step by step through CoreHarness so
// each test controls exactly which messages arrive and which persists are durable.
import { describe, expect, it } from "vitest";
import type { SystemMessage } from "../../src/protocol/messages.js";
import { evictionSlack, quorumSize, RegisterCore } from "../../src/register/register_core.js";
import { CoreHarness, sectorOf } from "../helpers/core_harness.js";

const isQuery = (m: SystemMessage) => m.kind === "readProc" || m.kind === "readTagProc";
const isQueryAnswer = (m: SystemMessage) => m.kind === "value" || m.kind === "tagValue";

describe("register core", () => {
  it("quorum is more than half of the replicas", () => {
    expect([1, 2, 3, 4, 5, 254].map(quorumSize)).toEqual([1, 2, 2, 3, 3, 128]);
  });

  it("a write completes with a majority while one replica of three is down", () => {
    const h = new CoreHarness(3);
    h.write(1, 7, 5, sectorOf(0xaa));
    h.settle(new Set([3]));
    expect(h.completed.has(7)).toBe(true);
    h.read(2, 8, 5);
    h.settle(new Set([3]));
    expect(h.completed.get(8)).toEqual(sectorOf(0xaa));
  });

  it("nothing completes without a majority and the coordinator stores nothing before its query has one", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(1));
    h.settle(new Set([2, 3]));
    expect(h.completed.size).toBe(0);
    expect(h.persists.length + h.disks[0]!.size).toBe(0);
    expect(h.log.some((e) => e.effect.kind === "persist")).toBe(false);
    // A replica returns: the stubborn link resends the query on the next tick and the write finishes.
    h.step(1, { kind: "tick", nowMs: 10_000 });
    h.settle(new Set([3]));
    expect(h.completed.has(1)).toBe(true);
  });

  it("a write's WRITE_PROC leaves for every replica, itself included, once its tag is reserved; nothing is stored before", () => {
    const h = new CoreHarness(3, { manualReservations: true });
    h.write(1, 1, 0, sectorOf(9));
    h.serveLoads();
    h.deliver();
    h.serveLoads();
    h.deliver();
    // The query has its majority; the first own tag needs a durable reservation (rule 2).
    expect(h.reservations).toEqual([{ rank: 1, upToTs: 1n + 2n ** 20n }]);
    expect(h.network.some((m) => m.message.kind === "writeProc")).toBe(false);
    expect(h.persists).toHaveLength(0);
    h.syncReservations();
    const writeProcs = h.network.filter((m) => m.message.kind === "writeProc");
    expect(writeProcs.map((m) => m.to).sort()).toEqual([1, 2, 3]);
    expect(writeProcs[0]!.message).toMatchObject({ ts: 1n, wr: 1 });
    expect(h.persists).toHaveLength(0);
    // The coordinator stores the state when its own copy arrives, like any replica.
    h.deliver((m) => m.to === 1 && m.message.kind === "writeProc");
    h.serveLoads();
    expect(h.persists).toMatchObject([{ rank: 1, items: [{ sectorIndex: 0 }] }]);
    h.settle();
    expect(h.completed.has(1)).toBe(true);
    // Later writes are covered by the same reservation: no second one.
    h.write(2, 2, 0, sectorOf(8));
    h.write(1, 3, 1, sectorOf(7));
    h.settle();
    expect(h.reserved).toEqual([1n + 2n ** 20n, 2n + 2n ** 20n, 0n]);
    expect(h.completed.has(2) && h.completed.has(3)).toBe(true);
  });

  it("a restarted replica's first write waits for a reservation above everything it reserved before", () => {
    const h = new CoreHarness(3, { manualReservations: true });
    h.write(1, 1, 0, sectorOf(1));
    h.settle();
    expect(h.reserved[0]).toBe(1n + 2n ** 20n);
    h.restart(1);
    h.write(1, 2, 5, sectorOf(2));
    h.serveLoads();
    h.deliver();
    h.serveLoads();
    h.deliver();
    expect(h.network.some((m) => m.message.kind === "writeProc")).toBe(false);
    expect(h.reservations).toEqual([{ rank: 1, upToTs: h.reserved[0]! + 1n + 2n ** 20n }]);
    h.settle();
    expect(h.disks[1]!.get(5)!.ts).toBe(2n + 2n ** 20n);
  });

  it("a replica ACKs a WRITE_PROC only after its persist is durable, duplicates included", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(3));
    h.serveLoads();
    h.deliver();
    h.serveLoads();
    h.deliver();
    h.syncPersists(1);
    const toTwo = h.network.find((m) => m.to === 2 && m.message.kind === "writeProc")!;
    h.deliver((m) => m === toTwo);
    // Same WRITE_PROC again while the first copy is still being persisted.
    h.step(2, { kind: "message", message: toTwo.message });
    expect(h.network.some((m) => m.from === 2 && m.message.kind === "ack")).toBe(false);
    expect(h.persists.filter((p) => p.rank === 2)).toHaveLength(1);
    h.syncPersists(2);
    expect(h.network.filter((m) => m.from === 2 && m.message.kind === "ack")).toHaveLength(2);
  });

  /** A read at replica 1 whose first query is lost; its retransmitted READ_PROC reaches only replica 2. */
  function valueFromTwo(h: CoreHarness): SystemMessage {
    h.read(1, 1, 0);
    h.network = [];
    h.step(1, { kind: "tick", nowMs: 1_000 });
    h.deliver((m) => m.to === 2);
    h.serveLoads();
    return h.network.find((m) => m.from === 2 && m.message.kind === "value")!.message;
  }

  it("duplicate replies from one rank count once", () => {
    const h = new CoreHarness(3);
    const value = valueFromTwo(h);
    for (let i = 0; i < 3; i++) h.step(1, { kind: "message", message: value });
    expect(h.network.some((m) => m.message.kind === "writeProc")).toBe(false);
    expect(h.completed.has(1)).toBe(false);
  });

  it("with the duplicate-counting fault the same duplicates wrongly complete the query", () => {
    const h = new CoreHarness(3, { faults: { countDuplicateReplies: true } });
    const value = valueFromTwo(h);
    for (let i = 0; i < 2; i++) h.step(1, { kind: "message", message: value });
    // Two copies of one VALUE look like a quorum holding the same tag: the read returns at once.
    expect(h.completed.has(1)).toBe(true);
  });

  it("a VALUE never counts as an ACK and replies to another operation are ignored", () => {
    const h = new CoreHarness(3);
    h.read(1, 1, 0);
    h.settle(new Set([3]));
    expect(h.completed.has(1)).toBe(true);
    const oldValue = h.log.find((e) => e.rank === 2 && e.effect.kind === "send")!;
    h.write(1, 2, 0, sectorOf(4));
    // Stale reply of the previous operation: must not count for the new one.
    if (oldValue.effect.kind === "send") h.step(1, { kind: "message", message: oldValue.effect.message });
    expect(h.persists).toHaveLength(0);
  });

  it("16 concurrent writes to one sector through different coordinators all complete with one whole value", () => {
    const h = new CoreHarness(3);
    const values = Array.from({ length: 16 }, (_, i) => sectorOf(i + 1));
    for (const [i, v] of values.entries()) h.write((i % 3) + 1, 100 + i, 42, v);
    // Interleave deliveries in a scrambled but deterministic order.
    for (let round = 0; round < 10_000 && h.completed.size < 16; round++) {
      h.serveLoads();
      if (round % 3 === 0) h.syncPersists();
      const k = h.network.length;
      if (k > 0) {
        const pick = h.network[(round * 7919) % k]!;
        h.deliver((m) => m === pick);
      }
    }
    h.settle();
    for (let i = 0; i < 16; i++) expect(h.completed.has(100 + i)).toBe(true);
    const reads: Buffer[] = [];
    for (let rank = 1; rank <= 3; rank++) {
      h.read(rank, 200 + rank, 42);
      h.settle();
      reads.push(h.completed.get(200 + rank)!);
    }
    expect(reads[0]).toEqual(reads[1]);
    expect(reads[1]).toEqual(reads[2]);
    expect(values.some((v) => v.equals(reads[0]!))).toBe(true);
  });

  it("a read whose quorum already agrees on the highest tag skips the write-back", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(8));
    h.settle();
    const before = h.log.length;
    h.read(2, 2, 0);
    h.settle();
    expect(h.completed.get(2)).toEqual(sectorOf(8));
    const sent = h.log.slice(before).filter((e) => e.effect.kind === "send");
    expect(sent.some((e) => e.effect.kind === "send" && e.effect.message.kind === "writeProc")).toBe(false);
  });

  it("a read whose own value is the newest but whose quorum disagrees on an older tag still writes back", () => {
    const h = new CoreHarness(3);
    // A write that reached only replicas 1 and 2; replica 3 still holds the initial state.
    h.write(1, 1, 0, sectorOf(6));
    h.settle(new Set([3]));
    h.network = [];
    // Read through replica 2, answered by 2 (its own VALUE, the newest) and 3 (an older tag):
    // the value is known, but only one rank reported its tag, so a write-back must happen.
    h.read(2, 2, 0);
    h.deliver((m) => m.to === 3 || m.to === 2);
    h.serveLoads();
    h.deliver((m) => m.to === 3 || m.to === 2);
    expect(h.log.filter((e) => e.rank === 3 && e.effect.kind === "load")).toEqual([]);
    const writeBack = h.network.filter((m) => m.from === 2 && m.message.kind === "writeProc");
    expect(writeBack.map((m) => m.to)).toEqual([1, 2, 3]);
    expect(writeBack[0]!.message).toMatchObject({ ts: 1n, wr: 1, data: sectorOf(6) });
    // No second query: the own data carried the highest tag.
    expect(h.network.some((m) => m.message.kind === "readProc")).toBe(false);
    expect(h.completed.has(2)).toBe(false);
    h.settle(new Set([1]));
    expect(h.completed.get(2)).toEqual(sectorOf(6));
    expect(h.disks[2]!.get(0)?.data).toEqual(sectorOf(6));
  });

  it("VALUE reports only durable state, never a persist still in flight", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(1));
    h.settle();
    h.write(1, 2, 0, sectorOf(2));
    h.settle(new Set([3]));
    // Replica 3 receives the WRITE_PROC of value 2 but its disk has not synced it.
    h.network = h.network.filter((m) => m.to === 3);
    h.step(1, { kind: "tick", nowMs: 1_000 });
    h.deliver((m) => m.to === 3 && m.message.kind === "writeProc");
    expect(h.persists.filter((p) => p.rank === 3)).toHaveLength(1);
    h.step(3, {
      kind: "message",
      message: { kind: "readProc", sender: 2, opId: Buffer.alloc(16, 7), sectorIndex: 0 },
    });
    const value = h.network.find((m) => m.from === 3 && m.message.kind === "value")!;
    expect(value.message.kind === "value" && value.message.data).toEqual(sectorOf(1));
  });

  it("a write whose query saw an old maximum still picks a tag above what its replica stored meanwhile", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(0xa));
    // Replica 1 answers its own query with the initial state...
    h.deliver((m) => m.to === 1);
    h.serveLoads();
    h.deliver((m) => m.to === 1 && isQueryAnswer(m.message));
    // ...then stores a concurrent write (tag 5.2) and ACKs it durably.
    h.step(1, {
      kind: "message",
      message: {
        kind: "writeProc",
        sender: 2,
        opId: Buffer.alloc(16, 9),
        sectorIndex: 0,
        ts: 5n,
        wr: 2,
        data: sectorOf(0xb),
      },
    });
    h.syncPersists(1);
    expect(h.disks[0]!.get(0)!.ts).toBe(5n);
    // Replica 2 answers the query with the initial state: the query maximum is 0.0.
    h.deliver((m) => m.to === 2 && isQuery(m.message));
    h.serveLoads();
    h.deliver((m) => m.to === 1 && isQueryAnswer(m.message));
    const own = h.network.find((m) => m.message.kind === "writeProc" && m.from === 1)!;
    expect(own.message).toMatchObject({ ts: 6n, wr: 1 });
    h.settle();
    expect(h.disks[0]!.get(0)!.ts).toBe(6n);
    expect(h.completed.has(1)).toBe(true);
  });

  it.each([
    ["its own 4 KiB buffer", true, () => sectorOf(3)],
    // As a client's WRITE_SECTORS hands in (the driver's views into one buffer of all its sectors).
    ["a view into a 68 KiB buffer", false, () => Buffer.alloc(17 * 4096, 3).subarray(4096, 8192)],
  ] as const)(
    "a WRITE_PROC whose data is %s stays cached once durable (no load for a later READ_PROC): %s",
    (_, cached, data) => {
      const h = new CoreHarness(3);
      const writeProc: SystemMessage = {
        kind: "writeProc",
        sender: 2,
        opId: Buffer.alloc(16, 1),
        sectorIndex: 0,
        ts: 1n,
        wr: 2,
        data: data(),
      };
      h.step(1, { kind: "message", message: writeProc });
      h.serveLoads();
      expect(h.syncPersists(1)).toBe(1);
      h.network = [];
      const readProc: SystemMessage = {
        kind: "readProc",
        sender: 3,
        opId: Buffer.alloc(16, 2),
        sectorIndex: 0,
      };
      const effects = h.step(1, { kind: "message", message: readProc });
      expect(effects.some((e) => e.kind === "load")).toBe(!cached);
      h.serveLoads();
      const value = h.network.find((m) => m.message.kind === "value")!.message;
      expect(value).toMatchObject({ ts: 1n, wr: 2 });
      expect((value as { data: Buffer }).data.equals(sectorOf(3))).toBe(true);
    },
  );

  it("a write queries with tag-only READ_TAG_PROC and retransmits the standard READ_PROC", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(2));
    expect(h.network.map((m) => m.message.kind)).toEqual(["readTagProc", "readTagProc", "readTagProc"]);
    h.network = h.network.filter((m) => m.to === 1);
    h.serveLoads();
    h.deliver();
    h.serveLoads();
    expect(h.network.map((m) => m.message.kind)).toEqual(["tagValue"]);
    h.deliver();
    h.step(1, { kind: "tick", nowMs: 1_000 });
    expect(h.network.map((m) => m.message.kind)).toEqual(["readProc", "readProc"]);
    h.settle();
    expect(h.completed.has(1)).toBe(true);
    expect(h.disks[2]!.get(0)?.data).toEqual(sectorOf(2));
  });

  it("a read ignores tag-only answers: it must return data", () => {
    const h = new CoreHarness(3);
    h.read(1, 1, 0);
    const query = h.network[0]!.message;
    for (const sender of [2, 3]) {
      h.step(1, {
        kind: "message",
        message: { kind: "tagValue", sender, opId: query.opId, sectorIndex: 0, ts: 9n, wr: sender },
      });
    }
    expect(h.completed.size).toBe(0);
    expect(h.network.some((m) => m.message.kind === "writeProc")).toBe(false);
  });

  it("operations on one sector at one replica run one at a time in FIFO order", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(1));
    h.write(1, 2, 0, sectorOf(2));
    h.read(1, 3, 0);
    const completionOrder: number[] = [];
    for (let round = 0; round < 100 && completionOrder.length < 3; round++) {
      h.settle();
      for (const t of [1, 2, 3])
        if (h.completed.has(t) && !completionOrder.includes(t)) completionOrder.push(t);
    }
    expect(completionOrder).toEqual([1, 2, 3]);
    expect(h.completed.get(3)).toEqual(sectorOf(2));
  });

  it("retransmits an unfinished phase only to ranks that have not answered, and stops once it completes", () => {
    const h = new CoreHarness(3);
    h.read(1, 1, 0);
    h.network = h.network.filter((m) => m.to === 1); // lose the READ_TAG_PROCs to 2 and 3
    h.settle();
    expect(h.completed.size).toBe(0);
    h.step(1, { kind: "tick", nowMs: 300 });
    const resent = h.network.map((m) => m.to).sort();
    expect(resent).toEqual([2, 3]);
    // Retransmissions ask with the standard READ_PROC (a replica without the extension answers it).
    expect(h.network.map((m) => m.message.kind)).toEqual(["readProc", "readProc"]);
    h.settle();
    expect(h.completed.has(1)).toBe(true);
    h.network = [];
    h.step(1, { kind: "tick", nowMs: 100_000 });
    expect(h.network).toHaveLength(0);
  });

  it("a corrupt local sector is never served, not even its tag, and a WRITE_PROC heals it", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(5));
    h.settle();
    // Replica 3 restarts with a record for sector 0 that its store knows is corrupt.
    h.cores[2] = new RegisterCore({ rank: 3, replicaCount: 3, newOpId: () => Buffer.alloc(16, 3) });
    h.read(2, 2, 0);
    h.deliver((m) => m.to === 3);
    expect(h.loads).toEqual([{ rank: 3, sectorIndex: 0, tagOnly: true }]);
    h.loads = [];
    h.step(3, { kind: "tagsLoaded", sectorIndexes: [0], tags: [null] });
    expect(h.network.some((m) => m.from === 3)).toBe(false);
    // A READ_PROC (a fallback query's, rule 9) gets no answer either.
    h.step(3, {
      kind: "message",
      message: { kind: "readProc", sender: 1, opId: Buffer.alloc(16, 8), sectorIndex: 0 },
    });
    expect(h.loads).toEqual([]);
    expect(h.network.some((m) => m.from === 3)).toBe(false);
    h.settle();
    expect(h.completed.get(2)).toEqual(sectorOf(5));
    // A write heals replica 3, which then answers again.
    h.write(1, 3, 0, sectorOf(6));
    h.settle();
    expect(h.disks[2]!.get(0)?.data).toEqual(sectorOf(6));
    h.network = [];
    h.step(3, {
      kind: "message",
      message: { kind: "readProc", sender: 1, opId: Buffer.alloc(16, 9), sectorIndex: 0 },
    });
    expect(h.network.map((m) => m.message)).toMatchObject([{ kind: "value", ts: 2n, data: sectorOf(6) }]);
  });

  it("a corrupt sector being healed is not served, nor reloaded, until the healing persist is durable", () => {
    const h = new CoreHarness(3);
    h.step(3, {
      kind: "message",
      message: { kind: "readProc", sender: 1, opId: Buffer.alloc(16, 1), sectorIndex: 0 },
    });
    h.loads = [];
    h.step(3, { kind: "loadedMany", sectorIndexes: [0], states: [null] });
    h.step(3, {
      kind: "message",
      message: {
        kind: "writeProc",
        sender: 1,
        opId: Buffer.alloc(16, 2),
        sectorIndex: 0,
        ts: 4n,
        wr: 1,
        data: sectorOf(4),
      },
    });
    expect(h.persists).toHaveLength(1);
    h.network = [];
    h.step(3, {
      kind: "message",
      message: { kind: "readProc", sender: 2, opId: Buffer.alloc(16, 3), sectorIndex: 0 },
    });
    expect(h.loads).toEqual([]);
    expect(h.network).toEqual([]);
    h.syncPersists(3);
    expect(h.network.map((m) => m.message.kind)).toEqual(["ack"]);
    h.step(3, {
      kind: "message",
      message: { kind: "readProc", sender: 2, opId: Buffer.alloc(16, 4), sectorIndex: 0 },
    });
    const value = h.network.find((m) => m.message.kind === "value")!.message;
    expect(value.kind === "value" && value.ts).toBe(4n);
  });

  it("memory follows the sectors in use, not the volume: idle sectors are evicted", () => {
    const h = new CoreHarness(3, { cacheCapacitySectors: 16 });
    for (let i = 0; i < 200; i++) {
      h.write((i % 3) + 1, i, i * 1000, sectorOf(i % 250));
      h.settle();
    }
    // Scans run once the cache is a slack over its capacity (every sector written here is idle).
    const bound = 16 + evictionSlack(16);
    for (const core of h.cores) expect(core.residentSectorCount()).toBeLessThanOrEqual(bound);
    h.read(2, 9999, 199 * 1000);
    h.settle();
    expect(h.completed.get(9999)).toEqual(sectorOf(199 % 250));
  });

  /**
   * Replica 1 writes A; its WRITE_PROC reaches only replica 3, which stores it; replica 1 crashes
   * before its own copy is stored and restarts; then it writes B, and replicas 1, 2, 4 and 5 (none
   * holds A) answer its query. Returns the states of A (at replica 3) and B (at replica 2).
   */
  function writeAfterCrashMidWrite(h: CoreHarness) {
    h.write(1, 1, 0, sectorOf(0xa));
    h.settle(new Set([2, 3, 4, 5]));
    h.step(1, { kind: "tick", nowMs: 0 });
    h.deliver((m) => m.to !== 1 && isQuery(m.message));
    h.serveLoads();
    h.deliver((m) => isQueryAnswer(m.message));
    h.network = h.network.filter((m) => m.to === 3 && m.message.kind === "writeProc");
    h.deliver();
    h.serveLoads();
    h.syncPersists(3);
    expect(h.disks[0]!.has(0)).toBe(false);
    h.restart(1);
    h.write(1, 2, 0, sectorOf(0xb));
    h.deliver((m) => m.to === 1 || m.to === 2 || m.to === 4 || m.to === 5);
    h.serveLoads();
    h.deliver((m) => isQueryAnswer(m.message));
    h.settle(new Set([3]));
    expect(h.completed.has(2)).toBe(true);
    const stateA = h.disks[2]!.get(0)!;
    const stateB = h.disks[1]!.get(0)!;
    expect(stateA.data).toEqual(sectorOf(0xa));
    expect(stateB.data).toEqual(sectorOf(0xb));
    return { stateA, stateB };
  }

  it("a restarted coordinator never reuses a tag it sent before the crash (N=5)", () => {
    const { stateA, stateB } = writeAfterCrashMidWrite(new CoreHarness(5));
    expect(stateA.wr === 1 && stateB.wr === 1).toBe(true);
    expect(stateB.ts > stateA.ts).toBe(true);
  });

  it("with the restart floor ignored, the same crash makes two values share one tag (what rule 2 prevents)", () => {
    const { stateA, stateB } = writeAfterCrashMidWrite(
      new CoreHarness(5, { faults: { ignoreTagFloor: true } }),
    );
    expect(stateB.ts).toBe(stateA.ts);
    expect(stateB.wr).toBe(stateA.wr);
  });
});
