// Assertions catch programmer errors (broken invariants). They stay on in production: continuing
// with corrupt state is worse than crashing, and a replica recovers from its own disk.
export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function unreachable(value: never, message = "unreachable"): never {
  throw new AssertionError(`${message}: ${JSON.stringify(value)}`);
}
