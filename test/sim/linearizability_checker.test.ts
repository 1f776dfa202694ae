import { describe, expect, it } from "vitest";
import { History, type HistoryOp } from "../../src/sim/history.js";
import { checkHistory, checkRegisterHistory } from "../../src/sim/linearizability.js";

// Builds histories step by step: each call/answer takes the next event index, as in a real run.
function builder() {
  const history = new History();
  let nowUs = 0;
  return {
    history,
    write(value: number, sectorIndex = 0, client = 0): HistoryOp {
      return history.invoke({ client, sectorIndex, kind: "write", coordinator: 1, value }, nowUs++);
    },
    read(sectorIndex = 0, client = 0): HistoryOp {
      return history.invoke({ client, sectorIndex, kind: "read", coordinator: 1 }, nowUs++);
    },
    done(op: HistoryOp, readValue?: number): void {
      history.complete(op, nowUs++, readValue);
    },
  };
}

describe("linearizability checker", () => {
  it("accepts an empty history and a sequential one", () => {
    expect(checkRegisterHistory([]).ok).toBe(true);
    const b = builder();
    const r0 = b.read();
    b.done(r0, 0);
    const w1 = b.write(1);
    b.done(w1);
    const r1 = b.read();
    b.done(r1, 1);
    expect(checkRegisterHistory(b.history.ops)).toEqual({ ok: true });
  });

  it("rejects a stale read: a read after an acknowledged write returns the older value", () => {
    const b = builder();
    const w1 = b.write(1);
    b.done(w1);
    const w2 = b.write(2);
    b.done(w2);
    const r = b.read();
    b.done(r, 1);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("rejects a new-then-old inversion between two reads concurrent with one write", () => {
    const b = builder();
    const w1 = b.write(1);
    b.done(w1);
    const w2 = b.write(2, 0, 1); // still running during both reads
    const ra = b.read(0, 2);
    b.done(ra, 2);
    const rb = b.read(0, 3);
    b.done(rb, 1);
    b.done(w2);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("accepts the same two reads in the old-then-new order", () => {
    const b = builder();
    const w1 = b.write(1);
    b.done(w1);
    const w2 = b.write(2, 0, 1);
    const ra = b.read(0, 2);
    b.done(ra, 1);
    const rb = b.read(0, 3);
    b.done(rb, 2);
    b.done(w2);
    expect(checkRegisterHistory(b.history.ops)).toEqual({ ok: true });
  });

  it("rejects a lost acknowledged write: a later read returns the initial value", () => {
    const b = builder();
    const w = b.write(7);
    b.done(w);
    const r = b.read();
    b.done(r, 0);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("rejects a read of a value that was never written", () => {
    const b = builder();
    const r = b.read();
    b.done(r, 42);
    const result = checkRegisterHistory(b.history.ops);
    expect(result.ok).toBe(false);
    expect(result.ok ? "" : result.reason).toMatch(/nobody wrote/);
  });

  it("rejects a read that returns a value before its write was invoked", () => {
    const b = builder();
    const r = b.read();
    b.done(r, 5);
    const w = b.write(5);
    b.done(w);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("accepts concurrent writes observed in either order by overlapping reads", () => {
    const b = builder();
    const w1 = b.write(1, 0, 0);
    const w2 = b.write(2, 0, 1);
    const r1 = b.read(0, 2);
    b.done(w1);
    b.done(r1, 2);
    b.done(w2);
    const r2 = b.read(0, 2);
    b.done(r2, 2);
    expect(checkRegisterHistory(b.history.ops)).toEqual({ ok: true });
  });

  it("rejects concurrent writes observed in different orders by sequential reads after both", () => {
    const b = builder();
    const w1 = b.write(1, 0, 0);
    const w2 = b.write(2, 0, 1);
    b.done(w1);
    b.done(w2);
    const r1 = b.read(0, 2);
    b.done(r1, 2);
    const r2 = b.read(0, 2);
    b.done(r2, 1);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("accepts an unanswered write that took effect, and one that did not", () => {
    const took = builder();
    took.write(3); // coordinator crashed: no answer
    const r = took.read(0, 1);
    took.done(r, 3);
    expect(checkRegisterHistory(took.history.ops)).toEqual({ ok: true });

    const lost = builder();
    lost.write(3);
    const r0 = lost.read(0, 1);
    lost.done(r0, 0);
    expect(checkRegisterHistory(lost.history.ops)).toEqual({ ok: true });
  });

  it("rejects an unanswered write seen and then unseen by sequential reads", () => {
    const b = builder();
    b.write(3);
    const ra = b.read(0, 1);
    b.done(ra, 3);
    const rb = b.read(0, 1);
    b.done(rb, 0);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("rejects a read of an unanswered write's value before that write was invoked", () => {
    const b = builder();
    const r = b.read();
    b.done(r, 9);
    b.write(9);
    expect(checkRegisterHistory(b.history.ops).ok).toBe(false);
  });

  it("ignores unanswered reads", () => {
    const b = builder();
    b.read(0, 1); // never answered: constrains nothing
    const w = b.write(4);
    b.done(w);
    const r = b.read();
    b.done(r, 4);
    expect(checkRegisterHistory(b.history.ops)).toEqual({ ok: true });
  });

  it("checks sectors independently", () => {
    const b = builder();
    const w = b.write(1, 0);
    b.done(w);
    const r = b.read(1);
    b.done(r, 0); // sector 1 was never written: 0 is right
    expect(checkHistory(b.history.ops)).toEqual({ ok: true });
    const stale = b.read(0);
    b.done(stale, 0);
    const result = checkHistory(b.history.ops);
    expect(result.ok).toBe(false);
    expect(result.ok ? -1 : result.sectorIndex).toBe(0);
  });

  it("handles a long history with many concurrent clients quickly", () => {
    // Four clients, each doing write-then-read rounds that overlap with the others' rounds.
    const b = builder();
    let next = 1;
    let last = 0;
    for (let round = 0; round < 50; round++) {
      const writes = [0, 1, 2].map((c) => b.write(next++, 0, c));
      const reader = b.read(0, 3);
      for (const w of writes) b.done(w);
      last = writes[2]!.value!;
      b.done(reader, writes[0]!.value!);
      const after = b.read(0, 3);
      b.done(after, last);
    }
    b.write(next++, 0, 4); // a crashed writer, left pending across the tail
    const start = performance.now();
    expect(checkRegisterHistory(b.history.ops)).toEqual({ ok: true });
    expect(performance.now() - start).toBeLessThan(2_000);
  });
});

describe("linearizability checker with many crashed writers", () => {
  it("stays fast with dozens of unanswered writes, some of them observed", () => {
    const b = builder();
    let next = 1;
    for (let round = 0; round < 40; round++) {
      const lost = b.write(next++, 0, 10 + round); // its coordinator crashed: never answered
      const w = b.write(next++, 0, 1);
      b.done(w);
      const r = b.read(0, 2);
      // Every fourth round the crashed write is the one a later read sees.
      if (round % 4 === 0) {
        const w2 = b.write(next++, 0, 1);
        b.done(w2);
        b.done(r, lost.value!);
      } else {
        b.done(r, w.value!);
      }
    }
    const start = performance.now();
    expect(checkRegisterHistory(b.history.ops)).toEqual({ ok: true });
    expect(performance.now() - start).toBeLessThan(2_000);
  });
});

describe("linearizability checker diagnostics", () => {
  it("names the answer that first makes the history non-linearizable", () => {
    const b = builder();
    const w1 = b.write(1);
    b.done(w1);
    const r1 = b.read();
    b.done(r1, 1);
    const stale = b.read();
    b.done(stale, 0); // the violation
    const w2 = b.write(2);
    b.done(w2);
    const result = checkRegisterHistory(b.history.ops);
    expect(result.ok).toBe(false);
    expect(result.ok ? "" : result.reason).toMatch(new RegExp(`once op ${stale.id} answers`));
  });
});
