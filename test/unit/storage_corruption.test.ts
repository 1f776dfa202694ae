// Damage real files (truncation, flipped bytes) in a store caught mid-flight, then reopen: every
// sector is its old or new state, or load reports STORAGE_CORRUPT; never wrong data.
import { copyFile, mkdir, mkdtemp, open, readFile, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  JOURNAL_FILE,
  JournalStore,
  SLOT_DATA_FILE,
  SLOT_META_FILE,
} from "../../src/storage/journal_store.js";
import { nodeFileSystem } from "../../src/storage/node_file_io.js";
import {
  decodeMetaEntry,
  decodeRecord,
  JOURNAL_RECORDS_OFFSET,
  META_ENTRIES_OFFSET,
  META_ENTRY_BYTES,
  metaEntryPosition,
  RECORD_BYTES,
  RECORD_HEADER_BYTES,
  slotDataPosition,
} from "../../src/storage/record_format.js";
import { isAtomicDiskError } from "../../src/util/errors.js";
import { seededRandom, silentLogger, stateOf, versionOf } from "./storage_test_support.js";

// Phase 1 writes sectors 0..39 (v1) and closes. Phase 2 reopens, snapshots the slot files (so the
// golden state is "journal durable, none of its slot writes landed", a legal crash state), writes
// sectors 0..19 (v2) and new sectors 40..44 (v1) in batches of 8, then stops without a checkpoint.
const OLD = new Map<number, number>();
const NEW = new Map<number, number>();
for (let s = 0; s < 45; s++) {
  OLD.set(s, s < 40 ? 1 : 0);
  NEW.set(s, s < 20 ? 2 : 1);
}
const SECTORS = [...OLD.keys()];

interface JournalRecordInfo {
  seq: number;
  sector: number;
  batchFirst: number;
  position: number;
}

let root: string;
let golden: string;
let records: JournalRecordInfo[] = [];
let slotOf = new Map<number, number>();
let caseNumber = 0;

async function copyDir(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const name of [JOURNAL_FILE, SLOT_DATA_FILE, SLOT_META_FILE]) {
    await copyFile(path.join(from, name), path.join(to, name));
  }
}

async function flip(file: string, position: number): Promise<void> {
  const fh = await open(file, "r+");
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, position);
  b[0] = (b[0] ?? 0) ^ 0xff;
  await fh.write(b, 0, 1, position);
  await fh.close();
}

type Outcome = { openError: string } | { versions: Map<number, number | "corrupt"> };

async function reopen(mutate: (dir: string) => Promise<void>): Promise<Outcome> {
  const dir = path.join(root, `case-${caseNumber++}`);
  await copyDir(golden, dir);
  await mutate(dir);
  let store: JournalStore;
  try {
    store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
  } catch (err) {
    if (isAtomicDiskError(err)) return { openError: err.code };
    throw err;
  }
  const versions = new Map<number, number | "corrupt">();
  for (const s of SECTORS) {
    try {
      const state = await store.load(s);
      versions.set(s, versionOf(s, state, 2));
      // The index agrees with the data it describes (loadTag reads no data).
      expect(await store.loadTag(s)).toEqual({ ts: state.ts, wr: state.wr });
    } catch (err) {
      if (!isAtomicDiskError(err, "STORAGE_CORRUPT")) throw err;
      versions.set(s, "corrupt");
    }
  }
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return { versions };
}

