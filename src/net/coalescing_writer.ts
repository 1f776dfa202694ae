// Write coalescing for one socket: every frame produced during one event-loop turn (all the socket
// data events and storage completions of a poll phase) leaves in one write, so a burst of replies
// costs one syscall instead of one per frame.
import type { Socket } from "node:net";
import type { Frame } from "../protocol/codec.js";

/**
 * Parts at least this large are handed to the socket as they are; smaller ones are copied
 * together. Measured against cork()/write()*n/uncork() for small frames: Writable's per-chunk
 * bookkeeping costs more than the memcpy; for a 1 MiB range message the copy (and the fresh
 * allocation it needs) costs more than a chunk.
 */
const PASS_THROUGH_BYTES = 16 * 1024;

export class CoalescingWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private scheduled = false;

  constructor(private readonly socket: Socket) {}

  /** Bytes accepted but not yet handed to the kernel: this writer's batch plus the socket's queue. */
  queuedBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  /** Queues a frame; false when the socket can no longer write (the frame is dropped). */
  write(frame: Frame): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false;
    for (const part of frame) {
      this.pending.push(part);
      this.pendingBytes += part.length;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      // setImmediate runs after the poll phase, so frames from every ready socket join the batch.
      setImmediate(this.flush);
    }
    return true;
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const parts = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (parts.length === 0 || this.socket.destroyed || !this.socket.writable) return;
    const chunks = coalesce(parts);
    if (chunks.length === 1) {
      this.socket.write(chunks[0]!);
      return;
    }
    // Corked writes leave as one writev when uncorked.
    this.socket.cork();
    for (const chunk of chunks) this.socket.write(chunk);
    this.socket.uncork();
  };
}

/** Runs of small parts joined into one buffer each; large parts kept as they are. */
export function coalesce(parts: readonly Buffer[]): Buffer[] {
  const chunks: Buffer[] = [];
  let run: Buffer[] = [];
  let runBytes = 0;
  const closeRun = () => {
    if (run.length === 0) return;
    chunks.push(run.length === 1 ? run[0]! : Buffer.concat(run, runBytes));
    run = [];
    runBytes = 0;
  };
  for (const part of parts) {
    if (part.length >= PASS_THROUGH_BYTES) {
      closeRun();
      chunks.push(part);
    } else {
      run.push(part);
      runBytes += part.length;
    }
  }
  closeRun();
  return chunks;
}
