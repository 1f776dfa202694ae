// FileSystemIo over node:fs.
//
// Writes are synchronous pwrite/pwritev calls. They only copy into the page cache (durability
// comes from datasync, which stays asynchronous: it waits for the disk), so they take
// microseconds, and doing them on the event loop thread is far cheaper than a thread-pool
// round trip per call. Measured with `bench-replicas` (random 4 KiB writes, three runs each):
// 7,098 against 5,982 durable writes/s, 218 against 263 µs of replica CPU per write (measured
// with the journal store this one replaced); a batch of scattered sectors makes up to a thousand
// small writes. So that a long run of writes (a big batch, a growth of the file) cannot hold the
// event loop, a write that finds SYNC_WRITE_SLICE_MS of synchronous writing since the loop last
// turned resolves only after the loop has had a turn (setImmediate).
// Pages a write creates (WriteRegion.newPages) are written in small calls. Linux (6.16+) gives ext4
// files large folios, sized by the write that creates them: a 1 MiB pwritev makes up to 1 MiB
// folios. Every later write into such a folio walks the buffer heads of the whole folio
// (ext4_block_write_begin, block_commit_write, and writeback's mpage_process_page_bufs), so a 4 KiB
// write into a 1 MiB folio costs far more than into a 4 KiB one, and scattered slot writes are what
// the sector store does under random writes. Measured on this VM's 6.18 kernel with `storage_bench
// --only scattered` (65536 sectors, two runs each), pages created by one writev per region (up to 4
// MiB) against in small calls: random persists after the fill 35.7k and 34.5k/s at 11.0 and 11.8 µs
// of system CPU each against 44.0k and 38.8k/s at 7.0 and 8.7 µs; the first sequential pass after
// them 6.6 and 6.7 against 4.3 and 5.7 µs of system CPU per sector; later sequential passes the
// same. Pages read into the cache from disk (after a reboot or an eviction) are sized by readahead,
// which Node cannot turn off (no posix_fadvise), and pages an eviction dropped are made again by
// whichever write comes first (every write in small calls would cost sequential overwrites ~15%:
// measured, not done).
// Reads, syncs and everything else go through the callback API: measured 5-8 µs per 4 KiB call
// with 64 in flight, against 11-13 µs through fs.promises FileHandle.
import * as fs from "node:fs";
import * as path from "node:path";
import { SYNC_WRITE_SLICE_MS } from "../util/limits.js";
import type { FileIo, FileSystemIo, WriteRegion } from "./file_io.js";

/**
 * Largest write that creates pages (WriteRegion.newPages): 4 pages, so folios of at most 4 pages,
 * whose buffer-head walks cost little, for a quarter of the calls of page-sized writes (appends
 * pay them). Sector store alone, random persists after sequential passes, two runs each: 4 KiB
 * 43k and 47k/s, 16 KiB 46k and 51k/s, 64 KiB 41k and 44k/s, one writev per region 28k and 30k/s.
 */
const NEW_PAGE_WRITE_BYTES = 16 * 1024;

/** Time spent in synchronous writes since the event loop last had a turn (see above). */
let syncWriteMs = 0;
let sliceResetScheduled = false;
const resetSlice = () => {
  syncWriteMs = 0;
  sliceResetScheduled = false;
};

/** Accounts one synchronous write; resolves at once, or after a loop turn once the slice is used. */
function afterSyncWrite(startedMs: number): Promise<void> {
  syncWriteMs += performance.now() - startedMs;
  if (!sliceResetScheduled) {
    sliceResetScheduled = true;
    setImmediate(resetSlice);
  }
  if (syncWriteMs < SYNC_WRITE_SLICE_MS) return Promise.resolve();
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * One pwrite; how many bytes it took. A regular file takes at least one byte or fails, so a write
 * that took none would make the callers' loops spin: it fails instead.
 */
function writeSomeSync(fd: number, buffer: Buffer, offset: number, length: number, position: number): number {
  const n = fs.writeSync(fd, buffer, offset, length, position);
  if (n <= 0)
    throw Object.assign(new Error(`pwrite of ${length} bytes at ${position} wrote nothing`), { code: "EIO" });
  return n;
}

function call<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, value) => (err ? reject(err) : resolve(value)));
  });
}

