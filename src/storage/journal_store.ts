// The stable storage of a replica (SPEC §3): a write-ahead journal plus a dense slot file.
//
// persist: the state becomes a checksummed journal record; persists that arrive while a batch is
//   being written and synced form the next batch (group commit): one writev + one fdatasync per
//   batch, then every persist of the batch resolves. The synced states are NOT written in place
//   right away: they stay in memory (`dirty`, latest per sector; load serves them from there) until
//   the next checkpoint applies them. Each written sector owns a 4096-byte slot in slots.dat
//   (allocated on first apply, densely packed) and a 64-byte entry (sector, ts, wr, data checksum)
//   at the same index in slots.meta.
// checkpoint (journal past its size limit, at open, at close), in two phases:
//   1. apply: the dirty states go to their slots, sorted by slot, adjacent slots coalesced into one
//      writev (at most APPLY_RUN_SLOTS = 1 MiB per write). When the journal limit triggers it, this
//      runs in the background: persists keep being appended to the journal (current epoch) and
//      acknowledged meanwhile, and their states collect in a fresh `dirty` map.
//   2. seal, exclusive in the commit loop (persists arriving now queue and wait for it, as for any
//      batch in flight): apply what became dirty during phase 1, sync slots.dat and slots.meta,
//      record the durable slot count in the slots.meta header, then start a new journal epoch by
//      syncing a new journal header. Records of older epochs are dead from then on, so the journal
//      file is reused in place without truncating it (no block allocation on the hot path).
//   At open (after recovery) and at close both phases run back to back with nothing in flight.
// recovery: scan slots.meta (linear in written sectors), replay the journal's current epoch in
//   order into `dirty`, then checkpoint.
// Space: 4096 + 64 bytes per written sector (1.6% over), plus the journal: up to twice the
//   checkpoint size plus one batch and one growth chunk (JOURNAL_EXTEND_BYTES) while running (the second half only if phase 1 is slower than
//   the persists arriving meanwhile), its headers only after close. Memory: ~60 bytes per written
//   sector (a Map sector -> slot plus typed arrays per slot), plus the states not yet in the slots:
//   the dirty maps hold at most one state per journal record of the current epoch, so at most
//   2 * JOURNAL_CHECKPOINT_BYTES / RECORD_BYTES (~32k sectors, 128 MiB; ~16k / 64 MiB unless phase 1
//   falls behind), and recovery holds the same while it replays.
//
// Why a sector is always its old or its new state after a crash: a slot is only written after its
// record is durable in the journal, and the epoch only advances after every dirty state of the epoch
// is written and the slot files are synced (phase 2 runs with no batch in flight, so every record of
// the epoch is in the slots by then); so any slot write a crash can have torn is replayed from the
// journal. A torn journal record can
// only belong to the last batch (the next batch is written only after the previous one is synced),
// which no persist was acknowledged for: recovery drops that whole batch.
//
// Torn tail versus corruption: at the first bad record, recovery looks for an intact record of the
// same epoch from a LATER batch. If there is none, the bad record is the unsynced tail: the log
// ends there. If there is one, the bad record's batch was synced and acknowledged, so the damage is
// corruption: if the record's header is intact (it has its own checksum) its sector is marked lost
// (durably, in slots.meta: STORAGE_CORRUPT on load until it is written again) and replay goes on;
// if the header is damaged no one knows which sector was hit and open fails with STORAGE_CORRUPT.
// Damage to records of the very last synced batch looks exactly like a torn tail and is not
// detected (the price of one fsync per batch instead of two). A damaged newest journal header copy
// is detected too: records of an epoch are only written once its header is durable, so an intact
// record of a newer epoch than the surviving header copy names the real epoch.
import * as path from "node:path";
import { assert } from "../util/assert.js";
import { AtomicDiskError, isAtomicDiskError } from "../util/errors.js";
import {
  GROUP_COMMIT_MAX_RECORDS,
  JOURNAL_CHECKPOINT_BYTES,
  JOURNAL_EXTEND_BYTES,
  MAX_SECTORS,
  SECTOR_SIZE_BYTES,
} from "../util/limits.js";
import { componentLogger, type Logger } from "../util/log.js";
import { type FileIo, type FileSystemIo, readFully } from "./file_io.js";
import {
  checksum,
  decodeFileHeader,
  decodeMetaEntry,
  decodeRecord,
  decodeRecordHeader,
  encodeFileHeader,
  encodeMetaEntry,
  FILE_HEADER_BYTES,
  HEADER_COPY_OFFSETS,
  JOURNAL_MAGIC,
  JOURNAL_RECORDS_OFFSET,
  journalRecordPosition,
  META_ENTRIES_OFFSET,
  META_ENTRY_BYTES,
  metaEntryPosition,
  RECORD_BYTES,
  RECORD_HEADER_BYTES,
  SLOT_DATA_MAGIC,
  SLOT_META_MAGIC,
  slotDataPosition,
  writeRecordHeader,
} from "./record_format.js";
import { initialSectorState, type SectorState, type SectorTag } from "./sector_state.js";
import type { PersistItem, SectorStore } from "./sector_store.js";

export const JOURNAL_FILE = "journal";
export const JOURNAL_TMP_FILE = "journal.tmp";
export const SLOT_DATA_FILE = "slots.dat";
export const SLOT_META_FILE = "slots.meta";

