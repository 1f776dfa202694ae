// Incoming socket bytes as a queue the protocol state machines consume with `take(n)`. Nothing is
// ever allocated from a peer-supplied length before the caller has checked that length.
import { assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";

export class ByteQueue {
  private chunks: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private waiter: { bytes: number; resolve: () => void; reject: (err: Error) => void } | undefined;

  /** Called after bytes were consumed or a take started waiting: the owner may resume reading. */
  onDrain: (() => void) | undefined;

  /** Whether a take is waiting for bytes that have not arrived (the owner must keep reading). */
  get waiting(): boolean {
    return this.waiter !== undefined;
  }

  /** Bytes buffered but not yet taken (for back-pressure decisions). */
  get length(): number {
    return this.queued;
  }

  push(chunk: Buffer): void {
    if (this.ended || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.wake();
  }

  /** The peer closed: pending and later takes reject with PROTOCOL_VIOLATION "eof". */
  end(): void {
    this.ended = true;
    this.wake();
  }

  /** Resolves with exactly n bytes once they have arrived. One take at a time. */
  async take(n: number): Promise<Buffer> {
    assert(Number.isSafeInteger(n) && n >= 0, "take: bad length");
    assert(this.waiter === undefined, "take: concurrent take");
    if (this.queued < n) await this.waitFor(n);
    return this.consume(n);
  }

  /**
   * As take, but the result never shares memory with a socket chunk (a view would keep the whole
   * chunk alive as long as the caller keeps the bytes): copied once, and only when it is a view.
   */
  async takeOwned(n: number): Promise<Buffer> {
    assert(Number.isSafeInteger(n) && n >= 0, "take: bad length");
    assert(this.waiter === undefined, "take: concurrent take");
    if (this.queued < n) await this.waitFor(n);
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) return Buffer.from(this.consume(n));
    // consume gathers bytes spread over several chunks into a fresh buffer of exactly n bytes.
    return this.consume(n);
  }

  /** Drops n bytes without buffering them all (e.g. an oversized WRITE payload). */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.queued === 0) await this.waitFor(1);
      const step = Math.min(left, this.queued);
      this.consume(step);
      left -= step;
    }
  }

  private waitFor(bytes: number): Promise<void> {
    if (this.ended) return Promise.reject(eof());
    const waited = new Promise<void>((resolve, reject) => {
      this.waiter = { bytes, resolve, reject };
    });
    this.onDrain?.();
    return waited;
  }

  private wake(): void {
    const w = this.waiter;
    if (w === undefined) return;
    if (this.queued >= w.bytes) {
      this.waiter = undefined;
      w.resolve();
    } else if (this.ended) {
      this.waiter = undefined;
      w.reject(eof());
    }
  }

  private consume(n: number): Buffer {
    assert(n <= this.queued, "consume: not enough bytes");
    this.queued -= n;
    this.onDrain?.();
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const step = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, step);
      filled += step;
      if (step === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(step);
    }
    return out;
  }
}

function eof(): AtomicDiskError {
  return new AtomicDiskError("PROTOCOL_VIOLATION", "connection closed by peer");
}

export function isEof(err: unknown): boolean {
  return (
    err instanceof AtomicDiskError && err.code === "PROTOCOL_VIOLATION" && err.message.includes("closed")
  );
}
