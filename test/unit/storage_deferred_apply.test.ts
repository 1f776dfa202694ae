// Deferred apply: synced states wait in memory until a checkpoint writes them to the slot files.
// What that must not change: loads see the newest state, no slot write on the hot path, persists
// keep going while a checkpoint writes slots, and a crash anywhere in a checkpoint with many dirty
// sectors (and persists racing it) recovers an old or new state per sector with every ack present.
import { describe, expect, it } from "vitest";
import { JournalStore } from "../../src/storage/journal_store.js";
import { MemoryFileSystem, type MemoryIoOp } from "../../src/storage/memory_file_io.js";
import { RECORD_BYTES } from "../../src/storage/record_format.js";
import { CrashingDisk, sameState, silentLogger, stateOf, versionOf } from "./storage_test_support.js";

const DIR = "/replica/data";
const isSlotFile = (op: MemoryIoOp) => op.path.endsWith("slots.dat") || op.path.endsWith("slots.meta");

describe("JournalStore deferred apply", () => {
  it("below the checkpoint size a persist writes no slot file, and loads are served from memory", async () => {
    const ops: MemoryIoOp[] = [];
    const fs = new MemoryFileSystem({
      schedule: (complete, op) => {
        ops.push(op);
        queueMicrotask(complete);
      },
    });
    const store = await JournalStore.open({ fs, dir: DIR, logger: silentLogger });
    const opened = ops.length;
    for (let round = 1; round <= 3; round++) {
      await Promise.all(Array.from({ length: 200 }, (_, i) => store.persist(i * 3, stateOf(i * 3, round))));
    }
    for (let i = 0; i < 200; i++) expect(sameState(await store.load(i * 3), stateOf(i * 3, 3))).toBe(true);
    const hot = ops.slice(opened);
    expect(hot.filter((op) => op.kind === "write" && isSlotFile(op))).toEqual([]);
    expect(hot.filter((op) => op.kind === "read")).toEqual([]);
    expect(store.stats().checkpointCount).toBe(1); // the one at open
    expect(store.writtenSectorCount()).toBe(200);
    await store.close();
    // The close checkpoint applied them: adjacent slots in few writes, not one per sector.
    const slotWrites = ops.slice(opened + hot.length).filter((op) => op.kind === "write" && isSlotFile(op));
    expect(slotWrites.length).toBeLessThanOrEqual(10);
    const again = await JournalStore.open({ fs, dir: DIR, logger: silentLogger });
    expect(again.stats().recovery.replayedRecords).toBe(0);
    expect(again.writtenSectorCount()).toBe(200);
    for (let i = 0; i < 200; i++) expect(sameState(await again.load(i * 3), stateOf(i * 3, 3))).toBe(true);
    await again.close();
  });

  it("persists keep completing while a checkpoint's slot writes are held, and loads see the newest", async () => {
    let holdSlots = false;
    const held: (() => void)[] = [];
    const fs = new MemoryFileSystem({
      schedule: (complete, op) => {
        if (holdSlots && op.kind === "write" && isSlotFile(op)) held.push(complete);
        else queueMicrotask(complete);
      },
    });
    const store = await JournalStore.open({
      fs,
      dir: DIR,
      logger: silentLogger,
      journalCheckpointBytes: 100 * RECORD_BYTES,
    });
    holdSlots = true;
    await Promise.all(Array.from({ length: 100 }, (_, i) => store.persist(i, stateOf(i, 1))));
    // The journal reached its limit: the checkpoint's slot writes are issued and held.
    await new Promise((r) => setImmediate(r));
    expect(held.length).toBeGreaterThan(0);
    const checkpoints = store.stats().checkpointCount;
    for (let v = 2; v <= 4; v++) {
      // 30 records a round: the journal stays below twice its limit (where persists would wait).
      await Promise.all(Array.from({ length: 30 }, (_, i) => store.persist(i, stateOf(i, v))));
      for (let i = 0; i < 30; i++) expect(versionOf(i, await store.load(i), 4)).toBe(v);
    }
    expect(store.stats().checkpointCount).toBe(checkpoints);
    holdSlots = false;
    for (const complete of held.splice(0)) complete();
    await store.persist(1000, stateOf(1000, 1));
    await store.close();
    const again = await JournalStore.open({ fs, dir: DIR, logger: silentLogger });
    for (let i = 0; i < 100; i++) expect(versionOf(i, await again.load(i), 4)).toBe(i < 30 ? 4 : 1);
    expect(again.writtenSectorCount()).toBe(101);
    await again.close();
  });

  it("a crash at I/O operations all through checkpoints with hundreds of dirty sectors and racing persists", {
    timeout: 600_000,
  }, async () => {
    const SECTORS = Array.from({ length: 300 }, (_, i) => (i < 280 ? i : 10_000 + i * 17));
    const MAX_VERSION = 4;
    const run = async (crashAt: number, seed: number, torn: boolean) => {
      const disk = new CrashingDisk({ seed, tornWrites: torn, crashAt });
      const fs = disk.fs;
      const called = new Map<number, number>();
      const acked = new Map<number, number>();
      const persist = (store: JournalStore, s: number, v: number) => {
        called.set(s, Math.max(called.get(s) ?? 0, v));
        return store.persist(s, stateOf(s, v)).then(() => acked.set(s, Math.max(acked.get(s) ?? 0, v)));
      };
      const workload = async () => {
        const store = await JournalStore.open({
          fs,
          dir: DIR,
          logger: silentLogger,
          journalCheckpointBytes: 320 * RECORD_BYTES,
          groupCommitMaxRecords: 64,
        });
        // 300 dirty sectors, then rounds that cross the limit while the apply runs.
        await Promise.all(SECTORS.map((s) => persist(store, s, 1)));
        for (let v = 2; v <= MAX_VERSION; v++) {
          const picks = SECTORS.filter((_, i) => (i * 7 + v) % 3 === 0);
          await Promise.all(picks.map((s) => persist(store, s, v)));
        }
        await store.close();
      };
      const crashed = disk.nextCrash();
      const outcome = await Promise.race([workload().then(() => "done" as const), crashed]);
      disk.crashPoint = 0; // this seed's workload may have needed fewer operations: no crash in recovery
      const store = await JournalStore.open({ fs, dir: DIR, logger: silentLogger });
      let written = 0;
      for (const s of SECTORS) {
        const v = versionOf(s, await store.load(s), MAX_VERSION);
        const where = `crashAt=${crashAt} torn=${torn} sector=${s} version=${v}`;
        expect(v, where).toBeGreaterThanOrEqual(acked.get(s) ?? 0);
        expect(v, where).toBeLessThanOrEqual(called.get(s) ?? 0);
        if (v > 0) written++;
      }
      expect(store.writtenSectorCount()).toBe(written);
      await store.close();
      return { operations: disk.operations, crashed: outcome === "crashed" };
    };
    const total = (await run(0, 1, false)).operations;
    expect(total).toBeGreaterThan(100);
    // Every operation would take minutes: a stride that still lands in every checkpoint phase.
    const stride = Math.max(1, Math.floor(total / Number(process.env.STORAGE_CHECKPOINT_CRASH_RUNS ?? 150)));
    let crashes = 0;
    for (let k = 1; k <= total; k += stride) {
      const r = await run(k, k * 13 + 5, k % 2 === 0);
      if (r.crashed) crashes++;
    }
    expect(crashes).toBeGreaterThan(total / stride / 2);
  });
});
