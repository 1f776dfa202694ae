// Shared helpers of the storage tests (not a test file itself).

import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { pino } from "pino";
import type { FileIo, FileSystemIo } from "../../src/storage/file_io.js";
import { MemoryFileSystem } from "../../src/storage/memory_file_io.js";
import type { SectorState } from "../../src/storage/sector_state.js";
import { SECTOR_SIZE_BYTES } from "../../src/util/limits.js";
import { seededRandom } from "../helpers/seeded_random.js";

export const silentLogger = pino({ level: "silent" });

/** A recognizable state: version v of sector s (v = 0 is the never-written state). */
export function stateOf(sector: number, version: number): SectorState {
  if (version === 0) return { ts: 0n, wr: 0, data: Buffer.alloc(SECTOR_SIZE_BYTES) };
  const data = Buffer.alloc(SECTOR_SIZE_BYTES);
  const next = seededRandom(createHash("sha256").update(`${sector}/${version}`).digest().readUInt32BE(0));
  for (let at = 0; at < SECTOR_SIZE_BYTES; at += 4) data.writeUInt32BE(Math.floor(next() * 2 ** 32), at);
  return { ts: BigInt(version), wr: 1 + (version % 3), data };
}

export function sameState(a: SectorState, b: SectorState): boolean {
  return a.ts === b.ts && a.wr === b.wr && a.data.equals(b.data);
}

/** Which version of `sector` (0..maxVersion) `state` is, or -1 if it is none of them. */
export function versionOf(sector: number, state: SectorState, maxVersion: number): number {
  for (let v = 0; v <= maxVersion; v++) if (sameState(state, stateOf(sector, v))) return v;
  return -1;
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), "atomic-disk-storage-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export { seededRandom };

/**
 * A simulated disk that crashes at its `crashPoint`-th I/O operation (0: never). Completions mix
 * microtasks and macrotasks so concurrent operations complete out of order; one seeded random
 * source drives both that and the crash, so a case replays exactly. With `slowSyncs` a datasync
 * takes 1-3 event-loop turns (writes at most one), as on a real disk, so that persists issued over
 * a few turns find batches still syncing and the store pipelines them.
 */
export class CrashingDisk {
  readonly fs: MemoryFileSystem;
  operations = 0;
  crashPoint: number;
  #onCrash: () => void = () => {};

  constructor(options: { seed: number; tornWrites: boolean; crashAt: number; slowSyncs?: boolean }) {
    const random = seededRandom(options.seed);
    this.crashPoint = options.crashAt;
    const turns = (n: number, then: () => void) => {
      if (n === 0) then();
      else setImmediate(() => turns(n - 1, then));
    };
    this.fs = new MemoryFileSystem({
      schedule: (complete, op) => {
        this.operations++;
        if (this.operations === this.crashPoint) {
          this.fs.crash({ random, tornWrites: options.tornWrites });
          this.#onCrash();
          return;
        }
        if (options.slowSyncs === true && op.kind === "datasync")
          turns(1 + Math.floor(random() * 3), complete);
        else if (random() < 0.3) setImmediate(complete);
        else queueMicrotask(complete);
      },
    });
  }

  /** Resolves when the next crash happens. */
  nextCrash(): Promise<"crashed"> {
    return new Promise((resolve) => {
      this.#onCrash = () => resolve("crashed");
    });
  }
}

/** Resolves after `n` event-loop turns (persists issued across them meet batches in flight). */
export function turns(n = 1): Promise<void> {
  return new Promise((resolve) => {
    const step = (left: number) => (left === 0 ? resolve() : setImmediate(() => step(left - 1)));
    step(n);
  });
}

/**
 * `inner`, except that each file it opens has the methods `override(file)` returns in place of its
 * own (the rest pass through): a way to watch or delay one kind of file operation.
 */
export function overridingFiles(
  inner: FileSystemIo,
  override: (file: FileIo) => Partial<FileIo>,
): FileSystemIo {
  return {
    open: async (p, options) => {
      const file = await inner.open(p, options);
      return {
        read: (...args) => file.read(...args),
        write: (...args) => file.write(...args),
        writev: (...args) => file.writev(...args),
        writeRegions: (regions) => file.writeRegions(regions),
        datasync: () => file.datasync(),
        size: () => file.size(),
        truncate: (n) => file.truncate(n),
        close: () => file.close(),
        ...override(file),
      };
    },
    rename: (a, b) => inner.rename(a, b),
    unlink: (p) => inner.unlink(p),
    readdir: (d) => inner.readdir(d),
    mkdirp: (d) => inner.mkdirp(d),
    fsyncDir: (d) => inner.fsyncDir(d),
    exists: (p) => inner.exists(p),
  };
}
