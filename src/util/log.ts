// One pino root logger; every component takes a child. Lifecycle at info, per-request at debug.
// Never log keys or sector payloads.
import { type Logger, pino } from "pino";
import { DroppingLogDestination } from "./log_destination.js";

let root: Logger | undefined;

export function rootLogger(): Logger {
  if (root === undefined) {
    root = pino(
      {
        level: process.env.ATOMIC_DISK_LOG_LEVEL ?? "info",
        base: { pid: process.pid },
        redact: { paths: ["clientKey", "systemKey", "*.clientKey", "*.systemKey", "data"], remove: true },
      },
      new DroppingLogDestination(1),
    );
  }
  return root;
}

export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}

export type { Logger };
