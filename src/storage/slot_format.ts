// On-disk layout of the shadow-slot sector store (slot_store.ts): one file, `sectors.dat`.
// Big-endian like the wire format; pure functions only (no I/O). Every encoder has a decoder, and
// every decoder rejects damage instead of guessing. Checksums are CRC32 (util/crc32.ts: ~0.4 µs
// per 4 KiB); CRC32 catches every burst error up to 32 bits and misses random damage with
// probability 2^-32.
//
//   offset 0              page 0 (4096 B): file header copies at 0 and 512 (64 B each), zeros
//   groupPosition(g)      group g = one META PAGE (64 entries of 64 B) + 64 DATA SLOTS of 4096 B
//                         groupPosition(g) = 4096 + g * 65 * 4096
//   slot i                in group floor(i / 64): data at groupPosition(g) + 4096 + (i % 64) * 4096,
//                         meta entry at groupPosition(g) + (i % 64) * 64
//
// So the data slots of a group are contiguous, and a run of consecutive slots that crosses groups
// is contiguous apart from one meta page per 64 slots (which a write or read of the run includes).
// Every page is 4096-aligned: whole-page writes never make the kernel read a page first. An entry
// never crosses a 512-byte disk sector, so a torn write leaves each entry wholly old or new.
import { assert } from "../util/assert.js";
import { crc32 } from "../util/crc32.js";
import { MAX_SECTORS, SECTOR_SIZE_BYTES } from "../util/limits.js";

export const SLOT_FILE = "sectors.dat";
/** A creation writes this first and renames it to SLOT_FILE once its header is durable. */
export const SLOT_FILE_TMP = "sectors.dat.tmp";

export const SLOT_FORMAT_VERSION = 1;
export const SLOT_FILE_MAGIC = 0x41445353; // "ADSS"

export const PAGE_BYTES = 4096;
export const SLOT_BYTES = SECTOR_SIZE_BYTES;
export const SLOTS_PER_GROUP = 64;
export const ENTRY_BYTES = 64;
/** One meta page plus its data slots. */
export const GROUP_BYTES = PAGE_BYTES + SLOTS_PER_GROUP * SLOT_BYTES;
export const FIRST_GROUP_OFFSET = PAGE_BYTES;
/** Slot numbers are u32 on disk (2^32 slots = 16 TiB of sector data in one store). */
export const MAX_SLOTS = 0xffff_ffff;

export const FILE_HEADER_BYTES = 64;
/** Second header copy in a different 512-byte disk sector: one torn or rotten sector loses one copy. */
export const HEADER_COPY_OFFSETS = [0, 512] as const;

export function checksum(data: Buffer, start = 0, end = data.length): number {
  return crc32(start === 0 && end === data.length ? data : data.subarray(start, end));
}

export function groupOf(slot: number): number {
  return Math.floor(slot / SLOTS_PER_GROUP);
}

/** File offset of group g's meta page. */
export function groupPosition(group: number): number {
  return FIRST_GROUP_OFFSET + group * GROUP_BYTES;
}

/** File offset of a slot's 4096 data bytes. */
export function slotPosition(slot: number): number {
  return groupPosition(groupOf(slot)) + PAGE_BYTES + (slot % SLOTS_PER_GROUP) * SLOT_BYTES;
}

/** Offset of a slot's entry inside its group's meta page. */
export function entryOffset(slot: number): number {
  return (slot % SLOTS_PER_GROUP) * ENTRY_BYTES;
}

/** Bytes a file needs to hold slots 0..slotCount-1 completely (with their meta pages). */
export function fileBytesForSlots(slotCount: number): number {
  if (slotCount === 0) return FIRST_GROUP_OFFSET;
  return slotPosition(slotCount - 1) + SLOT_BYTES;
}

/** How many slots a file of this size holds completely (a partial slot at the end does not count). */
export function completeSlots(fileBytes: number): number {
  if (fileBytes <= FIRST_GROUP_OFFSET) return 0;
  const group = Math.floor((fileBytes - FIRST_GROUP_OFFSET) / GROUP_BYTES);
  const inGroup = fileBytes - groupPosition(group) - PAGE_BYTES;
  return group * SLOTS_PER_GROUP + Math.max(0, Math.floor(inGroup / SLOT_BYTES));
}

// ---- File header --------------------------------------------------------------------------------
// 0 magic u32 | 4 version u32 | 8 slot bytes u32 | 12 slots per group u32 | 16 entry bytes u32 |
// 20 first group offset u32 | 24 commit depth - 1 u32 | 28..59 zero | 60 crc32(0..59)
// The commit depth is how many batches the store writing the file may have had in flight at once
// (slot_store.ts): recovery checks the data of that many of the newest batches. Stored minus one,
// so a file written one batch at a time has zeros there, as files from before the field did (and
// code from before the field, which assumes depth 1, reads exactly those and refuses the others as
// foreign). Written when the file is created, and rewritten whole (page 0) only when a store opens
// the file with another depth, after recovery and before its first batch, then synced: a torn
// rewrite leaves each copy (its own 512-byte disk sector) wholly old or new, and recovery takes
// the larger depth of the valid copies.

