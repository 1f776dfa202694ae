// Simulated time and timers: a priority queue of callbacks ordered by (time, insertion order).
// Ties run in insertion order, so a run depends only on the seed, never on the host.
import { assert } from "../util/assert.js";

interface QueuedEvent {
  atUs: number;
  seq: number;
  run: () => void;
}

function before(x: QueuedEvent, y: QueuedEvent): boolean {
  return x.atUs < y.atUs || (x.atUs === y.atUs && x.seq < y.seq);
}

export class EventQueue {
  private heap: QueuedEvent[] = [];
  private nextSeq = 0;
  private currentUs = 0;

  /** Simulated time in microseconds; never decreases. */
  get nowUs(): number {
    return this.currentUs;
  }

  get nowMs(): number {
    return Math.floor(this.currentUs / 1000);
  }

  get size(): number {
    return this.heap.length;
  }

  /** Runs `run` at simulated time `atUs` (not earlier than now). */
  at(atUs: number, run: () => void): void {
    assert(Number.isInteger(atUs) && atUs >= this.currentUs, `cannot schedule in the past: ${atUs}`);
    const event: QueuedEvent = { atUs, seq: this.nextSeq++, run };
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(event, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = event;
  }

  after(delayUs: number, run: () => void): void {
    this.at(this.currentUs + Math.max(0, Math.round(delayUs)), run);
  }

  /** Time of the next event, or null when none is queued. */
  peekUs(): number | null {
    return this.heap[0]?.atUs ?? null;
  }

  /** Advances time to the next event and runs it; false when the queue is empty. */
  runNext(): boolean {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined) return false;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && before(heap[right]!, heap[left]!) ? right : left;
        if (!before(heap[child]!, last)) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    this.currentUs = top.atUs;
    top.run();
    return true;
  }
}
