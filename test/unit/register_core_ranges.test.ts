// Unit tests of range operations in the register core (rule 6 in register_core.ts): a run of
// sectors shares messages, and each sector stays its own register.
import { describe, expect, it } from "vitest";
import type { SystemMessage } from "../../src/protocol/messages.js";
import { RegisterCore } from "../../src/register/register_core.js";
import {
  CoreHarness,
  readBatch,
  readRange,
  run,
  sectorOf,
  writeBatch,
  writeRange,
} from "../helpers/core_harness.js";

const kinds = (h: CoreHarness) => h.network.map((m) => m.message.kind);

describe("register core: range operations", () => {
  it("a range write and a range read each use one message per rank and phase, and round-trip", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 10, run(1, 2, 3, 4));
    expect(kinds(h)).toEqual(["readTagRangeProc", "readTagRangeProc", "readTagRangeProc"]);
    h.settle();
    expect(h.completed.has(1)).toBe(true);
    const sent = h.log
      .filter((e) => e.effect.kind === "send")
      .map((e) => (e.effect as { message: SystemMessage }).message.kind);
    expect(new Set(sent)).toEqual(
      new Set(["readTagRangeProc", "tagRangeValue", "writeRangeProc", "rangeAck"]),
    );
    expect(sent).toHaveLength(12);
    // Every replica stored each sector on its own, with one tag for the run.
    for (const disk of h.disks) {
      expect([10, 11, 12, 13].map((s) => disk.get(s)?.data[0])).toEqual([1, 2, 3, 4]);
      expect(new Set([10, 11, 12, 13].map((s) => String(disk.get(s)?.ts)))).toEqual(new Set(["1"]));
    }
    readRange(h, 2, 2, 9, 6);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(0, 1, 2, 3, 4, 0));
    // Single-sector operations see the range's sectors.
    h.read(3, 3, 12);
    h.settle();
    expect(h.completed.get(3)).toEqual(sectorOf(3));
  });

  it("a range write's tag is above the highest tag of any sector of the run", () => {
    const h = new CoreHarness(3);
    for (let i = 0; i < 5; i++) {
      h.write(2, 100 + i, 21, sectorOf(i));
      h.settle();
    }
    writeRange(h, 1, 1, 20, run(7, 8, 9));
    h.settle();
    const tag = h.disks[0]!.get(20)!;
    expect(tag.ts).toBe(6n);
    expect(tag.wr).toBe(1);
    h.read(3, 2, 21);
    h.settle();
    expect(h.completed.get(2)).toEqual(sectorOf(8));
  });

  it("a range write sends WRITE_RANGE_PROC to every replica once reserved; each stores the run with one persist", () => {
    const h = new CoreHarness(3, { manualReservations: true });
    writeRange(h, 1, 1, 0, run(5, 6));
    h.serveLoads();
    h.deliver();
    h.serveLoads();
    h.deliver();
    expect(kinds(h)).not.toContain("writeRangeProc");
    expect(h.persists).toHaveLength(0);
    h.syncReservations();
    expect(kinds(h).filter((k) => k === "writeRangeProc")).toHaveLength(3);
    h.deliver((m) => m.message.kind === "writeRangeProc");
    h.serveLoads();
    // One persist effect per replica carries the whole run: the store commits it together.
    expect(h.persists.map((p) => [p.rank, p.items.map((item) => item.sectorIndex)])).toEqual([
      [1, [0, 1]],
      [2, [0, 1]],
      [3, [0, 1]],
    ]);
    h.settle();
    expect(h.completed.has(1)).toBe(true);
  });

  it("a replica sends RANGE_ACK only once every sector of the run is durable, for a repeated WRITE_RANGE_PROC too", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 0, run(5, 6, 7));
    h.serveLoads();
    h.deliver();
    h.serveLoads();
    h.deliver();
    h.syncPersists(1);
    const toTwo = h.network.find((m) => m.message.kind === "writeRangeProc" && m.to === 2)!;
    h.deliver((m) => m === toTwo);
    const atTwo = h.persists.filter((p) => p.rank === 2);
    expect(atTwo.map((p) => p.items.length)).toEqual([3]);
    // The same WRITE_RANGE_PROC again (a retransmission) while the first is being persisted: no
    // second persist, and no ACK for either until the run is durable.
    h.step(2, { kind: "message", message: toTwo.message });
    expect(h.persists.filter((p) => p.rank === 2)).toHaveLength(1);
    expect(h.network.some((m) => m.message.kind === "rangeAck" && m.from === 2)).toBe(false);
    h.syncPersists(2);
    expect(h.network.filter((m) => m.message.kind === "rangeAck" && m.from === 2)).toHaveLength(2);
  });

  it("a range read writes back each sector with its own newest tag when the quorum disagrees", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 31, sectorOf(0x31));
    h.settle(new Set([3])); // replica 3 missed it
    h.write(2, 2, 30, sectorOf(0x30));
    h.settle(new Set([1])); // replica 1 missed this one
    // Replica 3's read sees {2, 3} for sector 30 (agree) and {?} ... let it query 1 and 3 only.
    readRange(h, 3, 3, 30, 2);
    h.deliver((m) => m.to !== 2 && m.from !== 2);
    h.settle();
    expect(h.completed.get(3)).toEqual(run(0x30, 0x31));
    const writeBack = h.log.find(
      (e) => e.effect.kind === "send" && e.effect.message.kind === "writeRangeProc",
    );
    expect(writeBack).toBeDefined();
    const message = (writeBack!.effect as { message: SystemMessage }).message;
    expect(message.kind === "writeRangeProc" && message.tags.map((t) => [t.ts, t.wr])).toEqual([
      [1n, 2],
      [1n, 1],
    ]);
    // Now every replica holds both sectors.
    for (const disk of h.disks) expect([disk.get(30)?.data[0], disk.get(31)?.data[0]]).toEqual([0x30, 0x31]);
  });

  it("a range read whose quorum agrees on every sector skips the write-back", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 0, run(1, 2));
    h.settle();
    h.log.length = 0;
    readRange(h, 2, 2, 0, 2);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(1, 2));
    expect(h.log.some((e) => e.effect.kind === "send" && e.effect.message.kind === "writeRangeProc")).toBe(
      false,
    );
  });

  it("overlapping range and single operations at one replica run in arrival order and never deadlock", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 0, run(1, 1, 1)); // sectors 0..2
    h.write(1, 2, 2, sectorOf(2)); // sector 2, behind op 1
    writeRange(h, 1, 3, 1, run(3, 3, 3)); // sectors 1..3, behind op 1 (and op 2 on sector 2)
    h.write(1, 4, 3, sectorOf(4)); // sector 3, behind op 3
    readRange(h, 1, 5, 0, 4);
    const order: number[] = [];
    for (let round = 0; round < 200 && order.length < 5; round++) {
      h.settle();
      for (const t of [1, 2, 3, 4, 5]) if (h.completed.has(t) && !order.includes(t)) order.push(t);
    }
    expect(order).toEqual([1, 2, 3, 4, 5]);
    expect(h.completed.get(5)).toEqual(run(1, 3, 3, 4));
  });

  it("a replica with one corrupt sector in the run does not answer the range query, and a range write heals it", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 0, run(1, 2));
    h.settle();
    h.cores[2] = new RegisterCore({ rank: 3, replicaCount: 3, newOpId: () => Buffer.alloc(16, 3) });
    readRange(h, 2, 2, 0, 2);
    h.deliver((m) => m.to === 3);
    // Its query is READ_TAGS_RANGE_PROC (rule 9): tags only, from the store's index (rule 7).
    expect(h.loads).toEqual([
      { rank: 3, sectorIndex: 0, tagOnly: true },
      { rank: 3, sectorIndex: 1, tagOnly: true },
    ]);
    const loads = h.loads;
    h.loads = [];
    const { ts, wr } = h.disks[2]!.get(0)!;
    h.step(3, { kind: "tagsLoaded", sectorIndexes: [0], tags: [{ ts, wr }] });
    h.step(3, { kind: "tagsLoaded", sectorIndexes: [1], tags: [null] });
    expect(h.network.some((m) => m.from === 3)).toBe(false);
    expect(loads).toHaveLength(2);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(1, 2));
    writeRange(h, 1, 3, 0, run(7, 8));
    h.settle();
    expect(h.completed.has(3)).toBe(true);
    expect(h.disks[2]!.get(1)?.data[0]).toBe(8);
  });

  it("a range write completes with a majority while one replica of three is down, and waits without one", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 5, run(9, 9, 9, 9));
    h.settle(new Set([2, 3]));
    expect(h.completed.has(1)).toBe(false);
    expect(h.persists.length + h.disks[0]!.size).toBe(0);
    h.step(1, { kind: "tick", nowMs: 10_000 });
    h.settle(new Set([3]));
    expect(h.completed.has(1)).toBe(true);
  });
});

