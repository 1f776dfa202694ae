// ZERO_MAP (0x8D) and HELD_MAP (0x8E): the byte layout built by hand, round trips at the edges of
// the count, the count bound of each type (SPEC §1.4: unknown type, drop 8 bytes), authentication
// and the volume bound, and the bitmap helpers.
import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeClientCommand, encodeClientResponse } from "../../src/protocol/codec.js";
import { AtddDecoder } from "../../src/protocol/decoder.js";
import {
  atddMessageSize,
  bitAt,
  bitmapOf,
  bitmapOfMarked,
  bitRunEnd,
  countBits,
  setBitRuns,
  zeroBitmap,
} from "../../src/protocol/layouts.js";
import { type ClientCommand, type ClientResponse, ResponseStatus } from "../../src/protocol/messages.js";
import { AssertionError } from "../../src/util/assert.js";
import {
  HELD_MAP_MAX_SECTORS,
  HELD_PAGE_SECTORS,
  HELD_PAGES_MAX,
  MAX_RANGE_SECTORS,
} from "../../src/util/limits.js";
import { seededRandom } from "../helpers/seeded_random.js";

const clientKey = Buffer.alloc(32, 0x5a);
const SECTORS = 100_000;

const replica = () => new AtddDecoder({ role: "replica", clientKey, sectors: SECTORS });
const client = () => new AtddDecoder({ role: "client", clientKey });

function bits(count: number, set: number[]): Buffer {
  return bitmapOf(count, (i) => set.includes(i));
}

function header(type: number, count: number, requestNumber: bigint, sector: bigint): Buffer {
  const b = Buffer.alloc(24);
  b.write("atdd", 0, "ascii");
  b.writeUInt16BE(count, 4);
  b[7] = type;
  b.writeBigUInt64BE(requestNumber, 8);
  b.writeBigUInt64BE(sector, 16);
  return b;
}

function signed(body: Buffer, key = clientKey): Buffer {
  return Buffer.concat([body, createHmac("sha256", key).update(body).digest()]);
}

describe("ZERO_MAP and HELD_MAP byte layout (messages.ts, built by hand)", () => {
  it("ZERO_MAP: the READ_RANGE header with type 0x8D, 56 bytes", () => {
    const cmd: ClientCommand = {
      kind: "clientZeroMap",
      requestNumber: 9n,
      sectorIndex: 300,
      sectorCount: 256,
    };
    expect(encodeClientCommand(cmd, clientKey)).toEqual(signed(header(0x8d, 256, 9n, 300n)));
  });

  it("HELD_MAP: the READ_RANGE header with type 0x8E and a count up to 32768", () => {
    const cmd: ClientCommand = {
      kind: "clientHeldMap",
      requestNumber: 2n ** 64n - 1n,
      sectorIndex: 5,
      sectorCount: HELD_MAP_MAX_SECTORS,
    };
    expect(encodeClientCommand(cmd, clientKey)).toEqual(signed(header(0x8e, 32_768, 2n ** 64n - 1n, 5n)));
  });

  it("responses Ok: count at 4, status at 6, type 0xCD / 0xCE / 0xCF, request number, ceil(count / 8) bytes of bitmap", () => {
    for (const [command, type] of [
      ["zeroMap", 0xcd],
      ["heldMap", 0xce],
      ["heldPages", 0xcf],
    ] as const) {
      const map = bits(9, [0, 8]);
      const res: ClientResponse = {
        kind: "clientResponse",
        command,
        status: ResponseStatus.Ok,
        requestNumber: 77n,
        sectorCount: 9,
        data: map,
      };
      const head = Buffer.alloc(16);
      head.write("atdd", 0, "ascii");
      head.writeUInt16BE(9, 4);
      head[7] = type;
      head.writeBigUInt64BE(77n, 8);
      expect(map).toEqual(Buffer.from([0x80, 0x80]));
      expect(encodeClientResponse(res, clientKey)).toEqual(signed(Buffer.concat([head, map])));
    }
  });
});

