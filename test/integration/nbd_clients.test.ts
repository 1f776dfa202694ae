// Real NBD clients (nbdinfo, nbd-client, libnbd, qemu-io) against a real gateway process in front
// of a real 3-replica cluster, all started here.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SERVER_NODE_FLAGS } from "../../src/cli/node_flags.js";
import { CLI_MAIN, REPO_ROOT, waitExit } from "../helpers/cluster.js";
import { type Gateway, python, runAsync, startGateway } from "./nbd_gateway.js";

const SECTORS = 16 * 1024; // 64 MiB
let gw: Gateway;

beforeAll(async () => {
  gw = await startGateway({ sectors: SECTORS });
}, 60_000);

afterAll(async () => {
  await gw?.stop();
});

describe("nbd gateway with real clients", () => {
  it("nbdinfo --json reports fixed newstyle, the volume size, flags and sane block sizes", async () => {
    const r = await runAsync("nbdinfo", ["--json", gw.uri]);
    expect(r.status, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.protocol).toBe("newstyle-fixed");
    expect(info.structured).toBe(true);
    const e = info.exports[0];
    expect(e["export-size"]).toBe(SECTORS * 4096);
    expect(e.contexts).toContain("base:allocation");
    for (const flag of ["can_flush", "can_fua", "can_multi_conn", "can_zero", "can_trim", "can_fast_zero"]) {
      expect(e[flag], flag).toBe(true);
    }
    expect(e.is_read_only).toBe(false);
    expect(e.block_size_minimum).toBeLessThanOrEqual(e.block_size_preferred);
    expect(e.block_size_preferred).toBe(4096);
    expect(e.block_size_maximum).toBe(32 * 1024 * 1024);
  });

  it("nbdinfo --list and nbd-client -l list the export", async () => {
    const list = await runAsync("nbdinfo", ["--list", "--json", gw.uri]);
    expect(list.status, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).exports).toHaveLength(1);
    const l = await runAsync("nbd-client", ["-l", "127.0.0.1", String(gw.port)]);
    expect(l.status, l.stderr + l.stdout).toBe(0);
    expect(l.stdout).toContain("Negotiation");
  });

  it("libnbd: round trips, unaligned and concurrent sub-sector writes, errnos that keep the connection", async () => {
    const r = await python("nbd_probe.py", [gw.uri], 120_000);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.size).toBe(SECTORS * 4096);
    expect(out.errors).toEqual({
      read_past_end: "EINVAL",
      write_past_end: "ENOSPC",
      zero_past_end: "ENOSPC",
      trim_past_end: "EINVAL",
      read_zero_bytes: "EINVAL",
      read_straddling_end: "EINVAL",
      read_too_big: "EINVAL",
    });
  }, 120_000);

  for (const modes of [[], ["pipelined"], ["structured"], ["structured", "pipelined"]]) {
    const name = modes.length === 0 ? "simple replies, one at a time" : modes.join(", ");
    it(`random requests of any type, flags, offset and length (${name}) each get one reply with an allowed errno, on a connection that stays usable, and every read returns what the writes before it imply`, async () => {
      const r = await python("nbd_fuzz.py", ["127.0.0.1", String(gw.port), "7", "1500", ...modes], 120_000);
      expect(r.status, r.stderr + r.stdout).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.requests).toBe(1500);
      // The checks ran: reads were compared with the model, junk got its errnos, and with
      // structured replies negotiated the reads came as chunks.
      expect(out.checked_reads).toBeGreaterThan(300);
      expect(out.replies["255/22"]).toBeGreaterThan(0);
      expect(out.replies["1/28"]).toBeGreaterThan(0);
      if (modes.includes("structured")) expect(out.chunks).toBeGreaterThan(500);
      else expect(out.chunks).toBe(0);
      // With structured replies base:allocation is negotiated: block status replies were checked,
      // zero extents against the model.
      if (modes.includes("structured")) {
        expect(out.checked_maps).toBeGreaterThan(10);
        expect(out.zero_extents).toBeGreaterThan(0);
      } else expect(out.checked_maps).toBe(0);
      // Errors are answered at once and sector I/O later, so pipelined replies overtake each other.
      if (modes.includes("pipelined")) expect(out.out_of_order).toBeGreaterThan(0);
    }, 120_000);
  }

  it("libnbd: two connections see each other's flushed and FUA writes", async () => {
    const r = await python("nbd_multiconn.py", [gw.uri, "60"], 60_000);
    expect(r.status, r.stderr).toBe(0);
  });

  it("libnbd option mode: LIST, INFO, LIST_META_CONTEXT, unknown export fails and the session goes on, ABORT", async () => {
    const r = await python("nbd_options.py", [gw.uri]);
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain("options ok");
  });

  it("qemu-io: pattern writes and reads, write -z, write -z -n, write -f, discard, unaligned, aio", async () => {
    const cmds = [
      "write -P 0xab 0 1M",
      "read -P 0xab 0 1M",
      "write -z 256k 256k",
      "read -P 0 256k 256k",
      "write -z -n 512k 64k",
      "read -P 0 512k 64k",
      "write -f -P 0x5 1M 64k",
      "read -P 0x5 1M 64k",
      "discard 2M 1M",
      "flush",
      "write -P 0x11 5000 1000",
      "read -P 0x11 5000 1000",
      "read -P 0xab 4096 904",
      "aio_write -P 0x33 3M 64k",
      "aio_write -P 0x44 4M 64k",
      "aio_flush",
      "read -P 0x33 3M 64k",
      "read -P 0x44 4M 64k",
    ];
    const args = ["-f", "raw", gw.uri, ...cmds.flatMap((c) => ["-c", c])];
    const r = await runAsync("qemu-io", args);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toContain("Pattern verification failed");
    const bad = await runAsync("qemu-io", ["-f", "raw", gw.uri, "-c", "read -P 0x99 0 4k"]);
    expect(bad.stdout).toContain("Pattern verification failed");
  });

  it("closes a connection that sends a garbage greeting reply, and keeps serving others", async () => {
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect({ host: "127.0.0.1", port: gw.port }, () => {
        s.write(Buffer.alloc(64, 0xee));
      });
      s.on("data", () => {});
      s.on("error", () => {});
      s.on("close", () => resolve(true));
      setTimeout(() => resolve(false), 10_000);
    });
    expect(closed).toBe(true);
    const r = await runAsync("nbdinfo", ["--size", gw.uri]);
    expect(r.stdout.trim()).toBe(String(SECTORS * 4096));
  });

  it("listens on a unix socket, and fails with one stderr line when the address is in use", async () => {
    const dir = mkdtempSync(join(tmpdir(), "atomic-disk-nbd-"));
    const sock = join(dir, "nbd.sock");
    const child = spawn(
      process.execPath,
      [...SERVER_NODE_FLAGS, CLI_MAIN, "nbd", "--config", gw.cluster.configPath, "--listen", `unix:${sock}`],
      {
        cwd: REPO_ROOT,
        stdio: "ignore",
      },
    );
    try {
      const deadline = Date.now() + 15_000;
      let info = await runAsync("nbdinfo", ["--size", `nbd+unix:///?socket=${sock}`]);
      while (info.status !== 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        info = await runAsync("nbdinfo", ["--size", `nbd+unix:///?socket=${sock}`]);
      }
      expect(info.stdout.trim()).toBe(String(SECTORS * 4096));
      const second = await runAsync(process.execPath, [
        ...SERVER_NODE_FLAGS,
        CLI_MAIN,
        "nbd",
        "--config",
        gw.cluster.configPath,
        "--listen",
        `unix:${sock}`,
      ]);
      expect(second.status).toBe(1);
      expect(second.stderr.trim().split("\n")).toHaveLength(1);
      expect(second.stderr).toContain("in use");
      const tcp = await runAsync(process.execPath, [
        ...SERVER_NODE_FLAGS,
        CLI_MAIN,
        "nbd",
        "--config",
        gw.cluster.configPath,
        "--listen",
        `127.0.0.1:${gw.port}`,
      ]);
      expect(tcp.status).toBe(1);
      expect(tcp.stderr).toContain("in use");
      const badConfig = await runAsync(process.execPath, [
        ...SERVER_NODE_FLAGS,
        CLI_MAIN,
        "nbd",
        "--config",
        join(dir, "missing.json"),
      ]);
      expect(badConfig.status).toBe(1);
      expect(badConfig.stderr.trim().split("\n")).toHaveLength(1);
    } finally {
      child.kill("SIGKILL");
      await waitExit(child);
    }
  });
  // The kernel client needs the nbd module (/dev/nbd0); machines without it skip this test.
  it.skipIf(!existsSync("/dev/nbd0") || process.getuid?.() !== 0)(
    "kernel nbd-client -b 4096: mkfs.ext4, mount, dd, umount, fsck, detach",
    async () => {
      const dev = "/dev/nbd0";
      const mnt = mkdtempSync(join(tmpdir(), "atomic-disk-kernel-"));
      mkdirSync(mnt, { recursive: true });
      const attach = await runAsync("nbd-client", [
        "127.0.0.1",
        String(gw.port),
        dev,
        "-b",
        "4096",
        "-t",
        "60",
      ]);
      expect(attach.status, attach.stderr).toBe(0);
      try {
        expect((await runAsync("mkfs.ext4", ["-q", "-F", dev], 120_000)).status).toBe(0);
        expect((await runAsync("mount", [dev, mnt])).status).toBe(0);
        const dd = await runAsync("dd", ["if=/dev/urandom", `of=${mnt}/f`, "bs=1M", "count=8", "conv=fsync"]);
        expect(dd.status, dd.stderr).toBe(0);
        expect((await runAsync("umount", [mnt])).status).toBe(0);
        expect((await runAsync("fsck.ext4", ["-fn", dev], 120_000)).status).toBe(0);
      } finally {
        await runAsync("umount", [mnt]);
        await runAsync("nbd-client", ["-d", dev]);
      }
    },
    300_000,
  );
});
