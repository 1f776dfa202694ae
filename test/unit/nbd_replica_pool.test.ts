// ReplicaPool failover rules (SPEC §4) with fake replica links: reads retry anywhere; a write whose
// connection failed is resent only to the same replica after a successful reconnect, or elsewhere
// only once a reconnect was refused; a merely slow write is never resent. Every rule is checked for
// single-sector commands and for range commands (a run of sectors in one READ_RANGE / WRITE_RANGE).
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type ReplicaLink, ReplicaPool } from "../../src/nbd/replica_pool.js";
import { AtomicDiskError } from "../../src/util/errors.js";
import { GATEWAY_WRITE_PACK_SECTORS } from "../../src/util/limits.js";

interface Pending {
  kind: "read" | "write" | "held" | "pages";
  /** Sent as a range command (READ_RANGE / WRITE_RANGE) rather than READ / WRITE. */
  range: boolean;
  sector: number;
  count: number;
  resolve: (v: Buffer | undefined) => void;
  reject: (e: Error) => void;
}

class FakeLink implements ReplicaLink {
  pending: Pending[] = [];
  closed = false;
  private gathering = false;
  private listeners: Array<() => void> = [];
  constructor(readonly rank: number) {}
  read(sector: number): Promise<Buffer> {
    return this.send("read", false, sector, 1) as Promise<Buffer>;
  }
  write(sector: number, data: Buffer): Promise<void> {
    expect(data.length).toBe(4096);
    // As ReplicaConnection: single-sector writes of one turn wait to leave together.
    if (!this.gathering && !this.closed) {
      this.gathering = true;
      setImmediate(() => {
        this.gathering = false;
      });
    }
    return this.send("write", false, sector, 1).then(() => {});
  }
  readRange(sector: number, count: number): Promise<Buffer> {
    return this.send("read", true, sector, count) as Promise<Buffer>;
  }
  writeRange(sector: number, data: Buffer): Promise<void> {
    return this.send("write", true, sector, data.length / 4096).then(() => {});
  }
  zeroMap(sector: number, count: number): Promise<Buffer> {
    return this.send("read", true, sector, count) as Promise<Buffer>;
  }
  heldMap(sector: number, count: number): Promise<Buffer> {
    return this.send("held", true, sector, count) as Promise<Buffer>;
  }
  heldPages(sector: number, count: number): Promise<Buffer> {
    return this.send("pages", true, sector, count) as Promise<Buffer>;
  }
  private send(kind: Pending["kind"], range: boolean, sector: number, count: number) {
    if (this.closed) return Promise.reject(unavailable());
    return new Promise<Buffer | undefined>((resolve, reject) =>
      this.pending.push({ kind, range, sector, count, resolve, reject }),
    );
  }
  inflight(): number {
    return this.pending.reduce((sum, p) => sum + p.count, 0);
  }
  gatheringWrites(): boolean {
    return this.gathering;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.splice(0)) p.reject(unavailable());
    setImmediate(() => {
      for (const l of this.listeners.splice(0)) l();
    });
  }
  onClose(listener: () => void): void {
    this.listeners.push(listener);
  }
  completeAll(): void {
    for (const p of this.pending.splice(0)) p.resolve(Buffer.alloc(4096 * p.count, this.rank));
  }
}

function unavailable(code = "ECONNRESET"): AtomicDiskError {
  return new AtomicDiskError("REPLICA_UNAVAILABLE", "gone", {
    cause: Object.assign(new Error(code), { code }),
  });
}

type Mode = "ok" | "refused" | "hang" | "slow-refused";

