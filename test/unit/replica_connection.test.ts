// ReplicaConnection against a tiny in-test replica: a TCP server on 127.0.0.1 that decodes
// commands with AtddDecoder and answers with encodeClientResponse, under the test's control.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ReplicaConnection } from "../../src/client/replica_connection.js";
import { encodeClientResponse } from "../../src/protocol/codec.js";
import { AtddDecoder, type DecodeEvent } from "../../src/protocol/decoder.js";
import { type ClientResponse, ResponseStatus, type ResponseStatusCode } from "../../src/protocol/messages.js";
import { AtomicDiskError } from "../../src/util/errors.js";

// Keep the per-connection lifecycle logs out of the test output.
process.env.ATOMIC_DISK_LOG_LEVEL ??= "warn";

const clientKey = Buffer.alloc(32, 7);
const SECTORS = 1024;

function sectorOf(seed: number): Buffer {
  const data = Buffer.alloc(4096);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 31 + i) & 0xff;
  return data;
}

interface Received {
  event: DecodeEvent;
  socket: net.Socket;
}

/** A fake replica: collects decoded commands; the test decides when and how to answer. */
class FakeReplica {
  readonly received: Received[] = [];
  readonly sockets = new Set<net.Socket>();
  private waiters: { count: number; resolve: () => void }[] = [];
  private constructor(
    readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(): Promise<FakeReplica> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    const replica = new FakeReplica(server, port);
    server.on("connection", (socket) => replica.accept(socket));
    return replica;
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    const decoder = new AtddDecoder({ role: "replica", clientKey, sectors: SECTORS });
    socket.on("data", (chunk: Buffer) => {
      for (const event of decoder.push(chunk)) this.received.push({ event, socket });
      this.waiters = this.waiters.filter((w) => {
        if (this.received.length < w.count) return true;
        w.resolve();
        return false;
      });
    });
  }

