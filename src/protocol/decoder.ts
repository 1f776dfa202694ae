// Streaming decoder of atdd messages with the resync rules of SPEC §1.4. Push chunks as they come
// off a socket; get back the events they complete. Bad input never throws: it becomes a
// `rejected` (client command the replica must answer) or a `dropped` event.
//
// Buffering: whole messages are parsed straight from the chunk. Only a message cut by a chunk
// boundary is copied, once, into a buffer of its exact size (known from its first 8 bytes, a range
// type's count included, checked against MAX_RANGE_SECTORS), so feeding a stream one byte at a time
// costs O(n), and nothing is ever sized from an unchecked wire length.
//
// Data ownership: a message assembled into that exact-size buffer owns it, so its decoded data are
// views into it. A message decoded in place from a socket chunk has its data copied out once (a
// view would pin the whole chunk for as long as a cache holds the data).
import { assert } from "../util/assert.js";
import {
  HELD_PAGE_SECTORS,
  MAX_ATDD_MESSAGE_BYTES,
  MAX_REPLICAS,
  SECTOR_SIZE_BYTES,
} from "../util/limits.js";
import { verifyMessageTag } from "./hmac.js";
import {
  atddMessageSize,
  CLIENT_WRITE_DATA_OFFSET,
  clientCommandHeaderLayout,
  isRangeType,
  RANGE_COMMAND_DATA_OFFSET,
  RANGE_RESPONSE_COMMANDS,
  RANGE_RESPONSE_DATA_OFFSET,
  RANGE_SECTOR_BYTES,
  RANGE_SECTORS_OFFSET,
  RANGE_TAG_BYTES,
  RANGE_TAG_TS_OFFSET,
  RANGE_TAG_WR_OFFSET,
  type RangeCommandHeader,
  READ_RESPONSE_DATA_OFFSET,
  rangeBodyOffset,
  rangeCommandHeaderLayout,
  rangeDataOffset,
  rangeResponseHeaderLayout,
  rangeSystemHeaderLayout,
  responseDataBytes,
  responseHeaderLayout,
  SYSTEM_BODY_OFFSET,
  sectorStateBodyLayout,
  systemHeaderLayout,
  TYPE_OFFSET,
  TYPE_PREFIX_BYTES,
  tagBodyLayout,
  writeSectorsDataOffset,
} from "./layouts.js";
import {
  type AtddMessage,
  CLIENT_KEY_BYTES,
  type ClientCommand,
  type ClientCommandName,
  type ClientResponse,
  MAGIC,
  MessageSize,
  MessageType,
  ResponseStatus,
  type ResponseStatusCode,
  SYSTEM_KEY_BYTES,
  type SystemMessage,
  type WireTag,
} from "./messages.js";

export type DropReason =
  | "garbage"
  | "unknownType"
  | "badTag"
  | "invalidSector"
  | "invalidSender"
  /** A tag whose writer rank is no replica of the cluster (only 0, the initial tag, or 1..N). */
  | "invalidWriter";

/**
 * A client command that fails authentication or names sectors beyond the volume: not executed, but
 * answered (SPEC §1.2) with `status` and no content. Everything needed to encode that response.
 */
export interface RejectedCommand {
  kind: "rejected";
  command: ClientCommandName;
  requestNumber: bigint;
  status: ResponseStatusCode;
  /** Range commands (readRange / writeRange / writeSectors) only: the count to echo. */
  sectorCount?: number;
}

export type DecodeEvent =
  | { kind: "message"; message: AtddMessage }
  | RejectedCommand
  | { kind: "dropped"; reason: DropReason; bytes: number };

export interface AtddDecoderOptions {
  /** "replica" accepts client commands and system messages; "client" accepts responses only. */
  role: "replica" | "client";
  clientKey: Buffer;
  /** Without it a replica-role decoder treats system message types as unknown. */
  systemKey?: Buffer;
  /** Volume size; sector indexes must be below it. Default: any index a JS number holds exactly. */
  sectors?: number;
  /** Valid sender ranks are 1..replicaCount. Default: MAX_REPLICAS. */
  replicaCount?: number;
}

