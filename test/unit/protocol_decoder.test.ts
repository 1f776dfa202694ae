// The streaming decoder: framing across arbitrary chunk boundaries and the resync rules of
// SPEC §1.4 (garbage, unknown types, bad tags, bad sector indexes, bad senders).

import { describe, expect, it } from "vitest";
import { encodeClientCommand, encodeMessage } from "../../src/protocol/codec.js";
import { AtddDecoder, type AtddDecoderOptions, type DecodeEvent } from "../../src/protocol/decoder.js";
import { signMessage } from "../../src/protocol/hmac.js";
import {
  type AtddMessage,
  type ClientCommand,
  MessageSize,
  ResponseStatus,
  type SystemMessage,
} from "../../src/protocol/messages.js";
import { feedChunks, firstAcceptedByteChange, messageEvents } from "../helpers/atdd_stream.js";
import { seededRandom } from "../helpers/seeded_random.js";

const clientKey = Buffer.alloc(32, 0xc1);
const systemKey = Buffer.alloc(64, 0x5e);
const SECTORS = 1000;
const REPLICAS = 3;

function sector(seed: number): Buffer {
  const data = Buffer.alloc(4096);
  for (let i = 0; i < data.length; i++) data[i] = (seed + i * 13) & 0xff;
  return data;
}

const opId = Buffer.from("00112233445566778899aabbccddeeff", "hex");
const read: ClientCommand = { kind: "clientRead", requestNumber: 77n, sectorIndex: 5 };
const write: ClientCommand = { kind: "clientWrite", requestNumber: 78n, sectorIndex: 999, data: sector(1) };
const value: SystemMessage = {
  kind: "value",
  sender: 2,
  opId,
  sectorIndex: 7,
  ts: 9n,
  wr: 1,
  data: sector(2),
};
const ack: SystemMessage = { kind: "ack", sender: 3, opId, sectorIndex: 7 };
const readProc: SystemMessage = { kind: "readProc", sender: 1, opId, sectorIndex: 0 };
const writeProc: SystemMessage = {
  kind: "writeProc",
  sender: 1,
  opId,
  sectorIndex: 8,
  ts: 1n,
  wr: 1,
  data: sector(3),
};

const replicaOptions: AtddDecoderOptions = {
  role: "replica",
  clientKey,
  systemKey,
  sectors: SECTORS,
  replicaCount: REPLICAS,
};
const replicaDecoder = () => new AtddDecoder(replicaOptions);
const clientDecoder = () => new AtddDecoder({ role: "client", clientKey });

const encode = (m: AtddMessage): Buffer => encodeMessage(m, { clientKey, systemKey });

const messages = messageEvents;

const feed = feedChunks;

/** Same bytes with one header field changed and a fresh, valid tag: authentic but invalid. */
function resigned(message: Buffer, key: Buffer, patch: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(message);
  patch(copy);
  signMessage(copy, key);
  return copy;
}

/**
 * Events with every Buffer replaced by its hex: vitest compares Buffers element by element, far
 * too slowly for the thousands of comparisons of the split-point tests.
 */
function hexed(events: DecodeEvent[]): unknown[] {
  return events.map((e) => {
    if (e.kind !== "message") return e;
    const fields = Object.entries(e.message).map(([k, v]) => [
      k,
      Buffer.isBuffer(v) ? `hex:${v.toString("hex")}` : v,
    ]);
    return { kind: e.kind, message: Object.fromEntries(fields) };
  });
}

/** Garbage events may be split differently by chunking; sum them for comparison. */
function coalesceGarbage(events: DecodeEvent[]): DecodeEvent[] {
  const out: DecodeEvent[] = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (
      e.kind === "dropped" &&
      e.reason === "garbage" &&
      last?.kind === "dropped" &&
      last.reason === "garbage"
    ) {
      out[out.length - 1] = { ...last, bytes: last.bytes + e.bytes };
    } else {
      out.push(e);
    }
  }
  return out;
}

