// The atdd messages of SPEC §1 as plain data. Layouts and encoding live in layouts.ts / codec.ts;
// this file is the vocabulary shared by the codec, the register core, the drivers and the gateway.

export const MAGIC = Buffer.from("atdd", "ascii");

export const MessageType = {
  Read: 0x01,
  Write: 0x02,
  ReadProc: 0x03,
  Value: 0x04,
  WriteProc: 0x05,
  Ack: 0x06,
  ReadResponse: 0x41,
  WriteResponse: 0x42,
  // Extensions (SPEC §1.3 leaves 0x80+ free). A WRITE's query phase needs only the tags, so it
  // asks with READ_TAG_PROC and gets TAG_VALUE: 80 bytes instead of a 4176-byte VALUE each.
  ReadTagProc: 0x80,
  TagValue: 0x81,
  // Range extensions: one message covers a run of 1..MAX_RANGE_SECTORS consecutive sectors, each
  // still its own register (see ARCHITECTURE.md "Range operations"). The run's sector count is a
  // u16 at offset 4 (where the standard types have padding), so the decoder knows every size from
  // the first 8 bytes, as for the standard types. Layouts (all big-endian; tag = HMAC at the end):
  //   system (system key): the run is any set of 1..MAX_RANGE_SECTORS sectors (consecutive for a
  //   client range command, scattered when a replica batches single-sector commands). 32-byte
  //   header: magic, count u16 @4, sender @6, type @7, opId @8, first sector u64 @24; then the
  //   sector list, count x u64 @32, strictly increasing, starting with the header's first sector;
  //   then from B = 32 + 8*count:
  //     READ_RANGE_PROC, READ_TAG_RANGE_PROC, RANGE_ACK, READ_TAGS_RANGE_PROC: nothing (B + 32
  //       bytes);
  //     TAG_RANGE_VALUE: ts u64, 7 padding, wr u8 = the highest tag over the set (B + 48 bytes);
  //     TAGS_RANGE_VALUE: count x (ts u64, 7 padding, wr u8), one tag per sector: RANGE_VALUE
  //       without its data (B + count*16 + 32 bytes);
  //     RANGE_VALUE, WRITE_RANGE_PROC: count x (ts u64, 7 padding, wr u8), then count x 4096
  //       bytes of data (B + count*4112 + 32 bytes).
  //   client (client key): magic, count u16 @4, padding @6, type @7, request number u64 @8, first
  //     sector u64 @16; WRITE_RANGE: count x 4096 bytes of data @24. READ_RANGE 56 bytes,
  //     WRITE_RANGE 56 + count*4096.
  //   WRITE_SECTORS (client key): the client range command's 24-byte header (first sector @16),
  //     then the sector list, count x u64 @24, strictly increasing, starting with the header's
  //     first sector, then count x 4096 bytes of data: 56 + count*(8+4096) bytes.
  //   response (client key): magic, count u16 @4 (echoed), status @6, type @7 (command + 0x40),
  //     request number u64 @8; READ_RANGE with status Ok: count x 4096 bytes @16. 48 bytes, or
  //     48 + count*4096.
  // A count of 0 or above MAX_RANGE_SECTORS makes the type unknown (SPEC §1.4: drop 8 bytes), so
  // no length from the wire is ever trusted beyond that bound.
  ReadRangeProc: 0x82,
  ReadTagRangeProc: 0x83,
  RangeAck: 0x84,
  TagRangeValue: 0x85,
  RangeValue: 0x86,
  WriteRangeProc: 0x87,
  ReadRange: 0x88,
  WriteRange: 0x89,
  // A READ's query asks only its own replica for data (READ_RANGE_PROC) and the others for the
  // tag of each sector (READ_TAGS_RANGE_PROC, answered by TAGS_RANGE_VALUE): register core rule 9.
  // TAG_RANGE_VALUE (0x85) differs: it carries only the highest tag over the set, for writes.
  ReadTagsRangeProc: 0x8a,
  TagsRangeValue: 0x8b,
  // Single-sector writes a client has in flight together, in one command: one frame, one HMAC and
  // one response instead of one each. Every sector is still its own register and its own write,
  // as if sent as separate WRITEs at once; the response comes once all of them completed.
  WriteSectors: 0x8c,
  // Which sectors of a run read as all zeros, for NBD BLOCK_STATUS: the replica runs the run's
  // register read (a READ_RANGE) and answers a bitmap instead of the data. Layout as READ_RANGE;
  // response with status Ok: the range response header, then ceil(count / 8) bytes @16, bit
  // (7 - i % 8) of byte i / 8 set when sector first + i is all zeros: 48 + ceil(count / 8) bytes.
  ZeroMap: 0x8d,
  // Which sectors of a run this replica's store holds at all (a record, durable or queued): no
  // register operation, answered at once from the replica's index. Layout as READ_RANGE, with a
  // count of up to HELD_MAP_MAX_SECTORS; response as ZERO_MAP's, bit set when the sector is held.
  // A sector that none of a majority holds was never written by an acknowledged write.
  HeldMap: 0x8e,
  // Which pages of HELD_PAGE_SECTORS sectors this replica holds any sector of (as HELD_MAP counts
  // holding), for BLOCK_STATUS over big sparse volumes: sector index = the first page's first
  // sector (a multiple of HELD_PAGE_SECTORS), count = pages, 1..HELD_PAGES_MAX, the last page
  // starting inside the volume; layout as READ_RANGE; response as HELD_MAP's, a bit per page.
  HeldPages: 0x8f,
  ReadRangeResponse: 0xc8,
  WriteRangeResponse: 0xc9,
  WriteSectorsResponse: 0xcc,
  ZeroMapResponse: 0xcd,
  HeldMapResponse: 0xce,
  HeldPagesResponse: 0xcf,
} as const;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

