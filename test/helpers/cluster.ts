// Real replica processes for integration tests: `node dist/cli/main.js replica` per rank, on free
// loopback ports, each with its own data dir. Only pids started here are ever signalled.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { replicaArgs, replicaDataDir, replicaLogPath } from "../../src/cli/child_processes.js";
import {
  type ClusterConfig,
  type HostPort,
  newClusterConfigJson,
  parseClusterConfig,
} from "../../src/cli/config.js";
import { SERVER_NODE_FLAGS } from "../../src/cli/node_flags.js";
import { AtddDecoder } from "../../src/protocol/decoder.js";
import type { ClientResponse } from "../../src/protocol/messages.js";
import { freePorts } from "./ports.js";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI_MAIN = join(REPO_ROOT, "dist/cli/main.js");

/** Bound on how long a replica may take to accept connections after spawn (slow shared CI machine). */
const START_TIMEOUT_MS = 15_000;
const POLL_INTERVAL_MS = 10;
const BUILD_LOCK_TIMEOUT_MS = 120_000;

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtimeMs(path));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Builds dist/ when it is missing or older than src/. Parallel test files serialize on a lock
 * directory so only one tsc runs; the others wait and then see a fresh build.
 */
export function ensureBuilt(): void {
  const fresh = () =>
    existsSync(CLI_MAIN) && statSync(CLI_MAIN).mtimeMs >= newestMtimeMs(join(REPO_ROOT, "src"));
  if (fresh()) return;
  const lock = join(REPO_ROOT, "dist.build-lock");
  const deadline = Date.now() + BUILD_LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // A lock older than the longest build was left by a test run that was killed mid-build.
      try {
        if (Date.now() - statSync(lock).mtimeMs > BUILD_LOCK_TIMEOUT_MS) rmdirSync(lock);
      } catch {
        // Released or cleared by another waiter meanwhile.
      }
      if (Date.now() > deadline) throw new Error(`build lock ${lock} held too long; remove it if stale`);
      sleepSync(200);
    }
  }
  try {
    if (fresh()) return;
    // tsc emits even with type errors elsewhere in the tree; only a missing main.js is fatal here.
    spawnSync(process.execPath, [join(REPO_ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"], {
      cwd: REPO_ROOT,
      stdio: "ignore",
    });
    if (!existsSync(CLI_MAIN)) throw new Error("build failed: dist/cli/main.js missing");
  } finally {
    rmdirSync(lock);
  }
}

