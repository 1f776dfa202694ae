// Write coalescing for one socket: every frame produced during one event-loop turn (all the socket
// data events and storage completions of a poll phase) leaves in a single write, so a burst of
// replies costs one syscall instead of one per frame.
import type { Socket } from "node:net";

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
  write(frame: Buffer): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false;
    this.pending.push(frame);
    this.pendingBytes += frame.length;
    if (!this.scheduled) {
      this.scheduled = true;
      // setImmediate runs after the poll phase, so frames from every ready socket join the batch.
      setImmediate(this.flush);
    }
    return true;
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const frames = this.pending;
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    if (frames.length === 0 || this.socket.destroyed || !this.socket.writable) return;
    // One contiguous buffer and one write() call. Measured against cork()/write()*n/uncork() (a
    // writev without the copy): the per-chunk bookkeeping of Writable costs more than the memcpy.
    this.socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames, bytes));
  };
}
