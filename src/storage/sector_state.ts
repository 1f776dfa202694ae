// The durable state of one register at one replica: `(ts, wr, val)` (SPEC §2).
import { SECTOR_SIZE_BYTES } from "../util/limits.js";

export interface SectorState {
  /** u64 timestamp. */
  ts: bigint;
  /** Rank of the writer (u8); 0 only for a never-written sector. */
  wr: number;
  /** Exactly SECTOR_SIZE_BYTES. */
  data: Buffer;
}

/** The tag `(ts, wr)` of a state: what orders the states of one register. */
export interface SectorTag {
  ts: bigint;
  wr: number;
}

const ZERO_SECTOR = Buffer.alloc(SECTOR_SIZE_BYTES);

/** The state of a sector that was never written: `(0, 0, zeros)`. The buffer is shared: never mutate. */
export function initialSectorState(): SectorState {
  return { ts: 0n, wr: 0, data: ZERO_SECTOR };
}

/** Lexicographic order on tags `(ts, wr)`: negative, zero or positive. */
export function compareTags(a: { ts: bigint; wr: number }, b: { ts: bigint; wr: number }): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  return a.wr - b.wr;
}
