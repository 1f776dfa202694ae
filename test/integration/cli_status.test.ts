// `atomic-disk status` against a real 3-replica cluster: who is up and serving, how many sectors
// each holds (a replica that was down during writes holds fewer), and exit code 2 once fewer than
// a majority serve.
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClusterStatus } from "../../src/cli/cmd_status.js";
import { ReplicaConnection } from "../../src/client/replica_connection.js";
import { CLI_MAIN, startCluster, type TestCluster } from "../helpers/cluster.js";
import { runAsync } from "./nbd_gateway.js";

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster({ replicas: 3, sectors: 100_000 });
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
  if (cluster !== undefined) rmSync(cluster.dir, { recursive: true, force: true });
});

async function status(...extra: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runAsync(process.execPath, [CLI_MAIN, "status", "--config", cluster.configPath, ...extra]);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function statusJson(...extra: string[]): Promise<{ code: number | null; status: ClusterStatus }> {
  const r = await status("--json", ...extra);
  return { code: r.code, status: JSON.parse(r.stdout) as ClusterStatus };
}

async function writeThrough(rank: number, sectors: number[]): Promise<void> {
  const { host, port } = cluster.addresses[rank - 1]!;
  const c = await ReplicaConnection.connect({ host, port, clientKey: cluster.config.clientKey });
  try {
    for (const s of sectors) await c.write(s, Buffer.alloc(4096, s & 0xff));
  } finally {
    c.close();
  }
}

describe("atomic-disk status", () => {
  it("reports every replica serving, with the sectors each holds, and exits 0", async () => {
    await writeThrough(1, [0, 1, 99_999]);
    const r = await status("--held");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("3 of 3 replicas serving: the volume is available");
    expect(r.stdout).not.toContain('"msg"'); // no log lines mixed into the report
    const { code, status: s } = await statusJson("--held");
    expect(code).toBe(0);
    expect(s).toMatchObject({ sectors: 100_000, majority: 2, serving: 3, available: true });
    // An acknowledged write is held by a majority (the third copy may have been dropped, say while
    // a peer link was still connecting, and a register has no anti-entropy to bring it later).
    expect(s.replicas.filter((x) => x.heldSectors === 3).length).toBeGreaterThanOrEqual(2);
    for (const x of s.replicas) expect(x.heldSectors).toBeLessThanOrEqual(3);
    for (const x of s.replicas) expect(x.readMs).toBeGreaterThan(0);
  });

  it("shows a replica that was down during writes holding fewer sectors, and one that is down as down", async () => {
    const before = (await statusJson("--held")).status.replicas.map((x) => x.heldSectors!);
    await cluster.kill(3);
    await writeThrough(1, [10, 11, 12, 13]);
    const { code, status: s } = await statusJson("--held");
    expect(code).toBe(0);
    // With 3 down, each write's majority was 1 and 2: both hold all four.
    expect(s.replicas.map((x) => [x.rank, x.up, x.serving, x.heldSectors])).toEqual([
      [1, true, true, before[0]! + 4],
      [2, true, true, before[1]! + 4],
      [3, false, false, undefined],
    ]);
    expect(s.replicas[2]!.error).toContain("ECONNREFUSED");
    await cluster.start(3);
    const back = await statusJson("--held");
    expect(back.status.replicas.map((x) => x.heldSectors)).toEqual([
      before[0]! + 4,
      before[1]! + 4,
      before[2],
    ]);
  }, 60_000);

  it("exits 2 once fewer than a majority serve: the one left is up but its READ cannot complete", async () => {
    await cluster.kill(2);
    await cluster.kill(3);
    try {
      const { code, status: s } = await statusJson("--timeout-ms", "800");
      expect(code).toBe(2);
      expect(s).toMatchObject({ serving: 0, available: false });
      expect(s.replicas[0]).toMatchObject({ rank: 1, up: true, serving: false });
      const text = await status("--timeout-ms", "800");
      expect(text.code).toBe(2);
      expect(text.stdout).toContain("fewer than a majority, the volume is NOT available");
    } finally {
      await cluster.start(2);
      await cluster.start(3);
    }
  }, 60_000);
});
