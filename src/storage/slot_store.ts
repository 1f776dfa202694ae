// The stable storage of a replica (SPEC §3): one file of shadow slots, `sectors.dat` (layout in
// slot_format.ts: a header page, then groups of one meta page + 64 data slots). Every sector state
// is written once: its data into a fresh slot, its 64-byte entry into that slot's meta page.
//
// Write path (pipelined group commit). persist/persistMany calls queue; a batch forms (on a
// microtask after the call, so one synchronous burst of calls shares it) whenever fewer than D
// batches are in flight (D = the commit depth, GROUP_COMMIT_DEPTH) and no batch is still issuing
// its writes. It takes every queued call (at most GROUP_COMMIT_MAX_SECTORS sectors; a larger
// persistMany spans batches and resolves with its last), keeps the latest state per sector (every
// call still resolves), gives the batch seq = nextSeq++ and gives every sector a FRESH slot: free
// free slots, the fullest groups first ("Allocation" below), in slot order (sectors sorted, so a run
// of sectors in contiguous free space stays a run of slots), else new slots at the end of the file.
// It encodes the new USED entries into the in-memory meta pages, writes each touched meta page
// whole (from memory, so a page also carries the entries that earlier batches still in flight put
// there) together with the new data slots (adjacent regions in one writev, with the callers' data
// buffers as they are: no copy), and once those writes completed issues ONE fdatasync. Only then
// may the next batch form and write: the writes of two batches never overlap in time, so no meta
// page changes in memory while a write of it is in flight, and of two writes of one page the later
// content is the one that stays (in the page cache, and on disk once synced). Batches COMPLETE in seq
// order: once batch k's fdatasync and every earlier batch completed, its sectors point at their new
// slots, their old slots become free and its calls resolve (a later batch whose fdatasync finished
// first waits). A batch is in flight from its formation to its completion, and at most D are: batch
// k+D forms only after batch k completed, so after k's fdatasync.
//
// Why a sector is always its old or its new state after any crash, and acknowledged state is never
// lost:
// (1) A slot holding a sector's current durable state is never written: new states go to free
//     slots, and a slot becomes free only once a newer entry of its sector is durable (its batch
//     completed). So the data and entry of every current state are intact after any crash (writes
//     are assumed to change only the bytes they address, atomically per 512-byte disk sector).
// (2) Seqs grow strictly from batch to batch and across restarts (nextSeq = highest seq on disk + 1,
//     FREE entries included). Of the USED entries of one sector on disk, the one with the highest
//     seq is therefore its newest state; stale entries left in free slots are older than the
//     current one by (1). Two USED entries of a sector never share a seq (a batch holds a sector
//     once).
// (3) Only the newest D batches on disk can be torn. Let j be the oldest batch that had not
//     completed at the crash: every batch before j completed, so its fdatasync (issued after its
//     writes completed) covered its data and entries; batches j..j+D-1 may have landed partially,
//     in any combination (a later batch's meta page without an earlier one's, a later batch's copy
//     of a page carrying an earlier batch's entries whose data never landed, ...); batch j+D and
//     later wrote nothing. So M, the highest seq on disk, is at most j+D-1, and every entry that
//     can be torn has seq >= j > M - D, whichever of them landed. Recovery trusts the entries with
//     seq <= M - D and checks the data of every USED entry with seq > M - D against its dataCrc;
//     a failing one is dropped, and its sector falls back to its next-highest entry. That is never
//     older than acknowledged: a sector's newest entry from a completed batch is intact (its data
//     was synced, and by (1) its slot is not free until a newer state of the sector is durable),
//     so it passes the check if it is in the window at all. Whatever wins is therefore a state
//     persisted to the sector whose data checks, at least as new as its last acknowledged one. A
//     dropped entry may also be a stale one whose slot was freed and reused (the new write half
//     landed): its sector has a newer intact entry anyway. A meta page torn between versions
//     leaves each entry wholly one version: empty, free, a stale entry that (2) orders below the
//     current one, or an entry of the window, checked as above.
//     D here is the depth of the store that WROTE the newest batches, which need not be the depth
//     of the one recovering: the file header records it (slot_format.ts). A store opening with
//     another depth recovers with the recorded one, which settles that window durably (4), and
//     only then records its own depth (synced) before its first batch, so from then on only its own
//     batches can be torn. A crash during that rewrite leaves each header copy old or new, and
//     recovery takes the larger depth of the valid copies.
// (4) A dropped entry must not come back once it has left the window (nothing would check it then):
//     before it accepts writes, recovery durably rewrites it as FREE. The FREE entry keeps its own
//     seq, so the highest seq on disk never goes down (seqs stay strictly increasing across
//     restarts); a crash during the rewrite leaves the same M, the same window and USED entries of
//     it, checked again. Recovery also fdatasyncs the file before it serves anything: after a
//     process crash without power loss the page cache may still hold the newest batches unsynced,
//     and what recovery accepts must be durable before any peer relies on it.
// (5) A persist resolves when its batch completes, after that batch's fdatasync, which covers its
//     data and its entry; by (1) nothing overwrites either until a newer state of the sector is
//     durable. Completing in seq order is what keeps the index right when a sector is in several
//     batches in flight: it moves to batch k's slot (freeing its old one), then to batch k+1's
//     (freeing k's); completing k+1 first would point it back at k's older state and free the slot
//     of its newest one.
// A failed write or fdatasync of any batch fails the store: every call of every batch in flight
// rejects (also one of an earlier batch whose own fdatasync still succeeds: the store has stopped,
// and such a call is one more unacknowledged persist, which the restart keeps or not), and so does
// every queued and later call.
//
// Damage: a non-empty entry that is not intact (checksum, its own slot number, field ranges) cannot
// be a torn write (an entry never crosses a 512-byte sector): open fails with STORAGE_CORRUPT naming
// the slot, since no one knows which sector lost its state and serving anything would risk a silent
// rollback. Two USED entries of one sector with one seq, or a USED entry of an older batch whose
// slot lies past the end of the file (truncation), fail open the same way. Damaged data of a
// current slot is found when it is read: load rejects with STORAGE_CORRUPT for that sector only.
// NOT detected: damage to the data of the newest D batches (seq > M - D) looks exactly like a torn
// tail, so those damaged entries are dropped and their sectors roll back to an older state: the
// previous one, or an earlier one (even the initial state) if a later batch of the window reused
// the previous one's slot (the journal store had the same limitation for its last batch: the
// price of one fsync per batch instead of two). A truncation that cuts away whole meta pages loses
// their entries without a trace (not something a crash does).
//
// Allocation: the file keeps 1/16 of its slots free (SLOT_FREE_RESERVE_DIVISOR); while more are
// free a batch takes free slots, whole groups (64 slots, one meta page) at a time, those with the
// most free slots first, the group changed last first among equals; past the reserve it appends.
// Two designs came before. Lowest-free-first handed straight back the random slots that random
// overwrites freed, so every batch wrote pages all over the file (3-4x the cost of nearby ones
// here, SLOT_FREE_RESERVE_DIVISOR has the numbers). A next-fit sweep from a cursor kept random
// overwrites local, but once random writes had scattered the free slots, sequential runs stayed
// scattered for good: a run took the ~1 in 32 free slots ahead of the cursor and freed as
// scattered old ones, about 0.7 write calls and 2-3x the CPU per sector pass after pass (measured:
// 65536 sectors in 256-sector runs, 9-11 us per sector against 3.6-5 on a store never written at
// random). Taking the fullest groups instead puts a run into few groups, so the pass after it frees
// those groups nearly whole, and each pass finds the free slots denser (the same measurement:
// 10.4 us per sector on the first pass after the random writes down to 5.7 on the eighth with 1024-
// sector batches; with 256-sector batches 8.7 down to 4.4, as good as a store never written at
// random, by the seventh). The fewer of the free slots a batch needs, the more it can choose, so
// larger stores gather faster. Random overwrites: 39-48k persists/s against the sweep's 43-46k in
// the storage benchmark (noisy), no difference measurable through the NBD gateway.
// Growth: a batch that appends grows the file by its own slots, or, with growthSlots > 0 (not the
// default: SLOT_FILE_GROWTH_SLOTS says why), writes zeros that many slots ahead; those slots
// become free once the zeros are written (not synced: they hold no entry, and any later batch
// writes them only after that write completed, and syncs its own writes), so a batch formed while
// the growing one is still in flight continues right after its slots.
// Space: 4096 * 65/64 bytes per slot (1.6% over), plus the free slots: at most 1/16 of the slots
// plus D batches (GROUP_COMMIT_MAX_SECTORS each: the slots the batches in flight will free), one
// growth chunk and a group of rounding, since the file only grows when fewer are free and a batch
// frees at most as many slots as it takes. So ~8% over 4096 B per written sector plus a constant
// (SPEC §3: ~10%).
// Memory: per written sector 4 B of index (pages of 1024, one per range written: up to 4 KiB per
// sector where writes are scattered), 64 B of meta page, 4 B of slot version and a bit of free-slot
// bitmap, per group 9 B of free-slot lists; nothing proportional to the volume size; the
// data of a state is held only until it is durable (loads read it back from the file, i.e. the
// page cache).
// Recovery reads every meta page and the data of the newest D batches: linear in the file's slots.
import * as path from "node:path";
import { assert } from "../util/assert.js";
import { AtomicDiskError, isAtomicDiskError } from "../util/errors.js";
import {
  GROUP_COMMIT_DEPTH,
  GROUP_COMMIT_MAX_SECTORS,
  HELD_PAGE_SECTORS,
  MAX_RANGE_SECTORS,
  MAX_SECTORS,
  SECTOR_SIZE_BYTES,
  SLOT_FILE_GROWTH_SLOTS,
  SLOT_FREE_RESERVE_DIVISOR,
} from "../util/limits.js";
import { componentLogger, type Logger } from "../util/log.js";
import {
  createFileAtomically,
  type FileIo,
  type FileSystemIo,
  io,
  ioError,
  readFully,
  removeLeftover,
  type WriteRegion,
} from "./file_io.js";
import { initialSectorState, type SectorState, type SectorTag } from "./sector_state.js";
import type { PersistItem, SectorStore } from "./sector_store.js";
import {
  checksum,
  completeSlots,
  decodeEntry,
  decodeFileHeader,
  ENTRY_BYTES,
  encodeFreeEntry,
  encodeHeaderPage,
  encodeUsedEntry,
  entryDataCrc,
  entryIsUsed,
  entryOffset,
  entrySector,
  entrySeq,
  entryTs,
  entryWr,
  FIRST_GROUP_OFFSET,
  fileBytesForSlots,
  GROUP_BYTES,
  groupOf,
  groupPosition,
  HEADER_COPY_OFFSETS,
  MAX_COMMIT_DEPTH,
  MAX_SLOTS,
  PAGE_BYTES,
  SLOT_BYTES,
  SLOT_FILE,
  SLOT_FILE_TMP,
  SLOTS_PER_GROUP,
  slotPosition,
} from "./slot_format.js";

