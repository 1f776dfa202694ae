// The range extension messages (0x82..0x8C): round trips at the edges of the sector count and over
// scattered sector sets, the byte layout of messages.ts built by hand, framing of streams that mix
// them with the standard types, the count bound that keeps every size checked (SPEC §1.4),
// authentication, the sector list and the volume bound, and who owns the decoded data.
import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  encodeClientCommand,
  encodeClientResponse,
  encodeMessage,
  encodeSystemMessage,
} from "../../src/protocol/codec.js";
import { AtddDecoder, type AtddDecoderOptions, type DecodeEvent } from "../../src/protocol/decoder.js";
import { signMessage } from "../../src/protocol/hmac.js";
import { atddMessageSize } from "../../src/protocol/layouts.js";
import {
  type AtddMessage,
  type ClientCommand,
  type ClientResponse,
  isClientCommand,
  MessageSize,
  MessageType,
  ResponseStatus,
  type SystemMessage,
  type WireTag,
} from "../../src/protocol/messages.js";
import { AssertionError } from "../../src/util/assert.js";
import { MAX_ATDD_MESSAGE_BYTES, MAX_RANGE_SECTORS } from "../../src/util/limits.js";
import { feedChunks, firstAcceptedByteChange, messageEvents } from "../helpers/atdd_stream.js";
import { seededRandom } from "../helpers/seeded_random.js";

const clientKey = Buffer.alloc(32, 0x3c);
const systemKey = Buffer.alloc(64, 0xa5);
const SECTORS = 1000;
const REPLICAS = 5;
const U64_MAX = 2n ** 64n - 1n;
const opId = Buffer.from("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "hex");

/**
 * `count` sectors of data. Consecutive bytes differ by 13, so the data never contains the magic
 * (the resync tests count the garbage that follows a dropped header).
 */
function run(count: number, seed = 1): Buffer {
  const data = Buffer.alloc(count * 4096);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 7 + i * 13) & 0xff;
  return data;
}

/** One tag per sector, reaching the u64 edge and the highest writer rank of the cluster. */
function tags(count: number): WireTag[] {
  return Array.from({ length: count }, (_, i) => ({
    ts: i === count - 1 ? U64_MAX : BigInt(i) * 2n ** 40n + 3n,
    wr: i % 2 === 0 ? REPLICAS : i % 5,
  }));
}

const replicaOptions: AtddDecoderOptions = {
  role: "replica",
  clientKey,
  systemKey,
  sectors: SECTORS,
  replicaCount: REPLICAS,
};
const replicaDecoder = () => new AtddDecoder(replicaOptions);
const clientDecoder = () => new AtddDecoder({ role: "client", clientKey });
/** A decoder whose volume holds every run the round trips use. */
const wideReplicaDecoder = () => new AtddDecoder({ ...replicaOptions, sectors: 2 ** 40 });

const encode = (m: AtddMessage): Buffer => encodeMessage(m, { clientKey, systemKey });

const messages = messageEvents;

const feed = feedChunks;

/**
 * Events with every Buffer replaced by its length and SHA-256: vitest compares Buffers element by
 * element, far too slowly for 1 MiB of data or thousands of split points.
 */
function digested(events: DecodeEvent[]): unknown[] {
  return events.map((e) => {
    if (e.kind !== "message") return e;
    const fields = Object.entries(e.message).map(([k, v]) => [
      k,
      Buffer.isBuffer(v) ? `${v.length}:${createHash("sha256").update(v).digest("hex")}` : v,
    ]);
    return { kind: e.kind, message: Object.fromEntries(fields) };
  });
}

/** Same bytes with a change and a fresh, valid tag: authentic but invalid. */
function resigned(message: Buffer, key: Buffer, patch: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(message);
  patch(copy);
  signMessage(copy, key);
  return copy;
}

/** `message` encodes to exactly `want`, and `decoder` decodes `want` back to `message`. */
function expectWire(message: AtddMessage, want: Buffer, decoder = replicaDecoder()): void {
  expect(encode(message).toString("hex")).toBe(want.toString("hex"));
  expect(decoder.push(want)).toEqual(messages(message));
}

function hmac(key: Buffer, bytes: Buffer): Buffer {
  return createHmac("sha256", key).update(bytes).digest();
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
}

