// The durable tag reservation (register core rule 2): a value that only grows, survives crashes at
// any I/O operation with torn writes (never below an acknowledged reservation), is created with a
// fresh store and refused missing from an existing one.
import { mkdir, open, readFile, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { nodeFileSystem } from "../../src/storage/node_file_io.js";
import {
  decodeTagRecord,
  encodeTagRecord,
  TAG_FILE,
  TagReservation,
} from "../../src/storage/tag_reservation.js";
import { isAtomicDiskError } from "../../src/util/errors.js";
import { CrashingDisk, silentLogger, withTempDir } from "./storage_test_support.js";

const STORE_FILE = "sectors.dat";
const openIn = (dir: string, fs = nodeFileSystem) =>
  TagReservation.open({ fs, dir, storeFile: STORE_FILE, logger: silentLogger });

describe("tag reservation on real files", () => {
  it("starts at 0 with a fresh store, only grows, and keeps its value across reopen", async () => {
    await withTempDir(async (dir) => {
      const tags = await openIn(dir);
      expect(tags.reservedTs).toBe(0n);
      await tags.reserve(100n);
      await Promise.all([tags.reserve(50n), tags.reserve(300n), tags.reserve(200n)]);
      expect(tags.reservedTs).toBe(300n);
      await tags.close();
      const again = await openIn(dir);
      expect(again.reservedTs).toBe(300n);
      await again.close();
    });
  });

  it("survives one damaged copy with the other's value, and refuses two damaged copies", async () => {
    await withTempDir(async (dir) => {
      const tags = await openIn(dir);
      await tags.reserve(7n);
      await tags.reserve(9n);
      await tags.close();
      const file = path.join(dir, TAG_FILE);
      const bytes = await readFile(file);
      const copies = [0, 512].map((at) => decodeTagRecord(bytes, at)!);
      const newest = copies[0]!.generation > copies[1]!.generation ? 0 : 512;
      // The copy with the newest generation rots: the older value comes back, never garbage.
      const handle = await open(file, "r+");
      await handle.write(Buffer.from([bytes[newest + 17]! ^ 0xff]), 0, 1, newest + 17);
      await handle.close();
      const older = await openIn(dir);
      expect(older.reservedTs).toBe(7n);
      await older.close();
      const other = newest === 0 ? 512 : 0;
      const again = await open(file, "r+");
      await again.write(Buffer.from([0xee]), 0, 1, other + 20);
      await again.close();
      const err = await openIn(dir).catch((e: unknown) => e);
      expect(isAtomicDiskError(err, "STORAGE_CORRUPT")).toBe(true);
    });
  });

  it("refuses a directory whose sector store exists but whose tag file is gone", async () => {
    await withTempDir(async (dir) => {
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, STORE_FILE), "x");
      const err = await openIn(dir).catch((e: unknown) => e);
      expect(isAtomicDiskError(err, "DATA_DIR_UNUSABLE")).toBe(true);
      expect((err as Error).message).toContain(TAG_FILE);
    });
  });

  it("encodes what it decodes and rejects any flipped byte", () => {
    const record = encodeTagRecord({ generation: 5n, reservedTs: 2n ** 63n + 3n });
    expect(decodeTagRecord(record)).toEqual({ generation: 5n, reservedTs: 2n ** 63n + 3n });
    for (let i = 0; i < record.length; i++) {
      const bad = Buffer.from(record);
      bad[i]! ^= 0x01;
      expect(decodeTagRecord(bad), `byte ${i}`).toBeNull();
    }
  });
});

describe("tag reservation crash consistency (simulated disk)", () => {
  it("after a crash at any I/O operation, with or without torn writes, is at least every acknowledged value", async () => {
    let crashes = 0;
    for (const tornWrites of [false, true]) {
      for (let crashAt = 1; crashAt <= 60; crashAt++) {
        const disk = new CrashingDisk({ seed: crashAt * 7 + (tornWrites ? 1 : 0), tornWrites, crashAt });
        let acked = 0n;
        const crashed = disk.nextCrash();
        const run = (async () => {
          const tags = await openIn("/d", disk.fs);
          for (let v = 1n; v <= 6n; v++) {
            await tags.reserve(v * 1000n);
            acked = v * 1000n;
          }
          return "done" as const;
        })();
        const outcome = await Promise.race([run, crashed]);
        if (outcome === "crashed") crashes++;
        disk.crashPoint = 0;
        const reopened = await openIn("/d", disk.fs);
        expect(reopened.reservedTs >= acked, `crash at ${crashAt}, torn ${tornWrites}`).toBe(true);
        expect(reopened.reservedTs <= 6000n).toBe(true);
        await reopened.reserve(reopened.reservedTs + 1n);
      }
    }
    // The cases really crashed all through creation and the reservations.
    expect(crashes).toBeGreaterThan(40);
  });
});