describe("register core: tag-only loads (rule 7)", () => {
  it("write queries and WRITE_PROCs load only the tag; READ_PROC loads the data", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 4, sectorOf(1));
    h.settle();
    const loadKinds = h.log.filter((e) => e.effect.kind === "load" || e.effect.kind === "loadTag");
    expect(new Set(loadKinds.map((e) => e.effect.kind))).toEqual(new Set(["loadTag"]));
    h.log.length = 0;
    h.read(2, 2, 4);
    h.settle();
    expect(h.completed.get(2)).toEqual(sectorOf(1));
    expect(h.log.some((e) => e.effect.kind === "load")).toBe(false); // states were cached by the write
    // Rule 9: a read loads data at its coordinator only; its peers look up tags.
    const fresh = new CoreHarness(3);
    fresh.read(1, 1, 9);
    fresh.settle();
    const loads = fresh.log.filter((e) => e.effect.kind === "load" || e.effect.kind === "loadTag");
    expect(loads.map((e) => [e.rank, e.effect.kind])).toEqual([
      [1, "load"],
      [2, "loadTag"],
      [3, "loadTag"],
    ]);
  });

  it("a data load that returns a persist still in flight is not served until that persist is durable", () => {
    const h = new CoreHarness(3);
    const opId = Buffer.alloc(16, 7);
    const to3 = (message: SystemMessage) => h.step(3, { kind: "message", message });
    // Replica 3 learns sector 0's tag (0.0) from a tag-only load.
    to3({ kind: "readTagProc", sender: 1, opId, sectorIndex: 0 });
    h.serveLoads();
    // A READ_PROC needs the data: a data load starts.
    to3({ kind: "readProc", sender: 2, opId: Buffer.alloc(16, 8), sectorIndex: 0 });
    expect(h.loads).toEqual([{ rank: 3, sectorIndex: 0 }]);
    // Meanwhile a WRITE_PROC is stored (not yet durable)...
    to3({ kind: "writeProc", sender: 1, opId, sectorIndex: 0, ts: 5n, wr: 1, data: sectorOf(5) });
    expect(h.persists).toHaveLength(1);
    // ...and the data load returns that persist's state, as a store does.
    h.loads = [];
    h.network = [];
    h.step(3, { kind: "loadedMany", sectorIndexes: [0], states: [{ ts: 5n, wr: 1, data: sectorOf(5) }] });
    expect(h.network.filter((m) => m.message.kind === "value")).toHaveLength(0);
    h.syncPersists(3);
    const values = h.network.filter((m) => m.message.kind === "value");
    expect(values).toHaveLength(1);
    expect(values[0]!.message).toMatchObject({ ts: 5n, wr: 1 });
  });
});