describe("ZERO_MAP and HELD_MAP round trips", () => {
  const commands: [string, ClientCommand][] = [
    ["ZERO_MAP of 1", { kind: "clientZeroMap", requestNumber: 1n, sectorIndex: 0, sectorCount: 1 }],
    [
      "ZERO_MAP of 256",
      { kind: "clientZeroMap", requestNumber: 2n, sectorIndex: SECTORS - 256, sectorCount: 256 },
    ],
    ["HELD_MAP of 1", { kind: "clientHeldMap", requestNumber: 3n, sectorIndex: SECTORS - 1, sectorCount: 1 }],
    ["HELD_MAP of 32768", { kind: "clientHeldMap", requestNumber: 4n, sectorIndex: 7, sectorCount: 32_768 }],
  ];
  it.each(commands)("decodes an encoded %s back to the same command", (_name, cmd) => {
    const bytes = encodeClientCommand(cmd, clientKey);
    expect(bytes.length).toBe(atddMessageSize(bytes, 0));
    expect(replica().push(bytes)).toEqual([{ kind: "message", message: cmd }]);
  });

  const responses: [string, ClientResponse][] = [
    [
      "ZERO_MAP response of 256",
      {
        kind: "clientResponse",
        command: "zeroMap",
        status: ResponseStatus.Ok,
        requestNumber: 5n,
        sectorCount: 256,
        data: bits(256, [0, 7, 8, 255]),
      },
    ],
    [
      "HELD_MAP response of 32768",
      {
        kind: "clientResponse",
        command: "heldMap",
        status: ResponseStatus.Ok,
        requestNumber: 6n,
        sectorCount: 32_768,
        data: bits(32_768, [1, 32_767]),
      },
    ],
    [
      "HELD_MAP response AuthFailure",
      {
        kind: "clientResponse",
        command: "heldMap",
        status: ResponseStatus.AuthFailure,
        requestNumber: 7n,
        sectorCount: 3,
      },
    ],
  ];
  it.each(responses)("decodes an encoded %s back to the same response", (_name, res) => {
    const bytes = encodeClientResponse(res, clientKey);
    expect(bytes.length).toBe(atddMessageSize(bytes, 0));
    expect(client().push(bytes)).toEqual([{ kind: "message", message: res }]);
  });

  it("refuses to encode a count beyond each type's bound, or a bitmap of the wrong length", () => {
    for (const [kind, count] of [
      ["clientZeroMap", MAX_RANGE_SECTORS + 1],
      ["clientHeldMap", HELD_MAP_MAX_SECTORS + 1],
    ] as const) {
      const cmd: ClientCommand = { kind, requestNumber: 1n, sectorIndex: 0, sectorCount: count };
      expect(() => encodeClientCommand(cmd, clientKey)).toThrow(AssertionError);
    }
    const res: ClientResponse = {
      kind: "clientResponse",
      command: "heldMap",
      status: ResponseStatus.Ok,
      requestNumber: 1n,
      sectorCount: 9,
      data: Buffer.alloc(1),
    };
    expect(() => encodeClientResponse(res, clientKey)).toThrow(AssertionError);
  });
});

describe("ZERO_MAP and HELD_MAP on input", () => {
  it.each([
    ["ZERO_MAP", 0x8d, MAX_RANGE_SECTORS + 1],
    ["HELD_MAP", 0x8e, HELD_MAP_MAX_SECTORS + 1],
    ["ZERO_MAP", 0x8d, 0],
    ["HELD_MAP", 0x8e, 0],
  ])(
    "a %s with count %i is an unknown type: 8 bytes dropped, then the next message decodes",
    (_n, type, count) => {
      const bad = signed(header(type, count, 1n, 0n));
      const next: ClientCommand = {
        kind: "clientHeldMap",
        requestNumber: 2n,
        sectorIndex: 0,
        sectorCount: 1,
      };
      const events = replica().push(
        Buffer.concat([bad.subarray(0, 8), encodeClientCommand(next, clientKey)]),
      );
      expect(events).toEqual([
        { kind: "dropped", reason: "unknownType", bytes: 8 },
        { kind: "message", message: next },
      ]);
    },
  );

  it("a forged HELD_MAP is rejected as AuthFailure with its count; one past the volume as InvalidSectorIndex", () => {
    const forged = signed(header(0x8e, 1000, 3n, 0n), Buffer.alloc(32, 1));
    expect(replica().push(forged)).toEqual([
      {
        kind: "rejected",
        command: "heldMap",
        requestNumber: 3n,
        status: ResponseStatus.AuthFailure,
        sectorCount: 1000,
      },
    ]);
    const past = signed(header(0x8d, 2, 4n, BigInt(SECTORS - 1)));
    expect(replica().push(past)).toEqual([
      {
        kind: "rejected",
        command: "zeroMap",
        requestNumber: 4n,
        status: ResponseStatus.InvalidSectorIndex,
        sectorCount: 2,
      },
    ]);
  });
});

