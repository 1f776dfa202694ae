import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  completeSlots,
  decodeEntry,
  decodeFileHeader,
  ENTRY_BYTES,
  encodeFileHeader,
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
  FILE_HEADER_BYTES,
  fileBytesForSlots,
  GROUP_BYTES,
  groupPosition,
  HEADER_COPY_OFFSETS,
  MAX_COMMIT_DEPTH,
  PAGE_BYTES,
  SLOTS_PER_GROUP,
  slotPosition,
} from "../../src/storage/slot_format.js";

const USED = {
  slot: 70,
  sector: 2 ** 39 + 5,
  ts: 2n ** 63n + 9n,
  wr: 254,
  seq: 2 ** 40 + 3,
  dataCrc: 0xdeadbeef,
};

function usedPage(): Buffer {
  const page = Buffer.alloc(PAGE_BYTES);
  encodeUsedEntry(page, entryOffset(USED.slot), USED);
  return page;
}

describe("slot file layout", () => {
  it("places groups of one meta page + 64 slots after the header page, all 4096-aligned", () => {
    expect(groupPosition(0)).toBe(4096);
    expect(slotPosition(0)).toBe(8192);
    expect(slotPosition(63)).toBe(8192 + 63 * 4096);
    // Slot 63's end is group 1's meta page, and slot 64 follows it: a run crosses groups contiguously.
    expect(slotPosition(63) + 4096).toBe(groupPosition(1));
    expect(slotPosition(64)).toBe(groupPosition(1) + 4096);
    expect(groupPosition(1) - groupPosition(0)).toBe(GROUP_BYTES);
    expect(GROUP_BYTES).toBe(65 * 4096);
    for (const slot of [0, 1, 63, 64, 1000, 2 ** 32 - 2]) expect(slotPosition(slot) % 4096).toBe(0);
    expect(entryOffset(70)).toBe(6 * ENTRY_BYTES);
    // An entry never crosses a 512-byte disk sector.
    for (let e = 0; e < SLOTS_PER_GROUP; e++) {
      const at = entryOffset(e);
      expect(Math.floor(at / 512)).toBe(Math.floor((at + ENTRY_BYTES - 1) / 512));
    }
  });

  it("completeSlots inverts fileBytesForSlots, and a partial slot or meta page does not count", () => {
    for (const n of [0, 1, 2, 63, 64, 65, 127, 128, 129, 5000]) {
      const bytes = fileBytesForSlots(n);
      expect(completeSlots(bytes), `n=${n}`).toBe(n);
      expect(completeSlots(bytes + 1), `n=${n} +1`).toBe(n);
      expect(completeSlots(bytes + 4095), `n=${n} +4095`).toBe(n);
      if (n > 0) expect(completeSlots(bytes - 1), `n=${n} -1`).toBe(n - 1);
    }
    // A meta page alone holds no slot.
    expect(completeSlots(groupPosition(1) + PAGE_BYTES)).toBe(64);
    expect(completeSlots(groupPosition(1) + 100)).toBe(64);
    expect(completeSlots(0)).toBe(0);
  });
});

describe("slot file header", () => {
  it("round-trips, both copies on page 0, and any flipped byte is corrupt", () => {
    const page = encodeHeaderPage();
    expect(page.length).toBe(PAGE_BYTES);
    for (const at of HEADER_COPY_OFFSETS) {
      expect(decodeFileHeader(page, at)).toEqual({ status: "valid", commitDepth: 1 });
    }
    expect(page.subarray(FILE_HEADER_BYTES, 512).every((b) => b === 0)).toBe(true);
    const h = encodeFileHeader();
    for (let byte = 0; byte < FILE_HEADER_BYTES; byte++) {
      const damaged = Buffer.from(h);
      damaged[byte] = damaged[byte]! ^ 0x10;
      expect(decodeFileHeader(damaged).status, `byte ${byte}`).toBe("corrupt");
    }
    expect(decodeFileHeader(Buffer.alloc(FILE_HEADER_BYTES)).status).toBe("corrupt");
  });

  it("records the commit depth minus one: depth 1 leaves the field zero, as in files from before it", () => {
    expect(encodeFileHeader(1).readUInt32BE(24)).toBe(0);
    expect(encodeFileHeader()).toEqual(encodeFileHeader(1));
    for (const depth of [2, 3, MAX_COMMIT_DEPTH]) {
      const page = encodeHeaderPage(depth);
      for (const at of HEADER_COPY_OFFSETS) {
        expect(decodeFileHeader(page, at)).toEqual({ status: "valid", commitDepth: depth });
      }
    }
    expect(() => encodeFileHeader(0)).toThrow();
    expect(() => encodeFileHeader(MAX_COMMIT_DEPTH + 1)).toThrow();
    // An intact header with an absurd depth is another format, not a depth to trust.
    const h = encodeFileHeader();
    h.writeUInt32BE(MAX_COMMIT_DEPTH, 24);
    h.writeUInt32BE(crc32(h.subarray(0, 60)), 60);
    expect(decodeFileHeader(h).status).toBe("foreign");
  });

  it("an intact header of another magic or version is foreign, not corrupt", () => {
    for (const [at, value] of [
      [0, 0x41444a4c],
      [4, 2],
      [8, 512],
      [28, 1],
    ] as const) {
      const h = encodeFileHeader();
      h.writeUInt32BE(value, at);
      h.writeUInt32BE(crc32(h.subarray(0, 60)), 60);
      expect(decodeFileHeader(h).status, `field at ${at}`).toBe("foreign");
    }
  });
});

