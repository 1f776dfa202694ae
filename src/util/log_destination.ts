// Where log lines go: a file descriptor, written synchronously, that never stops the process.
//
// pino's default destination (sonic-boom) emits an 'error' event when a write fails with ENOSPC
// or EIO, which nothing handles, so the process dies of its log; and on exit it flushes with a
// loop that retries every error every 100 ms, forever. A replica whose log shared a full disk
// with its data hung that way in `process.exit`, still holding its port, and one started with
// its stdout on a full disk never came up. Storage must outlive its log: a line the descriptor
// refuses is dropped and counted, and the next line that gets through says how many were lost.
import { writeSync } from "node:fs";
import { LOG_WRITE_RETRY_MS, LOG_WRITE_RETRY_TOTAL_MS } from "./limits.js";

const sleeper = new Int32Array(new SharedArrayBuffer(4));

function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

export class DroppingLogDestination {
  /** Lines (or their ends) lost since the last line that got through. */
  private droppedLines = 0;
  /** Lines lost over the life of the destination. */
  totalDroppedLines = 0;

  constructor(
    private readonly fd: number,
    /** fs.writeSync; tests pass one that fails on cue. */
    private readonly writeBytes: (fd: number, buf: Buffer) => number = writeSync,
  ) {}

  /** pino's destination interface: one serialized line, newline included. */
  write(line: string): void {
    if (this.droppedLines > 0) {
      const note = `${JSON.stringify({ level: 40, time: Date.now(), msg: "log lines dropped", dropped: this.droppedLines })}\n`;
      if (!this.writeAll(Buffer.from(note))) {
        this.drop();
        return;
      }
      this.droppedLines = 0;
    }
    if (!this.writeAll(Buffer.from(line))) this.drop();
  }

  private drop(): void {
    this.droppedLines++;
    this.totalDroppedLines++;
  }

  /**
   * Whether all of buf was written. A non-blocking pipe whose reader is slow (EAGAIN) gets a few
   * short waits, never more than LOG_WRITE_RETRY_TOTAL_MS per line; any other error drops the rest.
   */
  private writeAll(buf: Buffer): boolean {
    let rest = buf;
    let waitedMs = 0;
    while (rest.length > 0) {
      try {
        rest = rest.subarray(this.writeBytes(this.fd, rest));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code === "EAGAIN" || code === "EINTR") && waitedMs < LOG_WRITE_RETRY_TOTAL_MS) {
          sleepMs(LOG_WRITE_RETRY_MS);
          waitedMs += LOG_WRITE_RETRY_MS;
          continue;
        }
        return false;
      }
    }
    return true;
  }
}