describe("AtddDecoder framing", () => {
  it("decodes every replica-side message kind fed one byte at a time", () => {
    const all = [read, write, value, ack, readProc, writeProc];
    const stream = Buffer.concat(all.map(encode));
    const decoder = replicaDecoder();
    const events: DecodeEvent[] = [];
    for (let i = 0; i < stream.length; i++) {
      events.push(...decoder.push(stream.subarray(i, i + 1)));
      expect(decoder.bufferedBytes()).toBeLessThan(MessageSize.Value);
    }
    expect(events).toEqual(messages(...all));
    expect(decoder.bufferedBytes()).toBe(0);
  });

  it("decodes a WRITE followed by a READ split at every possible point", () => {
    const stream = Buffer.concat([encode(write), encode(read)]);
    const want = hexed(messages(write, read));
    for (let cut = 0; cut <= stream.length; cut++) {
      expect(hexed(feed(replicaDecoder(), stream, [cut])), `split at ${cut}`).toEqual(want);
    }
  });

  it("decodes a VALUE followed by an ACK cut at every pair of points 97 bytes apart", () => {
    const stream = Buffer.concat([encode(value), encode(ack)]);
    const want = hexed(messages(value, ack));
    for (let cut = 0; cut + 97 <= stream.length; cut++) {
      expect(hexed(feed(replicaDecoder(), stream, [cut, cut + 97])), `cuts at ${cut}`).toEqual(want);
    }
  });

  it("decodes many messages delivered in one chunk", () => {
    const commands = Array.from(
      { length: 200 },
      (_, i): ClientCommand => ({ kind: "clientRead", requestNumber: BigInt(i), sectorIndex: i }),
    );
    const events = replicaDecoder().push(Buffer.concat(commands.map(encode)));
    expect(events).toEqual(messages(...commands));
  });

  it("decodes every response kind on the client side, byte at a time and whole", () => {
    const responses: AtddMessage[] = [
      {
        kind: "clientResponse",
        command: "read",
        status: ResponseStatus.Ok,
        requestNumber: 1n,
        data: sector(4),
      },
      { kind: "clientResponse", command: "write", status: ResponseStatus.Ok, requestNumber: 2n },
      { kind: "clientResponse", command: "read", status: ResponseStatus.AuthFailure, requestNumber: 3n },
      {
        kind: "clientResponse",
        command: "write",
        status: ResponseStatus.InvalidSectorIndex,
        requestNumber: 4n,
      },
    ];
    const stream = Buffer.concat(responses.map(encode));
    expect(clientDecoder().push(stream)).toEqual(messages(...responses));
    const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    expect(feed(clientDecoder(), stream, cuts)).toEqual(messages(...responses));
  });

  it("waits on a truncated message, holding its bytes, and decodes it once the rest arrives", () => {
    const bytes = encode(value);
    const decoder = replicaDecoder();
    expect(decoder.push(bytes.subarray(0, 4175))).toEqual([]);
    expect(decoder.bufferedBytes()).toBe(4175);
    expect(decoder.push(bytes.subarray(4175))).toEqual(messages(value));
    expect(decoder.bufferedBytes()).toBe(0);
  });

  it("hands out data that later pushes and changes to the chunk cannot alter", () => {
    const chunk = Buffer.concat([encode(write), encode(value).subarray(0, 100)]);
    const decoder = replicaDecoder();
    const [first] = decoder.push(chunk);
    chunk.fill(0);
    decoder.push(encode(value).subarray(100));
    expect(first).toEqual(messages(write)[0]);
  });
});