/** Resolves once something accepts TCP connections at host:port; rejects after timeoutMs. */
export async function waitListening(
  address: HostPort,
  timeoutMs = START_TIMEOUT_MS,
  alive: () => boolean = () => true,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((done) => {
      const socket = connect({ host: address.host, port: address.port });
      socket.once("connect", () => {
        socket.destroy();
        done(true);
      });
      socket.once("error", () => done(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`process for ${address.host}:${address.port} exited before listening`);
    if (Date.now() > deadline) throw new Error(`nothing listening at ${address.host}:${address.port}`);
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
}

export function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export interface TestCluster {
  dir: string;
  configPath: string;
  config: ClusterConfig;
  addresses: HostPort[];
  /** Data directory of rank r (1-based). */
  dataDir(rank: number): string;
  /** Log file (stdout + stderr) of rank r. */
  logPath(rank: number): string;
  pid(rank: number): number | undefined;
  /** SIGKILL rank r (kill -9) and wait until it is gone. */
  kill(rank: number): Promise<void>;
  /** (Re)start rank r with the same data dir; resolves once it accepts connections. */
  start(rank: number): Promise<void>;
  /** SIGKILL every replica this cluster started. */
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  replicas: number;
  sectors: number;
  /** Parent directory for config, data and logs; a fresh temp dir when omitted. */
  dir?: string;
  /** Extra environment for the replica processes (e.g. ATOMIC_DISK_LOG_LEVEL). */
  env?: Record<string, string>;
  /** Extra arguments of every `atomic-disk replica` (e.g. --activity-log-ms). */
  replicaArgs?: string[];
}

export async function startCluster(options: StartClusterOptions): Promise<TestCluster> {
  ensureBuilt();
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "atomic-disk-cluster-"));
  mkdirSync(dir, { recursive: true });
  const ports = await freePorts(options.replicas);
  const json = newClusterConfigJson({
    replicas: ports.map((p) => `127.0.0.1:${p}`),
    sectors: options.sectors,
  });
  const configPath = join(dir, "cluster.json");
  writeFileSync(configPath, JSON.stringify(json, null, 2));
  const config = parseClusterConfig(JSON.parse(readFileSync(configPath, "utf8")));
  const children = new Map<number, ChildProcess>();

  const dataDir = (rank: number) => replicaDataDir(dir, rank);
  const logPath = (rank: number) => replicaLogPath(dir, rank);
  const checkRank = (rank: number) => {
    if (!Number.isInteger(rank) || rank < 1 || rank > options.replicas) throw new Error(`bad rank ${rank}`);
  };

  const kill = async (rank: number) => {
    checkRank(rank);
    const child = children.get(rank);
    if (child === undefined) return;
    children.delete(rank);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await waitExit(child);
  };

  const start = async (rank: number) => {
    checkRank(rank);
    if (children.has(rank)) throw new Error(`rank ${rank} is already running`);
    const logFd = openSync(logPath(rank), "a");
    const child = spawn(
      process.execPath,
      [...SERVER_NODE_FLAGS, CLI_MAIN, ...replicaArgs(configPath, rank, dir), ...(options.replicaArgs ?? [])],
      { cwd: REPO_ROOT, stdio: ["ignore", logFd, logFd], env: { ...process.env, ...options.env } },
    );
    closeSync(logFd);
    children.set(rank, child);
    try {
      await waitListening(config.replicas[rank - 1]!, START_TIMEOUT_MS, () => child.exitCode === null);
    } catch (err) {
      const log = existsSync(logPath(rank)) ? readFileSync(logPath(rank), "utf8").slice(-2000) : "";
      await kill(rank);
      throw new Error(`replica ${rank} did not start: ${(err as Error).message}\n${log}`);
    }
  };

  const stop = async () => {
    await Promise.all([...children.keys()].map((rank) => kill(rank)));
  };

  try {
    await Promise.all(Array.from({ length: options.replicas }, (_, i) => start(i + 1)));
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    dir,
    configPath,
    config,
    addresses: config.replicas,
    dataDir,
    logPath,
    pid: (rank) => children.get(rank)?.pid,
    kill,
    start,
    stop,
  };
}

/**
 * A bare client socket for tests that must send bytes no well-behaved client would (bad tags,
 * garbage, out-of-range sectors) and see each response as it arrives.
 */
export class RawClient {
  private readonly responses: ClientResponse[] = [];
  private waiter: (() => void) | null = null;
  private readonly decoder: AtddDecoder;

  private constructor(
    readonly socket: Socket,
    clientKey: Buffer,
  ) {
    this.decoder = new AtddDecoder({ role: "client", clientKey });
    socket.on("data", (chunk: Buffer) => {
      for (const event of this.decoder.push(chunk)) {
        if (event.kind === "message" && event.message.kind === "clientResponse")
          this.responses.push(event.message);
      }
      this.waiter?.();
    });
    socket.on("error", () => {});
    socket.on("close", () => this.waiter?.());
  }

  static connect(address: HostPort, clientKey: Buffer): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: address.host, port: address.port });
      socket.once("connect", () => resolve(new RawClient(socket, clientKey)));
      socket.once("error", reject);
    });
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  isClosed(): boolean {
    return this.socket.destroyed || this.socket.readableEnded;
  }

  /** The next response, or an error after timeoutMs. */
  async next(timeoutMs = 5_000): Promise<ClientResponse> {
    const deadline = Date.now() + timeoutMs;
    while (this.responses.length === 0) {
      if (this.isClosed()) throw new Error("connection closed while waiting for a response");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.responses.shift()!;
  }

  close(): void {
    this.socket.destroy();
  }
}
