// Unit tests of rule 9 in register_core.ts: a READ asks only its coordinator's own replica for
// data and its peers for tags; it falls back to reading from every replica when a peer holds a
// newer value, or when its own answer does not come (a corrupt sector, rule 4).
import { describe, expect, it } from "vitest";
import type { SystemMessage } from "../../src/protocol/messages.js";
import type { CoreEffect } from "../../src/register/core_types.js";
import {
  CoreHarness,
  readBatch,
  readRange,
  run,
  sectorOf,
  writeBatch,
  writeRange,
} from "../helpers/core_harness.js";

/** [rank, kind] for ranks 1..3: the same query to every replica of the harness's three. */
const toEveryRank = (kind: string) => [1, 2, 3].map((rank) => [rank, kind]);

/** [to, kind] of every message in flight. */
const queries = (h: CoreHarness) => h.network.map((m) => [m.to, m.message.kind]);

/**
 * Read 2 at replica 3 has no answer of its own: nothing more goes out before the retransmit timer
 * (250 ms), then it asks every replica for data, and completes.
 */
function expectFullReadAtRetransmit(h: CoreHarness, kind: "readProc" | "readRangeProc"): void {
  expect(h.completed.has(2)).toBe(false);
  expect(h.network).toEqual([]);
  h.step(3, { kind: "tick", nowMs: 249 });
  expect(h.network).toEqual([]);
  h.step(3, { kind: "tick", nowMs: 250 });
  expect(queries(h)).toEqual(toEveryRank(kind));
  h.settle();
}

/** [rank, kind] of every load effect since the log was cleared. */
const loadsLogged = (h: CoreHarness) =>
  h.log
    .filter((e) => e.effect.kind === "load" || e.effect.kind === "loadTag")
    .map((e) => [e.rank, e.effect.kind]);

/** Kinds of the messages `rank` sent since the log was cleared. */
function sentBy(h: CoreHarness, rank: number): string[] {
  return h.log
    .filter((e) => e.rank === rank && e.effect.kind === "send")
    .map((e) => (e.effect as Extract<CoreEffect, { kind: "send" }>).message.kind);
}

/** Every replica restarts: nothing cached, so every answer needs a load. */
function restartAll(h: CoreHarness): void {
  for (let rank = 1; rank <= h.replicaCount; rank++) h.restart(rank);
  h.log.length = 0;
}

const isUpdate = (kind: string) => kind === "writeProc" || kind === "writeRangeProc";