/** Largest commit depth a header may record (far above any useful one: a sanity bound). */
export const MAX_COMMIT_DEPTH = 64;

export type FileHeaderResult =
  | { status: "valid"; commitDepth: number }
  /** Intact (checksum fine) but another file kind, format version or geometry. */
  | { status: "foreign"; magic: number; version: number }
  | { status: "corrupt" };

export function encodeFileHeader(commitDepth = 1): Buffer {
  assert(
    Number.isInteger(commitDepth) && commitDepth >= 1 && commitDepth <= MAX_COMMIT_DEPTH,
    "commit depth out of range",
  );
  const buf = Buffer.alloc(FILE_HEADER_BYTES);
  buf.writeUInt32BE(SLOT_FILE_MAGIC, 0);
  buf.writeUInt32BE(SLOT_FORMAT_VERSION, 4);
  buf.writeUInt32BE(SLOT_BYTES, 8);
  buf.writeUInt32BE(SLOTS_PER_GROUP, 12);
  buf.writeUInt32BE(ENTRY_BYTES, 16);
  buf.writeUInt32BE(FIRST_GROUP_OFFSET, 20);
  buf.writeUInt32BE(commitDepth - 1, 24);
  buf.writeUInt32BE(checksum(buf, 0, 60), 60);
  return buf;
}

/** Page 0: both header copies, zeros elsewhere. */
export function encodeHeaderPage(commitDepth = 1): Buffer {
  const page = Buffer.alloc(PAGE_BYTES);
  const header = encodeFileHeader(commitDepth);
  for (const at of HEADER_COPY_OFFSETS) header.copy(page, at);
  return page;
}

export function decodeFileHeader(buf: Buffer, offset = 0): FileHeaderResult {
  if (buf.length - offset < FILE_HEADER_BYTES) return { status: "corrupt" };
  if (buf.readUInt32BE(offset + 60) !== checksum(buf, offset, offset + 60)) return { status: "corrupt" };
  const magic = buf.readUInt32BE(offset);
  const version = buf.readUInt32BE(offset + 4);
  const geometryOk =
    buf.readUInt32BE(offset + 8) === SLOT_BYTES &&
    buf.readUInt32BE(offset + 12) === SLOTS_PER_GROUP &&
    buf.readUInt32BE(offset + 16) === ENTRY_BYTES &&
    buf.readUInt32BE(offset + 20) === FIRST_GROUP_OFFSET;
  const depthMinusOne = buf.readUInt32BE(offset + 24);
  let reservedZero = true;
  for (let i = offset + 28; i < offset + 60; i++) if (buf[i] !== 0) reservedZero = false;
  if (
    magic !== SLOT_FILE_MAGIC ||
    version !== SLOT_FORMAT_VERSION ||
    !geometryOk ||
    !reservedZero ||
    depthMinusOne >= MAX_COMMIT_DEPTH
  ) {
    return { status: "foreign", magic, version };
  }
  return { status: "valid", commitDepth: depthMinusOne + 1 };
}

// ---- Meta entries -------------------------------------------------------------------------------
// 0 kind u32 (USED "ADSU", FREE "ADSF"; an all-zero entry is EMPTY: never used) | 4 slot u32 (the
// entry's own slot: catches misdirected writes) | 8 sector u64 | 16 ts u64 | 24 seq u64 (the batch
// that wrote it, >= 1) | 32 wr u8 | 33..35 zero | 36 dataCrc u32 (crc32 of the slot's 4096 bytes) |
// 40..59 zero | 60 entryCrc u32 = crc32(0..59)
// A FREE entry has kind, slot and seq only (recovery writes them over entries of a torn batch it
// dropped, with that batch's seq, so the highest seq on disk never goes down).

const KIND_USED = 0x41445355; // "ADSU"
const KIND_FREE = 0x41445346; // "ADSF"
const TWO_32 = 2 ** 32;
const ZERO_ENTRY = Buffer.alloc(ENTRY_BYTES);

export interface UsedEntry {
  slot: number;
  sector: number;
  ts: bigint;
  wr: number;
  seq: number;
  dataCrc: number;
}

export type EntryResult =
  | { status: "empty" }
  | { status: "free"; seq: number }
  | { status: "used"; entry: UsedEntry }
  /** Not zero, and not an intact entry of this slot: damage (or a misdirected write). */
  | { status: "corrupt"; reason: string };

function writeU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

function isSlot(slot: number): boolean {
  return Number.isInteger(slot) && slot >= 0 && slot < MAX_SLOTS;
}

function isSeq(seq: number): boolean {
  return Number.isSafeInteger(seq) && seq >= 1;
}