/** Files of the journal store this one replaced: a directory holding any of them is refused. */
export const OLD_FORMAT_FILES = ["journal", "journal.tmp", "slots.dat", "slots.meta"] as const;

/** Most buffers in one writev (Linux IOV_MAX). */
const MAX_WRITEV_BUFFERS = 1024;
/** Most slots one coalesced read covers (1 MiB of data, the largest range message). */
const MAX_READ_RUN_SLOTS = MAX_RANGE_SECTORS;
/** Meta pages read at once during recovery. */
const RECOVERY_READ_CONCURRENCY = 8;
/** Zeros the file grows by, shared and never written to; made on first use (growthSlots > 0 only). */
let zeroChunk: Buffer | null = null;
const ZERO_CHUNK_BYTES = 1024 * 1024;

export interface SlotStoreOptions {
  fs: FileSystemIo;
  dir: string;
  logger?: Logger;
  /** Largest batch in sectors; default GROUP_COMMIT_MAX_SECTORS (tests use less). */
  maxBatchSectors?: number;
  /** Slots the file grows by ahead of need; default SLOT_FILE_GROWTH_SLOTS; 0: no growing ahead. */
  growthSlots?: number;
  /** Free slots kept in reserve: 1/divisor of the file's; default SLOT_FREE_RESERVE_DIVISOR. */
  freeReserveDivisor?: number;
  /** Most batches in flight at once (D); default GROUP_COMMIT_DEPTH; 1 to MAX_COMMIT_DEPTH. */
  commitDepth?: number;
}

export interface SlotRecoveryStats {
  fileBytes: number;
  /** Complete slots in the file. */
  slots: number;
  /** Meta entries looked at (every entry of every meta page in the file). */
  entriesScanned: number;
  /** Highest seq found: the newest batch. */
  lastBatchSeq: number;
  /** The commit depth the file was written with (its header): how many newest batches were checked. */
  checkedBatches: number;
  /** USED entries of those batches (seq > lastBatchSeq - checkedBatches), whose data was checked. */
  checkedEntries: number;
  /** Checked entries whose data failed its checksum: dropped (rewritten FREE). */
  droppedEntries: number;
  /** The header was rewritten to record this store's commit depth. */
  depthRecorded: boolean;
  durationMs: number;
}

export interface SlotStoreStats {
  writtenSectors: number;
  /** Slots of the file (current + free). */
  slotCount: number;
  freeSlots: number;
  bytesOnDisk: number;
  persistCount: number;
  batchCount: number;
  maxBatchSectors: number;
  /** Most batches in flight at once (D). */
  commitDepth: number;
  /** Batches in flight now, and the most seen at once. */
  batchesInFlight: number;
  maxBatchesInFlight: number;
  fsyncCount: number;
  /** Write regions issued (one writev each; a region of new pages is written in 16 KiB calls on a real file). */
  writeCalls: number;
  readCalls: number;
  recovery: SlotRecoveryStats;
}

