// Encoders for transmission-phase replies. Each returns one Buffer, so a reply goes to the socket
// in one write and replies of concurrent requests can never interleave on the wire.
import {
  BASE_ALLOCATION_ID,
  ChunkType,
  ReplyFlag,
  SIMPLE_REPLY_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_MAGIC,
} from "./constants.js";

/** Bytes in front of the data of a READ reply, so the data can be read straight into the reply. */
export function readReplyHeaderBytes(structured: boolean): number {
  return structured ? STRUCTURED_REPLY_HEADER_BYTES + 8 : SIMPLE_REPLY_BYTES;
}

export function simpleReply(cookie: Buffer, error: number): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
  out.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(error, 4);
  cookie.copy(out, 8);
  return out;
}

function writeChunkHeader(out: Buffer, cookie: Buffer, type: number, flags: number, length: number): void {
  out.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  cookie.copy(out, 8);
  out.writeUInt32BE(length, 16);
}

/** Fills the header space reserved by readReplyHeaderBytes in front of `length` data bytes. */
export function fillReadReplyHeader(
  out: Buffer,
  structured: boolean,
  cookie: Buffer,
  offset: number,
  length: number,
): void {
  if (!structured) {
    simpleReply(cookie, 0).copy(out, 0);
    return;
  }
  // One data chunk for the whole read: it satisfies DF, and no error can follow it (DONE is safe).
  writeChunkHeader(out, cookie, ChunkType.OffsetData, ReplyFlag.Done, 8 + length);
  out.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_BYTES);
}

export function errorChunk(cookie: Buffer, error: number): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6);
  writeChunkHeader(out, cookie, ChunkType.Error, ReplyFlag.Done, 6);
  out.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt16BE(0, STRUCTURED_REPLY_HEADER_BYTES + 4);
  return out;
}

export interface Extent {
  lengthBytes: number;
  flags: number;
}

export function blockStatusChunk(cookie: Buffer, extents: Extent[]): Buffer {
  const payload = 4 + 8 * extents.length;
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payload);
  writeChunkHeader(out, cookie, ChunkType.BlockStatus, ReplyFlag.Done, payload);
  out.writeUInt32BE(BASE_ALLOCATION_ID, STRUCTURED_REPLY_HEADER_BYTES);
  let at = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (const e of extents) {
    out.writeUInt32BE(e.lengthBytes, at);
    out.writeUInt32BE(e.flags, at + 4);
    at += 8;
  }
  return out;
}