/** `count` consecutive sectors from `first`. */
function consecutive(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

/** The sector fields of a system range message over `sectors` (strictly increasing). */
function over(sectors: number[]): { sectorIndex: number; sectorCount: number; sectors: number[] } {
  return { sectorIndex: sectors[0]!, sectorCount: sectors.length, sectors };
}

/** A scattered set on a 2^40-sector volume: u32 halves, both edges of the volume. */
const SCATTERED = [3, 17, 1000, 2 ** 32 - 1, 2 ** 32, 2 ** 40 - 1];

/** Sizes of the system range messages (messages.ts): the fixed part, the list, the per-sector state. */
const procSize = (count: number) => MessageSize.RangeProc + count * MessageSize.RangeSectorListPerSector;
const tagRangeValueSize = (count: number) =>
  MessageSize.TagRangeValue + count * MessageSize.RangeSectorListPerSector;
const tagsRangeValueSize = (count: number) =>
  MessageSize.TagsRangeValueBase +
  count * (MessageSize.RangeSectorListPerSector + MessageSize.RangeTagPerSector);
const stateSize = (count: number) =>
  MessageSize.RangeStateBase +
  count * (MessageSize.RangeSectorListPerSector + MessageSize.RangeStatePerSector);

type RangeCommandName = "readRange" | "writeRange" | "writeSectors";
/** A message's name, the message, the size messages.ts gives it, and the decoder that reads it. */
type RangeCase = [string, AtddMessage, number, () => AtddDecoder];

/**
 * Every range message kind with `count` sectors, the size messages.ts gives it, and its decoder.
 * System messages cover `sectors` (by default the last `count` sectors of a 2^40-sector volume).
 */
function rangeCases(count: number, sectors = consecutive(2 ** 40 - count, count)): RangeCase[] {
  expect(sectors.length).toBe(count);
  const header = { sender: 3, opId, ...over(sectors) };
  const response = (
    command: RangeCommandName,
    status: ClientResponse["status"],
    data?: Buffer,
  ): ClientResponse => ({
    kind: "clientResponse",
    command,
    status,
    requestNumber: U64_MAX - BigInt(count),
    sectorCount: count,
    ...(data !== undefined ? { data } : {}),
  });
  /** A response without data: only a successful READ_RANGE carries any. */
  const bare = (name: string, command: RangeCommandName, status: ClientResponse["status"]): RangeCase => [
    name,
    response(command, status),
    MessageSize.RangeResponseBase,
    clientDecoder,
  ];
  return [
    [
      "READ_RANGE",
      { kind: "clientReadRange", requestNumber: U64_MAX, sectorIndex: 2 ** 40 - count, sectorCount: count },
      MessageSize.RangeCommandBase,
      wideReplicaDecoder,
    ],
    [
      "WRITE_RANGE",
      {
        kind: "clientWriteRange",
        requestNumber: 0n,
        sectorIndex: 0,
        sectorCount: count,
        data: run(count, 2),
      },
      MessageSize.RangeCommandBase + count * 4096,
      wideReplicaDecoder,
    ],
    [
      "WRITE_SECTORS",
      { kind: "clientWriteSectors", requestNumber: 5n, ...over(sectors), data: run(count, 6) },
      MessageSize.RangeCommandBase + count * (8 + 4096),
      wideReplicaDecoder,
    ],
    bare("WRITE_SECTORS response Ok", "writeSectors", ResponseStatus.Ok),
    bare("WRITE_SECTORS response AuthFailure", "writeSectors", ResponseStatus.AuthFailure),
    [
      "READ_RANGE response Ok",
      response("readRange", ResponseStatus.Ok, run(count, 3)),
      MessageSize.RangeResponseBase + count * 4096,
      clientDecoder,
    ],
    bare("READ_RANGE response AuthFailure", "readRange", ResponseStatus.AuthFailure),
    bare("WRITE_RANGE response Ok", "writeRange", ResponseStatus.Ok),
    bare("WRITE_RANGE response InvalidSectorIndex", "writeRange", ResponseStatus.InvalidSectorIndex),
    ["READ_RANGE_PROC", { kind: "readRangeProc", ...header }, procSize(count), wideReplicaDecoder],
    ["READ_TAG_RANGE_PROC", { kind: "readTagRangeProc", ...header }, procSize(count), wideReplicaDecoder],
    ["RANGE_ACK", { kind: "rangeAck", ...header }, procSize(count), wideReplicaDecoder],
    [
      "TAG_RANGE_VALUE",
      { kind: "tagRangeValue", ...header, ts: U64_MAX, wr: REPLICAS },
      tagRangeValueSize(count),
      wideReplicaDecoder,
    ],
    [
      "RANGE_VALUE",
      { kind: "rangeValue", ...header, tags: tags(count), data: run(count, 4) },
      stateSize(count),
      wideReplicaDecoder,
    ],
    [
      "WRITE_RANGE_PROC",
      { kind: "writeRangeProc", ...header, sender: 5, tags: tags(count), data: run(count, 5) },
      stateSize(count),
      wideReplicaDecoder,
    ],
    ["READ_TAGS_RANGE_PROC", { kind: "readTagsRangeProc", ...header }, procSize(count), wideReplicaDecoder],
    [
      "TAGS_RANGE_VALUE",
      { kind: "tagsRangeValue", ...header, sender: 1, tags: tags(count) },
      tagsRangeValueSize(count),
      wideReplicaDecoder,
    ],
  ];
}

const WIRE_TYPES: Record<string, number> = {
  READ_RANGE: MessageType.ReadRange,
  WRITE_RANGE: MessageType.WriteRange,
  "READ_RANGE response Ok": MessageType.ReadRangeResponse,
  "READ_RANGE response AuthFailure": MessageType.ReadRangeResponse,
  "WRITE_RANGE response Ok": MessageType.WriteRangeResponse,
  "WRITE_RANGE response InvalidSectorIndex": MessageType.WriteRangeResponse,
  WRITE_SECTORS: MessageType.WriteSectors,
  "WRITE_SECTORS response Ok": MessageType.WriteSectorsResponse,
  "WRITE_SECTORS response AuthFailure": MessageType.WriteSectorsResponse,
  READ_RANGE_PROC: MessageType.ReadRangeProc,
  READ_TAG_RANGE_PROC: MessageType.ReadTagRangeProc,
  RANGE_ACK: MessageType.RangeAck,
  TAG_RANGE_VALUE: MessageType.TagRangeValue,
  RANGE_VALUE: MessageType.RangeValue,
  WRITE_RANGE_PROC: MessageType.WriteRangeProc,
  READ_TAGS_RANGE_PROC: MessageType.ReadTagsRangeProc,
  TAGS_RANGE_VALUE: MessageType.TagsRangeValue,
};

describe("range messages round trip", () => {
  for (const count of [1, 2, 255, 256]) {
    it.each(rangeCases(count))(
      `encodes %s of ${count} sectors at its exact size and decodes it back unchanged`,
      (name, message, size, decoder) => {
        const bytes = encode(message);
        expect(bytes.length).toBe(size);
        expect(atddMessageSize(bytes, 0)).toBe(size);
        expect(bytes.readUInt16BE(4)).toBe(count);
        expect(bytes[7]).toBe(WIRE_TYPES[name]);
        expect(digested(decoder().push(bytes))).toEqual(digested(messages(message)));
      },
    );
  }

  it("the largest range message is exactly MAX_ATDD_MESSAGE_BYTES", () => {
    const [, message, size] = rangeCases(MAX_RANGE_SECTORS).find(([name]) => name === "RANGE_VALUE")!;
    expect(size).toBe(MAX_ATDD_MESSAGE_BYTES);
    expect(encode(message).length).toBe(64 + 256 * (8 + 16 + 4096));
  });

  const scatteredSets: [string, number[]][] = [
    ["[3, 17, 1000, 2^40-1]", [3, 17, 1000, 2 ** 40 - 1]],
    ["across 2^32 and up to 2^40-1", SCATTERED],
    ["one sector, 0", [0]],
    ["256 sectors spread over 2^40", Array.from({ length: 256 }, (_, i) => i * 4_294_967_291 + (i % 7))],
  ];
  for (const [setName, sectors] of scatteredSets) {
    it.each(rangeCases(sectors.length, sectors))(
      `encodes %s over the scattered set ${setName} with its sector list and decodes it back unchanged`,
      (name, message, size, decoder) => {
        const bytes = encode(message);
        expect(bytes.length).toBe(size);
        expect(atddMessageSize(bytes, 0)).toBe(size);
        expect(bytes[7]).toBe(WIRE_TYPES[name]);
        if (!isClientCommand(message) && message.kind !== "clientResponse") {
          const list = Array.from({ length: sectors.length }, (_, i) => bytes.readBigUInt64BE(32 + 8 * i));
          expect(list).toEqual(sectors.map(BigInt));
          expect(bytes.readBigUInt64BE(24)).toBe(BigInt(sectors[0]!));
        }
        if (message.kind === "clientWriteSectors") {
          const list = Array.from({ length: sectors.length }, (_, i) => bytes.readBigUInt64BE(24 + 8 * i));
          expect(list).toEqual(sectors.map(BigInt));
          expect(bytes.readBigUInt64BE(16)).toBe(BigInt(sectors[0]!));
        }
        expect(digested(decoder().push(bytes))).toEqual(digested(messages(message)));
      },
    );
  }

  it("the size of a system range message follows from its first 8 bytes alone", () => {
    for (const [, message, size] of rangeCases(5, [0, 9, 10, 11, 2 ** 40 - 1])) {
      const head = Buffer.concat([encode(message).subarray(0, 8), Buffer.alloc(size - 8, 0xee)]);
      expect(atddMessageSize(head, 0)).toBe(size);
    }
  });
});

describe("range messages byte layout (messages.ts, built by hand)", () => {
  it("READ_RANGE: count u16 at 4, zero padding at 6, type 0x88 at 7, request number, first sector, tag", () => {
    const command: ClientCommand = {
      kind: "clientReadRange",
      requestNumber: 0x0102030405060708n,
      sectorIndex: 0x0a0b0c0d0e,
      sectorCount: 256,
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x01, 0x00, 0x00, 0x88]),
      u64(0x0102030405060708n),
      u64(0x0a0b0c0d0en),
    ]);
    const want = Buffer.concat([body, hmac(clientKey, body)]);
    expect(want.length).toBe(56);
    expect(encode(command).toString("hex")).toBe(want.toString("hex"));
    expect(wideReplicaDecoder().push(want)).toEqual(messages(command));
  });

  it("WRITE_RANGE: the READ_RANGE header with type 0x89, then count x 4096 bytes of data", () => {
    const data = run(2, 9);
    const command: ClientCommand = {
      kind: "clientWriteRange",
      requestNumber: 7n,
      sectorIndex: 998,
      sectorCount: 2,
      data,
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0x02, 0x00, 0x89]),
      u64(7n),
      u64(998n),
      data,
    ]);
    const want = Buffer.concat([body, hmac(clientKey, body)]);
    expect(want.length).toBe(56 + 2 * 4096);
    expect(encode(command).equals(want)).toBe(true);
    expect(digested(replicaDecoder().push(want))).toEqual(digested(messages(command)));
  });

  it("WRITE_RANGE_PROC: count at 4, sender at 6, type 0x87, opId, first sector, sector list, count x (ts, 7 zeros, wr), data", () => {
    const data = run(3, 6);
    const message: SystemMessage = {
      kind: "writeRangeProc",
      sender: 4,
      opId,
      ...over([0x1234, 0x1235, 0x12_3456_789a]),
      tags: [
        { ts: 0x1122334455667788n, wr: 3 },
        { ts: 5n, wr: REPLICAS },
        { ts: 0n, wr: 0 },
      ],
      data,
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0x03, 0x04, 0x87]),
      opId,
      u64(0x1234n),
      // The sector list at 32: count x u64.
      u64(0x1234n),
      u64(0x1235n),
      u64(0x12_3456_789an),
      // The tags at 32 + 8 * 3 = 56.
      u64(0x1122334455667788n),
      Buffer.alloc(7),
      Buffer.from([3]),
      u64(5n),
      Buffer.alloc(7),
      Buffer.from([REPLICAS]),
      u64(0n),
      Buffer.alloc(8),
      // The data at 56 + 16 * 3 = 104.
      data,
    ]);
    const want = Buffer.concat([body, hmac(systemKey, body)]);
    expect(want.length).toBe(32 + 3 * (8 + 16 + 4096) + 32);
    expect(want.subarray(104, 104 + 3 * 4096).equals(data)).toBe(true);
    expect(encode(message).equals(want)).toBe(true);
    expect(digested(wideReplicaDecoder().push(want))).toEqual(digested(messages(message)));
  });

  it("RANGE_ACK of a scattered set: the range header, the sector list, the tag", () => {
    const message: SystemMessage = { kind: "rangeAck", sender: 2, opId, ...over([7, 100, 999]) };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0x03, 0x02, 0x84]),
      opId,
      u64(7n),
      u64(7n),
      u64(100n),
      u64(999n),
    ]);
    const want = Buffer.concat([body, hmac(systemKey, body)]);
    expect(want.length).toBe(64 + 3 * 8);
    expectWire(message, want);
  });

  it("TAG_RANGE_VALUE: the range header, the sector list, then one tag (ts, 7 zeros, wr)", () => {
    const sectors = consecutive(9, 255);
    const message: SystemMessage = {
      kind: "tagRangeValue",
      sender: 1,
      opId,
      ...over(sectors),
      ts: 77n,
      wr: 2,
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0xff, 0x01, 0x85]),
      opId,
      u64(9n),
      ...sectors.map((sector) => u64(BigInt(sector))),
      u64(77n),
      Buffer.alloc(7),
      Buffer.from([2]),
    ]);
    const want = Buffer.concat([body, hmac(systemKey, body)]);
    expect(want.length).toBe(80 + 255 * 8);
    expectWire(message, want);
  });

  it("READ_TAGS_RANGE_PROC of a scattered set: count at 4, sender at 6, type 0x8A, opId, first sector, sector list, tag", () => {
    const message: SystemMessage = {
      kind: "readTagsRangeProc",
      sender: 3,
      opId,
      ...over([2, 0x1_0000_0005, 0x12_3456_789a]),
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0x03, 0x03, 0x8a]),
      opId,
      u64(2n),
      u64(2n),
      u64(0x1_0000_0005n),
      u64(0x12_3456_789an),
    ]);
    const want = Buffer.concat([body, hmac(systemKey, body)]);
    expect(want.length).toBe(64 + 3 * 8);
    expectWire(message, want, wideReplicaDecoder());
  });

  it("TAGS_RANGE_VALUE: the range header (type 0x8B), the sector list, then count x (ts, 7 zeros, wr), no data", () => {
    const message: SystemMessage = {
      kind: "tagsRangeValue",
      sender: 5,
      opId,
      ...over([0x1234, 0x1235, 0x12_3456_789a]),
      tags: [
        { ts: 0x1122334455667788n, wr: 3 },
        { ts: U64_MAX, wr: REPLICAS },
        { ts: 0n, wr: 0 },
      ],
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0x03, 0x05, 0x8b]),
      opId,
      u64(0x1234n),
      // The sector list at 32: count x u64.
      u64(0x1234n),
      u64(0x1235n),
      u64(0x12_3456_789an),
      // The tags at 32 + 8 * 3 = 56, laid out as RANGE_VALUE's; the HMAC follows at 56 + 16 * 3.
      u64(0x1122334455667788n),
      Buffer.alloc(7),
      Buffer.from([3]),
      u64(U64_MAX),
      Buffer.alloc(7),
      Buffer.from([REPLICAS]),
      u64(0n),
      Buffer.alloc(8),
    ]);
    const want = Buffer.concat([body, hmac(systemKey, body)]);
    expect(want.length).toBe(32 + 3 * (8 + 16) + 32);
    expect(encode(message).toString("hex")).toBe(want.toString("hex"));
    // RANGE_VALUE of the same set and tags: the same bytes up to the data.
    const rangeValue = encode({ ...message, kind: "rangeValue", data: run(3) } as SystemMessage);
    expect(rangeValue.subarray(8, 104).equals(want.subarray(8, 104))).toBe(true);
    expect(wideReplicaDecoder().push(want)).toEqual(messages(message));
  });

  it("READ_RANGE response Ok: count echoed at 4, status at 6, type 0xC8, request number, data", () => {
    const data = run(3, 8);
    const response: ClientResponse = {
      kind: "clientResponse",
      command: "readRange",
      status: ResponseStatus.Ok,
      requestNumber: 42n,
      sectorCount: 3,
      data,
    };
    const body = Buffer.concat([Buffer.from("atdd"), Buffer.from([0x00, 0x03, 0x00, 0xc8]), u64(42n), data]);
    const want = Buffer.concat([body, hmac(clientKey, body)]);
    expect(want.length).toBe(48 + 3 * 4096);
    expect(encode(response).equals(want)).toBe(true);
    expect(digested(clientDecoder().push(want))).toEqual(digested(messages(response)));
  });

  it("WRITE_RANGE response AuthFailure: 48 bytes, count 256 echoed big-endian, type 0xC9", () => {
    const response: ClientResponse = {
      kind: "clientResponse",
      command: "writeRange",
      status: ResponseStatus.AuthFailure,
      requestNumber: U64_MAX,
      sectorCount: 256,
    };
    const body = Buffer.concat([Buffer.from("atdd"), Buffer.from([0x01, 0x00, 0x01, 0xc9]), u64(U64_MAX)]);
    const want = Buffer.concat([body, hmac(clientKey, body)]);
    expect(encode(response).toString("hex")).toBe(want.toString("hex"));
    expect(clientDecoder().push(want)).toEqual(messages(response));
  });

  it("WRITE_SECTORS: the READ_RANGE header with type 0x8C, the sector list, then count x 4096 bytes of data", () => {
    const data = run(3, 10);
    const command: ClientCommand = {
      kind: "clientWriteSectors",
      requestNumber: 9n,
      sectorIndex: 2,
      sectorCount: 3,
      sectors: [2, 500, 999],
      data,
    };
    const body = Buffer.concat([
      Buffer.from("atdd"),
      Buffer.from([0x00, 0x03, 0x00, 0x8c]),
      u64(9n),
      u64(2n),
      u64(2n),
      u64(500n),
      u64(999n),
      data,
    ]);
    const want = Buffer.concat([body, hmac(clientKey, body)]);
    expect(want.length).toBe(56 + 3 * (8 + 4096));
    expect(encode(command).equals(want)).toBe(true);
    expect(digested(replicaDecoder().push(want))).toEqual(digested(messages(command)));
  });

  it("WRITE_SECTORS response: 48 bytes, count echoed at 4, status at 6, type 0xCC, request number, tag", () => {
    const res: ClientResponse = {
      kind: "clientResponse",
      command: "writeSectors",
      status: ResponseStatus.Ok,
      requestNumber: 0x1122n,
      sectorCount: 200,
    };
    const body = Buffer.concat([Buffer.from("atdd"), Buffer.from([0x00, 200, 0x00, 0xcc]), u64(0x1122n)]);
    const want = Buffer.concat([body, hmac(clientKey, body)]);
    expect(want.length).toBe(48);
    expectWire(res, want, clientDecoder());
  });

  it("ignores the padding byte of a client range command on input, as for READ/WRITE", () => {
    const command: ClientCommand = {
      kind: "clientReadRange",
      requestNumber: 1n,
      sectorIndex: 1,
      sectorCount: 2,
    };
    const dirty = resigned(encode(command), clientKey, (b) => {
      b[6] = 0xee;
    });
    expect(replicaDecoder().push(dirty)).toEqual(messages(command));
  });
});

