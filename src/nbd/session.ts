// One client connection: handshake, then transmission, then close. Client input never throws out
// of here: protocol violations close this socket only, and the gateway goes on serving others.
import type { Socket } from "node:net";
import { TurnCorkedWriter } from "../net/turn_corked_writer.js";
import { SOCKET_HIGH_WATER_BYTES } from "../util/limits.js";
import type { Logger } from "../util/log.js";
import type { NbdActivity } from "./activity.js";
import { ByteQueue, isEof } from "./byte_queue.js";
import type { ExportInfo } from "./export_info.js";
import { negotiate } from "./handshake.js";
import { Transmission } from "./transmission.js";
import type { Volume } from "./volume.js";

export interface SessionOptions {
  exportInfo: ExportInfo;
  volume: Volume;
  timeoutMs: number;
  handshakeTimeoutMs: number;
  log: Logger;
  activity?: NbdActivity;
}

export class Session {
  private readonly queue = new ByteQueue();
  private transmission: Transmission | undefined;
  private closed = false;
  private readonly writer: TurnCorkedWriter;
  readonly finished: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly options: SessionOptions,
  ) {
    this.writer = new TurnCorkedWriter(socket);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.queue.push(chunk);
      // Stop reading while a parsed-but-unconsumed backlog builds up; the request loop resumes us.
      if (this.queue.length >= SOCKET_HIGH_WATER_BYTES && !this.queue.waiting) socket.pause();
    });
    this.queue.onDrain = () => {
      if (socket.isPaused() && (this.queue.length < SOCKET_HIGH_WATER_BYTES || this.queue.waiting))
        socket.resume();
    };
    socket.on("end", () => this.queue.end());
    socket.on("close", () => {
      this.closed = true;
      this.queue.end();
    });
    socket.on("error", (err) => options.log.debug({ err }, "nbd client socket error"));
    this.finished = this.run();
  }

  /** Ends the session now (server shutdown). In-flight replies are dropped with the socket. */
  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Server shutdown: new requests get ESHUTDOWN (the client then sends DISC), requests in flight
   * get up to graceMs to reply, then the socket closes.
   */
  async shutdown(graceMs: number): Promise<void> {
    const t = this.transmission;
    if (t === undefined) {
      this.socket.destroy();
      return;
    }
    t.shutdown();
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      t.allReplied().then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      }),
    ]);
    clearTimeout(timer);
    // end() flushes replies still corked for this tick; destroy() would drop them.
    if (!finished) {
      this.socket.destroy();
      return;
    }
    this.socket.end();
    // A client that never closes its side must not keep the stopping server alive.
    setTimeout(() => this.socket.destroy(), 1_000).unref();
  }

  private async run(): Promise<void> {
    const { log } = this.options;
    const send = (data: Buffer) => {
      if (this.closed || data.length === 0) return;
      // Replies finished in one tick leave in one writev instead of one syscall each.
      this.writer.write([data]);
    };
    const idle = setTimeout(() => {
      log.info("nbd handshake not finished in time; closing");
      this.socket.destroy();
    }, this.options.handshakeTimeoutMs);
    try {
      const outcome = await negotiate({ queue: this.queue, send, log }, this.options.exportInfo).finally(() =>
        clearTimeout(idle),
      );
      if (outcome.kind === "aborted") {
        this.socket.end();
        return;
      }
      if (outcome.kind === "violation") {
        log.info({ reason: outcome.reason }, "nbd handshake rejected; closing");
        this.socket.destroy();
        return;
      }
      log.debug({ ...outcome.negotiated }, "nbd transmission");
      this.transmission = new Transmission(
        {
          queue: this.queue,
          send,
          needsDrain: () => this.socket.writableNeedDrain,
          drained: () => this.drained(),
          open: () => !this.closed,
          log,
        },
        {
          volume: this.options.volume,
          negotiated: outcome.negotiated,
          timeoutMs: this.options.timeoutMs,
          ...(this.options.activity !== undefined ? { activity: this.options.activity } : {}),
        },
      );
      const end = await this.transmission.run();
      if (end === "violation") this.socket.destroy();
      else this.socket.end();
    } catch (err) {
      if (!isEof(err)) log.warn({ err }, "nbd session failed; closing");
      this.socket.destroy();
    }
  }

  private drained(): Promise<void> {
    if (this.closed || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
  }
}