/** One persist or persistMany call, as queued. */
interface PersistCall {
  /** Sector and state of a single persist (items undefined). */
  sector: number;
  state: SectorState | undefined;
  items: readonly PersistItem[] | undefined;
  count: number;
  /** Items handed to batches so far. */
  taken: number;
  /** Batches holding some of its items that have not completed yet. */
  parts: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface BatchPart {
  call: PersistCall;
  from: number;
  to: number;
}

/** A batch from its formation to its completion. */
interface Batch {
  seq: number;
  parts: readonly BatchPart[];
  /** Its sectors ascending, their new slots and states. */
  sectors: Float64Array;
  slots: number[];
  states: SectorState[];
  /** Its fdatasync completed: it completes once every earlier batch has. */
  synced: boolean;
}

function corruptError(message: string): AtomicDiskError {
  return new AtomicDiskError("STORAGE_CORRUPT", message);
}

function checkSector(sector: number): void {
  assert(Number.isSafeInteger(sector) && sector >= 0 && sector < MAX_SECTORS, "bad sector index");
}

function checkState(state: SectorState): void {
  assert(state.data.length === SECTOR_SIZE_BYTES, "sector data must be 4096 bytes");
  assert(Number.isInteger(state.wr) && state.wr >= 0 && state.wr <= 255, "wr must be a u8");
  assert(state.ts >= 0n && state.ts < 1n << 64n, "ts must be a u64");
}

/** A not-yet-durable state handed out by load: the caller gets its own copy of the data. */
function copyState(state: SectorState): SectorState {
  return { ts: state.ts, wr: state.wr, data: Buffer.from(state.data) };
}

/**
 * Free slots: a bitmap, and for each group (64 slots under one meta page) its count of free slots,
 * with the groups that have any in one list per count, the one changed last at the head. A batch
 * takes whole groups, those with the most free slots first ("Allocation" in the module comment).
 */
class FreeSlots {
  /** Bit s: slot s is free. Two words per group. */
  private bits = new Uint32Array(2);
  private count = 0;
  private groupFree = new Uint8Array(1);
  private next = new Int32Array(1).fill(-1);
  private prev = new Int32Array(1).fill(-1);
  /** heads[c]: the first group with c free slots, or -1 (groups with none are in no list). */
  private readonly heads = new Int32Array(SLOTS_PER_GROUP + 1).fill(-1);

  get size(): number {
    return this.count;
  }

  add(slot: number): void {
    const group = groupOf(slot);
    this.ensureGroups(group + 1);
    const word = slot >>> 5;
    const bit = 1 << (slot & 31);
    assert((this.bits[word]! & bit) === 0, "slot freed twice");
    this.bits[word] = this.bits[word]! | bit;
    this.count++;
    this.unlink(group);
    this.groupFree[group] = this.groupFree[group]! + 1;
    this.link(group);
  }

  /**
   * Takes up to `n` free slots (fewer only when fewer are free): all of a group's before the next
   * group's, groups by most free slots first, ascending within a group.
   */
  take(n: number, out: number[]): void {
    for (let free = SLOTS_PER_GROUP; free > 0 && out.length < n; free--) {
      while (out.length < n && this.heads[free]! >= 0) this.takeFromGroup(this.heads[free]!, n, out);
    }
  }

  private takeFromGroup(group: number, n: number, out: number[]): void {
    this.unlink(group);
    const before = out.length;
    const words = SLOTS_PER_GROUP / 32;
    for (let w = group * words; w < (group + 1) * words && out.length < n; w++) {
      let word = this.bits[w]!;
      while (word !== 0 && out.length < n) {
        const lowest = word & -word;
        out.push(w * 32 + (31 - Math.clz32(lowest)));
        word ^= lowest;
        this.groupFree[group] = this.groupFree[group]! - 1;
        this.count--;
      }
      this.bits[w] = word;
    }
    // A listed group has free slots; were it otherwise, take() would pick it again forever.
    assert(out.length > before, "free-slot lists out of step with the bitmap");
    this.link(group);
  }

  private unlink(group: number): void {
    const free = this.groupFree[group]!;
    if (free === 0) return;
    const before = this.prev[group]!;
    const after = this.next[group]!;
    if (before >= 0) this.next[before] = after;
    else this.heads[free] = after;
    if (after >= 0) this.prev[after] = before;
    this.prev[group] = -1;
    this.next[group] = -1;
  }

  private link(group: number): void {
    const free = this.groupFree[group]!;
    if (free === 0) return;
    const head = this.heads[free]!;
    this.next[group] = head;
    this.prev[group] = -1;
    if (head >= 0) this.prev[head] = group;
    this.heads[free] = group;
  }

  private ensureGroups(groups: number): void {
    if (groups <= this.groupFree.length) return;
    let capacity = this.groupFree.length;
    while (capacity < groups) capacity *= 2;
    const bits = new Uint32Array(capacity * (SLOTS_PER_GROUP / 32));
    bits.set(this.bits);
    this.bits = bits;
    const groupFree = new Uint8Array(capacity);
    groupFree.set(this.groupFree);
    this.groupFree = groupFree;
    const links = (old: Int32Array) => {
      const grown = new Int32Array(capacity).fill(-1);
      grown.set(old);
      return grown;
    };
    this.next = links(this.next);
    this.prev = links(this.prev);
  }
}

/**
 * Sectors per page of the index: 4 KiB of slot numbers. A HELD_PAGES page is an index page, so
 * markHeldPages answers from which index pages exist.
 */
const INDEX_PAGE_SECTORS = HELD_PAGE_SECTORS;

/**
 * sector -> current slot, in pages of INDEX_PAGE_SECTORS entries (slot + 1, 0 = none) made when a
 * sector of the page is first written: memory grows with the regions written (4 bytes per sector
 * where writes are dense, at most one page per written sector where they are scattered). A V8 Map
 * of every written sector cost a hash probe that missed the CPU caches, several per sector write
 * (~10% of a replica's CPU under sequential writes); consecutive sectors share a page here, and
 * the last page used is kept at hand.
 */
class SectorIndex {
  private readonly pages = new Map<number, Uint32Array>();
  private lastPageNumber = -1;
  private lastPage: Uint32Array | undefined;
  private entries = 0;

  private page(pageNumber: number): Uint32Array | undefined {
    if (pageNumber === this.lastPageNumber) return this.lastPage;
    const page = this.pages.get(pageNumber);
    if (page !== undefined) {
      this.lastPageNumber = pageNumber;
      this.lastPage = page;
    }
    return page;
  }

  get(sector: number): number | undefined {
    const page = this.page(Math.floor(sector / INDEX_PAGE_SECTORS));
    const stored = page === undefined ? 0 : page[sector % INDEX_PAGE_SECTORS]!;
    return stored === 0 ? undefined : stored - 1;
  }

  has(sector: number): boolean {
    return this.get(sector) !== undefined;
  }

  /** mark(sector - first) for each sector of [first, first + count) with a slot; skips absent pages. */
  markPresent(first: number, count: number, mark: (i: number) => void): void {
    const end = first + count;
    for (
      let pageNumber = Math.floor(first / INDEX_PAGE_SECTORS);
      pageNumber * INDEX_PAGE_SECTORS < end;
      pageNumber++
    ) {
      const page = this.pages.get(pageNumber);
      if (page === undefined) continue;
      const base = pageNumber * INDEX_PAGE_SECTORS;
      const from = Math.max(first, base) - base;
      const to = Math.min(end, base + INDEX_PAGE_SECTORS) - base;
      for (let at = from; at < to; at++) if (page[at] !== 0) mark(base + at - first);
    }
  }

  /**
   * mark(p) for each index page p of [0, pages) from `first` (a multiple of INDEX_PAGE_SECTORS)
   * that holds a slot. Entries are never cleared, so an index page exists only once one of its
   * sectors has a slot: pages are looked up by number, or, when the range has more of them than
   * exist, the existing ones are scanned.
   */
  markPresentPages(first: number, pages: number, mark: (p: number) => void): void {
    assert(first % INDEX_PAGE_SECTORS === 0, "markPresentPages: first must start an index page");
    const from = first / INDEX_PAGE_SECTORS;
    const to = from + pages;
    if (pages <= this.pages.size) {
      for (let n = from; n < to; n++) if (this.pages.has(n)) mark(n - from);
    } else {
      for (const n of this.pages.keys()) if (n >= from && n < to) mark(n - from);
    }
  }