describe("slot meta entries", () => {
  it("a USED entry round-trips, and its fields read back from the page without decoding", () => {
    const page = usedPage();
    const at = entryOffset(USED.slot);
    expect(decodeEntry(page, at, USED.slot)).toEqual({ status: "used", entry: USED });
    expect(entryIsUsed(page, at)).toBe(true);
    expect(entrySector(page, at)).toBe(USED.sector);
    expect(entrySeq(page, at)).toBe(USED.seq);
    expect(entryTs(page, at)).toBe(USED.ts);
    expect(entryWr(page, at)).toBe(USED.wr);
    expect(entryDataCrc(page, at)).toBe(USED.dataCrc);
    // The other entries of the page are untouched: empty.
    expect(decodeEntry(page, entryOffset(71), 71)).toEqual({ status: "empty" });
    expect(entryIsUsed(page, entryOffset(71))).toBe(false);
  });

  it("any flipped byte of a USED or FREE entry makes it corrupt, never another valid state", () => {
    const page = usedPage();
    const at = entryOffset(USED.slot);
    for (let byte = 0; byte < ENTRY_BYTES; byte++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const damaged = Buffer.from(page);
        damaged[at + byte] = damaged[at + byte]! ^ mask;
        expect(decodeEntry(damaged, at, USED.slot).status, `byte ${byte} mask ${mask}`).toBe("corrupt");
      }
    }
    const free = Buffer.alloc(ENTRY_BYTES);
    encodeFreeEntry(free, 0, 9, 17);
    expect(decodeEntry(free, 0, 9)).toEqual({ status: "free", seq: 17 });
    expect(entryIsUsed(free, 0)).toBe(false);
    for (let byte = 0; byte < ENTRY_BYTES; byte++) {
      const damaged = Buffer.from(free);
      damaged[byte] = damaged[byte]! ^ 0x04;
      expect(decodeEntry(damaged, 0, 9).status, `free byte ${byte}`).toBe("corrupt");
    }
  });

  it("an intact entry read at another slot (a misdirected write) is corrupt", () => {
    const page = usedPage();
    const at = entryOffset(USED.slot);
    expect(decodeEntry(page, at, USED.slot + 64)).toMatchObject({ status: "corrupt" });
    const free = Buffer.alloc(ENTRY_BYTES);
    encodeFreeEntry(free, 0, 3, 1);
    expect(decodeEntry(free, 0, 4)).toMatchObject({ status: "corrupt" });
  });

  it("zeros decode as empty; a valid checksum over bad fields is still rejected", () => {
    expect(decodeEntry(Buffer.alloc(ENTRY_BYTES), 0, 0)).toEqual({ status: "empty" });
    const bad = (mutate: (b: Buffer) => void) => {
      const page = usedPage();
      const at = entryOffset(USED.slot);
      const e = page.subarray(at, at + ENTRY_BYTES);
      mutate(e);
      e.writeUInt32BE(crc32(e.subarray(0, 60)), 60);
      return decodeEntry(page, at, USED.slot).status;
    };
    expect(bad((e) => e.writeUInt32BE(0x12345678, 0))).toBe("corrupt"); // unknown kind
    expect(bad((e) => e.writeBigUInt64BE(2n ** 41n, 8))).toBe("corrupt"); // sector past MAX_SECTORS
    expect(bad((e) => e.writeBigUInt64BE(0n, 24))).toBe("corrupt"); // seq 0
    expect(bad((e) => e.writeUInt8(1, 45))).toBe("corrupt"); // reserved byte
    expect(bad(() => {})).toBe("used"); // the harness itself re-encodes a valid entry
  });

  it("encoders refuse out-of-range fields (assertions, not silent truncation)", () => {
    const page = Buffer.alloc(PAGE_BYTES);
    expect(() => encodeUsedEntry(page, 0, { ...USED, wr: 256 })).toThrow();
    expect(() => encodeUsedEntry(page, 0, { ...USED, ts: 1n << 64n })).toThrow();
    expect(() => encodeUsedEntry(page, 0, { ...USED, seq: 0 })).toThrow();
    expect(() => encodeUsedEntry(page, 0, { ...USED, sector: 2 ** 40 })).toThrow();
    expect(() => encodeUsedEntry(page, 0, { ...USED, slot: 2 ** 32 })).toThrow();
    expect(() => encodeFreeEntry(page, 0, 1, 0)).toThrow();
  });
});