/** Every sector is its old or new state, or reported corrupt; `expect(s)` narrows it further. */
function check(
  outcome: Outcome,
  context: string,
  expected: (sector: number) => "new" | "old" | "oldOrNew" | "corrupt" | "newOrCorrupt" = () => "oldOrNew",
): void {
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
    if (want === "newOrCorrupt") expect(got === neu || got === "corrupt", where).toBe(true);
    if (want === "oldOrNew") expect(got === old || got === neu, where).toBe(true);
  }
}

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "atomic-disk-corruption-"));
  golden = path.join(root, "golden");
  const live = path.join(root, "live");
  let store = await JournalStore.open({ fs: nodeFileSystem, dir: live, logger: silentLogger });
  await Promise.all(SECTORS.filter((s) => OLD.get(s)! > 0).map((s) => store.persist(s, stateOf(s, 1))));
  await store.close();
  store = await JournalStore.open({
    fs: nodeFileSystem,
    dir: live,
    logger: silentLogger,
    groupCommitMaxRecords: 8,
  });
  await mkdir(golden);
  for (const name of [SLOT_DATA_FILE, SLOT_META_FILE])
    await copyFile(path.join(live, name), path.join(golden, name));
  const phase2 = SECTORS.filter((s) => NEW.get(s) !== OLD.get(s));
  await Promise.all(phase2.map((s) => store.persist(s, stateOf(s, NEW.get(s)!))));
  await store.abandonForTesting();
  await copyFile(path.join(live, JOURNAL_FILE), path.join(golden, JOURNAL_FILE));

  const journal = await readFile(path.join(golden, JOURNAL_FILE));
  records = [];
  for (let seq = 0; ; seq++) {
    const position = JOURNAL_RECORDS_OFFSET + seq * RECORD_BYTES;
    const r = decodeRecord(journal, position);
    if (r.status !== "valid") break;
    records.push({ seq, sector: r.header.sector, batchFirst: r.header.batchFirstSeq, position });
  }
  const meta = await readFile(path.join(golden, SLOT_META_FILE));
  slotOf = new Map();
  for (let slot = 0; META_ENTRIES_OFFSET + (slot + 1) * META_ENTRY_BYTES <= meta.length; slot++) {
    const e = decodeMetaEntry(meta, metaEntryPosition(slot), slot);
    if (e.status === "used") slotOf.set(e.entry.sector, slot);
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("JournalStore on damaged real files", () => {
  it("the undamaged golden state recovers every new state", async () => {
    expect(records.length).toBe(25);
    expect(new Set(records.map((r) => r.batchFirst)).size).toBeGreaterThanOrEqual(4);
    expect(slotOf.size).toBe(40);
    check(await reopen(async () => {}), "golden", () => "new");
  });

  it("a journal truncated at any offset keeps every batch that lies wholly before the cut", async () => {
    const size = JOURNAL_RECORDS_OFFSET + records.length * RECORD_BYTES;
    const random = seededRandom(7);
    const cuts = [0, 100, 511, 600, JOURNAL_RECORDS_OFFSET];
    for (let i = 0; i < 40; i++)
      cuts.push(JOURNAL_RECORDS_OFFSET + Math.floor(random() * (size - JOURNAL_RECORDS_OFFSET)));
    for (const r of records)
      cuts.push(r.position, r.position + RECORD_HEADER_BYTES, r.position + RECORD_BYTES - 1);
    for (const cut of cuts) {
      const outcome = await reopen((dir) => truncate(path.join(dir, JOURNAL_FILE), cut));
      if (cut < 600) {
        // Header copies cut away: refusing is fine, serving old or new states too.
        if ("openError" in outcome) expect(outcome.openError).toBe("STORAGE_CORRUPT");
        else check(outcome, `cut ${cut}`);
        continue;
      }
      const complete = new Set<number>();
      for (const r of records) {
        const batch = records.filter((x) => x.batchFirst === r.batchFirst);
        if (batch.every((x) => x.position + RECORD_BYTES <= cut)) complete.add(r.sector);
      }
      check(outcome, `cut ${cut}`, (s) =>
        complete.has(s) || NEW.get(s) === OLD.get(s) ? "new" : "oldOrNew",
      );
    }
  });

  it("a flipped byte in a journal record: acknowledged data is reported corrupt, never served stale", async () => {
    const lastBatch = Math.max(...records.map((r) => r.batchFirst));
    const random = seededRandom(11);
    for (const r of records) {
      const inLastBatch = r.batchFirst === lastBatch;
      const lastBatchSectors = new Set(
        records.filter((x) => x.batchFirst === lastBatch).map((x) => x.sector),
      );
      for (const offset of [
        Math.floor(random() * RECORD_HEADER_BYTES),
        RECORD_HEADER_BYTES + Math.floor(random() * 4096),
      ]) {
        const context = `record ${r.seq} (sector ${r.sector}) byte ${offset}`;
        const outcome = await reopen((dir) => flip(path.join(dir, JOURNAL_FILE), r.position + offset));
        if (inLastBatch) {
          // Indistinguishable from a torn unsynced batch: the whole last batch is dropped.
          check(outcome, context, (s) => (lastBatchSectors.has(s) ? "old" : "new"));
        } else if (offset < RECORD_HEADER_BYTES) {
          // No one knows which sector was hit: the store refuses to open.
          expect(outcome, context).toEqual({ openError: "STORAGE_CORRUPT" });
        } else {
          check(outcome, context, (s) => (s === r.sector ? "corrupt" : "new"));
        }
      }
    }
  });

  it("a flipped byte in a journal header copy loses nothing", async () => {
    for (const position of [0, 9, 63, 512, 530, 575]) {
      check(
        await reopen((dir) => flip(path.join(dir, JOURNAL_FILE), position)),
        `journal header byte ${position}`,
        () => "new",
      );
    }
  });

  it("a flipped byte in a slot makes that sector corrupt unless the journal rewrites it", async () => {
    for (const [sector, slot] of slotOf) {
      const position = slotDataPosition(slot) + ((sector * 97) % 4096);
      const outcome = await reopen((dir) => flip(path.join(dir, SLOT_DATA_FILE), position));
      const rewritten = NEW.get(sector) !== OLD.get(sector);
      check(outcome, `slot of sector ${sector}`, (s) => (s === sector && !rewritten ? "corrupt" : "new"));
    }
  });

  it("a flipped byte in a slot metadata entry makes only that sector corrupt", async () => {
    for (const [sector, slot] of slotOf) {
      const byte = (sector * 13) % META_ENTRY_BYTES;
      const outcome = await reopen((dir) =>
        flip(path.join(dir, SLOT_META_FILE), metaEntryPosition(slot) + byte),
      );
      const rewritten = NEW.get(sector) !== OLD.get(sector);
      // Bytes 40..59 are the identity copy and its checksum: the main half still describes the slot.
      const mainHit = byte < 40 || byte >= 60;
      check(outcome, `meta of sector ${sector} byte ${byte}`, (s) =>
        s === sector && !rewritten && mainHit ? "corrupt" : "new",
      );
    }
    // Every byte of one entry: damage in either of its two checksummed halves names the sector.
    const victim = 25;
    for (let byte = 0; byte < META_ENTRY_BYTES; byte++) {
      const position = metaEntryPosition(slotOf.get(victim)!) + byte;
      const outcome = await reopen((dir) => flip(path.join(dir, SLOT_META_FILE), position));
      check(outcome, `meta of sector ${victim} byte ${byte}`, (s) => (s === victim ? "newOrCorrupt" : "new"));
    }
    for (const position of [0, 20, 512, 540]) {
      check(
        await reopen((dir) => flip(path.join(dir, SLOT_META_FILE), position)),
        `meta header ${position}`,
        () => "new",
      );
      check(
        await reopen((dir) => flip(path.join(dir, SLOT_DATA_FILE), position)),
        `data header ${position}`,
        () => "new",
      );
    }
  });

  it("a sector found corrupt stays reported across reopens until it is written again", async () => {
    const victim = records[0]!;
    const dir = path.join(root, "sticky");
    await copyDir(golden, dir);
    await flip(path.join(dir, JOURNAL_FILE), victim.position + RECORD_HEADER_BYTES + 5);
    for (let round = 0; round < 2; round++) {
      const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
      const err = await store.load(victim.sector).catch((e) => e);
      expect(isAtomicDiskError(err, "STORAGE_CORRUPT"), `round ${round}`).toBe(true);
      await store.close();
    }
    const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
    await store.persist(victim.sector, stateOf(victim.sector, 2));
    await store.close();
    const again = await JournalStore.open({ fs: nodeFileSystem, dir, logger: silentLogger });
    expect(versionOf(victim.sector, await again.load(victim.sector), 2)).toBe(2);
    await again.close();
  });
});
