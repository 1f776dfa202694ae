// Volume over range commands: how requests are cut into runs and RMW pieces, the sector-counting
// window, run locks (no lost bytes, no deadlock) and WRITE_ZEROES writing only non-zero runs.
import { describe, expect, it } from "vitest";
import { MemoryBackend } from "../../src/nbd/memory_backend.js";
import type { SectorBackend } from "../../src/nbd/sector_backend.js";
import { SectorLocks } from "../../src/nbd/sector_locks.js";
import { Semaphore } from "../../src/nbd/semaphore.js";
import { Volume } from "../../src/nbd/volume.js";
import { MAX_RANGE_SECTORS, SECTOR_SIZE_BYTES } from "../../src/util/limits.js";
import { seededRandom } from "../helpers/seeded_random.js";

const S = SECTOR_SIZE_BYTES;

interface Call {
  op: "readSector" | "writeSector" | "readSectors" | "writeSectors" | "zeroMap" | "heldMap" | "heldPages";
  index: number;
  count: number;
}

/**
 * Wraps a MemoryBackend: records every call, tracks the sectors in flight, and optionally delays
 * each call by a seeded random number of macrotask hops (so interleavings vary, yet replay).
 */
class RecordingBackend implements SectorBackend {
  readonly calls: Call[] = [];
  inflight = 0;
  maxInflight = 0;
  constructor(
    readonly inner: MemoryBackend,
    private readonly random?: () => number,
  ) {}
  get sectors(): number {
    return this.inner.sectors;
  }
  readSector(index: number): Promise<Buffer> {
    return this.run({ op: "readSector", index, count: 1 }, () => this.inner.readSector(index));
  }
  writeSector(index: number, data: Buffer): Promise<void> {
    return this.run({ op: "writeSector", index, count: 1 }, () => this.inner.writeSector(index, data));
  }
  readSectors(index: number, count: number): Promise<Buffer> {
    return this.run({ op: "readSectors", index, count }, () => this.inner.readSectors(index, count));
  }
  zeroMap(index: number, count: number): Promise<Buffer> {
    return this.run({ op: "zeroMap", index, count }, () => this.inner.zeroMap(index, count));
  }
  heldMap(index: number, count: number): Promise<Buffer> {
    return this.run({ op: "heldMap", index, count }, () => this.inner.heldMap(index, count));
  }
  heldPages(index: number, count: number): Promise<Buffer> {
    return this.run({ op: "heldPages", index, count }, () => this.inner.heldPages(index, count));
  }
  writeSectors(index: number, data: Buffer): Promise<void> {
    const count = data.length / S;
    return this.run({ op: "writeSectors", index, count }, () => this.inner.writeSectors(index, data));
  }
  async close(): Promise<void> {}
  writes(): Call[] {
    return this.calls.filter((c) => c.op === "writeSector" || c.op === "writeSectors");
  }
  private async run<T>(call: Call, fn: () => Promise<T>): Promise<T> {
    this.calls.push(call);
    // A HELD_MAP or HELD_PAGES carries no sector data, so the gateway's window does not count it.
    const weight = call.op === "heldMap" || call.op === "heldPages" ? 0 : call.count;
    this.inflight += weight;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    try {
      await this.hops();
      // The data moves at a random point of the call, the rest of the delay comes after.
      const result = await fn();
      await this.hops();
      return result;
    } finally {
      this.inflight -= weight;
    }
  }
  private async hops(): Promise<void> {
    if (this.random === undefined) return;
    const n = Math.floor(this.random() * 4);
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  }
}

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = ((seed * 131 + i * 7) % 251) + 1;
  return b;
}

describe("Semaphore with multi-permit acquire", () => {
  it("serves waiters strictly in order, so a big acquire is not starved by later small ones", async () => {
    const sem = new Semaphore(4);
    await sem.acquire(3);
    const order: string[] = [];
    const big = sem.acquire(4).then(() => order.push("big"));
    // One permit is free, but the small acquire queues behind the big one instead of taking it.
    const small = sem.acquire(1).then(() => order.push("small"));
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]);
    sem.release(3);
    await big;
    expect(order).toEqual(["big"]);
    sem.release(4);
    await small;
    expect(order).toEqual(["big", "small"]);
    sem.release(1);
    expect(sem.free).toBe(4);
  });

  it("refuses an acquire of more permits than its capacity", () => {
    const sem = new Semaphore(4);
    expect(() => sem.acquire(5)).toThrow();
    expect(() => sem.acquire(0)).toThrow();
  });
});

