// Damage real files (flipped bytes, misdirected or duplicated entries, truncation) of a SlotStore,
// then reopen: every sector is its old or new state, or its load reports STORAGE_CORRUPT, or the
// store refuses to open with STORAGE_CORRUPT; never wrong data, never a silent rollback of a
// synced batch (except the documented one: damage to the data of the newest batches, as many as the
// commit depth the file was written with, looks like a torn tail).
import { copyFile, mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeFileSystem } from "../../src/storage/node_file_io.js";
import {
  completeSlots,
  decodeEntry,
  decodeFileHeader,
  ENTRY_BYTES,
  encodeUsedEntry,
  entryOffset,
  GROUP_BYTES,
  groupOf,
  groupPosition,
  SLOT_FILE,
  SLOTS_PER_GROUP,
  slotPosition,
  type UsedEntry,
} from "../../src/storage/slot_format.js";
import { SlotStore } from "../../src/storage/slot_store.js";
import { isAtomicDiskError } from "../../src/util/errors.js";
import { GROUP_COMMIT_DEPTH } from "../../src/util/limits.js";
import { seededRandom, silentLogger, stateOf, versionOf } from "./storage_test_support.js";

// Phase 1 writes sectors 0..39 (v1) and closes. Phase 2 reopens and writes sectors 0..19 (v2)
// and new sectors 40..44 (v1) in batches of at most 8, then closes. The golden copy is that file.
const OLD = new Map<number, number>();
const NEW = new Map<number, number>();
for (let s = 0; s < 45; s++) {
  OLD.set(s, s < 40 ? 1 : 0);
  NEW.set(s, s < 20 ? 2 : 1);
}
const SECTORS = [...OLD.keys()];
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

let root: string;
let golden: string;
/** Every non-empty entry of the golden file, by slot. */
const entries = new Map<number, { status: "used"; entry: UsedEntry } | { status: "free"; seq: number }>();
/** The current slot of each sector (highest seq). */
const current = new Map<number, UsedEntry>();
let lastSeq = 0;
/** The commit depth the golden file records: recovery checks the data of that many newest batches. */
let depth = 0;
let fileSize = 0;
let caseNumber = 0;

async function flip(file: string, position: number): Promise<void> {
  const fh = await open(file, "r+");
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, position);
  b[0] = (b[0] ?? 0) ^ 0xff;
  await fh.write(b, 0, 1, position);
  await fh.close();
}

async function writeAt(file: string, position: number, data: Buffer): Promise<void> {
  const fh = await open(file, "r+");
  await fh.write(data, 0, data.length, position);
  await fh.close();
}

type Outcome = { openError: string; message: string } | { versions: Map<number, number | "corrupt"> };

async function newCase(): Promise<string> {
  const dir = path.join(root, `case-${caseNumber++}`);
  await mkdir(dir);
  await copyFile(path.join(golden, SLOT_FILE), path.join(dir, SLOT_FILE));
  return dir;
}

async function readAll(store: SlotStore): Promise<Map<number, number | "corrupt">> {
  const versions = new Map<number, number | "corrupt">();
  const many = await store.loadMany(SECTORS);
  for (const [i, s] of SECTORS.entries()) {
    try {
      const state = await store.load(s);
      versions.set(s, versionOf(s, state, 2));
      expect(many[i] === null ? "null" : versionOf(s, many[i]!, 2), `loadMany of ${s}`).toBe(
        versionOf(s, state, 2),
      );
      // The index agrees with the data it describes (loadTag reads no data).
      expect(await store.loadTag(s)).toEqual({ ts: state.ts, wr: state.wr });
    } catch (err) {
      if (!isAtomicDiskError(err, "STORAGE_CORRUPT")) throw err;
      versions.set(s, "corrupt");
      expect(many[i], `loadMany of corrupt ${s}`).toBeNull();
      // Known damaged from now on: loadTag says so too.
      expect(isAtomicDiskError(await store.loadTag(s).catch((e) => e), "STORAGE_CORRUPT")).toBe(true);
    }
  }
  // loadTags (the replica driver's lookup) answers as loadTag does, in order, a damaged sector null.
  const tags = await store.loadTags(SECTORS);
  for (const [i, s] of SECTORS.entries()) {
    if (versions.get(s) === "corrupt") expect(tags[i], `loadTags of corrupt ${s}`).toBeNull();
    else expect(tags[i], `loadTags of ${s}`).toEqual(await store.loadTag(s));
  }
  return versions;
}