function callVoid(fn: (cb: (err: NodeJS.ErrnoException | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    fn((err) => (err ? reject(err) : resolve()));
  });
}

class NodeFile implements FileIo {
  constructor(private readonly fd: number) {}

  read(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<number> {
    return call<number>((cb) => fs.read(this.fd, buffer, bufferOffset, length, position, cb));
  }

  async write(buffer: Buffer, bufferOffset: number, length: number, position: number): Promise<void> {
    const startedMs = performance.now();
    let done = 0;
    while (done < length) {
      done += writeSomeSync(this.fd, buffer, bufferOffset + done, length - done, position + done);
    }
    await afterSyncWrite(startedMs);
  }

  async writev(buffers: readonly Buffer[], position: number): Promise<void> {
    const startedMs = performance.now();
    this.writevAllSync(buffers, position);
    await afterSyncWrite(startedMs);
  }

  async writeRegions(regions: readonly WriteRegion[]): Promise<void> {
    const startedMs = performance.now();
    for (const { buffers, position, newPages } of regions) {
      if (newPages === true) this.writePagesSync(buffers, position);
      else this.writevAllSync(buffers, position);
    }
    await afterSyncWrite(startedMs);
  }

  /** At most NEW_PAGE_WRITE_BYTES per call, so that the folios this creates stay small (see above). */
  private writePagesSync(buffers: readonly Buffer[], position: number): void {
    let at = position;
    // at: where b starts in the file.
    for (const b of buffers) {
      for (let off = 0; off < b.length; ) {
        // Up to the next NEW_PAGE_WRITE_BYTES boundary of the file.
        const n = Math.min(NEW_PAGE_WRITE_BYTES - ((at + off) % NEW_PAGE_WRITE_BYTES), b.length - off);
        off += writeSomeSync(this.fd, b, off, n, at + off);
      }
      at += b.length;
    }
  }

  private writevAllSync(buffers: readonly Buffer[], position: number): void {
    let total = 0;
    for (const b of buffers) total += b.length;
    const written = fs.writevSync(this.fd, buffers as Buffer[], position);
    if (written === total) return;
    // Short writev (rare: signals, full disk): finish with plain writes from where it stopped.
    let skip = written;
    let at = position + written;
    for (const b of buffers) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      for (let done = skip; done < b.length; )
        done += writeSomeSync(this.fd, b, done, b.length - done, at + done - skip);
      at += b.length - skip;
      skip = 0;
    }
  }

  datasync(): Promise<void> {
    return callVoid((cb) => fs.fdatasync(this.fd, cb));
  }

  async size(): Promise<number> {
    const st = await call<fs.Stats>((cb) => fs.fstat(this.fd, cb));
    return st.size;
  }

  truncate(length: number): Promise<void> {
    return callVoid((cb) => fs.ftruncate(this.fd, length, cb));
  }

  close(): Promise<void> {
    return callVoid((cb) => fs.close(this.fd, cb));
  }
}

export const nodeFileSystem: FileSystemIo = {
  async open(filePath, options) {
    const flags = fs.constants.O_RDWR | (options.create ? fs.constants.O_CREAT : 0);
    const fd = await call<number>((cb) => fs.open(filePath, flags, 0o644, cb));
    return new NodeFile(fd);
  },
  rename: (from, to) => fs.promises.rename(from, to),
  unlink: (filePath) => fs.promises.unlink(filePath),
  readdir: (dir) => fs.promises.readdir(dir),
  async mkdirp(dir) {
    await fs.promises.mkdir(dir, { recursive: true });
  },
  async fsyncDir(dir) {
    const fd = await call<number>((cb) => fs.open(path.resolve(dir), fs.constants.O_RDONLY, cb));
    try {
      await callVoid((cb) => fs.fsync(fd, cb));
    } finally {
      await callVoid((cb) => fs.close(fd, cb));
    }
  },
  async exists(filePath) {
    try {
      await fs.promises.access(filePath);
      return true;
    } catch {
      return false;
    }
  },
};
