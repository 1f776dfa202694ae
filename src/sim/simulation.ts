// One simulated run: N replicas running the real RegisterCore over a simulated network, disks and
// clock; a workload of clients; faults for `steps` events; then a quiet phase (faults stop, a
// majority is up and connected) in which every pending operation must complete within a bounded
// simulated time; then one final read per sector (durability); then the linearizability check.
import type { CoreFaults } from "../register/core_types.js";
import { assert } from "../util/assert.js";
import { SECTOR_SIZE_BYTES } from "../util/limits.js";
import { EventQueue } from "./event_queue.js";
import { drawProfile, type FaultMode, type FaultProfile } from "./fault_profile.js";
import { describeOp, History, type HistoryOp } from "./history.js";
import { checkHistory } from "./linearizability.js";
import { Prng } from "./prng.js";
import { SimDisk } from "./sim_disk.js";
import { SimNetwork } from "./sim_network.js";
import { type ReplicaHooks, SimReplica } from "./sim_replica.js";
import type { SimStorage } from "./sim_storage.js";
import { SlotSimStorage } from "./slot_sim_storage.js";
import { Trace } from "./trace.js";
import { decodeValue, encodeValue } from "./value_codec.js";
import { Workload, type WorkloadParams } from "./workload.js";

export type CoreFaultName = keyof CoreFaults;
export const CORE_FAULT_NAMES: readonly CoreFaultName[] = [
  "skipReadWriteBack",
  "ackBeforeDurable",
  "quorumTooSmall",
  "countDuplicateReplies",
  "ignoreTagFloor",
  "ownDataDespiteNewerTag",
  "misrouteLoadedStates",
];

export type StorageMode = "model" | "slots";

export interface SimOptions {
  seed: number;
  /** Simulated events in the fault phase. */
  steps: number;
  replicaCount: number;
  faults?: FaultMode;
  /** A deliberately broken core (test-only), to prove the simulator catches it. */
  variant?: CoreFaultName;
  storage?: StorageMode;
  /**
   * Test-only sabotage of the simulator itself, to prove its checks can fail: "stallAfterFaults"
   * keeps dropping every message after the faults stop, which must be reported as a liveness bug.
   */
  sabotage?: "stallAfterFaults";
  /** Overrides parts of the seed's fault profile (tests and exploration; not part of the replay). */
  profileOverride?: Partial<FaultProfile>;
  /** Receives every trace line as it happens (--verbose). */
  log?: (line: string) => void;
}

/**
 * duplicate-tag: two replicas (or one, twice) stored different values under one tag of one
 * sector, which register core rule 2 must make impossible (reads could flip between them).
 */
export type ViolationKind = "linearizability" | "liveness" | "torn-read" | "duplicate-tag" | "exception";

export interface SimResult {
  options: SimOptions;
  ok: boolean;
  violation: { kind: ViolationKind; message: string } | null;
  /** sha256 of the full event trace. */
  digest: string;
  stats: {
    events: number;
    simTimeMs: number;
    ops: number;
    answered: number;
    unanswered: number;
    crashes: number;
    /** Load answers (data or tags) that carried more than one sector, as the real driver's do. */
    multiSectorLoads: number;
    messages: number;
    dropped: number;
    duplicated: number;
    /** Entries of an unsynced (possibly torn) last batch that the slot store's recovery dropped. */
    droppedEntries: number;
    /** Crashes of the real slot store's file system with torn writes on. */
    tornWriteCrashes: number;
  };
  traceTail: string[];
  replay: string;
}

/** Simulated time the quiet phase may take to finish every pending operation. */
export const LIVENESS_BOUND_US = 30_000_000;
/** Time for messages still in flight at the end to land before the final reads. */
const DRAIN_US = 1_000_000;

export function replayCommand(options: SimOptions): string {
  const parts = [
    `atomic-disk sim --seed ${options.seed} --steps ${options.steps} --replicas ${options.replicaCount}`,
    `--storage ${options.storage ?? "model"}`,
  ];
  if ((options.faults ?? "all") !== "all") parts.push(`--faults ${options.faults}`);
  if (options.variant !== undefined) parts.push(`--variant ${options.variant}`);
  return parts.join(" ");
}

class ViolationFound extends Error {
  constructor(
    readonly kind: ViolationKind,
    message: string,
  ) {
    super(message);
  }
}