  set(sector: number, slot: number): void {
    const pageNumber = Math.floor(sector / INDEX_PAGE_SECTORS);
    let page = this.page(pageNumber);
    if (page === undefined) {
      page = new Uint32Array(INDEX_PAGE_SECTORS);
      this.pages.set(pageNumber, page);
      this.lastPageNumber = pageNumber;
      this.lastPage = page;
    }
    const at = sector % INDEX_PAGE_SECTORS;
    if (page[at] === 0) this.entries++;
    page[at] = slot + 1;
  }

  get size(): number {
    return this.entries;
  }
}

/** Runs of ascending slots that one read covers: adjacent slots (a meta page may lie between). */
function slotRuns(
  sortedSlots: readonly number[],
): { first: number; last: number; from: number; to: number }[] {
  const runs: { first: number; last: number; from: number; to: number }[] = [];
  let from = 0;
  for (let i = 1; i <= sortedSlots.length; i++) {
    const prev = sortedSlots[i - 1]!;
    const next = sortedSlots[i];
    const first = sortedSlots[from]!;
    if (next !== undefined && (next === prev || next === prev + 1) && next - first < MAX_READ_RUN_SLOTS)
      continue;
    runs.push({ first, last: prev, from, to: i });
    from = i;
  }
  return runs;
}

/**
 * Makes `dir` hold a store, creating a fresh one when there is none: sectors.dat.tmp with its header
 * page (recording `commitDepth`), synced, then renamed into place (the commit point of a creation).
 * Refuses a directory of the old journal format.
 */
async function prepareDirectory(
  fs: FileSystemIo,
  dir: string,
  logger: Logger,
  commitDepth: number,
): Promise<void> {
  try {
    await fs.mkdirp(dir);
  } catch (err) {
    throw new AtomicDiskError("DATA_DIR_UNUSABLE", `cannot create data directory ${dir}: ${String(err)}`, {
      cause: err,
    });
  }
  const names = new Set(await io("list data directory", () => fs.readdir(dir)));
  const old = OLD_FORMAT_FILES.filter((name) => names.has(name));
  if (old.length > 0) {
    throw new AtomicDiskError(
      "DATA_DIR_UNUSABLE",
      `${dir} holds a sector store of the old journal format (${old.join(", ")}); this version keeps ` +
        `sectors in ${SLOT_FILE} and cannot read it. Serve it with the version that wrote it; do not ` +
        "just empty the directory (a replica that forgets acknowledged writes can break reads of the " +
        "whole cluster): a cluster changes format by starting over with fresh data directories",
    );
  }
  if (names.has(SLOT_FILE)) {
    if (names.has(SLOT_FILE_TMP)) await removeLeftover(fs, dir, SLOT_FILE_TMP);
    return;
  }
  logger.info({ dir }, "creating a new sector store");
  await createFileAtomically(
    fs,
    dir,
    { name: SLOT_FILE, tmpName: SLOT_FILE_TMP, tmpExists: names.has(SLOT_FILE_TMP) },
    async (file) => {
      const page = encodeHeaderPage(commitDepth);
      await file.write(page, 0, page.length, 0);
    },
  );
}

export class SlotStore implements SectorStore {
  private readonly logger: Logger;
  private readonly maxBatch: number;
  private readonly growthSlots: number;
  private readonly reserveDivisor: number;
  private readonly depth: number;

  /** Current slot of every written sector whose state is durable. */
  private readonly index = new SectorIndex();
  /** Meta page per group, as on disk (plus the entries of the batches in flight): the index of tags. */
  private metaPages: Buffer[] = [];
  /** Bumped when a slot is taken by a batch: a read that overlapped the reuse reads again. */
  private slotVersion = new Uint32Array(SLOTS_PER_GROUP);
  /** Slots the file holds (current, free, or being written by the batches in flight). */
  private slotCount = 0;
  private readonly free = new FreeSlots();
  private fileBytes = 0;
  private nextSeq = 1;
  /** Sectors whose current data failed its checksum on a read: loadTag rejects until rewritten. */
  private readonly corruptSectors = new Set<number>();
  private writtenSectors = 0;

  /** Latest state per sector queued or in flight, not yet durable: load serves it from here. */
  private readonly pending = new Map<number, SectorState>();
  private queue: PersistCall[] = [];
  private queueHead = 0;
  /** Batches formed and not yet completed, in seq order (at most `depth`). */
  private inFlight: Batch[] = [];
  /** The newest batch is still issuing or awaiting its writes: the next may not form yet. */
  private writing = false;
  private pumpScheduled = false;
  /** Every batch's promise until it settles (close waits for their I/O, even after a failure). */
  private readonly running = new Set<Promise<void>>();
  /** close() waiting for the queue and the batches in flight to drain. */
  private drainWaiters: (() => void)[] = [];
  private failure: AtomicDiskError | undefined;
  private closing = false;
  private closed = false;
  private closePromise: Promise<void> | undefined;

  private persistCount = 0;
  private batchCount = 0;
  private maxBatchSeen = 0;
  private maxInFlightSeen = 0;
  private fsyncCount = 0;
  private writeCalls = 0;
  private readCalls = 0;
  private recoveryStats: SlotRecoveryStats = {
    fileBytes: 0,
    slots: 0,
    entriesScanned: 0,
    lastBatchSeq: 0,
    checkedBatches: 0,
    checkedEntries: 0,
    droppedEntries: 0,
    depthRecorded: false,
    durationMs: 0,
  };

  private constructor(
    private readonly file: FileIo,
    options: SlotStoreOptions & { logger: Logger },
  ) {
    this.logger = options.logger;
    this.maxBatch = options.maxBatchSectors ?? GROUP_COMMIT_MAX_SECTORS;
    this.growthSlots = options.growthSlots ?? SLOT_FILE_GROWTH_SLOTS;
    this.reserveDivisor = options.freeReserveDivisor ?? SLOT_FREE_RESERVE_DIVISOR;
    this.depth = options.commitDepth ?? GROUP_COMMIT_DEPTH;
    assert(
      Number.isInteger(this.reserveDivisor) && this.reserveDivisor >= 1,
      "freeReserveDivisor must be >= 1",
    );
    assert(Number.isInteger(this.maxBatch) && this.maxBatch >= 1, "maxBatchSectors must be >= 1");
    assert(Number.isInteger(this.growthSlots) && this.growthSlots >= 0, "growthSlots must be >= 0");
  }

  static async open(options: SlotStoreOptions): Promise<SlotStore> {
    const { fs, dir } = options;
    const logger = options.logger ?? componentLogger("storage", { dir });
    const started = performance.now();
    const depth = options.commitDepth ?? GROUP_COMMIT_DEPTH;
    assert(
      Number.isInteger(depth) && depth >= 1 && depth <= MAX_COMMIT_DEPTH,
      `commitDepth must be 1..${MAX_COMMIT_DEPTH}`,
    );
    await prepareDirectory(fs, dir, logger, depth);
    const file = await io(`open ${SLOT_FILE}`, () => fs.open(path.join(dir, SLOT_FILE), { create: false }));
    try {
      const store = new SlotStore(file, { ...options, logger });
      await store.recover();
      store.recoveryStats.durationMs = performance.now() - started;
      logger.info({ ...store.recoveryStats, writtenSectors: store.writtenSectors }, "sector store open");
      return store;
    } catch (err) {
      await file.close().catch(() => {});
      throw err;
    }
  }

