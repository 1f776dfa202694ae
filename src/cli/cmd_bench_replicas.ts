// `atomic-disk bench-replicas`: starts N replica processes on this machine (data in a temp dir on
// the real disk, so fsync costs what it costs) and drives them over pipelined client connections:
// durable 4 KiB writes per second, reads per second, p50/p99 latency, and each replica's CPU use.

import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CommandModule } from "yargs";
import { ReplicaConnection } from "../client/replica_connection.js";
import { AtomicDiskError } from "../util/errors.js";
import { MAX_RANGE_SECTORS, SECTOR_SIZE_BYTES } from "../util/limits.js";
import {
  freeLoopbackPorts,
  replicaArgs,
  replicaLogPath,
  spawnCli,
  stopChild,
  waitListening,
} from "./child_processes.js";
import { guarded } from "./cli_errors.js";
import { type ClusterConfig, loadClusterConfig, newClusterConfigJson } from "./config.js";

/** How long a benchmark replica may take to start. */
const BENCH_START_TIMEOUT_MS = 15_000;
/** Sectors touched: large enough that concurrent ops rarely queue on one sector. */
const BENCH_WORKING_SET_SECTORS = 65_536;

interface BenchArgs {
  seconds: number;
  "warmup-seconds": number;
  connections: number;
  depth: number;
  replicas: number;
  dir?: string;
  "cpu-prof": boolean;
  keep: boolean;
  only?: "write" | "read";
  "run-sectors": number;
}

