// Writes issued during one tick leave in one writev: the socket is corked at the first write of
// a tick and uncorked on the next tick. Used where replies or commands are produced in bursts
// from one event (a decoded chunk, a completed batch), so a burst costs one syscall.
import type { Socket } from "node:net";
import type { Frame } from "../protocol/codec.js";

export class TickCorkedWriter {
  #corked = false;

  constructor(private readonly socket: Socket) {}

  write(frame: Frame): void {
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.socket.uncork();
      });
    }
    for (const part of frame) this.socket.write(part);
  }
}
