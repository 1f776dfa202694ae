import { randomBytes } from "node:crypto";
import { crc32 as zlibCrc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { CRC32_IMPLEMENTATION, crc32 } from "../../src/util/crc32.js";

describe("crc32", () => {
  it("loads the native implementation on this machine (the fast path is what the stores run)", () => {
    expect(CRC32_IMPLEMENTATION).toBe("native");
  });

  it("gives the standard CRC-32 check value", () => {
    expect(crc32(Buffer.from("123456789"))).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
  });

  it("agrees with zlib's crc32 at every size around the native threshold and for whole sectors", () => {
    const data = randomBytes(8192);
    for (const size of [0, 1, 59, 60, 511, 512, 513, 1000, 4095, 4096, 4097, 8192]) {
      for (const start of [0, 1, 7]) {
        const view = data.subarray(start, Math.min(data.length, start + size));
        expect(crc32(view), `size ${view.length} at ${start}`).toBe(zlibCrc32(view));
      }
    }
  });

  it("is unsigned, so stored u32 fields compare equal", () => {
    for (let i = 0; i < 64; i++) {
      const value = crc32(randomBytes(4096));
      expect(Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff).toBe(true);
    }
  });
});
