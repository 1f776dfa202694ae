// On-disk layouts of the journaled sector store (big-endian, like the wire format). Each encoder
// has a decoder; JournalStore asserts every record decodes right before it writes it and checks
// every record it reads. Checksums are CRC32 (zlib's native one: ~1 µs per 4 KiB, see the report
// in bench/storage_bench.ts); CRC32 catches every burst error up to 32 bits and misses random
// corruption with probability 2^-32.
//
// Files of a store directory:
//   journal     file header copies at 0 and 512, records from JOURNAL_RECORDS_OFFSET
//   slots.dat   file header at 0, then one 4096-byte slot per written sector from SLOT_DATA_OFFSET
//   slots.meta  file header copies at 0 and 512, then one 64-byte entry per slot from META_ENTRIES_OFFSET
import { crc32 } from "node:zlib";
import { assert } from "../util/assert.js";
import { MAX_SECTORS, SECTOR_SIZE_BYTES } from "../util/limits.js";

export const FORMAT_VERSION = 1;

export const JOURNAL_MAGIC = 0x41444a4c; // "ADJL"
export const SLOT_DATA_MAGIC = 0x41445344; // "ADSD"
export const SLOT_META_MAGIC = 0x4144534d; // "ADSM"
const RECORD_MAGIC = 0x41444a52; // "ADJR"
const META_ENTRY_MAGIC = 0x41445345; // "ADSE"

export const FILE_HEADER_BYTES = 64;
/** Second header copy: a different 512-byte disk sector, so one torn or rotten sector loses one copy. */
export const HEADER_COPY_OFFSETS = [0, 512] as const;

export const RECORD_HEADER_BYTES = 64;
export const RECORD_BYTES = RECORD_HEADER_BYTES + SECTOR_SIZE_BYTES;
export const JOURNAL_RECORDS_OFFSET = 1024;

export const SLOT_DATA_OFFSET = 4096;
export const META_ENTRY_BYTES = 64;
export const META_ENTRIES_OFFSET = 1024;

export function checksum(data: Buffer, start = 0, end = data.length): number {
  return crc32(data.subarray(start, end));
}

export function slotDataPosition(slot: number): number {
  return SLOT_DATA_OFFSET + slot * SECTOR_SIZE_BYTES;
}

export function metaEntryPosition(slot: number): number {
  return META_ENTRIES_OFFSET + slot * META_ENTRY_BYTES;
}

export function journalRecordPosition(seq: number): number {
  return JOURNAL_RECORDS_OFFSET + seq * RECORD_BYTES;
}

function isValidSector(sector: number): boolean {
  return Number.isSafeInteger(sector) && sector >= 0 && sector < MAX_SECTORS;
}

function readSector(buf: Buffer, offset: number): number {
  const v = buf.readBigUInt64BE(offset);
  return v < BigInt(MAX_SECTORS) ? Number(v) : -1;
}

// ---- File headers -------------------------------------------------------------------------------
// 0 magic u32 | 4 version u32 | 8 generation u64 | 16 value u64 | 24..59 zero | 60 crc32(0..59)
// generation: the journal epoch (journal) or the checkpoint generation (slots.meta); the copy with
// the highest valid generation wins. value: slots.meta stores the slot count made durable by that
// checkpoint; the others store 0.

export interface FileHeader {
  magic: number;
  generation: bigint;
  value: number;
}

export function encodeFileHeader(header: FileHeader): Buffer {
  const buf = Buffer.alloc(FILE_HEADER_BYTES);
  buf.writeUInt32BE(header.magic, 0);
  buf.writeUInt32BE(FORMAT_VERSION, 4);
  buf.writeBigUInt64BE(header.generation, 8);
  buf.writeBigUInt64BE(BigInt(header.value), 16);
  buf.writeUInt32BE(checksum(buf, 0, 60), 60);
  return buf;
}

export type FileHeaderResult =
  | { status: "valid"; header: FileHeader }
  /** Not this file kind or not this format version (checksum fine): another program's file. */
  | { status: "foreign" }
  | { status: "corrupt" };

export function decodeFileHeader(buf: Buffer, expectedMagic: number): FileHeaderResult {
  if (buf.length < FILE_HEADER_BYTES) return { status: "corrupt" };
  if (buf.readUInt32BE(60) !== checksum(buf, 0, 60)) return { status: "corrupt" };
  if (buf.readUInt32BE(0) !== expectedMagic || buf.readUInt32BE(4) !== FORMAT_VERSION) {
    return { status: "foreign" };
  }
  const value = buf.readBigUInt64BE(16);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) return { status: "corrupt" };
  return {
    status: "valid",
    header: { magic: expectedMagic, generation: buf.readBigUInt64BE(8), value: Number(value) },
  };
}