const MAGIC_BYTES = MAGIC.length;
const SAFE_INDEX_LIMIT = BigInt(Number.MAX_SAFE_INTEGER) + 1n;

export class AtddDecoder {
  private readonly role: "replica" | "client";
  private readonly clientKey: Buffer;
  private readonly systemKey: Buffer | undefined;
  /** Exclusive upper bound of valid sector indexes (at most 2^53, so exact as a number too). */
  private readonly sectorLimit: bigint;
  private readonly sectorLimitNumber: number;
  private readonly replicaCount: number;

  /** First bytes of a message whose size is not known yet: a magic prefix, then up to the type. */
  private readonly head = Buffer.alloc(TYPE_PREFIX_BYTES);
  private headLength = 0;
  /** A message of known size cut by a chunk boundary, being filled. */
  private partial: Buffer | null = null;
  private partialLength = 0;

  constructor(options: AtddDecoderOptions) {
    assert(options.clientKey.length === CLIENT_KEY_BYTES, "client key must be 32 bytes");
    if (options.systemKey !== undefined) {
      assert(options.role === "replica", "only a replica decodes system messages");
      assert(options.systemKey.length === SYSTEM_KEY_BYTES, "system key must be 64 bytes");
    }
    const sectors = options.sectors;
    if (sectors !== undefined) assert(Number.isSafeInteger(sectors) && sectors >= 1, "bad sector count");
    const replicaCount = options.replicaCount ?? MAX_REPLICAS;
    assert(Number.isInteger(replicaCount) && replicaCount >= 1 && replicaCount <= MAX_REPLICAS, "bad N");
    this.role = options.role;
    this.clientKey = options.clientKey;
    this.systemKey = options.systemKey;
    this.sectorLimit = sectors === undefined ? SAFE_INDEX_LIMIT : BigInt(sectors);
    this.sectorLimitNumber = Number(this.sectorLimit);
    this.replicaCount = replicaCount;
  }

  /** Bytes held back waiting for the rest of a message. Never more than one message. */
  bufferedBytes(): number {
    return this.headLength + this.partialLength;
  }

