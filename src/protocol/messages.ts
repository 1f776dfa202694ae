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

export type ClientCommand = ClientReadCommand | ClientWriteCommand;

export interface ClientResponse {
  kind: "clientResponse";
  /** Which command this answers (READ 0x41 / WRITE 0x42 on the wire). */
  command: "read" | "write";
  status: ResponseStatusCode;
  requestNumber: RequestNumber;
  /** Present only for a READ with status Ok. */
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

export type SystemMessage =
  | ReadProcMessage
  | ValueMessage
  | WriteProcMessage
  | AckMessage
  | ReadTagProcMessage
  | TagValueMessage;

export type AtddMessage = ClientCommand | ClientResponse | SystemMessage;
