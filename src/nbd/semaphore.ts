// A counting semaphore with FIFO waiters: bounds the sectors in flight to the replicas. A caller
// may take several permits at once (a range command of k sectors takes k). Strict FIFO: nobody
// overtakes a waiter, so a big request is never starved by a stream of small ones.
import { assert } from "../util/assert.js";

export class Semaphore {
  private available: number;
  private readonly waiters: Array<{ permits: number; resolve: () => void }> = [];
  private head = 0;

  constructor(readonly capacity: number) {
    assert(Number.isSafeInteger(capacity) && capacity > 0, "semaphore capacity must be positive");
    this.available = capacity;
  }

  /** Resolves once `permits` (1..capacity) are held; waiters are served in call order. */
  acquire(permits = 1): Promise<void> {
    assert(
      Number.isSafeInteger(permits) && permits >= 1 && permits <= this.capacity,
      `cannot acquire ${permits} of ${this.capacity} permits`,
    );
    if (this.waiting() === 0 && this.available >= permits) {
      this.available -= permits;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push({ permits, resolve }));
  }

  release(permits = 1): void {
    assert(Number.isSafeInteger(permits) && permits >= 1, "release needs a positive count");
    this.available += permits;
    assert(this.available <= this.capacity, "semaphore released more than acquired");
    while (this.head < this.waiters.length) {
      const next = this.waiters[this.head]!;
      if (next.permits > this.available) break;
      this.available -= next.permits;
      this.head++;
      next.resolve();
    }
    // Compact the queue now and then instead of shift()ing on every wake-up.
    if (this.head > 1024 && this.head * 2 > this.waiters.length) {
      this.waiters.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Permits not held by anyone (for tests and metrics). */
  get free(): number {
    return this.available;
  }

  /** Callers waiting for permits. */
  waiting(): number {
    return this.waiters.length - this.head;
  }
}
