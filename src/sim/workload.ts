// Clients issuing reads and writes of unique values to a few hot sectors, each through a randomly
// chosen live coordinator, one operation at a time per client. When a coordinator crashes, its
// operations stay unanswered forever (they may or may not have taken effect) and their clients
// move on to new operations.
//
// With rangeMaxSectors > 1 the hot sectors are consecutive and some operations cover a run of
// them (one range command). A range operation enters the history as one operation per sector,
// invoked together and answered together: each sector is its own register, so each sector's
// history must be linearizable on its own.
import { assert } from "../util/assert.js";
import type { EventQueue } from "./event_queue.js";
import type { History, HistoryOp } from "./history.js";
import type { Prng } from "./prng.js";
import type { Trace } from "./trace.js";

export interface WorkloadParams {
  clientCount: number;
  sectors: readonly number[];
  readFraction: number;
  thinkMaxUs: number;
  /** Longest run of one operation (1: single-sector operations only; sectors must be consecutive). */
  rangeMaxSectors: number;
}

export interface WorkloadPort {
  /** A live replica to coordinate the next operation, or null if none is up. */
  pickCoordinator(): number | null;
  /**
   * Hands an operation to its coordinator: one history op per sector of its run, in sector order,
   * all with the same kind and coordinator.
   */
  submit(run: HistoryOp[]): void;
}

const RETRY_NO_COORDINATOR_US = 20_000;

export class Workload {
  private nextValueId = 1;
  private issuing = false;
  /** The operation (its per-sector history ops) each client waits for, if any. */
  private readonly current: (HistoryOp[] | null)[];

  constructor(
    private readonly params: WorkloadParams,
    private readonly rng: Prng,
    private readonly queue: EventQueue,
    private readonly trace: Trace,
    private readonly history: History,
    private readonly port: WorkloadPort,
  ) {
    this.current = Array.from({ length: params.clientCount }, () => null);
  }

  start(): void {
    this.issuing = true;
    for (let client = 0; client < this.params.clientCount; client++) this.scheduleNext(client);
  }

  /** No new operations from now on; those in flight carry on. */
  stopIssuing(): void {
    this.issuing = false;
  }

  /**
   * The durability check at the end: every sector is read through every given coordinator (live
   * replicas), so a replica that forgot an acknowledged state cannot hide behind the others.
   */
  issueFinalReads(clientBase: number, coordinators: readonly number[]): HistoryOp[] {
    if (coordinators.length === 0) throw new Error("final reads need a live replica");
    const ops: HistoryOp[] = [];
    for (const sectorIndex of this.params.sectors) {
      for (const coordinator of coordinators) {
        const op = this.history.invoke(
          { client: clientBase + ops.length, sectorIndex, kind: "read", coordinator },
          this.queue.nowUs,
        );
        this.trace.record(
          this.queue.nowUs,
          `invoke op ${op.id} final read s${sectorIndex} via r${coordinator}`,
        );
        this.port.submit([op]);
        ops.push(op);
      }
    }
    return ops;
  }

  /** The run's answer; readValues has one value per sector for reads. */
  answered(run: HistoryOp[], readValues: number[] | undefined): void {
    for (const [i, op] of run.entries()) {
      const readValue = readValues?.[i];
      this.history.complete(op, this.queue.nowUs, readValue);
      this.trace.record(
        this.queue.nowUs,
        `answer op ${op.id} ${op.kind}${op.kind === "read" ? ` -> v${readValue}` : ` v${op.value}`}`,
      );
    }
    this.release(run);
  }

  /** The coordinator crashed: the run gets no answer. */
  lost(run: HistoryOp[]): void {
    this.trace.record(this.queue.nowUs, `lost op ${run.map((op) => op.id).join(",")}`);
    this.release(run);
  }

  private release(run: HistoryOp[]): void {
    const client = run[0]!.client;
    if (this.current[client] === run) {
      this.current[client] = null;
      this.scheduleNext(client);
    }
  }

  private scheduleNext(client: number): void {
    this.queue.after(this.rng.range(0, this.params.thinkMaxUs), () => this.issue(client));
  }

  private issue(client: number): void {
    if (!this.issuing || this.current[client] !== null) return;
    const coordinator = this.port.pickCoordinator();
    if (coordinator === null) {
      this.queue.after(RETRY_NO_COORDINATOR_US, () => this.issue(client));
      return;
    }
    const { sectors, rangeMaxSectors } = this.params;
    let first = this.rng.int(sectors.length);
    let count = 1;
    if (rangeMaxSectors > 1 && sectors.length > 1 && this.rng.chance(0.5)) {
      count = this.rng.range(2, Math.min(rangeMaxSectors, sectors.length));
      first = this.rng.int(sectors.length - count + 1);
    }
    const isRead = this.rng.chance(this.params.readFraction);
    const run: HistoryOp[] = [];
    for (let i = 0; i < count; i++) {
      const sectorIndex = sectors[first + i]!;
      if (i > 0) assert(sectorIndex === run[0]!.sectorIndex + i, "range workloads use consecutive sectors");
      const op = isRead
        ? this.history.invoke({ client, sectorIndex, kind: "read", coordinator }, this.queue.nowUs)
        : this.history.invoke(
            { client, sectorIndex, kind: "write", coordinator, value: this.nextValueId++ },
            this.queue.nowUs,
          );
      run.push(op);
      this.trace.record(
        this.queue.nowUs,
        `invoke op ${op.id} c${client} ${op.kind}${isRead ? "" : ` v${op.value}`} s${sectorIndex}${count > 1 ? ` (run of ${count})` : ""} via r${coordinator}`,
      );
    }
    this.current[client] = run;
    this.port.submit(run);
  }
}
