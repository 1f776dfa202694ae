// A flood of idle connections cannot make the NBD gateway hold unbounded memory: past its
// connection limit new sockets are closed at once and logged, while the gateway goes on working.
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { NBD_MAX_CONNECTIONS } from "../../src/util/limits.js";
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