export const ResponseStatus = {
  Ok: 0x00,
  AuthFailure: 0x01,
  InvalidSectorIndex: 0x02,
} as const;
export type ResponseStatusCode = (typeof ResponseStatus)[keyof typeof ResponseStatus];

/** Message sizes in bytes, tag included (SPEC §1.1–1.3). */
export const MessageSize = {
  Read: 56,
  Write: 4152,
  Response: 48,
  ReadResponseOk: 4144,
  ReadProc: 64,
  Ack: 64,
  Value: 4176,
  WriteProc: 4176,
  ReadTagProc: 64,
  TagValue: 80,
  // Range extensions: fixed parts; the variable parts are per sector (see MessageType). Every
  // system range message also carries RangeSectorListPerSector bytes per sector (its sector list).
  RangeProc: 64,
  TagRangeValue: 80,
  RangeSectorListPerSector: 8,
  /** RANGE_VALUE / WRITE_RANGE_PROC: plus RangeStatePerSector per sector. */
  RangeStateBase: 64,
  RangeStatePerSector: 16 + 4096,
  /** TAGS_RANGE_VALUE: plus RangeTagPerSector per sector (and its sector list). */
  TagsRangeValueBase: 64,
  RangeTagPerSector: 16,
  /** READ_RANGE; WRITE_RANGE adds 4096 per sector, WRITE_SECTORS 8 + 4096 per sector. */
  RangeCommandBase: 56,
  /** Range response; READ_RANGE Ok adds 4096 per sector. */
  RangeResponseBase: 48,
} as const;

export const HMAC_TAG_BYTES = 32;
export const CLIENT_KEY_BYTES = 32;
export const SYSTEM_KEY_BYTES = 64;
export const OP_ID_BYTES = 16;

/** A request number is an opaque u64 chosen by the client and echoed back. */
export type RequestNumber = bigint;

export interface ClientReadCommand {
  kind: "clientRead";
  requestNumber: RequestNumber;
  sectorIndex: number;
}

export interface ClientWriteCommand {
  kind: "clientWrite";
  requestNumber: RequestNumber;
  sectorIndex: number;
  /** Exactly SECTOR_SIZE_BYTES. */
  data: Buffer;
}

/** Extension 0x88: read sectors [sectorIndex, sectorIndex + sectorCount). */
export interface ClientReadRangeCommand {
  kind: "clientReadRange";
  requestNumber: RequestNumber;
  sectorIndex: number;
  /** 1..MAX_RANGE_SECTORS. */
  sectorCount: number;
}