// ---- Journal records ----------------------------------------------------------------------------
// 0 magic u32 | 4 version u8 | 5..7 zero | 8 epoch u64 | 16 seq u32 | 20 batchFirstSeq u32 |
// 24 batchCount u32 | 28 wr u8 | 29..31 zero | 32 sector u64 | 40 ts u64 | 48 dataCrc u32 |
// 52..59 zero | 60 crc32(0..59) | 64 data (4096)
// The header has its own checksum so that a record with damaged data still names its sector and
// batch; recovery needs both to tell a torn tail from corruption.

export interface RecordHeader {
  epoch: bigint;
  seq: number;
  batchFirstSeq: number;
  batchCount: number;
  sector: number;
  ts: bigint;
  wr: number;
  dataCrc: number;
}

function checkRecordHeader(h: RecordHeader): boolean {
  return (
    isValidSector(h.sector) &&
    Number.isInteger(h.wr) &&
    h.wr >= 0 &&
    h.wr <= 255 &&
    h.ts >= 0n &&
    h.ts < 1n << 64n &&
    h.batchCount >= 1 &&
    h.batchFirstSeq <= h.seq &&
    h.seq < h.batchFirstSeq + h.batchCount &&
    h.batchFirstSeq + h.batchCount <= 0xffffffff
  );
}

/**
 * Writes the header into the first RECORD_HEADER_BYTES of `record`: either a whole record (data
 * already in place) or a header-only buffer whose data is written right after it (writev).
 */
export function writeRecordHeader(record: Buffer, h: RecordHeader): void {
  assert(record.length === RECORD_BYTES || record.length === RECORD_HEADER_BYTES, "journal record size");
  assert(checkRecordHeader(h), "journal record header out of range");
  record.fill(0, 0, RECORD_HEADER_BYTES);
  record.writeUInt32BE(RECORD_MAGIC, 0);
  record.writeUInt8(FORMAT_VERSION, 4);
  record.writeBigUInt64BE(h.epoch, 8);
  record.writeUInt32BE(h.seq, 16);
  record.writeUInt32BE(h.batchFirstSeq, 20);
  record.writeUInt32BE(h.batchCount, 24);
  record.writeUInt8(h.wr, 28);
  record.writeBigUInt64BE(BigInt(h.sector), 32);
  record.writeBigUInt64BE(h.ts, 40);
  record.writeUInt32BE(h.dataCrc >>> 0, 48);
  record.writeUInt32BE(checksum(record, 0, 60), 60);
}

export type RecordResult =
  | { status: "valid"; header: RecordHeader }
  /** Header intact, data fails its checksum: the record names its sector and batch. */
  | { status: "badData"; header: RecordHeader }
  /** Nothing in it can be trusted (torn, corrupt, never written, or another epoch's leftovers). */
  | { status: "invalid" };

/** Decodes the record at `offset` in `buf`; checks the data checksum only if `checkData`. */
export function decodeRecord(buf: Buffer, offset: number, checkData = true): RecordResult {
  if (buf.length - offset < RECORD_BYTES) return { status: "invalid" };
  const result = decodeRecordHeader(buf, offset);
  if (result.status !== "valid" || !checkData) return result;
  const dataStart = offset + RECORD_HEADER_BYTES;
  const ok = checksum(buf, dataStart, dataStart + SECTOR_SIZE_BYTES) === result.header.dataCrc;
  return ok ? result : { status: "badData", header: result.header };
}

/** The header alone (its own checksum and fields); the data checksum is not looked at. */
export function decodeRecordHeader(buf: Buffer, offset: number): RecordResult {
  if (buf.length - offset < RECORD_HEADER_BYTES) return { status: "invalid" };
  if (buf.readUInt32BE(offset + 60) !== checksum(buf, offset, offset + 60)) return { status: "invalid" };
  if (buf.readUInt32BE(offset) !== RECORD_MAGIC || buf.readUInt8(offset + 4) !== FORMAT_VERSION) {
    return { status: "invalid" };
  }
  const header: RecordHeader = {
    epoch: buf.readBigUInt64BE(offset + 8),
    seq: buf.readUInt32BE(offset + 16),
    batchFirstSeq: buf.readUInt32BE(offset + 20),
    batchCount: buf.readUInt32BE(offset + 24),
    wr: buf.readUInt8(offset + 28),
    sector: readSector(buf, offset + 32),
    ts: buf.readBigUInt64BE(offset + 40),
    dataCrc: buf.readUInt32BE(offset + 48),
  };
  if (!checkRecordHeader(header)) return { status: "invalid" };
  return { status: "valid", header };
}

// ---- Slot metadata entries ----------------------------------------------------------------------
// 0 magic u32 | 4 kind u8 (1 used, 2 free, 3 lost) | 5..7 zero | 8 slot u64 | 16 sector u64 | 24 ts u64 |
// 32 wr u8 | 33..35 zero | 36 dataCrc u32 | 40 slot u64 | 48 sector u64 | 56 crc32(40..55) |
// 60 crc32(0..39)
// The second (slot, sector) pair with its own checksum names the sector of an entry whose main
// checksum fails, so that damage is reported for that sector instead of failing the whole store.
// The two checksums cover disjoint bytes: damage in one place never takes out both.

