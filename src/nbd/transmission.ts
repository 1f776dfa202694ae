// Transmission phase of one NBD connection: parse each 28-byte request (+ WRITE payload), validate,
// dispatch without waiting for earlier requests, reply as each completes. Exactly one reply per
// request: a request that outlives the timeout gets EIO and its late completion is dropped.
// Back-pressure: we stop taking requests while too many are in flight or the socket is not draining.

import {
  NBD_ABSURD_PAYLOAD_BYTES,
  NBD_BLOCK_STATUS_MAX_BYTES,
  NBD_BLOCK_STATUS_MAX_EXTENTS,
  NBD_MAX_INFLIGHT_BYTES_PER_CONNECTION,
  NBD_MAX_INFLIGHT_REQUESTS_PER_CONNECTION,
  NBD_MAX_PAYLOAD_BYTES,
} from "../util/limits.js";
import type { Logger } from "../util/log.js";
import type { NbdActivity } from "./activity.js";
import type { ByteQueue } from "./byte_queue.js";
import {
  AllocationState,
  Command,
  CommandFlag,
  KNOWN_COMMAND_FLAGS,
  NbdErrno,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
} from "./constants.js";
import { nbdErrnoFor, type RequestKind } from "./errno.js";
import type { Negotiated } from "./handshake.js";
import {
  blockStatusChunk,
  errorChunk,
  fillReadReplyHeader,
  readReplyHeaderBytes,
  simpleReply,
} from "./replies.js";
import type { Cancellation, Volume } from "./volume.js";

export interface TransmissionIo {
  queue: ByteQueue;
  /** Writes one whole reply. */
  send(data: Buffer): void;
  /** Whether the socket buffer is over its high-water mark. */
  needsDrain(): boolean;
  /** Resolves when the socket buffer has drained, or the socket is gone. */
  drained(): Promise<void>;
  /** Whether the connection can still carry replies. */
  open(): boolean;
  log: Logger;
}

export interface TransmissionOptions {
  volume: Volume;
  negotiated: Negotiated;
  timeoutMs: number;
  /** Counts every replied request (the gateway's activity log). */
  activity?: NbdActivity;
}

interface Request {
  flags: number;
  type: number;
  cookie: Buffer;
  offset: number;
  length: number;
  payload: Buffer | undefined;
}

export type TransmissionEnd = "disconnect" | "eof" | "violation";

/** Thrown inside a request to answer with this errno. */
class RequestError extends Error {
  constructor(readonly errno: number) {
    super(`nbd errno ${errno}`);
  }
}

export class Transmission {
  private inflightRequests = 0;
  private stopping = false;
  private inflightBytes = 0;
  private readonly waiters: Array<() => void> = [];
  private readonly debug: boolean;

  constructor(
    private readonly io: TransmissionIo,
    private readonly options: TransmissionOptions,
  ) {
    this.debug = io.log.isLevelEnabled("debug");
  }

