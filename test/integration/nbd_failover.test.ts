// Replica failures under a live gateway: I/O goes on while a majority is up; without a majority a
// request fails with EIO after --timeout-ms instead of hanging, the connection stays usable, and
// requests complete again once a replica returns.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import {
  CLIENT_ENV,
  type Gateway,
  PROBE_DIR,
  PYTHON,
  run,
  runAsync,
  startGateway,
  which,
} from "./nbd_gateway.js";

let gw: Gateway | undefined;

afterEach(async () => {
  await gw?.stop();
  gw = undefined;
});

function fioVerify(
  uri: string,
  sizeMiB: number,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return runAsync(
    "fio",
    [
      "--name=failover",
      "--ioengine=nbd",
      `--uri=${uri}`,
      "--rw=randwrite",
      "--bs=4k",
      "--iodepth=32",
      `--size=${sizeMiB}M`,
      "--verify=crc32c",
      "--do_verify=1",
      "--verify_state_save=0",
      "--output-format=json",
    ],
    150_000,
  );
}

/**
 * Resolves once a write on a new connection succeeds: the replica that came back is reachable from
 * the gateway and from its peers again. Their reconnect backoff (RECONNECT_MAX_MS) can exceed a
 * short --timeout-ms, so a request sent the moment the process is up may still time out.
 */
async function untilWritable(uri: string, deadlineMs: number): Promise<void> {
  const script =
    "import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nh.pwrite(b'r' * 4096, 1 << 20)\nh.shutdown()";
  const until = Date.now() + deadlineMs;
  for (;;) {
    const run = await runAsync(PYTHON, ["-c", script, uri], 20_000);
    if (run.status === 0) return;
    if (Date.now() > until) throw new Error(`no write succeeded within ${deadlineMs} ms: ${run.stderr}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function fioErrors(stdout: string): number {
  const json = JSON.parse(stdout.slice(stdout.indexOf("{")));
  return json.jobs[0].error as number;
}

describe("nbd gateway replica failover", () => {
  it("keeps serving fio with verify while one replica is killed, and after it returns another one", async () => {
    gw = await startGateway({ sectors: 8192 });
    let finished = 0;
    const first = fioVerify(gw.uri, 12).finally(() => finished++);
    await new Promise((r) => setTimeout(r, 1000));
    await gw.cluster.kill(1);
    expect(finished, "the kill must land while fio is running").toBe(0);
    const r1 = await first;
    expect(r1.status, r1.stderr).toBe(0);
    expect(fioErrors(r1.stdout)).toBe(0);

    // Rank 1 comes back with its disk; the gateway reconnects. Now a different replica dies.
    await gw.cluster.start(1);
    await new Promise((r) => setTimeout(r, 500));
    const second = fioVerify(gw.uri, 12).finally(() => finished++);
    await new Promise((r) => setTimeout(r, 1000));
    await gw.cluster.kill(3);
    expect(finished).toBe(1);
    const r2 = await second;
    expect(r2.status, r2.stderr).toBe(0);
    expect(fioErrors(r2.stdout)).toBe(0);
  }, 200_000);

  it("fails requests with EIO after --timeout-ms without a majority, then recovers on the same connection", async () => {
    gw = await startGateway({ sectors: 8192, timeoutMs: 2000 });
    const child = spawn(PYTHON, [`${PROBE_DIR}/nbd_quorum_loss.py`, gw.uri], {
      env: CLIENT_ENV,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const nextLine = async () => {
      const r = await lines.next();
      if (r.done) throw new Error(`probe ended early: ${stderr}`);
      return r.value;
    };
    try {
      expect(await nextLine()).toBe("written");
      await gw.cluster.kill(2);
      await gw.cluster.kill(3);
      child.stdin.write("go\n");
      const failed = (await nextLine()).split(" ");
      expect(failed.slice(0, 3)).toEqual(["failed", "EIO", "EIO"]);
      // Two requests, each bounded by the 2 s timeout (plus slack for a loaded machine).
      expect(Number(failed[3])).toBeLessThan(15);
      await gw.cluster.start(2);
      await untilWritable(gw.uri, 30_000);
      child.stdin.write("go\n");
      expect(await nextLine()).toBe("recovered");
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  }, 120_000);
});

const canMountTmpfs = process.getuid?.() === 0 && which("mount") && which("umount") && which("qemu-io");

/** Resolves once process `pid` is gone, or rejects after `ms`. */
async function exited(pid: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (Date.now() > until) throw new Error(`process ${pid} still runs after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(!canMountTmpfs)("a replica whose data disk fills up (needs root to mount a tmpfs)", () => {
  it("stops with ENOSPC while the other two take every write and read it back", async () => {
    gw = await startGateway({ sectors: 16_384 });
    const { cluster } = gw;
    // Replica 1 starts over on a 6 MiB disk before anything is written (so it misses nothing).
    await cluster.kill(1);
    const dataDir = cluster.dataDir(1);
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir);
    expect(run("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", dataDir]).status).toBe(0);
    try {
      await cluster.start(1);
      const pid = cluster.pid(1)!;
      const write = await runAsync("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 0 32M", gw.uri], 120_000);
      expect(write.stdout).toContain("wrote 33554432/33554432 bytes");
      expect(write.stdout + write.stderr).not.toMatch(/failed/i);
      await exited(pid, 30_000);
      expect(readFileSync(cluster.logPath(1), "utf8")).toContain("ENOSPC");
      const read = await runAsync("qemu-io", ["-f", "raw", "-c", "read -P 0x5a 0 32M", gw.uri], 120_000);
      expect(read.stdout).toContain("read 33554432/33554432 bytes");
      expect(read.stdout + read.stderr).not.toMatch(/failed/i);
    } finally {
      await cluster.kill(1);
      run("umount", [dataDir]);
    }
  });
});
