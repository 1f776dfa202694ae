// The gateway's NBD protocol layers against an in-memory backend, byte by byte.

import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { Command, NbdErrno, Option, OptionReply } from "../../src/nbd/constants.js";
import { MemoryBackend } from "../../src/nbd/memory_backend.js";
import type { SectorBackend } from "../../src/nbd/sector_backend.js";
import { NbdServer, type NbdServerOptions } from "../../src/nbd/server.js";
import { bitmapBytes } from "../../src/protocol/layouts.js";
import {
  NBD_ABSURD_PAYLOAD_BYTES,
  NBD_MAX_INFLIGHT_BYTES_PER_CONNECTION,
  NBD_MAX_INFLIGHT_REQUESTS_PER_CONNECTION,
  NBD_MAX_OPTION_BYTES,
  NBD_MAX_PAYLOAD_BYTES,
  SECTOR_SIZE_BYTES,
} from "../../src/util/limits.js";
import { RawClient } from "./nbd_raw_client.js";

const silent = pino({ level: "silent" });
const servers: NbdServer[] = [];
const clients: RawClient[] = [];

/** A server for export "disk" on a free port, with a 10 s request timeout unless `options` say otherwise. */
async function startServer(
  backend: SectorBackend,
  options: Pick<NbdServerOptions, "timeoutMs" | "handshakeTimeoutMs" | "maxInflightSectors"> = {},
): Promise<number> {
  const server = await NbdServer.start({
    backend,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    exportName: "disk",
    timeoutMs: 10_000,
    ...options,
    log: silent,
  });
  servers.push(server);
  const a = server.address();
  if (a.kind !== "tcp") throw new Error("tcp expected");
  return a.port;
}

async function client(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  clients.push(c);
  return c;
}

async function transmitting(port: number): Promise<RawClient> {
  const c = await client(port);
  await c.handshakeStart();
  const replies = await c.go("disk");
  expect(replies.at(-1)?.type).toBe(OptionReply.Ack);
  return c;
}

/**
 * Resolves once the server closed `c`; fails if it is still open after `ms`. Far below the
 * handshake timeout (60 s), so a server that waits for bytes it should not wait for fails here.
 */
async function closesSoon(c: RawClient, ms = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const tooLate = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`connection still open after ${ms} ms`)), ms);
  });
  try {
    await Promise.race([c.closedPromise, tooLate]);
  } finally {
    clearTimeout(timer);
  }
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
});

/** A backend whose operations wait until the test releases them. */
class GatedBackend implements SectorBackend {
  readonly inner: MemoryBackend;
  gate: Promise<void> = Promise.resolve();
  /** Sector writes and reads that reached this backend (held or not). */
  writesStarted = 0;
  readsStarted = 0;
  constructor(readonly sectors = 256) {
    this.inner = new MemoryBackend(sectors);
  }
  open!: () => void;
  hold(): void {
    this.gate = new Promise((resolve) => {
      this.open = resolve;
    });
  }
  async readSector(i: number): Promise<Buffer> {
    this.readsStarted++;
    await this.gate;
    return this.inner.readSector(i);
  }
  async writeSector(i: number, d: Buffer): Promise<void> {
    this.writesStarted++;
    await this.gate;
    return this.inner.writeSector(i, d);
  }
  async readSectors(i: number, n: number): Promise<Buffer> {
    this.readsStarted += n;
    await this.gate;
    return this.inner.readSectors(i, n);
  }
  async zeroMap(i: number, n: number): Promise<Buffer> {
    this.readsStarted += n;
    await this.gate;
    return this.inner.zeroMap(i, n);
  }
  async heldMap(i: number, n: number): Promise<Buffer> {
    await this.gate;
    return this.inner.heldMap(i, n);
  }
  async heldPages(i: number, n: number): Promise<Buffer> {
    await this.gate;
    return this.inner.heldPages(i, n);
  }
  async writeSectors(i: number, d: Buffer): Promise<void> {
    this.writesStarted += d.length / SECTOR_SIZE_BYTES;
    await this.gate;
    return this.inner.writeSectors(i, d);
  }
  async close(): Promise<void> {}
}

