// Fixed-newstyle negotiation (proto.md "Option haggling") as a state machine over a ByteQueue.
// Every option is read whole before it is answered, so an unknown or malformed option never loses
// framing: it gets an error reply and the session goes on. Only violations that make the stream
// meaningless (bad magic, unknown client flags, too many or too big options) end the session.

import { NBD_MAX_OPTION_BYTES, NBD_MAX_OPTIONS } from "../util/limits.js";
import type { Logger } from "../util/log.js";
import type { ByteQueue } from "./byte_queue.js";
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  Info,
  NBDMAGIC,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_MAGIC,
  Option,
  OptionReply,
} from "./constants.js";
import {
  BLOCK_SIZE_MAXIMUM_BYTES,
  BLOCK_SIZE_MINIMUM_BYTES,
  BLOCK_SIZE_PREFERRED_BYTES,
  type ExportInfo,
  matchesExport,
  transmissionFlags,
} from "./export_info.js";

export interface Negotiated {
  structured: boolean;
  /** Whether base:allocation was selected with SET_META_CONTEXT (BLOCK_STATUS allowed). */
  baseAllocation: boolean;
}

export type HandshakeOutcome =
  | { kind: "transmission"; negotiated: Negotiated }
  | { kind: "aborted" }
  | { kind: "violation"; reason: string };

export interface HandshakeIo {
  queue: ByteQueue;
  send(data: Buffer): void;
  log: Logger;
}

export function greeting(): Buffer {
  const out = Buffer.alloc(18);
  out.writeBigUInt64BE(NBDMAGIC, 0);
  out.writeBigUInt64BE(IHAVEOPT, 8);
  out.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return out;
}

function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(20 + data.length);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(data.length, 16);
  data.copy(out, 20);
  return out;
}

function errorReply(option: number, type: number, message: string): Buffer {
  return optionReply(option, type, Buffer.from(message, "utf8"));
}

function u32String(text: string): Buffer {
  const bytes = Buffer.from(text, "utf8");
  const out = Buffer.allocUnsafe(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  bytes.copy(out, 4);
  return out;
}

/** INFO/GO payload: u32 namelen, name, u16 n, n × u16 info ids. Undefined when malformed. */
function parseInfoRequest(data: Buffer): { name: string; infos: number[] } | undefined {
  if (data.length < 6) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return undefined;
  const name = data.toString("utf8", 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { name, infos };
}

/** META_CONTEXT payload: u32 namelen, name, u32 nq, nq × (u32 len, query). */
function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) return undefined;
  const name = data.toString("utf8", 4, 4 + nameLength);
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.length - at) return undefined;
    queries.push(data.toString("utf8", at, at + length));
    at += length;
  }
  if (at !== data.length) return undefined;
  return { name, queries };
}