describe("range messages on a stream", () => {
  const readRange: ClientCommand = {
    kind: "clientReadRange",
    requestNumber: 1n,
    sectorIndex: 10,
    sectorCount: 3,
  };
  const write: ClientCommand = { kind: "clientWrite", requestNumber: 2n, sectorIndex: 11, data: run(1, 11) };
  const read: ClientCommand = { kind: "clientRead", requestNumber: 3n, sectorIndex: 12 };
  const rangeAck: SystemMessage = {
    kind: "rangeAck",
    sender: 2,
    opId,
    ...over([0, 2, 4, 100, 500, 998, 999]),
  };
  const tagRangeValue: SystemMessage = {
    kind: "tagRangeValue",
    sender: 1,
    opId,
    ...over([5, 6, 7, 50, 51, 300, 301, 302, 900]),
    ts: 3n,
    wr: 1,
  };
  const ack: SystemMessage = { kind: "ack", sender: 3, opId, sectorIndex: 7 };
  const writeRangeProc1: SystemMessage = {
    kind: "writeRangeProc",
    sender: 4,
    opId,
    ...over([999]),
    tags: tags(1),
    data: run(1, 12),
  };
  const writeRangeProc2: SystemMessage = {
    kind: "writeRangeProc",
    sender: 5,
    opId,
    ...over([1, 640]),
    tags: tags(2),
    data: run(2, 16),
  };
  const readTagsRangeProc: SystemMessage = {
    kind: "readTagsRangeProc",
    sender: 3,
    opId,
    ...over([4, 44, 444]),
  };
  const tagsRangeValue3: SystemMessage = {
    kind: "tagsRangeValue",
    sender: 4,
    opId,
    ...over([4, 44, 444]),
    tags: tags(3),
  };

  it("decodes standard and range messages, up to a 256-sector one, fed one byte at a time", () => {
    const big: SystemMessage = {
      kind: "rangeValue",
      sender: 5,
      opId,
      // Scattered over the whole volume: every third sector, then the last one.
      ...over([...Array.from({ length: 255 }, (_, i) => i * 3), SECTORS - 1]),
      tags: tags(256),
      data: run(256, 13),
    };
    const writeRange: ClientCommand = {
      kind: "clientWriteRange",
      requestNumber: 9n,
      sectorIndex: 0,
      sectorCount: 2,
      data: run(2, 14),
    };
    const tagsRangeValue: SystemMessage = {
      kind: "tagsRangeValue",
      sender: 2,
      opId,
      ...over([...Array.from({ length: 255 }, (_, i) => i * 2), SECTORS - 1]),
      tags: tags(256),
    };
    const all = [
      read,
      big,
      readTagsRangeProc,
      readRange,
      writeRange,
      tagsRangeValue,
      ack,
      write,
      tagRangeValue,
      writeRangeProc2,
    ];
    const stream = Buffer.concat(all.map(encode));
    const decoder = replicaDecoder();
    const events: DecodeEvent[] = [];
    let mostBuffered = 0;
    for (let i = 0; i < stream.length; i++) {
      events.push(...decoder.push(stream.subarray(i, i + 1)));
      mostBuffered = Math.max(mostBuffered, decoder.bufferedBytes());
    }
    expect(digested(events)).toEqual(digested(messages(...all)));
    expect(mostBuffered).toBe(MAX_ATDD_MESSAGE_BYTES - 1);
    expect(decoder.bufferedBytes()).toBe(0);
  });

  it("decodes a replica-side stream mixing standard and range messages split at every point", () => {
    const all = [
      readRange,
      writeRangeProc1,
      readTagsRangeProc,
      read,
      rangeAck,
      tagsRangeValue3,
      ack,
      tagRangeValue,
      writeRangeProc2,
    ];
    const stream = Buffer.concat(all.map(encode));
    const want = digested(messages(...all));
    for (let cut = 0; cut <= stream.length; cut++) {
      expect(digested(feed(replicaDecoder(), stream, [cut])), `split at ${cut}`).toEqual(want);
    }
  });

  it("decodes a client-side stream mixing standard and range responses split at every point", () => {
    const responses: ClientResponse[] = [
      { kind: "clientResponse", command: "write", status: ResponseStatus.Ok, requestNumber: 1n },
      {
        kind: "clientResponse",
        command: "readRange",
        status: ResponseStatus.Ok,
        requestNumber: 2n,
        sectorCount: 1,
        data: run(1, 15),
      },
      {
        kind: "clientResponse",
        command: "writeRange",
        status: ResponseStatus.InvalidSectorIndex,
        requestNumber: 3n,
        sectorCount: 256,
      },
      { kind: "clientResponse", command: "read", status: ResponseStatus.AuthFailure, requestNumber: 4n },
    ];
    const stream = Buffer.concat(responses.map(encode));
    const want = digested(messages(...responses));
    for (let cut = 0; cut <= stream.length; cut++) {
      expect(digested(feed(clientDecoder(), stream, [cut])), `split at ${cut}`).toEqual(want);
    }
  });
});

