// The activity lines of real replica and gateway processes (`--activity-log-ms`) count exactly
// the requests a client made, and say nothing while the cluster is idle.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Command, NbdErrno } from "../../src/nbd/constants.js";
import type { RawClient } from "../unit/nbd_raw_client.js";
import { type Gateway, startGateway, transmissionClient } from "./nbd_gateway.js";

const S = 4096;
const INTERVAL_MS = 200;
let gw: Gateway;
let c: RawClient;
let cookie = 0n;

interface Line {
  msg: string;
  reads?: { count: number; p50Ms: number; p99Ms: number; maxMs: number };
  writes?: { count: number; p50Ms: number; p99Ms: number; maxMs: number };
  [field: string]: unknown;
}

function activityLines(path: string): Line[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Line)
    .filter((l) => l.msg === "activity");
}

const sum = (lines: Line[], pick: (l: Line) => number | undefined) =>
  lines.reduce((total, l) => total + (pick(l) ?? 0), 0);

const replicaLines = () => [1, 2, 3].flatMap((rank) => activityLines(gw.cluster.logPath(rank)));

/** Polls until check passes (the lines of the last interval come up to INTERVAL_MS later). */
async function eventually(check: () => void, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

beforeAll(async () => {
  const args = ["--activity-log-ms", String(INTERVAL_MS)];
  gw = await startGateway({ sectors: 1024, extraArgs: args, replicaArgs: args });
  c = await transmissionClient(gw);
  // A WRITE_PROC to a peer whose link is not up yet is dropped, and nothing resends it once the
  // write has its majority: only with every link up does every replica store every sector.
  await eventually(() => {
    for (const rank of [1, 2, 3]) {
      const up = readFileSync(gw.cluster.logPath(rank), "utf8")
        .split("\n")
        .filter((l) => l.includes('"msg":"peer link up"'));
      expect(up.length, `replica ${rank}'s links to both peers`).toBeGreaterThanOrEqual(2);
    }
  });
}, 60_000);

afterAll(async () => {
  c?.close();
  await gw?.stop();
});

describe("activity log", () => {
  it("counts each request, byte and error the client caused, at the gateway and at the replicas", async () => {
    for (let i = 0; i < 10; i++) {
      c.sendRequest(Command.Write, ++cookie, BigInt(i * S), S, Buffer.alloc(S, i + 1));
      expect(await c.simpleReply()).toMatchObject({ error: 0 });
    }
    c.sendRequest(Command.Write, ++cookie, BigInt(64 * S), 16 * S, Buffer.alloc(16 * S, 7));
    expect(await c.simpleReply()).toMatchObject({ error: 0 });
    for (let i = 0; i < 3; i++) {
      c.sendRequest(Command.Read, ++cookie, BigInt(i * 2 * S), 2 * S);
      expect((await c.simpleReply(2 * S)).error).toBe(0);
    }
    // Past the end of the volume: refused by the gateway, never sent to a replica.
    c.sendRequest(Command.Read, ++cookie, BigInt(1024 * S), S);
    expect((await c.simpleReply()).error).toBe(NbdErrno.EINVAL);

    await eventually(() => {
      const lines = activityLines(gw.logPath);
      expect(sum(lines, (l) => l.writes?.count)).toBe(11);
      expect(sum(lines, (l) => l.bytesWritten as number)).toBe(10 * S + 16 * S);
      expect(sum(lines, (l) => l.reads?.count)).toBe(4);
      expect(sum(lines, (l) => l.bytesRead as number)).toBe(3 * 2 * S);
      expect(
        sum(lines, (l) => (l.errorsByErrno as Record<string, number> | undefined)?.[NbdErrno.EINVAL]),
      ).toBe(1);
      // The replica commands behind them, by rank: 10 WRITEs, one 16-sector run and 3 reads.
      const byRank = lines.flatMap((l) =>
        Object.entries((l.replicas ?? {}) as Record<string, { count: number }>),
      );
      expect(byRank.every(([rank]) => ["1", "2", "3"].includes(rank))).toBe(true);
      expect(byRank.reduce((total, [, summary]) => total + summary.count, 0)).toBe(14);
    });
    await eventually(() => {
      const lines = replicaLines();
      // Each client command is coordinated by one replica: the sums over the replicas count each once.
      expect(sum(lines, (l) => l.sectorsWritten as number)).toBe(26);
      expect(sum(lines, (l) => l.writes?.count)).toBe(11);
      expect(sum(lines, (l) => l.sectorsRead as number)).toBe(6);
      expect(sum(lines, (l) => l.reads?.count)).toBe(3);
      // Every replica stores every written sector (a read's write-back may store some again).
      expect(sum(lines, (l) => l.sectorsPersisted as number)).toBeGreaterThanOrEqual(3 * 26);
    });
    for (const l of [...activityLines(gw.logPath), ...replicaLines()]) {
      expect(l.intervalMs).toBe(INTERVAL_MS);
      // Absent from the first busy interval's line (the monitor starts after it).
      const delay = l.eventLoopDelayMs as { p50: number; p99: number; max: number } | undefined;
      if (delay !== undefined) expect(delay.p50).toBeLessThanOrEqual(delay.max);
      for (const latency of [l.reads, l.writes]) {
        if (latency === undefined) continue;
        expect(latency.p50Ms).toBeGreaterThan(0);
        expect(latency.p50Ms).toBeLessThanOrEqual(latency.p99Ms);
        expect(latency.p99Ms).toBeLessThanOrEqual(latency.maxMs);
      }
    }
  }, 60_000);

  it("logs nothing for intervals in which nothing happened", async () => {
    // Whatever the last test left (a laggard's persist) is logged within a few intervals.
    await new Promise((resolve) => setTimeout(resolve, 5 * INTERVAL_MS));
    const gateway = activityLines(gw.logPath).length;
    const replicas = replicaLines().length;
    await new Promise((resolve) => setTimeout(resolve, 10 * INTERVAL_MS));
    expect(activityLines(gw.logPath).length).toBe(gateway);
    expect(replicaLines().length).toBe(replicas);
  }, 30_000);
});
