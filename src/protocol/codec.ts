// Encoders of the atdd messages (SPEC §1). Inputs come from our own code, so bad inputs are
// programmer errors and fail loudly. Decoding lives in decoder.ts (it must survive a hostile stream).
import { AssertionError, assert, unreachable } from "../util/assert.js";
import { HELD_PAGE_SECTORS, MAX_RANGE_SECTORS, MAX_REPLICAS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import { signMessage, tagOf } from "./hmac.js";
import {
  CLIENT_WRITE_DATA_OFFSET,
  clientCommandHeaderLayout,
  maxSectorsOf,
  RANGE_COMMAND_DATA_OFFSET,
  RANGE_RESPONSE_DATA_OFFSET,
  RANGE_SECTOR_BYTES,
  RANGE_SECTORS_OFFSET,
  RANGE_TAG_BYTES,
  RANGE_TAG_TS_OFFSET,
  RANGE_TAG_WR_OFFSET,
  READ_RESPONSE_DATA_OFFSET,
  rangeBodyOffset,
  rangeCommandHeaderLayout,
  rangeCommandSize,
  rangeDataOffset,
  rangeProcMessageSize,
  rangeResponseHeaderLayout,
  rangeResponseSize,
  rangeStateMessageSize,
  rangeSystemHeaderLayout,
  responseDataBytes,
  responseHeaderLayout,
  SYSTEM_BODY_OFFSET,
  sectorStateBodyLayout,
  systemHeaderLayout,
  tagBodyLayout,
  tagRangeValueMessageSize,
  tagsRangeValueMessageSize,
  writeSectorsDataOffset,
} from "./layouts.js";
import {
  type AtddMessage,
  CLIENT_KEY_BYTES,
  type ClientCommand,
  type ClientCommandName,
  type ClientResponse,
  HMAC_TAG_BYTES,
  isClientCommand,
  MAGIC,
  MessageSize,
  MessageType,
  OP_ID_BYTES,
  type RangeSystemMessage,
  ResponseStatus,
  SYSTEM_KEY_BYTES,
  type SystemMessage,
  type WireTag,
} from "./messages.js";

const U64_LIMIT = 1n << 64n;

/**
 * An encoded message as parts whose concatenation is its bytes on the wire. A range message's
 * data (up to 1 MiB) stays the caller's buffer, a view: no copy into a frame, one HMAC over the
 * parts, and the socket writer hands the parts to the kernel as they are.
 */
export type Frame = readonly Buffer[];

/** Data at least this large is framed as a view; smaller data is copied into one buffer. */
const FRAME_VIEW_DATA_BYTES = 32 * 1024;

/** `head` (zeroed padding, fields encoded) followed by `data`, then the tag over both. */
function frameWithData(head: Buffer, data: Buffer, key: Buffer): Frame {
  if (data.length >= FRAME_VIEW_DATA_BYTES) return [head, data, tagOf(key, head, data)];
  const message = Buffer.allocUnsafe(head.length + data.length + HMAC_TAG_BYTES);
  head.copy(message, 0);
  data.copy(message, head.length);
  signMessage(message, key);
  return [message];
}

/** The bytes of a frame as one buffer (no copy when it is one part already). */
export function frameBytes(frame: Frame): Buffer {
  return frame.length === 1 ? frame[0]! : Buffer.concat(frame as Buffer[]);
}

function assertSectorIndex(sectorIndex: number): void {
  assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0, `bad sector index ${sectorIndex}`);
}

function assertRequestNumber(requestNumber: bigint): void {
  assert(requestNumber >= 0n && requestNumber < U64_LIMIT, `request number out of u64: ${requestNumber}`);
}

function assertSectorData(data: Buffer | undefined): asserts data is Buffer {
  assert(data !== undefined && data.length === SECTOR_SIZE_BYTES, "sector data must be 4096 bytes");
}

