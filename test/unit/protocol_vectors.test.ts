// The published atdd test vectors (SPEC §1): our encoders must reproduce them byte for byte and
// our decoder must read each one back into the message it names.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { encodeClientCommand, encodeClientResponse, encodeSystemMessage } from "../../src/protocol/codec.js";
import { AtddDecoder, type DecodeEvent } from "../../src/protocol/decoder.js";
import type { AtddMessage } from "../../src/protocol/messages.js";
import { ResponseStatus } from "../../src/protocol/messages.js";

interface VectorFile {
  client_key_hex: string;
  system_key_hex: string;
  vectors: { name: string; length: number; hex: string; key: "client" | "system" }[];
}

const file = JSON.parse(
  readFileSync(new URL("../../../shared/spec/add-wire-vectors.json", import.meta.url), "utf8"),
) as VectorFile;
const clientKey = Buffer.from(file.client_key_hex, "hex");
const systemKey = Buffer.from(file.system_key_hex, "hex");

function pattern(): Buffer {
  const data = Buffer.alloc(4096);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) % 256;
  return data;
}

const opId = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");

/** What each vector must decode to; `encode: false` for inputs our encoder never produces. */
const expected: Record<string, { message: AtddMessage; encode: boolean }> = {
  "client READ request=1778 sector=12": {
    message: { kind: "clientRead", requestNumber: 1778n, sectorIndex: 12 },
    encode: true,
  },
  "client WRITE request=9 sector=3 data=pattern": {
    message: { kind: "clientWrite", requestNumber: 9n, sectorIndex: 3, data: pattern() },
    encode: true,
  },
  "client READ with garbage padding (must be accepted)": {
    message: { kind: "clientRead", requestNumber: 5n, sectorIndex: 1 },
    encode: false,
  },
  "response WRITE Ok request=1778": {
    message: { kind: "clientResponse", command: "write", status: ResponseStatus.Ok, requestNumber: 1778n },
    encode: true,
  },
  "response READ Ok request=9 data=pattern": {
    message: {
      kind: "clientResponse",
      command: "read",
      status: ResponseStatus.Ok,
      requestNumber: 9n,
      data: pattern(),
    },
    encode: true,
  },
  "response READ AuthFailure request=7": {
    message: {
      kind: "clientResponse",
      command: "read",
      status: ResponseStatus.AuthFailure,
      requestNumber: 7n,
    },
    encode: true,
  },
  "response WRITE InvalidSectorIndex request=8": {
    message: {
      kind: "clientResponse",
      command: "write",
      status: ResponseStatus.InvalidSectorIndex,
      requestNumber: 8n,
    },
    encode: true,
  },
  "system READ_PROC sender=2 uuid=000102..0f sector=12": {
    message: { kind: "readProc", sender: 2, opId, sectorIndex: 12 },
    encode: true,
  },
  "system VALUE sender=1 uuid=000102..0f sector=12 ts=5 wr=3 data=pattern": {
    message: { kind: "value", sender: 1, opId, sectorIndex: 12, ts: 5n, wr: 3, data: pattern() },
    encode: true,
  },
  "system WRITE_PROC sender=3 uuid=000102..0f sector=12 ts=6 wr=3 data=pattern": {
    message: { kind: "writeProc", sender: 3, opId, sectorIndex: 12, ts: 6n, wr: 3, data: pattern() },
    encode: true,
  },
  "system ACK sender=3 uuid=000102..0f sector=12": {
    message: { kind: "ack", sender: 3, opId, sectorIndex: 12 },
    encode: true,
  },
};

function encode(message: AtddMessage): Buffer {
  switch (message.kind) {
    case "clientRead":
    case "clientWrite":
      return encodeClientCommand(message, clientKey);
    case "clientResponse":
      return encodeClientResponse(message, clientKey);
    default:
      return encodeSystemMessage(message, systemKey);
  }
}

function decoderFor(message: AtddMessage): AtddDecoder {
  return message.kind === "clientResponse"
    ? new AtddDecoder({ role: "client", clientKey })
    : new AtddDecoder({ role: "replica", clientKey, systemKey, sectors: 1024, replicaCount: 3 });
}

describe("atdd wire vectors", () => {
  it("covers every vector in the file", () => {
    expect(file.vectors.map((v) => v.name).sort()).toEqual(Object.keys(expected).sort());
  });

  for (const vector of file.vectors) {
    const bytes = Buffer.from(vector.hex, "hex");
    const want = expected[vector.name];

    it(`decodes "${vector.name}" into the message it names`, () => {
      expect(want).toBeDefined();
      expect(bytes.length).toBe(vector.length);
      const events = decoderFor(want!.message).push(bytes);
      expect(events).toEqual([{ kind: "message", message: want!.message }] satisfies DecodeEvent[]);
    });

    if (want?.encode !== false) {
      it(`encodes "${vector.name}" byte for byte`, () => {
        expect(encode(want!.message).toString("hex")).toBe(vector.hex);
      });
    }
  }

  it("zeroes the padding that the garbage-padding vector filled in", () => {
    const vector = file.vectors.find((v) => v.name.includes("garbage padding"))!;
    const reencoded = encode(expected[vector.name]!.message);
    const original = Buffer.from(vector.hex, "hex");
    expect(original.subarray(4, 7).equals(Buffer.alloc(3))).toBe(false);
    expect(reencoded.subarray(4, 7)).toEqual(Buffer.alloc(3));
    expect(reencoded.subarray(7, 24)).toEqual(original.subarray(7, 24));
  });
});
