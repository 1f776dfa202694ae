// Per-sector mutual exclusion inside one gateway: a read-modify-write of a sector must not interleave
// with another write of the same sector, or one of them loses its bytes. Only sectors with a holder
// or waiters have an entry, so memory follows the sectors in flight, not the volume size.

export class SectorLocks {
  private readonly tails = new Map<number, Promise<void>>();

  async withLock<T>(sector: number, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(sector);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous === undefined ? mine : previous.then(() => mine);
    this.tails.set(sector, tail);
    if (previous !== undefined) await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(sector) === tail) this.tails.delete(sector);
    }
  }

  /** Sectors currently locked or awaited (for tests and metrics). */
  get size(): number {
    return this.tails.size;
  }
}