  push(chunk: Buffer): DecodeEvent[] {
    const events: DecodeEvent[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.partial !== null) offset = this.fillPartial(chunk, offset, events);
      else if (this.headLength > 0) offset = this.fillHead(chunk, offset, events);
      else offset = this.scan(chunk, offset, events);
    }
    assert(this.bufferedBytes() < MAX_ATDD_MESSAGE_BYTES, "decoder buffers less than one message");
    return events;
  }

  /** Nothing buffered: parse whole messages in place; keep only a cut-off tail. */
  private scan(chunk: Buffer, offset: number, events: DecodeEvent[]): number {
    const magicAt = chunk.indexOf(MAGIC, offset);
    if (magicAt < 0) {
      // The last bytes may begin a magic that the next chunk completes.
      const keep = magicPrefixLengthAtEnd(chunk, offset);
      dropGarbage(events, chunk.length - keep - offset);
      chunk.copy(this.head, 0, chunk.length - keep);
      this.headLength = keep;
      return chunk.length;
    }
    dropGarbage(events, magicAt - offset);
    const available = chunk.length - magicAt;
    if (available < TYPE_PREFIX_BYTES) {
      chunk.copy(this.head, 0, magicAt);
      this.headLength = available;
      return chunk.length;
    }
    const size = this.acceptedSize(chunk, magicAt);
    if (size === undefined) {
      drop(events, "unknownType", TYPE_PREFIX_BYTES);
      return magicAt + TYPE_PREFIX_BYTES;
    }
    if (available >= size) {
      this.decodeWhole(chunk, magicAt, size, false, events);
      return magicAt + size;
    }
    this.partial = allocPartial(size);
    this.partialLength = chunk.copy(this.partial, 0, magicAt);
    return chunk.length;
  }

  /** Byte by byte until the first 8 bytes of a message are known (or the magic fails). */
  private fillHead(chunk: Buffer, offset: number, events: DecodeEvent[]): number {
    const byte = chunk[offset]!;
    if (this.headLength < MAGIC_BYTES && byte !== MAGIC[this.headLength]) {
      // "atdd" has no proper suffix that is also a prefix of it, so the held bytes can start no
      // message: drop them all and look at this byte afresh.
      dropGarbage(events, this.headLength);
      this.headLength = 0;
      return offset;
    }
    this.head[this.headLength++] = byte;
    if (this.headLength < TYPE_PREFIX_BYTES) return offset + 1;
    this.headLength = 0;
    const size = this.acceptedSize(this.head, 0);
    if (size === undefined) {
      drop(events, "unknownType", TYPE_PREFIX_BYTES);
    } else {
      this.partial = allocPartial(size);
      this.partialLength = this.head.copy(this.partial, 0);
    }
    return offset + 1;
  }

  private fillPartial(chunk: Buffer, offset: number, events: DecodeEvent[]): number {
    const partial = this.partial!;
    const copied = chunk.copy(partial, this.partialLength, offset);
    this.partialLength += copied;
    if (this.partialLength === partial.length) {
      this.partial = null;
      this.partialLength = 0;
      this.decodeWhole(partial, 0, partial.length, true, events);
    }
    return offset + copied;
  }

  /** Size of the message at `buf[offset..]` if its type is one this role accepts. */
  private acceptedSize(buf: Buffer, offset: number): number | undefined {
    const type = buf[offset + TYPE_OFFSET]!;
    if (this.role === "client") {
      if (!isResponseType(type)) return undefined;
    } else if (isResponseType(type)) {
      return undefined;
    } else if (!isClientCommandType(type) && this.systemKey === undefined) {
      return undefined;
    }
    return atddMessageSize(buf, offset);
  }

  /**
   * `owned`: `buf` is the exact-size buffer this message was assembled into, which belongs to it
   * alone, so data may stay views into it; otherwise `buf` is a socket chunk and data are copied.
   */
  private decodeWhole(
    buf: Buffer,
    offset: number,
    size: number,
    owned: boolean,
    events: DecodeEvent[],
  ): void {
    const type = buf[offset + TYPE_OFFSET]!;
    const range = isRangeType(type);
    if (isClientCommandType(type)) {
      events.push(
        range
          ? this.decodeRangeCommand(buf, offset, size, owned)
          : this.decodeClientCommand(buf, offset, size, owned),
      );
    } else if (isResponseType(type)) {
      events.push(
        range
          ? this.decodeRangeResponse(buf, offset, size, owned)
          : this.decodeResponse(buf, offset, size, owned),
      );
    } else {
      events.push(
        range
          ? this.decodeRangeSystemMessage(buf, offset, size, owned)
          : this.decodeSystemMessage(buf, offset, size, owned),
      );
    }
  }

  private decodeClientCommand(buf: Buffer, offset: number, size: number, owned: boolean): DecodeEvent {
    const header = clientCommandHeaderLayout.decode(buf, offset);
    const command = header.type === MessageType.Read ? "read" : "write";
    // A forged command is answered, not executed (SPEC §1.2); its request number is all we echo.
    if (!verifyMessageTag(buf, offset, size, this.clientKey)) {
      return rejected(command, header.requestNumber, ResponseStatus.AuthFailure);
    }
    if (header.sectorIndex >= this.sectorLimit) {
      return rejected(command, header.requestNumber, ResponseStatus.InvalidSectorIndex);
    }
    const sectorIndex = Number(header.sectorIndex);
    if (command === "read") {
      return {
        kind: "message",
        message: { kind: "clientRead", requestNumber: header.requestNumber, sectorIndex },
      };
    }
    const data = takeData(buf, offset + CLIENT_WRITE_DATA_OFFSET, SECTOR_SIZE_BYTES, owned);
    return {
      kind: "message",
      message: { kind: "clientWrite", requestNumber: header.requestNumber, sectorIndex, data },
    };
  }

  /**
   * READ_RANGE / WRITE_RANGE / ZERO_MAP / HELD_MAP: as READ / WRITE, with the whole run checked
   * against the volume. HELD_PAGES: its first sector must start a page and its last page must
   * start inside the volume (InvalidSectorIndex otherwise).
   * WRITE_SECTORS: as that many WRITEs; an authentic one whose sector list is not strictly
   * increasing, does not start with the header's sector or reaches beyond the volume is answered
   * InvalidSectorIndex, and none of its sectors is written.
   */
  private decodeRangeCommand(buf: Buffer, offset: number, size: number, owned: boolean): DecodeEvent {
    const header = rangeCommandHeaderLayout.decode(buf, offset);
    if (header.type === MessageType.WriteSectors)
      return this.decodeWriteSectors(header, buf, offset, size, owned);
    const isWrite = header.type === MessageType.WriteRange;
    const command = RANGE_COMMAND_NAMES[header.type]!;
    // atddMessageSize admitted only counts 1..MAX_RANGE_SECTORS; the count is echoed even when
    // the tag is bad (the client needs it to match the response), never used for anything else.
    const { sectorCount, requestNumber } = header;
    if (!verifyMessageTag(buf, offset, size, this.clientKey)) {
      return rejected(command, requestNumber, ResponseStatus.AuthFailure, sectorCount);
    }
    const outside =
      command === "heldPages"
        ? header.sectorIndex % PAGE_SECTORS !== 0n ||
          header.sectorIndex + BigInt(sectorCount - 1) * PAGE_SECTORS >= this.sectorLimit
        : header.sectorIndex + BigInt(sectorCount) > this.sectorLimit;
    if (outside) {
      return rejected(command, requestNumber, ResponseStatus.InvalidSectorIndex, sectorCount);
    }
    const sectorIndex = Number(header.sectorIndex);
    let message: ClientCommand;
    if (isWrite) {
      const data = takeData(buf, offset + RANGE_COMMAND_DATA_OFFSET, sectorCount * SECTOR_SIZE_BYTES, owned);
      message = { kind: "clientWriteRange", requestNumber, sectorIndex, sectorCount, data };
    } else {
      message = { kind: RANGE_QUERY_KINDS[command]!, requestNumber, sectorIndex, sectorCount };
    }
    return { kind: "message", message };
  }

  private decodeWriteSectors(
    header: RangeCommandHeader,
    buf: Buffer,
    offset: number,
    size: number,
    owned: boolean,
  ): DecodeEvent {
    const { sectorCount, requestNumber, sectorIndex: first } = header;
    if (!verifyMessageTag(buf, offset, size, this.clientKey)) {
      return rejected("writeSectors", requestNumber, ResponseStatus.AuthFailure, sectorCount);
    }
    const sectors =
      first < this.sectorLimit
        ? decodeSectorList(
            buf,
            offset + RANGE_COMMAND_DATA_OFFSET,
            sectorCount,
            Number(first),
            this.sectorLimitNumber,
          )
        : undefined;
    if (sectors === undefined) {
      return rejected("writeSectors", requestNumber, ResponseStatus.InvalidSectorIndex, sectorCount);
    }
    const data = takeData(
      buf,
      offset + writeSectorsDataOffset(sectorCount),
      sectorCount * SECTOR_SIZE_BYTES,
      owned,
    );
    return {
      kind: "message",
      message: {
        kind: "clientWriteSectors",
        requestNumber,
        sectorIndex: sectors[0]!,
        sectorCount,
        sectors,
        data,
      },
    };
  }

  private decodeResponse(buf: Buffer, offset: number, size: number, owned: boolean): DecodeEvent {
    if (!verifyMessageTag(buf, offset, size, this.clientKey)) return dropped("badTag", size);
    const header = responseHeaderLayout.decode(buf, offset);
    const command = header.type === MessageType.ReadResponse ? "read" : "write";
    // atddMessageSize only admitted the three statuses of SPEC §1.2.
    const status = header.status as ResponseStatusCode;
    const message: ClientResponse = {
      kind: "clientResponse",
      command,
      status,
      requestNumber: header.requestNumber,
    };
    if (size === MessageSize.ReadResponseOk) {
      message.data = takeData(buf, offset + READ_RESPONSE_DATA_OFFSET, SECTOR_SIZE_BYTES, owned);
    }
    return { kind: "message", message };
  }

  private decodeRangeResponse(buf: Buffer, offset: number, size: number, owned: boolean): DecodeEvent {
    if (!verifyMessageTag(buf, offset, size, this.clientKey)) return dropped("badTag", size);
    const header = rangeResponseHeaderLayout.decode(buf, offset);
    const command = RANGE_RESPONSE_COMMANDS[header.type]!;
    // atddMessageSize only admitted the three statuses of SPEC §1.2 and counts 1..MAX_RANGE_SECTORS.
    const status = header.status as ResponseStatusCode;
    const message: ClientResponse = {
      kind: "clientResponse",
      command,
      status,
      requestNumber: header.requestNumber,
      sectorCount: header.sectorCount,
    };
    const length = status === ResponseStatus.Ok ? responseDataBytes(command, header.sectorCount) : 0;
    if (length > 0) message.data = takeData(buf, offset + RANGE_RESPONSE_DATA_OFFSET, length, owned);
    return { kind: "message", message };
  }

  private decodeSystemMessage(buf: Buffer, offset: number, size: number, owned: boolean): DecodeEvent {
    assert(this.systemKey !== undefined, "system types are accepted only with a system key");
    // Forged or misconfigured peers are dropped silently (SPEC §1.4); the caller counts drops.
    if (!verifyMessageTag(buf, offset, size, this.systemKey)) return dropped("badTag", size);
    const header = systemHeaderLayout.decode(buf, offset);
    if (header.sender < 1 || header.sender > this.replicaCount) return dropped("invalidSender", size);
    if (header.sectorIndex >= this.sectorLimit) return dropped("invalidSector", size);
    const base = {
      sender: header.sender,
      opId: Buffer.from(header.opId),
      sectorIndex: Number(header.sectorIndex),
    };
    let message: SystemMessage;
    switch (header.type) {
      case MessageType.ReadProc:
        message = { kind: "readProc", ...base };
        break;
      case MessageType.Ack:
        message = { kind: "ack", ...base };
        break;
      case MessageType.ReadTagProc:
        message = { kind: "readTagProc", ...base };
        break;
      case MessageType.TagValue: {
        const body = tagBodyLayout.decode(buf, offset + SYSTEM_BODY_OFFSET);
        if (body.wr > this.replicaCount) return dropped("invalidWriter", size);
        message = { kind: "tagValue", ...base, ts: body.ts, wr: body.wr };
        break;
      }
      default: {
        const body = sectorStateBodyLayout.decode(buf, offset + SYSTEM_BODY_OFFSET);
        if (body.wr > this.replicaCount) return dropped("invalidWriter", size);
        const data = takeData(body.data, 0, SECTOR_SIZE_BYTES, owned);
        const kind = header.type === MessageType.Value ? "value" : "writeProc";
        message = { kind, ...base, ts: body.ts, wr: body.wr, data };
      }
    }
    return { kind: "message", message };
  }

  /**
   * The range system messages (0x82..0x87, 0x8A, 0x8B): as their per-sector counterparts, over a
   * set of sectors. An authentic message whose sector list is not strictly increasing, does not start
   * with the header's sector or reaches beyond the volume is dropped as invalidSector.
   */
  private decodeRangeSystemMessage(buf: Buffer, offset: number, size: number, owned: boolean): DecodeEvent {
    assert(this.systemKey !== undefined, "system types are accepted only with a system key");
    if (!verifyMessageTag(buf, offset, size, this.systemKey)) return dropped("badTag", size);
    const header = rangeSystemHeaderLayout.decode(buf, offset);
    if (header.sender < 1 || header.sender > this.replicaCount) return dropped("invalidSender", size);
    const { sectorCount } = header;
    // Below the limit, so below 2^53: exact as a number.
    if (header.sectorIndex >= this.sectorLimit) return dropped("invalidSector", size);
    const sectorIndex = Number(header.sectorIndex);
    const sectors = decodeSectorList(
      buf,
      offset + RANGE_SECTORS_OFFSET,
      sectorCount,
      sectorIndex,
      this.sectorLimitNumber,
    );
    if (sectors === undefined) return dropped("invalidSector", size);
    const base = {
      sender: header.sender,
      opId: Buffer.from(header.opId),
      sectorIndex,
      sectorCount,
      sectors,
    };
    const bodyOffset = offset + rangeBodyOffset(sectorCount);
    let message: SystemMessage;
    switch (header.type) {
      case MessageType.ReadRangeProc:
        message = { kind: "readRangeProc", ...base };
        break;
      case MessageType.ReadTagRangeProc:
        message = { kind: "readTagRangeProc", ...base };
        break;
      case MessageType.RangeAck:
        message = { kind: "rangeAck", ...base };
        break;
      case MessageType.ReadTagsRangeProc:
        message = { kind: "readTagsRangeProc", ...base };
        break;
      case MessageType.TagsRangeValue: {
        const tags = decodeRangeTags(buf, bodyOffset, sectorCount, this.replicaCount);
        if (tags === undefined) return dropped("invalidWriter", size);
        message = { kind: "tagsRangeValue", ...base, tags };
        break;
      }
      case MessageType.TagRangeValue: {
        const body = tagBodyLayout.decode(buf, bodyOffset);
        if (body.wr > this.replicaCount) return dropped("invalidWriter", size);
        message = { kind: "tagRangeValue", ...base, ts: body.ts, wr: body.wr };
        break;
      }
      default: {
        // RANGE_VALUE / WRITE_RANGE_PROC: atddMessageSize admitted no other type with this size.
        const tags = decodeRangeTags(buf, bodyOffset, sectorCount, this.replicaCount);
        if (tags === undefined) return dropped("invalidWriter", size);
        const dataOffset = offset + rangeDataOffset(sectorCount);
        const data = takeData(buf, dataOffset, sectorCount * SECTOR_SIZE_BYTES, owned);
        const kind = header.type === MessageType.RangeValue ? "rangeValue" : "writeRangeProc";
        message = { kind, ...base, tags, data };
      }
    }
    return { kind: "message", message };
  }
}