/** Writes a USED entry at `offset` of `out` (a meta page). */
export function encodeUsedEntry(out: Buffer, offset: number, e: UsedEntry): void {
  assert(isSlot(e.slot), "entry slot out of range");
  assert(
    Number.isSafeInteger(e.sector) && e.sector >= 0 && e.sector < MAX_SECTORS,
    "entry sector out of range",
  );
  assert(e.ts >= 0n && e.ts < 1n << 64n, "entry ts must be a u64");
  assert(Number.isInteger(e.wr) && e.wr >= 0 && e.wr <= 255, "entry wr must be a u8");
  assert(isSeq(e.seq), "entry seq must be >= 1");
  out.fill(0, offset, offset + ENTRY_BYTES);
  out.writeUInt32BE(KIND_USED, offset);
  out.writeUInt32BE(e.slot, offset + 4);
  writeU64(out, offset + 8, e.sector);
  out.writeBigUInt64BE(e.ts, offset + 16);
  writeU64(out, offset + 24, e.seq);
  out[offset + 32] = e.wr;
  out.writeUInt32BE(e.dataCrc >>> 0, offset + 36);
  out.writeUInt32BE(checksum(out, offset, offset + 60), offset + 60);
}

/** Writes a FREE entry (see above) at `offset` of `out`. */
export function encodeFreeEntry(out: Buffer, offset: number, slot: number, seq: number): void {
  assert(isSlot(slot), "entry slot out of range");
  assert(isSeq(seq), "entry seq must be >= 1");
  out.fill(0, offset, offset + ENTRY_BYTES);
  out.writeUInt32BE(KIND_FREE, offset);
  out.writeUInt32BE(slot, offset + 4);
  writeU64(out, offset + 24, seq);
  out.writeUInt32BE(checksum(out, offset, offset + 60), offset + 60);
}

export function isEmptyEntry(buf: Buffer, offset: number): boolean {
  return buf.compare(ZERO_ENTRY, 0, ENTRY_BYTES, offset, offset + ENTRY_BYTES) === 0;
}

function reservedZero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Decodes the entry at `offset` of `buf`, which must be slot `expectedSlot`'s. */
export function decodeEntry(buf: Buffer, offset: number, expectedSlot: number): EntryResult {
  if (buf.length - offset < ENTRY_BYTES) return { status: "corrupt", reason: "short entry" };
  if (isEmptyEntry(buf, offset)) return { status: "empty" };
  if (buf.readUInt32BE(offset + 60) !== checksum(buf, offset, offset + 60)) {
    return { status: "corrupt", reason: "entry checksum mismatch" };
  }
  const slot = buf.readUInt32BE(offset + 4);
  if (slot !== expectedSlot) return { status: "corrupt", reason: `entry names slot ${slot}` };
  const seq = readU64(buf, offset + 24);
  if (!isSeq(seq)) return { status: "corrupt", reason: "entry seq out of range" };
  const kind = buf.readUInt32BE(offset);
  if (kind === KIND_FREE) {
    const zeroRest =
      reservedZero(buf, offset + 8, offset + 24) && reservedZero(buf, offset + 32, offset + 60);
    return zeroRest ? { status: "free", seq } : { status: "corrupt", reason: "free entry with fields set" };
  }
  if (kind !== KIND_USED) return { status: "corrupt", reason: "unknown entry kind" };
  const sector = readU64(buf, offset + 8);
  if (!(Number.isSafeInteger(sector) && sector < MAX_SECTORS)) {
    return { status: "corrupt", reason: "entry sector out of range" };
  }
  if (!reservedZero(buf, offset + 33, offset + 36) || !reservedZero(buf, offset + 40, offset + 60)) {
    return { status: "corrupt", reason: "entry reserved bytes set" };
  }
  return {
    status: "used",
    entry: {
      slot,
      sector,
      ts: buf.readBigUInt64BE(offset + 16),
      wr: buf[offset + 32]!,
      seq,
      dataCrc: buf.readUInt32BE(offset + 36),
    },
  };
}

// Field readers for entries known to be USED and intact (the store's in-memory meta pages).
export function entrySector(page: Buffer, offset: number): number {
  return readU64(page, offset + 8);
}

export function entryTs(page: Buffer, offset: number): bigint {
  return page.readBigUInt64BE(offset + 16);
}

export function entryWr(page: Buffer, offset: number): number {
  return page[offset + 32]!;
}

export function entryDataCrc(page: Buffer, offset: number): number {
  return page.readUInt32BE(offset + 36);
}

export function entrySeq(page: Buffer, offset: number): number {
  return readU64(page, offset + 24);
}

/** The entry's kind says USED (its checksum is not checked: for entries validated before). */
export function entryIsUsed(page: Buffer, offset: number): boolean {
  return page.readUInt32BE(offset) === KIND_USED;
}
