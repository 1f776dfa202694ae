// How the CLI fails: one clear line on stderr and exit code 1, never a stack trace (unless
// ATOMIC_DISK_DEBUG is set, for developers).
import { isAtomicDiskError } from "../util/errors.js";

export function failLine(err: unknown): string {
  if (isAtomicDiskError(err)) return `atomic-disk: ${err.message}`;
  if (err instanceof Error) return `atomic-disk: ${err.message}`;
  return `atomic-disk: ${String(err)}`;
}

export function exitWithError(err: unknown): never {
  const line = failLine(err).replace(/\s*\n\s*/g, " ");
  process.stderr.write(`${line}\n`);
  if (process.env.ATOMIC_DISK_DEBUG && err instanceof Error && err.stack)
    process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

/** Wraps a yargs handler so that any failure ends the process the documented way. */
export function guarded<A>(handler: (args: A) => Promise<void>): (args: A) => Promise<void> {
  return async (args: A) => {
    try {
      await handler(args);
    } catch (err) {
      exitWithError(err);
    }
  };
}