/** Zeros the journal grows by (extendJournalFor), shared and never written to. */
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** Journal records read per I/O during recovery (~1 MiB): few syscalls, bounded memory. */
const RECOVERY_CHUNK_RECORDS = 256;
/** Slot metadata entries read per I/O during recovery (1 MiB). */
const RECOVERY_CHUNK_META_ENTRIES = 16_384;
const INITIAL_SLOT_CAPACITY = 1024;
/** Most slots per slot-data writev: 1 MiB, well under IOV_MAX (1024) buffers. */
const APPLY_RUN_SLOTS = 256;
/** Slot runs written at once by a background apply: leaves thread-pool room for journal I/O. */
const APPLY_WORKERS_BACKGROUND = 2;
/** Slot runs written at once when nothing else runs (checkpoint phase 2, open, close). */
const APPLY_WORKERS_EXCLUSIVE = 8;

export interface JournalStoreOptions {
  fs: FileSystemIo;
  dir: string;
  logger?: Logger;
  /** Journal bytes that trigger a checkpoint; default JOURNAL_CHECKPOINT_BYTES (tests use less). */
  journalCheckpointBytes?: number;
  /** Largest batch; default GROUP_COMMIT_MAX_RECORDS. */
  groupCommitMaxRecords?: number;
}

export interface RecoveryStats {
  metaEntries: number;
  replayedRecords: number;
  /** Records of an incomplete (never acknowledged) last batch that were dropped. */
  discardedRecords: number;
  /** Sectors that load will reject with STORAGE_CORRUPT. */
  corruptSectors: number;
  durationMs: number;
}

export interface JournalStoreStats {
  writtenSectors: number;
  slotCount: number;
  bytesOnDisk: number;
  journalFileBytes: number;
  persistCount: number;
  batchCount: number;
  maxBatchRecords: number;
  fsyncCount: number;
  checkpointCount: number;
  recovery: RecoveryStats;
}

/** A state on its way to the slot files: from a live persist or from journal replay. */
interface ApplyState {
  sector: number;
  ts: bigint;
  wr: number;
  dataCrc: number;
  /** SECTOR_SIZE_BYTES. */
  data: Buffer;
}

/** Replay found this sector's acknowledged state damaged. */
interface ApplyLost {
  sector: number;
  lost: true;
}

type ApplyItem = ApplyState | ApplyLost;

interface QueuedPersist extends ApplyState {
  /** The record header; the journal gets [record, data] in one writev. */
  record: Buffer;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function corruptError(message: string): AtomicDiskError {
  return new AtomicDiskError("STORAGE_CORRUPT", message);
}

function ioError(what: string, cause: unknown): AtomicDiskError {
  if (isAtomicDiskError(cause)) return cause;
  return new AtomicDiskError("STORAGE_IO", `${what}: ${String(cause)}`, { cause });
}

async function io<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw ioError(what, err);
  }
}

/** Reads both header copies of a file; the valid copy with the highest generation wins. */
async function readFileHeader(file: FileIo, magic: number, name: string) {
  const buf = Buffer.alloc(HEADER_COPY_OFFSETS[1] + FILE_HEADER_BYTES);
  await io(`read ${name} header`, () => readFully(file, buf, 0, buf.length, 0));
  const results = HEADER_COPY_OFFSETS.map((at) => decodeFileHeader(buf.subarray(at), magic));
  if (results.some((r) => r.status === "foreign")) {
    throw new AtomicDiskError("DATA_DIR_UNUSABLE", `${name} is not a file of this format or version`);
  }
  let best: { generation: bigint; value: number } | undefined;
  for (const r of results) {
    if (r.status === "valid" && (best === undefined || r.header.generation > best.generation))
      best = r.header;
  }
  if (best === undefined) throw corruptError(`both header copies of ${name} are damaged`);
  return best;
}

async function writeHeaderCopy(file: FileIo, magic: number, generation: bigint, value: number, name: string) {
  const buf = encodeFileHeader({ magic, generation, value });
  const check = decodeFileHeader(buf, magic);
  assert(
    check.status === "valid" && check.header.generation === generation,
    "file header does not round-trip",
  );
  const at = HEADER_COPY_OFFSETS[Number(generation % 2n)];
  assert(at !== undefined);
  await io(`write ${name} header`, () => file.write(buf, 0, buf.length, at));
}

async function createFile(
  fs: FileSystemIo,
  filePath: string,
  magic: number,
  generation: bigint,
): Promise<void> {
  const file = await fs.open(filePath, { create: true });
  try {
    const buf = encodeFileHeader({ magic, generation, value: 0 });
    for (const at of HEADER_COPY_OFFSETS) await file.write(buf, 0, buf.length, at);
    await file.datasync();
  } finally {
    await file.close();
  }
}

/**
 * Makes `dir` hold a store, creating a fresh one when there is none. The rename of journal.tmp to
 * journal is the commit point of a creation: without a journal, leftover files of a creation that
 * crashed are replaced, unless slots.meta holds entries (then the journal was lost: refuse).
 */
