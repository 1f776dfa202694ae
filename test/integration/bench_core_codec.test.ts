import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

// The benchmark behind `make bench-core` runs the built cores and codec; this keeps it running
// (a broken effect loop throws: every round must complete all of its writes).
describe("bench-core", () => {
  it("completes every write of its rounds and prints a timing row per batch size", () => {
    const r = spawnSync(process.execPath, ["bench/core-codec.mjs", "1", "17"], {
      env: { ...process.env, WRITES: "300" },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout
      .trim()
      .split("\n")
      .slice(1)
      .map((line) => line.trim().split(/\s+/));
    expect(rows.map((row) => row[0])).toEqual(["1", "17"]);
    // Timings only need to be numbers here: which is larger is the benchmark's finding, not a test.
    for (const [, codec, bare] of rows) {
      expect(Number(codec)).toBeGreaterThan(0);
      expect(Number(bare)).toBeGreaterThan(0);
    }
  });
});
