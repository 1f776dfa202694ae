// Periodic "activity" lines at info: what a process did over the last interval (rates, latency
// percentiles, its event loop's delay), so that an operator sees load and where time goes without
// a metrics stack. Nothing is logged for an interval in which nothing happened.
import {
  createHistogram,
  type IntervalHistogram,
  monitorEventLoopDelay,
  type RecordableHistogram,
} from "node:perf_hooks";
import type { Logger } from "./log.js";

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Node's histograms take integers >= 1: latencies are kept in µs. */
const US_PER_MS = 1000;

const toMs = (us: number) => Math.round(us) / US_PER_MS;

/** Latencies of one kind of operation since the last take() (Node's HDR histogram, 3 digits). */
export class LatencyWindow {
  readonly #histogram: RecordableHistogram = createHistogram();

  /** One operation that started at startedMs (performance.now()) and ends now. */
  record(startedMs: number): void {
    this.#histogram.record(Math.max(1, Math.round((performance.now() - startedMs) * US_PER_MS)));
  }

  /** The window's summary (undefined if it is empty); the window starts again empty. */
  take(): LatencySummary | undefined {
    const h = this.#histogram;
    if (h.count === 0) return undefined;
    const summary = {
      count: h.count,
      p50Ms: toMs(h.percentile(50)),
      p99Ms: toMs(h.percentile(99)),
      maxMs: toMs(h.max),
    };
    h.reset();
    return summary;
  }
}

export interface ActivityLogOptions {
  logger: Logger;
  intervalMs: number;
  /** What happened since the last call, or null when nothing did (no line for that interval). */
  take: () => Record<string, unknown> | null;
}

export interface ActivityLog {
  stop(): void;
}

/** The delay monitor's sampling period: delays below it say nothing an operator acts on. */
const LOOP_DELAY_RESOLUTION_MS = 10;

/**
 * Logs `take()` every intervalMs, with the event loop's delay over the interval. The delay monitor
 * wakes the process every 10 ms, so it runs only while the process is busy: from the interval
 * after the first one with activity (whose line has no delay yet) until an idle interval. An idle
 * process wakes for this once per interval.
 */
export function startActivityLog(options: ActivityLogOptions): ActivityLog {
  const { logger, intervalMs } = options;
  let loopDelay: IntervalHistogram | undefined;
  const stopMonitor = () => {
    loopDelay?.disable();
    loopDelay = undefined;
  };
  const timer = setInterval(() => {
    const fields = options.take();
    if (fields === null) {
      stopMonitor();
      return;
    }
    logger.info({ intervalMs, ...fields, eventLoopDelayMs: loopDelaySummary(loopDelay) }, "activity");
    if (loopDelay === undefined) {
      loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
      loopDelay.enable();
    } else {
      loopDelay.reset();
    }
  }, intervalMs);
  // Never what keeps a process alive.
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      stopMonitor();
    },
  };
}

/** p50/p99/max of the monitor in ms (undefined, left out of the line, when it did not run). */
function loopDelaySummary(
  h: IntervalHistogram | undefined,
): { p50: number; p99: number; max: number } | undefined {
  if (h === undefined || h.count === 0) return undefined;
  // Every sample includes the monitor's own period: what is left is the delay.
  const delayMs = (ns: number) =>
    Math.max(0, Math.round(ns / 1e3 - LOOP_DELAY_RESOLUTION_MS * US_PER_MS) / US_PER_MS);
  return { p50: delayMs(h.percentile(50)), p99: delayMs(h.percentile(99)), max: delayMs(h.max) };
}
