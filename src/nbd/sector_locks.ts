// Per-sector mutual exclusion inside one gateway: a read-modify-write of a sector must not interleave
// with another write of the same sector, or one of them loses its bytes. Only sectors with a holder
// or waiters have an entry, so memory follows the sectors in flight, not the volume size.
//
// A run of sectors joins the queue of every one of its sectors in one synchronous step, so all
// holders and waiters are in one global arrival order on every sector they share: two overlapping
// runs (or a run and a single-sector RMW) can never wait for each other in a cycle. An uncontended
// run costs one promise, not one per sector.

export class SectorLocks {
  /** Per sector: settles once every holder and waiter queued on it so far has released it. */
  private readonly tails = new Map<number, Promise<void>>();

  withLock<T>(sector: number, fn: () => Promise<T>): Promise<T> {
    return this.withLocks(sector, 1, fn);
  }

  /** Runs fn holding the locks of sectors [first, first + count), in arrival order per sector. */
  async withLocks<T>(first: number, count: number, fn: () => Promise<T>): Promise<T> {
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tails: Array<Promise<void>> = new Array(count);
    const waits: Array<Promise<void>> = [];
    for (let i = 0; i < count; i++) {
      const sector = first + i;
      const previous = this.tails.get(sector);
      let tail = mine;
      if (previous !== undefined) {
        waits.push(previous);
        tail = previous.then(() => mine);
      }
      this.tails.set(sector, tail);
      tails[i] = tail;
    }
    try {
      if (waits.length > 0) await Promise.all(waits);
      return await fn();
    } finally {
      release();
      for (let i = 0; i < count; i++) {
        if (this.tails.get(first + i) === tails[i]) this.tails.delete(first + i);
      }
    }
  }

  /** Sectors currently locked or awaited (for tests and metrics). */
  get size(): number {
    return this.tails.size;
  }
}
