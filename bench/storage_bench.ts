// Storage benchmark on real files: durable persists/s under concurrency (new sectors and random
// overwrites of written ones), 256-sector persistMany/loadMany runs (MB/s, CPU per sector),
// checksum cost, recovery time, space.
// Run (compiles to a scratch dir, then runs on real files under --dir, default os.tmpdir()):
//   npx tsc --outDir /tmp/ad-bench --rootDir . --module NodeNext --moduleResolution NodeNext \
//     --target ES2022 --skipLibCheck --types node bench/storage_bench.ts
//   cp package.json /tmp/ad-bench/ && ln -sfn "$PWD/node_modules" /tmp/ad-bench/node_modules
//   node /tmp/ad-bench/bench/storage_bench.js [--dir D] [--seconds S] [--concurrency C] [--sectors N]
//     [--overwrite-sectors N] [--run-mib M]
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { crc32 } from "node:zlib";
import { pino } from "pino";
import { nodeFileSystem } from "../src/storage/node_file_io.js";
import { SlotStore } from "../src/storage/slot_store.js";
import { SECTOR_SIZE_BYTES } from "../src/util/limits.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const logger = pino({ level: "silent" });
type BenchStore = SlotStore;

function openStore(dir: string): Promise<BenchStore> {
  return SlotStore.open({ fs: nodeFileSystem, dir, logger });
}

/** CRC32C (Castagnoli), table-driven in JS: the portable alternative to zlib's native CRC32. */
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crc32c(buf: Buffer): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function benchChecksums(): void {
  const buf = randomBytes(SECTOR_SIZE_BYTES);
  const variants: [string, () => unknown][] = [
    ["zlib.crc32 (native)", () => crc32(buf)],
    ["sha256 (node:crypto)", () => createHash("sha256").update(buf).digest()],
    ["crc32c (JS table)", () => crc32c(buf)],
  ];
  for (const [name, fn] of variants) {
    for (let i = 0; i < 2000; i++) fn();
    const n = 50_000;
    const t = performance.now();
    for (let i = 0; i < n; i++) fn();
    const us = ((performance.now() - t) * 1000) / n;
    console.log(`checksum ${name}: ${us.toFixed(2)} µs per 4 KiB`);
  }
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(path.join(dir, name))).size;
  return total;
}

async function withDir(name: string, base: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(base, `ad-storage-${name}-`));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `concurrency` workers of single-sector persists for `seconds`; sectors from `sectorFor`. */
async function persistLoop(
  store: BenchStore,
  label: string,
  seconds: number,
  concurrency: number,
  sectorFor: (worker: number, i: number) => number,
): Promise<void> {
  const data = randomBytes(SECTOR_SIZE_BYTES);
  const start = store.stats();
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  let ts = 1n << 40n;
  const latencies: number[] = [];
  const worker = async (id: number) => {
    let i = 0;
    while (performance.now() < deadline) {
      const sector = sectorFor(id, i++);
      const t = performance.now();
      await store.persist(sector, { ts: ++ts, wr: 1, data });
      latencies.push(performance.now() - t);
      done++;
    }
  };
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, (_, id) => worker(id)));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const end = store.stats();
  latencies.sort((a, b) => a - b);
  const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  const fsyncs = end.fsyncCount - start.fsyncCount;
  const batches = end.batchCount - start.batchCount;
  console.log(
    `${label}: ${concurrency} concurrent persists for ${elapsed.toFixed(1)} s: ` +
      `${Math.round(done / elapsed)} durable persists/s, ${Math.round(fsyncs / elapsed)} fsyncs/s, ` +
      `${(done / Math.max(1, batches)).toFixed(1)} sectors/batch, ` +
      `latency p50 ${p(0.5).toFixed(2)} ms p99 ${p(0.99).toFixed(2)} ms, ` +
      `CPU ${((cpu.user + cpu.system) / Math.max(1, done)).toFixed(1)} µs per persist`,
  );
}

async function benchNewSectors(base: string, seconds: number, concurrency: number): Promise<void> {
  await withDir("new", base, async (dir) => {
    const store = await openStore(dir);
    await persistLoop(
      store,
      "new sectors",
      seconds,
      concurrency,
      (id, i) => (id * 1_000_003 + i * 7919) % 2 ** 21,
    );
    await store.close();
    const bytes = await dirBytes(dir);
    console.log(
      `space after close: ${store.writtenSectorCount()} sectors, ${bytes} bytes = ` +
        `${(bytes / (store.writtenSectorCount() * SECTOR_SIZE_BYTES)).toFixed(4)} x 4096 per sector`,
    );
  });
}

