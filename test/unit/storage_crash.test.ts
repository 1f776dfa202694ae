// Crash at every I/O operation of a scenario (over the simulated disk), then recover: every sector
// must be one of the states persisted to it, at least as new as the last acknowledged one.
import { describe, expect, it } from "vitest";
import { JournalStore } from "../../src/storage/journal_store.js";
import type { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import { RECORD_BYTES } from "../../src/storage/record_format.js";
import { CrashingDisk, seededRandom, silentLogger, stateOf, versionOf } from "./storage_test_support.js";

const DIR = "/replica/data";
const SECTORS = [0, 1, 2, 3, 4, 2 ** 33];
const MAX_VERSION = 8;

interface History {
  /** Highest version persist was called with, per sector. */
  called: Map<number, number>;
  /** Highest version whose persist resolved, per sector. */
  acked: Map<number, number>;
}

function persist(store: JournalStore, h: History, sector: number, version: number): Promise<void> {
  h.called.set(sector, Math.max(h.called.get(sector) ?? 0, version));
  return store.persist(sector, stateOf(sector, version)).then(() => {
    h.acked.set(sector, Math.max(h.acked.get(sector) ?? 0, version));
  });
}

type Scenario = (fs: MemoryFileSystem, h: History) => Promise<void>;

/** Concurrent and sequential persists, several batches, checkpoints (every ~4 records), a close. */
async function scenario(fs: MemoryFileSystem, h: History): Promise<void> {
  const [a, b, c, d, e, f] = SECTORS as [number, number, number, number, number, number];
  const store = await JournalStore.open({
    fs,
    dir: DIR,
    logger: silentLogger,
    journalCheckpointBytes: 4 * RECORD_BYTES,
  });
  await Promise.all([persist(store, h, a, 1), persist(store, h, b, 1), persist(store, h, c, 1)]);
  await Promise.all([persist(store, h, a, 2), persist(store, h, d, 1), persist(store, h, a, 3)]);
  await persist(store, h, b, 2);
  await persist(store, h, f, 1);
  await Promise.all([
    persist(store, h, a, 4),
    persist(store, h, b, 3),
    persist(store, h, c, 2),
    persist(store, h, e, 1),
    persist(store, h, d, 2),
    persist(store, h, a, 5),
  ]);
  await persist(store, h, f, 2);
  await store.close();
}

const FUZZ_SECTORS = [0, 1, 2, 3, 5, 8, 13, 21, 2 ** 35];
const FUZZ_MAX_VERSION = 60;

/** A random workload: random batch limits and checkpoint sizes, rounds of concurrent persists. */
function randomScenario(seed: number): Scenario {
  return async (fs, h) => {
    const random = seededRandom(seed ^ 0x5bd1e995);
    const store = await JournalStore.open({
      fs,
      dir: DIR,
      logger: silentLogger,
      journalCheckpointBytes: (2 + Math.floor(random() * 8)) * RECORD_BYTES,
      groupCommitMaxRecords: 1 + Math.floor(random() * 6),
    });
    const latest = new Map<number, number>();
    for (let round = 0; round < 8; round++) {
      const writes: Promise<void>[] = [];
      const n = 1 + Math.floor(random() * 6);
      for (let i = 0; i < n; i++) {
        const sector = FUZZ_SECTORS[Math.floor(random() * FUZZ_SECTORS.length)]!;
        const v = (latest.get(sector) ?? 0) + 1;
        latest.set(sector, v);
        writes.push(persist(store, h, sector, v));
        if (random() < 0.3) {
          // load serves the latest state, durable or not.
          expect(versionOf(sector, await store.load(sector), FUZZ_MAX_VERSION)).toBe(v);
        }
      }
      await Promise.all(writes);
    }
    if (random() < 0.5) await store.close();
  };
}

interface CaseResult {
  crashed: boolean;
  operations: number;
}

async function runCase(
  crashAt: number,
  seed: number,
  tornWrites: boolean,
  recoveryCrashAt = 0,
  workload: { scenario: Scenario; sectors: number[]; maxVersion: number } = {
    scenario,
    sectors: SECTORS,
    maxVersion: MAX_VERSION,
  },
): Promise<CaseResult> {
  const { sectors, maxVersion } = workload;
  const disk = new CrashingDisk({ seed, tornWrites, crashAt });
  const fs = disk.fs;
  const h: History = { called: new Map(), acked: new Map() };
  const firstCrash = disk.nextCrash();
  const outcome = await Promise.race([workload.scenario(fs, h).then(() => "done" as const), firstCrash]);
  disk.crashPoint = 0;
  if (recoveryCrashAt > 0 && outcome === "crashed") {
    disk.crashPoint = disk.operations + recoveryCrashAt;
    const secondCrash = disk.nextCrash();
    const open = JournalStore.open({ fs, dir: DIR, logger: silentLogger }).then(async (s) => {
      await s.close();
      return "done" as const;
    });
    await Promise.race([open, secondCrash]);
    disk.crashPoint = 0;
  }
  const store = await JournalStore.open({ fs, dir: DIR, logger: silentLogger });
  const context = `crashAt=${crashAt} seed=${seed} torn=${tornWrites} recoveryCrashAt=${recoveryCrashAt}`;
  let written = 0;
  for (const sector of sectors) {
    const v = versionOf(sector, await store.load(sector), maxVersion);
    const where = `${context} sector=${sector} version=${v}`;
    expect(v, where).toBeGreaterThanOrEqual(h.acked.get(sector) ?? 0);
    expect(v, where).toBeLessThanOrEqual(h.called.get(sector) ?? 0);
    if (v > 0) written++;
  }
  expect(store.writtenSectorCount(), context).toBe(written);
  // The recovered store keeps working: a new write to every sector survives a clean reopen.
  await Promise.all(sectors.map((s) => store.persist(s, stateOf(s, maxVersion))));
  await store.close();
  const again = await JournalStore.open({ fs, dir: DIR, logger: silentLogger });
  for (const sector of sectors) {
    expect(versionOf(sector, await again.load(sector), maxVersion), context).toBe(maxVersion);
  }
  await again.close();
  return { crashed: outcome === "crashed", operations: disk.operations };
}

describe("JournalStore crash consistency (simulated disk)", () => {
  it("baseline: the scenario completes and spans many I/O operations and checkpoints", async () => {
    const result = await runCase(0, 1, false);
    expect(result.crashed).toBe(false);
    expect(result.operations).toBeGreaterThan(50);
  });

  it("after a crash at every I/O operation, every sector is an old or new state, never garbage, and every acknowledged persist survives", async () => {
    const total = (await runCase(0, 1, false)).operations;
    let crashes = 0;
    for (let k = 1; k <= total; k++) {
      for (const torn of [false, true]) {
        const r = await runCase(k, k * 7 + (torn ? 1 : 0), torn);
        if (r.crashed) crashes++;
      }
    }
    expect(crashes).toBeGreaterThan(total);
  });

  it("survives a second crash during recovery, at every I/O operation of the recovery", async () => {
    const total = (await runCase(0, 1, false)).operations;
    for (let k = 5; k <= total; k += 11) {
      for (let j = 1; j <= 40; j += 4) await runCase(k, k * 31 + j, true, j);
    }
  });

  it("random workloads crashed at random points recover to an old or new state of every sector", {
    timeout: 600_000,
  }, async () => {
    const workload = (seed: number) => ({
      scenario: randomScenario(seed),
      sectors: FUZZ_SECTORS,
      maxVersion: FUZZ_MAX_VERSION,
    });
    let crashed = 0;
    // STORAGE_FUZZ_SEEDS=5000 for a soak run.
    const seeds = Number(process.env.STORAGE_FUZZ_SEEDS ?? 40);
    for (let seed = 1; seed <= seeds; seed++) {
      const total = (await runCase(0, seed, false, 0, workload(seed))).operations;
      const pick = seededRandom(seed * 977);
      const crashAt = 1 + Math.floor(pick() * total);
      const recoveryCrashAt = pick() < 0.3 ? 1 + Math.floor(pick() * 30) : 0;
      if ((await runCase(crashAt, seed, pick() < 0.7, recoveryCrashAt, workload(seed))).crashed) crashed++;
    }
    expect(crashed).toBeGreaterThan(seeds / 2);
  });
});
