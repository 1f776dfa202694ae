// What the gateway's NBD clients asked for since the activity log last looked (activity_log.ts):
// requests by kind with latencies from parsed to replied, bytes, and errors by errno.
import { LatencyWindow } from "../util/activity_log.js";
import { Command } from "./constants.js";

interface Window {
  reads: LatencyWindow;
  writes: LatencyWindow;
  /** WRITE_ZEROES, FLUSH, TRIM, CACHE, BLOCK_STATUS and unknown commands. */
  other: LatencyWindow;
  bytesRead: number;
  bytesWritten: number;
  /** Replies with a non-zero errno, by errno. */
  errors: Record<number, number>;
}

function emptyWindow(): Window {
  return {
    reads: new LatencyWindow(),
    writes: new LatencyWindow(),
    other: new LatencyWindow(),
    bytesRead: 0,
    bytesWritten: 0,
    errors: {},
  };
}

export class NbdActivity {
  #window = emptyWindow();

  /** One request of `type` over `length` bytes, parsed at startedMs, replied now with errno. */
  replied(type: number, length: number, startedMs: number, errno: number): void {
    const w = this.#window;
    if (errno !== 0) w.errors[errno] = (w.errors[errno] ?? 0) + 1;
    if (type === Command.Read) {
      w.reads.record(startedMs);
      if (errno === 0) w.bytesRead += length;
    } else if (type === Command.Write) {
      w.writes.record(startedMs);
      if (errno === 0) w.bytesWritten += length;
    } else {
      w.other.record(startedMs);
    }
  }

  /** The window's counts, or null if no request was replied in it; a new window starts. */
  take(): Record<string, unknown> | null {
    const w = this.#window;
    this.#window = emptyWindow();
    const reads = w.reads.take();
    const writes = w.writes.take();
    const other = w.other.take();
    if (reads === undefined && writes === undefined && other === undefined) return null;
    // The summary of an empty kind is undefined, which the JSON line leaves out.
    return {
      reads,
      writes,
      other,
      bytesRead: w.bytesRead,
      bytesWritten: w.bytesWritten,
      ...(Object.keys(w.errors).length > 0 ? { errorsByErrno: w.errors } : {}),
    };
  }
}
