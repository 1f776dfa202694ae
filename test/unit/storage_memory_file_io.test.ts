import { describe, expect, it } from "vitest";
import { readFully } from "../../src/storage/file_io.js";
import { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import { seededRandom } from "./storage_test_support.js";

const dropAll = () => 0;
const keepAll = () => 0.99;

async function contentOf(fs: MemoryFileSystem, p: string): Promise<Buffer> {
  const f = await fs.open(p, { create: false });
  const size = await f.size();
  const buf = Buffer.alloc(size);
  await readFully(f, buf, 0, size, 0);
  await f.close();
  return buf;
}

function settle(): Promise<"pending"> {
  return new Promise((resolve) => setTimeout(() => resolve("pending"), 20));
}

describe("MemoryFileSystem", () => {
  it("reads see writes at once; a crash loses writes that were not synced", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/d");
    const f = await fs.open("/d/a", { create: true });
    await fs.fsyncDir("/d");
    await f.write(Buffer.from("hello"), 0, 5, 0);
    expect((await contentOf(fs, "/d/a")).toString()).toBe("hello");
    fs.crash({ random: dropAll });
    expect((await contentOf(fs, "/d/a")).length).toBe(0);
  });

  it("datasync makes the file's completed writes survive a crash that drops everything pending", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/d");
    const f = await fs.open("/d/a", { create: true });
    await fs.fsyncDir("/d");
    await f.write(Buffer.from("durable"), 0, 7, 0);
    await f.datasync();
    await f.write(Buffer.from("XX"), 0, 2, 0);
    fs.crash({ random: dropAll });
    expect((await contentOf(fs, "/d/a")).toString()).toBe("durable");
  });

  it("a crash may keep pending writes (disks write back on their own)", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/d");
    const f = await fs.open("/d/a", { create: true });
    await fs.fsyncDir("/d");
    await f.write(Buffer.from("kept"), 0, 4, 0);
    fs.crash({ random: keepAll });
    expect((await contentOf(fs, "/d/a")).toString()).toBe("kept");
  });

  it("creations and renames survive a crash only after fsyncDir", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/d");
    const a = await fs.open("/d/a", { create: true });
    await a.datasync();
    fs.crash({ random: dropAll });
    expect(await fs.exists("/d/a")).toBe(false);
    await (await fs.open("/d/b", { create: true })).close();
    await fs.fsyncDir("/d");
    await fs.rename("/d/b", "/d/c");
    fs.crash({ random: dropAll });
    expect(fs.listFiles()).toEqual(["/d/b"]);
    await fs.rename("/d/b", "/d/c");
    await fs.fsyncDir("/d");
    fs.crash({ random: dropAll });
    expect(fs.listFiles()).toEqual(["/d/c"]);
    expect(await fs.readdir("/d")).toEqual(["c"]);
  });

  it("a torn write lands in whole aligned 512-byte blocks, some old and some new", async () => {
    let mixed = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const fs = new MemoryFileSystem();
      await fs.mkdirp("/d");
      const f = await fs.open("/d/a", { create: true });
      await fs.fsyncDir("/d");
      await f.write(Buffer.alloc(4096, 1), 0, 4096, 0);
      await f.datasync();
      await f.write(Buffer.alloc(4096, 2), 0, 4096, 0);
      fs.crash({ random: seededRandom(seed), tornWrites: true });
      const got = await contentOf(fs, "/d/a");
      expect(got.length).toBe(4096);
      const blocks = new Set<number>();
      for (let b = 0; b < 8; b++) {
        const block = got.subarray(b * 512, (b + 1) * 512);
        expect(block.every((x) => x === block[0])).toBe(true);
        blocks.add(block[0]!);
      }
      if (blocks.size === 2) mixed++;
    }
    expect(mixed).toBeGreaterThan(0);
  });

  it("operations of the old incarnation never complete after a crash", async () => {
    const fs = new MemoryFileSystem();
    await fs.mkdirp("/d");
    const f = await fs.open("/d/a", { create: true });
    fs.crash({ random: dropAll });
    const outcome = await Promise.race([f.write(Buffer.from("x"), 0, 1, 0).then(() => "done"), settle()]);
    expect(outcome).toBe("pending");
  });

  it("the schedule hook decides when each operation completes; a crash kills scheduled ones", async () => {
    const held: (() => void)[] = [];
    const fs = new MemoryFileSystem({ schedule: (complete) => held.push(complete) });
    const made = fs.mkdirp("/d");
    expect(held.length).toBe(1);
    held.shift()!();
    await made;
    const opening = fs.open("/d/a", { create: true });
    fs.crash({ random: dropAll });
    held.shift()!();
    expect(await Promise.race([opening.then(() => "done"), settle()])).toBe("pending");
    expect(fs.listFiles()).toEqual([]);
  });

  it("a sync covers only writes that completed before it was issued", async () => {
    const held: (() => void)[] = [];
    let auto = false;
    const fs = new MemoryFileSystem({
      schedule: (complete) => (auto ? queueMicrotask(complete) : held.push(complete)),
    });
    const run = async <T>(p: Promise<T>) => {
      while (held.length > 0) held.shift()!();
      return p;
    };
    await run(fs.mkdirp("/d"));
    const f = await run(fs.open("/d/a", { create: true }));
    await run(fs.fsyncDir("/d"));
    const write = f.write(Buffer.from("late"), 0, 4, 0);
    const sync = f.datasync();
    const [completeWrite, completeSync] = [held.shift()!, held.shift()!];
    completeWrite();
    completeSync();
    await write;
    await sync;
    fs.crash({ random: dropAll });
    auto = true;
    expect((await contentOf(fs, "/d/a")).length).toBe(0);
  });

  it("injected faults fail the operation without effect; corrupt() flips bytes", async () => {
    let fail = false;
    const fs = new MemoryFileSystem({
      injectFault: (op) => (fail && op.kind === "write" ? new Error("EIO") : undefined),
    });
    await fs.mkdirp("/d");
    const f = await fs.open("/d/a", { create: true });
    await f.write(Buffer.from([1, 2, 3]), 0, 3, 0);
    fail = true;
    await expect(f.write(Buffer.from([9]), 0, 1, 0)).rejects.toThrow("EIO");
    fs.corrupt("/d/a", 1, 1);
    expect([...(await contentOf(fs, "/d/a"))]).toEqual([1, 2 ^ 0xff, 3]);
    expect(fs.fileSize("/d/a")).toBe(3);
    expect(fs.totalBytes("/d")).toBe(3);
  });
});
