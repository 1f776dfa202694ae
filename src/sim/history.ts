// Client-visible history: one entry per client operation with its invocation and (if any) its
// answer. Invocations and answers are numbered by one counter, so "A returned before B was
// invoked" is an exact comparison even when both happen at the same simulated instant.
import { assert } from "../util/assert.js";

export interface HistoryOp {
  id: number;
  client: number;
  sectorIndex: number;
  kind: "read" | "write";
  /** Write: the value id written. Read: the value id returned, or null while unanswered. */
  value: number | null;
  /** Rank of the coordinating replica. */
  coordinator: number;
  invokeIndex: number;
  /** null: no answer (the coordinator crashed, or the run ended first); may or may not have taken effect. */
  returnIndex: number | null;
  invokeUs: number;
  returnUs: number | null;
}

export class History {
  readonly ops: HistoryOp[] = [];
  private nextIndex = 0;

  invoke(
    fields: Pick<HistoryOp, "client" | "sectorIndex" | "kind" | "coordinator"> & { value?: number },
    nowUs: number,
  ): HistoryOp {
    assert(fields.kind === "read" || fields.value !== undefined, "a write needs its value");
    const op: HistoryOp = {
      id: this.ops.length,
      client: fields.client,
      sectorIndex: fields.sectorIndex,
      kind: fields.kind,
      value: fields.kind === "write" ? fields.value! : null,
      coordinator: fields.coordinator,
      invokeIndex: this.nextIndex++,
      returnIndex: null,
      invokeUs: nowUs,
      returnUs: null,
    };
    this.ops.push(op);
    return op;
  }

  complete(op: HistoryOp, nowUs: number, readValue?: number): void {
    assert(op.returnIndex === null, `operation ${op.id} answered twice`);
    if (op.kind === "read") {
      assert(readValue !== undefined, "a read answer needs its value");
      op.value = readValue;
    }
    op.returnIndex = this.nextIndex++;
    op.returnUs = nowUs;
  }

  pending(): HistoryOp[] {
    return this.ops.filter((op) => op.returnIndex === null);
  }
}

/** One line per operation, for failure reports. */
export function describeOp(op: HistoryOp): string {
  const span = `[${op.invokeIndex}, ${op.returnIndex ?? "∞"}]`;
  const time = `t=${(op.invokeUs / 1000).toFixed(3)}..${op.returnUs === null ? "∞" : (op.returnUs / 1000).toFixed(3)}ms`;
  const what = op.kind === "write" ? `write(${op.value})` : `read -> ${op.value ?? "?"}`;
  return `op ${op.id} client ${op.client} via r${op.coordinator} sector ${op.sectorIndex} ${span} ${time} ${what}`;
}
