// One client connection to one replica: sends READ/WRITE commands (SPEC §1.1) and the range
// extensions READ_RANGE/WRITE_RANGE (0x88/0x89: a run of 1..MAX_RANGE_SECTORS sectors in one
// message), and matches the responses, which may come back in any order, by request number. Used by the NBD gateway, tests
// and benchmarks. No retries here: when the connection dies every outstanding command fails with
// REPLICA_UNAVAILABLE and the caller decides where (and whether) to resend.
import { randomBytes } from "node:crypto";
import net from "node:net";
import { TurnCorkedWriter } from "../net/turn_corked_writer.js";
import { encodeClientCommandFrame, type Frame } from "../protocol/codec.js";
import { AtddDecoder, type DecodeEvent } from "../protocol/decoder.js";
import { responseDataBytes } from "../protocol/layouts.js";
import {
  CLIENT_KEY_BYTES,
  type ClientCommand,
  type ClientCommandName,
  type ClientResponse,
  ResponseStatus,
} from "../protocol/messages.js";
import { AssertionError, assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";
import {
  HELD_MAP_MAX_SECTORS,
  HELD_PAGE_SECTORS,
  HELD_PAGES_MAX,
  MAX_RANGE_SECTORS,
  REPLICA_CONNECT_TIMEOUT_MS,
  SECTOR_SIZE_BYTES,
} from "../util/limits.js";
import { componentLogger, type Logger } from "../util/log.js";

export interface ReplicaConnectionOptions {
  host: string;
  port: number;
  clientKey: Buffer;
  connectTimeoutMs?: number;
  /**
   * `write` calls of one event-loop turn leave as one WRITE_SECTORS command (a lone one as a
   * WRITE): one frame, HMAC and response for all of them. Each call still resolves or fails on
   * its own. Off by default, so that a plain client sends the standard WRITE.
   */
  batchWrites?: boolean;
}

/** A `write` waiting for the end of the turn to leave with the others (batchWrites). */
interface QueuedWrite {
  sectorIndex: number;
  data: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Outstanding {
  command: ClientCommandName;
  sectorIndex: number;
  /** Sectors the command covers: 1 for READ/WRITE. */
  sectorCount: number;
  resolve: (data: Buffer | undefined) => void;
  reject: (err: Error) => void;
}

const U64_MASK = (1n << 64n) - 1n;

export class ReplicaConnection {
  private readonly outstanding = new Map<bigint, Outstanding>();
  private outstandingSectors = 0;
  private readonly closeListeners: ((err?: Error) => void)[] = [];
  private readonly decoder: AtddDecoder;
  /** Random start, so a replica never sees two live connections reuse the same numbers. */
  private nextRequestNumber = randomBytes(8).readBigUInt64BE(0);
  private readonly writer: TurnCorkedWriter;
  private closed = false;
  private closeError: Error | undefined;
  /** Close listeners already ran; later ones are called right away (on the next tick). */
  private closeNotified = false;
  private droppedBytes = 0;
  /** batchWrites: this turn's writes, and their sectors (a sector twice never shares a command). */
  private queuedWrites: QueuedWrite[] = [];
  private readonly queuedSectors = new Set<number>();
  private writeFlushScheduled = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly clientKey: Buffer,
    private readonly address: string,
    private readonly log: Logger,
    private readonly batchWrites: boolean,
  ) {
    this.decoder = new AtddDecoder({ role: "client", clientKey });
    this.writer = new TurnCorkedWriter(socket);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => {
      this.closeError ??= err;
    });
    socket.on("close", () => this.onSocketClosed());
  }

  static connect(options: ReplicaConnectionOptions): Promise<ReplicaConnection> {
    assert(options.clientKey.length === CLIENT_KEY_BYTES, "client key must be 32 bytes");
    const timeoutMs = options.connectTimeoutMs ?? REPLICA_CONNECT_TIMEOUT_MS;
    assert(timeoutMs > 0, "connect timeout must be positive");
    const address = `${options.host}:${options.port}`;
    const log = componentLogger("replica_connection", { replica: address });
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: options.host, port: options.port });
      const fail = (cause: Error) => {
        clearTimeout(timer);
        socket.removeListener("connect", onConnect);
        socket.destroy();
        log.info({ err: cause.message }, "connect failed");
        reject(
          new AtomicDiskError(
            "REPLICA_UNAVAILABLE",
            `cannot connect to replica ${address}: ${cause.message}`,
            { cause },
          ),
        );
      };
      const onConnect = () => {
        clearTimeout(timer);
        socket.removeListener("error", fail);
        log.info("connected");
        resolve(new ReplicaConnection(socket, options.clientKey, address, log, options.batchWrites ?? false));
      };
      const timer = setTimeout(() => {
        const cause = Object.assign(new Error(`connect timed out after ${timeoutMs} ms`), {
          code: "ETIMEDOUT",
        });
        socket.removeListener("error", fail);
        // The socket may still emit an error while being destroyed; nobody needs it any more.
        socket.on("error", () => {});
        fail(cause);
      }, timeoutMs);
      socket.once("error", fail);
      socket.once("connect", onConnect);
    });
  }

  async read(sectorIndex: number): Promise<Buffer> {
    const data = await this.send("read", sectorIndex, 1, undefined);
    assert(data !== undefined, "a successful READ carries its sector");
    return data;
  }

  async write(sectorIndex: number, data: Buffer): Promise<void> {
    assert(data.length === SECTOR_SIZE_BYTES, "WRITE data must be exactly one sector");
    if (this.batchWrites) await this.queueWrite(sectorIndex, data);
    else await this.send("write", sectorIndex, 1, data);
  }

  /** Sectors [sectorIndex, sectorIndex + sectorCount) in one READ_RANGE: sector i at i * 4096. */
  async readRange(sectorIndex: number, sectorCount: number): Promise<Buffer> {
    assertRunLength(sectorCount);
    const data = await this.send("readRange", sectorIndex, sectorCount, undefined);
    assert(data !== undefined, "a successful READ_RANGE carries its sectors");
    return data;
  }

  /**
   * One ZERO_MAP of sectors [sectorIndex, sectorIndex + sectorCount): a bit per sector, most
   * significant first, set when the sector reads as all zeros (a register read, so it reflects
   * every write acknowledged before it).
   */
  async zeroMap(sectorIndex: number, sectorCount: number): Promise<Buffer> {
    assertRunLength(sectorCount);
    const bits = await this.send("zeroMap", sectorIndex, sectorCount, undefined);
    assert(bits !== undefined, "a successful ZERO_MAP carries its bitmap");
    return bits;
  }

  /**
   * One HELD_MAP of sectors [sectorIndex, sectorIndex + sectorCount), count up to
   * HELD_MAP_MAX_SECTORS: a bit per sector, most significant first, set when this replica's store
   * holds a record of the sector. No register operation: this one replica's view only.
   */
  async heldMap(sectorIndex: number, sectorCount: number): Promise<Buffer> {
    assertRunLength(sectorCount, HELD_MAP_MAX_SECTORS);
    const bits = await this.send("heldMap", sectorIndex, sectorCount, undefined);
    assert(bits !== undefined, "a successful HELD_MAP carries its bitmap");
    return bits;
  }

  /**
   * One HELD_PAGES of pageCount pages of HELD_PAGE_SECTORS sectors from firstSector (a multiple of
   * HELD_PAGE_SECTORS), count up to HELD_PAGES_MAX: a bit per page, most significant first, set
   * when this replica's store holds a record of any sector of the page (as HELD_MAP counts them).
   */
  async heldPages(firstSector: number, pageCount: number): Promise<Buffer> {
    assertRunLength(pageCount, HELD_PAGES_MAX);
    assert(firstSector % HELD_PAGE_SECTORS === 0, "a HELD_PAGES starts at a page's first sector");
    const bits = await this.send("heldPages", firstSector, pageCount, undefined);
    assert(bits !== undefined, "a successful HELD_PAGES carries its bitmap");
    return bits;
  }

  /** One WRITE_RANGE of data.length / 4096 whole sectors starting at sectorIndex. */
  async writeRange(sectorIndex: number, data: Buffer): Promise<void> {
    assert(data.length % SECTOR_SIZE_BYTES === 0, "WRITE_RANGE data must be whole sectors");
    const sectorCount = data.length / SECTOR_SIZE_BYTES;
    assertRunLength(sectorCount);
    await this.send("writeRange", sectorIndex, sectorCount, data);
  }

  /**
   * Sectors of the commands sent and not yet answered (a range of k sectors counts k): the work
   * queued at the replica, which the gateway's pool balances. Callers bound this; the connection
   * itself does not.
   */
  inflight(): number {
    return this.outstandingSectors;
  }

  /** batchWrites: some `write` calls of this turn wait to leave together. */
  gatheringWrites(): boolean {
    return this.queuedWrites.length > 0;
  }

  /** Closes the connection; outstanding commands fail with REPLICA_UNAVAILABLE. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.markClosed();
    this.socket.destroy();
  }

  /** Called once when the connection ends, with the socket error if there was one. */
  onClose(listener: (err?: Error) => void): void {
    if (this.closeNotified) {
      process.nextTick(() => listener(this.closeError));
      return;
    }
    this.closeListeners.push(listener);
  }

  private send(
    command: ClientCommandName,
    sectorIndex: number,
    sectorCount: number,
    data: Buffer | undefined,
  ): Promise<Buffer | undefined> {
    assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0, `bad sector index ${sectorIndex}`);
    if (this.closed) return Promise.reject(this.unavailable());
    return new Promise((resolve, reject) => {
      // Counted once sent: a command that fails to encode (a programmer error) is not in flight.
      this.dispatch(commandMessage(command, 0n, sectorIndex, sectorCount, data), { resolve, reject });
      this.outstandingSectors += inflightWeight(command, sectorCount);
    });
  }

  /** Sends `cmd` under a fresh request number; the caller counts its sectors in flight. */
  private dispatch(cmd: ClientCommand, settle: Pick<Outstanding, "resolve" | "reject">): void {
    const requestNumber = this.nextRequestNumber;
    this.nextRequestNumber = (requestNumber + 1n) & U64_MASK;
    assert(!this.outstanding.has(requestNumber), "request number reused while outstanding");
    cmd.requestNumber = requestNumber;
    const message = encodeClientCommandFrame(cmd, this.clientKey);
    const sectorCount = cmd.kind === "clientRead" || cmd.kind === "clientWrite" ? 1 : cmd.sectorCount;
    this.outstanding.set(requestNumber, {
      command: COMMAND_NAMES[cmd.kind],
      sectorIndex: cmd.sectorIndex,
      sectorCount,
      ...settle,
    });
    this.enqueue(message);
  }

  private queueWrite(sectorIndex: number, data: Buffer): Promise<void> {
    assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0, `bad sector index ${sectorIndex}`);
    if (this.closed) return Promise.reject(this.unavailable());
    if (this.queuedSectors.has(sectorIndex) || this.queuedWrites.length >= MAX_RANGE_SECTORS) {
      this.flushWrites();
    }
    return new Promise((resolve, reject) => {
      this.queuedWrites.push({ sectorIndex, data, resolve, reject });
      this.queuedSectors.add(sectorIndex);
      this.outstandingSectors++;
      if (!this.writeFlushScheduled) {
        this.writeFlushScheduled = true;
        setImmediate(this.flushWrites);
      }
    });
  }

  /** The queued writes as one command: WRITE_SECTORS over their sectors in ascending order. */
  private readonly flushWrites = (): void => {
    this.writeFlushScheduled = false;
    const writes = this.queuedWrites;
    if (writes.length === 0) return;
    this.queuedWrites = [];
    this.queuedSectors.clear();
    if (writes.length === 1) {
      const [only] = writes as [QueuedWrite];
      const cmd = commandMessage("write", 0n, only.sectorIndex, 1, only.data);
      this.dispatch(cmd, { resolve: () => only.resolve(), reject: only.reject });
      return;
    }
    writes.sort((a, b) => a.sectorIndex - b.sectorIndex);
    const data = Buffer.allocUnsafe(writes.length * SECTOR_SIZE_BYTES);
    const sectors = new Array<number>(writes.length);
    for (let i = 0; i < writes.length; i++) {
      sectors[i] = writes[i]!.sectorIndex;
      writes[i]!.data.copy(data, i * SECTOR_SIZE_BYTES);
    }
    const cmd: ClientCommand = {
      kind: "clientWriteSectors",
      requestNumber: 0n,
      sectorIndex: sectors[0]!,
      sectorCount: writes.length,
      sectors,
      data,
    };
    this.dispatch(cmd, {
      resolve: () => {
        for (const w of writes) w.resolve();
      },
      reject: (err) => {
        for (const w of writes) w.reject(err);
      },
    });
  };

  /** Commands issued in one tick leave in one writev: far fewer syscalls and TCP segments. */
  private enqueue(message: Frame): void {
    this.writer.write(message);
  }

  private onData(chunk: Buffer): void {
    const events = this.decoder.push(chunk);
    for (const event of events) this.onEvent(event);
  }

  private onEvent(event: DecodeEvent): void {
    if (event.kind === "message") {
      assert(event.message.kind === "clientResponse", "a client-role decoder yields only responses");
      this.onResponse(event.message);
      return;
    }
    assert(event.kind === "dropped", "a client-role decoder rejects nothing");
    // A bad tag here usually means the gateway and replica disagree on the client key.
    if (this.droppedBytes === 0) this.log.warn({ reason: event.reason }, "dropping bad input from replica");
    else this.log.debug({ reason: event.reason, bytes: event.bytes }, "dropped bad input");
    this.droppedBytes += event.bytes;
  }

  private onResponse(response: ClientResponse): void {
    const entry = this.outstanding.get(response.requestNumber);
    if (entry === undefined) {
      this.log.debug(
        { requestNumber: response.requestNumber.toString() },
        "response to no outstanding command",
      );
      return;
    }
    this.outstanding.delete(response.requestNumber);
    this.outstandingSectors -= inflightWeight(entry.command, entry.sectorCount);
    const mismatch = responseMismatch(entry, response);
    if (mismatch !== undefined) {
      entry.reject(new AtomicDiskError("PROTOCOL_VIOLATION", `replica ${this.address} answered ${mismatch}`));
      return;
    }
    switch (response.status) {
      case ResponseStatus.Ok:
        entry.resolve(response.data);
        return;
      case ResponseStatus.AuthFailure:
        entry.reject(
          new AtomicDiskError(
            "AUTH_FAILED",
            `replica ${this.address} rejected the command's HMAC (client key?)`,
          ),
        );
        return;
      case ResponseStatus.InvalidSectorIndex:
        entry.reject(
          new AtomicDiskError(
            "INVALID_SECTOR_INDEX",
            `${describeRun(entry)} beyond the volume served by ${this.address}`,
          ),
        );
        return;
    }
  }

  private onSocketClosed(): void {
    this.log.info({ err: this.closeError?.message }, "connection closed");
    this.markClosed();
    this.closeNotified = true;
    const listeners = this.closeListeners.splice(0);
    for (const listener of listeners) listener(this.closeError);
  }

  private markClosed(): void {
    this.closed = true;
    const queued = this.queuedWrites;
    this.queuedWrites = [];
    this.queuedSectors.clear();
    if (this.outstanding.size === 0 && queued.length === 0) return;
    const err = this.unavailable();
    const entries = [...this.outstanding.values()];
    this.outstanding.clear();
    this.outstandingSectors = 0;
    for (const entry of entries) entry.reject(err);
    for (const write of queued) write.reject(err);
  }

  private unavailable(): AtomicDiskError {
    const reason = this.closeError?.message ?? "connection closed";
    return new AtomicDiskError("REPLICA_UNAVAILABLE", `replica ${this.address}: ${reason}`, {
      cause: this.closeError,
    });
  }
}