  /** Serves requests until DISC (after every in-flight request replied), EOF or a violation. */
  async run(): Promise<TransmissionEnd> {
    const { queue, log } = this.io;
    for (;;) {
      await this.roomForMore();
      const header = await queue.take(REQUEST_HEADER_BYTES);
      if (header.readUInt32BE(0) !== REQUEST_MAGIC) {
        log.warn("bad request magic; closing");
        return "violation";
      }
      const offsetBig = header.readBigUInt64BE(16);
      const request: Request = {
        flags: header.readUInt16BE(4),
        type: header.readUInt16BE(6),
        cookie: Buffer.from(header.subarray(8, 16)),
        // Offsets beyond 2^53 cannot be inside any disk; clamp so range checks fail cleanly.
        offset: offsetBig > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offsetBig),
        length: header.readUInt32BE(24),
        payload: undefined,
      };
      if (request.type === Command.Write) {
        if (request.length > NBD_ABSURD_PAYLOAD_BYTES) {
          log.warn({ length: request.length }, "absurd write payload; closing");
          return "violation";
        }
        if (request.length > NBD_MAX_PAYLOAD_BYTES) {
          const startedMs = performance.now();
          await queue.skip(request.length);
          this.replyError(request, NbdErrno.EINVAL, startedMs);
          continue;
        }
        request.payload = await queue.takeOwned(request.length);
      }
      if (request.type === Command.Disc) {
        await this.allReplied();
        return "disconnect";
      }
      if (this.debug) {
        log.debug({ type: request.type, offset: request.offset, length: request.length }, "nbd request");
      }
      if (this.stopping) this.replyError(request, NbdErrno.ESHUTDOWN, performance.now());
      else this.dispatch(request);
    }
  }

  /** Server shutdown: every later request is answered ESHUTDOWN. */
  shutdown(): void {
    this.stopping = true;
  }

  /** Resolves when no request is in flight (used on DISC and on shutdown). */
  allReplied(): Promise<void> {
    if (this.inflightRequests === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.inflightRequests === 0) resolve();
        else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  private async roomForMore(): Promise<void> {
    while (
      this.inflightRequests >= NBD_MAX_INFLIGHT_REQUESTS_PER_CONNECTION ||
      this.inflightBytes >= NBD_MAX_INFLIGHT_BYTES_PER_CONNECTION
    ) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.io.needsDrain()) await this.io.drained();
  }

  private dispatch(request: Request): void {
    const bytes = (request.payload?.length ?? 0) + (request.type === Command.Read ? request.length : 0);
    this.inflightRequests++;
    this.inflightBytes += bytes;
    let done = false;
    const cancel = { aborted: false };
    const startedMs = performance.now();
    const finish = (reply: Buffer, errno: number) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.inflightRequests--;
      this.inflightBytes -= bytes;
      this.options.activity?.replied(request.type, request.length, startedMs, errno);
      this.reply(reply);
      const waiters = this.waiters.splice(0);
      for (const w of waiters) w();
    };
    const timer = setTimeout(() => {
      this.io.log.warn(
        {
          type: request.type,
          offset: request.offset,
          length: request.length,
          timeoutMs: this.options.timeoutMs,
        },
        "nbd request timed out; replying EIO",
      );
      finish(this.errorReply(request, NbdErrno.EIO), NbdErrno.EIO);
      cancel.aborted = true;
    }, this.options.timeoutMs);
    this.execute(request, cancel).then(
      (reply) => finish(reply, 0),
      (err: unknown) => {
        const errno = err instanceof RequestError ? err.errno : nbdErrnoFor(err, kindOf(request.type));
        if (!(err instanceof RequestError) && errno === NbdErrno.EIO) {
          this.io.log.warn({ err, type: request.type, offset: request.offset }, "nbd request failed");
        }
        finish(this.errorReply(request, errno), errno);
      },
    );
  }

  private reply(data: Buffer): void {
    // A reply for a connection that is gone is dropped: replies belong to the socket that asked.
    if (this.io.open()) this.io.send(data);
  }

  /** An error reply to a request that never ran. */
  private replyError(request: Request, errno: number, startedMs: number): void {
    this.options.activity?.replied(request.type, request.length, startedMs, errno);
    this.reply(this.errorReply(request, errno));
  }

  private errorReply(request: Request, errno: number): Buffer {
    return this.options.negotiated.structured
      ? errorChunk(request.cookie, errno)
      : simpleReply(request.cookie, errno);
  }

  /** Runs one request; resolves with its whole success reply. */
  private async execute(request: Request, signal: Cancellation): Promise<Buffer> {
    const { volume, negotiated } = this.options;
    const { offset, length, cookie, flags } = request;
    if ((flags & ~KNOWN_COMMAND_FLAGS) !== 0) throw new RequestError(NbdErrno.EINVAL);
    switch (request.type) {
      case Command.Read: {
        if (length > NBD_MAX_PAYLOAD_BYTES) throw new RequestError(NbdErrno.EINVAL);
        volume.checkRange(offset, length);
        const headerBytes = readReplyHeaderBytes(negotiated.structured);
        const out = Buffer.allocUnsafe(headerBytes + length);
        await volume.read(offset, length, out, headerBytes, signal);
        fillReadReplyHeader(out, negotiated.structured, cookie, offset, length);
        return out;
      }
      case Command.Write:
        await volume.write(offset, request.payload!, signal);
        return simpleReply(cookie, 0);
      case Command.Flush:
        // Every acknowledged write is already durable on a majority.
        return simpleReply(cookie, 0);
      case Command.Trim:
      case Command.Cache:
        // TRIM leaves data unspecified until rewritten, so keeping it is a valid discard; CACHE is a hint.
        volume.checkRange(offset, length);
        return simpleReply(cookie, 0);
      case Command.WriteZeroes:
        await volume.writeZeroes(offset, length, signal);
        return simpleReply(cookie, 0);
      case Command.BlockStatus: {
        if (!negotiated.structured || !negotiated.baseAllocation) throw new RequestError(NbdErrno.EINVAL);
        const maxExtents = (flags & CommandFlag.ReqOne) !== 0 ? 1 : NBD_BLOCK_STATUS_MAX_EXTENTS;
        const extents = await volume.allocation(
          offset,
          length,
          NBD_BLOCK_STATUS_MAX_BYTES,
          maxExtents,
          signal,
        );
        const holeFlags = AllocationState.Hole | AllocationState.Zero;
        return blockStatusChunk(
          cookie,
          extents.map((e) => ({ lengthBytes: e.lengthBytes, flags: e.hole ? holeFlags : 0 })),
        );
      }
      default:
        throw new RequestError(NbdErrno.EINVAL);
    }
  }
}

function kindOf(type: number): RequestKind {
  return type === Command.Write || type === Command.WriteZeroes ? "write" : "read";
}
