// Storage benchmark: durable persists/s under concurrency, fsyncs/s, checksum cost, recovery time.
// Run (compiles to a scratch dir, then runs on real files under --dir, default os.tmpdir()):
//   npx tsc --outDir /tmp/ad-bench --rootDir . --module NodeNext --moduleResolution NodeNext \
//     --target ES2022 --skipLibCheck --types node bench/storage_bench.ts
//   cp package.json /tmp/ad-bench/ && ln -sfn "$PWD/node_modules" /tmp/ad-bench/node_modules
//   node /tmp/ad-bench/bench/storage_bench.js [--dir D] [--seconds S] [--concurrency C] [--sectors N]
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { crc32 } from "node:zlib";
import { pino } from "pino";
import { JournalStore } from "../src/storage/journal_store.js";
import { nodeFileSystem } from "../src/storage/node_file_io.js";
import { SECTOR_SIZE_BYTES } from "../src/util/limits.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const logger = pino({ level: "silent" });

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

async function benchThroughput(base: string, seconds: number, concurrency: number): Promise<void> {
  const dir = await mkdtemp(path.join(base, "ad-storage-bench-"));
  try {
    const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger });
    const data = randomBytes(SECTOR_SIZE_BYTES);
    const start = store.stats();
    const deadline = performance.now() + seconds * 1000;
    let done = 0;
    let ts = 0n;
    const latencies: number[] = [];
    const worker = async (id: number) => {
      let i = 0;
      while (performance.now() < deadline) {
        const sector = (id * 1_000_003 + i++ * 7919) % 2 ** 21;
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
      `throughput: ${concurrency} concurrent persists for ${elapsed.toFixed(1)} s: ` +
        `${Math.round(done / elapsed)} durable persists/s, ${Math.round(fsyncs / elapsed)} fsyncs/s, ` +
        `${(done / Math.max(1, batches)).toFixed(1)} records/batch, ${end.checkpointCount - start.checkpointCount} checkpoints, ` +
        `latency p50 ${p(0.5).toFixed(2)} ms p99 ${p(0.99).toFixed(2)} ms, ` +
        `CPU ${((cpu.user + cpu.system) / Math.max(1, done)).toFixed(1)} µs per persist`,
    );
    await store.close();
    const bytes = await dirBytes(dir);
    console.log(
      `space after close: ${store.writtenSectorCount()} sectors, ${bytes} bytes = ` +
        `${(bytes / (store.writtenSectorCount() * SECTOR_SIZE_BYTES)).toFixed(4)} x 4096 per sector`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function benchRecovery(base: string, sectors: number): Promise<void> {
  const dir = await mkdtemp(path.join(base, "ad-storage-recovery-"));
  try {
    const store = await JournalStore.open({ fs: nodeFileSystem, dir, logger });
    const data = randomBytes(SECTOR_SIZE_BYTES);
    for (let first = 0; first < sectors; first += 256) {
      const writes: Promise<void>[] = [];
      for (let s = first; s < Math.min(sectors, first + 256); s++) {
        writes.push(store.persist(s * 101, { ts: 1n, wr: 1, data }));
      }
      await Promise.all(writes);
    }
    // Crash-like stop: the journal still holds the records written since the last checkpoint.
    const journalRecords = store.stats().journalFileBytes;
    await store.abandonForTesting();
    let t = performance.now();
    const crashed = await JournalStore.open({ fs: nodeFileSystem, dir, logger });
    const crashMs = performance.now() - t;
    const rec = crashed.stats().recovery;
    await crashed.close();
    t = performance.now();
    const clean = await JournalStore.open({ fs: nodeFileSystem, dir, logger });
    const cleanMs = performance.now() - t;
    const sample = await clean.load(101 * (sectors - 1));
    if (!sample.data.equals(data)) throw new Error("recovered data differs");
    await clean.close();
    console.log(
      `recovery of ${sectors} written sectors: after a crash ${crashMs.toFixed(0)} ms ` +
        `(${rec.metaEntries} metadata entries, ${rec.replayedRecords} journal records replayed, journal ${journalRecords} bytes); ` +
        `after a clean close ${cleanMs.toFixed(0)} ms`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const base = arg("dir", tmpdir());
benchChecksums();
await benchThroughput(base, Number(arg("seconds", "5")), Number(arg("concurrency", "64")));
await benchThroughput(base, 2, 1);
await benchRecovery(base, Number(arg("sectors", "20000")));
