// A simulated disk for FileSystemIo: the simulator and the crash tests run the real SlotStore
// over it, and can crash it at any instant.
//
// Model (deliberately as weak as a real disk, so that code correct here is correct there):
// - Every file (inode) has durable content and a list of pending operations (completed writes and
//   truncates not yet synced). Reads see the latest content. `datasync` makes durable the pending
//   operations of that file that had completed when the sync was issued.
// - Creations, renames and unlinks are pending until `fsyncDir` of a directory they touch; that
//   makes them durable together with every earlier one (metadata journals commit in order). A crash
//   keeps a random prefix of the pending ones. Syncing a file never makes its name durable.
// - Directories made by `mkdirp` are durable at once.
// - `crash()` discards what was not durable: each pending file operation independently reached the
//   disk or not (disks reorder), and with `tornWrites` a write that reached it may have landed
//   partially, 512-byte block by block.
// - Every operation completes through `schedule` (default: on a microtask), and its effect happens
//   when it completes. Operations of handles opened before a crash, and operations that had not
//   completed when it happened, never complete: that incarnation is dead. File-system-level calls
//   made after a crash are taken to come from the new incarnation.
import * as path from "node:path";
import { assert } from "../util/assert.js";
import type { FileIo, FileSystemIo, WriteRegion } from "./file_io.js";

/** Torn writes land in units of this many bytes, aligned (the classic disk sector). */
const TORN_WRITE_UNIT_BYTES = 512;

export type MemoryIoKind =
  | "open"
  | "read"
  | "write"
  | "datasync"
  | "size"
  | "truncate"
  | "close"
  | "rename"
  | "unlink"
  | "readdir"
  | "mkdirp"
  | "fsyncDir"
  | "exists";

export interface MemoryIoOp {
  kind: MemoryIoKind;
  path: string;
  position?: number;
  length?: number;
}

export interface MemoryFileSystemOptions {
  /** Decides when each operation completes: call `complete` (at most once) to let it happen. */
  schedule?: (complete: () => void, op: MemoryIoOp) => void;
  /** Returning an error makes that operation fail without effect (fault injection). */
  injectFault?: (op: MemoryIoOp) => Error | undefined;
}

export interface CrashOptions {
  /** Uniform in [0, 1): decides which pending operations survived. */
  random: () => number;
  tornWrites?: boolean;
}

type PendingFileOp =
  | { kind: "write"; seq: number; position: number; data: Buffer }
  | { kind: "truncate"; seq: number; length: number };

type PendingNameOp =
  | { kind: "link"; path: string; inode: Inode }
  | { kind: "unlink"; path: string }
  | { kind: "rename"; from: string; to: string };

class Inode {
  /** Latest content; only the first `size` bytes are meaningful. */
  content: Buffer = Buffer.alloc(0);
  size = 0;
  durable: Buffer = Buffer.alloc(0);
  pending: PendingFileOp[] = [];

  resize(length: number): void {
    if (length > this.content.length) {
      const grown = Buffer.alloc(Math.max(length, this.content.length * 2));
      this.content.copy(grown, 0, 0, this.size);
      this.content = grown;
    } else if (length < this.size) {
      this.content.fill(0, length, this.size);
    }
    this.size = length;
  }

  writeAt(data: Buffer, position: number): void {
    if (position + data.length > this.size) this.resize(position + data.length);
    data.copy(this.content, position);
  }

  resetToDurable(): void {
    this.content = Buffer.from(this.durable);
    this.size = this.durable.length;
    this.pending = [];
  }
}

function applyToBuffer(base: Buffer, op: PendingFileOp, blockFilter?: (block: number) => boolean): Buffer {
  if (op.kind === "truncate") {
    const out = Buffer.alloc(op.length);
    base.copy(out, 0, 0, Math.min(op.length, base.length));
    return out;
  }
  const end = op.position + op.data.length;
  const out = end > base.length ? Buffer.alloc(end) : base;
  if (out !== base) base.copy(out);
  if (blockFilter === undefined) {
    op.data.copy(out, op.position);
    return out;
  }
  // Torn write: each aligned block of the write independently landed or not.
  let at = op.position;
  while (at < end) {
    const blockEnd = Math.min(end, (Math.floor(at / TORN_WRITE_UNIT_BYTES) + 1) * TORN_WRITE_UNIT_BYTES);
    if (blockFilter(Math.floor(at / TORN_WRITE_UNIT_BYTES))) {
      op.data.copy(out, at, at - op.position, blockEnd - op.position);
    }
    at = blockEnd;
  }
  return out;
}

function fsError(code: string, message: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`${code}: ${message}`);
  err.code = code;
  return err;
}

function normalize(p: string): string {
  return path.posix.normalize(p).replace(/\/+$/, "") || "/";
}

class MemoryFile implements FileIo {
  private closed = false;

  constructor(
    private readonly fs: MemoryFileSystem,
    private readonly inode: Inode,
    private readonly filePath: string,
    private readonly generation: number,
  ) {}