function makePool(connectionsPerReplica = 1) {
  const links: FakeLink[] = [];
  const mode = new Map<number, Mode>([
    [1, "ok"],
    [2, "ok"],
    [3, "ok"],
  ]);
  const pool = new ReplicaPool({
    sectors: 100,
    replicas: 3,
    connectionsPerReplica,
    log: pino({ level: "silent" }),
    connect: (rank) => {
      const m = mode.get(rank)!;
      if (m === "refused") return Promise.reject(unavailable("ECONNREFUSED"));
      if (m === "hang") return new Promise(() => {});
      if (m === "slow-refused") {
        return new Promise((_, reject) => setTimeout(() => reject(unavailable("ECONNREFUSED")), 300));
      }
      const link = new FakeLink(rank);
      links.push(link);
      return Promise.resolve(link);
    },
  });
  const live = (rank: number) => links.filter((l) => l.rank === rank && !l.closed);
  const writesTo = (rank: number) =>
    links.filter((l) => l.rank === rank).flatMap((l) => l.pending.filter((p) => p.kind === "write"));
  return { pool, links, mode, live, writesTo };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function rankOfWrite(links: FakeLink[]): number {
  const l = links.find((x) => !x.closed && x.pending.some((p) => p.kind === "write"));
  if (l === undefined) throw new Error("no pending write");
  return l.rank;
}

/** How a test issues its command: one sector, or a run of RUN sectors in one range command. */
interface Variant {
  name: string;
  range: boolean;
  count: number;
  read(pool: ReplicaPool, sector: number): Promise<Buffer>;
  write(pool: ReplicaPool, sector: number): Promise<void>;
}

const RUN = 16;
const variants: Variant[] = [
  {
    name: "single sector",
    range: false,
    count: 1,
    read: (pool, sector) => pool.readSector(sector),
    write: (pool, sector) => pool.writeSector(sector, Buffer.alloc(4096)),
  },
  {
    name: `range of ${RUN} sectors`,
    range: true,
    count: RUN,
    read: (pool, sector) => pool.readSectors(sector, RUN),
    write: (pool, sector) => pool.writeSectors(sector, Buffer.alloc(4096 * RUN)),
  },
];

/** Every command sent so far is of the variant's shape (kind of command and sector count). */
function expectShape(links: FakeLink[], v: Variant): void {
  for (const p of links.flatMap((l) => l.pending)) {
    expect(p.range).toBe(v.range);
    expect(p.count).toBe(v.count);
  }
}

describe.each(variants)("ReplicaPool ($name)", (v) => {
  it("retries a read on another replica as soon as its connection fails", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const read = v.read(pool, 5);
    await until(() => links.some((l) => l.pending.length > 0), "read sent");
    const first = links.find((l) => l.pending.length > 0)!;
    first.close();
    await until(() => links.some((l) => l !== first && l.pending.length > 0), "read resent");
    for (const l of links) l.completeAll();
    expect((await read).length).toBe(4096 * v.count);
    await pool.close();
  });

  it("resends a write whose connection broke to the same replica once it reconnects, never elsewhere", async () => {
    const { pool, links, live, writesTo } = makePool();
    await pool.start();
    const write = v.write(pool, 7);
    await until(() => links.some((l) => l.pending.length > 0), "write sent");
    expectShape(links, v);
    const rank = rankOfWrite(links);
    live(rank)[0]!.close();
    await until(() => live(rank).length === 1 && writesTo(rank).length === 1, "resent after reconnect");
    expectShape(links, v);
    for (const other of [1, 2, 3].filter((r) => r !== rank)) expect(writesTo(other)).toHaveLength(0);
    live(rank)[0]!.completeAll();
    await write;
    await pool.close();
  });

  it("reroutes a write only after a reconnect to its replica was refused", async () => {
    const { pool, links, mode, writesTo } = makePool();
    await pool.start();
    const write = v.write(pool, 9);
    await until(() => links.some((l) => l.pending.length > 0), "write sent");
    const rank = rankOfWrite(links);
    mode.set(rank, "refused");
    links.find((l) => l.rank === rank)!.close();
    await until(() => [1, 2, 3].some((r) => r !== rank && writesTo(r).length === 1), "rerouted");
    for (const l of links) l.completeAll();
    await write;
    await pool.close();
  });

  it("keeps a write waiting while its replica's reconnect hangs (no resend elsewhere)", async () => {
    const { pool, links, mode, writesTo } = makePool();
    await pool.start();
    let settled = false;
    const write = v.write(pool, 11).finally(() => {
      settled = true;
    });
    await until(() => links.some((l) => l.pending.length > 0), "write sent");
    const rank = rankOfWrite(links);
    mode.set(rank, "hang");
    links.find((l) => l.rank === rank)!.close();
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).toBe(false);
    for (const other of [1, 2, 3].filter((r) => r !== rank)) expect(writesTo(other)).toHaveLength(0);
    await pool.close();
    await expect(write).rejects.toThrow();
  });

  it("never resends a slow write", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const write = v.write(pool, 13);
    await new Promise((r) => setTimeout(r, 300));
    const writes = links.flatMap((l) => l.pending.filter((p) => p.kind === "write"));
    expect(writes).toHaveLength(1);
    for (const l of links) l.completeAll();
    await write;
    await pool.close();
  });
  it("ignores a refusal from a connect attempt that started before the write's connection failed", async () => {
    const { pool, links, mode, live, writesTo } = makePool(2);
    await pool.start();
    const write = v.write(pool, 15);
    await until(() => links.some((l) => l.pending.length > 0), "write sent");
    const rank = rankOfWrite(links);
    const [withWrite, other] = [
      live(rank).find((l) => l.pending.length > 0)!,
      live(rank).find((l) => l.pending.length === 0)!,
    ];
    // The idle connection drops first; its reconnect attempt starts now and is refused later.
    mode.set(rank, "slow-refused");
    other.close();
    await new Promise((r) => setTimeout(r, 100));
    // Then the write's connection drops; every later attempt hangs, so only the stale refusal arrives.
    mode.set(rank, "hang");
    withWrite.close();
    await new Promise((r) => setTimeout(r, 600));
    for (const r of [1, 2, 3].filter((x) => x !== rank)) expect(writesTo(r)).toHaveLength(0);
    await pool.close();
    await expect(write).rejects.toThrow();
  });
});

