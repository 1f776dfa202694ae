// Floods of connections cannot make a replica or the NBD gateway hold unbounded memory, and
// cannot lock a replica's peers out: the limits close the right sockets, log it, and the service
// goes on working.
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import type { HostPort } from "../../src/cli/config.js";
import { encodeClientCommand } from "../../src/protocol/codec.js";
import { type ClientCommand, ResponseStatus } from "../../src/protocol/messages.js";
import {
  MAX_CLIENT_CONNECTIONS,
  MAX_UNIDENTIFIED_CONNECTIONS,
  NBD_MAX_CONNECTIONS,
} from "../../src/util/limits.js";
import { RawClient, startCluster, type TestCluster } from "../helpers/cluster.js";
import { type Gateway, run, startGateway } from "./nbd_gateway.js";

/** Time a refused socket has to see its close; node closes it right after accept. */
const SETTLE_MS = 500;

interface Flood {
  sockets: Socket[];
  /** Indexes of the sockets the server closed. */
  closed: Set<number>;
}

/** Opens `count` sockets one after another, each once the previous one connected. */
async function flood(port: number, count: number): Promise<Flood> {
  const sockets: Socket[] = [];
  const closed = new Set<number>();
  for (let i = 0; i < count; i++) {
    const socket = connect({ host: "127.0.0.1", port });
    socket.on("error", () => {});
    socket.on("data", () => {});
    socket.once("close", () => closed.add(i));
    await new Promise<void>((resolve) => {
      socket.once("connect", resolve);
      socket.once("close", resolve);
    });
    sockets.push(socket);
  }
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return { sockets, closed };
}

function release(f: Flood): void {
  for (const socket of f.sockets) socket.destroy();
}

describe("connection limits", () => {
  const started: { stop(): Promise<void> }[] = [];
  afterAll(async () => {
    await Promise.all(started.map((s) => s.stop()));
  });

  /** One command through a fresh client connection; its response, or undefined if it was closed. */
  async function once(address: HostPort, key: Buffer, command: ClientCommand) {
    const client = await RawClient.connect(address, key);
    try {
      client.send(encodeClientCommand(command, key));
      return await client.next(15_000);
    } catch (err) {
      if (client.isClosed()) return undefined;
      throw err;
    } finally {
      client.close();
    }
  }

  it(`a replica holds at most ${MAX_UNIDENTIFIED_CONNECTIONS} idle unidentified sockets, evicting the oldest, and peers still get in`, async () => {
    const cluster: TestCluster = await startCluster({ replicas: 3, sectors: 64 });
    started.push(cluster);
    const key = cluster.config.clientKey;
    const [a1, , a3] = cluster.addresses;
    const write = (requestNumber: bigint, fill: number): ClientCommand => ({
      kind: "clientWrite",
      requestNumber,
      sectorIndex: 5,
      data: Buffer.alloc(4096, fill),
    });
    // Peers' links to replica 1 identify themselves by answering its first operation.
    expect(await once(a1!, key, write(1n, 1))).toMatchObject({ status: ResponseStatus.Ok });
    const extra = 8;
    const f = await flood(a1!.port, MAX_UNIDENTIFIED_CONNECTIONS + extra);
    try {
      // The oldest sockets were evicted, in accept order: `extra` of the flood. A peer link still
      // unidentified when the flood began (its answer on its way) is evicted first, and its
      // reconnection is one more newcomer: so up to N-1 more of the oldest flood sockets go.
      const evicted = [...f.closed].sort((x, y) => x - y);
      expect(evicted.length).toBeGreaterThanOrEqual(extra);
      expect(evicted.length).toBeLessThanOrEqual(extra + 2);
      expect(evicted).toEqual(Array.from({ length: evicted.length }, (_, i) => i));
      // With the flood held open: a new client gets in (evicting one more idle socket)...
      expect(await once(a1!, key, write(2n, 2))).toMatchObject({ status: ResponseStatus.Ok });
      // ...and so does a peer that restarts meanwhile: with replica 3 down, replica 1's write
      // needs replica 2's answers over its new connection to replica 1.
      await cluster.kill(2);
      await cluster.start(2);
      await cluster.kill(3);
      expect(await once(a1!, key, write(3n, 3))).toMatchObject({ status: ResponseStatus.Ok });
    } finally {
      release(f);
    }
    await cluster.start(3);
    const read = await once(a3!, key, { kind: "clientRead", requestNumber: 4n, sectorIndex: 5 });
    expect(read?.data).toEqual(Buffer.alloc(4096, 3));
    expect(readFileSync(cluster.logPath(1), "utf8")).toContain("closed the oldest unidentified connection");
  });

  it(`a replica closes client connections past ${MAX_CLIENT_CONNECTIONS} and serves the others`, async () => {
    const cluster: TestCluster = await startCluster({ replicas: 3, sectors: 64 });
    started.push(cluster);
    const key = cluster.config.clientKey;
    const address = cluster.addresses[2]!;
    const clients: RawClient[] = [];
    const extra = 2;
    try {
      const answered: boolean[] = [];
      for (let i = 0; i < MAX_CLIENT_CONNECTIONS + extra; i++) {
        const client = await RawClient.connect(address, key);
        clients.push(client);
        client.send(
          encodeClientCommand({ kind: "clientRead", requestNumber: BigInt(i), sectorIndex: 1 }, key),
        );
        answered.push(
          await client.next(15_000).then(
            (r) => r.status === ResponseStatus.Ok,
            () => false,
          ),
        );
      }
      expect(answered.filter((ok) => !ok)).toHaveLength(extra);
      expect(answered.slice(0, MAX_CLIENT_CONNECTIONS).every((ok) => ok)).toBe(true);
      expect(clients.slice(MAX_CLIENT_CONNECTIONS).every((c) => c.isClosed())).toBe(true);
      // The admitted ones keep working.
      clients[0]!.send(encodeClientCommand({ kind: "clientRead", requestNumber: 999n, sectorIndex: 2 }, key));
      expect(await clients[0]!.next(15_000)).toMatchObject({
        requestNumber: 999n,
        status: ResponseStatus.Ok,
      });
    } finally {
      for (const c of clients) c.close();
    }
    expect(readFileSync(cluster.logPath(3), "utf8")).toContain("too many client connections");
  });

  it(`the NBD gateway closes connections past ${NBD_MAX_CONNECTIONS}, logs it, and keeps serving`, async () => {
    const gateway: Gateway = await startGateway({ sectors: 256 });
    started.push(gateway);
    const extra = 3;
    const f = await flood(gateway.port, NBD_MAX_CONNECTIONS + extra);
    try {
      // Nothing else connects to the gateway: exactly the sockets past the limit are refused.
      expect([...f.closed].sort((a, b) => a - b)).toEqual(
        Array.from({ length: extra }, (_, i) => NBD_MAX_CONNECTIONS + i),
      );
    } finally {
      release(f);
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const info = run("nbdinfo", ["--size", gateway.uri]);
    expect(info.status, info.stderr).toBe(0);
    expect(info.stdout.trim()).toBe(String(256 * 4096));
    expect(readFileSync(gateway.logPath, "utf8")).toContain("too many open connections");
  });
});