describe("SectorLocks over runs", () => {
  it("lets overlapping runs and single-sector locks all finish, each sector held by one at a time", async () => {
    const locks = new SectorLocks();
    const random = seededRandom(7);
    const holders = new Map<number, number>();
    let finished = 0;
    const jobs = Array.from({ length: 200 }, (_, id) => {
      const first = Math.floor(random() * 30);
      const count = 1 + Math.floor(random() * 10);
      return locks.withLocks(first, count, async () => {
        for (let s = first; s < first + count; s++) {
          expect(holders.has(s)).toBe(false);
          holders.set(s, id);
        }
        for (let i = Math.floor(random() * 3); i > 0; i--) await new Promise((r) => setImmediate(r));
        for (let s = first; s < first + count; s++) holders.delete(s);
        finished++;
      });
    });
    await Promise.all(jobs);
    expect(finished).toBe(200);
    expect(locks.size).toBe(0);
  });

  it("grants each sector in arrival order, and a run waits only for the runs it overlaps", async () => {
    const locks = new SectorLocks();
    const order: string[] = [];
    let releaseA!: () => void;
    const a = locks.withLocks(0, 3, async () => {
      order.push("a");
      await new Promise<void>((resolve) => {
        releaseA = resolve;
      });
    });
    const b = locks.withLocks(2, 3, async () => {
      order.push("b");
    });
    const c = locks.withLock(2, async () => {
      order.push("c");
    });
    const d = locks.withLocks(5, 10, async () => {
      order.push("d");
    });
    await d;
    expect(order).toEqual(["a", "d"]);
    releaseA();
    await Promise.all([a, b, c]);
    expect(order).toEqual(["a", "d", "b", "c"]);
    expect(locks.size).toBe(0);
  });
});