describe("HELD_PAGES (0x8F): a bit per page of HELD_PAGE_SECTORS sectors", () => {
  // SECTORS = 100,000: pages 0..97, the last one (from sector 99,328) partly past the volume.
  const lastPage = Math.floor((SECTORS - 1) / HELD_PAGE_SECTORS);

  it("is the READ_RANGE header with type 0x8F, the count in pages (its answer: the 0xCF layout above)", () => {
    const cmd: ClientCommand = {
      kind: "clientHeldPages",
      requestNumber: 12n,
      sectorIndex: 3 * HELD_PAGE_SECTORS,
      sectorCount: HELD_PAGES_MAX,
    };
    expect(encodeClientCommand(cmd, clientKey)).toEqual(
      signed(header(0x8f, HELD_PAGES_MAX, 12n, BigInt(3 * HELD_PAGE_SECTORS))),
    );
    const res: ClientResponse = {
      kind: "clientResponse",
      command: "heldPages",
      status: ResponseStatus.Ok,
      requestNumber: 12n,
      sectorCount: 10,
      data: bits(10, [0, 9]),
    };
    expect(client().push(encodeClientResponse(res, clientKey))).toEqual([{ kind: "message", message: res }]);
  });

  it.each([
    ["one page", 0, 1],
    ["up to the last page, which ends past the volume", HELD_PAGE_SECTORS, lastPage],
    ["only the last page", lastPage * HELD_PAGE_SECTORS, 1],
  ])("decodes an encoded HELD_PAGES of %s back to the same command", (_name, sectorIndex, sectorCount) => {
    const cmd: ClientCommand = { kind: "clientHeldPages", requestNumber: 5n, sectorIndex, sectorCount };
    const bytes = encodeClientCommand(cmd, clientKey);
    expect(bytes.length).toBe(atddMessageSize(bytes, 0));
    expect(replica().push(bytes)).toEqual([{ kind: "message", message: cmd }]);
  });

  it.each([
    ["that does not start a page", 1000n, 1],
    ["whose last page starts past the volume", 0n, lastPage + 2],
    ["that starts past the volume", BigInt((lastPage + 1) * HELD_PAGE_SECTORS), 1],
  ])("an authentic HELD_PAGES %s is answered InvalidSectorIndex with its count", (_name, sector, count) => {
    expect(replica().push(signed(header(0x8f, count, 8n, sector)))).toEqual([
      {
        kind: "rejected",
        command: "heldPages",
        requestNumber: 8n,
        status: ResponseStatus.InvalidSectorIndex,
        sectorCount: count,
      },
    ]);
  });

  it("a HELD_PAGES with count 0 or above HELD_PAGES_MAX is an unknown type; a forged one AuthFailure", () => {
    for (const count of [0, HELD_PAGES_MAX + 1]) {
      expect(replica().push(signed(header(0x8f, count, 1n, 0n)).subarray(0, 8))).toEqual([
        { kind: "dropped", reason: "unknownType", bytes: 8 },
      ]);
    }
    expect(replica().push(signed(header(0x8f, 4, 3n, 0n), Buffer.alloc(32, 1)))).toEqual([
      {
        kind: "rejected",
        command: "heldPages",
        requestNumber: 3n,
        status: ResponseStatus.AuthFailure,
        sectorCount: 4,
      },
    ]);
    const cmd: ClientCommand = { kind: "clientHeldPages", requestNumber: 1n, sectorIndex: 5, sectorCount: 1 };
    expect(() => encodeClientCommand(cmd, clientKey), "not the first sector of a page").toThrow(
      AssertionError,
    );
  });
});

describe("bitmaps", () => {
  it("zeroBitmap sets bit i (most significant first) exactly for the all-zero sectors", () => {
    const data = Buffer.alloc(10 * 4096);
    data[3 * 4096 + 4095] = 1; // the last byte of sector 3
    data[9 * 4096] = 1; // the first byte of sector 9
    const map = zeroBitmap(data, 10);
    expect(map).toEqual(Buffer.from([0b1110_1111, 0b1000_0000]));
    expect(Array.from({ length: 10 }, (_, i) => bitAt(map, i))).toEqual([
      true,
      true,
      true,
      false,
      true,
      true,
      true,
      true,
      true,
      false,
    ]);
  });
});