describe("range sector count bound (SPEC §1.4: unknown type, drop 8 bytes)", () => {
  const next: ClientCommand = { kind: "clientRead", requestNumber: 5n, sectorIndex: 1 };
  const nextResponse: ClientResponse = {
    kind: "clientResponse",
    command: "write",
    status: ResponseStatus.Ok,
    requestNumber: 5n,
  };
  const badCounts = [0, MAX_RANGE_SECTORS + 1, 0xffff];
  const cases = rangeCases(1).flatMap(([name, message, size, decoder]) =>
    badCounts.map((count) => [name, count, message, size, decoder] as const),
  );

  it.each(cases)(
    "a %s with count %i is dropped as 8 bytes of unknown type, then the stream resyncs",
    (_name, count, message, size, decoder) => {
      // Re-signed, so nothing but the count is wrong.
      const key = isClientCommand(message) || message.kind === "clientResponse" ? clientKey : systemKey;
      const bad = resigned(encode(message), key, (b) => b.writeUInt16BE(count, 4));
      expect(atddMessageSize(bad, 0)).toBeUndefined();
      const following = message.kind === "clientResponse" ? nextResponse : next;
      expect(decoder().push(Buffer.concat([bad, encode(following)]))).toEqual([
        { kind: "dropped", reason: "unknownType", bytes: 8 },
        { kind: "dropped", reason: "garbage", bytes: size - 8 },
        ...messages(following),
      ]);
    },
  );

  it("drops a bad count identically when the header arrives one byte at a time", () => {
    const bad = resigned(encode(rangeCases(1)[1]![1]), clientKey, (b) => b.writeUInt16BE(257, 4));
    const stream = Buffer.concat([bad, encode(next)]);
    const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    const events = feed(replicaDecoder(), stream, cuts);
    expect(events[0]).toEqual({ kind: "dropped", reason: "unknownType", bytes: 8 });
    expect(events.at(-1)).toEqual(messages(next)[0]);
    const garbage = events.slice(1, -1).reduce((n, e) => n + (e.kind === "dropped" ? e.bytes : 0), 0);
    expect(garbage).toBe(bad.length - 8);
  });

  it("range types of the other role, or system ones without a system key, are unknown", () => {
    const byName = (wanted: string): AtddMessage => rangeCases(1).find(([name]) => name === wanted)![1];
    const readRange = byName("READ_RANGE");
    const response = byName("READ_RANGE response Ok");
    const readRangeProc = byName("READ_RANGE_PROC");
    const unknown = [{ kind: "dropped", reason: "unknownType", bytes: 8 }];
    expect(clientDecoder().push(encode(readRange)).slice(0, 1)).toEqual(unknown);
    expect(clientDecoder().push(encode(readRangeProc)).slice(0, 1)).toEqual(unknown);
    expect(replicaDecoder().push(encode(response)).slice(0, 1)).toEqual(unknown);
    const noSystemKey = new AtddDecoder({ role: "replica", clientKey, sectors: 2 ** 40 });
    expect(noSystemKey.push(encode(readRangeProc)).slice(0, 1)).toEqual(unknown);
    for (const name of ["READ_TAGS_RANGE_PROC", "TAGS_RANGE_VALUE"]) {
      expect(
        clientDecoder()
          .push(encode(byName(name)))
          .slice(0, 1),
        name,
      ).toEqual(unknown);
      expect(noSystemKey.push(encode(byName(name))).slice(0, 1), name).toEqual(unknown);
    }
    expect(noSystemKey.push(encode(readRange))).toEqual(messages(readRange));
  });

  it("a range response with an undefined status is unknown", () => {
    const ok = encode({
      kind: "clientResponse",
      command: "writeRange",
      status: ResponseStatus.Ok,
      requestNumber: 1n,
      sectorCount: 2,
    });
    const bad = resigned(ok, clientKey, (b) => {
      b[6] = 3;
    });
    expect(clientDecoder().push(bad)[0]).toEqual({ kind: "dropped", reason: "unknownType", bytes: 8 });
  });
});