/**
 * The exact-size buffer of a message cut by a chunk boundary. Never from Buffer's shared pool
 * (which allocUnsafe uses below 4 KiB): a view into it must pin this one message and nothing else.
 */
function allocPartial(size: number): Buffer {
  return Buffer.allocUnsafeSlow(size);
}

/**
 * `length` bytes of data at `buf[offset..]`. From a message's own buffer (`owned`), a view. From a
 * socket chunk, one copy into a buffer of its own: a view would pin the whole chunk (often 64 KiB)
 * for as long as a cache holds the data.
 */
function takeData(buf: Buffer, offset: number, length: number, owned: boolean): Buffer {
  if (owned) return buf.subarray(offset, offset + length);
  const data = Buffer.allocUnsafeSlow(length);
  buf.copy(data, 0, offset, offset + length);
  return data;
}

function isClientCommandType(type: number): boolean {
  return (
    type === MessageType.Read ||
    type === MessageType.Write ||
    type === MessageType.ReadRange ||
    type === MessageType.WriteRange ||
    type === MessageType.WriteSectors ||
    type === MessageType.ZeroMap ||
    type === MessageType.HeldMap ||
    type === MessageType.HeldPages
  );
}

function isResponseType(type: number): boolean {
  return (
    type === MessageType.ReadResponse ||
    type === MessageType.WriteResponse ||
    RANGE_RESPONSE_COMMANDS[type] !== undefined
  );
}

