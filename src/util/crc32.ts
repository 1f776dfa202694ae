// CRC-32 (IEEE 802.3, the polynomial zlib uses): every sector a replica stores or loads is
// checksummed, so on sequential writes this is one of the largest single costs of a replica.
// zlib's crc32 in Node 20 runs at ~2.9 GB/s on this project's machines (1.4 µs per 4 KiB);
// @node-rs/crc32 (crc32fast, carry-less multiply) does 4 KiB in ~0.38 µs, and a 1 MiB write
// stores ~768 sector copies across three replicas. With the data checksum removed outright (an
// upper bound), sequential 1 MiB writes went from 91-102 to 107-114 MB/s in interleaved runs; with
// this one, 4 interleaved pairs took 23.8 ms of cluster CPU per MiB down to 22.7 on average.
// Both compute the same function, so the on-disk format does not depend on which one loaded; the
// native one is an optional prebuilt binary, and where it cannot load zlib's takes over.
import { createRequire } from "node:module";
import { crc32 as zlibCrc32 } from "node:zlib";

type Crc32 = (input: Uint8Array) => number;

/**
 * Below this the native call's fixed cost (~0.4 µs, more than zlib's for a 60-byte entry) wins
 * over its speed per byte; measured: 60 B zlib 0.30 µs, native 0.42 µs; 4096 B 1.44 against 0.38.
 */
const NATIVE_MIN_BYTES = 512;

function loadNative(): Crc32 | null {
  try {
    const mod = createRequire(import.meta.url)("@node-rs/crc32") as { crc32: Crc32 };
    // A broken binary must not write checksums that zlib's would reject on the next load: it must
    // give the standard check value.
    return mod.crc32(Buffer.from("123456789")) === 0xcbf43926 ? mod.crc32 : null;
  } catch {
    return null;
  }
}

const native = loadNative();

/** Which implementation computes the large checksums: "native" (@node-rs/crc32) or "zlib". */
export const CRC32_IMPLEMENTATION: "native" | "zlib" = native === null ? "zlib" : "native";

export function crc32(data: Uint8Array): number {
  return native !== null && data.length >= NATIVE_MIN_BYTES ? native(data) : zlibCrc32(data);
}