describe("range messages: authentication and the volume bound", () => {
  const readRange: ClientCommand = {
    kind: "clientReadRange",
    requestNumber: 31n,
    sectorIndex: 4,
    sectorCount: 3,
  };
  const writeRange: ClientCommand = {
    kind: "clientWriteRange",
    requestNumber: 32n,
    sectorIndex: 4,
    sectorCount: 2,
    data: run(2, 21),
  };
  const read: ClientCommand = { kind: "clientRead", requestNumber: 33n, sectorIndex: 0 };

  it("a WRITE_RANGE with a bad tag is rejected as AuthFailure with its command and sector count, and consumed", () => {
    const forged = encode(writeRange);
    forged[5000]! ^= 0x10;
    expect(replicaDecoder().push(Buffer.concat([forged, encode(read)]))).toEqual([
      {
        kind: "rejected",
        command: "writeRange",
        requestNumber: 32n,
        status: ResponseStatus.AuthFailure,
        sectorCount: 2,
      },
      ...messages(read),
    ]);
  });

  it("a READ_RANGE signed with another key is rejected as AuthFailure with its sector count", () => {
    const other = encodeClientCommand(readRange, Buffer.alloc(32, 0x01));
    expect(replicaDecoder().push(other)).toEqual([
      {
        kind: "rejected",
        command: "readRange",
        requestNumber: 31n,
        status: ResponseStatus.AuthFailure,
        sectorCount: 3,
      },
    ]);
  });

  it.each([
    [SECTORS - 3, 3, true],
    [SECTORS - 2, 3, false],
    [SECTORS - 1, 256, false],
    [SECTORS, 1, false],
  ])(
    "a READ_RANGE of sectors %i +%i: accepted only if the whole run is on the volume (%s)",
    (index, count, ok) => {
      const command: ClientCommand = {
        kind: "clientReadRange",
        requestNumber: 8n,
        sectorIndex: index,
        sectorCount: count,
      };
      const want = ok
        ? messages(command)
        : [
            {
              kind: "rejected",
              command: "readRange",
              requestNumber: 8n,
              status: ResponseStatus.InvalidSectorIndex,
              sectorCount: count,
            },
          ];
      expect(replicaDecoder().push(encode(command))).toEqual(want);
    },
  );

  it("a WRITE_RANGE crossing the volume end is rejected as InvalidSectorIndex, then the stream goes on", () => {
    const crossing: ClientCommand = { ...writeRange, sectorIndex: SECTORS - 1 };
    expect(replicaDecoder().push(Buffer.concat([encode(crossing), encode(read)]))).toEqual([
      {
        kind: "rejected",
        command: "writeRange",
        requestNumber: 32n,
        status: ResponseStatus.InvalidSectorIndex,
        sectorCount: 2,
      },
      ...messages(read),
    ]);
  });

  const writeSectors: ClientCommand = {
    kind: "clientWriteSectors",
    requestNumber: 34n,
    sectorIndex: 1,
    sectorCount: 3,
    sectors: [1, 50, 998],
    data: run(3, 22),
  };

  it("a WRITE_SECTORS with a bad tag is rejected as AuthFailure with its sector count, and consumed", () => {
    const forged = encode(writeSectors);
    forged[100]! ^= 0x01;
    expect(replicaDecoder().push(Buffer.concat([forged, encode(read)]))).toEqual([
      {
        kind: "rejected",
        command: "writeSectors",
        requestNumber: 34n,
        status: ResponseStatus.AuthFailure,
        sectorCount: 3,
      },
      ...messages(read),
    ]);
  });

  it.each([
    ["a sector past the volume end", (b: Buffer) => b.writeBigUInt64BE(BigInt(SECTORS), 24 + 16)],
    ["a list that is not strictly increasing", (b: Buffer) => b.writeBigUInt64BE(50n, 24 + 16)],
    ["a repeated sector", (b: Buffer) => b.writeBigUInt64BE(1n, 24 + 8)],
    ["a first sector other than the header's", (b: Buffer) => b.writeBigUInt64BE(0n, 16)],
    ["a header sector past the volume end", (b: Buffer) => b.writeBigUInt64BE(U64_MAX, 16)],
    ["a sector at 2^53", (b: Buffer) => b.writeBigUInt64BE(2n ** 53n, 24 + 16)],
  ])(
    "an authentic WRITE_SECTORS with %s is rejected as InvalidSectorIndex, then the stream goes on",
    (_, patch) => {
      const bad = resigned(encode(writeSectors), clientKey, patch);
      expect(new AtddDecoder({ ...replicaOptions }).push(Buffer.concat([bad, encode(read)]))).toEqual([
        {
          kind: "rejected",
          command: "writeSectors",
          requestNumber: 34n,
          status: ResponseStatus.InvalidSectorIndex,
          sectorCount: 3,
        },
        ...messages(read),
      ]);
    },
  );

  it("runs ending beyond 2^53 or starting near 2^64 are rejected even without a volume size", () => {
    const decoder = new AtddDecoder({ role: "replica", clientKey });
    const base = encode(readRange);
    for (const index of [BigInt(Number.MAX_SAFE_INTEGER) - 1n, U64_MAX - 1n, U64_MAX]) {
      const bad = resigned(base, clientKey, (b) => b.writeBigUInt64BE(index, 16));
      expect(decoder.push(bad)).toEqual([
        {
          kind: "rejected",
          command: "readRange",
          requestNumber: 31n,
          status: ResponseStatus.InvalidSectorIndex,
          sectorCount: 3,
        },
      ]);
    }
    const last: ClientCommand = { ...readRange, sectorIndex: Number.MAX_SAFE_INTEGER - 2 };
    expect(decoder.push(encode(last))).toEqual(messages(last));
  });

  it("an authentic system range message whose last sector is past the volume end is dropped as invalidSector", () => {
    const ack: SystemMessage = { kind: "ack", sender: 1, opId, sectorIndex: 1 };
    const inside: SystemMessage = {
      kind: "writeRangeProc",
      sender: 2,
      opId,
      ...over([0, SECTORS - 1]),
      tags: tags(2),
      data: run(2, 22),
    };
    // Only the last sector is off the volume; the header's first sector is fine.
    const crossing: SystemMessage = { ...inside, sectors: [0, SECTORS] };
    const size = stateSize(2);
    expect(
      digested(replicaDecoder().push(Buffer.concat([encode(crossing), encode(inside), encode(ack)]))),
    ).toEqual(
      digested([{ kind: "dropped", reason: "invalidSector", bytes: size }, ...messages(inside, ack)]),
    );
    const readRangeProc: SystemMessage = {
      kind: "readRangeProc",
      sender: 1,
      opId,
      ...over(consecutive(990, 11)),
    };
    expect(replicaDecoder().push(encode(readRangeProc))).toEqual([
      { kind: "dropped", reason: "invalidSector", bytes: procSize(11) },
    ]);
    const wholeSpan: SystemMessage = { kind: "rangeAck", sender: 1, opId, ...over([0, 500, SECTORS - 1]) };
    expect(replicaDecoder().push(encode(wholeSpan))).toEqual(messages(wholeSpan));
    for (const message of [
      { kind: "readTagsRangeProc", sender: 1, opId, ...over([5, SECTORS]) },
      { kind: "tagsRangeValue", sender: 1, opId, ...over([5, SECTORS]), tags: tags(2) },
    ] as SystemMessage[]) {
      const bytes = encode(message);
      expect(replicaDecoder().push(bytes), message.kind).toEqual([
        { kind: "dropped", reason: "invalidSector", bytes: bytes.length },
      ]);
    }
  });

  describe("an authentic system range message with a bad sector list is dropped as invalidSector", () => {
    const writeRangeProc: SystemMessage = {
      kind: "writeRangeProc",
      sender: 2,
      opId,
      ...over([10, 20, 30, 40]),
      tags: tags(4),
      data: run(4, 25),
    };
    const tagRangeValue: SystemMessage = {
      kind: "tagRangeValue",
      sender: 3,
      opId,
      ...over([10, 20, 30, 40]),
      ts: 9n,
      wr: 3,
    };
    const readRangeProc: SystemMessage = {
      kind: "readRangeProc",
      sender: 4,
      opId,
      ...over([10, 20, 30, 40]),
    };
    const readTagsRangeProc: SystemMessage = { ...readRangeProc, kind: "readTagsRangeProc" };
    const tagsRangeValue: SystemMessage = {
      kind: "tagsRangeValue",
      sender: 5,
      opId,
      ...over([10, 20, 30, 40]),
      tags: tags(4),
    };
    const entry = (i: number) => 32 + 8 * i;
    // Patches of an encoded 4-sector message [10, 20, 30, 40]; each is re-signed, so only the list is wrong.
    const patches: [string, (b: Buffer) => void][] = [
      ["decreasing", (b) => b.writeBigUInt64BE(25n, entry(3))],
      ["a duplicate sector", (b) => b.writeBigUInt64BE(20n, entry(2))],
      ["two equal last sectors", (b) => b.writeBigUInt64BE(30n, entry(3))],
      ["a first element other than the header's sector", (b) => b.writeBigUInt64BE(11n, entry(0))],
      ["a first element below the header's sector", (b) => b.writeBigUInt64BE(9n, entry(0))],
      ["a header sector other than the list's first", (b) => b.writeBigUInt64BE(11n, 24)],
      ["a header sector past the volume", (b) => b.writeBigUInt64BE(BigInt(SECTORS), 24)],
      ["the last sector at the volume size", (b) => b.writeBigUInt64BE(BigInt(SECTORS), entry(3))],
      ["the last sector at 2^53", (b) => b.writeBigUInt64BE(2n ** 53n, entry(3))],
      ["the last sector at 2^64-1", (b) => b.writeBigUInt64BE(U64_MAX, entry(3))],
      ["a middle sector beyond the volume", (b) => b.writeBigUInt64BE(2n ** 40n, entry(2))],
      [
        "a middle sector whose low word alone would increase",
        (b) => b.writeBigUInt64BE(2n ** 32n + 25n, entry(2)),
      ],
      ["every sector zero", (b) => b.fill(0, entry(0), entry(4))],
    ];
    const cases = patches.flatMap(([name, patch]) =>
      [writeRangeProc, tagRangeValue, readRangeProc, readTagsRangeProc, tagsRangeValue].map(
        (message) => [message.kind, name, message, patch] as const,
      ),
    );

    it.each(cases)("a %s with %s", (_kind, _name, message, patch) => {
      const bytes = encode(message);
      const bad = resigned(bytes, systemKey, patch);
      const next: ClientCommand = { kind: "clientRead", requestNumber: 1n, sectorIndex: 40 };
      expect(atddMessageSize(bad, 0)).toBe(bytes.length);
      // Dropped whole; the intact message after it decodes.
      expect(digested(replicaDecoder().push(Buffer.concat([bad, encode(next), bytes])))).toEqual(
        digested([
          { kind: "dropped", reason: "invalidSector", bytes: bytes.length },
          ...messages(next, message),
        ]),
      );
    });

    it("the same bad lists without the volume bound are still dropped", () => {
      const noVolume = new AtddDecoder({ ...replicaOptions, sectors: undefined });
      for (const [name, patch] of patches) {
        if (name.includes("volume")) continue;
        const bytes = encode(readRangeProc);
        expect(noVolume.push(resigned(bytes, systemKey, patch)), name).toEqual([
          { kind: "dropped", reason: "invalidSector", bytes: bytes.length },
        ]);
      }
    });

    it("checks the tag first, then the sender, then the list", () => {
      const bytes = encode(readRangeProc);
      const badList = (b: Buffer) => b.writeBigUInt64BE(10n, entry(1));
      const forged = resigned(bytes, systemKey, badList);
      forged[40]! ^= 0x01;
      expect(replicaDecoder().push(forged)).toEqual([
        { kind: "dropped", reason: "badTag", bytes: bytes.length },
      ]);
      const badSender = resigned(bytes, systemKey, (b) => {
        badList(b);
        b[6] = REPLICAS + 1;
      });
      expect(replicaDecoder().push(badSender)).toEqual([
        { kind: "dropped", reason: "invalidSender", bytes: bytes.length },
      ]);
    });
  });

  const senderCases = (["rangeAck", "readTagsRangeProc", "tagsRangeValue"] as const).flatMap((kind) =>
    [0, REPLICAS + 1, 255].map((rank) => [kind, rank] as const),
  );
  it.each(senderCases)(
    "an authentic system range message (%s) from sender rank %i is dropped",
    (kind, rank) => {
      const header = { sender: 1, opId, ...over([0, 1, 5, 6]) };
      const message: SystemMessage =
        kind === "tagsRangeValue" ? { kind, ...header, tags: tags(4) } : { kind, ...header };
      const bytes = encode(message);
      const bad = resigned(bytes, systemKey, (b) => {
        b[6] = rank;
      });
      expect(replicaDecoder().push(bad)).toEqual([
        { kind: "dropped", reason: "invalidSender", bytes: bytes.length },
      ]);
    },
  );

  it("an authentic range message whose tag names a writer rank above N is dropped whole", () => {
    const rangeAck = encode({ kind: "rangeAck", sender: 1, opId, ...over([0, 1, 5, 6]) });
    const badTags = tags(4);
    badTags[2] = { ts: 5n, wr: REPLICAS + 1 };
    const bad: SystemMessage[] = [
      { kind: "rangeValue", sender: 2, opId, ...over([0, 1, 5, 6]), tags: badTags, data: run(4) },
      { kind: "writeRangeProc", sender: 2, opId, ...over([0, 1, 5, 6]), tags: badTags, data: run(4) },
      { kind: "tagRangeValue", sender: 2, opId, ...over([0, 1, 5, 6]), ts: 5n, wr: 254 },
      { kind: "tagsRangeValue", sender: 2, opId, ...over([0, 1, 5, 6]), tags: badTags },
      {
        kind: "tagsRangeValue",
        sender: 2,
        opId,
        ...over([0, 1, 5, 6]),
        tags: [...tags(3), { ts: 1n, wr: 254 }],
      },
    ];
    for (const message of bad) {
      const bytes = encode(message);
      expect(replicaDecoder().push(Buffer.concat([bytes, rangeAck]))).toEqual([
        { kind: "dropped", reason: "invalidWriter", bytes: bytes.length },
        ...messages({ kind: "rangeAck", sender: 1, opId, ...over([0, 1, 5, 6]) }),
      ]);
    }
  });

  it("a system range message with a bad tag is dropped whole, and the stream goes on", () => {
    const rangeValue = encode({
      kind: "rangeValue",
      sender: 1,
      opId,
      ...over([0, 7, 8]),
      tags: tags(3),
      data: run(3, 23),
    });
    rangeValue[56 + 8]! ^= 0x01; // a tag's padding: covered by the HMAC like every other byte
    expect(replicaDecoder().push(Buffer.concat([rangeValue, encode(read)]))).toEqual([
      { kind: "dropped", reason: "badTag", bytes: rangeValue.length },
      ...messages(read),
    ]);
  });

  it("a TAGS_RANGE_VALUE with a bad tag is dropped whole, and the stream goes on", () => {
    const tagsRangeValue = encode({
      kind: "tagsRangeValue",
      sender: 1,
      opId,
      ...over([0, 7, 8]),
      tags: tags(3),
    });
    tagsRangeValue[56 + 16 + 9]! ^= 0x01; // the second tag's padding
    expect(replicaDecoder().push(Buffer.concat([tagsRangeValue, encode(read)]))).toEqual([
      { kind: "dropped", reason: "badTag", bytes: tagsRangeValue.length },
      ...messages(read),
    ]);
  });

  it.each<[string, SystemMessage]>([
    ["READ_TAGS_RANGE_PROC", { kind: "readTagsRangeProc", sender: 2, opId, ...over([3, 900, 901]) }],
    ["TAGS_RANGE_VALUE", { kind: "tagsRangeValue", sender: 3, opId, ...over([3, 900, 901]), tags: tags(3) }],
  ])("never accepts a %s of 3 sectors with any single byte changed, at every position", (_name, message) => {
    const original = encode(message);
    expect(replicaDecoder().push(original)).toEqual(messages(message));
    expect(firstAcceptedByteChange(original, replicaDecoder)).toBeUndefined();
  });

  it("never accepts a WRITE_RANGE_PROC of 2 sectors with any single byte changed, at every position", () => {
    const original = encode({
      kind: "writeRangeProc",
      sender: 1,
      opId,
      ...over([3, 900]),
      tags: tags(2),
      data: run(2, 24),
    });
    expect(firstAcceptedByteChange(original, replicaDecoder, [0x01, 0xff])).toBeUndefined();
  });

  it("never executes a WRITE_SECTORS of 2 sectors with any single byte changed, at every position", () => {
    const original = encode({
      kind: "clientWriteSectors",
      requestNumber: 40n,
      ...over([3, 900]),
      data: run(2, 25),
    });
    expect(replicaDecoder().push(original)).toHaveLength(1);
    expect(firstAcceptedByteChange(original, replicaDecoder, [0x01, 0xff])).toBeUndefined();
  });

  it("never executes a READ_RANGE with any single byte changed, at every position", () => {
    expect(firstAcceptedByteChange(encode(readRange), replicaDecoder)).toBeUndefined();
  });
});