  /** Resolves once `count` commands have arrived (bounded by the vitest timeout). */
  waitFor(count: number): Promise<void> {
    if (this.received.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The answer a real replica would give, with `store` as the disk. */
function answer(event: DecodeEvent, store: Map<number, Buffer>): ClientResponse {
  if (event.kind === "rejected") {
    const res: ClientResponse = {
      kind: "clientResponse",
      command: event.command,
      status: event.status,
      requestNumber: event.requestNumber,
    };
    if (event.sectorCount !== undefined) res.sectorCount = event.sectorCount;
    return res;
  }
  if (event.kind !== "message") throw new Error(`unexpected ${event.kind}`);
  const m = event.message;
  const ok = { kind: "clientResponse", status: ResponseStatus.Ok, requestNumber: 0n } as const;
  switch (m.kind) {
    case "clientWrite":
      store.set(m.sectorIndex, m.data);
      return { ...ok, command: "write", requestNumber: m.requestNumber };
    case "clientRead":
      return {
        ...ok,
        command: "read",
        requestNumber: m.requestNumber,
        data: store.get(m.sectorIndex) ?? Buffer.alloc(4096),
      };
    case "clientWriteRange":
      for (let i = 0; i < m.sectorCount; i++)
        store.set(m.sectorIndex + i, Buffer.from(m.data.subarray(i * 4096, (i + 1) * 4096)));
      return { ...ok, command: "writeRange", requestNumber: m.requestNumber, sectorCount: m.sectorCount };
    case "clientWriteSectors":
      for (const [i, sector] of m.sectors.entries())
        store.set(sector, Buffer.from(m.data.subarray(i * 4096, (i + 1) * 4096)));
      return { ...ok, command: "writeSectors", requestNumber: m.requestNumber, sectorCount: m.sectorCount };
    case "clientReadRange":
      return {
        ...ok,
        command: "readRange",
        requestNumber: m.requestNumber,
        sectorCount: m.sectorCount,
        data: Buffer.concat(
          Array.from({ length: m.sectorCount }, (_, i) => store.get(m.sectorIndex + i) ?? Buffer.alloc(4096)),
        ),
      };
    default:
      throw new Error(`unexpected message ${m.kind}`);
  }
}

/** The next command the replica received, which must be a decoded message of `kind`. */
function commandAt<K extends string>(index: number, kind: K) {
  const { event, socket } = replica!.received[index]!;
  if (event.kind !== "message" || event.message.kind !== kind) throw new Error(`expected ${kind}`);
  return { message: event.message as Extract<typeof event.message, { kind: K }>, socket };
}

/** Sectors [first, first + count) of sectorOf() data, back to back. */
function runOf(first: number, count: number): Buffer {
  return Buffer.concat(Array.from({ length: count }, (_, i) => sectorOf(first + i)));
}

let replica: FakeReplica | undefined;
const connections: ReplicaConnection[] = [];

async function connect(options: { batchWrites?: boolean } = {}): Promise<ReplicaConnection> {
  replica = await FakeReplica.start();
  const conn = await ReplicaConnection.connect({
    host: "127.0.0.1",
    port: replica.port,
    clientKey,
    ...options,
  });
  connections.push(conn);
  return conn;
}

/** Other things a test started, stopped after it whatever its outcome. */
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const conn of connections.splice(0)) conn.close();
  await replica?.stop();
  replica = undefined;
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<AtomicDiskError> {
  const err = await promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AtomicDiskError);
  expect((err as AtomicDiskError).code).toBe(code);
  return err as AtomicDiskError;
}

describe("ReplicaConnection", () => {
  it("matches 64 pipelined writes then 64 reads by request number when answered in reverse order", async () => {
    const conn = await connect();
    const server = replica!;
    const store = new Map<number, Buffer>();

    const writes = Array.from({ length: 64 }, (_, i) => conn.write(i, sectorOf(i)));
    expect(conn.inflight()).toBe(64);
    await server.waitFor(64);
    for (const { event, socket } of [...server.received].reverse()) {
      socket.write(encodeClientResponse(answer(event, store), clientKey));
    }
    await Promise.all(writes);
    expect(conn.inflight()).toBe(0);

    // Reads target the sectors in a shuffled order so a positional mix-up cannot pass.
    const order = Array.from({ length: 64 }, (_, i) => (i * 37) % 64);
    const reads = order.map((sector) => conn.read(sector));
    await server.waitFor(128);
    for (const { event, socket } of server.received.slice(64).reverse()) {
      socket.write(encodeClientResponse(answer(event, store), clientKey));
    }
    const values = await Promise.all(reads);
    for (const [i, value] of values.entries()) expect(value.equals(sectorOf(order[i]!))).toBe(true);

    const numbers = server.received.map(({ event }) => (event.kind === "message" ? event.message : null));
    const requestNumbers = new Set(
      numbers.map((m) => (m !== null && "requestNumber" in m ? m.requestNumber : -1n)),
    );
    expect(requestNumbers.size).toBe(128);
  });

  it.each([
    [ResponseStatus.AuthFailure, "AUTH_FAILED"],
    [ResponseStatus.InvalidSectorIndex, "INVALID_SECTOR_INDEX"],
  ] as [ResponseStatusCode, string][])(
    "rejects a command answered with status %i as %s",
    async (status, code) => {
      const conn = await connect();
      const read = conn.read(5);
      const write = conn.write(6, sectorOf(1));
      await replica!.waitFor(2);
      for (const { event, socket } of replica!.received) {
        if (
          event.kind !== "message" ||
          event.message.kind === "clientResponse" ||
          !("requestNumber" in event.message)
        )
          throw new Error("expected a command");
        const command = event.message.kind === "clientRead" ? "read" : "write";
        const res: ClientResponse = {
          kind: "clientResponse",
          command,
          status,
          requestNumber: event.message.requestNumber,
        };
        socket.write(encodeClientResponse(res, clientKey));
      }
      await expectCode(read, code);
      await expectCode(write, code);
      expect(conn.inflight()).toBe(0);
    },
  );

  it("reports a sector beyond the volume as INVALID_SECTOR_INDEX end to end", async () => {
    const conn = await connect();
    const read = conn.read(SECTORS);
    await replica!.waitFor(1);
    const { event, socket } = replica!.received[0]!;
    expect(event).toMatchObject({ kind: "rejected", status: ResponseStatus.InvalidSectorIndex });
    socket.write(encodeClientResponse(answer(event, new Map()), clientKey));
    await expectCode(read, "INVALID_SECTOR_INDEX");
  });

  it("rejects every outstanding command with REPLICA_UNAVAILABLE when the replica closes the socket", async () => {
    const conn = await connect();
    let closedWith: Error | undefined | "not called" = "not called";
    conn.onClose((err) => {
      closedWith = err;
    });
    const pending = [conn.read(1), conn.write(2, sectorOf(2)), conn.read(3)];
    await replica!.waitFor(3);
    replica!.received[0]!.socket.destroy();
    for (const p of pending) await expectCode(p, "REPLICA_UNAVAILABLE");
    expect(conn.inflight()).toBe(0);
    await waitUntil(() => closedWith !== "not called");
    await expectCode(conn.read(1), "REPLICA_UNAVAILABLE");
  });

  it("rejects outstanding commands when the caller closes the connection", async () => {
    const conn = await connect();
    const pending = conn.write(9, sectorOf(9));
    conn.close();
    await expectCode(pending, "REPLICA_UNAVAILABLE");
  });

  it("survives garbage and forged responses from the replica and still completes the real answer", async () => {
    const conn = await connect();
    const read = conn.read(4);
    await replica!.waitFor(1);
    const { event, socket } = replica!.received[0]!;
    const genuine = encodeClientResponse(answer(event, new Map([[4, sectorOf(4)]])), clientKey);
    const forged = Buffer.from(genuine);
    forged[100]! ^= 1;
    socket.write(Buffer.concat([Buffer.from("garbage atd atdd\x00\x00\x00\x99"), forged, genuine]));
    expect((await read).equals(sectorOf(4))).toBe(true);
  });

  it("ignores a response to no outstanding command and rejects one of the wrong kind as PROTOCOL_VIOLATION", async () => {
    const conn = await connect();
    const read = conn.read(4);
    await replica!.waitFor(1);
    const { event, socket } = replica!.received[0]!;
    if (event.kind !== "message" || event.message.kind !== "clientRead") throw new Error("expected a READ");
    const requestNumber = event.message.requestNumber;
    const stray = {
      kind: "clientResponse",
      command: "read",
      status: ResponseStatus.Ok,
      data: sectorOf(0),
    } as const;
    socket.write(encodeClientResponse({ ...stray, requestNumber: requestNumber + 1000n }, clientKey));
    socket.write(
      encodeClientResponse(
        { kind: "clientResponse", command: "write", status: ResponseStatus.Ok, requestNumber },
        clientKey,
      ),
    );
    await expectCode(read, "PROTOCOL_VIOLATION");
    expect(conn.inflight()).toBe(0);
  });

  it("fails connect() with REPLICA_UNAVAILABLE caused by ECONNREFUSED when nothing listens", async () => {
    const server = await FakeReplica.start();
    const port = server.port;
    await server.stop();
    const err = await expectCode(
      ReplicaConnection.connect({ host: "127.0.0.1", port, clientKey }),
      "REPLICA_UNAVAILABLE",
    );
    expect((err.cause as NodeJS.ErrnoException).code).toBe("ECONNREFUSED");
    expect(err.message).toContain(`127.0.0.1:${port}`);
  });

  // With tcp_abort_on_overflow set the kernel refuses instead of dropping SYNs: no hang to test.
  it.skipIf(readFileSync("/proc/sys/net/ipv4/tcp_abort_on_overflow", "utf8").trim() !== "0")(
    "fails a connect() that hangs after connectTimeoutMs, caused by ETIMEDOUT (not a refusal)",
    async () => {
      // A listener that never accepts, with room for one queued connection: once that is taken the
      // kernel drops further SYNs, so a connect neither succeeds nor fails (the pool must not treat
      // that as a dead replica, SPEC §4).
      const listener = spawn("/usr/bin/python3", [
        "-c",
        "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(0); print(s.getsockname()[1], flush=True); time.sleep(60)",
      ]);
      const filler = new net.Socket();
      cleanups.push(async () => {
        filler.destroy();
        listener.kill();
      });
      const port = await new Promise<number>((resolve) =>
        listener.stdout.once("data", (d: Buffer) => resolve(Number(String(d).trim()))),
      );
      await new Promise<void>((resolve, reject) => {
        filler.once("error", reject);
        filler.connect({ host: "127.0.0.1", port }, resolve);
      });
      const started = Date.now();
      const err = await expectCode(
        ReplicaConnection.connect({ host: "127.0.0.1", port, clientKey, connectTimeoutMs: 500 }),
        "REPLICA_UNAVAILABLE",
      );
      expect(Date.now() - started).toBeGreaterThanOrEqual(450);
      expect((err.cause as NodeJS.ErrnoException).code).toBe("ETIMEDOUT");
    },
  );
});

describe("ReplicaConnection range commands", () => {
  it("matches pipelined WRITE_RANGEs and READ_RANGEs by request number when answered in reverse order", async () => {
    const conn = await connect();
    const server = replica!;
    const store = new Map<number, Buffer>();
    const writes = [
      conn.writeRange(0, runOf(0, 256)),
      conn.writeRange(300, runOf(300, 3)),
      conn.write(400, sectorOf(400)),
    ];
    expect(conn.inflight()).toBe(256 + 3 + 1);
    await server.waitFor(3);
    expect(commandAt(0, "clientWriteRange").message).toMatchObject({ sectorIndex: 0, sectorCount: 256 });
    expect(commandAt(1, "clientWriteRange").message).toMatchObject({ sectorIndex: 300, sectorCount: 3 });
    for (const { event, socket } of [...server.received].reverse())
      socket.write(encodeClientResponse(answer(event, store), clientKey));
    await Promise.all(writes);
    expect(store.get(255)!.equals(sectorOf(255))).toBe(true);

    const reads = [conn.readRange(0, 256), conn.readRange(299, 5), conn.read(302)];
    await server.waitFor(6);
    for (const { event, socket } of server.received.slice(3).reverse())
      socket.write(encodeClientResponse(answer(event, store), clientKey));
    const [all, around, single] = await Promise.all(reads);
    expect(all!.equals(runOf(0, 256))).toBe(true);
    expect(around!.equals(Buffer.concat([Buffer.alloc(4096), runOf(300, 3), Buffer.alloc(4096)]))).toBe(true);
    expect(single!.equals(sectorOf(302))).toBe(true);
    expect(conn.inflight()).toBe(0);
  });

  it("rejects a range answer with another sector count or command as PROTOCOL_VIOLATION", async () => {
    const conn = await connect();
    const wrongCount = conn.readRange(10, 4);
    const wrongCommand = conn.writeRange(20, runOf(20, 2));
    const single = conn.read(30);
    await replica!.waitFor(3);
    const a = commandAt(0, "clientReadRange");
    a.socket.write(
      encodeClientResponse(
        {
          kind: "clientResponse",
          command: "readRange",
          status: ResponseStatus.Ok,
          requestNumber: a.message.requestNumber,
          sectorCount: 3,
          data: Buffer.alloc(3 * 4096),
        },
        clientKey,
      ),
    );
    const b = commandAt(1, "clientWriteRange");
    b.socket.write(
      encodeClientResponse(
        {
          kind: "clientResponse",
          command: "write",
          status: ResponseStatus.Ok,
          requestNumber: b.message.requestNumber,
        },
        clientKey,
      ),
    );
    const c = commandAt(2, "clientRead");
    c.socket.write(
      encodeClientResponse(
        {
          kind: "clientResponse",
          command: "readRange",
          status: ResponseStatus.Ok,
          requestNumber: c.message.requestNumber,
          sectorCount: 1,
          data: Buffer.alloc(4096),
        },
        clientKey,
      ),
    );
    await expectCode(wrongCount, "PROTOCOL_VIOLATION");
    await expectCode(wrongCommand, "PROTOCOL_VIOLATION");
    await expectCode(single, "PROTOCOL_VIOLATION");
    expect(conn.inflight()).toBe(0);
  });

  it("rejects range commands with a non-Ok status and with REPLICA_UNAVAILABLE when the socket drops", async () => {
    const conn = await connect();
    const beyond = conn.readRange(SECTORS - 2, 4);
    const forged = conn.writeRange(0, runOf(0, 2));
    await replica!.waitFor(2);
    const store = new Map<number, Buffer>();
    const first = replica!.received[0]!;
    first.socket.write(encodeClientResponse(answer(first.event, store), clientKey));
    await expectCode(beyond, "INVALID_SECTOR_INDEX");
    const w = commandAt(1, "clientWriteRange");
    w.socket.write(
      encodeClientResponse(
        {
          kind: "clientResponse",
          command: "writeRange",
          status: ResponseStatus.AuthFailure,
          requestNumber: w.message.requestNumber,
          sectorCount: 2,
        },
        clientKey,
      ),
    );
    await expectCode(forged, "AUTH_FAILED");
    const pending = [conn.readRange(0, 8), conn.writeRange(8, runOf(8, 8))];
    await replica!.waitFor(4);
    w.socket.destroy();
    for (const p of pending) await expectCode(p, "REPLICA_UNAVAILABLE");
  });

  it("refuses runs of 0 or more than 256 sectors and data that is not whole sectors", async () => {
    const conn = await connect();
    await expect(conn.readRange(0, 0)).rejects.toThrow();
    await expect(conn.readRange(0, 257)).rejects.toThrow();
    await expect(conn.writeRange(0, Buffer.alloc(4097))).rejects.toThrow();
    await expect(conn.writeRange(0, Buffer.alloc(257 * 4096))).rejects.toThrow();
    expect(conn.inflight()).toBe(0);
  });
});

/** Polls a condition every 5 ms, at most 400 times (2 s), failing if it never holds. */
async function waitUntil(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error("condition never held");
}

describe("ReplicaConnection batchWrites (WRITE_SECTORS)", () => {
  /** The commands the replica received, as [kind, sectors]. */
  function commands(): [string, number[]][] {
    return replica!.received.map(({ event }) => {
      if (event.kind !== "message") throw new Error(`unexpected ${event.kind}`);
      const m = event.message;
      if (m.kind === "clientWriteSectors") return [m.kind, m.sectors];
      if (m.kind === "clientWrite") return [m.kind, [m.sectorIndex]];
      throw new Error(`unexpected ${m.kind}`);
    });
  }

  async function answerAll(from: number, store: Map<number, Buffer>): Promise<void> {
    for (const { event, socket } of replica!.received.slice(from))
      socket.write(encodeClientResponse(answer(event, store), clientKey));
  }

  it("sends the writes of one turn as one WRITE_SECTORS in ascending order; each write resolves with it", async () => {
    const conn = await connect({ batchWrites: true });
    const order = [7, 3, 900, 12];
    const writes = order.map((sector) => conn.write(sector, sectorOf(sector)));
    expect(conn.inflight()).toBe(4);
    await replica!.waitFor(1);
    expect(commands()).toEqual([["clientWriteSectors", [3, 7, 12, 900]]]);
    const store = new Map<number, Buffer>();
    await answerAll(0, store);
    await Promise.all(writes);
    for (const sector of order) expect(store.get(sector)!.equals(sectorOf(sector))).toBe(true);
    expect(conn.inflight()).toBe(0);
  });

  it("sends a lone write as a standard WRITE, and a second write of a queued sector in a later command", async () => {
    const conn = await connect({ batchWrites: true });
    const store = new Map<number, Buffer>();
    const lone = conn.write(5, sectorOf(5));
    await replica!.waitFor(1);
    await answerAll(0, store);
    await lone;
    const again = [conn.write(1, sectorOf(1)), conn.write(2, sectorOf(2)), conn.write(1, sectorOf(100))];
    await replica!.waitFor(3);
    expect(commands()).toEqual([
      ["clientWrite", [5]],
      ["clientWriteSectors", [1, 2]],
      ["clientWrite", [1]],
    ]);
    await answerAll(1, store);
    await Promise.all(again);
    // The later write of sector 1 left last, so a replica that applies commands in order keeps it.
    expect(store.get(1)!.equals(sectorOf(100))).toBe(true);
  });

  it("splits more than 256 writes of one turn into commands of at most 256 sectors", async () => {
    const conn = await connect({ batchWrites: true });
    const writes = Array.from({ length: 300 }, (_, i) => conn.write(i, sectorOf(i)));
    await replica!.waitFor(2);
    expect(commands().map(([kind, sectors]) => [kind, sectors.length])).toEqual([
      ["clientWriteSectors", 256],
      ["clientWriteSectors", 44],
    ]);
    await answerAll(0, new Map());
    await Promise.all(writes);
    expect(conn.inflight()).toBe(0);
  });

  it("fails every write of a command answered with an error or the wrong count, and queued writes on close", async () => {
    const conn = await connect({ batchWrites: true });
    const forged = [conn.write(1, sectorOf(1)), conn.write(2, sectorOf(2))];
    await replica!.waitFor(1);
    const a = commandAt(0, "clientWriteSectors");
    const status = ResponseStatus.AuthFailure;
    const base = { kind: "clientResponse", command: "writeSectors", status } as const;
    a.socket.write(
      encodeClientResponse({ ...base, requestNumber: a.message.requestNumber, sectorCount: 2 }, clientKey),
    );
    for (const w of forged) await expectCode(w, "AUTH_FAILED");
    const miscounted = [conn.write(3, sectorOf(3)), conn.write(4, sectorOf(4))];
    await replica!.waitFor(2);
    const b = commandAt(1, "clientWriteSectors");
    b.socket.write(
      encodeClientResponse(
        { ...base, status: ResponseStatus.Ok, requestNumber: b.message.requestNumber, sectorCount: 3 },
        clientKey,
      ),
    );
    for (const w of miscounted) await expectCode(w, "PROTOCOL_VIOLATION");
    const queued = [conn.write(5, sectorOf(5)), conn.write(6, sectorOf(6))];
    conn.close();
    for (const w of queued) await expectCode(w, "REPLICA_UNAVAILABLE");
    expect(conn.inflight()).toBe(0);
  });

  it("without batchWrites, writes of one turn stay one WRITE each", async () => {
    const conn = await connect();
    const writes = [conn.write(8, sectorOf(8)), conn.write(9, sectorOf(9))];
    await replica!.waitFor(2);
    expect(commands()).toEqual([
      ["clientWrite", [8]],
      ["clientWrite", [9]],
    ]);
    await answerAll(0, new Map());
    await Promise.all(writes);
  });
});