describe("Volume over range commands", () => {
  it("sends an aligned write as ceil(sectors / 256) range writes covering exactly its sectors", async () => {
    const backend = new RecordingBackend(new MemoryBackend(16_384));
    const volume = new Volume(backend);
    // 1000 sectors starting at sector 10: runs of 256, 256, 256, 232.
    const data = pattern(1000 * S, 3);
    await volume.write(10 * S, data);
    expect(backend.calls).toEqual([
      { op: "writeSectors", index: 10, count: 256 },
      { op: "writeSectors", index: 266, count: 256 },
      { op: "writeSectors", index: 522, count: 256 },
      { op: "writeSectors", index: 778, count: 232 },
    ]);
    const back = Buffer.alloc(data.length);
    await volume.read(10 * S, data.length, back, 0);
    expect(back.equals(data)).toBe(true);
    expect(backend.calls.slice(4).map((c) => [c.op, c.index, c.count])).toEqual([
      ["readSectors", 10, 256],
      ["readSectors", 266, 256],
      ["readSectors", 522, 256],
      ["readSectors", 778, 232],
    ]);
  });

  it("sends a 32 MiB write as 32 range writes of 256 sectors (1 MiB each), several in flight at once", async () => {
    const backend = new RecordingBackend(new MemoryBackend(16_384), seededRandom(1));
    const volume = new Volume(backend);
    await volume.write(0, Buffer.alloc(32 * 1024 * 1024, 1));
    expect(backend.calls).toHaveLength(32);
    for (const [i, call] of backend.calls.entries()) {
      expect(call).toEqual({ op: "writeSectors", index: i * MAX_RANGE_SECTORS, count: MAX_RANGE_SECTORS });
    }
    expect(backend.maxInflight).toBeGreaterThan(MAX_RANGE_SECTORS);
  });

  it("writes an unaligned span as RMW head + range middle + RMW tail with every byte in place", async () => {
    const inner = new MemoryBackend(1024);
    const before = pattern(600 * S, 9);
    await inner.writeSectors(0, before.subarray(0, 256 * S));
    await inner.writeSectors(256, before.subarray(256 * S, 512 * S));
    await inner.writeSectors(512, before.subarray(512 * S, 600 * S));
    const backend = new RecordingBackend(inner);
    const volume = new Volume(backend);
    const offset = 3 * S + 100;
    const data = pattern(300 * S, 4);
    await volume.write(offset, data);
    // Head sector 3 (bytes 100..), whole sectors 4..302, tail sector 303 (bytes ..100).
    const byPlace = (a: Call, b: Call) => a.index - b.index || a.op.localeCompare(b.op);
    expect([...backend.calls].sort(byPlace)).toEqual([
      { op: "readSector", index: 3, count: 1 },
      { op: "writeSector", index: 3, count: 1 },
      { op: "writeSectors", index: 4, count: 256 },
      { op: "writeSectors", index: 260, count: 43 },
      { op: "readSector", index: 303, count: 1 },
      { op: "writeSector", index: 303, count: 1 },
    ]);
    const expected = Buffer.from(before);
    data.copy(expected, offset);
    const disk = Buffer.alloc(600 * S);
    await volume.read(0, disk.length, disk, 0);
    expect(disk.equals(expected)).toBe(true);
  });

  it("never loses bytes when range writes, RMWs and WRITE_ZEROES overlap (seeded random interleavings)", async () => {
    const sectors = 32;
    for (let seed = 1; seed <= 150; seed++) {
      const random = seededRandom(seed);
      const inner = new MemoryBackend(sectors);
      const initial = pattern(sectors * S, seed);
      await inner.writeSectors(0, initial);
      const backend = new RecordingBackend(inner, random);
      const window = [2, 5, 512][seed % 3]!;
      const volume = new Volume(backend, window);
      // Each op: byte range and the byte it writes (0 for WRITE_ZEROES).
      const ops: Array<{ offset: number; length: number; fill: number }> = [
        { offset: 0, length: 16 * S, fill: 0xa1 },
        { offset: 3 * S + 100, length: 6 * S + 100, fill: 0xb2 },
        { offset: 5 * S + 10, length: 40, fill: 0xc3 },
        { offset: 8 * S, length: 16 * S, fill: 0xd4 },
        { offset: 2 * S + 7, length: 10 * S, fill: 0 },
        { offset: 15 * S - 1, length: 2, fill: 0xe5 },
      ];
      // Start them in a seeded order, each after a seeded number of hops.
      const order = ops.map((op) => ({ op, key: random() }));
      order.sort((a, b) => a.key - b.key);
      await Promise.all(
        order.map(async ({ op }, i) => {
          for (let h = Math.floor(random() * 3) + (i % 2); h > 0; h--)
            await new Promise((r) => setImmediate(r));
          if (op.fill === 0) await volume.writeZeroes(op.offset, op.length);
          else await volume.write(op.offset, Buffer.alloc(op.length, op.fill));
        }),
      );
      const disk = Buffer.alloc(sectors * S);
      await volume.read(0, disk.length, disk, 0);
      for (let sector = 0; sector < sectors; sector++) {
        const got = disk.subarray(sector * S, (sector + 1) * S);
        const touching = ops.filter(
          (op) => op.offset < (sector + 1) * S && op.offset + op.length > sector * S,
        );
        const start = initial.subarray(sector * S, (sector + 1) * S);
        if (!someOrderGives(start, sector, touching, got)) {
          throw new Error(`seed ${seed}: sector ${sector} matches no serial order of its writes`);
        }
      }
    }
  });

  it("keeps the sectors in flight within the window, counting a run of k sectors as k", async () => {
    for (const capacity of [1, 7, 300, 512]) {
      const backend = new RecordingBackend(new MemoryBackend(4096), seededRandom(capacity));
      const volume = new Volume(backend, capacity);
      await Promise.all([
        volume.write(0, Buffer.alloc(1000 * S, 1)),
        volume.write(500 * S + 3, Buffer.alloc(700 * S, 2)),
        volume.writeZeroes(100 * S, 2000 * S),
        volume.read(0, 3000 * S, Buffer.alloc(3000 * S), 0),
        volume.write(1 * S + 1, Buffer.alloc(10, 3)),
      ]);
      expect(backend.maxInflight).toBeLessThanOrEqual(capacity);
      expect(backend.inflight).toBe(0);
      if (capacity === 512) expect(backend.maxInflight).toBeGreaterThan(MAX_RANGE_SECTORS);
    }
  });

  it("zeroes a written, mostly-zero area with zero maps and writes only to its non-zero runs", async () => {
    const inner = new MemoryBackend(2048);
    // Written as zeros first: held, so only a register read (ZERO_MAP) can tell them zero.
    for (let i = 0; i < 1024; i += 256) await inner.writeSectors(i, Buffer.alloc(256 * S));
    await inner.writeSectors(10, Buffer.alloc(2 * S, 1));
    await inner.writeSector(300, Buffer.alloc(S, 2));
    await inner.writeSectors(510, Buffer.alloc(4 * S, 3)); // crosses the run boundary at 512
    await inner.writeSector(1023, Buffer.alloc(S, 4));
    const backend = new RecordingBackend(inner);
    const volume = new Volume(backend);
    await volume.writeZeroes(0, 1024 * S);
    const reads = backend.calls.filter((c) => c.op === "zeroMap");
    expect(reads.map((c) => [c.index, c.count])).toEqual([
      [0, 256],
      [256, 256],
      [512, 256],
      [768, 256],
    ]);
    const writes = backend.writes().map((c) => [c.op, c.index, c.count]);
    expect(writes.sort((a, b) => (a[1] as number) - (b[1] as number))).toEqual([
      ["writeSectors", 10, 2],
      ["writeSectors", 300, 1],
      ["writeSectors", 510, 2],
      ["writeSectors", 512, 2],
      ["writeSectors", 1023, 1],
    ]);
    const disk = Buffer.alloc(1024 * S, 0xff);
    await volume.read(0, disk.length, disk, 0);
    expect(disk.equals(Buffer.alloc(1024 * S))).toBe(true);
  });

  it("skips never-written space with one HELD_PAGES, maps only held pages, and zero-maps only the sectors some write reached", async () => {
    const inner = new MemoryBackend(65_536);
    await inner.writeSectors(10, Buffer.alloc(2 * S, 1));
    await inner.writeSectors(40_000, Buffer.alloc(3 * S)); // written, but as zeros
    const backend = new RecordingBackend(inner);
    const volume = new Volume(backend);
    await volume.writeZeroes(5 * S + 7, 60_000 * S);
    const calls = backend.calls.map((c) => [c.op, c.index, c.count]);
    // Sectors 5..60,005 lie on pages 0..58 (1,024 sectors each).
    expect(calls.filter((c) => c[0] === "heldPages")).toEqual([["heldPages", 0, 59]]);
    // Page 0 from sector 5; page 39 from 8 sectors in multiples before it (39,933 = 5 + 39,928).
    expect(calls.filter((c) => c[0] === "heldMap").sort()).toEqual([
      ["heldMap", 39_933, 40 * 1024 - 39_933],
      ["heldMap", 5, 1024 - 5],
    ]);
    // The two held extents run concurrently: which of their calls comes first is not fixed.
    expect(calls.filter((c) => c[0] !== "heldMap" && c[0] !== "heldPages").sort()).toEqual([
      ["writeSectors", 10, 2],
      ["zeroMap", 10, 2],
      ["zeroMap", 40_000, 3],
    ]);
    const disk = Buffer.alloc(16 * S, 0xff);
    await volume.read(0, disk.length, disk, 0);
    expect(disk.equals(Buffer.alloc(16 * S))).toBe(true);
  });

  it("maps a 16 GiB volume's few written sectors into exact extents, clipped to the asked range", async () => {
    const inner = new MemoryBackend(4 * 1024 * 1024);
    const written = [0, 7, 8, 9, 32_767, 32_768, 1_000_003, 4 * 1024 * 1024 - 1];
    for (const sector of written) await inner.writeSectors(sector, Buffer.alloc(S, 1));
    const volume = new Volume(inner);
    /** The extents by definition: sector by sector, merged, clipped to [offset, end). */
    const naive = (offset: number, end: number) => {
      const out: Array<{ lengthBytes: number; hole: boolean }> = [];
      for (let sector = Math.floor(offset / S); sector * S < end; sector++) {
        const hole = !written.includes(sector);
        const lengthBytes = Math.min(end, (sector + 1) * S) - Math.max(offset, sector * S);
        const last = out[out.length - 1];
        if (last !== undefined && last.hole === hole) last.lengthBytes += lengthBytes;
        else out.push({ lengthBytes, hole });
      }
      return out;
    };
    const size = inner.sectors * S;
    for (const [offset, length] of [
      [0, size],
      [7 * S + 100, 3 * S],
      [S + 1, 40_000 * S],
      [size - 5 * S - 3, 5 * S + 3],
    ] as const) {
      expect(await volume.allocation(offset, length, size, Number.POSITIVE_INFINITY)).toEqual(
        naive(offset, offset + length),
      );
      expect(await volume.allocation(offset, length, size, 3)).toEqual(
        naive(offset, offset + length).slice(0, 3),
      );
      const [first] = await volume.allocation(offset, length, size, 1);
      expect([first]).toEqual(naive(offset, offset + length).slice(0, 1));
    }
  });

  /** `inner` with its HELD_PAGES and HELD_MAP calls counted. */
  const countingMaps = (inner: MemoryBackend) => {
    const counts = { pages: 0, maps: 0 };
    const backend: SectorBackend = Object.create(inner, {
      heldPages: {
        value: async (index: number, count: number) => {
          counts.pages++;
          return inner.heldPages(index, count);
        },
      },
      heldMap: {
        value: async (index: number, count: number) => {
          counts.maps++;
          return inner.heldMap(index, count);
        },
      },
    });
    return { backend, counts };
  };

  it("finds the end of a REQ_ONE hole of 3 million sectors with one HELD_PAGES and a HELD_MAP of the one held page", async () => {
    const inner = new MemoryBackend(4 * 1024 * 1024);
    await inner.writeSectors(4 * 1024 * 1024 - 1, Buffer.alloc(S, 1));
    const { backend, counts } = countingMaps(inner);
    const volume = new Volume(backend);
    const from = 1_000_000 * S;
    const extents = await volume.allocation(from, inner.sectors * S - from, inner.sectors * S, 1);
    expect(extents).toEqual([{ lengthBytes: (4 * 1024 * 1024 - 1 - 1_000_000) * S, hole: true }]);
    expect(counts).toEqual({ pages: 1, maps: 1 });
  });

  it("maps a REQ_ONE range of held pages in rounds that double: a short first extent costs the first round's maps only", async () => {
    const inner = new MemoryBackend(4 * 1024 * 1024);
    // One sector at the start of every page from sector 1,000,448 (page 977) on: every page held.
    for (let sector = 977 * 1024; sector < inner.sectors; sector += 1024)
      await inner.writeSector(sector, Buffer.alloc(S, 1));
    const { backend, counts } = countingMaps(inner);
    const volume = new Volume(backend);
    const from = (977 * 1024 + 1) * S;
    const extents = await volume.allocation(from, inner.sectors * S - from, inner.sectors * S, 1);
    expect(extents).toEqual([{ lengthBytes: 1023 * S, hole: true }]);
    // The first round, HELD_MAP_MAX_SECTORS sectors from `from`, is one or two maps (a map starts on
    // a byte of the bitmap); three million held sectors would have been 96.
    expect(counts.pages).toBe(1);
    expect(counts.maps).toBeLessThanOrEqual(2);
  });

  it("zeroes partial head and tail sectors by RMW and leaves already-zero sectors unwritten", async () => {
    const inner = new MemoryBackend(16);
    await inner.writeSectors(0, Buffer.alloc(16 * S, 9));
    await inner.writeSectors(5, Buffer.alloc(2 * S)); // already zero: no write
    const backend = new RecordingBackend(inner);
    const volume = new Volume(backend);
    await volume.writeZeroes(S + 10, 8 * S);
    expect(backend.writes()).toEqual([
      { op: "writeSector", index: 1, count: 1 },
      { op: "writeSectors", index: 2, count: 3 },
      { op: "writeSectors", index: 7, count: 2 },
      { op: "writeSector", index: 9, count: 1 },
    ]);
    const disk = Buffer.alloc(16 * S);
    await volume.read(0, disk.length, disk, 0);
    const expected = Buffer.alloc(16 * S, 9);
    expected.fill(0, S + 10, 9 * S + 10);
    expect(disk.equals(expected)).toBe(true);
  });

  it("starts no new run after the request's signal aborted and fails with QUORUM_TIMEOUT", async () => {
    const inner = new MemoryBackend(16_384, 5);
    // Written (as zeros), so that zeroing has runs to read.
    for (let i = 0; i < 16_384; i += 256) await inner.writeSectors(i, Buffer.alloc(256 * S));
    const backend = new RecordingBackend(inner);
    const volume = new Volume(backend, 512);
    const controller = new AbortController();
    const zeroing = volume.writeZeroes(0, 16_384 * S, controller.signal);
    await new Promise((r) => setTimeout(r, 12));
    controller.abort();
    await expect(zeroing).rejects.toMatchObject({ code: "QUORUM_TIMEOUT" });
    const started = backend.calls.length;
    await new Promise((r) => setTimeout(r, 30));
    expect(backend.calls.length).toBe(started);
    expect(started).toBeLessThan(16_384 / MAX_RANGE_SECTORS);
  });
});

/** Whether applying `ops` to `start` (one sector) in some order gives exactly `got`. */
function someOrderGives(
  start: Buffer,
  sector: number,
  ops: Array<{ offset: number; length: number; fill: number }>,
  got: Buffer,
): boolean {
  const apply = (order: typeof ops): Buffer => {
    const b = Buffer.from(start);
    for (const op of order) {
      const from = Math.max(op.offset - sector * S, 0);
      const to = Math.min(op.offset + op.length - sector * S, S);
      b.fill(op.fill, from, to);
    }
    return b;
  };
  const permute = (rest: typeof ops, prefix: typeof ops): boolean => {
    if (rest.length === 0) return apply(prefix).equals(got);
    return rest.some((op, i) => permute([...rest.slice(0, i), ...rest.slice(i + 1)], [...prefix, op]));
  };
  return permute(ops, []);
}
