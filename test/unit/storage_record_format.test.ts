import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  decodeFileHeader,
  decodeMetaEntry,
  decodeRecord,
  encodeFileHeader,
  encodeMetaEntry,
  JOURNAL_MAGIC,
  META_ENTRY_BYTES,
  RECORD_BYTES,
  RECORD_HEADER_BYTES,
  SLOT_META_MAGIC,
  writeRecordHeader,
} from "../../src/storage/record_format.js";

function record(): Buffer {
  const buf = Buffer.alloc(RECORD_BYTES, 0x5a);
  writeRecordHeader(buf, {
    epoch: 7n,
    seq: 12,
    batchFirstSeq: 10,
    batchCount: 4,
    sector: 2 ** 39 + 5,
    ts: 2n ** 63n + 9n,
    wr: 254,
    dataCrc: decodeCrc(buf),
  });
  return buf;
}

function decodeCrc(buf: Buffer): number {
  return crc32(buf.subarray(RECORD_HEADER_BYTES));
}

describe("record formats", () => {
  it("a journal record round-trips, and any flipped header bit makes it invalid", () => {
    const buf = record();
    const r = decodeRecord(buf, 0);
    expect(r.status).toBe("valid");
    if (r.status !== "valid") return;
    expect(r.header).toEqual({
      epoch: 7n,
      seq: 12,
      batchFirstSeq: 10,
      batchCount: 4,
      sector: 2 ** 39 + 5,
      ts: 2n ** 63n + 9n,
      wr: 254,
      dataCrc: r.header.dataCrc,
    });
    for (let bit = 0; bit < RECORD_HEADER_BYTES * 8; bit++) {
      const damaged = Buffer.from(buf);
      damaged[bit >> 3] = damaged[bit >> 3]! ^ (1 << (bit & 7));
      expect(decodeRecord(damaged, 0).status, `bit ${bit}`).toBe("invalid");
    }
    const badData = Buffer.from(buf);
    badData[RECORD_BYTES - 1] = badData[RECORD_BYTES - 1]! ^ 1;
    expect(decodeRecord(badData, 0).status).toBe("badData");
  });

  it("a slot metadata entry never decodes as a different state after any single-byte flip", () => {
    const entry = { kind: "used" as const, slot: 3, sector: 99, ts: 5n, wr: 2, dataCrc: 0xdeadbeef };
    const buf = Buffer.alloc(META_ENTRY_BYTES);
    encodeMetaEntry(buf, 0, entry);
    const ok = decodeMetaEntry(buf, 0, 3);
    expect(ok).toEqual({
      status: "used",
      entry: { slot: 3, sector: 99, ts: 5n, wr: 2, dataCrc: 0xdeadbeef },
    });
    expect(decodeMetaEntry(buf, 0, 4).status).toBe("corrupt");
    for (let byte = 0; byte < META_ENTRY_BYTES; byte++) {
      const damaged = Buffer.from(buf);
      damaged[byte] = damaged[byte]! ^ 0xff;
      const r = decodeMetaEntry(damaged, 0, 3);
      if (r.status === "used") expect(r, `byte ${byte}`).toEqual(ok);
      else expect(r, `byte ${byte}`).toEqual({ status: "corrupt", sector: 99 });
    }
  });

  it("free and lost entries decode as such; zeros are empty", () => {
    const buf = Buffer.alloc(META_ENTRY_BYTES * 3);
    encodeMetaEntry(buf, 0, { kind: "free", slot: 0 });
    encodeMetaEntry(buf, META_ENTRY_BYTES, { kind: "lost", slot: 1, sector: 42 });
    expect(decodeMetaEntry(buf, 0, 0)).toEqual({ status: "free" });
    expect(decodeMetaEntry(buf, META_ENTRY_BYTES, 1)).toEqual({ status: "lost", sector: 42 });
    expect(decodeMetaEntry(buf, 2 * META_ENTRY_BYTES, 2)).toEqual({ status: "empty" });
    // A free entry with damage in its main half is still free, never a corrupt sector 0.
    buf[9] = buf[9]! ^ 0xff;
    expect(decodeMetaEntry(buf, 0, 0)).toEqual({ status: "free" });
  });

  it("file headers tell another file kind (foreign) from damage (corrupt)", () => {
    const h = encodeFileHeader({ magic: JOURNAL_MAGIC, generation: 3n, value: 0 });
    expect(decodeFileHeader(h, JOURNAL_MAGIC)).toEqual({
      status: "valid",
      header: { magic: JOURNAL_MAGIC, generation: 3n, value: 0 },
    });
    expect(decodeFileHeader(h, SLOT_META_MAGIC)).toEqual({ status: "foreign" });
    h[10] = h[10]! ^ 1;
    expect(decodeFileHeader(h, JOURNAL_MAGIC)).toEqual({ status: "corrupt" });
  });
});