describe("range messages: who owns the decoded data", () => {
  const writeRange: ClientCommand = {
    kind: "clientWriteRange",
    requestNumber: 1n,
    sectorIndex: 0,
    sectorCount: 4,
    data: run(4, 31),
  };
  const rangeValue: SystemMessage = {
    kind: "rangeValue",
    sender: 2,
    opId,
    ...over([8, 20, 900]),
    tags: tags(3),
    data: run(3, 32),
  };
  const readRangeOk: ClientResponse = {
    kind: "clientResponse",
    command: "readRange",
    status: ResponseStatus.Ok,
    requestNumber: 3n,
    sectorCount: 2,
    data: run(2, 33),
  };

  function dataOf(event: DecodeEvent | undefined): Buffer {
    if (event?.kind !== "message" || !("data" in event.message) || event.message.data === undefined) {
      throw new Error(`expected a message with data, got ${JSON.stringify(event)}`);
    }
    return event.message.data;
  }

  it.each([
    ["WRITE_RANGE", writeRange, replicaDecoder],
    ["RANGE_VALUE", rangeValue, replicaDecoder],
    ["READ_RANGE response", readRangeOk, clientDecoder],
  ] as const)(
    "a %s decoded in place from a chunk has its data copied out of the chunk",
    (_name, message, decoder) => {
      const want = Buffer.from(dataOf(messages(message)[0]));
      const chunk = Buffer.concat([encode(message), encode(message).subarray(0, 100)]);
      const [first] = decoder().push(chunk);
      const data = dataOf(first);
      expect(data.equals(want)).toBe(true);
      expect(data.buffer).not.toBe(chunk.buffer);
      chunk.fill(0x61);
      expect(data.equals(want)).toBe(true);
    },
  );

  it.each([
    ["WRITE_RANGE", writeRange, replicaDecoder],
    ["RANGE_VALUE", rangeValue, replicaDecoder],
    ["READ_RANGE response", readRangeOk, clientDecoder],
  ] as const)(
    "a %s assembled across chunks decodes to the input and keeps nothing of the chunks",
    (_name, message, decoder) => {
      const want = Buffer.from(dataOf(messages(message)[0]));
      const bytes = encode(message);
      const head = Buffer.from(bytes.subarray(0, 5000));
      const tail = Buffer.from(bytes.subarray(5000));
      const d = decoder();
      expect(d.push(head)).toEqual([]);
      const [event] = d.push(tail);
      const data = dataOf(event);
      expect(data.equals(want)).toBe(true);
      expect([head.buffer, tail.buffer]).not.toContain(data.buffer);
      head.fill(0x61);
      tail.fill(0x61);
      expect(data.equals(want)).toBe(true);
      expect(digested([event!])).toEqual(digested(messages(message)));
    },
  );

  it("each range message assembled across chunks gets a buffer of its own", () => {
    const bytes = encode(writeRange);
    const d = replicaDecoder();
    const stream = Buffer.concat([bytes, bytes]);
    const events = feed(d, stream, [10, bytes.length + 10]);
    const [a, b] = events.map(dataOf);
    expect(a!.buffer).not.toBe(b!.buffer);
    a!.fill(0);
    expect(b!.equals(dataOf(messages(writeRange)[0]))).toBe(true);
  });
});

