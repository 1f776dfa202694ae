// `atomic-disk dev` as a user runs it (`make run`): the whole cluster comes up, and none of its
// child processes outlives it, however it ends (here: SIGKILL, which it cannot handle).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CLI_MAIN, ensureBuilt } from "../helpers/cluster.js";
import { freePort } from "../helpers/ports.js";

const START_TIMEOUT_MS = 30_000;
const CHILD_EXIT_TIMEOUT_MS = 15_000;
const POLL_MS = 50;

/** Pids whose parent is `ppid`, from /proc (field 4 of stat, after the parenthesised name). */
function childrenOf(ppid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === ppid) pids.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

/** True while the pid is a live process (not gone, not a zombie waiting to be reaped). */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function waitFor(what: string, timeoutMs: number, done: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

describe("atomic-disk dev", () => {
  let dir: string | undefined;
  let dev: ChildProcess | undefined;
  let started: number[] = [];

  afterEach(() => {
    // Whatever the outcome, nothing this test started keeps running.
    for (const pid of [...started, ...(dev?.pid !== undefined ? [dev.pid] : [])]) {
      if (isRunning(pid)) process.kill(pid, "SIGKILL");
    }
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
    dev = undefined;
    started = [];
  });

  it("its replicas and gateway stop by themselves when dev is killed with SIGKILL", async () => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), "atomic-disk-dev-"));
    const port = await freePort();
    dev = spawn(
      process.execPath,
      [CLI_MAIN, "dev", "--data", dir, "--listen", `127.0.0.1:${port}`, "--sectors", "1024"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    dev.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    dev.stderr!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const devPid = dev.pid!;
    await waitFor("dev to report the cluster running", START_TIMEOUT_MS, () => output.includes("running"));
    started = childrenOf(devPid);
    expect(started).toHaveLength(4);
    expect(started.every(isRunning)).toBe(true);

    process.kill(devPid, "SIGKILL");
    await waitFor("every child of the killed dev to exit", CHILD_EXIT_TIMEOUT_MS, () =>
      started.every((pid) => !isRunning(pid)),
    );
    // They stopped cleanly (each logs its stop), not by some other death.
    const logs = readdirSync(dir)
      .filter((name) => name.endsWith(".log"))
      .map((name) => readFileSync(join(dir!, name), "utf8"));
    expect(logs).toHaveLength(4);
    for (const log of logs) expect(log).toContain("parent exited");
  });
});
