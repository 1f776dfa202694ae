// Encoders of the atdd messages (SPEC §1). Inputs come from our own code, so bad inputs are
// programmer errors and fail loudly. Decoding lives in decoder.ts (it must survive a hostile stream).
import { assert, unreachable } from "../util/assert.js";
import { MAX_REPLICAS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import { signMessage } from "./hmac.js";
import {
  CLIENT_WRITE_DATA_OFFSET,
  clientCommandHeaderLayout,
  READ_RESPONSE_DATA_OFFSET,
  responseHeaderLayout,
  SYSTEM_BODY_OFFSET,
  sectorStateBodyLayout,
  systemHeaderLayout,
  tagBodyLayout,
} from "./layouts.js";
import {
  CLIENT_KEY_BYTES,
  type ClientCommand,
  type ClientResponse,
  MAGIC,
  MessageSize,
  MessageType,
  OP_ID_BYTES,
  ResponseStatus,
  SYSTEM_KEY_BYTES,
  type SystemMessage,
} from "./messages.js";

const U64_LIMIT = 1n << 64n;

function assertSectorIndex(sectorIndex: number): void {
  assert(Number.isSafeInteger(sectorIndex) && sectorIndex >= 0, `bad sector index ${sectorIndex}`);
}

function assertRequestNumber(requestNumber: bigint): void {
  assert(requestNumber >= 0n && requestNumber < U64_LIMIT, `request number out of u64: ${requestNumber}`);
}

function assertSectorData(data: Buffer | undefined): asserts data is Buffer {
  assert(data !== undefined && data.length === SECTOR_SIZE_BYTES, "sector data must be 4096 bytes");
}

export function encodeClientCommand(cmd: ClientCommand, clientKey: Buffer): Buffer {
  assert(clientKey.length === CLIENT_KEY_BYTES, "client key must be 32 bytes");
  assertRequestNumber(cmd.requestNumber);
  assertSectorIndex(cmd.sectorIndex);
  const isWrite = cmd.kind === "clientWrite";
  // Buffer.alloc: padding must go out as zeros (SPEC §1.1).
  const message = Buffer.alloc(isWrite ? MessageSize.Write : MessageSize.Read);
  clientCommandHeaderLayout.encode(
    {
      magic: MAGIC,
      type: isWrite ? MessageType.Write : MessageType.Read,
      requestNumber: cmd.requestNumber,
      sectorIndex: BigInt(cmd.sectorIndex),
    },
    message,
  );
  if (isWrite) {
    assertSectorData(cmd.data);
    cmd.data.copy(message, CLIENT_WRITE_DATA_OFFSET);
  }
  signMessage(message, clientKey);
  return message;
}

export function encodeClientResponse(res: ClientResponse, clientKey: Buffer): Buffer {
  assert(clientKey.length === CLIENT_KEY_BYTES, "client key must be 32 bytes");
  assertRequestNumber(res.requestNumber);
  const carriesData = res.command === "read" && res.status === ResponseStatus.Ok;
  if (carriesData) assertSectorData(res.data);
  else assert(res.data === undefined, "only a successful READ response carries data");
  const message = Buffer.alloc(carriesData ? MessageSize.ReadResponseOk : MessageSize.Response);
  responseHeaderLayout.encode(
    {
      magic: MAGIC,
      status: res.status,
      type: res.command === "read" ? MessageType.ReadResponse : MessageType.WriteResponse,
      requestNumber: res.requestNumber,
    },
    message,
  );
  if (carriesData) res.data!.copy(message, READ_RESPONSE_DATA_OFFSET);
  signMessage(message, clientKey);
  return message;
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
    default:
      return MessageSize.ReadProc;
  }
}

export function encodeSystemMessage(msg: SystemMessage, systemKey: Buffer): Buffer {
  assert(systemKey.length === SYSTEM_KEY_BYTES, "system key must be 64 bytes");
  assert(Number.isInteger(msg.sender) && msg.sender >= 1 && msg.sender <= MAX_REPLICAS, "bad sender rank");
  assert(msg.opId.length === OP_ID_BYTES, "operation id must be 16 bytes");
  assertSectorIndex(msg.sectorIndex);
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
    // wr is 0 only for a never-written sector, which a VALUE may legitimately report.
    assert(Number.isInteger(msg.wr) && msg.wr >= 0 && msg.wr <= MAX_REPLICAS, "bad writer rank");
    assertSectorData(msg.data);
    sectorStateBodyLayout.encode({ ts: msg.ts, wr: msg.wr, data: msg.data }, message, SYSTEM_BODY_OFFSET);
  } else if (msg.kind === "tagValue") {
    assert(Number.isInteger(msg.wr) && msg.wr >= 0 && msg.wr <= MAX_REPLICAS, "bad writer rank");
    tagBodyLayout.encode({ ts: msg.ts, wr: msg.wr }, message, SYSTEM_BODY_OFFSET);
  }
  signMessage(message, systemKey);
  return message;
}