const META_KIND_USED = 1;
const META_KIND_FREE = 2;
/** The sector's last acknowledged state was found damaged: it stays corrupt until written again. */
const META_KIND_LOST = 3;
/** Identity "sector" of a free entry: no real sector (MAX_SECTORS < 2^64 - 1). */
const FREE_IDENTITY = 0xffff_ffff_ffff_ffffn;

export interface MetaEntry {
  slot: number;
  sector: number;
  ts: bigint;
  wr: number;
  dataCrc: number;
}

export type MetaEntryInput =
  | ({ kind: "used" } & MetaEntry)
  | { kind: "free"; slot: number }
  | { kind: "lost"; slot: number; sector: number };

export function encodeMetaEntry(out: Buffer, offset: number, e: MetaEntryInput): void {
  const identity = e.kind === "free" ? FREE_IDENTITY : BigInt(e.sector);
  assert(Number.isSafeInteger(e.slot) && e.slot >= 0, "slot out of range");
  assert(e.kind === "free" || isValidSector(e.sector), "sector out of range");
  const kind = e.kind === "used" ? META_KIND_USED : e.kind === "free" ? META_KIND_FREE : META_KIND_LOST;
  out.fill(0, offset, offset + META_ENTRY_BYTES);
  out.writeUInt32BE(META_ENTRY_MAGIC, offset);
  out.writeUInt8(kind, offset + 4);
  out.writeBigUInt64BE(BigInt(e.slot), offset + 8);
  out.writeBigUInt64BE(identity, offset + 16);
  if (e.kind === "used") {
    assert(e.wr >= 0 && e.wr <= 255 && e.ts >= 0n && e.ts < 1n << 64n, "meta entry tag out of range");
    out.writeBigUInt64BE(e.ts, offset + 24);
    out.writeUInt8(e.wr, offset + 32);
    out.writeUInt32BE(e.dataCrc >>> 0, offset + 36);
  }
  out.writeBigUInt64BE(BigInt(e.slot), offset + 40);
  out.writeBigUInt64BE(identity, offset + 48);
  out.writeUInt32BE(checksum(out, offset + 40, offset + 56), offset + 56);
  out.writeUInt32BE(checksum(out, offset, offset + 40), offset + 60);
}

export type MetaEntryResult =
  | { status: "used"; entry: MetaEntry }
  | { status: "free" }
  /** The sector's state was lost to corruption found earlier. */
  | { status: "lost"; sector: number }
  /** All zero: never written (a slot allocated just before a crash, whose entry did not land). */
  | { status: "empty" }
  /** Damaged; `sector` is set when the identity copy is intact. */
  | { status: "corrupt"; sector?: number };

export function decodeMetaEntry(buf: Buffer, offset: number, expectedSlot: number): MetaEntryResult {
  let allZero = true;
  for (let i = offset; i < offset + META_ENTRY_BYTES; i++) {
    if (buf[i] !== 0) {
      allZero = false;
      break;
    }
  }
  if (allZero) return { status: "empty" };
  const slot = BigInt(expectedSlot);
  const mainOk =
    buf.readUInt32BE(offset + 60) === checksum(buf, offset, offset + 40) &&
    buf.readUInt32BE(offset) === META_ENTRY_MAGIC &&
    buf.readBigUInt64BE(offset + 8) === slot;
  const kind = buf.readUInt8(offset + 4);
  if (mainOk && kind === META_KIND_FREE) return { status: "free" };
  if (mainOk && kind === META_KIND_LOST) {
    const sector = readSector(buf, offset + 16);
    if (sector >= 0) return { status: "lost", sector };
  }
  if (mainOk && kind === META_KIND_USED) {
    const sector = readSector(buf, offset + 16);
    if (sector >= 0) {
      return {
        status: "used",
        entry: {
          slot: expectedSlot,
          sector,
          ts: buf.readBigUInt64BE(offset + 24),
          wr: buf.readUInt8(offset + 32),
          dataCrc: buf.readUInt32BE(offset + 36),
        },
      };
    }
  }
  const idOk =
    buf.readUInt32BE(offset + 56) === checksum(buf, offset + 40, offset + 56) &&
    buf.readBigUInt64BE(offset + 40) === slot;
  if (idOk && buf.readBigUInt64BE(offset + 48) === FREE_IDENTITY) {
    // A damaged free entry: the slot holds nothing anyone needs.
    return { status: "free" };
  }
  const idSector = readSector(buf, offset + 48);
  return idOk && idSector >= 0 ? { status: "corrupt", sector: idSector } : { status: "corrupt" };
}
