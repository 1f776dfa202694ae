// The only place where operating errors become NBD error values (reply error field).
import { isAtomicDiskError } from "../util/errors.js";
import { NbdErrno, type NbdErrnoValue } from "./constants.js";

/** Whether the failed request wanted to change data: out-of-range means ENOSPC for those, EINVAL otherwise. */
export type RequestKind = "read" | "write";

export function nbdErrnoFor(err: unknown, kind: RequestKind): NbdErrnoValue {
  if (!isAtomicDiskError(err)) return NbdErrno.EIO;
  switch (err.code) {
    case "OUT_OF_RANGE":
    case "INVALID_SECTOR_INDEX":
      return kind === "write" ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
    case "PROTOCOL_VIOLATION":
      return NbdErrno.EINVAL;
    case "SHUTTING_DOWN":
      return NbdErrno.ESHUTDOWN;
    case "QUORUM_TIMEOUT":
    case "REPLICA_UNAVAILABLE":
    case "AUTH_FAILED":
    case "STORAGE_IO":
    case "STORAGE_CORRUPT":
    case "CONFIG_INVALID":
    case "DATA_DIR_UNUSABLE":
    case "ADDRESS_IN_USE":
      return NbdErrno.EIO;
  }
}