export interface PhaseResult {
  phase: "write" | "read";
  /** Sectors per command (1: standard READ/WRITE; more: READ_RANGE/WRITE_RANGE). */
  runSectors: number;
  ops: number;
  errors: number;
  seconds: number;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU seconds per replica process during the phase (user + system). */
  replicaCpuSeconds: number[];
  /** CPU seconds of this benchmark process (the clients) during the phase. */
  clientCpuSeconds: number;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** User + system CPU seconds of a pid, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of stat(5); index 11 and 12 after the comm field.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

async function runPhase(
  phase: "write" | "read",
  connections: ReplicaConnection[],
  depth: number,
  durationMs: number,
  sectors: number,
  pids: Array<number | undefined>,
  runSectors: number,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  let errors = 0;
  const payload = randomBytes(SECTOR_SIZE_BYTES * runSectors);
  // Runs start at multiples of their length, so concurrent runs overlap only when they are equal.
  const runSlots = Math.floor(Math.min(sectors, BENCH_WORKING_SET_SECTORS * runSectors) / runSectors);
  const cpuBefore = pids.map(cpuSeconds);
  const clientCpuBefore = process.cpuUsage();
  const start = performance.now();
  const deadline = start + durationMs;
  const worker = async (connection: ReplicaConnection) => {
    while (performance.now() < deadline) {
      const sector = Math.floor(Math.random() * runSlots) * runSectors;
      const t0 = performance.now();
      try {
        if (runSectors === 1) {
          if (phase === "write") await connection.write(sector, payload);
          else await connection.read(sector);
        } else if (phase === "write") await connection.writeRange(sector, payload);
        else await connection.readRange(sector, runSectors);
        latencies.push(performance.now() - t0);
      } catch (err) {
        // The first error says what went wrong; the count says how often.
        if (errors === 0) process.stderr.write(`bench-replicas: first ${phase} error: ${String(err)}\n`);
        errors++;
        if (errors > 1_000) throw new AtomicDiskError("REPLICA_UNAVAILABLE", `too many ${phase} errors`);
      }
    }
  };
  await Promise.all(connections.flatMap((c) => Array.from({ length: depth }, () => worker(c))));
  const seconds = (performance.now() - start) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  return {
    phase,
    runSectors,
    ops: latencies.length,
    errors,
    seconds,
    opsPerSecond: latencies.length / seconds,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    replicaCpuSeconds: pids.map((pid, i) => cpuSeconds(pid) - cpuBefore[i]!),
    clientCpuSeconds: (() => {
      const used = process.cpuUsage(clientCpuBefore);
      return (used.user + used.system) / 1e6;
    })(),
  };
}

function formatTable(results: PhaseResult[], replicas: number): string {
  const header = [
    "phase",
    "ops",
    "errors",
    "ops/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    ...Array.from({ length: replicas }, (_, i) => `cpu r${i + 1}`),
    "replica cpu µs/op",
    "client cpu",
  ];
  const rows = results.map((r) => [
    r.phase,
    String(r.ops),
    String(r.errors),
    r.opsPerSecond.toFixed(0),
    ((r.opsPerSecond * r.runSectors * SECTOR_SIZE_BYTES) / 1e6).toFixed(1),
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    ...r.replicaCpuSeconds.map((s) => `${((s / r.seconds) * 100).toFixed(0)}%`),
    // CPU spent by all replicas per completed op: the efficiency figure that a loaded, shared
    // machine does not distort the way it distorts ops/s.
    ((r.replicaCpuSeconds.reduce((a, b) => a + b, 0) / Math.max(1, r.ops)) * 1e6).toFixed(0),
    `${((r.clientCpuSeconds / r.seconds) * 100).toFixed(0)}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

export const benchReplicasCommand: CommandModule<object, BenchArgs> = {
  command: "bench-replicas",
  describe: "Benchmark a local replica cluster: durable writes/s, reads/s, latency",
  builder: (y) =>
    y
      .option("only", {
        choices: ["write", "read"] as const,
        describe: "run only this phase (for profiling one path)",
      })
      .option("seconds", {
        type: "number",
        default: 10,
        describe: "total run time (half writes, half reads)",
      })
      .option("warmup-seconds", {
        type: "number",
        default: 2,
        describe: "writes before the measured phases, not counted (JIT, first growth of the sector file)",
      })
      .option("connections", {
        type: "number",
        default: 4,
        describe: "client connections (spread over replicas)",
      })
      .option("depth", { type: "number", default: 32, describe: "commands in flight per connection" })
      .option("replicas", { type: "number", default: 3, describe: "replica processes" })
      .option("dir", { type: "string", describe: "parent directory for data (default: the OS temp dir)" })
      .option("cpu-prof", {
        type: "boolean",
        default: false,
        describe: "write V8 CPU profiles of the replicas",
      })
      .option("keep", { type: "boolean", default: false, describe: "keep the data dir afterwards" })
      .option("run-sectors", {
        type: "number",
        default: 1,
        describe: `sectors per command: 1 = READ/WRITE, 2..${MAX_RANGE_SECTORS} = READ_RANGE/WRITE_RANGE`,
      }),
  handler: guarded(async (args: BenchArgs) => {
    // Per-connection info lines would drown the table; replicas inherit this too (less overhead).
    process.env.ATOMIC_DISK_LOG_LEVEL ??= "warn";
    for (const [name, value] of [
      ["seconds", args.seconds],
      ["connections", args.connections],
      ["depth", args.depth],
      ["replicas", args.replicas],
      ["run-sectors", args["run-sectors"]],
    ] as const) {
      if (!(value > 0) || !Number.isFinite(value))
        throw new AtomicDiskError("CONFIG_INVALID", `--${name} must be > 0`);
    }
    const runSectors = args["run-sectors"];
    if (!Number.isInteger(runSectors) || runSectors > MAX_RANGE_SECTORS)
      throw new AtomicDiskError(
        "CONFIG_INVALID",
        `--run-sectors must be an integer in 1..${MAX_RANGE_SECTORS}`,
      );
    const dir = mkdtempSync(join(args.dir ?? tmpdir(), "atomic-disk-bench-"));
    const ports = await freeLoopbackPorts(args.replicas);
    const configPath = join(dir, "cluster.json");
    writeFileSync(
      configPath,
      JSON.stringify(
        newClusterConfigJson({ replicas: ports.map((p) => `127.0.0.1:${p}`), sectors: 262_144 }),
      ),
    );
    const config: ClusterConfig = loadClusterConfig(configPath);
    const nodeArgs = args["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", join(dir, "profiles")] : [];
    const children: ChildProcess[] = [];
    const connections: ReplicaConnection[] = [];
    try {
      for (let rank = 1; rank <= args.replicas; rank++) {
        children.push(spawnCli(replicaArgs(configPath, rank, dir), replicaLogPath(dir, rank), nodeArgs));
      }
      await Promise.all(
        config.replicas.map((a, i) => waitListening(a, children[i]!, BENCH_START_TIMEOUT_MS)),
      );
      for (let i = 0; i < args.connections; i++) {
        const address = config.replicas[i % config.replicas.length]!;
        connections.push(
          await ReplicaConnection.connect({
            host: address.host,
            port: address.port,
            clientKey: config.clientKey,
          }),
        );
      }
      // Peer links come up asynchronously; one write per replica proves the mesh is complete.
      await Promise.all(connections.map((c, i) => c.write(i, Buffer.alloc(SECTOR_SIZE_BYTES))));
      const phaseMs = (args.seconds * 1000) / 2;
      const pids = children.map((c) => c.pid);
      const warmupSeconds = args["warmup-seconds"];
      if (!(warmupSeconds >= 0)) throw new AtomicDiskError("CONFIG_INVALID", "--warmup-seconds must be >= 0");
      let warmup = "";
      if (warmupSeconds > 0) {
        const w = await runPhase(
          "write",
          connections,
          args.depth,
          warmupSeconds * 1000,
          config.sectors,
          pids,
          runSectors,
        );
        warmup = `warm-up (not counted): ${w.ops} writes in ${w.seconds.toFixed(1)} s\n`;
      }
      const results = [];
      for (const phase of ["write", "read"] as const) {
        if (args.only !== undefined && args.only !== phase) continue;
        results.push(
          await runPhase(phase, connections, args.depth, phaseMs, config.sectors, pids, runSectors),
        );
      }
      process.stdout.write(
        `bench-replicas: ${args.replicas} replicas, ${args.connections} connections x depth ${args.depth}, ` +
          `${runSectors} x 4 KiB sectors per command, data in ${dir}\n${warmup}${formatTable(results, args.replicas)}\n`,
      );
    } finally {
      for (const c of connections) c.close();
      await Promise.all(children.map(stopChild));
      if (args["cpu-prof"]) process.stdout.write(`cpu profiles in ${join(dir, "profiles")}\n`);
      else if (!args.keep) rmSync(dir, { recursive: true, force: true });
    }
  }),
};
