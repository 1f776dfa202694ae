// V8 flags for the long-running processes (replica, gateway). V8 reads them only at startup, so
// they reach a process through its command line: the `atomic-disk` script's shebang (`env -S`),
// the children `dev` and the benchmarks spawn, the tests' clusters, the Dockerfile. A process
// started without them works the same, only slower (main.ts warns).
//
// Why: with a replica's small live heap (~12 MB, old-generation limit 35 MB after a collection),
// `--trace-incremental-marking` showed marking started by V8's own task every ~125 ms, right after
// each mark-compact: 5-8 mark-compacts a second per replica under random 4 KiB writes, their
// concurrent marking about a sixth of the machine's CPU (perf). The likely reason: V8 starts
// marking early when the room under the limit is small next to the young generation
// (--max-semi-space-size=64 instead was a little slower, =2 faster in one run, =4 neither). An
// initial old-space limit of 256 MB keeps the room large. Measured on 3 replicas + gateway, 256 MiB
// volume, interleaved runs: random 4 KiB writes at QD32 6.8-9.1k/s at 158-213 us of cluster CPU each,
// against 5.1-5.9k/s at 258-305 us; 1 MiB writes 136 MB/s at 14.5 ms/MiB against 115 MB/s at 17.2.
// 64 and 128 gained less; 512 no more. The cost is memory: up to ~256 MB of garbage per process
// before a collection.
export const SERVER_NODE_FLAGS: readonly string[] = ["--initial-old-space-size=256"];

/** Whether this process was started with SERVER_NODE_FLAGS (on its command line or NODE_OPTIONS). */
export function hasServerNodeFlags(): boolean {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)];
  return SERVER_NODE_FLAGS.every((flag) => given.includes(flag));
}
