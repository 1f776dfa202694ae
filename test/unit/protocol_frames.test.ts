// Frames: encoded messages as parts, so that a range message's data (up to 1 MiB) reaches the
// socket as the caller's own buffer, never copied into a fresh frame; and the socket writer's
// coalescing, which joins small parts and passes large ones through.
import { describe, expect, it } from "vitest";
import { coalesce } from "../../src/net/coalescing_writer.js";
import {
  encodeClientCommandFrame,
  encodeClientResponseFrame,
  encodeSystemMessageFrame,
  type Frame,
  frameBytes,
} from "../../src/protocol/codec.js";
import { AtddDecoder } from "../../src/protocol/decoder.js";
import { ResponseStatus } from "../../src/protocol/messages.js";

const clientKey = Buffer.alloc(32, 0x11);
const systemKey = Buffer.alloc(64, 0x22);
const opId = Buffer.alloc(16, 0x33);

function run(count: number): Buffer {
  const data = Buffer.alloc(count * 4096);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  return data;
}

const consecutive = (first: number, count: number) => Array.from({ length: count }, (_, i) => first + i);

/** The frame's bytes decode (so its tag is right) to a message carrying `data`. */
function decodesWith(frame: Frame, role: "replica" | "client", data: Buffer): void {
  const decoder = new AtddDecoder({ role, clientKey, ...(role === "replica" ? { systemKey } : {}) });
  const events = decoder.push(frameBytes(frame));
  expect(events.map((e) => e.kind)).toEqual(["message"]);
  const message = (events[0] as { message: { data: Buffer } }).message;
  expect(message.data.equals(data)).toBe(true);
}

/** The frame holds `data` itself (the same memory), not a copy. */
function holdsView(frame: Frame, data: Buffer): void {
  expect(frame.some((part) => part.buffer === data.buffer && part.byteOffset === data.byteOffset)).toBe(true);
}

describe("frames of range messages", () => {
  it("a 256-sector WRITE_RANGE_PROC is head, the caller's data, tag: it decodes and its data was not copied", () => {
    const data = run(256);
    const tag = { ts: 9n, wr: 2 };
    const frame = encodeSystemMessageFrame(
      {
        kind: "writeRangeProc",
        sender: 1,
        opId,
        sectorIndex: 10,
        sectorCount: 256,
        sectors: consecutive(10, 256),
        tags: Array.from({ length: 256 }, () => tag),
        data,
      },
      systemKey,
    );
    expect(frame).toHaveLength(3);
    expect(frame[2]!.length).toBe(32);
    holdsView(frame, data);
    decodesWith(frame, "replica", data);
  });

  it("a WRITE_RANGE command and a READ_RANGE response of 1 MiB keep their data as a view and decode", () => {
    const data = run(256);
    const command = encodeClientCommandFrame(
      { kind: "clientWriteRange", requestNumber: 5n, sectorIndex: 0, sectorCount: 256, data },
      clientKey,
    );
    holdsView(command, data);
    decodesWith(command, "replica", data);
    const response = encodeClientResponseFrame(
      {
        kind: "clientResponse",
        command: "readRange",
        status: ResponseStatus.Ok,
        requestNumber: 5n,
        sectorCount: 256,
        data,
      },
      clientKey,
    );
    holdsView(response, data);
    decodesWith(response, "client", data);
  });

  it("small data (a few sectors) is copied into one buffer: one part, same bytes", () => {
    const data = run(2);
    const frame = encodeSystemMessageFrame(
      {
        kind: "rangeValue",
        sender: 3,
        opId,
        sectorIndex: 4,
        sectorCount: 2,
        sectors: [4, 9],
        tags: [
          { ts: 1n, wr: 1 },
          { ts: 2n, wr: 3 },
        ],
        data,
      },
      systemKey,
    );
    expect(frame).toHaveLength(1);
    expect(frame[0]!.buffer).not.toBe(data.buffer);
    decodesWith(frame, "replica", data);
  });
});

describe("socket write coalescing", () => {
  it("joins runs of small parts into one buffer and passes large parts through untouched", () => {
    const small = (n: number) => Buffer.alloc(64, n);
    const big = run(8);
    const chunks = coalesce([small(1), small(2), big, small(3)]);
    expect(chunks).toHaveLength(3);
    expect(chunks[0]).toEqual(Buffer.concat([small(1), small(2)]));
    expect(chunks[1]).toBe(big);
    expect(chunks[2]).toEqual(small(3));
    expect(coalesce([small(1)])[0]).toEqual(small(1));
    expect(coalesce([])).toEqual([]);
  });
});
