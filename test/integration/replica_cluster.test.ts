// Real replica processes (`node dist/cli/main.js replica`) on loopback, driven like a gateway
// would: reads and writes through different replicas, crashes by SIGKILL, restarts from disk.
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ReplicaConnection } from "../../src/client/replica_connection.js";
import { encodeClientCommand } from "../../src/protocol/codec.js";
import { ResponseStatus } from "../../src/protocol/messages.js";
import { isAtomicDiskError } from "../../src/util/errors.js";
import { SECTOR_SIZE_BYTES } from "../../src/util/limits.js";
import { setRootLogger } from "../../src/util/log.js";
import { RawClient, startCluster, type TestCluster } from "../helpers/cluster.js";

setRootLogger(pino({ level: "silent" }));

const SECTORS = 4096;
const clusters: TestCluster[] = [];
const connections: ReplicaConnection[] = [];

afterEach(async () => {
  for (const c of connections.splice(0)) c.close();
  for (const cluster of clusters.splice(0)) {
    await cluster.stop();
    rmSync(cluster.dir, { recursive: true, force: true });
  }
});

async function cluster3(): Promise<TestCluster> {
  const cluster = await startCluster({ replicas: 3, sectors: SECTORS });
  clusters.push(cluster);
  return cluster;
}

async function connectTo(
  cluster: TestCluster,
  rank: number,
  batchWrites = false,
): Promise<ReplicaConnection> {
  const address = cluster.addresses[rank - 1]!;
  const c = await ReplicaConnection.connect({
    host: address.host,
    port: address.port,
    clientKey: cluster.config.clientKey,
    batchWrites,
  });
  connections.push(c);
  return c;
}

function sector(fill: number): Buffer {
  return Buffer.alloc(SECTOR_SIZE_BYTES, fill);
}

/** Resolves to "timeout" if the promise has not settled within ms. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  return Promise.race([promise, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), ms))]);
}

function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Lets `workers` (started with a stop flag) run until `acked()` reaches `least` (within 20 s),
 * then SIGKILLs every replica mid-workload, waits for the workers to give up, and restarts the
 * replicas from their disks.
 */