async function reopen(mutate: (file: string) => Promise<void>): Promise<Outcome> {
  const dir = await newCase();
  await mutate(path.join(dir, SLOT_FILE));
  let store: SlotStore;
  try {
    store = await SlotStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
  } catch (err) {
    if (isAtomicDiskError(err)) return { openError: err.code, message: err.message };
    throw err;
  }
  const versions = await readAll(store);
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return { versions };
}

type Want = "new" | "old" | "oldOrNew" | "corrupt";

/** Every sector is its old or new state, or reported corrupt; `expected(s)` narrows it further. */
function check(outcome: Outcome, context: string, expected: (sector: number) => Want = () => "new"): void {
  expect("versions" in outcome, `${context}: open failed ${JSON.stringify(outcome)}`).toBe(true);
  if (!("versions" in outcome)) return;
  for (const s of SECTORS) {
    const got = outcome.versions.get(s);
    const old = OLD.get(s);
    const neu = NEW.get(s);
    const where = `${context} sector ${s}: got ${got}, old ${old}, new ${neu}`;
    expect(got === "corrupt" || got === old || got === neu, where).toBe(true);
    const want = expected(s);
    if (want === "new") expect(got, where).toBe(neu);
    if (want === "old") expect(got, where).toBe(old);
    if (want === "corrupt") expect(got, where).toBe("corrupt");
    if (want === "oldOrNew") expect(got === old || got === neu, where).toBe(true);
  }
}