/** The command a range command type (other than WRITE_SECTORS) is. */
const RANGE_COMMAND_NAMES: Partial<Record<number, ClientCommandName>> = {
  [MessageType.ReadRange]: "readRange",
  [MessageType.WriteRange]: "writeRange",
  [MessageType.ZeroMap]: "zeroMap",
  [MessageType.HeldMap]: "heldMap",
  [MessageType.HeldPages]: "heldPages",
};

/** The message kind of each range command that carries no data. */
const RANGE_QUERY_KINDS: Partial<
  Record<ClientCommandName, "clientReadRange" | "clientZeroMap" | "clientHeldMap" | "clientHeldPages">
> = {
  readRange: "clientReadRange",
  zeroMap: "clientZeroMap",
  heldMap: "clientHeldMap",
  heldPages: "clientHeldPages",
};

const PAGE_SECTORS = BigInt(HELD_PAGE_SECTORS);

/** 2^32 and the high word from which a u64 is at least 2^53 (beyond any sector limit). */
const U32_SPAN = 0x1_0000_0000;
const UNSAFE_HIGH_WORD = 0x20_0000;

/**
 * The sector list at `buf[listOffset..]`, or undefined unless it is strictly increasing, starts
 * with `first` (the header's sector) and stays below `limit` (at most 2^53). Read as two u32
 * halves: no BigInt per sector, and exact below 2^53.
 */
