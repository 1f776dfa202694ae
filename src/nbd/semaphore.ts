// A counting semaphore with FIFO waiters: bounds the per-sector commands in flight to the replicas.
import { assert } from "../util/assert.js";

export class Semaphore {
  private available: number;
  private readonly waiters: Array<() => void> = [];

  constructor(readonly capacity: number) {
    assert(Number.isSafeInteger(capacity) && capacity > 0, "semaphore capacity must be positive");
    this.available = capacity;
  }

  acquire(): Promise<void> {
    if (this.available > 0) {
      this.available--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next !== undefined) next();
    else {
      this.available++;
      assert(this.available <= this.capacity, "semaphore released more than acquired");
    }
  }
}
