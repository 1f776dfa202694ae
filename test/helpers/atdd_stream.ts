// Helpers for decoder tests: encode any message, feed a stream in chunks, expected events.
import type { AtddDecoder, DecodeEvent } from "../../src/protocol/decoder.js";
import type { AtddMessage } from "../../src/protocol/messages.js";

export function messageEvents(...ms: AtddMessage[]): DecodeEvent[] {
  return ms.map((message) => ({ kind: "message", message }));
}

/** Feeds `stream` in chunks cut at `cuts` and returns every event. */
export function feedChunks(decoder: AtddDecoder, stream: Buffer, cuts: number[]): DecodeEvent[] {
  const events: DecodeEvent[] = [];
  let start = 0;
  for (const cut of [...cuts, stream.length]) {
    events.push(...decoder.push(stream.subarray(start, cut)));
    start = cut;
  }
  return events;
}

/**
 * Every copy of `original` with one byte XORed by one of `flips`, at every position, fed to a
 * fresh decoder: returns the first (position, flip) that decoded to a message, or undefined.
 */
export function firstAcceptedByteChange(
  original: Buffer,
  newDecoder: () => AtddDecoder,
  flips: readonly number[] = [0x01, 0x80, 0xff],
): string | undefined {
  for (let position = 0; position < original.length; position++) {
    for (const flip of flips) {
      const forged = Buffer.from(original);
      forged[position]! ^= flip;
      const decoder = newDecoder();
      const events = [...decoder.push(forged), ...decoder.push(Buffer.alloc(0))];
      if (events.some((e) => e.kind === "message")) return `byte ${position} ^ ${flip} was accepted`;
    }
  }
  return undefined;
}