  // ---- SectorStore -------------------------------------------------------------------------------

  async load(sectorIndex: number): Promise<SectorState> {
    checkSector(sectorIndex);
    for (;;) {
      this.throwIfUnusable();
      const queued = this.pending.get(sectorIndex);
      if (queued !== undefined) return copyState(queued);
      const slot = this.index.get(sectorIndex);
      if (slot === undefined) return initialSectorState();
      const version = this.slotVersion[slot]!;
      const data = Buffer.allocUnsafe(SLOT_BYTES);
      this.readCalls++;
      const n = await io(`read sector ${sectorIndex}`, () =>
        readFully(this.file, data, 0, SLOT_BYTES, slotPosition(slot)),
      );
      // A persist overtook the read, or the sector moved and its old slot may have been reused: again.
      if (this.moved(sectorIndex, slot, version)) continue;
      const state = this.checked(sectorIndex, slot, data, n === SLOT_BYTES);
      if (state === null) throw corruptError(`sector ${sectorIndex}: data fails its checksum`);
      return state;
    }
  }

  async loadMany(sectorIndexes: readonly number[]): Promise<Array<SectorState | null>> {
    this.throwIfUnusable();
    const out = new Array<SectorState | null>(sectorIndexes.length);
    const reads: { i: number; sector: number; slot: number; version: number }[] = [];
    for (let i = 0; i < sectorIndexes.length; i++) {
      const sector = sectorIndexes[i]!;
      checkSector(sector);
      const queued = this.pending.get(sector);
      if (queued !== undefined) {
        out[i] = copyState(queued);
        continue;
      }
      const slot = this.index.get(sector);
      if (slot === undefined) out[i] = initialSectorState();
      else reads.push({ i, sector, slot, version: this.slotVersion[slot]! });
    }
    if (reads.length === 0) return out;
    reads.sort((a, b) => a.slot - b.slot);
    const slots = reads.map((r) => r.slot);
    const retry: number[] = [];
    await Promise.all(
      slotRuns(slots).map(async (run) => {
        const { buf, start, n } = await this.readRun(run, "read sectors");
        for (let k = run.from; k < run.to; k++) {
          const r = reads[k]!;
          if (this.moved(r.sector, r.slot, r.version)) {
            retry.push(k);
            continue;
          }
          const at = slotPosition(r.slot) - start;
          out[r.i] = this.checked(r.sector, r.slot, buf.subarray(at, at + SLOT_BYTES), at + SLOT_BYTES <= n);
        }
      }),
    );
    for (const k of retry) {
      const r = reads[k]!;
      out[r.i] = await this.load(r.sector).catch((err: unknown) => {
        if (isAtomicDiskError(err, "STORAGE_CORRUPT")) return null;
        throw err;
      });
    }
    return out;
  }

  /** The file from slot run.first through run.last (meta pages between included) in one read. */
  private async readRun(
    run: { first: number; last: number },
    what: string,
  ): Promise<{ buf: Buffer; start: number; n: number }> {
    const start = slotPosition(run.first);
    const buf = Buffer.allocUnsafe(slotPosition(run.last) + SLOT_BYTES - start);
    this.readCalls++;
    const n = await io(what, () => readFully(this.file, buf, 0, buf.length, start));
    return { buf, start, n };
  }

  markHeld(first: number, count: number, mark: (i: number) => void): void {
    checkSector(first);
    assert(Number.isSafeInteger(count) && count >= 1, "markHeld: count must be positive");
    checkSector(first + count - 1);
    this.index.markPresent(first, count, mark);
    // Queued and damaged sectors are few next to a map's count: visit them, not the range.
    for (const sectors of [this.pending.keys(), this.corruptSectors.keys()]) {
      for (const sector of sectors) if (sector >= first && sector < first + count) mark(sector - first);
    }
  }

  markHeldPages(first: number, pages: number, mark: (p: number) => void): void {
    assert(Number.isSafeInteger(pages) && pages >= 1, "markHeldPages: pages must be positive");
    assert(first % HELD_PAGE_SECTORS === 0, "markHeldPages: first must start a page");
    checkSector(first);
    const end = first + pages * HELD_PAGE_SECTORS;
    this.index.markPresentPages(first, pages, mark);
    for (const sectors of [this.pending.keys(), this.corruptSectors.keys()]) {
      for (const sector of sectors) {
        if (sector >= first && sector < end) mark(Math.floor((sector - first) / HELD_PAGE_SECTORS));
      }
    }
  }

