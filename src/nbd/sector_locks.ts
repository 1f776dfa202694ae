// Per-sector mutual exclusion inside one gateway: a read-modify-write of a sector must not interleave
// with another write of the same sector, or one of them loses its bytes. Only sectors with a holder
// or waiters have an entry, so memory follows the sectors in flight, not the volume size.
//
// A run of sectors is locked one sector at a time in ascending order, each only after the previous
// one is held. Every holder of several locks took them in that one global order, so two overlapping
// runs (or a run and a single-sector RMW) can never wait for each other in a cycle.

export class SectorLocks {
  private readonly tails = new Map<number, Promise<void>>();

  withLock<T>(sector: number, fn: () => Promise<T>): Promise<T> {
    return this.withLocks(sector, 1, fn);
  }

  /** Runs fn holding the locks of sectors [first, first + count), taken in ascending order. */
  async withLocks<T>(first: number, count: number, fn: () => Promise<T>): Promise<T> {
    const releases: Array<() => void> = [];
    try {
      for (let sector = first; sector < first + count; sector++) {
        const { ready, release } = this.enqueue(sector);
        releases.push(release);
        if (ready !== undefined) await ready;
      }
      return await fn();
    } finally {
      for (const release of releases) release();
    }
  }

  /** Sectors currently locked or awaited (for tests and metrics). */
  get size(): number {
    return this.tails.size;
  }

  /** Joins the sector's queue; `ready` is undefined when the lock is free right away. */
  private enqueue(sector: number): { ready: Promise<void> | undefined; release: () => void } {
    const previous = this.tails.get(sector);
    let resolveMine!: () => void;
    const mine = new Promise<void>((resolve) => {
      resolveMine = resolve;
    });
    const tail = previous === undefined ? mine : previous.then(() => mine);
    this.tails.set(sector, tail);
    const release = () => {
      resolveMine();
      if (this.tails.get(sector) === tail) this.tails.delete(sector);
    };
    return { ready: previous, release };
  }
}