describe("bitmap runs (BLOCK_STATUS extents)", () => {
  /** The plain definition: first bit after `from`, below `limit`, unlike bit `from`. */
  function naiveRunEnd(map: Buffer, from: number, limit: number): number {
    let i = from + 1;
    while (i < limit && bitAt(map, i) === bitAt(map, from)) i++;
    return i;
  }

  it("finds where each run of equal bits ends, across whole bytes skipped, for any start and limit", () => {
    const random = seededRandom(11);
    for (let round = 0; round < 200; round++) {
      const count = 1 + Math.floor(random() * 700);
      // Runs of 1..80 bits, so both single bits and runs spanning several whole bytes occur.
      let value = random() < 0.5;
      const set: number[] = [];
      for (let i = 0; i < count; ) {
        const length = 1 + Math.floor(random() * 80);
        for (let j = i; j < Math.min(count, i + length); j++) if (value) set.push(j);
        i += length;
        value = !value;
      }
      const map = bitmapOfMarked(count, (mark) => {
        for (const i of set) mark(i);
      });
      for (let probe = 0; probe < 20; probe++) {
        const from = Math.floor(random() * count);
        const limit = from + 1 + Math.floor(random() * (count - from));
        expect(bitRunEnd(map, from, limit)).toBe(naiveRunEnd(map, from, limit));
      }
    }
  });

  it("finds run ends across long uniform stretches (whole blocks compared at once) at any bit", () => {
    const random = seededRandom(12);
    const count = 200_000;
    for (let round = 0; round < 40; round++) {
      // A few runs of thousands of bits, starting and ending anywhere.
      const edges = Array.from({ length: 1 + Math.floor(random() * 4) }, () =>
        Math.floor(random() * count),
      ).sort((a, b) => a - b);
      const value = random() < 0.5;
      const map = bitmapOf(count, (i) => {
        const crossed = edges.filter((e) => e <= i).length;
        return crossed % 2 === 0 ? value : !value;
      });
      for (const from of [0, ...edges, Math.floor(random() * count)]) {
        if (from >= count) continue;
        for (const limit of [count, from + 1 + Math.floor(random() * (count - from))]) {
          expect(bitRunEnd(map, from, limit)).toBe(naiveRunEnd(map, from, limit));
        }
      }
    }
  });

  it("lists the runs of set bits, ascending, ignoring padding bits past the count", () => {
    const random = seededRandom(13);
    for (const count of [1, 7, 8, 9, 100, 10_000]) {
      const set = Array.from({ length: count }, (_, i) => i).filter(() => random() < 0.2);
      const map = bits(count, set);
      if (count % 8 !== 0) map[map.length - 1] = map[map.length - 1]! | (0xff >> (count % 8));
      const expanded = setBitRuns(map, count).flatMap(([from, to]) =>
        Array.from({ length: to - from }, (_, k) => from + k),
      );
      expect(expanded).toEqual(set);
      // Runs are maximal: no two touch.
      const runs = setBitRuns(map, count);
      for (let k = 1; k < runs.length; k++) expect(runs[k]![0]).toBeGreaterThan(runs[k - 1]![1]);
    }
  });

  it("counts the set bits of a map, not its padding bits", () => {
    const random = seededRandom(5);
    for (const count of [1, 7, 8, 9, 100, 32_768]) {
      const set = Array.from({ length: count }, (_, i) => i).filter(() => random() < 0.3);
      const map = bits(count, set);
      expect(countBits(map, count)).toBe(set.length);
      const padded = Buffer.from(map);
      padded[padded.length - 1] = padded[padded.length - 1]! | (0xff >> (count % 8) || 0);
      if (count % 8 !== 0) expect(countBits(padded, count)).toBe(set.length);
    }
  });

  it("marks repeated bits once and refuses a bit outside the map", () => {
    const map = bitmapOfMarked(12, (mark) => {
      for (const i of [3, 3, 11, 0]) mark(i);
    });
    expect(map.equals(bits(12, [0, 3, 11]))).toBe(true);
    expect(() => bitmapOfMarked(12, (mark) => mark(12))).toThrow(AssertionError);
  });
});