function expectOpenError(outcome: Outcome, context: string, mentions?: string): void {
  expect("openError" in outcome && outcome.openError, `${context}: ${JSON.stringify(outcome)}`).toBe(
    "STORAGE_CORRUPT",
  );
  if (mentions !== undefined && "message" in outcome) expect(outcome.message, context).toContain(mentions);
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "atomic-disk-slot-corruption-"));
  golden = path.join(root, "golden");
  const options = { fs: nodeFileSystem, dir: golden, logger: silentLogger, growthSlots: 64 };
  let store = await SlotStore.open(options);
  await Promise.all(SECTORS.filter((s) => OLD.get(s)! > 0).map((s) => store.persist(s, stateOf(s, 1))));
  await store.close();
  store = await SlotStore.open({ ...options, maxBatchSectors: 8 });
  const phase2 = SECTORS.filter((s) => NEW.get(s) !== OLD.get(s));
  await Promise.all(phase2.map((s) => store.persist(s, stateOf(s, NEW.get(s)!))));
  await store.close();

  const file = await readFile(path.join(golden, SLOT_FILE));
  fileSize = file.length;
  const header = decodeFileHeader(file, 0);
  if (header.status !== "valid") throw new Error("golden header");
  depth = header.commitDepth;
  for (let slot = 0; slot < completeSlots(file.length); slot++) {
    const r = decodeEntry(file, groupPosition(groupOf(slot)) + entryOffset(slot), slot);
    if (r.status === "empty") continue;
    if (r.status === "corrupt") throw new Error(`golden slot ${slot}: ${r.reason}`);
    entries.set(slot, r);
    if (r.status !== "used") continue;
    lastSeq = Math.max(lastSeq, r.entry.seq);
    const other = current.get(r.entry.sector);
    if (other === undefined || other.seq < r.entry.seq) current.set(r.entry.sector, r.entry);
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Current entries of the batches recovery checks (seq > lastSeq - depth). */
const newestBatches = () => [...current.values()].filter((e) => e.seq > lastSeq - depth);

describe("SlotStore on damaged real files", () => {
  it("the undamaged golden file recovers every new state; it has stale entries and several batches", async () => {
    expect(current.size).toBe(45);
    const used = [...entries.values()].filter((e) => e.status === "used").length;
    expect(used).toBeGreaterThan(45); // the stale v1 entries of sectors 0..19 wait in free slots
    expect(lastSeq).toBeGreaterThanOrEqual(5);
    expect(depth).toBe(GROUP_COMMIT_DEPTH);
    expect(newestBatches().length).toBeGreaterThan(0);
    expect(newestBatches().length).toBeLessThanOrEqual(8 * depth);
    // Synced sectors outside the window remain, for the damage tests to find.
    expect(current.size - newestBatches().length).toBeGreaterThan(10);
    check(await reopen(async () => {}), "golden");
  });

  it("a flipped byte in the data of a synced sector: STORAGE_CORRUPT on loading that sector only", async () => {
    const random = seededRandom(3);
    for (const e of current.values()) {
      if (e.seq > lastSeq - depth) continue;
      const at = slotPosition(e.slot) + Math.floor(random() * 4096);
      const outcome = await reopen((file) => flip(file, at));
      check(outcome, `data of sector ${e.sector}`, (s) => (s === e.sector ? "corrupt" : "new"));
    }
  });

  it("a flipped byte in the data of the newest batches looks like a torn tail: that sector rolls back, and stays rolled back", async () => {
    for (const e of newestBatches()) {
      const dir = await newCase();
      await flip(path.join(dir, SLOT_FILE), slotPosition(e.slot) + 100);
      const expectRolledBack = async (store: SlotStore, context: string) => {
        const versions = await readAll(store);
        check({ versions }, context, (s) => (s === e.sector ? "old" : "new"));
      };
      let store = await SlotStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(store.stats().recovery.droppedEntries).toBe(1);
      await expectRolledBack(store, `first open, sector ${e.sector}`);
      // Later batches: the dropped entry's batch leaves the window.
      for (let k = 0; k < depth; k++) await store.persist(1000 + k, stateOf(1000 + k, 1));
      await store.close();
      store = await SlotStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      expect(store.stats().recovery.droppedEntries).toBe(0);
      await expectRolledBack(store, `next-but-one open, sector ${e.sector}`);
      await store.close();
    }
  });

  it("a flipped byte in any non-empty meta entry (current, stale or free) makes open fail, naming the slot", async () => {
    const random = seededRandom(5);
    for (const slot of entries.keys()) {
      const byte = Math.floor(random() * ENTRY_BYTES);
      const at = groupPosition(groupOf(slot)) + entryOffset(slot) + byte;
      expectOpenError(
        await reopen((file) => flip(file, at)),
        `entry of slot ${slot} byte ${byte}`,
        `slot ${slot}`,
      );
    }
    // Every byte of one current entry.
    const victim = current.get(25)!;
    for (let byte = 0; byte < ENTRY_BYTES; byte++) {
      const at = groupPosition(groupOf(victim.slot)) + entryOffset(victim.slot) + byte;
      expectOpenError(await reopen((file) => flip(file, at)), `entry of sector 25 byte ${byte}`);
    }
    // Garbage where an empty entry was.
    const empty = [...Array(SLOTS_PER_GROUP).keys()].find((slot) => !entries.has(slot) && slot < 64);
    if (empty !== undefined) {
      const at = groupPosition(0) + entryOffset(empty) + 7;
      expectOpenError(await reopen((file) => flip(file, at)), `empty entry ${empty}`);
    }
  });

  it("an intact entry written to another slot's place (a misdirected write) makes open fail", async () => {
    const e = current.get(3)!;
    const target = [...entries.keys()].find((slot) => slot !== e.slot)!;
    const outcome = await reopen(async (file) => {
      const page = await readFile(file);
      const from = groupPosition(groupOf(e.slot)) + entryOffset(e.slot);
      await writeAt(
        file,
        groupPosition(groupOf(target)) + entryOffset(target),
        page.subarray(from, from + ENTRY_BYTES),
      );
    });
    expectOpenError(outcome, "misdirected entry", `slot ${target}`);
  });

  it("two intact entries of one sector with the same seq make open fail", async () => {
    const e = current.get(30)!;
    const target = [...entries.entries()].find(
      ([slot, r]) => r.status === "used" && r.entry.sector !== 30 && slot !== e.slot,
    )![0];
    const outcome = await reopen(async (file) => {
      const page = Buffer.alloc(4096);
      encodeUsedEntry(page, 0, { ...e, slot: target });
      await writeAt(
        file,
        groupPosition(groupOf(target)) + entryOffset(target),
        page.subarray(0, ENTRY_BYTES),
      );
    });
    expectOpenError(outcome, "duplicate seq", "sector 30");
  });

  it("a truncated file: a cut past the used slots loses nothing, a cut into a synced slot refuses to open, a cut into the last batch rolls only its sectors back", async () => {
    const usedSlots = [...entries.entries()].filter(([, r]) => r.status === "used").map(([slot]) => slot);
    const usedEnd = Math.max(...usedSlots.map((slot) => slotPosition(slot) + 4096));
    for (const cut of [usedEnd, usedEnd + 1, fileSize - 1, fileSize - GROUP_BYTES + 17].filter(
      (c) => c >= usedEnd,
    )) {
      check(await reopen((file) => truncate(file, cut)), `cut ${cut} past the used slots`);
    }
    // A store laid out by hand (no growing ahead, so slots are appended in order): sectors 0..9
    // in slots 0..9 (seq 1), 10..14 in slots 10..14 (seq 2), then sector 0 again in slot 15 (seq 3,
    // the last batch). Cutting whole meta pages away is not detected (see slot_store.ts).
    const dir = await newCase();
    // Commit depth 1: only batch 3 is checked (at a larger depth, batch 2 would be too, and a cut
    // into it would look like a torn tail, as the test above shows for flipped bytes).
    const options = {
      fs: nodeFileSystem,
      dir: path.join(dir, "appended"),
      logger: silentLogger,
      growthSlots: 0,
      commitDepth: 1,
    };
    let store = await SlotStore.open(options);
    await store.persistMany(range(0, 10).map((s) => ({ sectorIndex: s, state: stateOf(s, 1) })));
    await store.persistMany(range(10, 5).map((s) => ({ sectorIndex: s, state: stateOf(s, 1) })));
    await store.persist(0, stateOf(0, 2));
    await store.close();
    const file = path.join(options.dir, SLOT_FILE);
    const saved = await readFile(file);
    // Into slot 15: only the last batch is cut, sector 0 rolls back to v1.
    await truncate(file, slotPosition(15) + 1000);
    store = await SlotStore.open(options);
    expect(store.stats().recovery.droppedEntries).toBe(1);
    for (const s of range(0, 15)) expect(versionOf(s, await store.load(s), 2), `sector ${s}`).toBe(1);
    await store.close();
    // Into slot 12: slots 12..14 of the synced batch 2 are gone: refuse.
    await writeFile(file, saved);
    await truncate(file, slotPosition(12) + 1000);
    const err = await SlotStore.open(options).catch((e) => e);
    expect(isAtomicDiskError(err, "STORAGE_CORRUPT"), String(err)).toBe(true);
    expect(String(err.message)).toContain("past the end of the file");
  });

  it("a flipped byte in one header copy loses nothing", async () => {
    for (const position of [0, 9, 63, 512, 530, 575]) {
      check(await reopen((file) => flip(file, position)), `header byte ${position}`);
    }
  });
});