describe("AtddDecoder resync (SPEC §1.4)", () => {
  it("skips garbage before a message, including bytes that look like the start of a magic", () => {
    const garbage = Buffer.from("xxaatdatatd\x00atdd"); // the trailing "atdd" is followed by READ's magic
    const decoder = replicaDecoder();
    const stream = Buffer.concat([garbage.subarray(0, 12), encode(read)]);
    expect(decoder.push(stream)).toEqual([
      { kind: "dropped", reason: "garbage", bytes: 12 },
      ...messages(read),
    ]);
  });

  it("skips the same garbage identically when it arrives one byte at a time", () => {
    const garbage = Buffer.from("atdatatd\x00aaatd");
    const stream = Buffer.concat([garbage, encode(read), garbage, encode(ack)]);
    const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    expect(coalesceGarbage(feed(replicaDecoder(), stream, cuts))).toEqual([
      { kind: "dropped", reason: "garbage", bytes: garbage.length },
      ...messages(read),
      { kind: "dropped", reason: "garbage", bytes: garbage.length },
      ...messages(ack),
    ]);
  });

  it("holds no more than three bytes of a garbage-only stream", () => {
    const decoder = replicaDecoder();
    expect(decoder.push(Buffer.from("hello world atd"))).toEqual([
      { kind: "dropped", reason: "garbage", bytes: 12 },
    ]);
    expect(decoder.bufferedBytes()).toBe(3);
  });

  it.each([
    ["replica", 0x99],
    // The first type after the extensions 0x82..0x8D.
    ["replica", 0x8e],
    ["replica", 0x41],
    ["replica", 0x00],
    ["client", 0x01],
    ["client", 0x03],
  ] as const)(
    "as %s, drops exactly 8 bytes after a magic with type 0x%s and decodes what follows",
    (role, type) => {
      const unknown = Buffer.from([0x61, 0x74, 0x64, 0x64, 0, 0, 0, type, 0xaa, 0xbb]);
      const next =
        role === "replica"
          ? read
          : ({
              kind: "clientResponse",
              command: "write",
              status: ResponseStatus.Ok,
              requestNumber: 5n,
            } as const);
      const decoder = role === "replica" ? replicaDecoder() : clientDecoder();
      expect(decoder.push(Buffer.concat([unknown, encode(next)]))).toEqual([
        { kind: "dropped", reason: "unknownType", bytes: 8 },
        { kind: "dropped", reason: "garbage", bytes: 2 },
        ...messages(next),
      ]);
    },
  );

  it("treats a response with an undefined status byte as an unknown type", () => {
    const ok = encode({
      kind: "clientResponse",
      command: "write",
      status: ResponseStatus.Ok,
      requestNumber: 5n,
    });
    const badStatus = resigned(ok, clientKey, (b) => {
      b[6] = 0x07;
    });
    expect(clientDecoder().push(badStatus)).toEqual([
      { kind: "dropped", reason: "unknownType", bytes: 8 },
      { kind: "dropped", reason: "garbage", bytes: MessageSize.Response - 8 },
    ]);
  });

  it("treats system message types as unknown when the decoder has no system key", () => {
    const decoder = new AtddDecoder({ role: "replica", clientKey, sectors: SECTORS });
    const events = decoder.push(Buffer.concat([encode(ack), encode(read)]));
    expect(events[0]).toEqual({ kind: "dropped", reason: "unknownType", bytes: 8 });
    expect(events.at(-1)).toEqual(messages(read)[0]);
  });

  it("rejects a client command with a bad tag as AuthFailure and consumes all of it", () => {
    const forged = encode(write);
    forged[200]! ^= 0x40;
    const events = replicaDecoder().push(Buffer.concat([forged, encode(read)]));
    expect(events).toEqual([
      { kind: "rejected", command: "write", requestNumber: 78n, status: ResponseStatus.AuthFailure },
      ...messages(read),
    ]);
  });

  it("rejects a command signed with another key as AuthFailure", () => {
    const other = encodeClientCommand(read, Buffer.alloc(32, 0x01));
    expect(replicaDecoder().push(other)).toEqual([
      { kind: "rejected", command: "read", requestNumber: 77n, status: ResponseStatus.AuthFailure },
    ]);
  });

  it("silently drops a system message with a bad tag, whole, and decodes what follows", () => {
    const forged = encode(value);
    forged[4000]! ^= 0x01;
    const events = replicaDecoder().push(Buffer.concat([forged, encode(ack)]));
    expect(events).toEqual([
      { kind: "dropped", reason: "badTag", bytes: MessageSize.Value },
      ...messages(ack),
    ]);
  });

  it("drops a response with a bad tag on the client side", () => {
    const response = encode({
      kind: "clientResponse",
      command: "read",
      status: ResponseStatus.AuthFailure,
      requestNumber: 1n,
    });
    response[47]! ^= 0x80;
    expect(clientDecoder().push(response)).toEqual([
      { kind: "dropped", reason: "badTag", bytes: MessageSize.Response },
    ]);
  });

  it.each([
    [SECTORS, "the sector count"],
    [2 ** 53, "2^53"],
    [Number.MAX_SAFE_INTEGER, "MAX_SAFE_INTEGER"],
  ])("rejects a client command on sector %s (%s) as InvalidSectorIndex", (index) => {
    const command = encodeClientCommand({ kind: "clientRead", requestNumber: 3n, sectorIndex: 0 }, clientKey);
    const bad = resigned(command, clientKey, (b) => b.writeBigUInt64BE(BigInt(index), 16));
    expect(replicaDecoder().push(bad)).toEqual([
      { kind: "rejected", command: "read", requestNumber: 3n, status: ResponseStatus.InvalidSectorIndex },
    ]);
  });

  it("accepts the last sector of the volume", () => {
    const last: ClientCommand = { kind: "clientRead", requestNumber: 3n, sectorIndex: SECTORS - 1 };
    expect(replicaDecoder().push(encode(last))).toEqual(messages(last));
  });

  it("rejects u64 sector indexes beyond 2^53 even without a sector count", () => {
    const decoder = new AtddDecoder({ role: "replica", clientKey });
    const command = encode(read);
    for (const index of [2n ** 53n, 2n ** 64n - 1n]) {
      const bad = resigned(command, clientKey, (b) => b.writeBigUInt64BE(index, 16));
      expect(decoder.push(bad)).toEqual([
        { kind: "rejected", command: "read", requestNumber: 77n, status: ResponseStatus.InvalidSectorIndex },
      ]);
    }
    const max: ClientCommand = {
      kind: "clientRead",
      requestNumber: 1n,
      sectorIndex: Number.MAX_SAFE_INTEGER,
    };
    expect(decoder.push(encode(max))).toEqual(messages(max));
  });

  it("drops an authentic system message on a sector beyond the volume", () => {
    const bad = resigned(encode(writeProc), systemKey, (b) => b.writeBigUInt64BE(BigInt(SECTORS), 24));
    const events = replicaDecoder().push(Buffer.concat([bad, encode(ack)]));
    expect(events).toEqual([
      { kind: "dropped", reason: "invalidSector", bytes: MessageSize.WriteProc },
      ...messages(ack),
    ]);
  });

  it.each([0, REPLICAS + 1, 255])("drops an authentic system message from sender rank %i", (rank) => {
    const bad = resigned(encode(ack), systemKey, (b) => {
      b[6] = rank;
    });
    expect(replicaDecoder().push(bad)).toEqual([
      { kind: "dropped", reason: "invalidSender", bytes: MessageSize.Ack },
    ]);
  });

  it.each([REPLICAS + 1, 254])(
    "drops an authentic TAG_VALUE, VALUE or WRITE_PROC whose tag names writer rank %i (no such replica)",
    (wr) => {
      const tagValue: SystemMessage = { kind: "tagValue", sender: 2, opId, sectorIndex: 7, ts: 9n, wr };
      for (const bad of [tagValue, { ...value, wr }, { ...writeProc, wr }]) {
        const bytes = encode(bad);
        expect(replicaDecoder().push(Buffer.concat([bytes, encode(ack)]))).toEqual([
          { kind: "dropped", reason: "invalidWriter", bytes: bytes.length },
          ...messages(ack),
        ]);
      }
    },
  );

  it("accepts writer rank 0 (the initial tag) and N", () => {
    for (const wr of [0, REPLICAS]) {
      const ok: SystemMessage = { ...value, wr };
      expect(replicaDecoder().push(encode(ok))).toEqual(messages(ok));
    }
  });

  it("never accepts a READ with any single byte changed, at every position", () => {
    expect(firstAcceptedByteChange(encode(read), replicaDecoder)).toBeUndefined();
  });
});