export async function negotiate(io: HandshakeIo, exp: ExportInfo): Promise<HandshakeOutcome> {
  const { queue, send, log } = io;
  send(greeting());
  const clientFlags = (await queue.take(4)).readUInt32BE(0);
  // Clients that omit FIXED_NEWSTYLE (node-nbd-client) are still served fixed newstyle (allowed).
  if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
    return { kind: "violation", reason: `unknown client flags 0x${clientFlags.toString(16)}` };
  }
  const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;
  const negotiated: Negotiated = { structured: false, baseAllocation: false };

  for (let count = 0; ; count++) {
    if (count >= NBD_MAX_OPTIONS) return { kind: "violation", reason: "too many options" };
    const header = await queue.take(OPTION_HEADER_BYTES);
    if (header.readBigUInt64BE(0) !== IHAVEOPT) return { kind: "violation", reason: "bad option magic" };
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > NBD_MAX_OPTION_BYTES) return { kind: "violation", reason: `option of ${length} bytes` };
    const data = Buffer.from(await queue.take(length));
    log.debug({ option, length }, "nbd option");

    switch (option) {
      case Option.ExportName: {
        const name = data.toString("utf8");
        // EXPORT_NAME has no way to report an error: the protocol says close.
        if (!matchesExport(exp, name)) return { kind: "violation", reason: `unknown export ${name}` };
        const out = Buffer.alloc(noZeroes ? 10 : 134);
        out.writeBigUInt64BE(BigInt(exp.sizeBytes), 0);
        out.writeUInt16BE(transmissionFlags(negotiated.structured), 8);
        send(out);
        return { kind: "transmission", negotiated };
      }
      case Option.Abort:
        send(optionReply(option, OptionReply.Ack));
        return { kind: "aborted" };
      case Option.List: {
        if (length !== 0) {
          send(errorReply(option, OptionReply.ErrInvalid, "LIST takes no data"));
          break;
        }
        send(optionReply(option, OptionReply.Server, u32String(exp.name)));
        send(optionReply(option, OptionReply.Ack));
        break;
      }
      case Option.Info:
      case Option.Go: {
        const request = parseInfoRequest(data);
        if (request === undefined) {
          send(errorReply(option, OptionReply.ErrInvalid, "malformed INFO/GO request"));
          break;
        }
        if (!matchesExport(exp, request.name)) {
          send(errorReply(option, OptionReply.ErrUnknown, `no export named ${JSON.stringify(request.name)}`));
          break;
        }
        for (const reply of infoReplies(exp, request.infos, negotiated.structured)) {
          send(optionReply(option, OptionReply.Info, reply));
        }
        send(optionReply(option, OptionReply.Ack));
        if (option === Option.Go) return { kind: "transmission", negotiated };
        break;
      }
      case Option.StructuredReply:
        if (length !== 0) {
          send(errorReply(option, OptionReply.ErrInvalid, "STRUCTURED_REPLY takes no data"));
          break;
        }
        negotiated.structured = true;
        send(optionReply(option, OptionReply.Ack));
        break;
      case Option.ListMetaContext:
      case Option.SetMetaContext: {
        const request = parseMetaRequest(data);
        if (request === undefined) {
          send(errorReply(option, OptionReply.ErrInvalid, "malformed META_CONTEXT request"));
          break;
        }
        const isSet = option === Option.SetMetaContext;
        if (isSet && !negotiated.structured) {
          send(errorReply(option, OptionReply.ErrInvalid, "SET_META_CONTEXT needs structured replies"));
          break;
        }
        if (!matchesExport(exp, request.name)) {
          send(errorReply(option, OptionReply.ErrUnknown, `no export named ${JSON.stringify(request.name)}`));
          break;
        }
        const selected = isSet
          ? request.queries.includes(BASE_ALLOCATION)
          : request.queries.length === 0 ||
            request.queries.some((q) => q === "base:" || q === BASE_ALLOCATION);
        if (isSet) negotiated.baseAllocation = selected;
        if (selected) {
          const body = Buffer.alloc(4 + BASE_ALLOCATION.length);
          body.writeUInt32BE(isSet ? BASE_ALLOCATION_ID : 0, 0);
          body.write(BASE_ALLOCATION, 4, "utf8");
          send(optionReply(option, OptionReply.MetaContext, body));
        }
        send(optionReply(option, OptionReply.Ack));
        break;
      }
      default:
        // STARTTLS included: this gateway runs without TLS (NOTLS mode answers ERR_UNSUP).
        send(errorReply(option, OptionReply.ErrUnsup, `option ${option} not supported`));
        break;
    }
  }
}

function infoReplies(exp: ExportInfo, requested: number[], structured: boolean): Buffer[] {
  const replies: Buffer[] = [];
  const exportInfo = Buffer.alloc(12);
  exportInfo.writeUInt16BE(Info.Export, 0);
  exportInfo.writeBigUInt64BE(BigInt(exp.sizeBytes), 2);
  exportInfo.writeUInt16BE(transmissionFlags(structured), 10);
  replies.push(exportInfo);
  if (requested.includes(Info.Name)) {
    const name = Buffer.from(exp.name, "utf8");
    const out = Buffer.alloc(2 + name.length);
    out.writeUInt16BE(Info.Name, 0);
    name.copy(out, 2);
    replies.push(out);
  }
  if (requested.includes(Info.Description) && exp.description !== "") {
    const text = Buffer.from(exp.description, "utf8");
    const out = Buffer.alloc(2 + text.length);
    out.writeUInt16BE(Info.Description, 0);
    text.copy(out, 2);
    replies.push(out);
  }
  // Sent even when not asked: clients that did not ask still learn the preferred size.
  const blockSize = Buffer.alloc(14);
  blockSize.writeUInt16BE(Info.BlockSize, 0);
  blockSize.writeUInt32BE(BLOCK_SIZE_MINIMUM_BYTES, 2);
  blockSize.writeUInt32BE(BLOCK_SIZE_PREFERRED_BYTES, 6);
  blockSize.writeUInt32BE(BLOCK_SIZE_MAXIMUM_BYTES, 10);
  replies.push(blockSize);
  return replies;
}
