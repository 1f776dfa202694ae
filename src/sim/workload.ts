// Clients issuing reads and writes of unique values to a few hot sectors, each through a randomly
// chosen live coordinator, one operation at a time per client. When a coordinator crashes, its
// operations stay unanswered forever (they may or may not have taken effect) and their clients
// move on to new operations.
import type { EventQueue } from "./event_queue.js";
import type { History, HistoryOp } from "./history.js";
import type { Prng } from "./prng.js";
import type { Trace } from "./trace.js";

export interface WorkloadParams {
  clientCount: number;
  sectors: readonly number[];
  readFraction: number;
  thinkMaxUs: number;
}

export interface WorkloadPort {
  /** A live replica to coordinate the next operation, or null if none is up. */
  pickCoordinator(): number | null;
  /** Hands the operation to its coordinator (op.coordinator). */
  submit(op: HistoryOp): void;
}

const RETRY_NO_COORDINATOR_US = 20_000;

export class Workload {
  private nextValueId = 1;
  private issuing = false;
  /** The operation each client waits for, if any. */
  private readonly current: (HistoryOp | null)[];

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
        this.port.submit(op);
        ops.push(op);
      }
    }
    return ops;
  }

  answered(op: HistoryOp, readValue: number | undefined): void {
    this.history.complete(op, this.queue.nowUs, readValue);
    this.trace.record(
      this.queue.nowUs,
      `answer op ${op.id} ${op.kind}${op.kind === "read" ? ` -> v${readValue}` : ` v${op.value}`}`,
    );
    this.release(op);
  }

  /** The coordinator crashed: the op gets no answer. */
  lost(op: HistoryOp): void {
    this.trace.record(this.queue.nowUs, `lost op ${op.id}`);
    this.release(op);
  }

  private release(op: HistoryOp): void {
    if (this.current[op.client] === op) {
      this.current[op.client] = null;
      this.scheduleNext(op.client);
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
    const sectorIndex = this.rng.pick(this.params.sectors);
    const isRead = this.rng.chance(this.params.readFraction);
    const op = isRead
      ? this.history.invoke({ client, sectorIndex, kind: "read", coordinator }, this.queue.nowUs)
      : this.history.invoke(
          { client, sectorIndex, kind: "write", coordinator, value: this.nextValueId++ },
          this.queue.nowUs,
        );
    this.current[client] = op;
    this.trace.record(
      this.queue.nowUs,
      `invoke op ${op.id} c${client} ${op.kind}${isRead ? "" : ` v${op.value}`} s${sectorIndex} via r${coordinator}`,
    );
    this.port.submit(op);
  }
}
