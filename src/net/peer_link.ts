// Outbound link to one peer replica: connects, reconnects with exponential backoff, and sends
// system messages. A message for a peer that is down or not draining is dropped, never queued: the
// register core retransmits every unfinished phase (stubborn links, SPEC §2), so memory stays
// bounded whatever the peer does.
import { connect, type Socket } from "node:net";
import type { HostPort } from "../cli/config.js";
import type { Frame } from "../protocol/codec.js";
import {
  PEER_KEEPALIVE_DELAY_MS,
  RECONNECT_INITIAL_MS,
  RECONNECT_MAX_MS,
  SOCKET_HIGH_WATER_BYTES,
} from "../util/limits.js";
import type { Logger } from "../util/log.js";
import { CoalescingWriter } from "./coalescing_writer.js";

export interface PeerLinkStats {
  sentFrames: number;
  droppedFrames: number;
  connects: number;
}

export class PeerLink {
  private socket: Socket | null = null;
  private writer: CoalescingWriter | null = null;
  private connected = false;
  private closed = false;
  private backoffMs = RECONNECT_INITIAL_MS;
  private reconnectTimer: NodeJS.Timeout | null = null;
  readonly stats: PeerLinkStats = { sentFrames: 0, droppedFrames: 0, connects: 0 };

  constructor(
    readonly rank: number,
    private readonly address: HostPort,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.dial();
  }

  /** True when a frame sent now would be written (lets callers skip encoding doomed frames). */
  canSend(): boolean {
    // While connecting, the socket itself holds frames until the handshake completes (or drops them
    // if it fails): a peer that just restarted gets the messages of that moment, bounded as usual.
    return this.writer !== null && this.writer.queuedBytes() <= SOCKET_HIGH_WATER_BYTES;
  }

  send(frame: Frame): void {
    if (!this.canSend() || !this.writer!.write(frame)) {
      this.stats.droppedFrames++;
      return;
    }
    this.stats.sentFrames++;
  }

  /**
   * The peer evidently is up (it just sent us something): skip the rest of the backoff so a
   * restarted peer gets our replies without waiting for the next retry.
   */
  kick(): void {
    if (this.closed || this.reconnectTimer === null) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.dial();
  }

  close(): void {
    this.closed = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.socket?.destroy();
    this.socket = null;
    this.writer = null;
    this.connected = false;
  }

  private dial(): void {
    if (this.closed) return;
    const socket = connect({ host: this.address.host, port: this.address.port });
    this.socket = socket;
    this.writer = new CoalescingWriter(socket);
    socket.setNoDelay(true);
    socket.once("connect", () => {
      if (this.socket !== socket) return;
      this.connected = true;
      this.backoffMs = RECONNECT_INITIAL_MS;
      this.stats.connects++;
      // Keepalive notices a peer host that vanished without a reset.
      socket.setKeepAlive(true, PEER_KEEPALIVE_DELAY_MS);
      this.logger.info({ peer: this.rank }, "peer link up");
    });
    // Peers answer on their own outbound links; anything arriving here is ignored, not buffered.
    socket.on("data", () => {});
    socket.on("error", (err) => {
      this.logger.debug({ peer: this.rank, err: err.message }, "peer link error");
    });
    socket.once("close", () => {
      if (this.socket !== socket) return;
      if (this.connected) this.logger.info({ peer: this.rank }, "peer link down");
      this.socket = null;
      this.writer = null;
      this.connected = false;
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer !== null) return;
    const delayMs = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_MAX_MS);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.dial();
    }, delayMs);
  }
}
