import { readdir, stat } from "node:fs/promises";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { JournalStore } from "../../src/storage/journal_store.js";
import { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import { nodeFileSystem } from "../../src/storage/node_file_io.js";
import { JOURNAL_RECORDS_OFFSET, RECORD_BYTES } from "../../src/storage/record_format.js";
import { isAtomicDiskError } from "../../src/util/errors.js";
import { JOURNAL_EXTEND_BYTES, SECTOR_SIZE_BYTES } from "../../src/util/limits.js";
import { sameState, silentLogger, stateOf, withTempDir } from "./storage_test_support.js";

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(path.join(dir, name))).size;
  return total;
}

describe("JournalStore on real files", () => {
  it("returns (0, 0, zeros) for a sector that was never written", async () => {
    await withTempDir(async (dir) => {
      const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      const s = await store.load(12345);
      expect(s.ts).toBe(0n);
      expect(s.wr).toBe(0);
      expect(s.data.equals(Buffer.alloc(SECTOR_SIZE_BYTES))).toBe(true);
      expect(store.writtenSectorCount()).toBe(0);
      await store.close();
    });
  });

  it("keeps every persisted state across close and reopen, and across an abandon without close", async () => {
    await withTempDir(async (dir) => {
      let store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      await Promise.all([0, 1, 2, 7, 100].map((s) => store.persist(s, stateOf(s, 1))));
      await store.persist(7, stateOf(7, 2));
      expect(sameState(await store.load(7), stateOf(7, 2))).toBe(true);
      await store.close();
      store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(store.writtenSectorCount()).toBe(5);
      for (const s of [0, 1, 2, 100]) expect(sameState(await store.load(s), stateOf(s, 1))).toBe(true);
      expect(sameState(await store.load(7), stateOf(7, 2))).toBe(true);
      await store.persist(1, stateOf(1, 3));
      await store.abandonForTesting();
      store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(store.stats().recovery.replayedRecords).toBe(1);
      expect(sameState(await store.load(1), stateOf(1, 3))).toBe(true);
      await store.close();
    });
  });

  it("applies persists of one sector in call order, whatever batches they fall into", async () => {
    await withTempDir(async (dir) => {
      const store = await JournalStore.open({
        fs: nodeFileSystem,
        dir,
        logger: silentLogger,
        groupCommitMaxRecords: 3,
      });
      const all: Promise<void>[] = [];
      for (let v = 1; v <= 20; v++) {
        all.push(store.persist(5, stateOf(5, v)));
        all.push(store.persist(v + 100, stateOf(v + 100, 1)));
        // load sees the latest state even before it is durable.
        expect(sameState(await store.load(5), stateOf(5, v))).toBe(true);
      }
      await Promise.all(all);
      expect(sameState(await store.load(5), stateOf(5, 20))).toBe(true);
      await store.abandonForTesting();
      const again = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(sameState(await again.load(5), stateOf(5, 20))).toBe(true);
      await again.close();
    });
  });

  it("loadTag reports the tag load would report, from memory, in every stage of a sector's life", async () => {
    await withTempDir(async (dir) => {
      let store = await JournalStore.open({
        fs: nodeFileSystem,
        dir,
        logger: silentLogger,
        journalCheckpointBytes: 4 * RECORD_BYTES,
      });
      const tagOf = async (s: number) => {
        const { ts, wr } = await store.load(s);
        return { ts, wr };
      };
      expect(await store.loadTag(3)).toEqual({ ts: 0n, wr: 0 });
      const pending = store.persist(3, stateOf(3, 1));
      expect(await store.loadTag(3)).toEqual(await tagOf(3)); // queued, not yet durable
      await pending;
      expect(await store.loadTag(3)).toEqual({ ts: 1n, wr: 2 }); // durable, not yet in its slot
      for (let v = 2; v <= 12; v++) await store.persist(v + 10, stateOf(v + 10, v)); // checkpoints
      expect(store.stats().checkpointCount).toBeGreaterThan(0);
      for (const s of [3, 15, 22]) expect(await store.loadTag(s)).toEqual(await tagOf(s));
      await store.close();
      store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      for (const s of [3, 15, 22, 99]) expect(await store.loadTag(s)).toEqual(await tagOf(s));
      await store.close();
    });
  });

  it("group commit: 200 concurrent persists share far fewer than 200 fsyncs", async () => {
    await withTempDir(async (dir) => {
      const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      const before = store.stats();
      await Promise.all(Array.from({ length: 200 }, (_, i) => store.persist(i, stateOf(i, 1))));
      const after = store.stats();
      const batches = after.batchCount - before.batchCount;
      expect(after.fsyncCount - before.fsyncCount).toBe(batches);
      expect(batches).toBeLessThanOrEqual(10);
      expect(after.maxBatchRecords).toBeGreaterThanOrEqual(20);
      await store.close();
    });
  });

  it("grows the journal a whole chunk of zeros ahead of its records; recovery after a crash skips them", async () => {
    await withTempDir(async (dir) => {
      const journalBytes = async () => (await stat(path.join(dir, "journal"))).size;
      let store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      const opened = await journalBytes();
      expect(opened).toBeLessThan(RECORD_BYTES);
      await store.persist(3, stateOf(3, 1));
      // One record, but the file grew by a whole chunk: the next ~1,000 batches allocate nothing.
      expect(await journalBytes()).toBe(opened + JOURNAL_EXTEND_BYTES);
      await Promise.all([4, 5, 6].map((s) => store.persist(s, stateOf(s, 1))));
      expect(await journalBytes()).toBe(opened + JOURNAL_EXTEND_BYTES);
      await store.abandonForTesting();
      store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(store.stats().recovery).toMatchObject({
        replayedRecords: 4,
        discardedRecords: 0,
        corruptSectors: 0,
      });
      for (const s of [3, 4, 5, 6]) expect(sameState(await store.load(s), stateOf(s, 1))).toBe(true);
      await store.close();
      // A clean close gives the space back.
      expect(await journalBytes()).toBe(JOURNAL_RECORDS_OFFSET);
    });
  });

  it("space: 2000 writes to 1000 sectors take at most 1.10 * 4096 per sector + 64 KiB after close", async () => {
    await withTempDir(async (dir) => {
      const store = await JournalStore.open({
        fs: nodeFileSystem,
        dir,
        logger: silentLogger,
        journalCheckpointBytes: 100 * RECORD_BYTES,
      });
      for (let round = 0; round < 2; round++) {
        const writes: Promise<void>[] = [];
        for (let i = 0; i < 1000; i++) writes.push(store.persist(i * 7919, stateOf(i * 7919, round + 1)));
        await Promise.all(writes);
      }
      expect(store.stats().checkpointCount).toBeGreaterThanOrEqual(2);
      await store.close();
      const bytes = await dirBytes(dir);
      expect(bytes).toBeLessThanOrEqual(1.1 * SECTOR_SIZE_BYTES * 1000 + 64 * 1024);
      const names = await readdir(dir);
      expect(names.sort()).toEqual(["journal", "slots.dat", "slots.meta"]);
      const again = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(again.writtenSectorCount()).toBe(1000);
      expect(sameState(await again.load(999 * 7919), stateOf(999 * 7919, 2))).toBe(true);
      await again.close();
    });
  });

  it("recovery reads nothing proportional to the volume size: sector 2^39 reopens fast", async () => {
    await withTempDir(async (dir) => {
      const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      const huge = 2 ** 39 + 3;
      await store.persist(huge, stateOf(huge, 1));
      await store.persist(2 ** 30, stateOf(2 ** 30, 1));
      await store.close();
      const started = performance.now();
      const again = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(performance.now() - started).toBeLessThan(1000);
      expect(sameState(await again.load(huge), stateOf(huge, 1))).toBe(true);
      expect(sameState(await again.load(2 ** 30), stateOf(2 ** 30, 1))).toBe(true);
      expect(again.stats().recovery.metaEntries).toBe(2);
      await again.close();
      expect(await dirBytes(dir)).toBeLessThan(3 * 4096 + 64 * 1024);
    });
  });

  it("refuses a data directory whose files are of another format", async () => {
    await withTempDir(async (dir) => {
      const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      await store.close();
      const { writeFile } = await import("node:fs/promises");
      await writeFile(path.join(dir, "journal"), Buffer.alloc(4096, 0x41));
      const err = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger }).catch((e) => e);
      expect(isAtomicDiskError(err)).toBe(true);
      // Both header copies unreadable: could be damage or another program's file; never opened.
      expect(["DATA_DIR_UNUSABLE", "STORAGE_CORRUPT"]).toContain(err.code);
    });
  });
});

describe("JournalStore failure handling", () => {
  it("a failed journal sync rejects the batch with STORAGE_IO and stops the store", async () => {
    let failSyncs = false;
    const fs = new MemoryFileSystem({
      injectFault: (op) => (failSyncs && op.kind === "datasync" ? new Error("EIO") : undefined),
    });
    const store = await JournalStore.open({ fs, dir: "/d", logger: silentLogger });
    await store.persist(1, stateOf(1, 1));
    failSyncs = true;
    const err = await store.persist(2, stateOf(2, 1)).catch((e) => e);
    expect(isAtomicDiskError(err, "STORAGE_IO")).toBe(true);
    const later = await store.load(1).catch((e) => e);
    expect(isAtomicDiskError(later, "STORAGE_IO")).toBe(true);
    failSyncs = false;
    const again = await JournalStore.open({ fs, dir: "/d", logger: silentLogger });
    expect(sameState(await again.load(1), stateOf(1, 1))).toBe(true);
    await again.close();
  });
});
