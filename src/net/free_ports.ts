// Free TCP ports on 127.0.0.1 for local clusters (dev, bench, tests). Ports are picked below the
// kernel's ephemeral range: a port from that range can be taken by any process's outgoing
// connection between our check and the replica's listen (EADDRINUSE), and a dev cluster keeps its
// ports across restarts. All ports of one call are held open together, so they are distinct.
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";

/** Lowest port handed out: clear of the well-known and commonly configured service ports. */
const LOWEST_PORT = 20_000;
/** Random candidates tried per port before falling back to a kernel-chosen one. */
const ATTEMPTS_PER_PORT = 50;

function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    const value = Number(low);
    return Number.isInteger(value) && value > LOWEST_PORT + 1000 ? value : 32_768;
  } catch {
    return 32_768;
  }
}

function tryListen(port: number): Promise<Server | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(null));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => resolve(server));
  });
}

function boundPort(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return address.port;
}

/** `count` distinct loopback ports that were free a moment ago. */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const high = ephemeralLow();
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      let server: Server | null = null;
      for (let attempt = 0; attempt < ATTEMPTS_PER_PORT && server === null; attempt++) {
        server = await tryListen(LOWEST_PORT + Math.floor(Math.random() * (high - LOWEST_PORT)));
      }
      server ??= await tryListen(0);
      if (server === null) throw new Error("no free TCP port on 127.0.0.1");
      servers.push(server);
    }
    return servers.map(boundPort);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
