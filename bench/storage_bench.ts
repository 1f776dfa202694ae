// Storage benchmark on real files: durable persists/s under concurrency (new sectors and random
// overwrites of written ones), 256-sector persistMany/loadMany runs (MB/s, CPU per sector),
// checksum cost, recovery time, space.
// Run (compiles to a scratch dir, then runs on real files under --dir, default os.tmpdir()):
//   npx tsc --outDir /tmp/ad-bench --rootDir . --module NodeNext --moduleResolution NodeNext \
//     --target ES2022 --skipLibCheck --types node bench/storage_bench.ts
//   cp package.json /tmp/ad-bench/ && ln -sfn "$PWD/node_modules" /tmp/ad-bench/node_modules
//   node /tmp/ad-bench/bench/storage_bench.js [--dir D] [--seconds S] [--concurrency C] [--sectors N]
//     [--overwrite-sectors N] [--run-mib M] [--depth D] [--paced R1,R2,..]
//     [--only checksums,new,new1,overwrites,runs,recovery,compare,scattered] [--depths 1,2,3,4]
//     [--rounds N] [--window-seconds S] [--random-persists N]
// --depth sets the store's commit depth (batches in flight; default GROUP_COMMIT_DEPTH); --only runs
// just the named phases (new1: new sectors with one persist in flight); --paced the offered rates
// of the open-loop overwrite phases that follow the closed-loop one (default 5000,10000,20000/s).
// A closed loop of C workers with no think time keeps all C in one batch (they all resolve, and
// call again, together), so it cannot show what batches in flight buy; the paced phases can.
// compare (not run by default) measures several depths side by side in alternating windows (see
// benchCompareDepths): the way to compare depths on a disk whose speed drifts. scattered (not run
// by default either): sequential runs after random overwrites and the reverse (benchScattered).
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { crc32 } from "node:zlib";
import { pino } from "pino";
import { nodeFileSystem } from "../src/storage/node_file_io.js";
import { SlotStore } from "../src/storage/slot_store.js";
import { GROUP_COMMIT_DEPTH, SECTOR_SIZE_BYTES } from "../src/util/limits.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const logger = pino({ level: "silent" });
type BenchStore = SlotStore;

const commitDepth = Number(arg("depth", String(GROUP_COMMIT_DEPTH)));

