// Logging of events a hostile or broken peer can trigger at line rate (bad tags, garbage): counted
// always, logged at most once per interval with the count since the last line.
import type { Logger } from "../util/log.js";

export class RateLimitedLog {
  private suppressed = 0;
  private lastLogMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  warn(fields: Record<string, unknown>, message: string): void {
    const nowMs = performance.now();
    if (nowMs - this.lastLogMs < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.logger.warn({ ...fields, suppressedSinceLast: this.suppressed }, message);
    this.suppressed = 0;
    this.lastLogMs = nowMs;
  }
}