/** Writes sectors from..from+count-1 as runs of 256 with persistMany, `inFlight` runs at a time. */
async function writeRuns(
  store: BenchStore,
  count: number,
  inFlight: number,
  ts: bigint,
  from = 0,
): Promise<void> {
  const data = randomBytes(SECTOR_SIZE_BYTES);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const first = next;
      next = Math.min(count, next + 256);
      const items = [];
      for (let s = first; s < next; s++) items.push({ sectorIndex: from + s, state: { ts, wr: 1, data } });
      await store.persistMany(items);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
}

async function benchRuns(base: string, runMib: number): Promise<void> {
  await withDir("runs", base, async (dir) => {
    const store = await openStore(dir);
    const sectors = runMib * 256;
    for (const inFlight of [1, 4]) {
      // Sectors of the 4-in-flight phases come after those of the 1-in-flight ones.
      const from = inFlight === 1 ? 0 : sectors;
      for (const [label, ts] of [
        ["new sectors", BigInt(inFlight)],
        ["overwrites", BigInt(inFlight) + 10n],
      ] as const) {
        const start = store.stats();
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        await writeRuns(store, sectors, inFlight, ts, from);
        const s = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        const batches = store.stats().batchCount - start.batchCount;
        console.log(
          `persistMany(256) x ${sectors / 256}, ${inFlight} in flight, ${label}: ${(runMib / s).toFixed(0)} MiB/s, ` +
            `${(sectors / Math.max(1, batches)).toFixed(0)} sectors/batch, ` +
            `CPU ${((cpu.user + cpu.system) / sectors).toFixed(2)} µs per sector`,
        );
      }
    }
    // loadMany after a reopen: served from the file (page cache), not from memory.
    await store.close();
    const reopened = await openStore(dir);
    for (const inFlight of [1, 4]) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      let next = 0;
      const worker = async () => {
        while (next < sectors) {
          const first = next;
          next = Math.min(sectors, next + 256);
          const list = [];
          for (let k = first; k < next; k++) list.push(k);
          const states = await reopened.loadMany(list);
          if (states.some((st) => st === null || st.data.length !== SECTOR_SIZE_BYTES))
            throw new Error("bad read");
        }
      };
      await Promise.all(Array.from({ length: inFlight }, worker));
      const s = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      console.log(
        `loadMany(256) x ${sectors / 256}, ${inFlight} in flight: ${(runMib / s).toFixed(0)} MiB/s, ` +
          `CPU ${((cpu.user + cpu.system) / sectors).toFixed(2)} µs per sector`,
      );
    }
    await reopened.close();
  });
}

async function benchOverwrites(
  base: string,
  seconds: number,
  concurrency: number,
  count: number,
): Promise<void> {
  await withDir("overwrite", base, async (dir) => {
    const store = await openStore(dir);
    await writeRuns(store, count, 4, 1n);
    const random = (() => {
      let x = 0x9e3779b9;
      return () => {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        return (x >>> 0) / 2 ** 32;
      };
    })();
    await persistLoop(store, `random overwrites of ${count} written sectors`, seconds, concurrency, () =>
      Math.floor(random() * count),
    );
    await store.close();
  });
}

async function benchRecovery(base: string, sectors: number): Promise<void> {
  await withDir("recovery", base, async (dir) => {
    const store = await openStore(dir);
    const data = randomBytes(SECTOR_SIZE_BYTES);
    for (let first = 0; first < sectors; first += 256) {
      const writes: Promise<void>[] = [];
      for (let s = first; s < Math.min(sectors, first + 256); s++) {
        writes.push(store.persist(s * 101, { ts: 1n, wr: 1, data }));
      }
      await Promise.all(writes);
    }
    await store.close();
    const t = performance.now();
    const again = await openStore(dir);
    const ms = performance.now() - t;
    const sample = await again.load(101 * (sectors - 1));
    if (!sample.data.equals(data)) throw new Error("recovered data differs");
    await again.close();
    console.log(`recovery of ${sectors} written sectors: ${ms.toFixed(0)} ms`);
  });
}

const base = arg("dir", tmpdir());
const seconds = Number(arg("seconds", "5"));
const concurrency = Number(arg("concurrency", "64"));
benchChecksums();
await benchNewSectors(base, seconds, concurrency);
await benchNewSectors(base, 2, 1);
await benchOverwrites(base, seconds, concurrency, Number(arg("overwrite-sectors", "65536")));
await benchRuns(base, Number(arg("run-mib", "256")));
await benchRecovery(base, Number(arg("sectors", "20000")));
