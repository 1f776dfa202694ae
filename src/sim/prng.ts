// Seeded pseudo-random numbers (sfc32 seeded through splitmix32). Every random choice of the
// simulator comes from here, so one seed replays one run exactly; Math.random is never used.
import { assert } from "../util/assert.js";

function splitmix32(state: number): () => number {
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    assert(Number.isSafeInteger(seed) && seed >= 0, `seed must be a non-negative safe integer, got ${seed}`);
    // Mix both halves of the seed so seeds above 2^32 give distinct streams.
    const low = seed >>> 0;
    const high = Math.floor(seed / 2 ** 32) >>> 0;
    const mix = splitmix32(low ^ Math.imul(high, 0x27d4eb2f) ^ 0x5bd1e995);
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    // sfc32 needs a few rounds before its output is well mixed.
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.nextU32() / 2 ** 32;
  }

  /** Uniform integer in [0, maxExclusive). */
  int(maxExclusive: number): number {
    assert(Number.isSafeInteger(maxExclusive) && maxExclusive > 0, `bad bound ${maxExclusive}`);
    return Math.floor(this.float() * maxExclusive);
  }

  /** Uniform integer in [min, maxInclusive]. */
  range(min: number, maxInclusive: number): number {
    assert(maxInclusive >= min, `empty range ${min}..${maxInclusive}`);
    return min + this.int(maxInclusive - min + 1);
  }

  chance(probability: number): boolean {
    return probability > 0 && this.float() < probability;
  }

  pick<T>(items: readonly T[]): T {
    assert(items.length > 0, "pick from an empty list");
    return items[this.int(items.length)]!;
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i += 4) {
      const word = this.nextU32();
      for (let k = 0; k < 4 && i + k < length; k++) out[i + k] = (word >>> (8 * k)) & 0xff;
    }
    return out;
  }

  /**
   * An independent stream. Each component draws from its own fork, so that a change in how much
   * randomness one component consumes does not reshuffle every other component's choices.
   */
  fork(): Prng {
    return new Prng(this.nextU32() * 2 ** 21 + (this.nextU32() >>> 11));
  }
}