async function prepareDirectory(fs: FileSystemIo, dir: string, logger: Logger): Promise<void> {
  try {
    await fs.mkdirp(dir);
  } catch (err) {
    throw new AtomicDiskError("DATA_DIR_UNUSABLE", `cannot create data directory ${dir}: ${String(err)}`, {
      cause: err,
    });
  }
  const names = new Set(await io("list data directory", () => fs.readdir(dir)));
  const at = (name: string) => path.join(dir, name);
  if (names.has(JOURNAL_FILE)) {
    if (!names.has(SLOT_DATA_FILE) || !names.has(SLOT_META_FILE)) {
      throw new AtomicDiskError("DATA_DIR_UNUSABLE", `${dir} has a journal but no slot files`);
    }
    if (names.has(JOURNAL_TMP_FILE)) {
      await io("remove journal.tmp", () => fs.unlink(at(JOURNAL_TMP_FILE)));
      await io("sync data directory", () => fs.fsyncDir(dir));
    }
    return;
  }
  if (names.has(SLOT_META_FILE)) {
    const meta = await io("open slots.meta", () => fs.open(at(SLOT_META_FILE), { create: false }));
    const size = await io("size slots.meta", async () => {
      try {
        return await meta.size();
      } finally {
        await meta.close();
      }
    });
    if (size > META_ENTRIES_OFFSET) {
      throw new AtomicDiskError("DATA_DIR_UNUSABLE", `${dir} has slot metadata but no journal`);
    }
  }
  logger.info({ dir }, "creating a new sector store");
  await io("create sector store", async () => {
    for (const name of [SLOT_DATA_FILE, SLOT_META_FILE, JOURNAL_TMP_FILE]) {
      if (names.has(name)) await fs.unlink(at(name));
    }
    await createFile(fs, at(SLOT_DATA_FILE), SLOT_DATA_MAGIC, 1n);
    await createFile(fs, at(SLOT_META_FILE), SLOT_META_MAGIC, 1n);
    await createFile(fs, at(JOURNAL_TMP_FILE), JOURNAL_MAGIC, 1n);
    await fs.fsyncDir(dir);
    await fs.rename(at(JOURNAL_TMP_FILE), at(JOURNAL_FILE));
    await fs.fsyncDir(dir);
  });
}

/** Random access to journal records during recovery, one chunk cached. */
class JournalReader {
  private chunk = Buffer.alloc(0);
  private chunkFirst = 0;
  private chunkCount = 0;

  constructor(
    private readonly file: FileIo,
    readonly recordCount: number,
  ) {}

  /** The buffer and offset of record `seq`; the view is valid until the next call. */
  async get(seq: number): Promise<{ buf: Buffer; offset: number }> {
    assert(seq < this.recordCount, "journal read past its end");
    if (seq < this.chunkFirst || seq >= this.chunkFirst + this.chunkCount) {
      const count = Math.min(RECOVERY_CHUNK_RECORDS, this.recordCount - seq);
      if (this.chunk.length < count * RECORD_BYTES)
        this.chunk = Buffer.alloc(RECOVERY_CHUNK_RECORDS * RECORD_BYTES);
      const n = await io("read journal", () =>
        readFully(this.file, this.chunk, 0, count * RECORD_BYTES, journalRecordPosition(seq)),
      );
      // Shrinking between size() and here would be a bug; zeros decode as invalid anyway.
      this.chunk.fill(0, n, count * RECORD_BYTES);
      this.chunkFirst = seq;
      this.chunkCount = count;
    }
    return { buf: this.chunk, offset: (seq - this.chunkFirst) * RECORD_BYTES };
  }
}

export class JournalStore implements SectorStore {
  private readonly logger: Logger;
  private readonly checkpointBytes: number;
  private readonly maxBatchRecords: number;

  // Journal position.
  private epoch = 0n;
  private nextSeq = 0;

  // Index of written sectors: sector -> slot, and per slot what its entry in slots.meta says.
  private readonly sectorToSlot = new Map<number, number>();
  private slotCount = 0;
  private slotTs = new BigUint64Array(INITIAL_SLOT_CAPACITY);
  private slotWr = new Uint8Array(INITIAL_SLOT_CAPACITY);
  private slotCrc = new Uint32Array(INITIAL_SLOT_CAPACITY);
  /** Bumped whenever a slot write completes: a load that raced with one reads again. */
  private slotVersion = new Uint32Array(INITIAL_SLOT_CAPACITY);
  private readonly freeSlots: number[] = [];
  /** Slots whose slots.meta entry is all zero (allocated just before a crash); made FREE at open. */
  private readonly holeSlots = new Set<number>();
  /** Sectors whose stored state is known damaged: load rejects until they are written again. */
  private readonly corruptSectors = new Set<number>();
  private writtenSectors = 0;

  /** Latest state per sector queued or being written to the journal, not yet synced. */
  private readonly pending = new Map<number, QueuedPersist>();
  /**
   * Latest state per sector that is durable in the journal (current epoch) but not yet written to
   * the slot files; load serves it from here. At most one entry per journal record of the epoch.
   */
  private dirty = new Map<number, ApplyItem>();
  /** The dirty states a checkpoint is writing to the slots right now (older than `dirty`'s). */
  private applying: Map<number, ApplyItem> | undefined;
  /** Checkpoint phase 1 running in the background. */
  private backgroundApply: Promise<void> | undefined;
  /** Phase 1 finished: the commit loop runs phase 2 before its next batch. */
  private sealDue = false;
  private queue: QueuedPersist[] = [];
  private committing = false;
  private commitDone: Promise<void> = Promise.resolve();
  private failure: AtomicDiskError | undefined;
  private closing = false;
  private closed = false;
  private closePromise: Promise<void> | undefined;

  // Stats.
  private journalFileBytes = 0;
  private slotDataFileBytes = 0;
  private metaFileBytes = 0;
  private persistCount = 0;
  private batchCount = 0;
  private maxBatch = 0;
  private fsyncCount = 0;
  private checkpointCount = 0;
  private recoveryStats: RecoveryStats = {
    metaEntries: 0,
    replayedRecords: 0,
    discardedRecords: 0,
    corruptSectors: 0,
    durationMs: 0,
  };

  private constructor(
    private readonly journal: FileIo,
    private readonly slots: FileIo,
    private readonly meta: FileIo,
    options: JournalStoreOptions,
  ) {
    this.logger = options.logger ?? componentLogger("storage", { dir: options.dir });
    this.checkpointBytes = options.journalCheckpointBytes ?? JOURNAL_CHECKPOINT_BYTES;
    this.maxBatchRecords = options.groupCommitMaxRecords ?? GROUP_COMMIT_MAX_RECORDS;
    assert(this.checkpointBytes > 0 && this.maxBatchRecords >= 1, "bad journal store options");
  }