function decodeSectorList(
  buf: Buffer,
  listOffset: number,
  sectorCount: number,
  first: number,
  limit: number,
): number[] | undefined {
  const sectors: number[] = new Array(sectorCount);
  let at = listOffset;
  let previous = -1;
  for (let i = 0; i < sectorCount; i++) {
    const high = buf.readUInt32BE(at);
    if (high >= UNSAFE_HIGH_WORD) return undefined;
    const sector = high * U32_SPAN + buf.readUInt32BE(at + 4);
    if (sector <= previous) return undefined;
    sectors[i] = sector;
    previous = sector;
    at += RANGE_SECTOR_BYTES;
  }
  // Strictly increasing: the first is the smallest and the last the largest.
  if (sectors[0] !== first || previous >= limit) return undefined;
  return sectors;
}

/** `sectorCount` range tags starting at `buf[offset..]`; undefined if a writer rank is above N. */
function decodeRangeTags(
  buf: Buffer,
  offset: number,
  sectorCount: number,
  replicaCount: number,
): WireTag[] | undefined {
  const tags: WireTag[] = new Array(sectorCount);
  let at = offset;
  // A run written by one write carries one tag for all its sectors: equal neighbours share one
  // (immutable) object rather than costing an object and a BigInt each.
  let previous: WireTag | undefined;
  let previousHi = 0;
  let previousLo = 0;
  for (let i = 0; i < sectorCount; i++) {
    const wr = buf[at + RANGE_TAG_WR_OFFSET]!;
    if (wr > replicaCount) return undefined;
    const hi = buf.readUInt32BE(at + RANGE_TAG_TS_OFFSET);
    const lo = buf.readUInt32BE(at + RANGE_TAG_TS_OFFSET + 4);
    if (previous === undefined || hi !== previousHi || lo !== previousLo || wr !== previous.wr) {
      previous = { ts: (BigInt(hi) << 32n) | BigInt(lo), wr };
      previousHi = hi;
      previousLo = lo;
    }
    tags[i] = previous;
    at += RANGE_TAG_BYTES;
  }
  return tags;
}

