// One accepted TCP connection: a client (gateway, tool) or a peer's outbound link; the message
// types tell them apart. Each connection has its own decoder, so a slow or hostile sender only
// ever stalls itself.
import type { Socket } from "node:net";
import { encodeClientResponseFrame } from "../protocol/codec.js";
import { AtddDecoder, type DecodeEvent } from "../protocol/decoder.js";
import {
  type ClientCommand,
  type ClientResponse,
  isClientCommand,
  type SystemMessage,
} from "../protocol/messages.js";
import { MAX_CLIENT_INFLIGHT_SECTORS_PER_CONNECTION, SOCKET_HIGH_WATER_BYTES } from "../util/limits.js";
import type { Logger } from "../util/log.js";
import { CoalescingWriter } from "./coalescing_writer.js";
import type { ConnectionAdmission } from "./connection_admission.js";
import type { RateLimitedLog } from "./rate_limited_log.js";

export interface InboundHandler {
  clientCommand(connection: InboundConnection, command: ClientCommand): void;
  systemMessage(message: SystemMessage): void;
}

export interface InboundCounters {
  droppedMessages: number;
  droppedBytes: number;
  badTags: number;
  rejectedCommands: number;
}

export interface InboundConnectionOptions {
  socket: Socket;
  clientKey: Buffer;
  systemKey: Buffer;
  sectors: number;
  replicaCount: number;
  handler: InboundHandler;
  counters: InboundCounters;
  badInputLog: RateLimitedLog;
  admission: ConnectionAdmission;
  logger: Logger;
}

export class InboundConnection {
  private readonly socket: Socket;
  private readonly writer: CoalescingWriter;
  private readonly decoder: AtddDecoder;
  private readonly clientKey: Buffer;
  private readonly options: InboundConnectionOptions;
  /** Sectors of client commands handed to the register core and not yet answered. */
  private inflightSectors = 0;
  private paused = false;
  private open = true;
  /** Set by the first authenticated message (connection_admission.ts). */
  private identified = false;
  private readonly closeCallbacks: Array<() => void> = [];
  readonly remote: string;

  constructor(options: InboundConnectionOptions) {
    this.options = options;
    this.socket = options.socket;
    this.clientKey = options.clientKey;
    this.remote = `${this.socket.remoteAddress}:${this.socket.remotePort}`;
    this.writer = new CoalescingWriter(this.socket);
    this.decoder = new AtddDecoder({
      role: "replica",
      clientKey: options.clientKey,
      systemKey: options.systemKey,
      sectors: options.sectors,
      replicaCount: options.replicaCount,
    });
    this.socket.setNoDelay(true);
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("drain", () => this.maybeResume());
    this.socket.on("error", (err) =>
      options.logger.debug({ remote: this.remote, err: err.message }, "socket error"),
    );
    this.socket.once("close", () => {
      this.open = false;
      options.admission.closed(this);
      for (const cb of this.closeCallbacks) cb();
    });
    options.admission.accepted(this);
  }

  isOpen(): boolean {
    return this.open;
  }

  onClose(cb: () => void): void {
    this.closeCallbacks.push(cb);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Answers a command that reached the register core (it counted as in flight). */
  completeCommand(response: ClientResponse): void {
    this.inflightSectors -= response.sectorCount ?? 1;
    this.sendResponse(response);
    this.maybeResume();
  }

  private sendResponse(response: ClientResponse): void {
    if (!this.open) return;
    this.writer.write(encodeClientResponseFrame(response, this.clientKey));
  }

  private onData(chunk: Buffer): void {
    let events: DecodeEvent[];
    try {
      events = this.decoder.push(chunk);
    } catch (err) {
      // A decoder bug must not take the whole replica down with it: its state is per connection,
      // so dropping this connection discards everything it could have corrupted.
      this.options.logger.error({ remote: this.remote, err }, "decoder failed; closing connection");
      this.socket.destroy();
      return;
    }
    for (const event of events) {
      if (!this.open) return;
      switch (event.kind) {
        case "message": {
          const message = event.message;
          if (message.kind === "clientResponse") break;
          if (!this.identified) {
            const role = isClientCommand(message) ? "client" : "peer";
            if (!this.options.admission.identified(this, role)) {
              this.open = false;
              this.socket.destroy();
              return;
            }
            this.identified = true;
          }
          if (isClientCommand(message)) {
            this.inflightSectors += "sectorCount" in message ? message.sectorCount : 1;
            this.options.handler.clientCommand(this, message);
          } else {
            this.options.handler.systemMessage(message);
          }
          break;
        }
        case "rejected":
          // Not executed (bad tag or sector index): answered at once, with no content (SPEC §1.2).
          // A range command's response echoes its sector count.
          this.options.counters.rejectedCommands++;
          this.sendResponse({
            kind: "clientResponse",
            command: event.command,
            status: event.status,
            requestNumber: event.requestNumber,
            ...(event.sectorCount !== undefined ? { sectorCount: event.sectorCount } : {}),
          });
          break;
        case "dropped": {
          const counters = this.options.counters;
          counters.droppedMessages++;
          counters.droppedBytes += event.bytes;
          if (event.reason === "badTag") counters.badTags++;
          this.options.badInputLog.warn(
            { remote: this.remote, reason: event.reason, bytes: event.bytes, badTags: counters.badTags },
            "dropped bad input",
          );
          break;
        }
      }
    }
    this.maybePause();
  }

  /** Stop reading a sender that has too much in flight or does not drain its replies. */
  private maybePause(): void {
    if (this.paused || !this.open) return;
    if (
      this.inflightSectors >= MAX_CLIENT_INFLIGHT_SECTORS_PER_CONNECTION ||
      this.writer.queuedBytes() > SOCKET_HIGH_WATER_BYTES
    ) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private maybeResume(): void {
    if (!this.paused || !this.open) return;
    // Hysteresis: resume at half the limits so a connection at the edge does not flap.
    if (
      this.inflightSectors < MAX_CLIENT_INFLIGHT_SECTORS_PER_CONNECTION / 2 &&
      this.writer.queuedBytes() <= SOCKET_HIGH_WATER_BYTES / 2
    ) {
      this.paused = false;
      this.socket.resume();
    }
  }
}
