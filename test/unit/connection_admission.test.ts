import pino from "pino";
import { describe, expect, it } from "vitest";
import { type AdmittedConnection, ConnectionAdmission } from "../../src/net/connection_admission.js";
import { RateLimitedLog } from "../../src/net/rate_limited_log.js";

class FakeConnection implements AdmittedConnection {
  destroyed = false;
  constructor(readonly remote: string) {}
  destroy(): void {
    this.destroyed = true;
  }
}

function admission(maxUnidentified: number, maxClients: number): ConnectionAdmission {
  return new ConnectionAdmission({
    maxUnidentified,
    maxClients,
    log: new RateLimitedLog(pino({ level: "silent" }), 1_000),
  });
}

const connections = (n: number) => Array.from({ length: n }, (_, i) => new FakeConnection(`c${i}`));

describe("connection admission", () => {
  it("past the unidentified limit a new connection evicts the oldest unidentified one, not itself", () => {
    const a = admission(3, 10);
    const cs = connections(5);
    for (const c of cs) a.accepted(c);
    expect(cs.map((c) => c.destroyed)).toEqual([true, true, false, false, false]);
    expect(a.stats()).toMatchObject({ unidentified: 3, evictedUnidentified: 2 });
  });

  it("identified connections leave the unidentified pool and are never evicted by newcomers", () => {
    const a = admission(2, 10);
    const [peer, client, ...rest] = connections(6);
    a.accepted(peer!);
    a.accepted(client!);
    expect(a.identified(peer!, "peer")).toBe(true);
    expect(a.identified(client!, "client")).toBe(true);
    for (const c of rest) a.accepted(c);
    expect([peer!.destroyed, client!.destroyed]).toEqual([false, false]);
    expect(rest.map((c) => c.destroyed)).toEqual([true, true, false, false]);
    expect(a.stats()).toMatchObject({ unidentified: 2, clients: 1, peers: 1 });
  });

  it("refuses clients past the client limit but never peers", () => {
    const a = admission(100, 2);
    const cs = connections(6);
    for (const c of cs) a.accepted(c);
    expect(cs.slice(0, 3).map((c) => a.identified(c, "client"))).toEqual([true, true, false]);
    expect(cs.slice(3).map((c) => a.identified(c, "peer"))).toEqual([true, true, true]);
    expect(a.stats()).toMatchObject({ clients: 2, peers: 3, refusedClients: 1, unidentified: 0 });
    // A client that leaves frees its place.
    a.closed(cs[0]!);
    const next = new FakeConnection("next");
    a.accepted(next);
    expect(a.identified(next, "client")).toBe(true);
  });

  it("an evicted connection is not admitted by a message that was already on its way", () => {
    const a = admission(1, 10);
    const [first, second] = connections(2);
    a.accepted(first!);
    a.accepted(second!);
    expect(first!.destroyed).toBe(true);
    expect(a.identified(first!, "peer")).toBe(false);
    expect(a.stats()).toMatchObject({ peers: 0, unidentified: 1 });
  });
});