/** A run [sectorIndex, sectorIndex + sectorCount) of 1..maxSectors safe sector indexes. */
function assertRun(sectorIndex: number, sectorCount: number, maxSectors = MAX_RANGE_SECTORS): void {
  assert(
    Number.isInteger(sectorCount) && sectorCount >= 1 && sectorCount <= maxSectors,
    `a range holds 1..${maxSectors} sectors, not ${sectorCount}`,
  );
  // Subtract rather than add: sectorIndex + sectorCount could round back below 2^53.
  assert(sectorIndex <= Number.MAX_SAFE_INTEGER - (sectorCount - 1), "range ends beyond 2^53");
}

/**
 * A range message's sector set (a system range message's, or WRITE_SECTORS's): sectorCount safe
 * indexes, strictly increasing, the first being the header's sectorIndex (which assertSectorIndex
 * has checked).
 */
function assertSectorList(msg: {
  sectors: readonly number[];
  sectorCount: number;
  sectorIndex: number;
}): void {
  const { sectors, sectorCount } = msg;
  assert(
    Number.isInteger(sectorCount) && sectorCount >= 1 && sectorCount <= MAX_RANGE_SECTORS,
    `a range holds 1..${MAX_RANGE_SECTORS} sectors, not ${sectorCount}`,
  );
  assert(Array.isArray(sectors) && sectors.length === sectorCount, "a range lists sectorCount sectors");
  assert(sectors[0] === msg.sectorIndex, "a range's sector list starts with its sectorIndex");
  let previous = -1;
  for (let i = 0; i < sectorCount; i++) {
    const sector = sectors[i]!;
    // The message is built only on failure: this loop runs for every sector of every range message.
    if (!(Number.isSafeInteger(sector) && sector > previous)) {
      throw new AssertionError(`range sector list: ${sector} at ${i} is not a safe index above ${previous}`);
    }
    previous = sector;
  }
}

function assertRunData(data: Buffer | undefined, sectorCount: number): asserts data is Buffer {
  assert(
    data !== undefined && data.length === sectorCount * SECTOR_SIZE_BYTES,
    `range data must be ${sectorCount} * 4096 bytes`,
  );
}

function assertWriterRank(wr: number): void {
  // wr is 0 only for a never-written sector, which a VALUE may legitimately report.
  assert(Number.isInteger(wr) && wr >= 0 && wr <= MAX_REPLICAS, "bad writer rank");
}

function assertTimestamp(ts: bigint): void {
  assert(ts >= 0n && ts < U64_LIMIT, "timestamp out of u64");
}

export function encodeClientCommand(cmd: ClientCommand, clientKey: Buffer): Buffer {
  return frameBytes(encodeClientCommandFrame(cmd, clientKey));
}

