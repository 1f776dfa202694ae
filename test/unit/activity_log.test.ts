// LatencyWindow: the percentiles an activity line reports, and that each take() starts a new window.
import { describe, expect, it } from "vitest";
import { LatencyWindow } from "../../src/util/activity_log.js";

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