describe("nbd handshake", () => {
  it("greets fixed newstyle, answers an unknown option with ERR_UNSUP and keeps negotiating", async () => {
    const c = await client(await startServer(new MemoryBackend(16)));
    const greeting = await c.handshakeStart();
    expect(greeting.toString("ascii", 0, 8)).toBe("NBDMAGIC");
    expect(greeting.readUInt16BE(16)).toBe(3);
    c.sendOption(0x7654321, Buffer.from("junk"));
    const r = await c.optionReply();
    expect(r).toMatchObject({ option: 0x7654321, type: OptionReply.ErrUnsup });
    c.sendOption(Option.List);
    const server = await c.optionReply();
    expect(server.type).toBe(OptionReply.Server);
    expect(server.data.subarray(4).toString()).toBe("disk");
    expect((await c.optionReply()).type).toBe(OptionReply.Ack);
    const go = await c.go("disk");
    const exportInfo = go.find((x) => x.type === OptionReply.Info && x.data.readUInt16BE(0) === 0)!;
    expect(exportInfo.data.readBigUInt64BE(2)).toBe(BigInt(16 * SECTOR_SIZE_BYTES));
    expect(go.at(-1)?.type).toBe(OptionReply.Ack);
  });

  it("answers a wrong export name with ERR_UNKNOWN and still accepts the right one", async () => {
    const c = await client(await startServer(new MemoryBackend(16)));
    await c.handshakeStart();
    expect((await c.go("nope")).at(-1)?.type).toBe(OptionReply.ErrUnknown);
    expect((await c.go("nope", Option.Info)).at(-1)?.type).toBe(OptionReply.ErrUnknown);
    expect((await c.go("")).at(-1)?.type).toBe(OptionReply.Ack);
  });

  it("acknowledges ABORT and closes", async () => {
    const c = await client(await startServer(new MemoryBackend(16)));
    await c.handshakeStart();
    c.sendOption(Option.Abort);
    expect((await c.optionReply()).type).toBe(OptionReply.Ack);
    await c.closedPromise;
  });

  it("closes on a garbage option magic, on unknown client flags and after too many options", async () => {
    const port = await startServer(new MemoryBackend(16));
    const a = await client(port);
    await a.handshakeStart();
    a.socket.write(Buffer.alloc(16, 0x41));
    await a.closedPromise;
    const b = await client(port);
    await b.handshakeStart(0x80);
    await b.closedPromise;
    const d = await client(port);
    await d.handshakeStart();
    for (let i = 0; i < 100 && !d.closed; i++) {
      d.sendOption(0x999);
      await d.optionReply().catch(() => undefined);
    }
    expect(d.closed).toBe(true);
  });

  it("closes on an option that announces more than 64 KiB, without waiting for its data", async () => {
    const c = await client(await startServer(new MemoryBackend(16)));
    await c.handshakeStart();
    c.sendOption(Option.List, Buffer.alloc(0), NBD_MAX_OPTION_BYTES + 1);
    await closesSoon(c);
  });

  it("closes a client that does not finish the handshake in time, and keeps serving others", async () => {
    // 2 s: short for the test, long enough for the well-behaved client below on a loaded machine.
    const port = await startServer(new MemoryBackend(16), { handshakeTimeoutMs: 2_000 });
    const started = Date.now();
    const silentClient = await client(port);
    const slow = await client(port);
    await slow.handshakeStart(); // then nothing more
    await closesSoon(silentClient);
    await closesSoon(slow);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
    const c = await transmitting(port);
    c.sendRequest(Command.Read, 1n, 0n, 4096);
    expect(await c.simpleReply(4096)).toMatchObject({ error: 0, cookie: 1n });
  });

  it("supports EXPORT_NAME with NO_ZEROES: 10 bytes of size and flags", async () => {
    const c = await client(await startServer(new MemoryBackend(16)));
    await c.handshakeStart();
    c.sendOption(Option.ExportName, Buffer.from("disk"));
    const info = await c.queue.take(10);
    expect(info.readBigUInt64BE(0)).toBe(BigInt(16 * SECTOR_SIZE_BYTES));
    expect(info.readUInt16BE(8) & 1).toBe(1);
    c.sendRequest(Command.Read, 1n, 0n, 512);
    expect((await c.simpleReply(512)).error).toBe(0);
  });
});