function openStore(dir: string, depth = commitDepth): Promise<BenchStore> {
  return SlotStore.open({ fs: nodeFileSystem, dir, logger, commitDepth: depth });
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

/** `concurrency` workers of single-sector persists for `seconds` (closedWindow), printed. */
async function persistLoop(
  store: BenchStore,
  label: string,
  seconds: number,
  concurrency: number,
  sectorFor: (worker: number, i: number) => number,
): Promise<void> {
  const fsyncs0 = store.stats().fsyncCount;
  const r = await closedWindow(store, seconds, concurrency, sectorFor);
  const fsyncs = store.stats().fsyncCount - fsyncs0;
  const latencies = [...r.latencies].sort((a, b) => a - b);
  const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  console.log(
    `${label}: ${concurrency} concurrent persists for ${r.seconds.toFixed(1)} s: ` +
      `${Math.round(r.done / r.seconds)} durable persists/s, ${Math.round(fsyncs / r.seconds)} fsyncs/s, ` +
      `${(r.done / Math.max(1, r.batches)).toFixed(1)} sectors/batch, ` +
      `${r.maxBatchesInFlight} batches in flight at most, ` +
      `latency p50 ${p(0.5).toFixed(2)} ms p99 ${p(0.99).toFixed(2)} ms, ` +
      `CPU ${(r.cpuUs / Math.max(1, r.done)).toFixed(1)} µs per persist`,
  );
}

/** How often the ticker of the paced phases wakes the event loop. */
const TICK_US = 100;
const TICKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { stop, tickMs } = workerData;
while (Atomics.load(stop, 0) === 0) {
  Atomics.wait(stop, 1, 0, tickMs);
  parentPort.postMessage(0);
}`;

/** What one paced window measured; windows of one configuration add up (mergeWindows). */
interface WindowResult {
  done: number;
  seconds: number;
  /** Per persist, from the call, ms. */
  latencies: number[];
  cpuUs: number;
  batches: number;
  backlogged: number;
  maxBatchesInFlight: number;
}

function mergeWindows(a: WindowResult, b: WindowResult): WindowResult {
  return {
    done: a.done + b.done,
    seconds: a.seconds + b.seconds,
    latencies: a.latencies.concat(b.latencies),
    cpuUs: a.cpuUs + b.cpuUs,
    batches: a.batches + b.batches,
    backlogged: a.backlogged + b.backlogged,
    maxBatchesInFlight: Math.max(a.maxBatchesInFlight, b.maxBatchesInFlight),
  };
}

let pacedTs = 2n << 40n;

/**
 * Open-loop persists: they arrive at `rate` per second whatever the store does (as a replica's
 * arrive from the network, spread in time rather than all at once when a batch completes), at
 * most `cap` in flight (arrivals past it wait in a backlog; latency is counted from the call).
 * A worker thread wakes the event loop every TICK_US (Atomics.wait: finer than timers, which have
 * 1 ms granularity and would make the arrivals periodic bursts, and without spinning the loop,
 * which would distort the CPU figures); each tick issues the arrivals due by then.
 */
async function pacedWindow(
  store: BenchStore,
  seconds: number,
  rate: number,
  cap: number,
  sectorFor: () => number,
): Promise<WindowResult> {
  const data = randomBytes(SECTOR_SIZE_BYTES);
  const start = store.stats();
  let inFlight = 0;
  let issued = 0;
  let done = 0;
  const latencies: number[] = [];
  let backlog = 0;
  let backlogged = 0;
  const issue = () => {
    inFlight++;
    const called = performance.now();
    store.persist(sectorFor(), { ts: ++pacedTs, wr: 1, data }).then(() => {
      latencies.push(performance.now() - called);
      done++;
      inFlight--;
      if (backlog > 0) {
        backlog--;
        issue();
      }
    });
  };
  const stop = new Int32Array(new SharedArrayBuffer(8));
  const ticker = new Worker(TICKER_SOURCE, { eval: true, workerData: { stop, tickMs: TICK_US / 1000 } });
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const end = t0 + seconds * 1000;
  await new Promise<void>((resolve) => {
    ticker.on("message", () => {
      const now = performance.now();
      const due = Math.floor((Math.min(now, end) - t0) * (rate / 1000));
      for (; issued < due; issued++) {
        if (inFlight < cap) issue();
        else {
          backlog++;
          backlogged++;
        }
      }
      if (now >= end) resolve();
    });
  });
  Atomics.store(stop, 0, 1);
  await ticker.terminate();
  while (inFlight > 0 || backlog > 0) await new Promise((r) => setTimeout(r, 1));
  return windowResult(store, start, t0, cpu0, done, latencies, backlogged);
}

/** `concurrency` workers of single persists for `seconds` (a closed loop), as a WindowResult; sectors from `sectorFor(worker, i)`. */
async function closedWindow(
  store: BenchStore,
  seconds: number,
  concurrency: number,
  sectorFor: (worker: number, i: number) => number,
): Promise<WindowResult> {
  const data = randomBytes(SECTOR_SIZE_BYTES);
  const start = store.stats();
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  const latencies: number[] = [];
  const worker = async (id: number) => {
    for (let i = 0; performance.now() < deadline; i++) {
      const t = performance.now();
      await store.persist(sectorFor(id, i), { ts: ++pacedTs, wr: 1, data });
      latencies.push(performance.now() - t);
      done++;
    }
  };
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, (_, id) => worker(id)));
  return windowResult(store, start, t0, cpu0, done, latencies, 0);
}

/** What a window measured, from its start (stats, wall clock, CPU) to now. */
function windowResult(
  store: BenchStore,
  start: ReturnType<BenchStore["stats"]>,
  t0: number,
  cpu0: NodeJS.CpuUsage,
  done: number,
  latencies: number[],
  backlogged: number,
): WindowResult {
  const cpu = process.cpuUsage(cpu0);
  const stats = store.stats();
  return {
    done,
    seconds: (performance.now() - t0) / 1000,
    latencies,
    cpuUs: cpu.user + cpu.system,
    batches: stats.batchCount - start.batchCount,
    backlogged,
    maxBatchesInFlight: stats.maxBatchesInFlight,
  };
}

function printPaced(label: string, rate: number, r: WindowResult): void {
  const latencies = [...r.latencies].sort((a, b) => a - b);
  const p = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  const mean = latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length);
  console.log(
    `${label}: ${rate > 0 ? `${rate} persists/s offered, ` : ""}${Math.round(r.done / r.seconds)}/s done, ` +
      `${(r.done / Math.max(1, r.batches)).toFixed(1)} sectors/batch, ` +
      `${r.maxBatchesInFlight} batches in flight at most (since open), ${r.backlogged} arrivals waited for the cap, ` +
      `latency (from the call) mean ${mean.toFixed(2)} ms p50 ${p(0.5).toFixed(2)} ms ` +
      `p90 ${p(0.9).toFixed(2)} ms p99 ${p(0.99).toFixed(2)} ms, ` +
      `CPU ${(r.cpuUs / Math.max(1, r.done)).toFixed(1)} µs per persist`,
  );
}

/**
 * The commit depths side by side on one disk: one store per depth (each over its own file of
 * `count` written sectors), measured in short windows taken in turn, the order rotated every round,
 * so that the disk's drift (this VM's fdatasyncs vary 2-3x over minutes) hits every depth alike.
 * Per depth: random overwrites by a closed loop of `cap` workers, then paced at each rate (all
 * windows pooled); then 256-sector runs (overwrites) with 1, 4 and 8 in flight (8: 2048 sectors
 * queued, two full batches, which only a depth above 1 writes at once).
 */
async function benchCompareDepths(
  base: string,
  depths: readonly number[],
  rates: readonly number[],
  rounds: number,
  windowSeconds: number,
  count: number,
  cap: number,
): Promise<void> {
  const dirs: string[] = [];
  const stores: BenchStore[] = [];
  try {
    for (const depth of depths) {
      const dir = await mkdtemp(path.join(base, `ad-storage-depth${depth}-`));
      dirs.push(dir);
      const store = await openStore(dir, depth);
      await writeRuns(store, count, 4, 1n);
      stores.push(store);
    }
    let x = 0x9e3779b9;
    const random = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 2 ** 32;
    };
    const paced = new Map<string, WindowResult>();
    const closed = new Map<number, WindowResult>();
    const runs = new Map<string, { mib: number; seconds: number; cpuUs: number }>();
    const runSectors = 8192;
    for (let round = 0; round < rounds; round++) {
      const order = depths.map((_, i) => (i + round) % depths.length);
      for (const i of order) {
        const r = await closedWindow(stores[i]!, windowSeconds, cap, () => Math.floor(random() * count));
        const before = closed.get(depths[i]!);
        closed.set(depths[i]!, before === undefined ? r : mergeWindows(before, r));
      }
      for (const rate of rates) {
        for (const i of order) {
          const r = await pacedWindow(stores[i]!, windowSeconds, rate, cap, () =>
            Math.floor(random() * count),
          );
          const key = `${depths[i]}/${rate}`;
          const before = paced.get(key);
          paced.set(key, before === undefined ? r : mergeWindows(before, r));
        }
      }
      for (const inFlight of [1, 4, 8]) {
        for (const i of order) {
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          await writeRuns(stores[i]!, runSectors, inFlight, BigInt(3 + round));
          const cpu = process.cpuUsage(cpu0);
          const key = `${depths[i]}/${inFlight}`;
          const before = runs.get(key) ?? { mib: 0, seconds: 0, cpuUs: 0 };
          runs.set(key, {
            mib: before.mib + runSectors / 256,
            seconds: before.seconds + (performance.now() - t0) / 1000,
            cpuUs: before.cpuUs + cpu.user + cpu.system,
          });
        }
      }
    }
    for (const depth of depths) {
      printPaced(`depth ${depth}, random overwrites, closed loop of ${cap}`, 0, closed.get(depth)!);
    }
    for (const rate of rates) {
      for (const depth of depths) {
        printPaced(`depth ${depth}, paced random overwrites`, rate, paced.get(`${depth}/${rate}`)!);
      }
    }
    for (const inFlight of [1, 4, 8]) {
      for (const depth of depths) {
        const r = runs.get(`${depth}/${inFlight}`)!;
        console.log(
          `depth ${depth}, persistMany(256) overwrites, ${inFlight} in flight: ` +
            `${(r.mib / r.seconds).toFixed(0)} MiB/s, CPU ${(r.cpuUs / (r.mib * 256)).toFixed(2)} µs per sector`,
        );
      }
    }
  } finally {
    for (const store of stores) await store.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }
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
    for (const [phase, inFlight] of [1, 4, 8].entries()) {
      // Each in-flight count writes its own sectors (new, then overwritten).
      const from = phase * sectors;
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
    for (const rate of paced) {
      const r = await pacedWindow(store, seconds, rate, concurrency, () => Math.floor(random() * count));
      printPaced(`paced random overwrites of ${count} written sectors`, rate, r);
    }
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

/**
 * Sequential runs after random overwrites, and random overwrites after sequential runs: the
 * layouts each leaves behind (scattered free slots; page-cache folios sized by the writes that
 * made them, node_file_io.ts) are what the other pays for. Fills `sectors` with 256-sector runs (4
 * in flight), then `randomPersists` random overwrites (64 in flight), 3 sequential passes and the
 * random overwrites again; CPU split into user and system time, write regions per sector.
 */
async function benchScattered(base: string, sectors: number, randomPersists: number): Promise<void> {
  await withDir("scattered", base, async (dir) => {
    const store = await openStore(dir);
    let ts = 1n;
    const measure = async (label: string, count: number, unit: string, fn: () => Promise<void>) => {
      const calls0 = store.stats().writeCalls;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await fn();
      const s = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const rate =
        unit === "MiB" ? `${(count / 256 / s).toFixed(0)} MiB/s` : `${Math.round(count / s)} persists/s`;
      console.log(
        `scattered, ${label}: ${rate}, CPU per sector user ${(cpu.user / count).toFixed(1)} µs, system ` +
          `${(cpu.system / count).toFixed(1)} µs, ${((store.stats().writeCalls - calls0) / count).toFixed(2)} write regions per sector`,
      );
    };
    const sequential = (label: string) =>
      measure(label, sectors, "MiB", () => writeRuns(store, sectors, 4, ts++));
    const random = (label: string) =>
      measure(label, randomPersists, "persists", async () => {
        const data = randomBytes(SECTOR_SIZE_BYTES);
        let left = randomPersists;
        const worker = async () => {
          while (left-- > 0)
            await store.persist(Math.floor(Math.random() * sectors), { ts: ts++, wr: 1, data });
        };
        await Promise.all(Array.from({ length: 64 }, worker));
      });
    await sequential("fill");
    await random("random overwrites");
    for (let pass = 1; pass <= 3; pass++) await sequential(`sequential pass ${pass}`);
    await random("random overwrites after the passes");
    await store.close();
  });
}

const base = arg("dir", tmpdir());
const seconds = Number(arg("seconds", "5"));
const concurrency = Number(arg("concurrency", "64"));
/** Offered rates of the open-loop overwrite phases (persists/s); none with --paced "". */
const paced = arg("paced", "5000,10000,20000")
  .split(",")
  .filter((r) => r !== "")
  .map(Number);
const only = new Set(arg("only", "checksums,new,new1,overwrites,runs,recovery").split(","));
console.log(`commit depth ${commitDepth}`);
if (only.has("checksums")) benchChecksums();
if (only.has("new")) await benchNewSectors(base, seconds, concurrency);
if (only.has("new1")) await benchNewSectors(base, 2, 1);
if (only.has("overwrites")) {
  await benchOverwrites(base, seconds, concurrency, Number(arg("overwrite-sectors", "65536")));
}
if (only.has("runs")) await benchRuns(base, Number(arg("run-mib", "256")));
if (only.has("recovery")) await benchRecovery(base, Number(arg("sectors", "20000")));
if (only.has("scattered")) {
  await benchScattered(
    base,
    Number(arg("overwrite-sectors", "65536")),
    Number(arg("random-persists", "40000")),
  );
}
if (only.has("compare")) {
  await benchCompareDepths(
    base,
    arg("depths", "1,2,3,4").split(",").map(Number),
    paced,
    Number(arg("rounds", "10")),
    Number(arg("window-seconds", "1")),
    Number(arg("overwrite-sectors", "65536")),
    concurrency,
  );
}