describe("register core: single-sector reads move data from one replica (rule 9)", () => {
  it("a read asks its own replica for data and its peers for tags: peers never load data", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 5, sectorOf(7));
    h.settle();
    restartAll(h);
    h.read(2, 2, 5);
    expect(queries(h)).toEqual([
      [1, "readTagProc"],
      [2, "readProc"],
      [3, "readTagProc"],
    ]);
    h.settle();
    expect(h.completed.get(2)).toEqual(sectorOf(7));
    expect(loadsLogged(h)).toEqual([
      [1, "loadTag"],
      [2, "load"],
      [3, "loadTag"],
    ]);
    expect(sentBy(h, 1)).toEqual(["tagValue"]);
    expect(sentBy(h, 3)).toEqual(["tagValue"]);
  });

  it("the fast path returns the own data without a write-back when a majority reports its tag (N=5)", () => {
    const h = new CoreHarness(5);
    h.write(1, 1, 0, sectorOf(3));
    h.settle();
    h.log.length = 0;
    h.network = [];
    h.read(3, 2, 0);
    h.settle(new Set([4, 5]));
    expect(h.completed.get(2)).toEqual(sectorOf(3));
    // One round trip: the query and its answers, no write-back and no second query.
    expect(sentBy(h, 3)).toEqual([
      "readTagProc",
      "readTagProc",
      "readProc",
      "readTagProc",
      "readTagProc",
      "value",
    ]);
    expect(h.log.some((e) => e.effect.kind === "send" && isUpdate(e.effect.message.kind))).toBe(false);
  });

  it("a peer with a newer tag makes the read fall back to the full read, which returns the newer value", () => {
    const h = new CoreHarness(3);
    // A write that reached only replicas 1 and 2; replica 3 still holds the initial state.
    h.write(1, 1, 0, sectorOf(6));
    h.settle(new Set([3]));
    h.network = [];
    h.log.length = 0;
    h.read(3, 2, 0);
    const firstId = h.network[0]!.message.opId;
    // Replica 2 reports the newer tag; replica 3's own VALUE carries the initial state.
    h.network = h.network.filter((m) => m.to !== 1); // replica 1 does not answer
    h.deliver();
    h.serveLoads();
    h.deliver();
    // The value of the highest tag is unknown here: a fresh query asks everyone for data.
    const again = h.network.filter((m) => m.from === 3);
    expect(again.map((m) => [m.to, m.message.kind])).toEqual(toEveryRank("readProc"));
    const secondId = again[0]!.message.opId;
    expect(secondId.equals(firstId)).toBe(false);
    expect(h.completed.has(2)).toBe(false);
    // The fallback counts only VALUEs: TAG_VALUEs for its id change nothing.
    for (const sender of [1, 2]) {
      h.step(3, {
        kind: "message",
        message: { kind: "tagValue", sender, opId: secondId, sectorIndex: 0, ts: 1n, wr: 1 },
      });
    }
    expect(h.completed.has(2)).toBe(false);
    h.settle(new Set([1]));
    expect(h.completed.get(2)).toEqual(sectorOf(6));
    // Replicas 2 and 3 disagreed: the newer value was written back before the read returned.
    expect(sentBy(h, 3).filter(isUpdate)).toHaveLength(3);
    expect(h.disks[2]!.get(0)?.data).toEqual(sectorOf(6));
  });

  it("a corrupt own sector makes the read fall back after the retransmit delay, and it completes", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(4));
    h.settle();
    h.restart(3);
    h.read(3, 2, 0);
    h.deliver();
    expect(h.loads).toEqual([{ rank: 3, sectorIndex: 0 }]);
    h.loads = [];
    // Replica 3's record is corrupt: its own READ_PROC stays unanswered (rule 4).
    h.step(3, { kind: "loadedMany", sectorIndexes: [0], states: [null] });
    h.deliver();
    // A majority of tags, but no data: the read neither completes nor falls back yet.
    expectFullReadAtRetransmit(h, "readProc");
    expect(h.completed.get(2)).toEqual(sectorOf(4));
  });

  it("an optimistic read without a majority keeps retransmitting READ_PROC and completes once one answers", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 0, sectorOf(2));
    h.settle();
    h.read(1, 2, 0);
    h.settle(new Set([2, 3]));
    expect(h.completed.has(2)).toBe(false);
    h.network = [];
    h.step(1, { kind: "tick", nowMs: 250 });
    expect(queries(h)).toEqual([
      [2, "readProc"],
      [3, "readProc"],
    ]);
    // A replica that does not know READ_TAG_PROC would have dropped it; this READ_PROC it answers.
    h.settle(new Set([3]));
    expect(h.completed.get(2)).toEqual(sectorOf(2));
    expect(
      h.log.some((e) => e.rank === 2 && e.effect.kind === "send" && e.effect.message.kind === "value"),
    ).toBe(true);
  });

  it("with the ownDataDespiteNewerTag fault the same read returns its stale own data (what the fallback prevents)", () => {
    const h = new CoreHarness(3, { faults: { ownDataDespiteNewerTag: true } });
    h.write(1, 1, 0, sectorOf(6));
    h.settle(new Set([3]));
    h.network = [];
    h.read(3, 2, 0);
    h.network = h.network.filter((m) => m.to !== 1); // replica 1 does not answer
    h.deliver();
    h.serveLoads();
    h.deliver();
    expect(h.completed.get(2)).toEqual(sectorOf(0));
  });
});

