// DroppingLogDestination: a log that cannot be written never throws into the process, never
// retries forever, and says afterwards how many lines it lost.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { LOG_WRITE_RETRY_TOTAL_MS } from "../../src/util/limits.js";
import { DroppingLogDestination } from "../../src/util/log_destination.js";

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

/** A writeSync stand-in: fails with the queued codes first, then takes at most `chunk` bytes. */
function scripted(failures: string[], chunk = Number.POSITIVE_INFINITY) {
  const written: Buffer[] = [];
  const write = (_fd: number, buf: Buffer): number => {
    const code = failures.shift();
    if (code !== undefined) throw errno(code);
    const n = Math.min(chunk, buf.length);
    written.push(Buffer.from(buf.subarray(0, n)));
    return n;
  };
  return { write, text: () => Buffer.concat(written).toString() };
}

describe("DroppingLogDestination", () => {
  it("drops lines a full device refuses (/dev/full, ENOSPC) without throwing, and counts them", () => {
    const fd = openSync("/dev/full", "w");
    try {
      const dest = new DroppingLogDestination(fd);
      const logger = pino({ base: null }, dest);
      for (let i = 0; i < 5; i++) logger.info({ i }, "line");
      expect(dest.totalDroppedLines).toBe(5);
    } finally {
      closeSync(fd);
    }
  });

  it("after a disk-full spell, writes a note of how many lines were lost before the next line", () => {
    const io = scripted(["ENOSPC", "ENOSPC", "EIO"]);
    const dest = new DroppingLogDestination(9, io.write);
    dest.write("a\n");
    dest.write("b\n");
    dest.write("c\n");
    dest.write("d\n");
    const lines = io.text().trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, msg: "log lines dropped", dropped: 3 });
    expect(lines[1]).toBe("d");
    expect(dest.totalDroppedLines).toBe(3);
    dest.write("e\n");
    expect(io.text().endsWith("d\ne\n")).toBe(true);
  });

  it("finishes partial writes and waits out a short EAGAIN, but gives a stuck pipe up within its budget", () => {
    const io = scripted(["EAGAIN", "EINTR"], 3);
    const dest = new DroppingLogDestination(9, io.write);
    dest.write("hello world\n");
    expect(io.text()).toBe("hello world\n");
    expect(dest.totalDroppedLines).toBe(0);

    const stuck = scripted(Array.from({ length: 10_000 }, () => "EAGAIN"));
    const slow = new DroppingLogDestination(9, stuck.write);
    const startedMs = performance.now();
    slow.write("never\n");
    expect(slow.totalDroppedLines).toBe(1);
    // The budget, plus slack for a preempted test process; unbounded retries would never return.
    expect(performance.now() - startedMs).toBeLessThan(LOG_WRITE_RETRY_TOTAL_MS + 1000);
  });

  it("writes every line of a real file in order", () => {
    const dir = mkdtempSync(join(tmpdir(), "atomic-disk-log-"));
    try {
      const path = join(dir, "log");
      const fd = openSync(path, "w");
      const logger = pino({ base: null, timestamp: false }, new DroppingLogDestination(fd));
      for (let i = 0; i < 100; i++) logger.info({ i });
      closeSync(fd);
      const lines = readFileSync(path, "utf8").trimEnd().split("\n");
      expect(lines.map((l) => JSON.parse(l).i)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