/** Extension 0x8D: which sectors of [sectorIndex, sectorIndex + sectorCount) read as zeros. */
export interface ClientZeroMapCommand {
  kind: "clientZeroMap";
  requestNumber: RequestNumber;
  sectorIndex: number;
  /** 1..MAX_RANGE_SECTORS. */
  sectorCount: number;
}

/** Extension 0x8E: which sectors of [sectorIndex, sectorIndex + sectorCount) this replica holds. */
export interface ClientHeldMapCommand {
  kind: "clientHeldMap";
  requestNumber: RequestNumber;
  sectorIndex: number;
  /** 1..HELD_MAP_MAX_SECTORS. */
  sectorCount: number;
}

/**
 * Extension 0x8F: which pages of HELD_PAGE_SECTORS sectors from sectorIndex (a multiple of
 * HELD_PAGE_SECTORS) this replica holds any sector of.
 */
export interface ClientHeldPagesCommand {
  kind: "clientHeldPages";
  requestNumber: RequestNumber;
  sectorIndex: number;
  /** Pages, 1..HELD_PAGES_MAX (the range field of the wire layout). */
  sectorCount: number;
}

/** Extension 0x89: write sectors [sectorIndex, sectorIndex + sectorCount). */
export interface ClientWriteRangeCommand {
  kind: "clientWriteRange";
  requestNumber: RequestNumber;
  sectorIndex: number;
  /** 1..MAX_RANGE_SECTORS. */
  sectorCount: number;
  /** Exactly sectorCount * SECTOR_SIZE_BYTES. */
  data: Buffer;
}

/** Extension 0x8C: write each of a set of sectors, as separate WRITEs sent together would. */
export interface ClientWriteSectorsCommand {
  kind: "clientWriteSectors";
  requestNumber: RequestNumber;
  /** sectors[0]. */
  sectorIndex: number;
  /** 1..MAX_RANGE_SECTORS. */
  sectorCount: number;
  /** Strictly increasing. */
  sectors: number[];
  /** Exactly sectorCount * SECTOR_SIZE_BYTES: sector sectors[i] at i * 4096. */
  data: Buffer;
}

export type ClientCommand =
  | ClientReadCommand
  | ClientWriteCommand
  | ClientReadRangeCommand
  | ClientWriteRangeCommand
  | ClientWriteSectorsCommand
  | ClientZeroMapCommand
  | ClientHeldMapCommand
  | ClientHeldPagesCommand;

/** Which command a response answers. */
export type ClientCommandName =
  | "read"
  | "write"
  | "readRange"
  | "writeRange"
  | "writeSectors"
  | "zeroMap"
  | "heldMap"
  | "heldPages";

export interface ClientResponse {
  kind: "clientResponse";
  /** Which command this answers (0x41 / 0x42 / 0xC8 / 0xC9 / 0xCC / 0xCD / 0xCE / 0xCF on the wire). */
  command: ClientCommandName;
  status: ResponseStatusCode;
  requestNumber: RequestNumber;
  /** Range commands (and WRITE_SECTORS) only: the command's sector count, echoed. */
  sectorCount?: number;
  /**
   * Present only with status Ok, for a READ (sectorCount * 4096 bytes for READ_RANGE) and a
   * ZERO_MAP, HELD_MAP or HELD_PAGES (its bitmap, bitmapBytes(sectorCount) bytes: a bit per sector,
   * for HELD_PAGES per page).
   */
  data?: Buffer;
}

interface SystemHeader {
  /** Rank of the sender, 1..N. */
  sender: number;
  /** 16 bytes; ties replies to the operation that asked. */
  opId: Buffer;
  sectorIndex: number;
}

export interface ReadProcMessage extends SystemHeader {
  kind: "readProc";
}

export interface AckMessage extends SystemHeader {
  kind: "ack";
}

export interface ValueMessage extends SystemHeader {
  kind: "value";
  ts: bigint;
  wr: number;
  data: Buffer;
}

export interface WriteProcMessage extends SystemHeader {
  kind: "writeProc";
  ts: bigint;
  wr: number;
  data: Buffer;
}

