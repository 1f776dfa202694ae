// The pipelined group commit of SlotStore step by step, over a simulated disk whose datasyncs wait
// for the test to complete them (or fail them): how many batches are in flight at once, the order
// they complete in, what the failure of one of them does, how batches form while others sync, and
// which commit depth recovery uses.
import { describe, expect, it } from "vitest";
import { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import { decodeFileHeader, SLOT_FILE, slotPosition } from "../../src/storage/slot_format.js";
import { SlotStore, type SlotStoreOptions } from "../../src/storage/slot_store.js";
import { isAtomicDiskError } from "../../src/util/errors.js";
import { silentLogger, stateOf, turns, versionOf } from "./storage_test_support.js";

const DIR = "/d";

/** A MemoryFileSystem whose datasyncs, while `hold` is on, wait for `release`. */
class HeldSyncs {
  readonly fs: MemoryFileSystem;
  hold = false;
  /** Held datasyncs, oldest first. */
  readonly held: (() => void)[] = [];
  /** Most datasyncs held at once. */
  maxHeld = 0;
  /** Operations of this kind fail when they complete. */
  failing: "write" | "datasync" | undefined;

  constructor() {
    this.fs = new MemoryFileSystem({
      schedule: (complete, op) => {
        if (op.kind === "datasync" && this.hold) {
          this.held.push(complete);
          this.maxHeld = Math.max(this.maxHeld, this.held.length);
          return;
        }
        queueMicrotask(complete);
      },
      injectFault: (op) => (op.kind === this.failing ? new Error(`EIO (${op.kind})`) : undefined),
    });
  }

  /** Completes the held datasync at `index` (0: the oldest), failing it if `fail`. */
  release(index = 0, fail = false): void {
    const complete = this.held.splice(index, 1)[0];
    expect(complete, `no held datasync at ${index}`).toBeDefined();
    this.failing = fail ? "datasync" : undefined;
    complete!();
    this.failing = undefined;
  }
}

async function openHeld(disk: HeldSyncs, options: Partial<SlotStoreOptions> = {}): Promise<SlotStore> {
  disk.hold = false;
  const store = await SlotStore.open({ fs: disk.fs, dir: DIR, logger: silentLogger, ...options });
  disk.hold = true;
  disk.maxHeld = 0;
  return store;
}

/** Lets every completed operation's continuations run (writes complete on microtasks). */
const settle = () => turns(3);

/** Tracks the order persists resolve (or reject) in. */
function tracker() {
  const resolved: string[] = [];
  const rejected = new Map<string, unknown>();
  const track = (name: string, p: Promise<void>) =>
    p.then(
      () => {
        resolved.push(name);
      },
      (err: unknown) => {
        rejected.set(name, err);
      },
    );
  return { resolved, rejected, track };
}

describe("SlotStore pipelined group commit", () => {
  for (const depth of [1, 2, 3]) {
    it(`depth ${depth}: ${depth} batches in flight at once (${depth} fdatasyncs outstanding before the first completes), never more, completed in order`, async () => {
      const disk = new HeldSyncs();
      const store = await openHeld(disk, { commitDepth: depth });
      const { resolved, track } = tracker();
      const all: Promise<void>[] = [];
      // One persist per turn: each finds the earlier batches still syncing.
      for (let i = 0; i < depth + 2; i++) {
        all.push(track(`p${i}`, store.persist(i, stateOf(i, 1))));
        await settle();
        expect(disk.held.length, `after persist ${i}`).toBe(Math.min(i + 1, depth));
      }
      expect(resolved).toEqual([]);
      expect(store.stats()).toMatchObject({ batchesInFlight: depth, batchCount: 0, commitDepth: depth });
      // The oldest completes: the next batch takes both queued persists, and the pipeline is full again.
      disk.release(0);
      await settle();
      expect(resolved).toEqual(["p0"]);
      expect(disk.held.length).toBe(depth);
      expect(store.stats().batchesInFlight).toBe(depth);
      while (disk.held.length > 0) {
        disk.release(0);
        await settle();
      }
      await Promise.all(all);
      expect(resolved).toEqual(Array.from({ length: depth + 2 }, (_, i) => `p${i}`));
      expect(disk.maxHeld).toBe(depth);
      expect(store.stats()).toMatchObject({
        batchCount: depth + 1,
        maxBatchSectors: 2,
        maxBatchesInFlight: depth,
      });
      disk.hold = false;
      await store.close();
    });
  }

  it("a later batch whose fdatasync finishes first completes after the earlier one; a sector in both ends at the newer state, and its older slot is freed once", async () => {
    const disk = new HeldSyncs();
    const store = await openHeld(disk, { commitDepth: 2, growthSlots: 0 });
    const { resolved, track } = tracker();
    const S = 5;
    const first = [
      track("s1", store.persist(S, stateOf(S, 1))),
      track("t1", store.persist(6, stateOf(6, 1))),
    ];
    await settle();
    const second = [
      track("s2", store.persist(S, stateOf(S, 2))),
      track("u1", store.persist(7, stateOf(7, 1))),
    ];
    await settle();
    expect(disk.held.length).toBe(2);
    // Batch 2's fdatasync first: nothing completes, nothing moves.
    disk.release(1);
    await settle();
    expect(resolved).toEqual([]);
    expect(store.stats()).toMatchObject({ batchCount: 0, batchesInFlight: 2, freeSlots: 0 });
    expect(versionOf(S, await store.load(S), 2)).toBe(2);
    expect(await store.loadTag(S)).toEqual({ ts: 2n, wr: 3 });
    disk.release(0);
    await Promise.all([...first, ...second]);
    expect(resolved).toEqual(["s1", "t1", "s2", "u1"]);
    // Slots 0..3 were taken; S's first slot is free again, the other three are current.
    expect(store.stats()).toMatchObject({ batchCount: 2, slotCount: 4, freeSlots: 1, writtenSectors: 3 });
    for (const [sector, version] of [
      [S, 2],
      [6, 1],
      [7, 1],
    ] as const) {
      expect(versionOf(sector, await store.load(sector), 2), `sector ${sector}`).toBe(version);
    }
    // The freed slot is reused, and nothing else is.
    const reuse = store.persist(8, stateOf(8, 1));
    await settle();
    disk.release(0);
    await reuse;
    expect(store.stats()).toMatchObject({ slotCount: 4, freeSlots: 0, writtenSectors: 4 });
    disk.hold = false;
    await store.close();
    const again = await SlotStore.open({ fs: disk.fs, dir: DIR, logger: silentLogger });
    expect(versionOf(S, await again.load(S), 2)).toBe(2);
    expect(versionOf(8, await again.load(8), 1)).toBe(1);
    await again.close();
  });

  it("a batch formed when one completes takes every queued call, up to the batch limit", async () => {
    const disk = new HeldSyncs();
    const store = await openHeld(disk, { commitDepth: 2, maxBatchSectors: 8 });
    const all = [store.persist(100, stateOf(100, 1))];
    await settle();
    all.push(store.persist(101, stateOf(101, 1)));
    await settle();
    // The pipeline is full: 20 more queue.
    for (let i = 0; i < 20; i++) all.push(store.persist(i, stateOf(i, 1)));
    await settle();
    expect(disk.held.length).toBe(2);
    disk.release(0);
    await settle();
    // One batch took the place of the completed one (its size shows once it completes).
    expect(disk.held.length).toBe(2);
    expect(store.stats()).toMatchObject({ batchCount: 1, batchesInFlight: 2 });
    while (disk.held.length > 0) {
      disk.release(0);
      await settle();
    }
    await Promise.all(all);
    // 1, 1, then 8 + 8 + 4.
    expect(store.stats()).toMatchObject({ batchCount: 5, maxBatchSectors: 8 });
    disk.hold = false;
    await store.close();
  });

  for (const failing of ["second sync", "first sync", "second write"] as const) {
    it(`a failure of one of two batches in flight (${failing}) rejects every call of both, and the queued ones`, async () => {
      const disk = new HeldSyncs();
      const store = await openHeld(disk, { commitDepth: 2 });
      const { resolved, rejected, track } = tracker();
      const all = [track("a", store.persist(1, stateOf(1, 1)))];
      await settle();
      if (failing === "second write") disk.failing = "write";
      all.push(track("b", store.persistMany([2, 3].map((s) => ({ sectorIndex: s, state: stateOf(s, 1) })))));
      await settle();
      disk.failing = undefined;
      all.push(track("queued", store.persist(4, stateOf(4, 1))));
      await settle();
      if (failing === "second write") {
        expect(disk.held.length).toBe(1);
      } else {
        expect(disk.held.length).toBe(2);
        disk.release(failing === "second sync" ? 1 : 0, true);
      }
      await settle();
      expect(resolved).toEqual([]);
      expect([...rejected.keys()].sort()).toEqual(["a", "b", "queued"]);
      for (const err of rejected.values())
        expect(isAtomicDiskError(err, "STORAGE_IO"), String(err)).toBe(true);
      // The other fdatasync still succeeds: too late, the store has stopped.
      disk.release(0);
      await Promise.all(all);
      expect(resolved).toEqual([]);
      for (const later of [
        await store.load(1).catch((e) => e),
        await store.persist(5, stateOf(5, 1)).catch((e) => e),
        await store.close().catch((e) => e),
      ]) {
        expect(isAtomicDiskError(later, "STORAGE_IO"), String(later)).toBe(true);
      }
      // Nothing was acknowledged: a restart keeps each sector old or new.
      disk.hold = false;
      const again = await SlotStore.open({ fs: disk.fs, dir: DIR, logger: silentLogger });
      for (const s of [1, 2, 3, 4]) expect([0, 1]).toContain(versionOf(s, await again.load(s), 1));
      await again.close();
    });
  }

  it("recovery checks as many batches as the depth the file was written with, then records its own", async () => {
    const fs = new MemoryFileSystem();
    const headerDepth = async () => {
      const file = await fs.open(`${DIR}/${SLOT_FILE}`, { create: false });
      const buf = Buffer.alloc(4096);
      await file.read(buf, 0, 4096, 0);
      await file.close();
      return [0, 512].map((at) => {
        const r = decodeFileHeader(buf, at);
        return r.status === "valid" ? r.commitDepth : r.status;
      });
    };
    const open = (commitDepth: number) =>
      SlotStore.open({ fs, dir: DIR, logger: silentLogger, commitDepth, growthSlots: 0 });
    let store = await open(3);
    expect(await headerDepth()).toEqual([3, 3]);
    // Five batches of one sector each: seqs 1..5.
    for (let s = 0; s < 5; s++) await store.persist(s, stateOf(s, 1));
    await store.close();
    store = await open(1);
    expect(store.stats().recovery).toMatchObject({
      lastBatchSeq: 5,
      checkedBatches: 3,
      checkedEntries: 3,
      depthRecorded: true,
    });
    expect(await headerDepth()).toEqual([1, 1]);
    await store.persist(9, stateOf(9, 1));
    await store.close();
    store = await open(1);
    expect(store.stats().recovery).toMatchObject({
      checkedBatches: 1,
      checkedEntries: 1,
      depthRecorded: false,
    });
    await store.close();
    store = await open(2);
    expect(store.stats().recovery).toMatchObject({ checkedBatches: 1, depthRecorded: true });
    expect(await headerDepth()).toEqual([2, 2]);
    await store.close();
  });

  it("a store of a lower depth that crashes anywhere in its recovery never shrinks the window before settling it", async () => {
    let crashes = 0;
    for (let crashAt = 1; ; crashAt++) {
      let ops = 0;
      let crashing = false;
      const fs: MemoryFileSystem = new MemoryFileSystem({
        schedule: (complete) => {
          if (crashing && ++ops === crashAt) {
            // Nothing unsynced survives.
            fs.crash({ random: () => 0 });
            return;
          }
          queueMicrotask(complete);
        },
      });
      const options = { fs, dir: DIR, logger: silentLogger, growthSlots: 0 };
      // Depth 3, one sector per batch: sector s in slot s at seq s + 1.
      const writer = await SlotStore.open({ ...options, commitDepth: 3 });
      for (let s = 0; s < 5; s++) await writer.persist(s, stateOf(s, 1));
      await writer.close();
      // As if the data of batches 3 and 4 (of the newest three) never landed.
      for (const slot of [2, 3]) fs.corrupt(`${DIR}/${SLOT_FILE}`, slotPosition(slot) + 100, 8);
      crashing = true;
      const recovered = await Promise.race([
        SlotStore.open({ ...options, commitDepth: 1 }).then(async (s) => {
          await s.close();
          return "done" as const;
        }),
        turns(20).then(() => "crashed" as const),
      ]);
      crashing = false;
      const store = await SlotStore.open({ ...options, commitDepth: 1 });
      const states = await store.loadMany([0, 1, 2, 3, 4]);
      expect(
        states.map((st, s) => (st === null ? "corrupt" : versionOf(s, st, 1))),
        `crash at ${crashAt}`,
      ).toEqual([1, 1, 0, 0, 1]);
      await store.close();
      if (recovered === "done") break;
      crashes++;
    }
    expect(crashes).toBeGreaterThan(5);
  });
});
