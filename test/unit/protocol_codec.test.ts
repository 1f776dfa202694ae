// Encoders: every message kind round-trips through the decoder at the edges of its fields, and
// inputs that only a bug could produce fail loudly.
import { describe, expect, it } from "vitest";
import { encodeClientCommand, encodeClientResponse, encodeSystemMessage } from "../../src/protocol/codec.js";
import { AtddDecoder } from "../../src/protocol/decoder.js";
import { verifyMessageTag } from "../../src/protocol/hmac.js";
import { atddMessageSize, UInt64BE } from "../../src/protocol/layouts.js";
import {
  type AtddMessage,
  isClientCommand,
  MessageSize,
  ResponseStatus,
} from "../../src/protocol/messages.js";
import { AssertionError } from "../../src/util/assert.js";

const clientKey = Buffer.alloc(32, 0x11);
const systemKey = Buffer.alloc(64, 0x22);
const U64_MAX = 2n ** 64n - 1n;

function sector(seed: number): Buffer {
  const data = Buffer.alloc(4096);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 5 + i * 3) & 0xff;
  return data;
}
const opId = Buffer.from("f0e1d2c3b4a5968778695a4b3c2d1e0f", "hex");

function roundTrip(message: AtddMessage): AtddMessage[] {
  let bytes: Buffer;
  let decoder: AtddDecoder;
  if (isClientCommand(message)) {
    bytes = encodeClientCommand(message, clientKey);
    decoder = new AtddDecoder({ role: "replica", clientKey });
  } else if (message.kind === "clientResponse") {
    bytes = encodeClientResponse(message, clientKey);
    decoder = new AtddDecoder({ role: "client", clientKey });
  } else {
    bytes = encodeSystemMessage(message, systemKey);
    decoder = new AtddDecoder({ role: "replica", clientKey, systemKey, replicaCount: 254 });
  }
  expect(bytes.length).toBe(atddMessageSize(bytes, 0));
  return decoder.push(bytes).map((e) => {
    if (e.kind !== "message") throw new Error(`expected a message, got ${JSON.stringify(e)}`);
    return e.message;
  });
}

const cases: [string, AtddMessage][] = [
  ["READ at u64 max request number", { kind: "clientRead", requestNumber: U64_MAX, sectorIndex: 0 }],
  [
    "READ at the largest safe sector",
    { kind: "clientRead", requestNumber: 0n, sectorIndex: Number.MAX_SAFE_INTEGER },
  ],
  ["WRITE", { kind: "clientWrite", requestNumber: 2n ** 63n, sectorIndex: 2 ** 40 - 1, data: sector(1) }],
  [
    "READ response Ok",
    {
      kind: "clientResponse",
      command: "read",
      status: ResponseStatus.Ok,
      requestNumber: U64_MAX,
      data: sector(2),
    },
  ],
  [
    "WRITE response Ok",
    { kind: "clientResponse", command: "write", status: ResponseStatus.Ok, requestNumber: 0n },
  ],
  [
    "READ response InvalidSectorIndex",
    {
      kind: "clientResponse",
      command: "read",
      status: ResponseStatus.InvalidSectorIndex,
      requestNumber: 12n,
    },
  ],
  [
    "WRITE response AuthFailure",
    { kind: "clientResponse", command: "write", status: ResponseStatus.AuthFailure, requestNumber: 13n },
  ],
  ["READ_PROC from rank 254", { kind: "readProc", sender: 254, opId, sectorIndex: 123456789 }],
  ["ACK from rank 1", { kind: "ack", sender: 1, opId, sectorIndex: 0 }],
  [
    "VALUE of a never-written sector",
    { kind: "value", sender: 7, opId, sectorIndex: 3, ts: 0n, wr: 0, data: Buffer.alloc(4096) },
  ],
  [
    "VALUE at u64 max timestamp",
    { kind: "value", sender: 2, opId, sectorIndex: 3, ts: U64_MAX, wr: 254, data: sector(3) },
  ],
  [
    "WRITE_PROC",
    { kind: "writeProc", sender: 3, opId, sectorIndex: 99, ts: 2n ** 40n + 1n, wr: 3, data: sector(4) },
  ],
];

describe("atdd codec round trip", () => {
  it.each(cases)("decodes an encoded %s back to the same message", (_name, message) => {
    expect(roundTrip(message)).toEqual([message]);
  });

  it("writes every padding byte as zero", () => {
    const command = encodeClientCommand(
      { kind: "clientRead", requestNumber: U64_MAX, sectorIndex: 1 },
      clientKey,
    );
    expect(command.subarray(4, 7)).toEqual(Buffer.alloc(3));
    const response = encodeClientResponse(
      { kind: "clientResponse", command: "write", status: ResponseStatus.Ok, requestNumber: U64_MAX },
      clientKey,
    );
    expect(response.subarray(4, 6)).toEqual(Buffer.alloc(2));
    const value = encodeSystemMessage(
      {
        kind: "value",
        sender: 255 - 1,
        opId,
        sectorIndex: 1,
        ts: U64_MAX,
        wr: 254,
        data: Buffer.alloc(4096, 0xff),
      },
      systemKey,
    );
    expect(value.subarray(4, 6)).toEqual(Buffer.alloc(2));
    expect(value.subarray(40, 47)).toEqual(Buffer.alloc(7));
    expect(value[47]).toBe(254);
  });

  it("signs client messages with the client key and system messages with the system key", () => {
    const command = encodeClientCommand({ kind: "clientRead", requestNumber: 1n, sectorIndex: 1 }, clientKey);
    expect(verifyMessageTag(command, 0, command.length, clientKey)).toBe(true);
    expect(verifyMessageTag(command, 0, command.length, Buffer.alloc(32, 0x12))).toBe(false);
    const ack = encodeSystemMessage({ kind: "ack", sender: 1, opId, sectorIndex: 1 }, systemKey);
    expect(verifyMessageTag(ack, 0, MessageSize.Ack, systemKey)).toBe(true);
    expect(verifyMessageTag(ack, 0, MessageSize.Ack, clientKey)).toBe(false);
  });

  it("reads and writes u64 values beyond 2^53 exactly", () => {
    const layout = new UInt64BE("x");
    const buf = Buffer.alloc(10);
    for (const v of [0n, 1n, 2n ** 53n + 1n, U64_MAX]) {
      expect(layout.encode(v, buf, 2)).toBe(8);
      expect(layout.decode(buf, 2)).toBe(v);
    }
    expect(buf.subarray(2).toString("hex")).toBe("ffffffffffffffff");
  });
});