export async function runSimulation(options: SimOptions): Promise<SimResult> {
  const { seed, steps, replicaCount } = options;
  assert(Number.isInteger(steps) && steps >= 0, "steps");
  assert(Number.isInteger(replicaCount) && replicaCount >= 1 && replicaCount <= 254, "replicaCount");
  const storageMode = options.storage ?? "model";
  const root = new Prng(seed);
  const profileRng = root.fork();
  const faultRng = root.fork();
  const networkRng = root.fork();
  const workloadRng = root.fork();
  const profile: FaultProfile = {
    ...drawProfile(profileRng, options.faults ?? "all"),
    ...options.profileOverride,
  };
  const queue = new EventQueue();
  const trace = new Trace(options.log);
  const history = new History();
  /** Operations (per-sector runs) handed to a live coordinator and not yet answered, by token (= first op id). */
  const inFlight = new Map<number, HistoryOp[]>();
  let phase: "faults" | "quiet" = "faults";
  const stayDown = new Set<number>();

  const clientCount = workloadRng.range(2, 6);
  const hotSectors = workloadRng.range(1, 4);
  // Half the runs use range operations: their hot sectors are consecutive.
  const rangeMaxSectors = hotSectors > 1 && workloadRng.chance(0.5) ? workloadRng.range(2, hotSectors) : 1;
  const rangeBase = workloadRng.int(1000);
  const workloadParams: WorkloadParams = {
    clientCount,
    sectors: Array.from({ length: hotSectors }, (_, i) =>
      rangeMaxSectors > 1 ? rangeBase + i : i * 1000 + workloadRng.int(1000),
    ),
    readFraction: workloadRng.pick([0.2, 0.5, 0.7]),
    thinkMaxUs: workloadRng.pick([0, 2_000, 20_000]),
    rangeMaxSectors,
  };

  /** Every tag stored anywhere, per sector: the value it was stored with (null: not a whole value). */
  const valueOfTag = new Map<string, number | null>();
  const hooks: ReplicaHooks = {
    onComplete(rank, token, data) {
      const run = inFlight.get(token);
      assert(
        run !== undefined && run[0]!.coordinator === rank,
        `completion for unknown token ${token} at r${rank}`,
      );
      inFlight.delete(token);
      let readValues: number[] | undefined;
      if (run[0]!.kind === "read") {
        assert(
          data !== undefined && data.length === run.length * SECTOR_SIZE_BYTES,
          "a read returns its run",
        );
        readValues = run.map((op, i) => {
          const decoded = decodeValue(data.subarray(i * SECTOR_SIZE_BYTES, (i + 1) * SECTOR_SIZE_BYTES));
          if (decoded === null) {
            throw new ViolationFound(
              "torn-read",
              `read returned a sector that is no single written value: ${describeOp(op)}`,
            );
          }
          return decoded;
        });
      }
      workload.answered(run, readValues);
    },
    onPersist(rank, items) {
      // Rule 2 directly: one tag of one sector is only ever stored with one value, anywhere.
      for (const { sectorIndex, state } of items) {
        const key = `${sectorIndex}/${state.ts}/${state.wr}`;
        const value = decodeValue(state.data);
        const known = valueOfTag.get(key);
        if (known === undefined) valueOfTag.set(key, value);
        else if (known !== value) {
          throw new ViolationFound(
            "duplicate-tag",
            `r${rank} stored v${value} under tag ${state.ts}.${state.wr} of sector ${sectorIndex}, which already holds v${known}`,
          );
        }
      }
    },
    crashDelayAfterPersistUs() {
      if (phase !== "faults" || !faultRng.chance(profile.crashAfterPersist)) return null;
      return faultRng.range(0, profile.disk.syncMaxUs * 2);
    },
    crashDelayAfterUpdateUs() {
      if (phase !== "faults" || !faultRng.chance(profile.crashAfterUpdate)) return null;
      return faultRng.range(0, profile.selfDelayMaxUs + profile.disk.syncMaxUs);
    },
    crashMidStep() {
      return phase === "faults" && faultRng.chance(profile.crashMidStep);
    },
    faultsActive() {
      return phase === "faults";
    },
    selfDelayUs() {
      return faultRng.range(0, profile.selfDelayMaxUs);
    },
    onCrash(rank) {
      for (const [token, run] of inFlight) {
        if (run[0]!.coordinator !== rank) continue;
        inFlight.delete(token);
        workload.lost(run);
      }
      queue.after(faultRng.range(profile.restartMinUs, profile.restartMaxUs), () => {
        const replica = replicas[rank - 1]!;
        if (replica.isDown && !stayDown.has(rank)) replica.start();
      });
    },
  };

  const makeStorage = (rng: Prng): SimStorage => {
    if (storageMode === "slots") return new SlotSimStorage(queue, rng, profile);
    return new SimDisk(queue, rng, profile.disk);
  };
  const replicas: SimReplica[] = [];
  const storages: SimStorage[] = [];
  for (let rank = 1; rank <= replicaCount; rank++) {
    const storage = makeStorage(root.fork());
    storages.push(storage);
    replicas.push(
      new SimReplica({
        rank,
        replicaCount,
        queue,
        rng: root.fork(),
        trace,
        storage,
        faults: options.variant === undefined ? undefined : { [options.variant]: true },
        cacheCapacitySectors: profile.coreCacheSectors,
        retransmitInitialMs: profile.retransmitInitialMs,
        hooks,
      }),
    );
  }
  const network = new SimNetwork(queue, networkRng, trace, replicas);
  network.faults = profile.network;
  for (const replica of replicas) replica.attach(network);

  const workload = new Workload(workloadParams, workloadRng, queue, trace, history, {
    pickCoordinator() {
      const up = replicas.filter((r) => r.isUp);
      return up.length === 0 ? null : workloadRng.pick(up).rank;
    },
    submit(run) {
      const first = run[0]!;
      inFlight.set(first.id, run);
      const replica = replicas[first.coordinator - 1]!;
      // Single-sector commands reach a replica in batches, as from its sockets in one event-loop
      // turn (the driver's clientBatch); a run goes as one range command, after the batch.
      if (run.length === 1) {
        batchFor(first.coordinator).push(first);
        return;
      }
      flushBatch(first.coordinator);
      // The batch's step may have crashed the coordinator: the run was then reported lost.
      if (!replica.isUp) return;
      const sectorCount = run.length;
      if (first.kind === "read") {
        replica.submit({ kind: "clientRead", token: first.id, sectorIndex: first.sectorIndex, sectorCount });
      } else {
        replica.submit({
          kind: "clientWrite",
          token: first.id,
          sectorIndex: first.sectorIndex,
          sectorCount,
          data: Buffer.concat(run.map((op) => encodeValue(op.value!))),
        });
      }
    },
  });

  /** Single-sector commands waiting for their coordinator's next batch. */
  const batches = new Map<number, HistoryOp[]>();
  const batchFor = (rank: number): HistoryOp[] => {
    let batch = batches.get(rank);
    if (batch === undefined) {
      batch = [];
      batches.set(rank, batch);
      queue.after(workloadRng.range(0, 300), () => flushBatch(rank));
    }
    return batch;
  };
  const flushBatch = (rank: number): void => {
    const batch = batches.get(rank);
    batches.delete(rank);
    const replica = replicas[rank - 1]!;
    // Commands of a coordinator that crashed meanwhile were already reported lost.
    const live = (batch ?? []).filter((op) => inFlight.has(op.id));
    if (live.length === 0 || !replica.isUp) return;
    replica.submit({
      kind: "clientBatch",
      ops: live.map((op) =>
        op.kind === "read"
          ? { kind: "read", token: op.id, sectorIndex: op.sectorIndex }
          : { kind: "write", token: op.id, sectorIndex: op.sectorIndex, data: encodeValue(op.value!) },
      ),
    });
  };

  let partitionEpoch = 0;
  const injectFaults = (): void => {
    if (faultRng.chance(profile.crashPerStep)) {
      const up = replicas.filter((r) => !r.isDown);
      if (up.length > 0) faultRng.pick(up).crash();
    }
    if (replicaCount > 1 && !network.partitioned && faultRng.chance(profile.partitionPerStep)) {
      const ranks = faultRng.shuffle(replicas.map((r) => r.rank));
      const cut = faultRng.range(1, replicaCount - 1);
      network.partition([ranks.slice(0, cut), ranks.slice(cut)]);
      const epoch = ++partitionEpoch;
      queue.after(faultRng.range(profile.partitionMinUs, profile.partitionMaxUs), () => {
        if (epoch === partitionEpoch) network.heal();
      });
    }
  };

  const asyncIo = storageMode === "slots";
  let events = 0;
  const runOne = async (): Promise<boolean> => {
    if (!queue.runNext()) return false;
    events++;
    // Storage completions resolve promises: let every microtask settle before the next event, so
    // the interleaving depends on the event queue only.
    if (asyncIo) {
      let settle = false;
      for (const storage of storages) if (storage.takeSettleNeeded()) settle = true;
      if (settle) await new Promise((resolve) => setImmediate(resolve));
    }
    return true;
  };
  const runUntil = async (done: () => boolean, boundUs: number): Promise<boolean> => {
    const deadlineUs = queue.nowUs + boundUs;
    while (!done()) {
      const next = queue.peekUs();
      if (next === null || next > deadlineUs) return false;
      await runOne();
    }
    return true;
  };

  let violation: SimResult["violation"] = null;
  try {
    for (const replica of replicas) replica.start();
    workload.start();
    for (let step = 0; step < steps; step++) {
      if (!(await runOne())) break;
      injectFaults();
    }

    // Quiet phase: faults stop; a majority (sometimes everyone) comes up, connected.
    phase = "quiet";
    partitionEpoch++;
    workload.stopIssuing();
    network.heal();
    network.faults = {
      ...profile.network,
      dropProbability: options.sabotage === "stallAfterFaults" ? 1 : 0,
      duplicateProbability: 0,
      longDelayProbability: 0,
    };
    const down = replicas.filter((r) => r.isDown).map((r) => r.rank);
    if (faultRng.chance(0.5)) {
      for (const rank of faultRng.shuffle(down).slice(0, Math.floor((replicaCount - 1) / 2)))
        stayDown.add(rank);
    }
    trace.record(queue.nowUs, `quiet; staying down: ${[...stayDown].join(",") || "none"}`);
    for (const replica of replicas) if (replica.isDown && !stayDown.has(replica.rank)) replica.start();

    const drained = await runUntil(() => inFlight.size === 0, LIVENESS_BOUND_US);
    if (!drained) {
      const stuck = [...inFlight.values()].map((run) => `  ${run.map(describeOp).join("; ")}`).join("\n");
      throw new ViolationFound(
        "liveness",
        `${inFlight.size} operations still pending ${LIVENESS_BOUND_US / 1e6} s after faults stopped:\n${stuck}`,
      );
    }
    const drainUntilUs = queue.nowUs + DRAIN_US;
    await runUntil(() => queue.nowUs >= drainUntilUs, DRAIN_US);
    const majority = Math.floor(replicaCount / 2) + 1;
    const majorityUp = await runUntil(
      () => replicas.filter((r) => r.isUp).length >= majority,
      LIVENESS_BOUND_US,
    );
    if (!majorityUp) throw new ViolationFound("liveness", "no majority of replicas came back up");
    const finals = workload.issueFinalReads(
      workloadParams.clientCount,
      replicas.filter((r) => r.isUp).map((r) => r.rank),
    );
    const finished = await runUntil(() => finals.every((op) => op.returnIndex !== null), LIVENESS_BOUND_US);
    if (!finished) {
      throw new ViolationFound(
        "liveness",
        `final reads did not complete within ${LIVENESS_BOUND_US / 1e6} s`,
      );
    }
    const check = checkHistory(history.ops);
    if (!check.ok)
      throw new ViolationFound("linearizability", `sector ${check.sectorIndex}: ${check.reason}`);
  } catch (err) {
    if (err instanceof ViolationFound) violation = { kind: err.kind, message: err.message };
    else violation = { kind: "exception", message: (err as Error).stack ?? String(err) };
    trace.record(queue.nowUs, `violation ${violation.kind}`);
  }

  const answered = history.ops.filter((op) => op.returnIndex !== null).length;
  return {
    options,
    ok: violation === null,
    violation,
    digest: trace.digest(),
    stats: {
      events,
      simTimeMs: Math.round(queue.nowUs / 1000),
      ops: history.ops.length,
      answered,
      unanswered: history.ops.length - answered,
      crashes: replicas.reduce((sum, r) => sum + r.crashCount, 0),
      multiSectorLoads: replicas.reduce((sum, r) => sum + r.multiSectorLoads, 0),
      messages: network.sentCount,
      dropped: network.droppedCount,
      duplicated: network.duplicatedCount,
      droppedEntries: storages.reduce((sum, st) => sum + st.recoveryCounters().droppedEntries, 0),
      tornWriteCrashes: storages.reduce((sum, st) => sum + st.recoveryCounters().tornWriteCrashes, 0),
    },
    traceTail: violation === null ? [] : trace.lastLines(60),
    replay: replayCommand(options),
  };
}
