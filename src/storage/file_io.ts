// The few file operations stable storage needs, behind an interface so that the same SlotStore
// runs over real files (node_file_io.ts) and over a simulated disk that can crash (memory_file_io.ts).
//
// Durability contract (what SlotStore relies on, and what MemoryFileSystem models):
// - `write`/`writev` change what later reads see at once, but survive a crash only after `datasync`
//   on the same file completed. Pending writes may reach the disk in any order, or partially.
// - `truncate` is durable after `datasync` on that file.
// - create (open with create), `rename` and `unlink` are durable after `fsyncDir` of the directory.

import { AtomicDiskError, isAtomicDiskError } from "../util/errors.js";

export interface FileIo {
  /** Reads up to `length` bytes at `position`; returns how many were read (fewer only at end of file). */
  read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number>;
  /** Writes all `length` bytes at `position` (extending the file if needed). */
  write(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<void>;
  /** Writes the buffers back to back from `position`, all of them, as one operation. */
  writev(buffers: readonly Buffer[], position: number): Promise<void>;
  /** Makes this file's content and size durable. */
  datasync(): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
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