describe("atdd codec programmer errors", () => {
  const read = { kind: "clientRead", requestNumber: 1n, sectorIndex: 1 } as const;
  const ack = { kind: "ack", sender: 1, opId, sectorIndex: 1 } as const;
  const value = { kind: "value", sender: 1, opId, sectorIndex: 1, ts: 1n, wr: 1, data: sector(0) } as const;

  it.each<[string, () => unknown]>([
    ["a client key of the wrong length", () => encodeClientCommand(read, Buffer.alloc(31))],
    [
      "a request number beyond u64",
      () => encodeClientCommand({ ...read, requestNumber: 2n ** 64n }, clientKey),
    ],
    ["a negative request number", () => encodeClientCommand({ ...read, requestNumber: -1n }, clientKey)],
    ["a negative sector index", () => encodeClientCommand({ ...read, sectorIndex: -1 }, clientKey)],
    ["a fractional sector index", () => encodeClientCommand({ ...read, sectorIndex: 1.5 }, clientKey)],
    [
      "WRITE data shorter than a sector",
      () =>
        encodeClientCommand(
          { kind: "clientWrite", requestNumber: 1n, sectorIndex: 1, data: Buffer.alloc(4095) },
          clientKey,
        ),
    ],
    [
      "a READ Ok response without data",
      () =>
        encodeClientResponse(
          { kind: "clientResponse", command: "read", status: ResponseStatus.Ok, requestNumber: 1n },
          clientKey,
        ),
    ],
    [
      "data on a failed response",
      () =>
        encodeClientResponse(
          {
            kind: "clientResponse",
            command: "read",
            status: ResponseStatus.AuthFailure,
            requestNumber: 1n,
            data: sector(0),
          },
          clientKey,
        ),
    ],
    ["a system key of the wrong length", () => encodeSystemMessage(ack, Buffer.alloc(32))],
    ["sender rank 0", () => encodeSystemMessage({ ...ack, sender: 0 }, systemKey)],
    ["sender rank 255", () => encodeSystemMessage({ ...ack, sender: 255 }, systemKey)],
    ["an operation id of 15 bytes", () => encodeSystemMessage({ ...ack, opId: Buffer.alloc(15) }, systemKey)],
    ["writer rank 255", () => encodeSystemMessage({ ...value, wr: 255 }, systemKey)],
    ["a timestamp beyond u64", () => encodeSystemMessage({ ...value, ts: 2n ** 64n }, systemKey)],
  ])("refuses to encode %s", (_name, encode) => {
    expect(encode).toThrow(AssertionError);
  });
});

describe("extension messages READ_TAG_PROC (0x80) and TAG_VALUE (0x81)", () => {
  const replica = () =>
    new AtddDecoder({ role: "replica", clientKey, systemKey, sectors: 100, replicaCount: 5 });

  it("round-trip with their own sizes and types", () => {
    const query: AtddMessage = { kind: "readTagProc", sender: 2, opId, sectorIndex: 99 };
    const answer: AtddMessage = { kind: "tagValue", sender: 5, opId, sectorIndex: 7, ts: U64_MAX, wr: 5 };
    const queryBytes = encodeSystemMessage(query, systemKey);
    const answerBytes = encodeSystemMessage(answer, systemKey);
    expect([queryBytes.length, answerBytes.length]).toEqual([MessageSize.ReadTagProc, MessageSize.TagValue]);
    expect([queryBytes[7], answerBytes[7]]).toEqual([0x80, 0x81]);
    expect(answerBytes.subarray(40, 47)).toEqual(Buffer.alloc(7));
    const events = replica().push(Buffer.concat([queryBytes, answerBytes]));
    expect(events).toEqual([
      { kind: "message", message: query },
      { kind: "message", message: answer },
    ]);
  });

  it("a forged TAG_VALUE is dropped silently", () => {
    const bytes = encodeSystemMessage(
      { kind: "tagValue", sender: 1, opId, sectorIndex: 1, ts: 3n, wr: 1 },
      systemKey,
    );
    bytes.writeUInt8(bytes.readUInt8(39) ^ 1, 39);
    expect(replica().push(bytes)).toEqual([
      { kind: "dropped", reason: "badTag", bytes: MessageSize.TagValue },
    ]);
  });

  it("a client-role decoder treats the extension types as unknown (skips 8 bytes)", () => {
    const bytes = encodeSystemMessage({ kind: "readTagProc", sender: 1, opId, sectorIndex: 1 }, systemKey);
    const events = new AtddDecoder({ role: "client", clientKey }).push(bytes);
    expect(events[0]).toEqual({ kind: "dropped", reason: "unknownType", bytes: 8 });
  });
});
