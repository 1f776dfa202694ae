// Workload values: value id v is a whole sector holding the 8-byte big-endian v repeated 512
// times, so a read proves it got one whole value (never a mix of two writes). Id 0 is all zeros:
// the content of a sector that was never written.
import { SECTOR_SIZE_BYTES } from "../util/limits.js";

export function encodeValue(valueId: number): Buffer {
  const word = Buffer.alloc(8);
  word.writeBigUInt64BE(BigInt(valueId));
  return Buffer.alloc(SECTOR_SIZE_BYTES, word);
}

/** The value id a sector holds, or null if it is not a whole workload value. */
export function decodeValue(data: Buffer): number | null {
  if (data.length !== SECTOR_SIZE_BYTES) return null;
  const valueId = Number(data.readBigUInt64BE(0));
  return data.equals(encodeValue(valueId)) ? valueId : null;
}

/** Cheap id for trace lines (first word only). */
export function peekValue(data: Buffer): number {
  return Number(data.readBigUInt64BE(0));
}
