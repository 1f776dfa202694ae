// Byte layouts of the atdd messages (SPEC §1), described with @solana/buffer-layout. The layouts
// speak wire types (bigint u64, raw byte fields); codec.ts and decoder.ts map them to messages.ts.
// Fields without a property are padding: encoders leave them as the zeros of a fresh buffer and
// decoders never read them (client padding is "never checked on input").
import * as BufferLayout from "@solana/buffer-layout";
import { assert } from "../util/assert.js";
import { SECTOR_SIZE_BYTES } from "../util/limits.js";
import { HMAC_TAG_BYTES, MAGIC, MessageSize, MessageType, OP_ID_BYTES, ResponseStatus } from "./messages.js";

const U64_MAX = (1n << 64n) - 1n;

/** Big-endian u64 as a bigint: buffer-layout only has "near" u64 (a lossy number). */
export class UInt64BE extends BufferLayout.Layout<bigint> {
  constructor(property?: string) {
    super(8, property);
  }

  override decode(b: Uint8Array, offset = 0): bigint {
    return toBuffer(b).readBigUInt64BE(offset);
  }

  override encode(src: bigint, b: Uint8Array, offset = 0): number {
    assert(src >= 0n && src <= U64_MAX, `u64 out of range: ${src}`);
    toBuffer(b).writeBigUInt64BE(src, offset);
    return 8;
  }
}

/**
 * Fixed-length raw bytes. Decodes to a view (callers copy what they keep); encodes with a plain
 * copy, because BufferLayout.blob encodes through a hex string, far too slow for 4 KiB sectors.
 */
export class FixedBytes extends BufferLayout.Layout<Buffer> {
  override decode(b: Uint8Array, offset = 0): Buffer {
    return toBuffer(b).subarray(offset, offset + this.span);
  }

