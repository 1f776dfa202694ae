// `atomic-disk dev` as `make run` uses it: whole cluster up, reachable over NBD, and gone after
// SIGTERM (children stopped cleanly: their data-dir locks are released).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadClusterConfig } from "../../src/cli/config.js";
import { LOCK_FILE_NAME } from "../../src/net/data_dir_lock.js";
import { CLI_MAIN, ensureBuilt, waitExit, waitListening } from "../helpers/cluster.js";
import { freePort } from "../helpers/ports.js";

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await waitExit(child);
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
beforeAll(() => ensureBuilt());

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "atomic-disk-cli-dev-"));
  dirs.push(dir);
  return dir;
}

/** Resolves with the child's stdout once it contains `text` (bounded by timeoutMs). */
function waitForOutput(child: ChildProcess, text: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(
      () => reject(new Error(`no "${text}" within ${timeoutMs} ms; got: ${out}`)),
      timeoutMs,
    );
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes(text)) {
        clearTimeout(timer);
        resolve(out);
      }
    });
    child.once("exit", () => {
      clearTimeout(timer);
      reject(new Error(`dev exited early: ${out}`));
    });
  });
}

describe("atomic-disk dev", () => {
  it("runs replicas and the NBD gateway, prints how to connect, and stops them all on SIGTERM", async () => {
    const dir = tempDir();
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [CLI_MAIN, "dev", "--data", dir, "--listen", `127.0.0.1:${port}`, "--sectors", "2048"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    children.push(child);
    const out = await waitForOutput(child, "nbd-client", 30_000);
    expect(out).toContain(`nbdinfo nbd://127.0.0.1:${port}`);
    expect(out).toContain(`nbd-client 127.0.0.1 ${port} /dev/nbd0 -b 4096`);
    const config = loadClusterConfig(join(dir, "cluster.json"));
    expect(config.replicas).toHaveLength(3);
    expect(config.sectors).toBe(2048);
    await waitListening({ host: "127.0.0.1", port }, 5_000);
    if (existsSync("/usr/bin/nbdinfo")) {
      const info = spawnSync("/usr/bin/nbdinfo", ["--size", `nbd://127.0.0.1:${port}`], {
        encoding: "utf8",
        timeout: 20_000,
      });
      expect(info.stdout.trim()).toBe(String(2048 * 4096));
    }
    for (let rank = 1; rank <= 3; rank++)
      expect(existsSync(join(dir, `replica-${rank}`, LOCK_FILE_NAME))).toBe(true);

    child.kill("SIGTERM");
    await waitExit(child);
    expect(child.exitCode).toBe(0);
    // Each replica released its lock: it was stopped, and stopped cleanly.
    for (let rank = 1; rank <= 3; rank++)
      expect(existsSync(join(dir, `replica-${rank}`, LOCK_FILE_NAME))).toBe(false);
  });

  it("fails with one line and exit 1 when its data dir cannot be created", () => {
    const dir = tempDir();
    const file = join(dir, "plain-file");
    writeFileSync(file, "x");
    const result = spawnSync(process.execPath, [CLI_MAIN, "dev", "--data", join(file, "sub")], {
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/^atomic-disk: /);
  });
});