describe("register core: what a run leaves in the sector cache", () => {
  it("keeps only the tags of a long run's sectors (views would pin the run's buffer): a read loads the data", () => {
    const h = new CoreHarness(3);
    const bytes = Array.from({ length: 17 }, (_, i) => i + 1);
    writeRange(h, 1, 1, 40, run(...bytes));
    h.settle();
    h.log.length = 0;
    readRange(h, 2, 2, 40, 17);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(...bytes));
    // The coordinator loads every sector (it kept none of their data); its peers, which answer
    // with tags (rule 9), load nothing: they kept the tags.
    const loads = h.log.filter((e) => e.effect.kind === "load" || e.effect.kind === "loadTag");
    expect(loads).toHaveLength(17);
    expect(loads.every((e) => e.rank === 2 && e.effect.kind === "load")).toBe(true);
    // What was persisted is a view into the run's data, not a copy of its own.
    expect(h.disks[0]!.get(40)!.data.buffer.byteLength).toBeGreaterThanOrEqual(17 * 4096);
  });

  it("keeps only the tags of a short run's sectors too: no copy per sector, a read loads the data", () => {
    const h = new CoreHarness(3);
    writeRange(h, 1, 1, 40, run(1, 2));
    h.settle();
    h.log.length = 0;
    readRange(h, 2, 2, 40, 2);
    h.settle();
    expect(h.completed.get(2)).toEqual(run(1, 2));
    // Only the read's coordinator loads data (rule 9), and it loads both sectors.
    expect(h.log.filter((e) => e.effect.kind === "load").map((e) => e.rank)).toEqual([2, 2]);
    for (const disk of h.disks) expect(disk.get(41)!.data.buffer.byteLength).toBeGreaterThanOrEqual(2 * 4096);
  });

  it("serves a loaded view into a larger read, then keeps only its tag; owned loaded data stays cached", () => {
    const h = new CoreHarness(3);
    const readProc = (sectorIndex: number, id: number): SystemMessage => ({
      kind: "readProc",
      sender: 2,
      opId: Buffer.alloc(16, id),
      sectorIndex,
    });
    const bigRead = Buffer.alloc(64 * 4096, 9);
    h.step(3, { kind: "message", message: readProc(5, 1) });
    h.loads = [];
    h.step(3, {
      kind: "loadedMany",
      sectorIndexes: [5],
      states: [{ ts: 1n, wr: 1, data: bigRead.subarray(4096, 8192) }],
    });
    expect(h.network.filter((m) => m.message.kind === "value")).toHaveLength(1);
    h.step(3, { kind: "message", message: readProc(5, 2) });
    expect(h.loads).toEqual([{ rank: 3, sectorIndex: 5 }]);
    // A sector that owns its buffer stays cached.
    h.loads = [];
    h.step(3, { kind: "message", message: readProc(6, 3) });
    h.loads = [];
    h.step(3, { kind: "loadedMany", sectorIndexes: [6], states: [{ ts: 1n, wr: 1, data: sectorOf(6) }] });
    h.step(3, { kind: "message", message: readProc(6, 4) });
    expect(h.loads).toEqual([]);
    expect(h.network.filter((m) => m.message.kind === "value")).toHaveLength(3);
  });

  it("does not take a data load that a durable uncached persist overtook: it loads again", () => {
    const h = new CoreHarness(3);
    const to3 = (message: SystemMessage) => h.step(3, { kind: "message", message });
    // Sector 0's tag is known (tag-only load), so a WRITE_RANGE_PROC need not wait for its data.
    to3({ kind: "readTagProc", sender: 1, opId: Buffer.alloc(16, 7), sectorIndex: 0 });
    h.serveLoads();
    to3({ kind: "readProc", sender: 2, opId: Buffer.alloc(16, 8), sectorIndex: 0 });
    expect(h.loads).toEqual([{ rank: 3, sectorIndex: 0 }]);
    h.loads = [];
    // While the load is in flight, a WRITE_RANGE_PROC of a long (uncached) run stores a newer
    // state and it becomes durable.
    const count = 20;
    const sectors = Array.from({ length: count }, (_, i) => i);
    to3({
      kind: "writeRangeProc",
      sender: 1,
      opId: Buffer.alloc(16, 9),
      sectorIndex: 0,
      sectorCount: count,
      sectors,
      tags: sectors.map(() => ({ ts: 5n, wr: 1 })),
      data: run(...sectors.map((i) => i + 5)),
    });
    expect(h.loads).toEqual(sectors.slice(1).map((sectorIndex) => ({ rank: 3, sectorIndex, tagOnly: true })));
    h.loads = [];
    for (const sectorIndex of sectors.slice(1)) {
      h.step(3, { kind: "tagsLoaded", sectorIndexes: [sectorIndex], tags: [{ ts: 0n, wr: 0 }] });
    }
    expect(h.syncPersists(3)).toBe(1);
    h.network = [];
    // The load started before the persist comes back with the old state: not served.
    h.step(3, { kind: "loadedMany", sectorIndexes: [0], states: [{ ts: 0n, wr: 0, data: sectorOf(0) }] });
    expect(h.network.filter((m) => m.message.kind === "value")).toHaveLength(0);
    expect(h.loads).toEqual([{ rank: 3, sectorIndex: 0 }]);
    h.serveLoads();
    const values = h.network.filter((m) => m.message.kind === "value");
    expect(values).toHaveLength(1);
    expect(values[0]!.message).toMatchObject({ ts: 5n, wr: 1, data: sectorOf(5) });
  });
});