export function encodeClientCommandFrame(cmd: ClientCommand, clientKey: Buffer): Frame {
  assert(clientKey.length === CLIENT_KEY_BYTES, "client key must be 32 bytes");
  assertRequestNumber(cmd.requestNumber);
  assertSectorIndex(cmd.sectorIndex);
  let message: Buffer;
  switch (cmd.kind) {
    case "clientRead":
    case "clientWrite": {
      const isWrite = cmd.kind === "clientWrite";
      if (isWrite) assertSectorData(cmd.data);
      // Buffer.alloc: padding must go out as zeros (SPEC §1.1).
      message = Buffer.alloc(isWrite ? MessageSize.Write : MessageSize.Read);
      clientCommandHeaderLayout.encode(
        {
          magic: MAGIC,
          type: isWrite ? MessageType.Write : MessageType.Read,
          requestNumber: cmd.requestNumber,
          sectorIndex: BigInt(cmd.sectorIndex),
        },
        message,
      );
      if (isWrite) cmd.data.copy(message, CLIENT_WRITE_DATA_OFFSET);
      break;
    }
    case "clientReadRange":
    case "clientZeroMap":
    case "clientHeldMap":
    case "clientHeldPages":
    case "clientWriteRange": {
      const type = RANGE_COMMAND_TYPES[cmd.kind];
      assertRun(cmd.sectorIndex, cmd.sectorCount, maxSectorsOf(type));
      if (cmd.kind === "clientHeldPages")
        assert(cmd.sectorIndex % HELD_PAGE_SECTORS === 0, "a HELD_PAGES starts at a page's first sector");
      const isWrite = cmd.kind === "clientWriteRange";
      if (isWrite) assertRunData(cmd.data, cmd.sectorCount);
      const header = {
        magic: MAGIC,
        sectorCount: cmd.sectorCount,
        type,
        requestNumber: cmd.requestNumber,
        sectorIndex: BigInt(cmd.sectorIndex),
      };
      if (isWrite) {
        const head = Buffer.alloc(RANGE_COMMAND_DATA_OFFSET);
        rangeCommandHeaderLayout.encode(header, head);
        return frameWithData(head, cmd.data, clientKey);
      }
      message = Buffer.alloc(rangeCommandSize(type, cmd.sectorCount));
      rangeCommandHeaderLayout.encode(header, message);
      break;
    }
    case "clientWriteSectors": {
      assertSectorList(cmd);
      assertRunData(cmd.data, cmd.sectorCount);
      const head = Buffer.alloc(writeSectorsDataOffset(cmd.sectorCount));
      rangeCommandHeaderLayout.encode(
        {
          magic: MAGIC,
          sectorCount: cmd.sectorCount,
          type: MessageType.WriteSectors,
          requestNumber: cmd.requestNumber,
          sectorIndex: BigInt(cmd.sectorIndex),
        },
        head,
      );
      encodeSectorList(cmd.sectors, head, RANGE_COMMAND_DATA_OFFSET);
      return frameWithData(head, cmd.data, clientKey);
    }
    default:
      return unreachable(cmd, "client command kind");
  }
  signMessage(message, clientKey);
  return [message];
}

const RANGE_COMMAND_TYPES = {
  clientReadRange: MessageType.ReadRange,
  clientZeroMap: MessageType.ZeroMap,
  clientHeldMap: MessageType.HeldMap,
  clientHeldPages: MessageType.HeldPages,
  clientWriteRange: MessageType.WriteRange,
} as const;

const RESPONSE_TYPES: Record<ClientCommandName, number> = {
  read: MessageType.ReadResponse,
  write: MessageType.WriteResponse,
  readRange: MessageType.ReadRangeResponse,
  writeRange: MessageType.WriteRangeResponse,
  writeSectors: MessageType.WriteSectorsResponse,
  zeroMap: MessageType.ZeroMapResponse,
  heldMap: MessageType.HeldMapResponse,
  heldPages: MessageType.HeldPagesResponse,
};

export function encodeClientResponse(res: ClientResponse, clientKey: Buffer): Buffer {
  return frameBytes(encodeClientResponseFrame(res, clientKey));
}

export function encodeClientResponseFrame(res: ClientResponse, clientKey: Buffer): Frame {
  assert(clientKey.length === CLIENT_KEY_BYTES, "client key must be 32 bytes");
  assertRequestNumber(res.requestNumber);
  const type = RESPONSE_TYPES[res.command];
  assert(type !== undefined, "unknown response command");
  const dataBytes =
    res.status === ResponseStatus.Ok ? responseDataBytes(res.command, res.sectorCount ?? 1) : 0;
  const carriesData = dataBytes > 0;
  if (!carriesData) assert(res.data === undefined, "only a successful READ or map response carries data");
  let message: Buffer;
  if (res.command === "read" || res.command === "write") {
    assert(res.sectorCount === undefined, "only a range response carries a sector count");
    if (carriesData) assertSectorData(res.data);
    message = Buffer.alloc(carriesData ? MessageSize.ReadResponseOk : MessageSize.Response);
    responseHeaderLayout.encode(
      { magic: MAGIC, status: res.status, type, requestNumber: res.requestNumber },
      message,
    );
    if (carriesData) res.data!.copy(message, READ_RESPONSE_DATA_OFFSET);
  } else {
    const sectorCount = res.sectorCount;
    assert(sectorCount !== undefined, "a range response echoes its sector count");
    assertRun(0, sectorCount, maxSectorsOf(type));
    const header = { magic: MAGIC, sectorCount, status: res.status, type, requestNumber: res.requestNumber };
    if (carriesData) {
      assert(
        res.data !== undefined && res.data.length === dataBytes,
        `a ${res.command} response of ${sectorCount} sectors carries ${dataBytes} bytes`,
      );
      const head = Buffer.alloc(RANGE_RESPONSE_DATA_OFFSET);
      rangeResponseHeaderLayout.encode(header, head);
      return frameWithData(head, res.data, clientKey);
    }
    message = Buffer.alloc(rangeResponseSize(type, res.status, sectorCount));
    rangeResponseHeaderLayout.encode(header, message);
  }
  signMessage(message, clientKey);
  return [message];
}

