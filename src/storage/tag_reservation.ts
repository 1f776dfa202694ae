// A replica's durable tag reservation (register core rule 2): every timestamp this replica has ever
// put in a tag of its own is at most the stored value, so after a crash every new own tag can be
// made larger than all of those without the coordinator storing its state before its WRITE_PROCs
// leave. One small file, `tags`, next to the sector store: two copies of a 32-byte record (at 0 and
// 512, different disk sectors) with a generation; a write goes to the copy the newer generation
// names, then fdatasync, so a torn or rotten write loses at most the copy being written and the
// other still holds the previous value (reservations only grow, so an older value is never used
// for a tag it does not cover: the core waits for the new one to be durable before using it).
import * as path from "node:path";
import { assert } from "../util/assert.js";
import { crc32 } from "../util/crc32.js";
import { AtomicDiskError } from "../util/errors.js";
import { componentLogger, type Logger } from "../util/log.js";
import {
  createFileAtomically,
  type FileIo,
  type FileSystemIo,
  io,
  ioError,
  readFully,
  removeLeftover,
} from "./file_io.js";

export const TAG_FILE = "tags";
const TAG_FILE_TMP = "tags.tmp";
const MAGIC = 0x41445452; // "ADTR"
const VERSION = 1;
const RECORD_BYTES = 32;
const COPY_OFFSETS = [0, 512] as const;
const U64_LIMIT = 1n << 64n;

interface TagRecord {
  generation: bigint;
  reservedTs: bigint;
}

export function encodeTagRecord(record: TagRecord): Buffer {
  assert(record.generation >= 0n && record.generation < U64_LIMIT, "generation is a u64");
  assert(record.reservedTs >= 0n && record.reservedTs < U64_LIMIT, "reservation is a u64");
  const buf = Buffer.alloc(RECORD_BYTES);
  buf.writeUInt32BE(MAGIC, 0);
  buf.writeUInt16BE(VERSION, 4);
  buf.writeBigUInt64BE(record.generation, 8);
  buf.writeBigUInt64BE(record.reservedTs, 16);
  buf.writeUInt32BE(crc32(buf.subarray(0, 28)), 28);
  return buf;
}

/** The record at `buf[offset..]`, or null when it is not an intact record of this version. */
export function decodeTagRecord(buf: Buffer, offset = 0): TagRecord | null {
  if (buf.length < offset + RECORD_BYTES) return null;
  if (buf.readUInt32BE(offset) !== MAGIC || buf.readUInt16BE(offset + 4) !== VERSION) return null;
  if (crc32(buf.subarray(offset, offset + 28)) !== buf.readUInt32BE(offset + 28)) return null;
  return { generation: buf.readBigUInt64BE(offset + 8), reservedTs: buf.readBigUInt64BE(offset + 16) };
}

export interface TagReservationOptions {
  fs: FileSystemIo;
  /** The sector store's directory: the file lives next to it, and is created with it. */
  dir: string;
  /** The sector store's file: a directory holding it but no tag file is refused. */
  storeFile: string;
  logger?: Logger;
}

export class TagReservation {
  private durable: bigint;
  private generation: bigint;
  /** Reservations are written one at a time, in call order. */
  private chain: Promise<void> = Promise.resolve();
  private failure: AtomicDiskError | undefined;
  private closed = false;

  private constructor(
    private readonly file: FileIo,
    record: TagRecord,
  ) {
    this.durable = record.reservedTs;
    this.generation = record.generation;
  }

  /**
   * Opens the reservation of the store in `dir`, creating it (0) with a fresh store. Open it
   * BEFORE the sector store: a directory that has a sector store but no tag file is refused, since
   * nothing would bound the tags its replica sent.
   */
  static async open(options: TagReservationOptions): Promise<TagReservation> {
    const { fs, dir } = options;
    const logger = options.logger ?? componentLogger("storage", { dir });
    await io(`create ${dir}`, () => fs.mkdirp(dir));
    const names = new Set(await io("list data directory", () => fs.readdir(dir)));
    const at = (name: string) => path.join(dir, name);
    if (!names.has(TAG_FILE)) {
      if (names.has(options.storeFile)) {
        throw new AtomicDiskError(
          "DATA_DIR_UNUSABLE",
          `${dir} has a sector store but no ${TAG_FILE} file: the timestamps this replica used ` +
            "cannot be bounded, so it could reuse a tag (restore the file, or start the cluster over)",
        );
      }
      await createFileAtomically(
        fs,
        dir,
        { name: TAG_FILE, tmpName: TAG_FILE_TMP, tmpExists: names.has(TAG_FILE_TMP) },
        async (tmp) => {
          const record = encodeTagRecord({ generation: 0n, reservedTs: 0n });
          for (const offset of COPY_OFFSETS) await tmp.write(record, 0, record.length, offset);
        },
      );
      logger.info({ dir }, "created the tag reservation");
    } else if (names.has(TAG_FILE_TMP)) {
      await removeLeftover(fs, dir, TAG_FILE_TMP);
    }
    const file = await io(`open ${TAG_FILE}`, () => fs.open(at(TAG_FILE), { create: false }));
    try {
      const buf = Buffer.alloc(COPY_OFFSETS[1] + RECORD_BYTES);
      const n = await io(`read ${TAG_FILE}`, () => readFully(file, buf, 0, buf.length, 0));
      buf.fill(0, n);
      let best: TagRecord | null = null;
      for (const offset of COPY_OFFSETS) {
        const record = decodeTagRecord(buf, offset);
        if (record !== null && (best === null || record.generation > best.generation)) best = record;
      }
      if (best === null) {
        throw new AtomicDiskError("STORAGE_CORRUPT", `both copies of ${at(TAG_FILE)} are damaged`);
      }
      logger.info({ reservedTs: String(best.reservedTs) }, "tag reservation open");
      return new TagReservation(file, best);
    } catch (err) {
      await file.close().catch(() => {});
      throw err;
    }
  }

  /** The durable reservation: every own tag sent so far has a timestamp at most this. */
  get reservedTs(): bigint {
    return this.durable;
  }

  /** Makes `upToTs` (if higher) the durable reservation; resolves once it is durable. */
  reserve(upToTs: bigint): Promise<void> {
    assert(upToTs >= 0n && upToTs < U64_LIMIT, "reservation is a u64");
    const next = this.chain.then(() => this.write(upToTs));
    // A failure stays in `failure` and fails every later call; the chain itself goes on.
    this.chain = next.catch(() => {});
    return next;
  }

  private async write(upToTs: bigint): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    if (this.closed) throw new AtomicDiskError("SHUTTING_DOWN", "tag reservation is closed");
    if (upToTs <= this.durable) return;
    const generation = this.generation + 1n;
    const record = encodeTagRecord({ generation, reservedTs: upToTs });
    const offset = COPY_OFFSETS[Number(generation % 2n)]!;
    try {
      await io(`write ${TAG_FILE}`, () => this.file.write(record, 0, record.length, offset));
      await io(`sync ${TAG_FILE}`, () => this.file.datasync());
    } catch (err) {
      // After a failed write or sync nothing says what is on disk: stop, as the sector store does.
      this.failure = ioError("tag reservation failed", err);
      throw this.failure;
    }
    this.generation = generation;
    this.durable = upToTs;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.chain;
    this.closed = true;
    await this.file.close();
  }
}