  static async open(options: JournalStoreOptions): Promise<JournalStore> {
    const { fs, dir } = options;
    const logger = options.logger ?? componentLogger("storage", { dir });
    const started = performance.now();
    await prepareDirectory(fs, dir, logger);
    const opened: FileIo[] = [];
    const openOne = async (name: string) => {
      const file = await io(`open ${name}`, () => fs.open(path.join(dir, name), { create: false }));
      opened.push(file);
      return file;
    };
    try {
      const journal = await openOne(JOURNAL_FILE);
      const slots = await openOne(SLOT_DATA_FILE);
      const meta = await openOne(SLOT_META_FILE);
      const store = new JournalStore(journal, slots, meta, { ...options, logger });
      await store.recover();
      store.recoveryStats.durationMs = performance.now() - started;
      logger.info(
        { ...store.recoveryStats, writtenSectors: store.writtenSectors, epoch: String(store.epoch) },
        "sector store open",
      );
      return store;
    } catch (err) {
      await Promise.allSettled(opened.map((f) => f.close()));
      throw err;
    }
  }

  // ---- SectorStore -------------------------------------------------------------------------------

  async load(sectorIndex: number): Promise<SectorState> {
    assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0 && sectorIndex < MAX_SECTORS, "bad sector");
    for (;;) {
      const found = this.lookup(sectorIndex);
      if (found.kind === "queued") {
        const { ts, wr, data } = found.state;
        return { ts, wr, data: Buffer.from(data) };
      }
      if (found.kind === "never") return initialSectorState();
      const { slot } = found;
      const version = this.slotVersion[slot];
      const data = Buffer.allocUnsafe(SECTOR_SIZE_BYTES);
      const n = await io(`read sector ${sectorIndex}`, () =>
        readFully(this.slots, data, 0, SECTOR_SIZE_BYTES, slotDataPosition(slot)),
      );
      // A persist of this sector overtook the read (its slot write may have overlapped it): retry.
      if (this.pending.has(sectorIndex) || this.dirty.has(sectorIndex)) continue;
      if (this.applying?.has(sectorIndex) || this.slotVersion[slot] !== version) continue;
      if (this.corruptSectors.has(sectorIndex)) continue;
      if (n !== SECTOR_SIZE_BYTES || checksum(data) !== this.slotCrc[slot]) {
        this.logger.warn({ sector: sectorIndex, slot }, "sector data fails its checksum");
        throw corruptError(`sector ${sectorIndex}: data fails its checksum`);
      }
      return { ts: this.slotTs[slot]!, wr: this.slotWr[slot]!, data };
    }
  }

  loadTag(sectorIndex: number): Promise<SectorTag> {
    assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0 && sectorIndex < MAX_SECTORS, "bad sector");
    try {
      const found = this.lookup(sectorIndex);
      if (found.kind === "queued") return Promise.resolve({ ts: found.state.ts, wr: found.state.wr });
      if (found.kind === "never") return Promise.resolve({ ts: 0n, wr: 0 });
      return Promise.resolve({ ts: this.slotTs[found.slot]!, wr: this.slotWr[found.slot]! });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Where the latest state of a sector is, from memory: a state not yet in its slot, its slot, or
   * nowhere (never written). Throws STORAGE_CORRUPT for a sector known damaged.
   */
  private lookup(
    sectorIndex: number,
  ): { kind: "queued"; state: ApplyState } | { kind: "slot"; slot: number } | { kind: "never" } {
    this.throwIfUnusable();
    const queued =
      this.pending.get(sectorIndex) ?? this.dirty.get(sectorIndex) ?? this.applying?.get(sectorIndex);
    if (queued !== undefined) {
      if ("lost" in queued) throw corruptError(`sector ${sectorIndex}: stored state is damaged`);
      return { kind: "queued", state: queued };
    }
    if (this.corruptSectors.has(sectorIndex))
      throw corruptError(`sector ${sectorIndex}: stored state is damaged`);
    const slot = this.sectorToSlot.get(sectorIndex);
    return slot === undefined ? { kind: "never" } : { kind: "slot", slot };
  }

  persist(sectorIndex: number, state: SectorState): Promise<void> {
    assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0 && sectorIndex < MAX_SECTORS, "bad sector");
    assert(state.data.length === SECTOR_SIZE_BYTES, "sector data must be 4096 bytes");
    assert(Number.isInteger(state.wr) && state.wr >= 0 && state.wr <= 255, "wr must be a u8");
    assert(state.ts >= 0n && state.ts < 1n << 64n, "ts must be a u64");
    try {
      this.throwIfUnusable();
      if (this.closing) throw new AtomicDiskError("SHUTTING_DOWN", "sector store is closing");
    } catch (err) {
      return Promise.reject(err);
    }
    // The record is written as [header, data] with one writev: no 4 KiB copy per persist. The
    // SectorStore contract forbids callers to mutate state.data afterwards, so it can be kept.
    const record = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
    const data = state.data;
    return new Promise<void>((resolve, reject) => {
      const q: QueuedPersist = {
        sector: sectorIndex,
        ts: state.ts,
        wr: state.wr,
        dataCrc: checksum(data),
        data,
        record,
        resolve,
        reject,
      };
      this.noteWritten(sectorIndex);
      this.pending.set(sectorIndex, q);
      this.queue.push(q);
      this.persistCount++;
      this.kick();
    });
  }

  persistMany(items: readonly PersistItem[]): Promise<void> {
    return Promise.all(items.map((item) => this.persist(item.sectorIndex, item.state))).then(() => {});
  }

  loadMany(sectorIndexes: readonly number[]): Promise<Array<SectorState | null>> {
    return Promise.all(
      sectorIndexes.map((sector) =>
        this.load(sector).catch((err: unknown) => {
          if (isAtomicDiskError(err, "STORAGE_CORRUPT")) return null;
          throw err;
        }),
      ),
    );
  }

  writtenSectorCount(): number {
    return this.writtenSectors;
  }

  close(): Promise<void> {
    this.closePromise ??= this.closeOnce();
    return this.closePromise;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    try {
      await this.quiesce();
      this.throwIfUnusable();
      if (this.nextSeq > 0 || this.dirty.size > 0) await this.checkpoint();
      // Nothing in the current epoch: the journal can shrink to its headers.
      if (this.journalFileBytes > JOURNAL_RECORDS_OFFSET) {
        await io("truncate journal", () => this.journal.truncate(JOURNAL_RECORDS_OFFSET));
        await io("sync journal", () => this.journal.datasync());
        this.fsyncCount++;
        this.journalFileBytes = JOURNAL_RECORDS_OFFSET;
      }
      this.logger.info(
        { writtenSectors: this.writtenSectors, fsyncs: this.fsyncCount },
        "sector store closed",
      );
    } finally {
      await this.closeFiles();
    }
  }

  // ---- Extras for tests, benchmarks and metrics ---------------------------------------------------

  stats(): JournalStoreStats {
    return {
      writtenSectors: this.writtenSectors,
      slotCount: this.slotCount,
      bytesOnDisk: this.journalFileBytes + this.slotDataFileBytes + this.metaFileBytes,
      journalFileBytes: this.journalFileBytes,
      persistCount: this.persistCount,
      batchCount: this.batchCount,
      maxBatchRecords: this.maxBatch,
      fsyncCount: this.fsyncCount,
      checkpointCount: this.checkpointCount,
      recovery: { ...this.recoveryStats },
    };
  }

  /**
   * Waits for all issued work, then closes the files without a checkpoint: what a kill -9 leaves on
   * disk once the OS holds the writes. For crash tests on real files.
   */
  async abandonForTesting(): Promise<void> {
    this.closing = true;
    await this.quiesce();
    await this.closeFiles();
  }

  // ---- Group commit ------------------------------------------------------------------------------

  private kick(): void {
    if (this.committing) return;
    this.committing = true;
    this.commitDone = this.commitLoop();
  }

  private async commitLoop(): Promise<void> {
    for (;;) {
      if (this.failure !== undefined) break;
      if (this.sealDue) {
        try {
          await this.seal();
        } catch (err) {
          this.fail(err);
        }
        continue;
      }
      // Checked and cleared without an await in between: a persist queued after this sees
      // `committing === false` and starts a new loop.
      if (this.queue.length === 0) break;
      // Memory and journal bound: past twice the limit, wait for the background apply.
      if (this.backgroundApply !== undefined && this.nextSeq * RECORD_BYTES >= 2 * this.checkpointBytes) {
        await this.backgroundApply;
        continue;
      }
      const batch = this.queue.splice(0, this.maxBatchRecords);
      try {
        await this.commitBatch(batch);
      } catch (err) {
        this.fail(err);
        for (const q of batch) q.reject(this.failure);
        continue;
      }
      if (this.nextSeq * RECORD_BYTES >= this.checkpointBytes) this.startBackgroundApply();
    }
    this.committing = false;
    if (this.failure !== undefined) {
      const rest = this.queue;
      this.queue = [];
      for (const q of rest) q.reject(this.failure);
    }
  }

  private async commitBatch(batch: QueuedPersist[]): Promise<void> {
    const first = this.nextSeq;
    for (const [i, q] of batch.entries()) {
      // writeRecordHeader asserts the fields; decoding back proves the record is what recovery
      // will read (paired with the checks in replay).
      writeRecordHeaderFor(q, this.epoch, first + i, first, batch.length);
      const check = decodeRecordHeader(q.record, 0);
      assert(
        check.status === "valid" && check.header.sector === q.sector,
        "journal record does not round-trip",
      );
    }
    this.nextSeq += batch.length;
    const position = journalRecordPosition(first);
    await this.extendJournalFor(position + batch.length * RECORD_BYTES);
    await io("write journal", () =>
      this.journal.writev(
        batch.flatMap((q) => [q.record, q.data]),
        position,
      ),
    );
    await io("sync journal", () => this.journal.datasync());
    this.fsyncCount++;
    this.batchCount++;
    this.maxBatch = Math.max(this.maxBatch, batch.length);
    this.journalFileBytes = Math.max(this.journalFileBytes, position + batch.length * RECORD_BYTES);
    // Durable: from now on the state waits in `dirty` for the next checkpoint (a later persist of
    // the sector replaces it there). No slot write here: that is what keeps the hot path cheap.
    for (const q of batch) {
      this.dirty.set(q.sector, q);
      if (this.pending.get(q.sector) === q) this.pending.delete(q.sector);
    }
    for (const q of batch) q.resolve();
  }

  /**
   * Before a batch would write past the end of the journal file, the file grows by a whole chunk
   * of zeros (no sync of its own: the batch's fdatasync covers it). An fdatasync that must also
   * make new blocks durable costs an ext4 journal commit: measured 550-670 µs against 260-420 µs
   * for a batch of 16 records, 3 stores at once. So the file grows once per chunk rather than once
   * per batch (it starts at its headers after every open of a cleanly closed store). Only bytes
   * past the end of the file are written, where no record can be.
   */
  private async extendJournalFor(end: number): Promise<void> {
    if (end <= this.journalFileBytes) return;
    const chunkBytes = Math.min(JOURNAL_EXTEND_BYTES, this.checkpointBytes);
    const target = Math.max(end, this.journalFileBytes + chunkBytes);
    const zeros: Buffer[] = [];
    for (let left = target - this.journalFileBytes; left > 0; left -= ZERO_CHUNK.length) {
      zeros.push(left >= ZERO_CHUNK.length ? ZERO_CHUNK : ZERO_CHUNK.subarray(0, left));
    }
    const at = this.journalFileBytes;
    await io("extend journal", () => this.journal.writev(zeros, at));
    this.journalFileBytes = target;
  }

  /** Checkpoint phase 1 in the background, unless one runs or is waiting for its phase 2. */
  private startBackgroundApply(): void {
    if (this.backgroundApply !== undefined || this.sealDue) return;
    this.backgroundApply = this.applyDirty(APPLY_WORKERS_BACKGROUND)
      .then(
        () => {
          this.sealDue = true;
        },
        (err: unknown) => this.fail(err),
      )
      .finally(() => {
        this.backgroundApply = undefined;
        // Phase 2 (or the failure) must run even if no persist arrives to start the commit loop.
        if (!this.committing) {
          this.committing = true;
          this.commitDone = this.commitLoop();
        }
      });
  }

  /** Waits until no batch is being committed and no checkpoint runs. */
  private async quiesce(): Promise<void> {
    while (this.committing || this.backgroundApply !== undefined) {
      await this.commitDone;
      await this.backgroundApply;
    }
  }

  // ---- Slot files --------------------------------------------------------------------------------

  private noteWritten(sector: number): void {
    if (
      !this.sectorToSlot.has(sector) &&
      !this.pending.has(sector) &&
      !this.dirty.has(sector) &&
      !this.applying?.has(sector) &&
      !this.corruptSectors.has(sector)
    ) {
      this.writtenSectors++;
    }
  }

  private ensureSlotCapacity(count: number): void {
    if (count <= this.slotTs.length) return;
    let capacity = this.slotTs.length;
    while (capacity < count) capacity *= 2;
    const grow = <T extends BigUint64Array | Uint8Array | Uint32Array>(old: T, make: (n: number) => T): T => {
      const next = make(capacity);
      next.set(old as never);
      return next;
    };
    this.slotTs = grow(this.slotTs, (n) => new BigUint64Array(n));
    this.slotWr = grow(this.slotWr, (n) => new Uint8Array(n));
    this.slotCrc = grow(this.slotCrc, (n) => new Uint32Array(n));
    this.slotVersion = grow(this.slotVersion, (n) => new Uint32Array(n));
  }

  private slotFor(sector: number): number {
    const existing = this.sectorToSlot.get(sector);
    if (existing !== undefined) return existing;
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      slot = this.slotCount++;
      this.ensureSlotCapacity(this.slotCount);
    }
    this.holeSlots.delete(slot);
    this.sectorToSlot.set(sector, slot);
    return slot;
  }

  /**
   * Checkpoint phase 1: writes every dirty state (or lost marker) into the slot files (not synced)
   * and updates the index. New dirty states collect in a fresh map meanwhile; load consults
   * `applying` until the index says what the slots hold.
   */
  private async applyDirty(workers: number): Promise<void> {
    if (this.dirty.size === 0) return;
    assert(this.applying === undefined, "two slot applies at once");
    const items = this.dirty;
    this.dirty = new Map();
    this.applying = items;
    try {
      await this.applyItems(items, workers);
    } finally {
      this.applying = undefined;
    }
  }

  /**
   * Writes states (or lost markers, one per sector) into the slot files, then updates the index.
   * Sorted by slot; consecutive slots go out as one write each for data and metadata (at most
   * APPLY_RUN_SLOTS), `workers` runs at a time.
   */
  private async applyItems(items: ReadonlyMap<number, ApplyItem>, workers: number): Promise<void> {
    const planned = [...items.values()].map((item) => ({ slot: this.slotFor(item.sector), item }));
    planned.sort((a, b) => a.slot - b.slot);
    const runs: { slot: number; item: ApplyItem }[][] = [];
    let runStart = 0;
    for (let i = 1; i <= planned.length; i++) {
      if (
        i < planned.length &&
        planned[i]!.slot === planned[i - 1]!.slot + 1 &&
        i - runStart < APPLY_RUN_SLOTS
      )
        continue;
      runs.push(planned.slice(runStart, i));
      runStart = i;
    }
    let next = 0;
    const worker = async () => {
      while (next < runs.length && this.failure === undefined) await this.writeSlotRun(runs[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(workers, runs.length) }, worker));
    this.throwIfFailed();
    for (const { slot, item } of planned) {
      if ("lost" in item) {
        this.corruptSectors.add(item.sector);
      } else {
        this.slotTs[slot] = item.ts;
        this.slotWr[slot] = item.wr;
        this.slotCrc[slot] = item.dataCrc;
        this.corruptSectors.delete(item.sector);
      }
      this.slotVersion[slot] = (this.slotVersion[slot]! + 1) >>> 0;
    }
  }

  private async writeSlotRun(run: readonly { slot: number; item: ApplyItem }[]): Promise<void> {
    const first = run[0]!.slot;
    const meta = Buffer.alloc(run.length * META_ENTRY_BYTES);
    const writes: Promise<void>[] = [];
    let dataRun: Buffer[] = [];
    let dataRunFirst = first;
    const flushData = () => {
      if (dataRun.length === 0) return;
      const buffers = dataRun;
      const at = slotDataPosition(dataRunFirst);
      this.slotDataFileBytes = Math.max(this.slotDataFileBytes, at + buffers.length * SECTOR_SIZE_BYTES);
      writes.push(io("write slot data", () => this.slots.writev(buffers, at)));
      dataRun = [];
    };
    for (const [k, { slot, item }] of run.entries()) {
      if ("lost" in item) {
        encodeMetaEntry(meta, k * META_ENTRY_BYTES, { kind: "lost", slot, sector: item.sector });
        flushData();
        continue;
      }
      encodeMetaEntry(meta, k * META_ENTRY_BYTES, { kind: "used", slot, ...item });
      const check = decodeMetaEntry(meta, k * META_ENTRY_BYTES, slot);
      assert(
        check.status === "used" && check.entry.sector === item.sector && check.entry.ts === item.ts,
        "slot metadata entry does not round-trip",
      );
      if (dataRun.length === 0) dataRunFirst = slot;
      dataRun.push(item.data);
    }
    flushData();
    const metaAt = metaEntryPosition(first);
    this.metaFileBytes = Math.max(this.metaFileBytes, metaAt + meta.length);
    writes.push(io("write slot metadata", () => this.meta.write(meta, 0, meta.length, metaAt)));
    await Promise.all(writes);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** A whole checkpoint (both phases back to back). Runs with no batch in flight and no apply. */
  private async checkpoint(): Promise<void> {
    this.throwIfUnusable();
    await this.applyDirty(APPLY_WORKERS_EXCLUSIVE);
    await this.seal();
  }

  /**
   * Checkpoint phase 2: applies what is still dirty, makes the slot files durable and starts a new
   * journal epoch, which retires every record written so far. Runs with no batch in flight and no
   * apply (in the commit loop, or with the loop idle), so every record of the epoch is in the slots.
   */
  private async seal(): Promise<void> {
    this.sealDue = false;
    this.throwIfUnusable();
    await this.applyDirty(APPLY_WORKERS_EXCLUSIVE);
    assert(this.dirty.size === 0 && this.applying === undefined, "checkpoint with states not in the slots");
    await io("sync slot data", () => this.slots.datasync());
    await io("sync slot metadata", () => this.meta.datasync());
    this.fsyncCount += 2;
    const next = this.epoch + 1n;
    // Only now are all entries below slotCount durable: recovery may rely on that.
    await writeHeaderCopy(this.meta, SLOT_META_MAGIC, next, this.slotCount, SLOT_META_FILE);
    await io("sync slot metadata", () => this.meta.datasync());
    await writeHeaderCopy(this.journal, JOURNAL_MAGIC, next, 0, JOURNAL_FILE);
    await io("sync journal", () => this.journal.datasync());
    this.fsyncCount += 2;
    this.epoch = next;
    this.nextSeq = 0;
    this.checkpointCount++;
    this.logger.debug({ epoch: String(next), slots: this.slotCount }, "checkpoint");
  }

  // ---- Recovery ----------------------------------------------------------------------------------

  private async recover(): Promise<void> {
    const journalHeader = await readFileHeader(this.journal, JOURNAL_MAGIC, JOURNAL_FILE);
    await readFileHeader(this.slots, SLOT_DATA_MAGIC, SLOT_DATA_FILE);
    const metaHeader = await readFileHeader(this.meta, SLOT_META_MAGIC, SLOT_META_FILE);
    this.epoch = journalHeader.generation;
    this.journalFileBytes = await io("size journal", () => this.journal.size());
    this.slotDataFileBytes = await io("size slots.dat", () => this.slots.size());
    this.metaFileBytes = await io("size slots.meta", () => this.meta.size());
    await this.scanMeta(metaHeader.value);
    await this.replayJournal();
    // Phase 1 first: it allocates slots (holes among them) to the replayed sectors.
    await this.applyDirty(APPLY_WORKERS_EXCLUSIVE);
    // Holes below the durable slot count would read as lost entries at the next open: fill them.
    const holes = [...this.holeSlots].sort((a, b) => a - b);
    for (const slot of holes) {
      const entry = Buffer.alloc(META_ENTRY_BYTES);
      encodeMetaEntry(entry, 0, { kind: "free", slot });
      await io("write slot metadata", () => this.meta.write(entry, 0, entry.length, metaEntryPosition(slot)));
    }
    this.holeSlots.clear();
    await this.seal();
    this.recoveryStats.corruptSectors = this.corruptSectors.size;
    if (this.corruptSectors.size > 0) {
      this.logger.warn({ corruptSectors: this.corruptSectors.size }, "sectors with damaged state");
    }
  }

  private async scanMeta(durableSlotCount: number): Promise<void> {
    const entries = Math.max(0, Math.floor((this.metaFileBytes - META_ENTRIES_OFFSET) / META_ENTRY_BYTES));
    if (entries < durableSlotCount) {
      throw corruptError(
        `slots.meta has ${entries} entries but its checkpoint made ${durableSlotCount} durable`,
      );
    }
    this.ensureSlotCapacity(entries);
    this.slotCount = entries;
    this.recoveryStats.metaEntries = entries;
    const chunk = Buffer.alloc(Math.min(entries, RECOVERY_CHUNK_META_ENTRIES) * META_ENTRY_BYTES);
    for (let first = 0; first < entries; first += RECOVERY_CHUNK_META_ENTRIES) {
      const count = Math.min(RECOVERY_CHUNK_META_ENTRIES, entries - first);
      const n = await io("read slot metadata", () =>
        readFully(this.meta, chunk, 0, count * META_ENTRY_BYTES, metaEntryPosition(first)),
      );
      chunk.fill(0, n, count * META_ENTRY_BYTES);
      for (let k = 0; k < count; k++)
        this.indexMetaEntry(chunk, k * META_ENTRY_BYTES, first + k, durableSlotCount);
    }
  }

  private indexMetaEntry(chunk: Buffer, offset: number, slot: number, durableSlotCount: number): void {
    const r = decodeMetaEntry(chunk, offset, slot);
    const claim = (sector: number) => {
      const other = this.sectorToSlot.get(sector);
      if (other !== undefined)
        throw corruptError(`sector ${sector} is claimed by slots ${other} and ${slot}`);
      this.sectorToSlot.set(sector, slot);
      this.writtenSectors++;
    };
    switch (r.status) {
      case "used":
        claim(r.entry.sector);
        this.slotTs[slot] = r.entry.ts;
        this.slotWr[slot] = r.entry.wr;
        this.slotCrc[slot] = r.entry.dataCrc;
        return;
      case "free":
        this.freeSlots.push(slot);
        return;
      case "empty":
        if (slot < durableSlotCount)
          throw corruptError(`slots.meta entry ${slot} was durable but reads as zeros`);
        this.freeSlots.push(slot);
        this.holeSlots.add(slot);
        return;
      case "lost":
        claim(r.sector);
        this.corruptSectors.add(r.sector);
        return;
      case "corrupt":
        if (r.sector === undefined)
          throw corruptError(`slots.meta entry ${slot} is damaged and names no sector`);
        this.logger.warn({ slot, sector: r.sector }, "slot metadata entry fails its checksum");
        claim(r.sector);
        this.corruptSectors.add(r.sector);
        return;
    }
  }

  /** Replays the current epoch's records in order; see the module comment for torn tail vs corruption. */
  private async replayJournal(): Promise<void> {
    const recordCount = Math.max(
      0,
      Math.floor((this.journalFileBytes - JOURNAL_RECORDS_OFFSET) / RECORD_BYTES),
    );
    const reader = new JournalReader(this.journal, recordCount);
    const lastBatchFirst = await this.scanRecordHeaders(reader);
    // Records of an epoch are written only after its header is durable: an intact record of an
    // epoch newer than the header says means the newest header copy was damaged.
    for (const epoch of lastBatchFirst.keys()) {
      if (epoch > this.epoch) {
        this.logger.warn({ header: String(this.epoch), records: String(epoch) }, "journal header damaged");
        this.epoch = epoch;
      }
    }
    const lastFirst = lastBatchFirst.get(this.epoch) ?? -1;
    let batch: ApplyItem[] = [];
    let batchFirst = 0;
    let batchCount = 0;
    let seq = 0;
    for (; seq < recordCount; seq++) {
      const { buf, offset } = await reader.get(seq);
      const r = decodeRecord(buf, offset);
      const ours = r.status !== "invalid" && r.header.epoch === this.epoch && r.header.seq === seq;
      if (!(ours && r.status === "valid")) {
        if (lastFirst <= seq) break;
        if (!(ours && r.status === "badData")) {
          throw corruptError(`journal record ${seq} of an acknowledged batch is damaged and names no sector`);
        }
        this.logger.warn({ seq, sector: r.header.sector }, "acknowledged journal record fails its checksum");
      }
      const h = r.header;
      if (batch.length === 0) {
        if (h.batchFirstSeq !== seq)
          throw corruptError(`journal record ${seq} starts in the middle of a batch`);
        batchFirst = seq;
        batchCount = h.batchCount;
      } else if (h.batchFirstSeq !== batchFirst || h.batchCount !== batchCount) {
        throw corruptError(`journal record ${seq} does not belong to the batch at ${batchFirst}`);
      }
      if (r.status === "valid") {
        const dataAt = offset + RECORD_HEADER_BYTES;
        const data = Buffer.from(buf.subarray(dataAt, dataAt + SECTOR_SIZE_BYTES));
        batch.push({ sector: h.sector, ts: h.ts, wr: h.wr, dataCrc: h.dataCrc, data });
      } else {
        batch.push({ sector: h.sector, lost: true });
      }
      if (seq === batchFirst + batchCount - 1) {
        // Into memory, latest per sector; the checkpoint after replay writes them to the slots.
        for (const item of batch) {
          this.noteWritten(item.sector);
          this.dirty.set(item.sector, item);
        }
        this.recoveryStats.replayedRecords += batch.length;
        batch = [];
      }
    }
    // What is left is the last batch, incomplete: it was never synced, so never acknowledged.
    this.recoveryStats.discardedRecords = batch.length;
    if (batch.length > 0 || seq < recordCount) {
      this.logger.info({ seq, discarded: batch.length }, "journal ends with an unsynced batch");
    }
  }

  /**
   * One pass over the record headers. Returns, for each epoch with an intact record, the highest
   * first-seq of a batch of that epoch: a bad record at seq s is followed by a later (hence synced)
   * batch iff that value is > s.
   */
  private async scanRecordHeaders(reader: JournalReader): Promise<Map<bigint, number>> {
    const lastBatchFirst = new Map<bigint, number>();
    for (let seq = 0; seq < reader.recordCount; seq++) {
      const { buf, offset } = await reader.get(seq);
      const r = decodeRecord(buf, offset, false);
      if (r.status !== "valid" || r.header.seq !== seq) continue;
      const { epoch, batchFirstSeq } = r.header;
      lastBatchFirst.set(epoch, Math.max(lastBatchFirst.get(epoch) ?? -1, batchFirstSeq));
    }
    return lastBatchFirst;
  }

  // ---- Failure and shutdown ----------------------------------------------------------------------

  private throwIfUnusable(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new AtomicDiskError("SHUTTING_DOWN", "sector store is closed");
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

  private async closeFiles(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([this.journal.close(), this.slots.close(), this.meta.close()]);
    const rejected = results.find((r) => r.status === "rejected");
    if (rejected !== undefined) throw ioError("close sector store files", rejected.reason);
  }
}

function writeRecordHeaderFor(
  q: QueuedPersist,
  epoch: bigint,
  seq: number,
  first: number,
  count: number,
): void {
  writeRecordHeader(q.record, {
    epoch,
    seq,
    batchFirstSeq: first,
    batchCount: count,
    sector: q.sector,
    ts: q.ts,
    wr: q.wr,
    dataCrc: q.dataCrc,
  });
}