describe("AtddDecoder fuzz", () => {
  it("never throws and never buffers a whole message on 2000 seeded random streams", () => {
    const random = seededRandom(20261122);
    const valid = [read, write, value, ack].map(encode);
    const pieces = [Buffer.from("atdd"), Buffer.from([0x61, 0x74, 0x64, 0x64, 0, 0, 0, 1]), ...valid];
    let messagesSeen = 0;
    for (let round = 0; round < 2000; round++) {
      const parts: Buffer[] = [];
      const partCount = 1 + Math.floor(random() * 6);
      for (let p = 0; p < partCount; p++) {
        if (random() < 0.5) {
          const junk = Buffer.alloc(Math.floor(random() * 300));
          for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(random() * 256);
          parts.push(junk);
        } else {
          const piece = Buffer.from(pieces[Math.floor(random() * pieces.length)]!);
          if (random() < 0.5) piece[Math.floor(random() * piece.length)]! ^= 1 + Math.floor(random() * 255);
          parts.push(piece);
        }
      }
      const stream = Buffer.concat(parts);
      const decoder = round % 2 === 0 ? replicaDecoder() : clientDecoder();
      let offset = 0;
      for (let step = 0; offset < stream.length && step < 10_000; step++) {
        const length = 1 + Math.floor(random() * 5000);
        for (const event of decoder.push(stream.subarray(offset, offset + length))) {
          if (event.kind === "message") messagesSeen++;
        }
        offset += length;
        expect(decoder.bufferedBytes()).toBeLessThan(MessageSize.Value);
      }
    }
    // The fuzz must reach the decode paths, not only the garbage scanner.
    expect(messagesSeen).toBeGreaterThan(100);
  });
});