  private op<T>(kind: MemoryIoKind, effect: () => T, position?: number, length?: number): Promise<T> {
    const op: MemoryIoOp = { kind, path: this.filePath };
    if (position !== undefined) op.position = position;
    if (length !== undefined) op.length = length;
    return this.fs.run(op, this.generation, () => {
      if (this.closed) throw fsError("EBADF", `${kind} on closed file ${this.filePath}`);
      return effect();
    });
  }

  read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    assert(bufferOffset + length <= buffer.length, "read past the end of the buffer");
    return this.op(
      "read",
      () => {
        const end = Math.min(this.inode.size, position + length);
        if (end <= position) return 0;
        this.inode.content.copy(buffer, bufferOffset, position, end);
        return end - position;
      },
      position,
      length,
    );
  }

  write(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<void> {
    assert(bufferOffset + length <= buffer.length, "write past the end of the buffer");
    // Copy now: the caller may reuse its buffer once the call returns a promise.
    const data = Buffer.from(buffer.subarray(bufferOffset, bufferOffset + length));
    return this.op("write", () => this.applyWrite(data, position), position, length);
  }

  writev(buffers: readonly Buffer[], position: number): Promise<void> {
    const data = Buffer.concat(buffers);
    return this.op("write", () => this.applyWrite(data, position), position, data.length);
  }

  /** One simulated operation per region, as separate writevs would be (crash and fault points). */
  async writeRegions(regions: readonly WriteRegion[]): Promise<void> {
    await Promise.all(regions.map(({ buffers, position }) => this.writev(buffers, position)));
  }

  private applyWrite(data: Buffer, position: number): void {
    this.inode.writeAt(data, position);
    this.inode.pending.push({ kind: "write", seq: this.fs.nextSeq(), position, data });
  }

  datasync(): Promise<void> {
    // Only what had completed when the sync was issued is covered by it.
    const coveredSeq = this.fs.currentSeq();
    return this.op("datasync", () => {
      const inode = this.inode;
      const rest: PendingFileOp[] = [];
      for (const p of inode.pending) {
        if (p.seq <= coveredSeq) inode.durable = applyToBuffer(inode.durable, p);
        else rest.push(p);
      }
      inode.pending = rest;
    });
  }

  size(): Promise<number> {
    return this.op("size", () => this.inode.size);
  }

  truncate(length: number): Promise<void> {
    return this.op(
      "truncate",
      () => {
        this.inode.resize(length);
        this.inode.pending.push({ kind: "truncate", seq: this.fs.nextSeq(), length });
      },
      undefined,
      length,
    );
  }

  close(): Promise<void> {
    return this.op("close", () => {
      this.closed = true;
    });
  }
}

export class MemoryFileSystem implements FileSystemIo {
  private readonly schedule: (complete: () => void, op: MemoryIoOp) => void;
  private readonly injectFault: ((op: MemoryIoOp) => Error | undefined) | undefined;
  private names = new Map<string, Inode>();
  private durableNames = new Map<string, Inode>();
  private pendingNames: PendingNameOp[] = [];
  private readonly dirs = new Set<string>(["/"]);
  private generation = 0;
  private seq = 0;
  private issued = 0;

  constructor(options: MemoryFileSystemOptions = {}) {
    this.schedule = options.schedule ?? ((complete) => queueMicrotask(complete));
    this.injectFault = options.injectFault;
  }

  /** Operations issued so far (all kinds, all incarnations). */
  get operationCount(): number {
    return this.issued;
  }

  /** Incremented by every crash. */
  get crashCount(): number {
    return this.generation;
  }

  nextSeq(): number {
    return ++this.seq;
  }

  currentSeq(): number {
    return this.seq;
  }

  /** Runs one operation through the scheduler. Internal to this module (used by MemoryFile). */
  run<T>(op: MemoryIoOp, generation: number, effect: () => T): Promise<T> {
    if (generation !== this.generation) return new Promise<T>(() => {});
    this.issued++;
    return new Promise<T>((resolve, reject) => {
      let completed = false;
      this.schedule(() => {
        assert(!completed, "an I/O operation was completed twice");
        completed = true;
        if (generation !== this.generation) return;
        const fault = this.injectFault?.(op);
        if (fault !== undefined) {
          reject(fault);
          return;
        }
        try {
          resolve(effect());
        } catch (err) {
          reject(err);
        }
      }, op);
    });
  }

  private fsOp<T>(kind: MemoryIoKind, p: string, effect: () => T): Promise<T> {
    return this.run({ kind, path: p }, this.generation, effect);
  }

  open(filePath: string, options: { create: boolean }): Promise<FileIo> {
    const p = normalize(filePath);
    const generation = this.generation;
    return this.fsOp("open", p, () => {
      let inode = this.names.get(p);
      if (inode === undefined) {
        if (!options.create) throw fsError("ENOENT", `no such file ${p}`);
        if (!this.dirs.has(path.posix.dirname(p))) throw fsError("ENOENT", `no such directory for ${p}`);
        inode = new Inode();
        this.names.set(p, inode);
        this.pendingNames.push({ kind: "link", path: p, inode });
      }
      return new MemoryFile(this, inode, p, generation);
    });
  }