function systemMessageType(msg: SystemMessage): number {
  switch (msg.kind) {
    case "readProc":
      return MessageType.ReadProc;
    case "value":
      return MessageType.Value;
    case "writeProc":
      return MessageType.WriteProc;
    case "ack":
      return MessageType.Ack;
    case "readTagProc":
      return MessageType.ReadTagProc;
    case "tagValue":
      return MessageType.TagValue;
    case "readRangeProc":
      return MessageType.ReadRangeProc;
    case "readTagRangeProc":
      return MessageType.ReadTagRangeProc;
    case "rangeAck":
      return MessageType.RangeAck;
    case "tagRangeValue":
      return MessageType.TagRangeValue;
    case "rangeValue":
      return MessageType.RangeValue;
    case "writeRangeProc":
      return MessageType.WriteRangeProc;
    case "readTagsRangeProc":
      return MessageType.ReadTagsRangeProc;
    case "tagsRangeValue":
      return MessageType.TagsRangeValue;
    default:
      return unreachable(msg, "system message kind");
  }
}

function systemMessageSize(msg: SystemMessage): number {
  switch (msg.kind) {
    case "value":
    case "writeProc":
      return MessageSize.Value;
    case "tagValue":
      return MessageSize.TagValue;
    case "tagRangeValue":
      return tagRangeValueMessageSize(msg.sectorCount);
    case "rangeValue":
    case "writeRangeProc":
      return rangeStateMessageSize(msg.sectorCount);
    case "tagsRangeValue":
      return tagsRangeValueMessageSize(msg.sectorCount);
    case "readRangeProc":
    case "readTagRangeProc":
    case "rangeAck":
    case "readTagsRangeProc":
      return rangeProcMessageSize(msg.sectorCount);
    default:
      return MessageSize.ReadProc;
  }
}

function isRangeMessage(msg: SystemMessage): msg is RangeSystemMessage {
  return "sectorCount" in msg;
}

export function encodeSystemMessage(msg: SystemMessage, systemKey: Buffer): Buffer {
  return frameBytes(encodeSystemMessageFrame(msg, systemKey));
}

export function encodeSystemMessageFrame(msg: SystemMessage, systemKey: Buffer): Frame {
  assert(systemKey.length === SYSTEM_KEY_BYTES, "system key must be 64 bytes");
  assert(Number.isInteger(msg.sender) && msg.sender >= 1 && msg.sender <= MAX_REPLICAS, "bad sender rank");
  assert(msg.opId.length === OP_ID_BYTES, "operation id must be 16 bytes");
  assertSectorIndex(msg.sectorIndex);
  if (isRangeMessage(msg)) return encodeRangeSystemMessage(msg, systemKey);
  const message = Buffer.alloc(systemMessageSize(msg));
  systemHeaderLayout.encode(
    {
      magic: MAGIC,
      sender: msg.sender,
      type: systemMessageType(msg),
      opId: msg.opId,
      sectorIndex: BigInt(msg.sectorIndex),
    },
    message,
  );
  if (msg.kind === "value" || msg.kind === "writeProc") {
    assertWriterRank(msg.wr);
    assertSectorData(msg.data);
    sectorStateBodyLayout.encode({ ts: msg.ts, wr: msg.wr, data: msg.data }, message, SYSTEM_BODY_OFFSET);
  } else if (msg.kind === "tagValue") {
    assertWriterRank(msg.wr);
    tagBodyLayout.encode({ ts: msg.ts, wr: msg.wr }, message, SYSTEM_BODY_OFFSET);
  }
  signMessage(message, systemKey);
  return [message];
}

