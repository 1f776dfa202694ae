// The one disk a gateway exports, as the handshake describes it to clients.
import { NBD_MAX_PAYLOAD_BYTES, SECTOR_SIZE_BYTES } from "../util/limits.js";
import { TFlag } from "./constants.js";

export interface ExportInfo {
  /** Canonical export name; "" (the default export) also selects it. */
  name: string;
  description: string;
  sizeBytes: number;
}

/**
 * Block sizes for NBD_INFO_BLOCK_SIZE. Minimum 1: the gateway does read-modify-write for partial
 * sectors, so clients (nbdfuse with 1 KiB ext4) need not pad; preferred is one register.
 */
export const BLOCK_SIZE_MINIMUM_BYTES = 1;
export const BLOCK_SIZE_PREFERRED_BYTES = SECTOR_SIZE_BYTES;
export const BLOCK_SIZE_MAXIMUM_BYTES = NBD_MAX_PAYLOAD_BYTES;

/**
 * Every acknowledged write is durable on a majority and no connection caches anything, so FLUSH
 * and FUA are free and multi-conn is safe. TRIM is a no-op (allowed: trimmed data is unspecified
 * until rewritten) so it costs nothing to advertise. DF only means something with structured replies.
 */
export function transmissionFlags(structured: boolean): number {
  let flags =
    TFlag.HasFlags |
    TFlag.SendFlush |
    TFlag.SendFua |
    TFlag.SendTrim |
    TFlag.SendWriteZeroes |
    TFlag.CanMultiConn |
    TFlag.SendCache |
    TFlag.SendFastZero;
  if (structured) flags |= TFlag.SendDf;
  return flags;
}

export function matchesExport(info: ExportInfo, requested: string): boolean {
  return requested === "" || requested === info.name;
}
