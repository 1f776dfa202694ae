// Shared by the SlotStore crash tests (not a test file itself): run a workload over a simulated
// disk that crashes at a chosen I/O operation (optionally again during recovery), then check the
// recovered store against what was persisted and acknowledged.
import { expect } from "vitest";
import type { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import type { SectorState } from "../../src/storage/sector_state.js";
import { SlotStore } from "../../src/storage/slot_store.js";
import { CrashingDisk, stateOf as makeState, sameState, silentLogger } from "./storage_test_support.js";

export const DIR = "/replica/data";
/**
 * Options of the opens after a crash: small growth chunks, since the in-memory disk copies whole
 * files around (a 4 MiB default chunk per case would be most of the test's time).
 */
const REOPEN = { dir: DIR, logger: silentLogger, growthSlots: 64 } as const;

export interface History {
  /** Highest version persist was called with, per sector. */
  called: Map<number, number>;
  /** Highest version whose persist resolved, per sector. */
  acked: Map<number, number>;
  /** The scenario's store, once open (runCase reads how many batches were in flight at the crash). */
  store?: SlotStore;
}

export type Scenario = (fs: MemoryFileSystem, h: History) => Promise<void>;

export interface Workload {
  scenario: Scenario;
  sectors: readonly number[];
  maxVersion: number;
  /** Datasyncs take a few event-loop turns (CrashingDisk), so batches overlap. */
  slowSyncs?: boolean;
}

const states = new Map<string, SectorState>();

/** stateOf, memoized: thousands of cases write and compare the same few hundred states. */
export function stateOf(sector: number, version: number): SectorState {
  const key = `${sector}/${version}`;
  let state = states.get(key);
  if (state === undefined) {
    state = makeState(sector, version);
    states.set(key, state);
  }
  return state;
}

/** Which version of `sector` the state is (stateOf(s, v) has ts = v), or -1 if none (or corrupt: null). */
export function versionOf(sector: number, state: SectorState | null, maxVersion: number): number {
  if (state === null) return -1;
  const v = Number(state.ts);
  return v <= maxVersion && sameState(state, stateOf(sector, v)) ? v : -1;
}

export function persist(store: SlotStore, h: History, sector: number, version: number): Promise<void> {
  h.called.set(sector, Math.max(h.called.get(sector) ?? 0, version));
  return store.persist(sector, stateOf(sector, version)).then(() => {
    h.acked.set(sector, Math.max(h.acked.get(sector) ?? 0, version));
  });
}

/** persistMany of distinct sectors, each with its own version. */
export function persistMany(
  store: SlotStore,
  h: History,
  sectors: readonly number[],
  versions: number | readonly number[],
): Promise<void> {
  const v = (i: number) => (typeof versions === "number" ? versions : versions[i]!);
  for (const [i, s] of sectors.entries()) h.called.set(s, Math.max(h.called.get(s) ?? 0, v(i)));
  const items = sectors.map((s, i) => ({ sectorIndex: s, state: stateOf(s, v(i)) }));
  return store.persistMany(items).then(() => {
    for (const [i, s] of sectors.entries()) h.acked.set(s, Math.max(h.acked.get(s) ?? 0, v(i)));
  });
}

export const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

/** I/O operations the workload makes when nothing crashes (with this seed's completion order). */
export async function countOperations(workload: Workload, seed: number): Promise<number> {
  const disk = new CrashingDisk({
    seed,
    tornWrites: false,
    crashAt: 0,
    slowSyncs: workload.slowSyncs ?? false,
  });
  await workload.scenario(disk.fs, { called: new Map(), acked: new Map() });
  return disk.operations;
}

/**
 * Checks a recovered store against the history; returns each sector's version. Violations are
 * collected and asserted once (thousands of cases: one expect per sector would dominate the time).
 */
async function checkRecovered(
  store: SlotStore,
  workload: Workload,
  h: History,
  context: string,
): Promise<Map<number, number>> {
  const { sectors, maxVersion } = workload;
  const found = new Map<number, number>();
  const problems: string[] = [];
  const loaded = await store.loadMany(sectors);
  for (const [i, sector] of sectors.entries()) {
    const state = loaded[i] ?? null;
    const v = versionOf(sector, state, maxVersion);
    // load and loadTag agree with loadMany (load on every third sector: reads cost time here).
    const single = i % 3 === 0 ? versionOf(sector, await store.load(sector), maxVersion) : v;
    const tag = await store.loadTag(sector);
    const acked = h.acked.get(sector) ?? 0;
    const called = h.called.get(sector) ?? 0;
    if (v < acked || v > called || single !== v || tag.ts !== state?.ts || tag.wr !== state.wr) {
      problems.push(
        `sector ${sector}: version ${v} (load ${single}, tag ${tag.ts}), acked ${acked}, called ${called}`,
      );
    }
    found.set(sector, v);
  }
  const written = [...found.values()].filter((v) => v > 0).length;
  const st = store.stats();
  if (st.writtenSectors !== written) problems.push(`writtenSectors ${st.writtenSectors}, found ${written}`);
  // No slot leaked: every slot is a sector's current one or free.
  if (st.slotCount - st.freeSlots !== written) problems.push(`${st.slotCount} slots, ${st.freeSlots} free`);
  expect(problems, context).toEqual([]);
  return found;
}

export interface CaseResult {
  crashed: boolean;
  /** The crash hit the second run (recovery) too. */
  recoveryCrashed: boolean;
  /** Batches the scenario's store had in flight when the disk crashed (0 if it did not). */
  inFlightAtCrash: number;
}

export interface CaseOptions {
  /** The I/O operation the disk crashes at (0: never). */
  crashAt: number;
  seed: number;
  tornWrites: boolean;
  /** Crash again at this operation of the first open after the crash (0: never). */
  recoveryCrashAt?: number;
  /** Commit depth of the stores that recover and check (default: the store's default). */
  reopenDepth?: number;
}

/**
 * Runs the workload until the disk crashes at its `crashAt`-th operation (0: never), optionally
 * crashes again at the `recoveryCrashAt`-th operation of the next open, then opens (at
 * `reopenDepth`, which may differ from the depth the workload wrote with) and checks: every sector
 * is a state persisted to it, at least as new as its last acknowledged one. Then the recovered
 * store writes every other sector and is reopened: those are new, the others exactly what recovery
 * found (dropped entries of torn batches must not come back once those batches leave the window
 * recovery checks).
 */
export async function runCase(workload: Workload, options: CaseOptions): Promise<CaseResult> {
  const { crashAt, seed, tornWrites, recoveryCrashAt = 0, reopenDepth } = options;
  const { sectors, maxVersion } = workload;
  const disk = new CrashingDisk({ seed, tornWrites, crashAt, slowSyncs: workload.slowSyncs ?? false });
  const fs = disk.fs;
  const reopen = { fs, ...REOPEN, ...(reopenDepth === undefined ? {} : { commitDepth: reopenDepth }) };
  const h: History = { called: new Map(), acked: new Map() };
  const firstCrash = disk.nextCrash();
  const outcome = await Promise.race([workload.scenario(fs, h).then(() => "done" as const), firstCrash]);
  const inFlightAtCrash = outcome === "crashed" ? (h.store?.stats().batchesInFlight ?? 0) : 0;
  disk.crashPoint = 0;
  const context =
    `crashAt=${crashAt} seed=${seed} torn=${tornWrites} recoveryCrashAt=${recoveryCrashAt} ` +
    `reopenDepth=${reopenDepth} inFlightAtCrash=${inFlightAtCrash}`;
  let recoveryOutcome: "done" | "crashed" = "done";
  if (recoveryCrashAt > 0 && outcome === "crashed") {
    disk.crashPoint = disk.operations + recoveryCrashAt;
    const secondCrash = disk.nextCrash();
    const open = SlotStore.open(reopen).then(async (s) => {
      await s.close();
      return "done" as const;
    });
    recoveryOutcome = await Promise.race([open, secondCrash]);
    disk.crashPoint = 0;
  }
  const store = await SlotStore.open(reopen);
  const found = await checkRecovered(store, workload, h, context);
  const rewritten = sectors.filter((_, i) => i % 2 === 0);
  await store.persistMany(rewritten.map((s) => ({ sectorIndex: s, state: stateOf(s, maxVersion) })));
  await store.close();
  const again = await SlotStore.open(reopen);
  const loaded = await again.loadMany(sectors);
  const changed = sectors.filter((sector, i) => {
    const want = i % 2 === 0 ? maxVersion : found.get(sector);
    return versionOf(sector, loaded[i] ?? null, maxVersion) !== want;
  });
  expect(changed, `${context}: sectors neither as recovered nor as rewritten after a reopen`).toEqual([]);
  expect(again.stats().recovery.droppedEntries, context).toBe(0);
  await again.close();
  return { crashed: outcome === "crashed", recoveryCrashed: recoveryOutcome === "crashed", inFlightAtCrash };
}