describe("range encoders: programmer errors fail loudly", () => {
  const readRange = { kind: "clientReadRange", requestNumber: 1n, sectorIndex: 1, sectorCount: 2 } as const;
  const writeRange = { ...readRange, kind: "clientWriteRange", data: run(2) } as const;
  const writeRangeProc = {
    kind: "writeRangeProc",
    sender: 1,
    opId,
    sectorIndex: 1,
    sectorCount: 2,
    sectors: [1, 5] as number[],
    tags: tags(2),
    data: run(2),
  } as const;
  const rangeAck =
    (sectors: number[], sectorIndex = sectors[0]!, sectorCount = sectors.length) =>
    () =>
      encodeSystemMessage(
        { kind: "rangeAck", sender: 1, opId, sectorIndex, sectorCount, sectors },
        systemKey,
      );
  const response = {
    kind: "clientResponse",
    command: "readRange",
    status: ResponseStatus.Ok,
    requestNumber: 1n,
    sectorCount: 2,
    data: run(2),
  } as const;

  it.each<[string, () => unknown]>([
    ["a READ_RANGE of 0 sectors", () => encodeClientCommand({ ...readRange, sectorCount: 0 }, clientKey)],
    ["a READ_RANGE of 257 sectors", () => encodeClientCommand({ ...readRange, sectorCount: 257 }, clientKey)],
    ["a READ_RANGE of 1.5 sectors", () => encodeClientCommand({ ...readRange, sectorCount: 1.5 }, clientKey)],
    [
      "a READ_RANGE ending beyond 2^53",
      () => encodeClientCommand({ ...readRange, sectorIndex: Number.MAX_SAFE_INTEGER }, clientKey),
    ],
    [
      "WRITE_RANGE data one byte short",
      () => encodeClientCommand({ ...writeRange, data: run(2).subarray(1) }, clientKey),
    ],
    [
      "WRITE_RANGE data of another count",
      () => encodeClientCommand({ ...writeRange, data: run(3) }, clientKey),
    ],
    [
      "a range response without its count",
      () => encodeClientResponse({ ...response, sectorCount: undefined }, clientKey),
    ],
    [
      "a range response of 257 sectors",
      () => encodeClientResponse({ ...response, sectorCount: 257 }, clientKey),
    ],
    [
      "READ_RANGE Ok data of another count",
      () => encodeClientResponse({ ...response, data: run(1) }, clientKey),
    ],
    [
      "data on a failed range response",
      () => encodeClientResponse({ ...response, status: ResponseStatus.InvalidSectorIndex }, clientKey),
    ],
    [
      "data on a WRITE_RANGE response",
      () => encodeClientResponse({ ...response, command: "writeRange" }, clientKey),
    ],
    [
      "a sector count on a READ response",
      () => encodeClientResponse({ ...response, command: "read", data: run(1), sectorCount: 1 }, clientKey),
    ],
    ["one tag too few", () => encodeSystemMessage({ ...writeRangeProc, tags: tags(1) }, systemKey)],
    [
      "a TAGS_RANGE_VALUE with one tag too few",
      () =>
        encodeSystemMessage(
          { kind: "tagsRangeValue", sender: 1, opId, ...over([1, 5]), tags: tags(1) },
          systemKey,
        ),
    ],
    [
      "a TAGS_RANGE_VALUE with one tag too many",
      () =>
        encodeSystemMessage(
          { kind: "tagsRangeValue", sender: 1, opId, ...over([1, 5]), tags: tags(3) },
          systemKey,
        ),
    ],
    [
      "a TAGS_RANGE_VALUE without its tags",
      () =>
        encodeSystemMessage({ kind: "tagsRangeValue", sender: 1, opId, ...over([1, 5]) } as never, systemKey),
    ],
    [
      "a TAGS_RANGE_VALUE tag with writer rank 255",
      () =>
        encodeSystemMessage(
          { kind: "tagsRangeValue", sender: 1, opId, ...over([1]), tags: [{ ts: 1n, wr: 255 }] },
          systemKey,
        ),
    ],
    [
      "a READ_TAGS_RANGE_PROC with a decreasing sector list",
      () => encodeSystemMessage({ kind: "readTagsRangeProc", sender: 1, opId, ...over([5, 1]) }, systemKey),
    ],
    ["one tag too many", () => encodeSystemMessage({ ...writeRangeProc, tags: tags(3) }, systemKey)],
    [
      "WRITE_RANGE_PROC data of another count",
      () => encodeSystemMessage({ ...writeRangeProc, data: run(1) }, systemKey),
    ],
    [
      "a tag with writer rank 255",
      () =>
        encodeSystemMessage(
          {
            ...writeRangeProc,
            tags: [
              { ts: 1n, wr: 1 },
              { ts: 1n, wr: 255 },
            ],
          },
          systemKey,
        ),
    ],
    [
      "a tag with a timestamp beyond u64",
      () =>
        encodeSystemMessage(
          {
            ...writeRangeProc,
            tags: [
              { ts: 2n ** 64n, wr: 1 },
              { ts: 1n, wr: 1 },
            ],
          },
          systemKey,
        ),
    ],
    [
      "a TAG_RANGE_VALUE with writer rank 255",
      () =>
        encodeSystemMessage(
          { kind: "tagRangeValue", sender: 1, opId, ...over([1]), ts: 1n, wr: 255 },
          systemKey,
        ),
    ],
    [
      "a RANGE_ACK of 0 sectors",
      () =>
        encodeSystemMessage(
          { kind: "rangeAck", sender: 1, opId, sectorIndex: 1, sectorCount: 0, sectors: [] },
          systemKey,
        ),
    ],
    [
      "a READ_RANGE_PROC from sender 0",
      () => encodeSystemMessage({ kind: "readRangeProc", sender: 0, opId, ...over([1]) }, systemKey),
    ],
    ["a sector list shorter than the count", rangeAck([1, 2], 1, 3)],
    ["a sector list longer than the count", rangeAck([1, 2, 3], 1, 2)],
    ["a decreasing sector list", rangeAck([1, 9, 4])],
    ["a duplicate sector", rangeAck([1, 4, 4])],
    ["a sector list not starting with sectorIndex", rangeAck([1, 4], 0)],
    ["a sectorIndex above the list's first sector", rangeAck([1, 4], 2)],
    ["a negative sector", rangeAck([-1, 4], -1)],
    ["a negative sector after the first", rangeAck([0, -1])],
    ["a fractional sector", rangeAck([1, 2.5])],
    ["a NaN sector", rangeAck([1, Number.NaN])],
    ["a sector of 2^53", rangeAck([1, 2 ** 53])],
    ["a 257-sector list", rangeAck(consecutive(0, 257))],
    [
      "WRITE_RANGE_PROC without its sector list",
      () => encodeSystemMessage({ ...writeRangeProc, sectors: undefined } as never, systemKey),
    ],
  ])("refuses to encode %s", (_name, encodeIt) => {
    expect(encodeIt).toThrow(AssertionError);
  });

  it("writes every padding byte of range messages as zero", () => {
    const command = encodeClientCommand(readRange, clientKey);
    expect(command[6]).toBe(0);
    const proc = encodeSystemMessage(
      {
        ...writeRangeProc,
        tags: [
          { ts: U64_MAX, wr: 254 },
          { ts: U64_MAX, wr: 254 },
        ],
        data: Buffer.alloc(8192, 0xff),
      },
      systemKey,
    );
    // The tags (ts u64, 7 padding bytes, wr) follow the 2-sector list, at 32 + 16 = 48.
    expect(proc.subarray(56, 63)).toEqual(Buffer.alloc(7));
    expect(proc.subarray(72, 79)).toEqual(Buffer.alloc(7));
    expect([proc[63], proc[79]]).toEqual([254, 254]);
  });
});

