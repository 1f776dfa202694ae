// Operating errors: expected failures with stable codes. Only src/nbd maps them to NBD errno values.
export type ErrorCode =
  | "CONFIG_INVALID"
  | "DATA_DIR_UNUSABLE"
  | "ADDRESS_IN_USE"
  | "STORAGE_IO"
  | "STORAGE_CORRUPT"
  | "QUORUM_TIMEOUT"
  | "REPLICA_UNAVAILABLE"
  | "AUTH_FAILED"
  | "INVALID_SECTOR_INDEX"
  | "PROTOCOL_VIOLATION"
  | "SHUTTING_DOWN"
  | "OUT_OF_RANGE";

export class AtomicDiskError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AtomicDiskError";
    this.code = code;
  }
}

export function isAtomicDiskError(err: unknown, code?: ErrorCode): err is AtomicDiskError {
  return err instanceof AtomicDiskError && (code === undefined || err.code === code);
}