describe("ReplicaPool runs of one sector", () => {
  it("sends a run of one sector as the standard READ / WRITE, which every replica knows", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const read = pool.readSectors(3, 1);
    const write = pool.writeSectors(4, Buffer.alloc(4096));
    await until(() => links.flatMap((l) => l.pending).length === 2, "both sent");
    for (const p of links.flatMap((l) => l.pending)) expect(p).toMatchObject({ range: false, count: 1 });
    for (const l of links) l.completeAll();
    expect((await read).length).toBe(4096);
    await write;
    await pool.close();
  });

  it("balances by sectors in flight: a range of 16 weighs more than a single-sector command", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const range = pool.writeSectors(0, Buffer.alloc(16 * 4096));
    const reads = [pool.readSector(1), pool.readSector(2), pool.readSector(3)];
    await until(() => links.flatMap((l) => l.pending).length === 4, "all sent");
    const withRange = links.find((l) => l.pending.some((p) => p.range))!;
    expect(withRange.pending).toHaveLength(1);
    for (const l of links) l.completeAll();
    await Promise.all([range, ...reads]);
    await pool.close();
  });
});

describe("ReplicaPool placement", () => {
  it("packs writes on one replica up to GATEWAY_WRITE_PACK_SECTORS in flight, then spills over; reads spread", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const sectorsAt = (rank: number, kind: "read" | "write") =>
      links
        .filter((l) => l.rank === rank)
        .flatMap((l) => l.pending.filter((p) => p.kind === kind))
        .reduce((sum, p) => sum + p.count, 0);
    // 32 single-sector writes: all on one replica, so its coordinator can group them.
    const writes = Array.from({ length: 32 }, (_, i) => pool.writeSector(i, Buffer.alloc(4096)));
    await until(() => links.flatMap((l) => l.pending).length === 32, "writes sent");
    const packed = [1, 2, 3].filter((rank) => sectorsAt(rank, "write") > 0);
    expect(packed).toHaveLength(1);
    // Runs that take that replica past the limit go elsewhere.
    const runs = Array.from({ length: 2 }, (_, i) =>
      pool.writeSectors(256 * (i + 1), Buffer.alloc(256 * 4096)),
    );
    await until(() => links.flatMap((l) => l.pending).length === 34, "runs sent");
    expect([1, 2, 3].filter((rank) => sectorsAt(rank, "write") > 0).length).toBeGreaterThan(1);
    expect(sectorsAt(packed[0]!, "write")).toBeLessThanOrEqual(GATEWAY_WRITE_PACK_SECTORS + 256);
    // Reads go to the least loaded connections.
    const reads = Array.from({ length: 3 }, (_, i) => pool.readSector(i));
    await until(() => links.flatMap((l) => l.pending).length === 37, "reads sent");
    expect(sectorsAt(packed[0]!, "read")).toBe(0);
    for (const l of links) l.completeAll();
    await Promise.all([...writes, ...runs, ...reads]);
    await pool.close();
  });
});

