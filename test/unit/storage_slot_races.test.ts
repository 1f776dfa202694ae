// Loads racing persists: while a load's read is in flight its sector moves to a new slot and the
// old slot is reused (by another sector, or by the same sector coming back). The read may see the
// slot's content from before the reuse (the kernel ran it early) or after it (late); either way the
// load must return the sector's latest state, never another sector's and never a false
// STORAGE_CORRUPT.
import { describe, expect, it } from "vitest";
import type { FileSystemIo } from "../../src/storage/file_io.js";
import { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import type { SectorState } from "../../src/storage/sector_state.js";
import { SlotStore } from "../../src/storage/slot_store.js";
import { overridingFiles, silentLogger, stateOf, versionOf } from "./storage_test_support.js";

type ReadTiming = "early" | "late";

/**
 * A file system whose reads, while `hold` is on, wait for `release()`: an "early" read takes the
 * file's content when issued (and delivers it later), a "late" one when released.
 */
class HeldReads {
  hold = false;
  timing: ReadTiming = "late";
  private waiting: (() => void)[] = [];
  readonly fs: FileSystemIo = overridingFiles(new MemoryFileSystem(), (file) => ({
    read: async (buffer, offset, length, position) => {
      if (!this.hold) return file.read(buffer, offset, length, position);
      const gate = new Promise<void>((resolve) => this.waiting.push(resolve));
      if (this.timing === "late") {
        await gate;
        return file.read(buffer, offset, length, position);
      }
      const early = Buffer.alloc(length);
      const n = await file.read(early, 0, length, position);
      await gate;
      early.copy(buffer, offset, 0, n);
      return n;
    },
  }));

  get held(): number {
    return this.waiting.length;
  }

  release(): void {
    for (const go of this.waiting.splice(0)) go();
  }
}

const S = 7;
const T = 9;

async function setup(timing: ReadTiming) {
  const fs = new HeldReads();
  fs.timing = timing;
  // No growing ahead, and a store this small keeps no free reserve: slots are taken in order
  // 0, 1, 2..., and a freed one is reused at once.
  const store = await SlotStore.open({ fs: fs.fs, dir: "/d", logger: silentLogger, growthSlots: 0 });
  await store.persist(S, stateOf(S, 1)); // slot 0
  return { fs, store };
}

/** Starts a load (or loadMany) with its read held; resolves once the read is in flight. */
async function heldLoad(
  fs: HeldReads,
  load: () => Promise<SectorState | null>,
): Promise<{ result: Promise<SectorState | null> }> {
  fs.hold = true;
  const result = load();
  while (fs.held === 0) await new Promise((r) => setImmediate(r));
  fs.hold = false;
  return { result };
}

const viaLoad = (store: SlotStore) => () => store.load(S);
const viaLoadMany = (store: SlotStore) => async () => (await store.loadMany([S + 1, S, 1000]))[1] ?? null;

describe("SlotStore loads racing persists", () => {
  for (const timing of ["early", "late"] as const) {
    for (const [name, how] of [
      ["load", viaLoad],
      ["loadMany", viaLoadMany],
    ] as const) {
      it(`${name} (${timing} read): the sector moves and another sector reuses its old slot meanwhile: the latest state`, async () => {
        const { fs, store } = await setup(timing);
        const loading = (await heldLoad(fs, how(store))).result;
        await store.persist(S, stateOf(S, 2)); // S -> slot 1, slot 0 free
        await store.persist(T, stateOf(T, 1)); // T -> slot 0
        expect(store.stats()).toMatchObject({ slotCount: 2, freeSlots: 0 });
        fs.release();
        const state = await loading;
        expect(state).not.toBeNull();
        expect(versionOf(S, state!, 2)).toBe(2);
        expect(versionOf(T, await store.load(T), 1)).toBe(1);
        await store.close();
      });

      it(`${name} (${timing} read): the sector leaves its slot and comes back to it meanwhile: the latest state`, async () => {
        const { fs, store } = await setup(timing);
        const loading = (await heldLoad(fs, how(store))).result;
        await store.persist(S, stateOf(S, 2)); // S -> slot 1, slot 0 free
        await store.persist(S, stateOf(S, 3)); // S -> slot 0 again, slot 1 free
        expect(store.stats()).toMatchObject({ slotCount: 2, freeSlots: 1 });
        fs.release();
        const state = await loading;
        expect(state).not.toBeNull();
        expect(versionOf(S, state!, 3)).toBe(3);
        await store.close();
      });

      it(`${name} (${timing} read): a persist of the sector queued meanwhile: the new state`, async () => {
        const { fs, store } = await setup(timing);
        const loading = (await heldLoad(fs, how(store))).result;
        const writing = store.persist(S, stateOf(S, 2));
        fs.release();
        const state = await loading;
        expect(versionOf(S, state!, 2)).toBe(2);
        await writing;
        await store.close();
      });
    }
  }
});