/**
 * What a command adds to inflight(): its sectors, except a HELD_MAP or HELD_PAGES, which the
 * replica answers at once from memory and which would otherwise look like up to 32768 sectors of
 * queued work to the pool.
 */
function inflightWeight(command: ClientCommandName, sectorCount: number): number {
  return command === "heldMap" || command === "heldPages" ? 1 : sectorCount;
}

function assertRunLength(sectorCount: number, maxSectors = MAX_RANGE_SECTORS): void {
  assert(
    Number.isSafeInteger(sectorCount) && sectorCount >= 1 && sectorCount <= maxSectors,
    `a range holds 1..${maxSectors} sectors, not ${sectorCount}`,
  );
}

function commandMessage(
  command: ClientCommandName,
  requestNumber: bigint,
  sectorIndex: number,
  sectorCount: number,
  data: Buffer | undefined,
): ClientCommand {
  switch (command) {
    case "read":
      return { kind: "clientRead", requestNumber, sectorIndex };
    case "write":
      return { kind: "clientWrite", requestNumber, sectorIndex, data: data! };
    case "readRange":
      return { kind: "clientReadRange", requestNumber, sectorIndex, sectorCount };
    case "writeRange":
      return { kind: "clientWriteRange", requestNumber, sectorIndex, sectorCount, data: data! };
    case "zeroMap":
      return { kind: "clientZeroMap", requestNumber, sectorIndex, sectorCount };
    case "heldMap":
      return { kind: "clientHeldMap", requestNumber, sectorIndex, sectorCount };
    case "heldPages":
      return { kind: "clientHeldPages", requestNumber, sectorIndex, sectorCount };
    case "writeSectors":
      throw new AssertionError("WRITE_SECTORS is built from queued writes (flushWrites)");
  }
}