describe("range messages fuzz", () => {
  it("never throws and never buffers more than one message on 500 seeded random streams", () => {
    const random = seededRandom(20261123);
    const valid = [...rangeCases(1), ...rangeCases(3), ...rangeCases(SCATTERED.length, SCATTERED)].map(
      ([, message]) => encode(message),
    );
    valid.push(encode({ kind: "clientRead", requestNumber: 1n, sectorIndex: 1 }));
    let messagesSeen = 0;
    for (let round = 0; round < 500; round++) {
      const parts: Buffer[] = [];
      const partCount = 1 + Math.floor(random() * 6);
      for (let p = 0; p < partCount; p++) {
        const piece = Buffer.from(valid[Math.floor(random() * valid.length)]!);
        // Corrupt the count, the type or any byte at all, or nothing.
        const corruption = random();
        if (corruption < 0.2) piece.writeUInt16BE(Math.floor(random() * 0x10000), 4);
        else if (corruption < 0.3) piece[7] = Math.floor(random() * 256);
        else if (corruption < 0.5)
          piece[Math.floor(random() * piece.length)]! ^= 1 + Math.floor(random() * 255);
        parts.push(random() < 0.3 ? piece.subarray(0, Math.floor(random() * piece.length)) : piece);
      }
      const stream = Buffer.concat(parts);
      const decoder = round % 2 === 0 ? wideReplicaDecoder() : clientDecoder();
      let offset = 0;
      while (offset < stream.length) {
        const length = 1 + Math.floor(random() * 9000);
        for (const event of decoder.push(stream.subarray(offset, offset + length))) {
          if (event.kind === "message") messagesSeen++;
        }
        offset += length;
        expect(decoder.bufferedBytes()).toBeLessThan(MAX_ATDD_MESSAGE_BYTES);
      }
    }
    // The fuzz must reach the decode paths, not only the resync ones.
    expect(messagesSeen).toBeGreaterThan(200);
  });
});
