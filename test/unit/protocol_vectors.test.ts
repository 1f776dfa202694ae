// The published atdd test vectors (SPEC §1): our encoders must reproduce them byte for byte and
// our decoder must read each one back into the message it names.
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { encodeMessage } from "../../src/protocol/codec.js";
import { AtddDecoder, type DecodeEvent } from "../../src/protocol/decoder.js";
import type { AtddMessage } from "../../src/protocol/messages.js";
import { ResponseStatus } from "../../src/protocol/messages.js";

interface Vector {
  name: string;
  key: "client" | "system";
  hex: string;
}

/**
 * The vectors of /work/shared/spec/add-wire-vectors.json, embedded so the test runs in any checkout:
 * each message is `head`, then the pattern sector when `pattern`, then the 32-byte tag.
 */
const CLIENT_KEY_HEX = "0505050505050505050505050505050505050505050505050505050505050505";
const SYSTEM_KEY_HEX =
  "01010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101";
const compact = [
  {
    name: "client READ request=1778 sector=12",
    key: "client",
    head: "617464640000000100000000000006f2000000000000000c",
    pattern: false,
    tag: "8da0efb322c5377ea8315b6cd4ab9193f55c9caf1829b64920815d5214a7a1cc",
  },
  {
    name: "client WRITE request=9 sector=3 data=pattern",
    key: "client",
    head: "617464640000000200000000000000090000000000000003",
    pattern: true,
    tag: "0ca79122aca6891f9058ba7aabbb65a7778ecdacb019048dff9e8b2133990b7a",
  },
  {
    name: "client READ with garbage padding (must be accepted)",
    key: "client",
    head: "6174646407abcd0100000000000000050000000000000001",
    pattern: false,
    tag: "b536f51a8ae0e0f324dd913f934b575a0a657875184d541f10ac91a96ee31ad7",
  },
  {
    name: "response WRITE Ok request=1778",
    key: "client",
    head: "617464640000004200000000000006f2",
    pattern: false,
    tag: "153d2a6a765ba05719f9a44c47f1ce04b3ca5a41c87d5653f217d80e6be1acd7",
  },
  {
    name: "response READ Ok request=9 data=pattern",
    key: "client",
    head: "61746464000000410000000000000009",
    pattern: true,
    tag: "b87949ab7bfc5bff1c03eb677b28ab45a3e08e1ec01508a19febc8b02deb6e43",
  },
  {
    name: "response READ AuthFailure request=7",
    key: "client",
    head: "61746464000001410000000000000007",
    pattern: false,
    tag: "5c9bf655c563a98563127ab666e6bfeb1f5339218248134f610ac7961499834f",
  },
  {
    name: "response WRITE InvalidSectorIndex request=8",
    key: "client",
    head: "61746464000002420000000000000008",
    pattern: false,
    tag: "d3b7f98c23a06046fa2b7f84a79ff11f5a0069641e5858b0d2e14ad3847b2450",
  },
  {
    name: "system READ_PROC sender=2 uuid=000102..0f sector=12",
    key: "system",
    head: "6174646400000203000102030405060708090a0b0c0d0e0f000000000000000c",
    pattern: false,
    tag: "ac69913a4d196e7c6ba132fa3933aeead394dfe45cce2ef3d7cb7a80ac0aeab0",
  },
  {
    name: "system VALUE sender=1 uuid=000102..0f sector=12 ts=5 wr=3 data=pattern",
    key: "system",
    head: "6174646400000104000102030405060708090a0b0c0d0e0f000000000000000c00000000000000050000000000000003",
    pattern: true,
    tag: "3d65d91489c6e2a5510e5e598977aa5ede76df388dd1ec7848ba085dfa0ec81d",
  },
  {
    name: "system WRITE_PROC sender=3 uuid=000102..0f sector=12 ts=6 wr=3 data=pattern",
    key: "system",
    head: "6174646400000305000102030405060708090a0b0c0d0e0f000000000000000c00000000000000060000000000000003",
    pattern: true,
    tag: "d3a561d5ba204ce6e16f125a37a8bd794951fbb845cb0616e75bd222bfd4ccc7",
  },
  {
    name: "system ACK sender=3 uuid=000102..0f sector=12",
    key: "system",
    head: "6174646400000306000102030405060708090a0b0c0d0e0f000000000000000c",
    pattern: false,
    tag: "da204af43d4c3d61fe8b34aa40d4e70b50438fe6812e1277a34a69557403ab34",
  },
];
const vectors: Vector[] = compact.map((v) => ({
  name: v.name,
  key: v.key as "client" | "system",
  hex: v.head + (v.pattern ? pattern().toString("hex") : "") + v.tag,
}));
const clientKey = Buffer.from(CLIENT_KEY_HEX, "hex");
const systemKey = Buffer.from(SYSTEM_KEY_HEX, "hex");
const SHARED_VECTORS = new URL("../../../shared/spec/add-wire-vectors.json", import.meta.url);

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
  return encodeMessage(message, { clientKey, systemKey });
}

function decoderFor(message: AtddMessage): AtddDecoder {
  return message.kind === "clientResponse"
    ? new AtddDecoder({ role: "client", clientKey })
    : new AtddDecoder({ role: "replica", clientKey, systemKey, sectors: 1024, replicaCount: 3 });
}

describe("atdd wire vectors", () => {
  it("embeds every vector with a decoded expectation", () => {
    expect(vectors.map((v) => v.name).sort()).toEqual(Object.keys(expected).sort());
  });

  // Only where the shared spec directory exists (the dev machine); the embedded copy runs everywhere.
  it.runIf(existsSync(SHARED_VECTORS))("embeds exactly the vectors of the shared spec file", () => {
    const file = JSON.parse(readFileSync(SHARED_VECTORS, "utf8")) as {
      client_key_hex: string;
      system_key_hex: string;
      vectors: Vector[];
    };
    expect(file.client_key_hex).toBe(CLIENT_KEY_HEX);
    expect(file.system_key_hex).toBe(SYSTEM_KEY_HEX);
    const strip = (v: Vector) => ({ name: v.name, key: v.key, hex: v.hex });
    expect(file.vectors.map(strip)).toEqual(vectors);
  });

  for (const vector of vectors) {
    const bytes = Buffer.from(vector.hex, "hex");
    const want = expected[vector.name];

    it(`decodes "${vector.name}" into the message it names`, () => {
      expect(want).toBeDefined();
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
    const vector = vectors.find((v) => v.name.includes("garbage padding"))!;
    const reencoded = encode(expected[vector.name]!.message);
    const original = Buffer.from(vector.hex, "hex");
    expect(original.subarray(4, 7).equals(Buffer.alloc(3))).toBe(false);
    expect(reencoded.subarray(4, 7)).toEqual(Buffer.alloc(3));
    expect(reencoded.subarray(7, 24)).toEqual(original.subarray(7, 24));
  });
});
