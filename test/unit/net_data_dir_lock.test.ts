import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LOCK_FILE_NAME, lockDataDir } from "../../src/net/data_dir_lock.js";
import { isAtomicDiskError } from "../../src/util/errors.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "atomic-disk-lock-"));
  dirs.push(dir);
  return dir;
}

/** A pid that belonged to a process which has exited. */
function deadPid(): number {
  const result = spawnSync(process.execPath, ["-e", "console.log(process.pid)"], { encoding: "utf8" });
  return Number(result.stdout.trim());
}

describe("data dir lock", () => {
  it("writes the owner's pid and removes the lock on release", () => {
    const dir = tempDir();
    const lock = lockDataDir(dir);
    expect(readFileSync(join(dir, LOCK_FILE_NAME), "utf8").trim()).toBe(String(process.pid));
    lock.release();
    expect(existsSync(join(dir, LOCK_FILE_NAME))).toBe(false);
  });

  it("refuses a directory locked by a live process", () => {
    const dir = tempDir();
    // pid 1 is always alive and is never this test process.
    writeFileSync(join(dir, LOCK_FILE_NAME), "1\n");
    let err: unknown;
    try {
      lockDataDir(dir);
    } catch (e) {
      err = e;
    }
    expect(isAtomicDiskError(err, "DATA_DIR_UNUSABLE")).toBe(true);
    expect((err as Error).message).toContain("in use by pid 1");
  });

  it("takes over a lock left by a dead process", () => {
    const dir = tempDir();
    writeFileSync(join(dir, LOCK_FILE_NAME), `${deadPid()}\n`);
    const lock = lockDataDir(dir);
    expect(readFileSync(join(dir, LOCK_FILE_NAME), "utf8").trim()).toBe(String(process.pid));
    lock.release();
  });

  it("takes over a lock holding its own pid (a restarted container reuses pids)", () => {
    const dir = tempDir();
    writeFileSync(join(dir, LOCK_FILE_NAME), `${process.pid}\n`);
    lockDataDir(dir).release();
  });

  it("rejects a data dir that is not a writable directory", () => {
    const dir = tempDir();
    const file = join(dir, "plain-file");
    writeFileSync(file, "x");
    let err: unknown;
    try {
      lockDataDir(file);
    } catch (e) {
      err = e;
    }
    expect(isAtomicDiskError(err, "DATA_DIR_UNUSABLE")).toBe(true);
  });
});
