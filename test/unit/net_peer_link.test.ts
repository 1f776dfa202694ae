// Peer links: stubborn reconnection, dropping (never queueing) while the peer is away, and
// write coalescing.
import { createServer, type Server, type Socket } from "node:net";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { PeerLink } from "../../src/net/peer_link.js";
import { freePort } from "../helpers/ports.js";

const silent = pino({ level: "silent" });
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Sink {
  server: Server;
  received(): number;
  chunks(): number;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

async function listenSink(port: number): Promise<Sink> {
  let bytes = 0;
  let chunks = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("data", (chunk) => {
      bytes += chunk.length;
      chunks++;
    });
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen({ host: "127.0.0.1", port }, r));
  const sink: Sink = {
    server,
    received: () => bytes,
    chunks: () => chunks,
    sockets,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  cleanups.push(() => sink.close());
  return sink;
}

async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("peer link", () => {
  it("drops frames while the peer is down instead of queueing them", async () => {
    const port = await freePort();
    const link = new PeerLink(2, { host: "127.0.0.1", port }, silent);
    cleanups.push(() => link.close());
    link.start();
    // Between refused attempts (backoff) the link has no socket: every frame sent then is dropped.
    await until(() => !link.canSend(), 5_000);
    for (let i = 0; i < 1000; i++) link.send([Buffer.alloc(4176)]);
    expect(link.stats.droppedFrames).toBe(1000);
    expect(link.stats.sentFrames).toBe(0);
    expect(link.stats.connects).toBe(0);
  });

  it("connects once the peer comes up, and reconnects after the peer restarts", async () => {
    const port = await freePort();
    const link = new PeerLink(2, { host: "127.0.0.1", port }, silent);
    cleanups.push(() => link.close());
    link.start();
    await new Promise((r) => setTimeout(r, 150)); // a few refused attempts: backoff is running
    let sink = await listenSink(port);
    await until(() => link.stats.connects === 1, 5_000);
    link.send([Buffer.from("hello")]);
    await until(() => sink.received() === 5, 5_000);

    await sink.close();
    sink = await listenSink(port);
    await until(() => link.stats.connects === 2, 10_000);
    await until(() => link.canSend(), 1_000);
    link.send([Buffer.from("again")]);
    await until(() => sink.received() === 5, 5_000);
  });

  it("coalesces the frames of one event-loop turn into one write", async () => {
    const port = await freePort();
    const sink = await listenSink(port);
    const link = new PeerLink(3, { host: "127.0.0.1", port }, silent);
    cleanups.push(() => link.close());
    link.start();
    await until(() => link.stats.connects === 1, 5_000);
    for (let i = 0; i < 100; i++) link.send([Buffer.alloc(64, i)]);
    await until(() => sink.received() === 6400, 5_000);
    // 100 frames sent in one turn arrive as one segment burst, not 100 separate writes.
    expect(sink.chunks()).toBeLessThan(5);
  });
});
