import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadClusterConfig } from "../../src/cli/config.js";
import { CLI_MAIN, ensureBuilt } from "../helpers/cluster.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
beforeAll(() => ensureBuilt());

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "atomic-disk-cli-init-"));
  dirs.push(dir);
  return dir;
}

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI_MAIN, ...args], { encoding: "utf8", timeout: 30_000 });
}

describe("atomic-disk init", () => {
  it("writes a config that parses, with one address per replica and 1 GiB by default", () => {
    const out = join(tempDir(), "cluster.json");
    const result = cli([
      "init",
      "--replicas",
      "5",
      "--out",
      out,
      "--base-port",
      "9100",
      "--host",
      "10.0.0.7",
    ]);
    expect(result.status).toBe(0);
    const config = loadClusterConfig(out);
    expect(config.sectors).toBe(262_144);
    expect(config.replicas).toEqual(
      [9100, 9101, 9102, 9103, 9104].map((port) => ({ host: "10.0.0.7", port })),
    );
    expect(config.clientKey.length).toBe(32);
    expect(config.systemKey.length).toBe(64);
  });

  it("generates fresh keys on every run", () => {
    const dir = tempDir();
    expect(cli(["init", "--replicas", "3", "--out", join(dir, "a.json")]).status).toBe(0);
    expect(cli(["init", "--replicas", "3", "--out", join(dir, "b.json"), "--sectors", "1000"]).status).toBe(
      0,
    );
    const a = loadClusterConfig(join(dir, "a.json"));
    const b = loadClusterConfig(join(dir, "b.json"));
    expect(b.sectors).toBe(1000);
    expect(a.clientKey.equals(b.clientKey)).toBe(false);
    expect(a.systemKey.equals(b.systemKey)).toBe(false);
  });

  it("refuses to overwrite an existing file without --force, with one line on stderr and exit 1", () => {
    const out = join(tempDir(), "cluster.json");
    writeFileSync(out, "precious");
    const refused = cli(["init", "--replicas", "3", "--out", out]);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toContain("--force");
    expect(readFileSync(out, "utf8")).toBe("precious");
    expect(cli(["init", "--replicas", "3", "--out", out, "--force"]).status).toBe(0);
    expect(loadClusterConfig(out).replicas).toHaveLength(3);
  });

  it("rejects an impossible replica count with exit 1", () => {
    const result = cli(["init", "--replicas", "0", "--out", join(tempDir(), "c.json")]);
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("atomic-disk init --addresses", () => {
  it("writes the given replica addresses in rank order (one host per replica, as in docker compose)", () => {
    const out = join(tempDir(), "cluster.json");
    const result = cli(["init", "--addresses", "replica1:7001,replica2:7001,[::1]:7003", "--out", out]);
    expect(result.status).toBe(0);
    expect(loadClusterConfig(out).replicas).toEqual([
      { host: "replica1", port: 7001 },
      { host: "replica2", port: 7001 },
      { host: "::1", port: 7003 },
    ]);
  });

  it("rejects a malformed address with exit 1", () => {
    const result = cli(["init", "--addresses", "replica1:7001,nonsense", "--out", join(tempDir(), "c.json")]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("--addresses[1]");
  });
});