  loadTag(sectorIndex: number): Promise<SectorTag> {
    try {
      const tag = this.tagNow(sectorIndex);
      if (tag === null) throw corruptError(`sector ${sectorIndex}: data fails its checksum`);
      return Promise.resolve(tag);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  loadTags(sectorIndexes: readonly number[]): Promise<Array<SectorTag | null>> {
    try {
      const tags = new Array<SectorTag | null>(sectorIndexes.length);
      for (let i = 0; i < sectorIndexes.length; i++) tags[i] = this.tagNow(sectorIndexes[i]!);
      return Promise.resolve(tags);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** What loadTag answers, from memory: null for a sector known to be damaged. */
  private tagNow(sectorIndex: number): SectorTag | null {
    checkSector(sectorIndex);
    this.throwIfUnusable();
    const queued = this.pending.get(sectorIndex);
    if (queued !== undefined) return { ts: queued.ts, wr: queued.wr };
    if (this.corruptSectors.has(sectorIndex)) return null;
    const slot = this.index.get(sectorIndex);
    if (slot === undefined) return { ts: 0n, wr: 0 };
    const page = this.metaPages[groupOf(slot)]!;
    const at = entryOffset(slot);
    return { ts: entryTs(page, at), wr: entryWr(page, at) };
  }

  persist(sectorIndex: number, state: SectorState): Promise<void> {
    checkSector(sectorIndex);
    checkState(state);
    try {
      this.throwIfAcceptingNoWrites();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<void>((resolve, reject) => {
      this.notePending(sectorIndex, state);
      this.enqueue({
        sector: sectorIndex,
        state,
        items: undefined,
        count: 1,
        taken: 0,
        parts: 0,
        resolve,
        reject,
      });
    });
  }

  persistMany(items: readonly PersistItem[]): Promise<void> {
    for (const item of items) {
      checkSector(item.sectorIndex);
      checkState(item.state);
    }
    try {
      this.throwIfAcceptingNoWrites();
    } catch (err) {
      return Promise.reject(err);
    }
    if (items.length === 0) return Promise.resolve();
    // Our own copy of the list (the items and their data are the caller's, never mutated).
    const own = items.slice();
    return new Promise<void>((resolve, reject) => {
      for (const item of own) this.notePending(item.sectorIndex, item.state);
      this.enqueue({
        sector: -1,
        state: undefined,
        items: own,
        count: own.length,
        taken: 0,
        parts: 0,
        resolve,
        reject,
      });
    });
  }

  writtenSectorCount(): number {
    return this.writtenSectors;
  }

  close(): Promise<void> {
    this.closePromise ??= this.closeOnce();
    return this.closePromise;
  }

  // ---- Extras for tests, benchmarks and metrics ---------------------------------------------------

  stats(): SlotStoreStats {
    return {
      writtenSectors: this.writtenSectors,
      slotCount: this.slotCount,
      freeSlots: this.free.size,
      bytesOnDisk: this.fileBytes,
      persistCount: this.persistCount,
      batchCount: this.batchCount,
      maxBatchSectors: this.maxBatchSeen,
      commitDepth: this.depth,
      batchesInFlight: this.inFlight.length,
      maxBatchesInFlight: this.maxInFlightSeen,
      fsyncCount: this.fsyncCount,
      writeCalls: this.writeCalls,
      readCalls: this.readCalls,
      recovery: { ...this.recoveryStats },
    };
  }

  // ---- Reads -------------------------------------------------------------------------------------

  /** After a read of `slot` for `sector`: did a persist, a move or a reuse of the slot overlap it? */
  private moved(sector: number, slot: number, version: number): boolean {
    return this.pending.has(sector) || this.index.get(sector) !== slot || this.slotVersion[slot] !== version;
  }

  /** The state read from `slot`, or null (logged) when its data fails the entry's checksum. */
  private checked(sector: number, slot: number, data: Buffer, complete: boolean): SectorState | null {
    const page = this.metaPages[groupOf(slot)]!;
    const at = entryOffset(slot);
    if (!complete || checksum(data) !== entryDataCrc(page, at)) {
      this.logger.warn({ sector, slot }, "sector data fails its checksum");
      this.corruptSectors.add(sector);
      return null;
    }
    return { ts: entryTs(page, at), wr: entryWr(page, at), data };
  }

  // ---- Group commit ------------------------------------------------------------------------------

  private notePending(sector: number, state: SectorState): void {
    if (!this.index.has(sector) && !this.pending.has(sector)) this.writtenSectors++;
    this.pending.set(sector, state);
    this.persistCount++;
  }

  private enqueue(call: PersistCall): void {
    this.queue.push(call);
    this.schedulePump();
  }

  /**
   * Forms the next batch on a microtask: the calls of one synchronous burst share it, and so do the
   * calls that callers resolved by a completion make at once (their reactions were queued first).
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /**
   * Forms and starts the next batch if the pipeline has room: fewer than `depth` batches in flight
   * and none still writing. Called when calls queue, when a batch's writes completed, and when
   * batches completed.
   */
  private pump(): void {
    if (this.failure !== undefined) return;
    if (!this.writing && this.inFlight.length < this.depth && this.queueHead < this.queue.length) {
      const parts = this.takeBatch();
      this.writing = true;
      const running = this.runBatch(parts);
      this.running.add(running);
      void running.finally(() => this.running.delete(running));
    }
    if (this.isIdle()) this.wakeDrainWaiters();
  }

  private isIdle(): boolean {
    return this.failure !== undefined || (this.inFlight.length === 0 && this.queueHead === this.queue.length);
  }

  private wakeDrainWaiters(): void {
    for (const wake of this.drainWaiters.splice(0)) wake();
  }

  /** Resolves once nothing is queued or in flight (or the store failed). */
  private drained(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** One batch: its writes, then (letting the next batch form) its fdatasync, then completion. */
  private async runBatch(parts: readonly BatchPart[]): Promise<void> {
    try {
      const { batch, writes, grown, fileBytes } = this.startBatch(parts);
      await Promise.all(writes);
      if (this.failure !== undefined) return;
      this.fileBytes = Math.max(this.fileBytes, fileBytes);
      // The zeros are written: their slots may be taken by any later batch, whose writes come
      // after this one and whose own fdatasync covers what it writes there.
      for (const slot of grown) this.free.add(slot);
      const sync = io("sync sectors.dat", () => this.file.datasync());
      this.writing = false;
      this.pump();
      await sync;
      if (this.failure !== undefined) return;
      this.fsyncCount++;
      batch.synced = true;
      while (this.inFlight.length > 0 && this.inFlight[0]!.synced) this.completeBatch(this.inFlight.shift()!);
      // On a microtask: the persists the resolved callers make right away join the next batch.
      this.schedulePump();
    } catch (err) {
      this.failAll(err, parts);
    }
  }

  /** Queued calls, whole, up to the batch limit; a call larger than a whole batch is split. */
  private takeBatch(): BatchPart[] {
    const parts: BatchPart[] = [];
    let sectors = 0;
    while (this.queueHead < this.queue.length) {
      const call = this.queue[this.queueHead]!;
      const left = call.count - call.taken;
      const room = this.maxBatch - sectors;
      if (left > room && sectors > 0) break;
      const n = Math.min(left, room);
      parts.push({ call, from: call.taken, to: call.taken + n });
      call.taken += n;
      call.parts++;
      sectors += n;
      if (call.taken < call.count) break;
      this.queueHead++;
    }
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    }
    return parts;
  }

  /**
   * Forms a batch from `parts` and issues its writes: fresh slots, entries encoded into the meta
   * pages, the touched meta pages whole with the data slots, zeros ahead when it appends (only with
   * growthSlots > 0). The batch is in flight from here on.
   */
  private startBatch(parts: readonly BatchPart[]): {
    batch: Batch;
    writes: Promise<void>[];
    grown: number[];
    fileBytes: number;
  } {
    // The latest state per sector (later calls of the batch win), then sectors in ascending order.
    const latest = new Map<number, SectorState>();
    for (const { call, from, to } of parts) {
      if (call.items === undefined) latest.set(call.sector, call.state!);
      else for (let i = from; i < to; i++) latest.set(call.items[i]!.sectorIndex, call.items[i]!.state);
    }
    const n = latest.size;
    const sectors = new Float64Array(n);
    let k = 0;
    for (const sector of latest.keys()) sectors[k++] = sector;
    sectors.sort();

    // Fresh slots: free ones while more than the reserve are free, whole groups at a time, the
    // fullest first ("Allocation" in the module comment); new slots appended past them. A slot is
    // free only once no batch in flight holds it: freed by a completed batch, or zeros ahead whose
    // write completed.
    const slots: number[] = [];
    const fileSlotsBefore = this.slotCount;
    if (this.free.size > Math.floor(this.slotCount / this.reserveDivisor)) {
      this.free.take(n, slots);
      slots.sort((a, b) => a - b);
    }
    while (slots.length < n) slots.push(this.slotCount++);
    assert(this.slotCount <= MAX_SLOTS, "sector store full: slot numbers are u32");
    this.ensureSlots(this.slotCount);
    const seq = this.nextSeq++;
    const states = new Array<SectorState>(n);
    for (let i = 0; i < n; i++) {
      const slot = slots[i]!;
      const sector = sectors[i]!;
      const state = latest.get(sector)!;
      states[i] = state;
      const page = this.metaPages[groupOf(slot)]!;
      const at = entryOffset(slot);
      // (1) of the module comment: never the slot of a current state.
      assert(!entryIsUsed(page, at) || this.index.get(entrySector(page, at)) !== slot, "reusing a live slot");
      this.slotVersion[slot] = (this.slotVersion[slot]! + 1) >>> 0;
      encodeUsedEntry(page, at, {
        slot,
        sector,
        ts: state.ts,
        wr: state.wr,
        seq,
        dataCrc: checksum(state.data),
      });
    }
    const batch: Batch = { seq, parts, sectors, slots, states, synced: false };
    this.inFlight.push(batch);
    this.maxInFlightSeen = Math.max(this.maxInFlightSeen, this.inFlight.length);

    // Touched meta pages whole, data slots as given; adjacent regions in one writev, all of them in
    // one call (a scattered batch has hundreds). Pages past the slots the file had are new
    // (WriteRegion.newPages): a region never straddles that boundary (every buffer is one page).
    const regions: WriteRegion[] = [];
    const newPagesFrom = fileBytesForSlots(fileSlotsBefore);
    let run: Buffer[] = [];
    let runStart = 0;
    let runEnd = -1;
    const flush = () => {
      if (run.length === 0) return;
      regions.push({ position: runStart, buffers: run, newPages: runStart >= newPagesFrom });
      run = [];
    };
    const region = (position: number, buf: Buffer) => {
      if (position !== runEnd || run.length >= MAX_WRITEV_BUFFERS || position === newPagesFrom) {
        flush();
        runStart = position;
      }
      run.push(buf);
      runEnd = position + buf.length;
    };
    let group = -1;
    for (let i = 0; i < n; i++) {
      const slot = slots[i]!;
      if (groupOf(slot) !== group) {
        group = groupOf(slot);
        region(groupPosition(group), this.metaPages[group]!);
      }
      region(slotPosition(slot), states[i]!.data);
    }
    flush();

    // Appending with growthSlots > 0: zeros that far ahead (fewer fdatasyncs that allocate; off by
    // default, SLOT_FILE_GROWTH_SLOTS). Only bytes past every slot of this batch; the batch's
    // fdatasync covers them.
    let grown: number[] = [];
    if (this.slotCount > fileSlotsBefore && this.growthSlots > 0) {
      const target = Math.min(
        MAX_SLOTS,
        Math.ceil((this.slotCount + this.growthSlots) / SLOTS_PER_GROUP) * SLOTS_PER_GROUP,
      );
      const from = fileBytesForSlots(this.slotCount);
      const zeros: Buffer[] = [];
      zeroChunk ??= Buffer.alloc(ZERO_CHUNK_BYTES);
      for (let left = fileBytesForSlots(target) - from; left > 0; left -= ZERO_CHUNK_BYTES) {
        zeros.push(left >= ZERO_CHUNK_BYTES ? zeroChunk : zeroChunk.subarray(0, left));
      }
      if (zeros.length > 0) regions.push({ position: from, buffers: zeros, newPages: true });
      grown = Array.from({ length: target - this.slotCount }, (_, j) => this.slotCount + j);
      this.slotCount = target;
      this.ensureSlots(target);
    }
    this.writeCalls += regions.length;
    const writes = [io("write sectors", () => this.file.writeRegions(regions))];
    return { batch, writes, grown, fileBytes: fileBytesForSlots(this.slotCount) };
  }

  /** Durable, and every earlier batch completed: its sectors move to their new slots, old ones free. */
  private completeBatch(batch: Batch): void {
    const { sectors, slots, states, parts } = batch;
    const freed: number[] = [];
    for (let i = 0; i < sectors.length; i++) {
      const sector = sectors[i]!;
      const old = this.index.get(sector);
      if (old !== undefined) freed.push(old);
      this.index.set(sector, slots[i]!);
      this.corruptSectors.delete(sector);
      if (this.pending.get(sector) === states[i]) this.pending.delete(sector);
    }
    for (const slot of freed) this.free.add(slot);
    this.batchCount++;
    this.maxBatchSeen = Math.max(this.maxBatchSeen, sectors.length);
    for (const { call } of parts) {
      call.parts--;
      if (call.parts === 0 && call.taken === call.count) call.resolve();
    }
  }

  /** A batch's I/O failed: the store stops, and every call in flight or queued rejects. */
  private failAll(err: unknown, parts: readonly BatchPart[]): void {
    this.fail(err);
    const calls = new Set<PersistCall>();
    for (const part of parts) calls.add(part.call);
    for (const batch of this.inFlight) for (const part of batch.parts) calls.add(part.call);
    for (const call of this.queue.slice(this.queueHead)) calls.add(call);
    this.inFlight = [];
    this.queue = [];
    this.queueHead = 0;
    this.writing = false;
    for (const call of calls) call.reject(this.failure);
    this.wakeDrainWaiters();
  }

  /** Slot versions and meta pages for slots 0..count-1. */
  private ensureSlots(count: number): void {
    if (count > this.slotVersion.length) {
      let capacity = this.slotVersion.length;
      while (capacity < count) capacity *= 2;
      const next = new Uint32Array(capacity);
      next.set(this.slotVersion);
      this.slotVersion = next;
    }
    const groups = Math.ceil(count / SLOTS_PER_GROUP);
    for (let g = this.metaPages.length; g < groups; g++) this.metaPages.push(Buffer.alloc(PAGE_BYTES));
  }

  // ---- Recovery ----------------------------------------------------------------------------------

  private async recover(): Promise<void> {
    const size = await io(`size ${SLOT_FILE}`, () => this.file.size());
    if (size < PAGE_BYTES) throw corruptError(`${SLOT_FILE} is ${size} bytes, shorter than its header page`);
    const headerDepths = await this.checkHeader();
    // (3) of the module comment: the depth of the store that wrote the file, the larger of two
    // copies that disagree (a torn rewrite).
    const window = Math.max(...headerDepths);
    const slotCount = completeSlots(size);
    // Every group whose meta page starts inside the file (the last may be partial: a torn append).
    const groups = size > FIRST_GROUP_OFFSET ? Math.ceil((size - FIRST_GROUP_OFFSET) / GROUP_BYTES) : 0;
    this.slotCount = slotCount;
    this.fileBytes = size;
    this.ensureSlots(Math.max(slotCount, groups * SLOTS_PER_GROUP));
    this.recoveryStats.fileBytes = size;
    this.recoveryStats.slots = slotCount;
    await this.readMetaPages(groups, size);

    // Pass 1: every entry intact or empty; the highest seq on disk (FREE entries too).
    let maxSeq = 0;
    for (let g = 0; g < groups; g++) {
      const page = this.metaPages[g]!;
      for (let e = 0; e < SLOTS_PER_GROUP; e++) {
        const slot = g * SLOTS_PER_GROUP + e;
        const r = decodeEntry(page, e * ENTRY_BYTES, slot);
        if (r.status === "empty") continue;
        if (r.status === "corrupt") {
          throw corruptError(`${SLOT_FILE}: the meta entry of slot ${slot} is damaged (${r.reason})`);
        }
        maxSeq = Math.max(maxSeq, r.status === "free" ? r.seq : r.entry.seq);
      }
    }
    this.recoveryStats.entriesScanned = groups * SLOTS_PER_GROUP;

    // The USED entries of the newest `window` batches may be torn: check their data. Older ones
    // were synced; one of them past the end of the file means the file lost synced slots.
    const newest: number[] = [];
    for (let slot = 0; slot < groups * SLOTS_PER_GROUP; slot++) {
      const page = this.metaPages[groupOf(slot)]!;
      const at = entryOffset(slot);
      if (!entryIsUsed(page, at)) continue;
      if (entrySeq(page, at) > maxSeq - window) newest.push(slot);
      else if (slot >= slotCount) {
        throw corruptError(`${SLOT_FILE}: slot ${slot} of a synced batch lies past the end of the file`);
      }
    }
    this.recoveryStats.lastBatchSeq = maxSeq;
    this.recoveryStats.checkedBatches = window;
    this.recoveryStats.checkedEntries = newest.length;
    // Drop (rewrite FREE, keeping their seq) the entries whose data fails.
    const dropped = await this.failingEntries(newest, slotCount);
    const dirtyGroups = new Set<number>();
    for (const slot of dropped) {
      const page = this.metaPages[groupOf(slot)]!;
      encodeFreeEntry(page, entryOffset(slot), slot, entrySeq(page, entryOffset(slot)));
      dirtyGroups.add(groupOf(slot));
    }
    this.recoveryStats.droppedEntries = dropped.length;

    // Pass 2: per sector the USED entry with the highest seq; every other slot is free.
    for (let slot = 0; slot < groups * SLOTS_PER_GROUP; slot++) {
      const page = this.metaPages[groupOf(slot)]!;
      const at = entryOffset(slot);
      if (!entryIsUsed(page, at)) continue;
      const sector = entrySector(page, at);
      const other = this.index.get(sector);
      if (other === undefined) {
        this.index.set(sector, slot);
        continue;
      }
      const seq = entrySeq(page, at);
      const otherSeq = entrySeq(this.metaPages[groupOf(other)]!, entryOffset(other));
      if (seq === otherSeq) {
        throw corruptError(
          `${SLOT_FILE}: slots ${other} and ${slot} both hold sector ${sector} at seq ${seq}`,
        );
      }
      if (seq > otherSeq) this.index.set(sector, slot);
    }
    const free: number[] = [];
    for (let slot = 0; slot < slotCount; slot++) {
      const page = this.metaPages[groupOf(slot)]!;
      const at = entryOffset(slot);
      if (!entryIsUsed(page, at) || this.index.get(entrySector(page, at)) !== slot) free.push(slot);
    }
    for (const slot of free) this.free.add(slot);
    this.writtenSectors = this.index.size;
    this.nextSeq = maxSeq + 1;

    // Dropped entries durably FREE, and everything recovery accepted durable, before any use.
    const rewrites = [...dirtyGroups].sort((a, b) => a - b);
    for (const g of rewrites) {
      const page = this.metaPages[g]!;
      this.writeCalls++;
      await io("rewrite meta page", () => this.file.write(page, 0, PAGE_BYTES, groupPosition(g)));
      this.fileBytes = Math.max(this.fileBytes, groupPosition(g) + PAGE_BYTES);
    }
    await io("sync sectors.dat", () => this.file.datasync());
    this.fsyncCount++;
    if (dropped.length > 0) {
      this.logger.info(
        { seq: maxSeq, window, dropped: dropped.length },
        "dropped the torn entries of unsynced newest batches",
      );
    }

    // Only now that the window of the old depth is settled: record ours before the first batch.
    if (headerDepths.some((d) => d !== this.depth)) {
      const page = encodeHeaderPage(this.depth);
      this.writeCalls++;
      await io(`rewrite ${SLOT_FILE} header`, () => this.file.write(page, 0, PAGE_BYTES, 0));
      await io("sync sectors.dat", () => this.file.datasync());
      this.fsyncCount++;
      this.recoveryStats.depthRecorded = true;
      this.logger.info({ from: headerDepths, to: this.depth }, "recorded a new commit depth");
    }
  }

  /** The commit depths of the valid header copies (at least one). */
  private async checkHeader(): Promise<number[]> {
    const buf = Buffer.alloc(HEADER_COPY_OFFSETS[1] + 64);
    await io(`read ${SLOT_FILE} header`, () => readFully(this.file, buf, 0, buf.length, 0));
    const results = HEADER_COPY_OFFSETS.map((at) => decodeFileHeader(buf, at));
    const foreign = results.find((r) => r.status === "foreign");
    if (foreign !== undefined) {
      throw new AtomicDiskError(
        "DATA_DIR_UNUSABLE",
        `${SLOT_FILE} is not a sector store of this format or version (${JSON.stringify(foreign)})`,
      );
    }
    const depths = results.flatMap((r) => (r.status === "valid" ? [r.commitDepth] : []));
    if (depths.length === 0) throw corruptError(`both header copies of ${SLOT_FILE} are damaged`);
    return depths;
  }

  /** Reads every meta page into memory; entries cut by the end of the file read as empty. */
  private async readMetaPages(groups: number, size: number): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < groups) {
        const g = next++;
        const page = this.metaPages[g]!;
        this.readCalls++;
        const n = await io("read meta page", () =>
          readFully(this.file, page, 0, PAGE_BYTES, groupPosition(g)),
        );
        const whole = Math.min(n, size - groupPosition(g));
        page.fill(0, Math.floor(whole / ENTRY_BYTES) * ENTRY_BYTES);
      }
    };
    await Promise.all(Array.from({ length: Math.min(RECOVERY_READ_CONCURRENCY, groups) }, worker));
  }

  /** Those of `slots` (ascending) whose data is missing or fails its entry's checksum, in no order. */
  private async failingEntries(slots: readonly number[], slotCount: number): Promise<number[]> {
    const failed: number[] = [];
    const inFile = slots.filter((slot) => slot < slotCount);
    for (const slot of slots) if (slot >= slotCount) failed.push(slot);
    const runs = slotRuns(inFile);
    let next = 0;
    const worker = async () => {
      while (next < runs.length) {
        const run = runs[next++]!;
        const { buf, start, n } = await this.readRun(run, "read newest batches");
        for (let k = run.from; k < run.to; k++) {
          const slot = inFile[k]!;
          const at = slotPosition(slot) - start;
          const page = this.metaPages[groupOf(slot)]!;
          const ok =
            at + SLOT_BYTES <= n &&
            checksum(buf, at, at + SLOT_BYTES) === entryDataCrc(page, entryOffset(slot));
          if (!ok) failed.push(slot);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(RECOVERY_READ_CONCURRENCY, runs.length) }, worker));
    return failed.sort((a, b) => a - b);
  }

  // ---- Failure and shutdown ----------------------------------------------------------------------

  private throwIfUnusable(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new AtomicDiskError("SHUTTING_DOWN", "sector store is closed");
  }

  private throwIfAcceptingNoWrites(): void {
    this.throwIfUnusable();
    if (this.closing) throw new AtomicDiskError("SHUTTING_DOWN", "sector store is closing");
  }

  /**
   * After a failed write or sync nothing says what reached the disk (the page cache may even have
   * dropped the dirty pages), so the store stops: every later call fails, and the replica restarts
   * and recovers from what the disk holds.
   */
  private fail(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = ioError("sector store failed", err);
    this.logger.error({ err: this.failure }, "sector store failed; restart to recover");
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    try {
      await this.drained();
      // After a failure, batches may still have I/O outstanding: let it end before the file closes.
      while (this.running.size > 0) await Promise.all(this.running);
      if (this.failure !== undefined) throw this.failure;
      this.logger.info(
        { writtenSectors: this.writtenSectors, fsyncs: this.fsyncCount },
        "sector store closed",
      );
    } finally {
      this.closed = true;
      await io(`close ${SLOT_FILE}`, () => this.file.close());
    }
  }
}