const COMMAND_NAMES: Record<ClientCommand["kind"], ClientCommandName> = {
  clientRead: "read",
  clientWrite: "write",
  clientReadRange: "readRange",
  clientWriteRange: "writeRange",
  clientWriteSectors: "writeSectors",
  clientZeroMap: "zeroMap",
  clientHeldMap: "heldMap",
  clientHeldPages: "heldPages",
};

const WIRE_NAMES: Record<ClientCommandName, string> = {
  read: "READ",
  write: "WRITE",
  readRange: "READ_RANGE",
  writeRange: "WRITE_RANGE",
  writeSectors: "WRITE_SECTORS",
  zeroMap: "ZERO_MAP",
  heldMap: "HELD_MAP",
  heldPages: "HELD_PAGES",
};

/** Commands whose response echoes their sector count. */
function isRange(command: ClientCommandName): boolean {
  return command !== "read" && command !== "write";
}

function describeRun(entry: Outstanding): string {
  if (entry.command === "writeSectors")
    return `${entry.sectorCount} sectors from ${entry.sectorIndex} on are`;
  return isRange(entry.command)
    ? `sectors ${entry.sectorIndex}..${entry.sectorIndex + entry.sectorCount - 1} are`
    : `sector ${entry.sectorIndex} is`;
}

/** Why `response` cannot be the answer to `entry`, or undefined if it can. */
function responseMismatch(entry: Outstanding, response: ClientResponse): string | undefined {
  if (entry.command !== response.command) {
    return `a ${WIRE_NAMES[entry.command]} as a ${WIRE_NAMES[response.command] ?? String(response.command)}`;
  }
  if (isRange(entry.command) && response.sectorCount !== entry.sectorCount) {
    return `a ${WIRE_NAMES[entry.command]} of ${entry.sectorCount} sectors with a count of ${response.sectorCount}`;
  }
  if (response.status === ResponseStatus.Ok) {
    const expected = responseDataBytes(entry.command, entry.sectorCount);
    if ((response.data?.length ?? 0) !== expected) {
      return `a ${WIRE_NAMES[entry.command]} with ${response.data?.length ?? 0} bytes instead of ${expected}`;
    }
  }
  return undefined;
}