describe("register core: batches of single-sector commands (rule 8)", () => {
  it("a batch on idle sectors shares one message per rank and phase, and each command gets its own answer", () => {
    const h = new CoreHarness(3);
    writeBatch(h, 1, [
      [1, 900, 9],
      [2, 7, 7],
      [3, 300, 3],
    ]);
    const query = h.network.filter((m) => m.message.kind === "readTagRangeProc");
    expect(query).toHaveLength(3);
    expect(query[0]!.message).toMatchObject({ sectorIndex: 7, sectorCount: 3, sectors: [7, 300, 900] });
    h.settle();
    expect([1, 2, 3].every((t) => h.completed.has(t))).toBe(true);
    readBatch(h, 2, [
      [4, 300],
      [5, 900],
      [6, 7],
    ]);
    h.settle();
    expect(h.completed.get(4)).toEqual(sectorOf(3));
    expect(h.completed.get(5)).toEqual(sectorOf(9));
    expect(h.completed.get(6)).toEqual(sectorOf(7));
  });

  it("repeats of a sector in one batch keep their arrival order", () => {
    const h = new CoreHarness(3);
    h.step(1, {
      kind: "clientBatch",
      ops: [
        { kind: "write", token: 1, sectorIndex: 5, data: sectorOf(1) },
        { kind: "read", token: 2, sectorIndex: 5 },
        { kind: "write", token: 3, sectorIndex: 5, data: sectorOf(3) },
        { kind: "read", token: 4, sectorIndex: 5 },
      ],
    });
    for (let round = 0; round < 50 && h.completed.size < 4; round++) h.settle();
    expect(h.completed.get(2)).toEqual(sectorOf(1));
    expect(h.completed.get(4)).toEqual(sectorOf(3));
  });

  it("a command on a busy sector waits alone: the rest of its batch does not wait for it", () => {
    const h = new CoreHarness(3);
    h.write(1, 1, 40, sectorOf(1)); // in flight on sector 40
    writeBatch(h, 1, [
      [2, 40, 2],
      [3, 41, 3],
    ]);
    // Let only operations not on sector 40 make progress.
    for (let round = 0; round < 20; round++) {
      h.serveLoads();
      h.syncPersists();
      h.deliver((m) => m.message.sectorIndex !== 40);
    }
    expect(h.completed.has(3)).toBe(true);
    expect(h.completed.has(1) || h.completed.has(2)).toBe(false);
    h.settle();
    expect(h.completed.has(1) && h.completed.has(2)).toBe(true);
    h.read(2, 9, 40);
    h.settle();
    expect(h.completed.get(9)).toEqual(sectorOf(2));
  });
});
