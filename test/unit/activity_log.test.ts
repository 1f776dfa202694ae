// LatencyWindow: the percentiles an activity line reports, and that each take() starts a new window;
// startActivityLog: which intervals get a line, and when the event-loop delay monitor runs.
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { LatencyWindow, startActivityLog } from "../../src/util/activity_log.js";

describe("LatencyWindow", () => {
  it("reports count, median, 99th percentile and maximum in ms, then starts empty", () => {
    const w = new LatencyWindow();
    expect(w.take()).toBeUndefined();
    for (let i = 0; i < 98; i++) w.record(performance.now() - 2);
    w.record(performance.now() - 20);
    w.record(performance.now() - 50);
    const s = w.take()!;
    expect(s.count).toBe(100);
    // Recording adds the time of the call itself (more if the process is preempted in it), and
    // Node's histogram keeps 3 significant digits: the bounds check units, not precision.
    expect(s.p50Ms).toBeGreaterThanOrEqual(2);
    expect(s.p50Ms).toBeLessThan(2.1);
    expect(s.p99Ms).toBeGreaterThanOrEqual(20);
    expect(s.p99Ms).toBeLessThan(25);
    expect(s.maxMs).toBeGreaterThanOrEqual(50);
    expect(s.maxMs).toBeLessThan(60);
    expect(w.take()).toBeUndefined();
  });

  it("records an operation that took no measurable time as 1 µs", () => {
    const w = new LatencyWindow();
    w.record(performance.now() + 5);
    expect(w.take()).toMatchObject({ count: 1, p50Ms: 0.001, maxMs: 0.001 });
  });
});

describe("startActivityLog", () => {
  it("logs one line per interval with activity, the event-loop delay from the second, none when idle", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
    // Busy for three intervals, then idle for three, then busy again for two.
    const script = [1, 2, 3, null, null, null, 4, 5];
    let calls = 0;
    let stopped!: () => void;
    const done = new Promise<void>((resolve) => {
      stopped = resolve;
    });
    const log = startActivityLog({
      logger,
      intervalMs: 100,
      take: () => {
        const n = script[calls++];
        if (calls === script.length) stopped();
        return n === null || n === undefined ? null : { n };
      },
    });
    await done;
    log.stop();
    expect(lines.map((l) => l.n)).toEqual([1, 2, 3, 4, 5]);
    expect(lines.every((l) => l.msg === "activity" && l.intervalMs === 100)).toBe(true);
    // The monitor starts after the first busy interval and stops at the first idle one, so the
    // first line of each busy stretch has no delay. The others have one once the monitor took a
    // sample in their interval (a loop stalled for a whole interval has none to report).
    const delays = lines.map(
      (l) => l.eventLoopDelayMs as { p50: number; p99: number; max: number } | undefined,
    );
    expect(delays[0]).toBeUndefined();
    expect(delays[3]).toBeUndefined();
    const measured = [delays[1], delays[2], delays[4]].filter((d) => d !== undefined);
    expect(measured.length).toBeGreaterThan(0);
    for (const d of measured) {
      expect(d.p50).toBeGreaterThanOrEqual(0);
      expect(d.p50).toBeLessThanOrEqual(d.p99);
      expect(d.p99).toBeLessThanOrEqual(d.max);
    }
  });
});