/**
 * RANGE_VALUE and WRITE_RANGE_PROC reach 1 MiB: a zeroed head (the tags' padding goes out as
 * zeros) with the sector list and the tags written in plain loops, then the data as a view.
 */
function encodeRangeSystemMessage(msg: RangeSystemMessage, systemKey: Buffer): Frame {
  assertSectorList(msg);
  const carriesData = msg.kind === "rangeValue" || msg.kind === "writeRangeProc";
  if (carriesData || msg.kind === "tagsRangeValue") {
    assert(
      Array.isArray(msg.tags) && msg.tags.length === msg.sectorCount,
      "a range carries one tag per sector",
    );
  }
  if (carriesData) assertRunData(msg.data, msg.sectorCount);
  const size = systemMessageSize(msg);
  const message = Buffer.alloc(carriesData ? rangeDataOffset(msg.sectorCount) : size);
  rangeSystemHeaderLayout.encode(
    {
      magic: MAGIC,
      sectorCount: msg.sectorCount,
      sender: msg.sender,
      type: systemMessageType(msg),
      opId: msg.opId,
      sectorIndex: BigInt(msg.sectorIndex),
    },
    message,
  );
  encodeSectorList(msg.sectors, message);
  switch (msg.kind) {
    case "tagRangeValue":
      assertWriterRank(msg.wr);
      tagBodyLayout.encode({ ts: msg.ts, wr: msg.wr }, message, rangeBodyOffset(msg.sectorCount));
      break;
    case "tagsRangeValue":
      encodeRangeTags(msg.tags, message, rangeBodyOffset(msg.sectorCount));
      break;
    case "rangeValue":
    case "writeRangeProc":
      encodeRangeTags(msg.tags, message, rangeBodyOffset(msg.sectorCount));
      return frameWithData(message, msg.data, systemKey);
    default:
      break;
  }
  signMessage(message, systemKey);
  return [message];
}

/** The sector list at `offset`: a system range message's at RANGE_SECTORS_OFFSET. */
function encodeSectorList(sectors: readonly number[], message: Buffer, offset = RANGE_SECTORS_OFFSET): void {
  let at = offset;
  for (const sector of sectors) {
    // Two u32 halves: exact for every safe integer, without a BigInt per sector.
    message.writeUInt32BE(Math.floor(sector / 0x1_0000_0000), at);
    message.writeUInt32BE(sector % 0x1_0000_0000, at + 4);
    at += RANGE_SECTOR_BYTES;
  }
}

function encodeRangeTags(tags: readonly WireTag[], message: Buffer, offset: number): void {
  let at = offset;
  for (const tag of tags) {
    assertTimestamp(tag.ts);
    assertWriterRank(tag.wr);
    message.writeBigUInt64BE(tag.ts, at + RANGE_TAG_TS_OFFSET);
    message.writeUInt8(tag.wr, at + RANGE_TAG_WR_OFFSET);
    at += RANGE_TAG_BYTES;
  }
}

/** Any atdd message with the key its kind is signed with (tests, tools). */
export function encodeMessage(message: AtddMessage, keys: { clientKey: Buffer; systemKey: Buffer }): Buffer {
  if (isClientCommand(message)) return encodeClientCommand(message, keys.clientKey);
  if (message.kind === "clientResponse") return encodeClientResponse(message, keys.clientKey);
  return encodeSystemMessage(message, keys.systemKey);
}
