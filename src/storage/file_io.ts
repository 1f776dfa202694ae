// The few file operations stable storage needs, behind an interface so that the same SlotStore
// runs over real files (node_file_io.ts) and over a simulated disk that can crash (memory_file_io.ts).
//
// Durability contract (what SlotStore relies on, and what MemoryFileSystem models):
// - `write`/`writev` change what later reads see at once, but survive a crash only after `datasync`
//   on the same file completed. Pending writes may reach the disk in any order, or partially.
// - `truncate` is durable after `datasync` on that file.
// - create (open with create), `rename` and `unlink` are durable after `fsyncDir` of the directory.

import * as path from "node:path";
import { AtomicDiskError, isAtomicDiskError } from "../util/errors.js";

export interface FileIo {
  /** Reads up to `length` bytes at `position`; returns how many were read (fewer only at end of file). */
  read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number>;
  /** Writes all `length` bytes at `position` (extending the file if needed). */
  write(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<void>;
  /** Writes the buffers back to back from `position`, all of them, as one operation. */
  writev(buffers: readonly Buffer[], position: number): Promise<void>;
  /**
   * Each region as one writev, in order, in a single call: for a batch of scattered writes, one
   * promise instead of one per region. Crash-wise it is those writevs (any of them may land
   * partially or not at all until a datasync); rejects on the first that fails.
   */
  writeRegions(regions: readonly WriteRegion[]): Promise<void>;
  /** Makes this file's content and size durable. */
  datasync(): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

/** Buffers written back to back from `position`. */
export interface WriteRegion {
  position: number;
  buffers: readonly Buffer[];
  /**
   * The region creates these pages of the file (nothing was ever written there): a real file
   * writes them in small calls, to keep their page-cache folios small (node_file_io.ts says why).
   * Same bytes either way.
   */
  newPages?: boolean;
}

export interface FileSystemIo {
  /** Opens a file for reading and writing; fails if it is missing and `create` is false. */
  open(path: string, options: { create: boolean }): Promise<FileIo>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Names (not paths) of the entries of a directory. */
  readdir(dir: string): Promise<string[]>;
  mkdirp(dir: string): Promise<void>;
  /** Makes the creations, renames and unlinks of entries in `dir` durable. */
  fsyncDir(dir: string): Promise<void>;
  exists(path: string): Promise<boolean>;
}

/** Reads until `length` bytes or end of file; returns how many were read. */
export async function readFully(
  file: FileIo,
  buffer: Buffer,
  bufferOffset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await file.read(buffer, bufferOffset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** A failed file operation as STORAGE_IO naming what was being done (typed errors pass through). */
export function ioError(what: string, cause: unknown): AtomicDiskError {
  if (isAtomicDiskError(cause)) return cause;
  return new AtomicDiskError("STORAGE_IO", `${what}: ${String(cause)}`, { cause });
}

/** Runs a file operation, its failure reported as ioError(what). */
export async function io<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw ioError(what, err);
  }
}

/**
 * Creates `dir/name` whole or not at all: written through `fill` as `tmpName` (replacing a
 * leftover one when `tmpExists`), synced, then renamed into place with the directory synced before
 * and after (the rename is the commit point). Failures surface as ioError(`create ${name}`).
 */
export function createFileAtomically(
  fs: FileSystemIo,
  dir: string,
  names: { name: string; tmpName: string; tmpExists: boolean },
  fill: (file: FileIo) => Promise<void>,
): Promise<void> {
  const at = (file: string) => path.join(dir, file);
  return io(`create ${names.name}`, async () => {
    if (names.tmpExists) await fs.unlink(at(names.tmpName));
    const file = await fs.open(at(names.tmpName), { create: true });
    try {
      await fill(file);
      await file.datasync();
    } finally {
      await file.close();
    }
    await fs.fsyncDir(dir);
    await fs.rename(at(names.tmpName), at(names.name));
    await fs.fsyncDir(dir);
  });
}

/** Durably removes the leftover `tmpName` of a creation that a crash interrupted. */
export async function removeLeftover(fs: FileSystemIo, dir: string, tmpName: string): Promise<void> {
  await io(`remove ${tmpName}`, () => fs.unlink(path.join(dir, tmpName)));
  await io("sync data directory", () => fs.fsyncDir(dir));
}
