// Benchmark: the CPU a write costs in the protocol code alone, without sockets, disks or other
// processes. Three real RegisterCores in one thread; every message between two ranks goes through
// the real codec (encode + HMAC, then the streaming decoder + HMAC check), messages to self skip it
// as in the replica driver; persists, loads and tag reservations complete at once (each rank keeps
// the tags it persisted, which is all a write's loads ask for). Each round is
// one client batch of BATCH random single-sector writes at rank 1, run until every effect settled.
// What the real cluster spends per write beyond this is the I/O path: syscalls, the event loop,
// process wakeups, fdatasync.
// Usage: node bench/core-codec.mjs [BATCH ...] (default 1 4 17 64); needs `make build`. Env:
// WRITES (writes per measurement, default 40000).
// Prints per batch size: µs per write with the codec and without it (messages passed as objects).
import { randomBytes } from "node:crypto";
import { encodeSystemMessageFrame } from "../dist/protocol/codec.js";
import { AtddDecoder } from "../dist/protocol/decoder.js";
import { RegisterCore } from "../dist/register/register_core.js";

const N = 3;
const SECTORS = 65_536;
const SECTOR_BYTES = 4096;
/** Writes per measurement, after as many uncounted ones (the JIT warms up on those). */
const WRITES = Number(process.env.WRITES ?? 40_000);

function cluster(withCodec) {
  const systemKey = randomBytes(64);
  const clientKey = randomBytes(32);
  const cores = [];
  const decoders = [];
  const stored = [];
  for (let rank = 1; rank <= N; rank++) {
    cores[rank] = new RegisterCore({ rank, replicaCount: N, newOpId: () => randomBytes(16), tagFloor: 0n });
    decoders[rank] = new AtddDecoder({
      role: "replica",
      clientKey,
      systemKey,
      sectors: SECTORS,
      replicaCount: N,
    });
    stored[rank] = new Map();
  }
  const queue = [];
  let completed = 0;
  let nowMs = 0;
  const apply = (rank, effects) => {
    // A broadcast repeats one message object per rank: encoded once, as the replica driver does.
    let lastMessage = null;
    let lastBytes = null;
    for (const effect of effects) {
      switch (effect.kind) {
        case "send": {
          if (effect.to === rank || !withCodec) {
            queue.push([effect.to, { kind: "message", message: effect.message }]);
            break;
          }
          if (effect.message !== lastMessage) {
            lastMessage = effect.message;
            lastBytes = Buffer.concat(encodeSystemMessageFrame(effect.message, systemKey));
          }
          for (const event of decoders[effect.to].push(lastBytes)) {
            if (event.kind !== "message") throw new Error(`decoder: ${event.kind}`);
            queue.push([effect.to, { kind: "message", message: event.message }]);
          }
          break;
        }
        case "persist":
          for (const { sectorIndex, state } of effect.items)
            stored[rank].set(sectorIndex, { ts: state.ts, wr: state.wr });
          queue.push([rank, { kind: "persisted", token: effect.token }]);
          break;
        case "loadTag":
          queue.push([
            rank,
            {
              kind: "tagsLoaded",
              sectorIndexes: [effect.sectorIndex],
              tags: [stored[rank].get(effect.sectorIndex) ?? { ts: 0n, wr: 0 }],
            },
          ]);
          break;
        case "load":
          throw new Error("writes load no data");
        case "reserveTags":
          queue.push([rank, { kind: "tagsReserved", upToTs: effect.upToTs }]);
          break;
        case "complete":
          completed++;
          break;
      }
    }
  };
  const step = (rank, event) => apply(rank, cores[rank].step(event));
  for (let rank = 1; rank <= N; rank++) step(rank, { kind: "tick", nowMs });
  const data = randomBytes(SECTOR_BYTES * 256);
  let token = 1;
  /** One batch of `batch` writes to distinct random sectors, run to the end; returns its size. */
  const round = (batch) => {
    const sectors = new Set();
    while (sectors.size < batch) sectors.add(Math.floor(Math.random() * SECTORS));
    const ops = [...sectors].map((sectorIndex, i) => ({
      kind: "write",
      token: token++,
      sectorIndex,
      data: data.subarray(i * SECTOR_BYTES, (i + 1) * SECTOR_BYTES),
    }));
    const before = completed;
    step(1, { kind: "clientBatch", ops });
    for (let i = 0; i < queue.length; i++) step(...queue[i]);
    queue.length = 0;
    if (completed - before !== batch) throw new Error(`round completed ${completed - before} of ${batch}`);
    // Time moves a little, as it does between rounds; no retransmission is ever due.
    nowMs += 0.01;
    for (let rank = 1; rank <= N; rank++) step(rank, { kind: "tick", nowMs });
    return batch;
  };
  return round;
}

function measure(batch, withCodec) {
  const round = cluster(withCodec);
  for (let n = 0; n < WRITES; ) n += round(batch);
  const started = process.hrtime.bigint();
  let writes = 0;
  while (writes < WRITES) writes += round(batch);
  return Number(process.hrtime.bigint() - started) / 1000 / writes;
}

if (!Number.isInteger(WRITES) || WRITES < 1) throw new Error(`bad WRITES ${process.env.WRITES}`);
const batches = process.argv.length > 2 ? process.argv.slice(2).map(Number) : [1, 4, 17, 64];
console.log("writes per batch   µs per write, codec   µs per write, no codec   codec share");
for (const batch of batches) {
  if (!Number.isInteger(batch) || batch < 1 || batch > 256) throw new Error(`bad batch size ${batch}`);
  const codec = measure(batch, true);
  const bare = measure(batch, false);
  console.log(
    `${String(batch).padStart(15)}   ${codec.toFixed(1).padStart(19)}   ${bare.toFixed(1).padStart(22)}   ${(
      (100 * (codec - bare)) / codec
    ).toFixed(0)}%`,
  );
}