describe("ReplicaPool write links", () => {
  it("sends the single-sector writes of one turn on the link already gathering them, not spread over the replica's links", async () => {
    const { pool, links } = makePool(2);
    await pool.start();
    const writes = Array.from({ length: 8 }, (_, i) => pool.writeSector(i, Buffer.alloc(4096)));
    await until(() => links.flatMap((l) => l.pending).length === 8, "writes sent");
    expect(links.filter((l) => l.pending.length > 0)).toHaveLength(1);
    for (const l of links) l.completeAll();
    await Promise.all(writes);
    await pool.close();
  });
});

describe("ReplicaPool HELD_MAP (BLOCK_STATUS)", () => {
  const heldAt = (links: FakeLink[], rank: number, kind: Pending["kind"] = "held") =>
    links.filter((l) => l.rank === rank).flatMap((l) => l.pending.filter((p) => p.kind === kind));
  const answer = (links: FakeLink[], rank: number, bits: number[], kind: Pending["kind"] = "held") => {
    for (const p of heldAt(links, rank, kind).splice(0)) {
      const link = links.find((l) => l.pending.includes(p))!;
      link.pending.splice(link.pending.indexOf(p), 1);
      p.resolve(Buffer.from(bits));
    }
  };

  it("asks every replica and answers with the OR of the first majority of answers", async () => {
    const { pool, links } = makePool();
    await pool.start();
    let result: Buffer | undefined;
    const held = pool.heldMap(0, 16).then((b) => {
      result = b;
    });
    await until(() => [1, 2, 3].every((r) => heldAt(links, r).length === 1), "a HELD_MAP at every replica");
    answer(links, 3, [0b1000_0000, 0]);
    await new Promise((r) => setTimeout(r, 20));
    expect(result, "one answer is not a majority").toBeUndefined();
    answer(links, 1, [0b0000_0001, 0b1000_0000]);
    await held;
    // Replica 2 never answered: it does not hold the map up.
    expect(result).toEqual(Buffer.from([0b1000_0001, 0b1000_0000]));
    await pool.close();
  });

  it("answers HELD_PAGES the same way: a page per bit, ORed over the first majority", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const held = pool.heldPages(2048, 16);
    await until(
      () => [1, 2, 3].every((r) => heldAt(links, r, "pages").length === 1),
      "a HELD_PAGES at every replica",
    );
    expect(heldAt(links, 1, "pages")[0]).toMatchObject({ sector: 2048, count: 16 });
    answer(links, 2, [0b0010_0000, 0], "pages");
    answer(links, 3, [0, 0b0000_0001], "pages");
    expect(await held).toEqual(Buffer.from([0b0010_0000, 0b0000_0001]));
    await pool.close();
  });

  it("a sector only the replica that did not answer holds is reported not held (a majority said so)", async () => {
    const { pool, links } = makePool();
    await pool.start();
    const held = pool.heldMap(0, 8);
    await until(() => [1, 2, 3].every((r) => heldAt(links, r).length === 1), "a HELD_MAP at every replica");
    answer(links, 1, [0]);
    answer(links, 2, [0]);
    expect(await held).toEqual(Buffer.from([0]));
    await pool.close();
  });

  it("waits while fewer than a majority are up, and asks a replica again after its connection failed", async () => {
    const { pool, links, mode, live } = makePool();
    await pool.start();
    mode.set(2, "hang");
    mode.set(3, "hang");
    for (const l of [...live(2), ...live(3)]) l.close();
    let result: Buffer | undefined;
    const held = pool.heldMap(0, 8).then((b) => {
      result = b;
    });
    await until(() => heldAt(links, 1).length === 1, "a HELD_MAP at replica 1");
    answer(links, 1, [0]);
    await new Promise((r) => setTimeout(r, 50));
    expect(result, "one of three is no majority").toBeUndefined();
    mode.set(3, "ok");
    await until(() => heldAt(links, 3).length === 1, "a HELD_MAP at replica 3 once it is up");
    for (const l of live(3)) l.close(); // fails: asked again after the reconnect
    await until(() => heldAt(links, 3).length === 1, "the HELD_MAP asked again at replica 3");
    answer(links, 3, [0b0100_0000]);
    await held;
    expect(result).toEqual(Buffer.from([0b0100_0000]));
    await pool.close();
  });
});