  override encode(src: Buffer, b: Uint8Array, offset = 0): number {
    assert(src.length === this.span, `${this.property ?? "bytes"}: expected ${this.span} bytes`);
    assert(offset + this.span <= b.length, "encoding overruns buffer");
    src.copy(b, offset);
    return this.span;
  }
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

const u64be = (property: string) => new UInt64BE(property);
const bytes = (length: number, property: string) => new FixedBytes(length, property);
const padding = (length: number) => BufferLayout.blob(length);

/** Bytes 0..23 of READ/WRITE (SPEC §1.1); WRITE's sector data follows. */
export interface ClientCommandHeader {
  magic: Buffer;
  type: number;
  requestNumber: bigint;
  sectorIndex: bigint;
}
export const clientCommandHeaderLayout = BufferLayout.struct<ClientCommandHeader>([
  bytes(4, "magic"),
  padding(3) as never,
  BufferLayout.u8("type"),
  u64be("requestNumber"),
  u64be("sectorIndex"),
]);

/** Bytes 0..15 of a response (SPEC §1.2); a successful READ's sector data follows. */
export interface ResponseHeader {
  magic: Buffer;
  status: number;
  type: number;
  requestNumber: bigint;
}
export const responseHeaderLayout = BufferLayout.struct<ResponseHeader>([
  bytes(4, "magic"),
  padding(2) as never,
  BufferLayout.u8("status"),
  BufferLayout.u8("type"),
  u64be("requestNumber"),
]);

/** The common 32-byte header of replica-to-replica messages (SPEC §1.3). */
export interface SystemHeader {
  magic: Buffer;
  sender: number;
  type: number;
  opId: Buffer;
  sectorIndex: bigint;
}
export const systemHeaderLayout = BufferLayout.struct<SystemHeader>([
  bytes(4, "magic"),
  padding(2) as never,
  BufferLayout.u8("sender"),
  BufferLayout.u8("type"),
  bytes(OP_ID_BYTES, "opId"),
  u64be("sectorIndex"),
]);

/** VALUE / WRITE_PROC body from offset 32: ts, 7 padding bytes, writer rank (offset 47), data. */
export interface SectorStateBody {
  ts: bigint;
  wr: number;
  data: Buffer;
}
export const sectorStateBodyLayout = BufferLayout.struct<SectorStateBody>([
  u64be("ts"),
  padding(7) as never,
  BufferLayout.u8("wr"),
  bytes(SECTOR_SIZE_BYTES, "data"),
]);

/** TAG_VALUE body from offset 32: the VALUE body without its sector data. */
export interface TagBody {
  ts: bigint;
  wr: number;
}

export const tagBodyLayout = BufferLayout.struct<TagBody>([
  u64be("ts"),
  padding(7) as never,
  BufferLayout.u8("wr"),
]);

/** Where the sector data sits in each message that carries one. */
export const CLIENT_WRITE_DATA_OFFSET = clientCommandHeaderLayout.span;
export const READ_RESPONSE_DATA_OFFSET = responseHeaderLayout.span;
export const SYSTEM_BODY_OFFSET = systemHeaderLayout.span;

/** Offsets the stream decoder peeks at before it knows a message is whole. */
export const STATUS_OFFSET = 6;
export const TYPE_OFFSET = 7;
/** Magic, padding and type: what an unknown type costs on the stream (SPEC §1.4). */
export const TYPE_PREFIX_BYTES = 8;

// The layouts must reproduce the sizes of SPEC §1 exactly; checked once at load like a build step.
assert(clientCommandHeaderLayout.span === 24, "client command header is 24 bytes");
assert(responseHeaderLayout.span === 16, "response header is 16 bytes");
assert(systemHeaderLayout.span === 32, "system header is 32 bytes");
assert(sectorStateBodyLayout.span === 16 + SECTOR_SIZE_BYTES, "VALUE/WRITE_PROC body");
assert(CLIENT_WRITE_DATA_OFFSET + HMAC_TAG_BYTES === MessageSize.Read, "READ size");
assert(CLIENT_WRITE_DATA_OFFSET + SECTOR_SIZE_BYTES + HMAC_TAG_BYTES === MessageSize.Write, "WRITE size");
assert(READ_RESPONSE_DATA_OFFSET + HMAC_TAG_BYTES === MessageSize.Response, "response size");
assert(
  READ_RESPONSE_DATA_OFFSET + SECTOR_SIZE_BYTES + HMAC_TAG_BYTES === MessageSize.ReadResponseOk,
  "READ Ok size",
);
assert(SYSTEM_BODY_OFFSET + HMAC_TAG_BYTES === MessageSize.ReadProc, "READ_PROC size");
assert(SYSTEM_BODY_OFFSET + sectorStateBodyLayout.span + HMAC_TAG_BYTES === MessageSize.Value, "VALUE size");
assert(MAGIC.length === 4, "magic is 4 bytes");
assert(SYSTEM_BODY_OFFSET + HMAC_TAG_BYTES === MessageSize.ReadTagProc, "READ_TAG_PROC size");
assert(SYSTEM_BODY_OFFSET + tagBodyLayout.span + HMAC_TAG_BYTES === MessageSize.TagValue, "TAG_VALUE size");

/**
 * Size of the message whose first 8 bytes are at `buf[offset..]`, or undefined when the type (or a
 * response's status) is not one of SPEC §1. Every size is fixed by the type (and for a response by
 * its status byte), so nothing is ever allocated from a length taken off the wire.
 */
export function atddMessageSize(buf: Buffer, offset: number): number | undefined {
  const type = buf[offset + TYPE_OFFSET];
  switch (type) {
    case MessageType.Read:
      return MessageSize.Read;
    case MessageType.Write:
      return MessageSize.Write;
    case MessageType.ReadProc:
      return MessageSize.ReadProc;
    case MessageType.Ack:
      return MessageSize.Ack;
    case MessageType.Value:
      return MessageSize.Value;
    case MessageType.WriteProc:
      return MessageSize.WriteProc;
    case MessageType.ReadTagProc:
      return MessageSize.ReadTagProc;
    case MessageType.TagValue:
      return MessageSize.TagValue;
    case MessageType.ReadResponse:
    case MessageType.WriteResponse: {
      const status = buf[offset + STATUS_OFFSET];
      if (status === ResponseStatus.Ok) {
        return type === MessageType.ReadResponse ? MessageSize.ReadResponseOk : MessageSize.Response;
      }
      if (status === ResponseStatus.AuthFailure || status === ResponseStatus.InvalidSectorIndex) {
        return MessageSize.Response;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}