/** Length of the longest proper magic prefix that ends `chunk` (after `from`). */
function magicPrefixLengthAtEnd(chunk: Buffer, from: number): number {
  for (let length = Math.min(MAGIC_BYTES - 1, chunk.length - from); length > 0; length--) {
    if (chunk.compare(MAGIC, 0, length, chunk.length - length) === 0) return length;
  }
  return 0;
}

function rejected(
  command: ClientCommandName,
  requestNumber: bigint,
  status: ResponseStatusCode,
  sectorCount?: number,
): DecodeEvent {
  return sectorCount === undefined
    ? { kind: "rejected", command, requestNumber, status }
    : { kind: "rejected", command, requestNumber, status, sectorCount };
}

function dropped(reason: DropReason, bytes: number): DecodeEvent {
  return { kind: "dropped", reason, bytes };
}

function drop(events: DecodeEvent[], reason: DropReason, bytes: number): void {
  events.push(dropped(reason, bytes));
}

/** Consecutive garbage is reported as one event, so a noisy peer costs one event per chunk. */
function dropGarbage(events: DecodeEvent[], bytes: number): void {
  if (bytes === 0) return;
  const last = events[events.length - 1];
  if (last !== undefined && last.kind === "dropped" && last.reason === "garbage") last.bytes += bytes;
  else events.push(dropped("garbage", bytes));
}