  rename(from: string, to: string): Promise<void> {
    const f = normalize(from);
    const t = normalize(to);
    return this.fsOp("rename", f, () => {
      const inode = this.names.get(f);
      if (inode === undefined) throw fsError("ENOENT", `no such file ${f}`);
      this.names.delete(f);
      this.names.set(t, inode);
      this.pendingNames.push({ kind: "rename", from: f, to: t });
    });
  }

  unlink(filePath: string): Promise<void> {
    const p = normalize(filePath);
    return this.fsOp("unlink", p, () => {
      if (!this.names.delete(p)) throw fsError("ENOENT", `no such file ${p}`);
      this.pendingNames.push({ kind: "unlink", path: p });
    });
  }

  readdir(dir: string): Promise<string[]> {
    const d = normalize(dir);
    return this.fsOp("readdir", d, () => {
      if (!this.dirs.has(d)) throw fsError("ENOENT", `no such directory ${d}`);
      return this.namesIn(d);
    });
  }

  mkdirp(dir: string): Promise<void> {
    const d = normalize(dir);
    return this.fsOp("mkdirp", d, () => {
      for (let p = d; !this.dirs.has(p); p = path.posix.dirname(p)) this.dirs.add(p);
    });
  }

  fsyncDir(dir: string): Promise<void> {
    const d = normalize(dir);
    return this.fsOp("fsyncDir", d, () => {
      let last = -1;
      this.pendingNames.forEach((op, i) => {
        const touched = op.kind === "rename" ? [op.from, op.to] : [op.path];
        if (touched.some((p) => path.posix.dirname(p) === d)) last = i;
      });
      for (const op of this.pendingNames.slice(0, last + 1)) this.applyNameOp(this.durableNames, op);
      this.pendingNames = this.pendingNames.slice(last + 1);
    });
  }

  exists(filePath: string): Promise<boolean> {
    const p = normalize(filePath);
    return this.fsOp("exists", p, () => this.names.has(p) || this.dirs.has(p));
  }

  private applyNameOp(names: Map<string, Inode>, op: PendingNameOp): void {
    if (op.kind === "link") names.set(op.path, op.inode);
    else if (op.kind === "unlink") names.delete(op.path);
    else {
      const inode = names.get(op.from);
      if (inode === undefined) return;
      names.delete(op.from);
      names.set(op.to, inode);
    }
  }

  /**
   * Power loss: keeps what was durable plus a random subset of what was pending (see the module
   * comment). Everything in flight and every open handle of the old incarnation is dead.
   */
  crash(options: CrashOptions): void {
    const { random, tornWrites = false } = options;
    const keptNames = Math.floor(random() * (this.pendingNames.length + 1));
    for (const op of this.pendingNames.slice(0, keptNames)) this.applyNameOp(this.durableNames, op);
    this.pendingNames = [];
    const inodes = new Set<Inode>([...this.names.values(), ...this.durableNames.values()]);
    for (const inode of inodes) {
      for (const op of inode.pending) {
        if (random() < 0.5) continue;
        const torn = tornWrites && op.kind === "write" && random() < 0.5;
        inode.durable = applyToBuffer(inode.durable, op, torn ? () => random() < 0.5 : undefined);
      }
      inode.resetToDurable();
    }
    this.names = new Map(this.durableNames);
    this.generation++;
  }

  /** Test helper: XORs `length` bytes at `position` with 0xff, in both latest and durable content. */
  corrupt(filePath: string, position: number, length: number): void {
    const inode = this.names.get(normalize(filePath));
    assert(inode !== undefined, `corrupt: no such file ${filePath}`);
    for (let i = position; i < position + length; i++) {
      if (i < inode.size) inode.content[i] = (inode.content[i] ?? 0) ^ 0xff;
      if (i < inode.durable.length) inode.durable[i] = (inode.durable[i] ?? 0) ^ 0xff;
    }
  }

  /** Test helper: paths of all files (latest view), sorted. */
  listFiles(): string[] {
    return [...this.names.keys()].sort();
  }

  /** Test helper: size of a file in the latest view, or undefined if it does not exist. */
  fileSize(filePath: string): number | undefined {
    return this.names.get(normalize(filePath))?.size;
  }

  /** Test helper: total bytes of the files directly in `dir` (latest view). */
  totalBytes(dir: string): number {
    const d = normalize(dir);
    let total = 0;
    for (const [p, inode] of this.names) if (path.posix.dirname(p) === d) total += inode.size;
    return total;
  }

  private namesIn(dir: string): string[] {
    const out: string[] = [];
    for (const p of this.names.keys()) if (path.posix.dirname(p) === dir) out.push(path.posix.basename(p));
    for (const p of this.dirs)
      if (p !== dir && path.posix.dirname(p) === dir) out.push(path.posix.basename(p));
    return out.sort();
  }
}
