// Linearizability of per-sector register histories with unique written values (initial value 0).
// Wing & Gong's search as refined by Lowe ("Testing for linearizability", 2017) with the
// memoization of (linearized set, register value) from Horn & Kroening: operations sit in a
// list of call/return entries in real-time order; the search repeatedly linearizes some
// operation whose call precedes every pending return, and backtracks when a return is reached
// whose operation could not be placed. Unanswered writes may be linearized anywhere after their
// call, or never; unanswered reads constrain nothing and are dropped.
//
// Written values are unique, so a read names the one write it saw; checking one sector's history
// never needs more than that sector's operations (registers are independent: locality).
import { assert } from "../util/assert.js";
import { describeOp, type HistoryOp } from "./history.js";

export type CheckResult = { ok: true } | { ok: false; sectorIndex: number; reason: string };

interface Entry {
  op: HistoryOp;
  bit: bigint;
  isCall: boolean;
  /** The matching return entry (calls of answered operations only). */
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

/** Value id the initial, never-written sector holds. */
export const INITIAL_VALUE = 0;

/** Checks one register (one sector). `ops` must all be on the same sector. */
export function checkRegisterHistory(ops: readonly HistoryOp[]): CheckResult {
  const sectorIndex = ops[0]?.sectorIndex ?? -1;
  // An unanswered write whose value nobody read can always be taken as never having happened
  // (dropping it from a linearization leaves every read's result intact), so it is left out: the
  // writes of crashed coordinators would otherwise multiply the search.
  const readValues = new Set<number>();
  for (const op of ops) if (op.kind === "read" && op.returnIndex !== null) readValues.add(op.value!);
  const relevant = ops.filter((op) =>
    op.kind === "write" ? op.returnIndex !== null || readValues.has(op.value!) : op.returnIndex !== null,
  );
  const written = new Set<number>([INITIAL_VALUE]);
  for (const op of relevant) {
    assert(op.sectorIndex === sectorIndex, "checkRegisterHistory takes one sector");
    if (op.kind === "write") {
      assert(op.value !== null && !written.has(op.value), `written values must be unique: op ${op.id}`);
      written.add(op.value);
    }
  }
  for (const op of relevant) {
    if (op.kind === "read" && !written.has(op.value!)) {
      return { ok: false, sectorIndex, reason: `read returned a value nobody wrote: ${describeOp(op)}` };
    }
  }

  // The entry list, sorted by the history's event index, behind a sentinel head.
  const points: { index: number; entry: Entry }[] = [];
  relevant.forEach((op, i) => {
    const call: Entry = { op, bit: 1n << BigInt(i), isCall: true, match: null, prev: null, next: null };
    points.push({ index: op.invokeIndex, entry: call });
    if (op.returnIndex !== null) {
      assert(op.returnIndex > op.invokeIndex, `op ${op.id} returns before its call`);
      const ret: Entry = { op, bit: call.bit, isCall: false, match: null, prev: null, next: null };
      call.match = ret;
      points.push({ index: op.returnIndex, entry: ret });
    }
  });
  points.sort((x, y) => x.index - y.index);
  const head: Entry = { op: relevant[0]!, bit: 0n, isCall: true, match: null, prev: null, next: null };
  let tail = head;
  for (const { entry } of points) {
    tail.next = entry;
    entry.prev = tail;
    tail = entry;
  }

  const unlink = (e: Entry): void => {
    e.prev!.next = e.next;
    if (e.next !== null) e.next.prev = e.prev;
  };
  const relink = (e: Entry): void => {
    e.prev!.next = e;
    if (e.next !== null) e.next.prev = e;
  };

  const seen = new Set<string>();
  const stack: { call: Entry; previousValue: number }[] = [];
  let value = INITIAL_VALUE;
  let linearized = 0n;
  let entry = head.next;
  while (entry !== null) {
    if (entry.isCall) {
      const op = entry.op;
      const fits = op.kind === "write" || op.value === value;
      if (fits) {
        const nextValue = op.kind === "write" ? op.value! : value;
        const nextLinearized = linearized | entry.bit;
        const key = `${nextLinearized.toString(36)}:${nextValue}`;
        if (!seen.has(key)) {
          seen.add(key);
          stack.push({ call: entry, previousValue: value });
          value = nextValue;
          linearized = nextLinearized;
          // Lift the operation out of the list: its call, and its return if it has one.
          unlink(entry);
          if (entry.match !== null) unlink(entry.match);
          entry = head.next;
          continue;
        }
      }
      entry = entry.next;
    } else {
      // A return whose operation is not linearized yet: undo the latest choice.
      const top = stack.pop();
      if (top === undefined) {
        return { ok: false, sectorIndex, reason: explain(relevant) };
      }
      if (top.call.match !== null) relink(top.call.match);
      relink(top.call);
      value = top.previousValue;
      linearized &= ~top.call.bit;
      entry = top.call.next;
    }
  }
  // Only calls of unanswered operations remain: they are the ones that never took effect.
  return { ok: true };
}

/** The history as it stood just before event index `cut`: later answers are not yet known. */
function prefix(ops: readonly HistoryOp[], cut: number): HistoryOp[] {
  return ops
    .filter((op) => op.invokeIndex < cut)
    .map((op) =>
      op.returnIndex !== null && op.returnIndex >= cut
        ? { ...op, returnIndex: null, returnUs: null, value: op.kind === "read" ? null : op.value }
        : op,
    );
}

/**
 * Names the answer that made the history non-linearizable: the shortest failing prefix (prefixes of
 * a linearizable history are linearizable, so a binary search finds it) ends with that answer.
 */
function explain(ops: readonly HistoryOp[]): string {
  let good = 0;
  let bad = 1 + Math.max(...ops.map((op) => Math.max(op.invokeIndex, op.returnIndex ?? 0)));
  while (bad - good > 1) {
    const mid = Math.floor((good + bad) / 2);
    if (checkRegisterHistory(prefix(ops, mid)).ok) good = mid;
    else bad = mid;
  }
  const shortest = prefix(ops, bad).sort((x, y) => x.invokeIndex - y.invokeIndex);
  const culprit = ops.find((op) => op.returnIndex === bad - 1);
  const shown = shortest.slice(-30).map((op) => `  ${describeOp(op)}`);
  const skipped = shortest.length - shown.length;
  return (
    `no linearization exists once ${culprit === undefined ? "?" : `op ${culprit.id}`} answers ` +
    `(${culprit === undefined ? "" : describeOp(culprit)}); the history up to that answer` +
    `${skipped > 0 ? ` (its first ${skipped} operations omitted)` : ""}:\n${shown.join("\n")}`
  );
}

/** Checks every sector of a history independently (registers are independent objects). */
export function checkHistory(ops: readonly HistoryOp[]): CheckResult {
  const bySector = new Map<number, HistoryOp[]>();
  for (const op of ops) {
    const list = bySector.get(op.sectorIndex);
    if (list === undefined) bySector.set(op.sectorIndex, [op]);
    else list.push(op);
  }
  for (const sectorOps of bySector.values()) {
    const result = checkRegisterHistory(sectorOps);
    if (!result.ok) return result;
  }
  return { ok: true };
}