/** Extension 0x80: like READ_PROC, but the answer is a TAG_VALUE (no sector data). */
export interface ReadTagProcMessage extends SystemHeader {
  kind: "readTagProc";
}

/** Extension 0x81: the answer to READ_TAG_PROC: the replica's tag only. */
export interface TagValueMessage extends SystemHeader {
  kind: "tagValue";
  ts: bigint;
  wr: number;
}

interface RangeHeader extends SystemHeader {
  /** sectors.length: 1..MAX_RANGE_SECTORS. */
  sectorCount: number;
  /** The sectors, strictly increasing; sectors[0] === sectorIndex. Per-sector fields follow this order. */
  sectors: number[];
}

/** A tag as it travels in range messages. */
export interface WireTag {
  ts: bigint;
  wr: number;
}

/** Extension 0x82: READ_PROC for each sector of a run; answered by one RANGE_VALUE. */
export interface ReadRangeProcMessage extends RangeHeader {
  kind: "readRangeProc";
}

/** Extension 0x83: READ_TAG_PROC for a run; answered by one TAG_RANGE_VALUE. */
export interface ReadTagRangeProcMessage extends RangeHeader {
  kind: "readTagRangeProc";
}

/** Extension 0x84: ACK for every sector of a WRITE_RANGE_PROC's run. */
export interface RangeAckMessage extends RangeHeader {
  kind: "rangeAck";
}

/** Extension 0x85: the highest durable tag over the run. */
export interface TagRangeValueMessage extends RangeHeader {
  kind: "tagRangeValue";
  ts: bigint;
  wr: number;
}

/** Extension 0x86: VALUE for each sector of the run. */
export interface RangeValueMessage extends RangeHeader {
  kind: "rangeValue";
  /** One per sector, in order. */
  tags: WireTag[];
  /** sectorCount * SECTOR_SIZE_BYTES: sector i at i * 4096. */
  data: Buffer;
}

/** Extension 0x8A: READ_TAG_PROC for each sector of the set; answered by one TAGS_RANGE_VALUE. */
export interface ReadTagsRangeProcMessage extends RangeHeader {
  kind: "readTagsRangeProc";
}

/** Extension 0x8B: TAG_VALUE for each sector of the set (RANGE_VALUE without the data). */
export interface TagsRangeValueMessage extends RangeHeader {
  kind: "tagsRangeValue";
  /** One per sector, in order: that sector's durable tag. */
  tags: WireTag[];
}

/** Extension 0x87: WRITE_PROC for each sector of the run (each sector with its own tag). */
export interface WriteRangeProcMessage extends RangeHeader {
  kind: "writeRangeProc";
  tags: WireTag[];
  data: Buffer;
}

export type RangeSystemMessage =
  | ReadRangeProcMessage
  | ReadTagRangeProcMessage
  | RangeAckMessage
  | TagRangeValueMessage
  | RangeValueMessage
  | WriteRangeProcMessage
  | ReadTagsRangeProcMessage
  | TagsRangeValueMessage;

export type SystemMessage =
  | ReadProcMessage
  | ValueMessage
  | WriteProcMessage
  | AckMessage
  | ReadTagProcMessage
  | TagValueMessage
  | RangeSystemMessage;

export type AtddMessage = ClientCommand | ClientResponse | SystemMessage;

/** Every message kind, so that a new kind cannot be added without saying which side it is on. */
const IS_CLIENT_COMMAND: Record<AtddMessage["kind"], boolean> = {
  clientRead: true,
  clientWrite: true,
  clientReadRange: true,
  clientWriteRange: true,
  clientWriteSectors: true,
  clientZeroMap: true,
  clientHeldMap: true,
  clientHeldPages: true,
  clientResponse: false,
  readProc: false,
  value: false,
  writeProc: false,
  ack: false,
  readTagProc: false,
  tagValue: false,
  readRangeProc: false,
  readTagRangeProc: false,
  readTagsRangeProc: false,
  rangeAck: false,
  tagRangeValue: false,
  tagsRangeValue: false,
  rangeValue: false,
  writeRangeProc: false,
};

export function isClientCommand(message: AtddMessage): message is ClientCommand {
  return IS_CLIENT_COMMAND[message.kind];
}