describe("register core: runs and batches move data from one replica (rules 6, 8, 9)", () => {
  it("a range read asks itself with READ_RANGE_PROC and its peers with READ_TAGS_RANGE_PROC, which load no data", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 10, run(1, 2, 3));
    h.settle();
    restartAll(h);
    readRange(h, 2, 2, 10, 3);
    expect(queries(h)).toEqual([
      [1, "readTagsRangeProc"],
      [2, "readRangeProc"],
      [3, "readTagsRangeProc"],
    ]);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(1, 2, 3));
    const loads = loadsLogged(h);
    expect(loads.filter(([rank]) => rank === 2)).toEqual([
      [2, "load"],
      [2, "load"],
      [2, "load"],
    ]);
    expect(loads.filter(([rank]) => rank !== 2).every(([, kind]) => kind === "loadTag")).toBe(true);
    expect(loads).toHaveLength(9);
    expect(sentBy(h, 1)).toEqual(["tagsRangeValue"]);
    const answer = h.log.find((e) => e.rank === 3 && e.effect.kind === "send")!.effect as {
      message: SystemMessage;
    };
    expect(answer.message).toMatchObject({
      kind: "tagsRangeValue",
      sectors: [10, 11, 12],
      tags: [
        { ts: 1n, wr: 1 },
        { ts: 1n, wr: 1 },
        { ts: 1n, wr: 1 },
      ],
    });
    // Every sector's tag came from a majority: no write-back.
    expect(sentBy(h, 2).filter(isUpdate)).toEqual([]);
  });

  it("retransmissions of a range read's query send READ_RANGE_PROC, whose RANGE_VALUEs count", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 10, run(1, 2));
    h.settle();
    readRange(h, 2, 2, 10, 2);
    // Replicas that do not know READ_TAGS_RANGE_PROC drop it (SPEC §1.4).
    h.network = h.network.filter((m) => m.to === 2);
    h.settle();
    expect(h.completed.has(2)).toBe(false);
    h.step(2, { kind: "tick", nowMs: 250 });
    expect(queries(h)).toEqual([
      [1, "readRangeProc"],
      [3, "readRangeProc"],
    ]);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(1, 2));
  });

  it("a range read where a peer has a newer tag for one sector falls back and returns the newer values", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 10, run(1, 2, 3));
    h.settle();
    h.write(1, 2, 11, sectorOf(9));
    h.settle(new Set([3])); // replica 3 missed sector 11's newer value
    h.network = [];
    h.log.length = 0;
    readRange(h, 3, 3, 10, 3);
    h.network = h.network.filter((m) => m.to !== 1); // replica 1 does not answer
    h.deliver();
    h.serveLoads();
    h.deliver();
    expect(queries(h)).toEqual(toEveryRank("readRangeProc"));
    expect(h.completed.has(3)).toBe(false);
    h.settle(new Set([1]));
    expect(h.completed.get(3)).toEqual(run(1, 9, 3));
    // Sector 11's tag came from one rank of the quorum: written back, each sector with its own tag.
    const writeBack = h.log.find(
      (e) => e.effect.kind === "send" && e.effect.message.kind === "writeRangeProc",
    )!.effect as { message: SystemMessage };
    expect(writeBack.message.kind === "writeRangeProc" && writeBack.message.tags.map((t) => t.ts)).toEqual([
      1n,
      2n,
      1n,
    ]);
    expect(h.disks[2]!.get(11)?.data).toEqual(sectorOf(9));
  });

  it("a range read whose own data carries every highest tag but whose quorum disagrees still writes back", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 10, run(1, 2));
    h.settle(new Set([3])); // replica 3 missed the whole run
    h.network = [];
    h.log.length = 0;
    readRange(h, 2, 2, 10, 2);
    h.settle(new Set([1]));
    expect(h.completed.get(2)).toEqual(run(1, 2));
    // No second query (the own data is the newest), but a write-back.
    expect(sentBy(h, 2).filter((k) => k === "readRangeProc")).toHaveLength(1);
    expect(sentBy(h, 2).filter(isUpdate)).toHaveLength(3);
    expect(h.disks[2]!.get(11)?.data).toEqual(sectorOf(2));
  });

  it("a range read with a corrupt own sector falls back after the retransmit delay, and completes", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 10, run(1, 2, 3));
    h.settle();
    h.restart(3);
    readRange(h, 3, 2, 10, 3);
    h.deliver();
    expect(h.loads.map((l) => [l.rank, l.sectorIndex, l.tagOnly ?? false])).toEqual([
      [3, 10, false],
      [3, 11, false],
      [3, 12, false],
    ]);
    h.loads = [];
    const disk = h.disks[2]!;
    h.step(3, { kind: "loadedMany", sectorIndexes: [10], states: [disk.get(10)!] });
    h.step(3, { kind: "loadedMany", sectorIndexes: [11], states: [null] });
    h.step(3, { kind: "loadedMany", sectorIndexes: [12], states: [disk.get(12)!] });
    h.deliver();
    expectFullReadAtRetransmit(h, "readRangeProc");
    expect(h.completed.get(2)).toEqual(run(1, 2, 3));
  });

  it("a batch of single-sector reads queries its sector set with its own data and its peers' tags", () => {
    const h = new CoreHarness(3);
    writeBatch(h, 1, [
      [1, 900, 9],
      [2, 7, 7],
      [3, 300, 3],
    ]);
    h.settle();
    restartAll(h);
    readBatch(h, 2, [
      [4, 300],
      [5, 900],
      [6, 7],
    ]);
    expect(queries(h)).toEqual([
      [1, "readTagsRangeProc"],
      [2, "readRangeProc"],
      [3, "readTagsRangeProc"],
    ]);
    expect(h.network[0]!.message).toMatchObject({ sectors: [7, 300, 900] });
    h.settle();
    expect([4, 5, 6].map((t) => h.completed.get(t))).toEqual([sectorOf(3), sectorOf(9), sectorOf(7)]);
    expect(loadsLogged(h).filter(([, kind]) => kind === "load")).toEqual([
      [2, "load"],
      [2, "load"],
      [2, "load"],
    ]);
    expect(sentBy(h, 2).filter(isUpdate)).toEqual([]);
  });

  it("a batch where a peer holds a newer value of one sector falls back, and each command gets its newest value", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 7, sectorOf(1));
    h.write(1, 2, 300, sectorOf(2));
    h.settle();
    h.write(2, 3, 300, sectorOf(3));
    h.settle(new Set([3])); // replica 3 missed the newer value of sector 300
    h.network = [];
    readBatch(h, 3, [
      [4, 7],
      [5, 300],
    ]);
    h.network = h.network.filter((m) => m.to !== 1); // replica 1 does not answer
    h.deliver();
    h.serveLoads();
    h.deliver();
    expect(queries(h)).toEqual(toEveryRank("readRangeProc"));
    h.settle(new Set([1]));
    expect(h.completed.get(4)).toEqual(sectorOf(1));
    expect(h.completed.get(5)).toEqual(sectorOf(3));
    expect(h.disks[2]!.get(300)?.data).toEqual(sectorOf(3));
  });

  it("a batch with a corrupt own sector falls back after the retransmit delay, and every command completes", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 7, sectorOf(1));
    h.write(1, 2, 300, sectorOf(2));
    h.settle();
    h.restart(2);
    readBatch(h, 2, [
      [4, 300],
      [5, 7],
    ]);
    h.deliver();
    expect(h.loads.map((l) => l.sectorIndex)).toEqual([7, 300]);
    h.loads = [];
    h.step(2, { kind: "loadedMany", sectorIndexes: [7], states: [h.disks[1]!.get(7)!] });
    h.step(2, { kind: "loadedMany", sectorIndexes: [300], states: [null] });
    h.deliver();
    expect(h.network).toEqual([]);
    h.step(2, { kind: "tick", nowMs: 250 });
    expect(queries(h)).toEqual(toEveryRank("readRangeProc"));
    h.settle();
    expect(h.completed.get(4)).toEqual(sectorOf(2));
    expect(h.completed.get(5)).toEqual(sectorOf(1));
  });

  it("with the ownDataDespiteNewerTag fault a run returns its stale own data", () => {
    const h = new CoreHarness(3, { faults: { ownDataDespiteNewerTag: true } });
    writeRange(h, 1, 1, 10, run(1, 2));
    h.settle();
    h.write(1, 2, 11, sectorOf(9));
    h.settle(new Set([3]));
    h.network = [];
    readRange(h, 3, 3, 10, 2);
    h.network = h.network.filter((m) => m.to !== 1); // replica 1 does not answer
    h.deliver();
    h.serveLoads();
    h.deliver();
    expect(h.completed.get(3)).toEqual(run(1, 2));
  });
});
