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