describe("nbd transmission", () => {
  it("closes the connection on a garbage request magic", async () => {
    const c = await transmitting(await startServer(new MemoryBackend(16)));
    c.socket.write(Buffer.alloc(28, 0x5a));
    await c.closedPromise;
  });

  it("answers out-of-range reads EINVAL and writes ENOSPC without dropping the connection", async () => {
    const c = await transmitting(await startServer(new MemoryBackend(16)));
    const end = BigInt(16 * SECTOR_SIZE_BYTES);
    c.sendRequest(Command.Read, 1n, end, 512);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EINVAL, cookie: 1n });
    c.sendRequest(Command.Write, 2n, end - 100n, 512, Buffer.alloc(512, 1));
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.ENOSPC, cookie: 2n });
    c.sendRequest(Command.WriteZeroes, 3n, end, 4096);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.ENOSPC, cookie: 3n });
    c.sendRequest(Command.Read, 4n, 0n, 0);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EINVAL, cookie: 4n });
    c.sendRequest(Command.Read, 5n, 0xffffffffffffff00n, 512);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EINVAL, cookie: 5n });
    c.sendRequest(99, 6n, 0n, 0);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EINVAL, cookie: 6n });
    c.sendRequest(Command.BlockStatus, 7n, 0n, 4096);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EINVAL, cookie: 7n });
    c.sendRequest(Command.Write, 8n, 10n, 3, Buffer.from("abc"));
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 8n });
    c.sendRequest(Command.Read, 9n, 8n, 7);
    expect((await c.simpleReply(7)).data).toEqual(Buffer.from([0, 0, 0x61, 0x62, 0x63, 0, 0]));
  });

  it("reads and discards an over-32-MiB WRITE payload, answers EINVAL, and goes on", async () => {
    const c = await transmitting(await startServer(new MemoryBackend(16 * 1024)));
    const big = 32 * 1024 * 1024 + 4096;
    c.sendRequest(Command.Write, 1n, 0n, big, Buffer.alloc(big, 7));
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EINVAL, cookie: 1n });
    c.sendRequest(Command.Read, 2n, 0n, 4096);
    expect((await c.simpleReply(4096)).data).toEqual(Buffer.alloc(4096));
  });

  it("closes a connection whose WRITE announces more than 64 MiB, without reading it, and keeps serving others", async () => {
    const port = await startServer(new MemoryBackend(16));
    const other = await transmitting(port);
    const c = await transmitting(port);
    // Only the header: the announced payload is never sent, and the server must not wait for it.
    c.sendRequest(Command.Write, 1n, 0n, NBD_ABSURD_PAYLOAD_BYTES + 1);
    await closesSoon(c);
    other.sendRequest(Command.Write, 2n, 0n, 4096, Buffer.alloc(4096, 3));
    expect(await other.simpleReply()).toMatchObject({ error: 0, cookie: 2n });
    other.sendRequest(Command.Read, 3n, 0n, 4096);
    expect((await other.simpleReply(4096)).data).toEqual(Buffer.alloc(4096, 3));
  });

  it(`takes at most ${NBD_MAX_INFLIGHT_REQUESTS_PER_CONNECTION} requests of one connection at a time; the rest wait in the socket until replies make room`, async () => {
    const limit = NBD_MAX_INFLIGHT_REQUESTS_PER_CONNECTION;
    const n = limit + 44;
    const backend = new GatedBackend(n);
    const c = await transmitting(await startServer(backend));
    backend.hold();
    // Distinct sectors, so that no write waits on another's sector lock instead of the limit.
    for (let i = 0; i < n; i++) {
      c.sendRequest(Command.Write, BigInt(i + 1), BigInt(i * SECTOR_SIZE_BYTES), 4096, Buffer.alloc(4096, i));
    }
    for (let t = 0; t < 1000 && backend.writesStarted < limit; t++)
      await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    expect(backend.writesStarted).toBe(limit);
    backend.open();
    const cookies = new Set<bigint>();
    for (let i = 0; i < n; i++) {
      const reply = await c.simpleReply();
      expect(reply.error).toBe(0);
      cookies.add(reply.cookie);
    }
    expect(cookies.size).toBe(n);
    expect(backend.writesStarted).toBe(n);
  });

  it(`keeps at most ${NBD_MAX_INFLIGHT_BYTES_PER_CONNECTION >> 20} MiB of one connection's requests in flight; the rest wait in the socket`, async () => {
    const requestBytes = NBD_MAX_PAYLOAD_BYTES;
    const requestSectors = requestBytes / SECTOR_SIZE_BYTES;
    const fit = NBD_MAX_INFLIGHT_BYTES_PER_CONNECTION / requestBytes;
    const backend = new GatedBackend(requestSectors);
    // A sector window wide enough that only the byte limit binds.
    const port = await startServer(backend, {
      timeoutMs: 60_000,
      maxInflightSectors: (fit + 2) * requestSectors,
    });
    const c = await transmitting(port);
    backend.hold();
    for (let i = 0; i < fit + 2; i++) c.sendRequest(Command.Read, BigInt(i + 1), 0n, requestBytes);
    for (let t = 0; t < 1000 && backend.readsStarted < fit * requestSectors; t++)
      await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    expect(backend.readsStarted).toBe(fit * requestSectors);
    backend.open();
    for (let i = 0; i < fit + 2; i++) expect((await c.simpleReply(requestBytes)).error).toBe(0);
    expect(backend.readsStarted).toBe((fit + 2) * requestSectors);
  }, 60_000);

  it("replies EIO once on timeout, drops the late completion, and keeps serving", async () => {
    const backend = new GatedBackend();
    const c = await transmitting(await startServer(backend, { timeoutMs: 300 }));
    backend.hold();
    c.sendRequest(Command.Write, 1n, 0n, 4096, Buffer.alloc(4096, 9));
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EIO, cookie: 1n });
    backend.open();
    c.sendRequest(Command.Read, 2n, 0n, 4096);
    const r = await c.simpleReply(4096);
    // The next reply is for cookie 2: the late write produced no second reply for cookie 1.
    expect(r.cookie).toBe(2n);
    expect(r.data).toEqual(Buffer.alloc(4096, 9));
  });

  it("answers every request in flight before closing on DISC", async () => {
    const backend = new GatedBackend();
    const c = await transmitting(await startServer(backend));
    backend.hold();
    for (let i = 0; i < 8; i++)
      c.sendRequest(Command.Write, BigInt(i), BigInt(i * 4096), 4096, Buffer.alloc(4096, i));
    c.sendRequest(Command.Disc, 99n, 0n, 0);
    setTimeout(() => backend.open(), 50);
    const cookies: bigint[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await c.simpleReply();
      expect(r.error).toBe(0);
      cookies.push(r.cookie);
    }
    expect(cookies.sort()).toEqual([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n]);
    await c.closedPromise;
    expect(c.queue.length).toBe(0);
  });

  it("replies out of order: a fast read is not held behind a slow write", async () => {
    const backend = new GatedBackend();
    const c = await transmitting(await startServer(backend));
    backend.hold();
    c.sendRequest(Command.Write, 1n, 0n, 4096, Buffer.alloc(4096, 1));
    await new Promise((r) => setTimeout(r, 20));
    const gate = backend.open;
    backend.gate = Promise.resolve();
    c.sendRequest(Command.Flush, 2n, 0n, 0);
    expect((await c.simpleReply()).cookie).toBe(2n);
    gate();
    expect((await c.simpleReply()).cookie).toBe(1n);
  });

  it("zeroes a gigabyte-sized range of a fresh disk without storing a single sector", async () => {
    const backend = new MemoryBackend(256 * 1024);
    const c = await transmitting(await startServer(backend, { timeoutMs: 60_000 }));
    c.sendRequest(Command.WriteZeroes, 1n, 0n, 0x40000000);
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 1n });
    c.sendRequest(Command.Trim, 2n, 0n, 0x40000000);
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 2n });
    expect(backend.storedSectors).toBe(0);
  });

  it("stops starting sectors of a huge WRITE_ZEROES once it timed out with EIO", async () => {
    const inner = new MemoryBackend(256 * 1024, 2);
    let reads = 0;
    const counting: SectorBackend = {
      sectors: inner.sectors,
      readSector: (i) => {
        reads++;
        return inner.readSector(i);
      },
      writeSector: (i, d) => inner.writeSector(i, d),
      readSectors: (i, n) => {
        reads += n;
        return inner.readSectors(i, n);
      },
      zeroMap: (i, n) => {
        reads += n;
        return inner.zeroMap(i, n);
      },
      // Claims every sector may be written, so that zeroing has every run to read.
      heldMap: async (_i, n) => Buffer.alloc(bitmapBytes(n), 0xff),
      heldPages: async (_i, n) => Buffer.alloc(bitmapBytes(n), 0xff),
      writeSectors: (i, d) => inner.writeSectors(i, d),
      close: async () => {},
    };
    const c = await transmitting(await startServer(counting, { timeoutMs: 300 }));
    c.sendRequest(Command.WriteZeroes, 1n, 0n, 0x40000000);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.EIO, cookie: 1n });
    await new Promise((r) => setTimeout(r, 100));
    const afterTimeout = reads;
    await new Promise((r) => setTimeout(r, 500));
    expect(reads - afterTimeout).toBe(0);
    expect(reads).toBeLessThan(256 * 1024);
    c.sendRequest(Command.Read, 2n, 0n, 4096);
    expect((await c.simpleReply(4096)).cookie).toBe(2n);
  });

  it("keeps acknowledged writes and keeps serving when a client vanishes mid-request", async () => {
    const port = await startServer(new MemoryBackend(64, 1));
    const a = await transmitting(port);
    a.sendRequest(Command.Write, 1n, 8192n, 4096, Buffer.alloc(4096, 0x42), 1);
    expect(await a.simpleReply()).toMatchObject({ error: 0, cookie: 1n });
    // A request in flight, then half of another request's payload, then the client is gone.
    a.sendRequest(Command.Write, 2n, 0n, 4096, Buffer.alloc(4096, 0x43));
    const header = Buffer.alloc(28);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(Command.Write, 6);
    header.writeUInt32BE(65536, 24);
    a.socket.write(Buffer.concat([header, Buffer.alloc(1000, 0x44)]));
    a.close();
    const b = await transmitting(port);
    b.sendRequest(Command.Read, 3n, 8192n, 4096);
    expect((await b.simpleReply(4096)).data).toEqual(Buffer.alloc(4096, 0x42));
  });

  it("on shutdown answers new requests ESHUTDOWN and lets requests in flight finish before closing", async () => {
    const backend = new GatedBackend();
    const port = await startServer(backend);
    const server = servers.pop()!;
    const c = await transmitting(port);
    backend.hold();
    c.sendRequest(Command.Write, 1n, 0n, 4096, Buffer.alloc(4096, 5));
    await new Promise((r) => setTimeout(r, 50));
    const closing = server.close();
    await new Promise((r) => setTimeout(r, 50));
    c.sendRequest(Command.Read, 2n, 0n, 4096);
    expect(await c.simpleReply()).toMatchObject({ error: NbdErrno.ESHUTDOWN, cookie: 2n });
    backend.open();
    expect(await c.simpleReply()).toMatchObject({ error: 0, cookie: 1n });
    await c.closedPromise;
    await closing;
    expect(await backend.inner.readSector(0)).toEqual(Buffer.alloc(4096, 5));
  });

  it("never loses bytes when many sub-sector writes hit one sector at once", async () => {
    const backend = new MemoryBackend(4, 1);
    const c = await transmitting(await startServer(backend));
    for (let i = 0; i < 64; i++)
      c.sendRequest(Command.Write, BigInt(i), BigInt(4096 + i * 64), 64, Buffer.alloc(64, i + 1));
    for (let i = 0; i < 64; i++) expect((await c.simpleReply()).error).toBe(0);
    const sector = await backend.readSector(1);
    for (let i = 0; i < 64; i++)
      expect(sector.subarray(i * 64, i * 64 + 64)).toEqual(Buffer.alloc(64, i + 1));
  });
});
