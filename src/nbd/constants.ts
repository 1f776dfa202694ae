// NBD protocol constants (NetworkBlockDevice/nbd doc/proto.md). All integers on the wire are big-endian.

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server → client, u16). */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

/** Client flags (client → server, u32). */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

export const Option = {
  ExportName: 1,
  Abort: 2,
  List: 3,
  PeekExport: 4,
  StartTls: 5,
  Info: 6,
  Go: 7,
  StructuredReply: 8,
  ListMetaContext: 9,
  SetMetaContext: 10,
  ExtendedHeaders: 11,
} as const;

export const OptionReply = {
  Ack: 1,
  Server: 2,
  Info: 3,
  MetaContext: 4,
  ErrUnsup: 0x80000001,
  ErrPolicy: 0x80000002,
  ErrInvalid: 0x80000003,
  ErrPlatform: 0x80000004,
  ErrTlsReqd: 0x80000005,
  ErrUnknown: 0x80000006,
  ErrShutdown: 0x80000007,
  ErrBlockSizeReqd: 0x80000008,
  ErrTooBig: 0x80000009,
} as const;

export const Info = {
  Export: 0,
  Name: 1,
  Description: 2,
  BlockSize: 3,
} as const;

/** Transmission flags (u16). */
export const TFlag = {
  HasFlags: 1 << 0,
  ReadOnly: 1 << 1,
  SendFlush: 1 << 2,
  SendFua: 1 << 3,
  Rotational: 1 << 4,
  SendTrim: 1 << 5,
  SendWriteZeroes: 1 << 6,
  SendDf: 1 << 7,
  CanMultiConn: 1 << 8,
  SendResize: 1 << 9,
  SendCache: 1 << 10,
  SendFastZero: 1 << 11,
} as const;

export const Command = {
  Read: 0,
  Write: 1,
  Disc: 2,
  Flush: 3,
  Trim: 4,
  Cache: 5,
  WriteZeroes: 6,
  BlockStatus: 7,
} as const;

export const CommandFlag = {
  Fua: 1 << 0,
  NoHole: 1 << 1,
  Df: 1 << 2,
  ReqOne: 1 << 3,
  FastZero: 1 << 4,
} as const;
export const KNOWN_COMMAND_FLAGS =
  CommandFlag.Fua | CommandFlag.NoHole | CommandFlag.Df | CommandFlag.ReqOne | CommandFlag.FastZero;

export const ReplyFlag = { Done: 1 << 0 } as const;

/** base:allocation extent flags. */
export const AllocationState = {
  Hole: 1 << 0,
  Zero: 1 << 1,
} as const;

export const ChunkType = {
  None: 0,
  OffsetData: 1,
  OffsetHole: 2,
  BlockStatus: 5,
  Error: 0x8001,
  ErrorOffset: 0x8002,
} as const;

/** NBD error values (reply error field). Linux numbering, fixed by the protocol. */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoValue = (typeof NbdErrno)[keyof typeof NbdErrno];

/** The only meta context served: block status always answers "data" (status 0, always legal). */
export const BASE_ALLOCATION = "base:allocation";
/** The id we give base:allocation when a client selects it. */
export const BASE_ALLOCATION_ID = 1;

export const OPTION_HEADER_BYTES = 16;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
