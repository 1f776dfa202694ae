// `--activity-log-ms`, shared by `replica` and `nbd`: how often the process logs its activity line.
import type { Argv } from "yargs";
import { AtomicDiskError } from "../util/errors.js";
import { ACTIVITY_LOG_INTERVAL_MS } from "../util/limits.js";

export interface ActivityLogArgs {
  "activity-log-ms": number;
}

export function withActivityLogOption<T>(y: Argv<T>): Argv<T & ActivityLogArgs> {
  return y.option("activity-log-ms", {
    type: "number",
    default: ACTIVITY_LOG_INTERVAL_MS,
    describe: "log an activity line (rates, latencies) this often while busy; 0: never",
  });
}

/** The validated interval (0: no activity log). */
export function activityLogMs(args: ActivityLogArgs): number {
  const ms = args["activity-log-ms"];
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new AtomicDiskError(
      "CONFIG_INVALID",
      `--activity-log-ms must be a non-negative integer, got ${ms}`,
    );
  }
  return ms;
}