async function killAllMidWorkload(
  cluster: TestCluster,
  startWorkers: (stopped: () => boolean) => Promise<void>[],
  acked: () => number,
  least: number,
): Promise<void> {
  let stop = false;
  const workers = startWorkers(() => stop);
  const deadline = Date.now() + 20_000;
  while (acked() < least && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  expect(acked()).toBeGreaterThanOrEqual(least);
  await Promise.all([1, 2, 3].map((r) => cluster.kill(r)));
  stop = true;
  await Promise.all(workers);
  await Promise.all([1, 2, 3].map((r) => cluster.start(r)));
}

describe("replica cluster (3 real processes)", () => {
  it("a write through replica 1 is read back through replicas 2 and 3", async () => {
    const cluster = await cluster3();
    const [c1, c2, c3] = [
      await connectTo(cluster, 1),
      await connectTo(cluster, 2),
      await connectTo(cluster, 3),
    ];
    const data = randomBytes(SECTOR_SIZE_BYTES);
    await c1.write(100, data);
    expect((await c2.read(100)).equals(data)).toBe(true);
    expect((await c3.read(100)).equals(data)).toBe(true);
    expect((await c3.read(101)).equals(sector(0))).toBe(true);
  });

  it("matches 64 pipelined writes and then 64 pipelined reads on one connection by request number", async () => {
    const cluster = await cluster3();
    const c = await connectTo(cluster, 2);
    const values = Array.from({ length: 64 }, () => randomBytes(SECTOR_SIZE_BYTES));
    await Promise.all(values.map((v, i) => c.write(i * 3, v)));
    const reads = await Promise.all(values.map((_, i) => c.read(i * 3)));
    expect(reads.map((r, i) => r.equals(values[i]!))).toEqual(Array(64).fill(true));
  });

  it("keeps completing operations after one replica is killed with SIGKILL", async () => {
    const cluster = await cluster3();
    const c = await connectTo(cluster, 1);
    await c.write(1, sector(1));
    await cluster.kill(3);
    await c.write(2, sector(2));
    expect((await c.read(1)).equals(sector(1))).toBe(true);
    const c2 = await connectTo(cluster, 2);
    expect((await c2.read(2)).equals(sector(2))).toBe(true);
  });

  it("holds a write while only a minority is up and completes it once a replica returns", async () => {
    const cluster = await cluster3();
    const c = await connectTo(cluster, 1);
    await c.write(5, sector(5));
    await cluster.kill(2);
    await cluster.kill(3);
    const pending = c.write(6, sector(6));
    expect(await within(pending, 1_500)).toBe("timeout");
    await cluster.start(3);
    // Reconnect backoff (<= 2 s) plus retransmission backoff (<= 4 s) bound the wait.
    expect(await within(pending, 20_000)).toBeUndefined();
    const c3 = await connectTo(cluster, 3);
    expect((await c3.read(6)).equals(sector(6))).toBe(true);
  });

  it("after every replica is killed with SIGKILL and restarted, every acknowledged write is there", async () => {
    const cluster = await cluster3();
    const clients = [await connectTo(cluster, 1), await connectTo(cluster, 2), await connectTo(cluster, 3)];
    const content = (i: number) => {
      const b = Buffer.alloc(SECTOR_SIZE_BYTES, i & 0xff);
      b.writeUInt32BE(i, 0);
      return b;
    };
    const acked = new Set<number>();
    const issued: number[] = [];
    let next = 0;
    // Writes keep flowing (16 in flight per connection) until the crash, so some are in flight.
    const worker = async (c: ReplicaConnection, stopped: () => boolean) => {
      while (!stopped() && next < SECTORS) {
        const i = next++;
        issued.push(i);
        try {
          await c.write(i, content(i));
          acked.add(i);
        } catch {
          return; // the connection died with its replica
        }
      }
    };
    await killAllMidWorkload(
      cluster,
      (stopped) => clients.flatMap((c) => Array.from({ length: 16 }, () => worker(c, stopped))),
      () => acked.size,
      300,
    );
    // Nothing is acknowledged once every replica is dead: this is what was acknowledged at the crash.
    const ackedAtCrash = new Set(acked);
    const reader = await connectTo(cluster, 2);
    const reads = await Promise.all(issued.map(async (i) => [i, await reader.read(i)] as const));
    for (const [i, data] of reads) {
      if (ackedAtCrash.has(i)) expect(data.equals(content(i)), `acknowledged sector ${i}`).toBe(true);
      // An unacknowledged write is atomic: all of it or none of it.
      else expect(data.equals(content(i)) || data.equals(sector(0)), `unacknowledged sector ${i}`).toBe(true);
    }
  });

  it("range writes: after SIGKILL of every replica mid-workload, every acknowledged run is there, sector by sector", async () => {
    const cluster = await cluster3();
    const clients = [await connectTo(cluster, 1), await connectTo(cluster, 2), await connectTo(cluster, 3)];
    const RUN = 64;
    // Sector s of run r holds (r, s): a reader can tell which write each sector came from.
    const runContent = (r: number) => {
      const b = Buffer.alloc(RUN * SECTOR_SIZE_BYTES, r & 0xff);
      for (let i = 0; i < RUN; i++) b.writeUInt32BE((r << 8) | i, i * SECTOR_SIZE_BYTES);
      return b;
    };
    const runs = SECTORS / RUN;
    const acked = new Set<number>();
    let next = 0;
    const worker = async (c: ReplicaConnection, stopped: () => boolean) => {
      while (!stopped() && next < runs) {
        const r = next++;
        try {
          await c.writeRange(r * RUN, runContent(r));
          acked.add(r);
        } catch {
          return;
        }
      }
    };
    await killAllMidWorkload(
      cluster,
      (stopped) => clients.flatMap((c) => Array.from({ length: 4 }, () => worker(c, stopped))),
      () => acked.size,
      8,
    );
    const ackedAtCrash = new Set(acked);
    expect(ackedAtCrash.size).toBeLessThan(runs); // the crash really came mid-workload
    const reader = await connectTo(cluster, 3);
    for (let r = 0; r < runs; r++) {
      const data = await reader.readRange(r * RUN, RUN);
      const expected = runContent(r);
      for (let i = 0; i < RUN; i++) {
        const got = data.subarray(i * SECTOR_SIZE_BYTES, (i + 1) * SECTOR_SIZE_BYTES);
        const want = expected.subarray(i * SECTOR_SIZE_BYTES, (i + 1) * SECTOR_SIZE_BYTES);
        if (ackedAtCrash.has(r)) expect(got.equals(want), `acknowledged run ${r} sector ${i}`).toBe(true);
        // Each sector of an unacknowledged run is its own register: old or new, never torn.
        else
          expect(got.equals(want) || got.equals(sector(0)), `unacknowledged run ${r} sector ${i}`).toBe(true);
      }
    }
  });

  it("WRITE_SECTORS: each sector of a batch is its own write, read back through the other replicas", async () => {
    const cluster = await cluster3();
    const batching = await connectTo(cluster, 1, true);
    // Scattered, out of order, in one turn: one command; each sector gets its own value.
    const sectors = [4000, 7, 2500, 8, 0, 4095];
    const values = sectors.map(() => randomBytes(SECTOR_SIZE_BYTES));
    await Promise.all(sectors.map((s, i) => batching.write(s, values[i]!)));
    const c2 = await connectTo(cluster, 2);
    const c3 = await connectTo(cluster, 3);
    for (const [i, s] of sectors.entries()) {
      expect((await c2.read(s)).equals(values[i]!), `sector ${s} via replica 2`).toBe(true);
      expect((await c3.read(s)).equals(values[i]!), `sector ${s} via replica 3`).toBe(true);
    }
    expect((await c2.read(9)).equals(sector(0))).toBe(true);
  });

  it("WRITE_SECTORS: after SIGKILL of every replica mid-workload, every acknowledged write is there", async () => {
    const cluster = await cluster3();
    const clients = [
      await connectTo(cluster, 1, true),
      await connectTo(cluster, 2, true),
      await connectTo(cluster, 3, true),
    ];
    // Writes of sector s carry (s, round): a reader can tell which write a sector holds.
    const content = (s: number, round: number) => {
      const b = Buffer.alloc(SECTOR_SIZE_BYTES, (s + round) & 0xff);
      b.writeUInt32BE(s, 0);
      b.writeUInt32BE(round, 4);
      return b;
    };
    // The last acknowledged round of each sector, and every round that was sent at all.
    const acked = new Map<number, number>();
    const sent = new Map<number, Set<number>>();
    let round = 0;
    // Each worker writes 32 sectors of its own at a time (a batch), so no sector has two writes in
    // flight and "last acknowledged" is well defined.
    const worker = async (c: ReplicaConnection, w: number, stopped: () => boolean) => {
      while (!stopped()) {
        const r = ++round;
        const mine = Array.from({ length: 32 }, (_, i) => ((r * 7919 + i * 97) % 128) * 32 + w);
        const unique = [...new Set(mine)];
        for (const s of unique) sent.set(s, (sent.get(s) ?? new Set()).add(r));
        try {
          await Promise.all(unique.map((s) => c.write(s, content(s, r))));
        } catch {
          return;
        }
        for (const s of unique) acked.set(s, Math.max(acked.get(s) ?? 0, r));
      }
    };
    await killAllMidWorkload(
      cluster,
      (stopped) =>
        clients.flatMap((c, k) => Array.from({ length: 4 }, (_, j) => worker(c, k * 4 + j, stopped))),
      () => acked.size,
      200,
    );
    const ackedAtCrash = new Map(acked);
    const reader = await connectTo(cluster, 2);
    for (const [s, rounds] of sent) {
      const got = await reader.read(s);
      const holds = got.readUInt32BE(0) === s ? got.readUInt32BE(4) : 0;
      const last = ackedAtCrash.get(s) ?? 0;
      // At least the last acknowledged write (a later one may have landed unacknowledged).
      if (last > 0) expect(holds, `sector ${s}`).toBeGreaterThanOrEqual(last);
      if (holds > 0) {
        expect(rounds.has(holds), `sector ${s} holds a round that was written`).toBe(true);
        expect(got.equals(content(s, holds)), `sector ${s} whole`).toBe(true);
      } else expect(got.equals(sector(0)), `sector ${s} never written`).toBe(true);
    }
  });

  it("range reads and writes keep completing after one replica is killed with SIGKILL", async () => {
    const cluster = await cluster3();
    const c1 = await connectTo(cluster, 1);
    const data = randomBytes(256 * SECTOR_SIZE_BYTES);
    await c1.writeRange(512, data);
    await cluster.kill(2);
    const other = randomBytes(256 * SECTOR_SIZE_BYTES);
    expect(await within(c1.writeRange(1024, other), 10_000)).not.toBe("timeout");
    const c3 = await connectTo(cluster, 3);
    expect((await c3.readRange(512, 256)).equals(data)).toBe(true);
    expect((await c3.readRange(1024, 256)).equals(other)).toBe(true);
  });

  it("answers a command with a bad HMAC with AuthFailure and keeps serving that connection", async () => {
    const cluster = await cluster3();
    const raw = await RawClient.connect(cluster.addresses[0]!, cluster.config.clientKey);
    try {
      const forged = encodeClientCommand(
        { kind: "clientWrite", requestNumber: 77n, sectorIndex: 9, data: sector(0xee) },
        randomBytes(32),
      );
      raw.send(forged);
      expect(await raw.next()).toMatchObject({
        command: "write",
        status: ResponseStatus.AuthFailure,
        requestNumber: 77n,
      });
      raw.send(
        encodeClientCommand(
          { kind: "clientRead", requestNumber: 78n, sectorIndex: 9 },
          cluster.config.clientKey,
        ),
      );
      const read = await raw.next();
      expect(read).toMatchObject({ command: "read", status: ResponseStatus.Ok, requestNumber: 78n });
      expect(read.data!.equals(sector(0))).toBe(true);
    } finally {
      raw.close();
    }
  });

  it("answers a sector index at or beyond the volume size with InvalidSectorIndex", async () => {
    const cluster = await cluster3();
    const c = await connectTo(cluster, 3);
    const errRead = await c.read(SECTORS).catch((e: unknown) => e);
    expect(isAtomicDiskError(errRead, "INVALID_SECTOR_INDEX")).toBe(true);
    const errWrite = await c.write(SECTORS + 1000, sector(1)).catch((e: unknown) => e);
    expect(isAtomicDiskError(errWrite, "INVALID_SECTOR_INDEX")).toBe(true);
    await c.write(SECTORS - 1, sector(4));
    expect((await c.read(SECTORS - 1)).equals(sector(4))).toBe(true);
  });

  it("survives random garbage on client connections and keeps serving", async () => {
    const cluster = await cluster3();
    for (let i = 0; i < 4; i++) {
      const raw = await RawClient.connect(cluster.addresses[0]!, cluster.config.clientKey);
      raw.send(randomBytes(256 * 1024));
      raw.send(Buffer.from("atdd\0\0\0\x02 truncated write then close"));
      await new Promise((r) => setTimeout(r, 20));
      raw.close();
    }
    expect(isAlive(cluster.pid(1))).toBe(true);
    const c = await connectTo(cluster, 1);
    await c.write(3, sector(3));
    expect((await c.read(3)).equals(sector(3))).toBe(true);
  });
});
