// A byte-level NBD client for protocol tests: lets a test send exactly the bytes it wants
// (including garbage) and read exactly what the gateway answers.
import { connect, type Socket } from "node:net";
import { ByteQueue } from "../../src/nbd/byte_queue.js";
import { IHAVEOPT, OPTION_REPLY_MAGIC, REQUEST_MAGIC } from "../../src/nbd/constants.js";

export class RawClient {
  readonly queue = new ByteQueue();
  closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on("data", (c: Buffer) => this.queue.push(c));
    socket.on("error", () => {});
    this.closedPromise = new Promise((resolve) =>
      socket.on("close", () => {
        this.closed = true;
        this.queue.end();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port }, () => resolve(new RawClient(s)));
      s.once("error", reject);
    });
  }

  /** Reads the greeting and sends client flags (FIXED_NEWSTYLE | NO_ZEROES by default). */
  async handshakeStart(clientFlags = 3): Promise<Buffer> {
    const greeting = await this.queue.take(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags, 0);
    this.socket.write(flags);
    return greeting;
  }

  /** `announcedBytes` other than data.length sends a header that lies about what follows. */
  sendOption(option: number, data: Buffer = Buffer.alloc(0), announcedBytes = data.length): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(announcedBytes, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.queue.take(20);
    if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error("bad option reply magic");
    const data = Buffer.from(await this.queue.take(h.readUInt32BE(16)));
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
  }

  /** GO with the given export name; returns every reply up to the final one. */
  async go(name = "", option = 7): Promise<Array<{ type: number; data: Buffer }>> {
    const n = Buffer.from(name);
    const data = Buffer.alloc(6 + n.length);
    data.writeUInt32BE(n.length, 0);
    n.copy(data, 4);
    this.sendOption(option, data);
    const replies = [];
    for (;;) {
      const r = await this.optionReply();
      replies.push(r);
      if (r.type !== 3) return replies;
    }
  }

  sendRequest(
    type: number,
    cookie: bigint,
    offset: bigint,
    length: number,
    payload?: Buffer,
    flags = 0,
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(offset, 16);
    h.writeUInt32BE(length, 24);
    this.socket.write(payload === undefined ? h : Buffer.concat([h, payload]));
  }

  /** A simple reply: error and cookie; `dataBytes` more bytes are read when error is 0. */
  async simpleReply(dataBytes = 0): Promise<{ error: number; cookie: bigint; data: Buffer }> {
    const h = await this.queue.take(16);
    if (h.readUInt32BE(0) !== 0x67446698)
      throw new Error(`bad reply magic ${h.readUInt32BE(0).toString(16)}`);
    const error = h.readUInt32BE(4);
    const data =
      error === 0 && dataBytes > 0 ? Buffer.from(await this.queue.take(dataBytes)) : Buffer.alloc(0);
    return { error, cookie: h.readBigUInt64BE(8), data };
  }

  close(): void {
    this.socket.destroy();
  }
}
