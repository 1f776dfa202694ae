// Shared by the nbd_* integration tests: a real 3-replica cluster plus a real gateway process
// (`node dist/cli/main.js nbd`), and helpers to run the real NBD clients against it.

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { SERVER_NODE_FLAGS } from "../../src/cli/node_flags.js";
import { OptionReply } from "../../src/nbd/constants.js";
import {
  CLI_MAIN,
  REPO_ROOT,
  startCluster,
  type TestCluster,
  waitExit,
  waitListening,
} from "../helpers/cluster.js";
import { freePort } from "../helpers/ports.js";
import { RawClient } from "../unit/nbd_raw_client.js";

export const PROBE_DIR = join(REPO_ROOT, "test/integration");
/** Debian's python has python3-libnbd; pyenv's may shadow it on PATH. */
export const PYTHON = "/usr/bin/python3";
export const CLIENT_ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ""}` };

export interface Gateway {
  cluster: TestCluster;
  port: number;
  uri: string;
  logPath: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export async function startGateway(options: {
  sectors: number;
  timeoutMs?: number;
  extraArgs?: string[];
  replicaArgs?: string[];
}): Promise<Gateway> {
  const cluster = await startCluster({
    replicas: 3,
    sectors: options.sectors,
    ...(options.replicaArgs !== undefined ? { replicaArgs: options.replicaArgs } : {}),
  });
  const port = await freePort();
  const logPath = join(cluster.dir, "gateway.log");
  const logFd = openSync(logPath, "a");
  const args = [
    ...SERVER_NODE_FLAGS,
    CLI_MAIN,
    "nbd",
    "--config",
    cluster.configPath,
    "--listen",
    `127.0.0.1:${port}`,
  ];
  if (options.timeoutMs !== undefined) args.push("--timeout-ms", String(options.timeoutMs));
  args.push(...(options.extraArgs ?? []));
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await waitExit(child);
    await cluster.stop();
    // Logs stay for post-mortems only when asked for.
    if (process.env.ATOMIC_DISK_KEEP_TEST_DIRS === undefined)
      rmSync(cluster.dir, { recursive: true, force: true });
  };
  try {
    await waitListening({ host: "127.0.0.1", port }, 15_000, () => child.exitCode === null);
  } catch (err) {
    const log = existsSync(logPath) ? readFileSync(logPath, "utf8").slice(-2000) : "";
    await stop();
    throw new Error(`gateway did not start: ${(err as Error).message}\n${log}`);
  }
  return { cluster, port, uri: `nbd://127.0.0.1:${port}`, logPath, child, stop };
}

/** A raw NBD client of the gateway, past the handshake (GO of the default export). */
export async function transmissionClient(gw: Gateway): Promise<RawClient> {
  const c = await RawClient.connect(gw.port);
  await c.handshakeStart();
  const last = (await c.go("")).at(-1);
  if (last?.type !== OptionReply.Ack) {
    c.close();
    throw new Error(`GO of the default export answered ${last?.type}`);
  }
  return c;
}

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a client to completion (bounded by timeoutMs) and returns its output. */
export function run(cmd: string, args: string[], timeoutMs = 60_000, input?: Buffer): Run {
  const r = spawnSync(cmd, args, {
    env: CLIENT_ENV,
    timeout: timeoutMs,
    killSignal: "SIGKILL",
    maxBuffer: 64 * 1024 * 1024,
    ...(input !== undefined ? { input } : {}),
  });
  return { status: r.status, stdout: r.stdout?.toString() ?? "", stderr: r.stderr?.toString() ?? "" };
}

/** Like spawnSync but does not block the event loop (the test process may host servers). */
export function runAsync(cmd: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: CLIENT_ENV, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

export function python(script: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return runAsync(PYTHON, [join(PROBE_DIR, script), ...args], timeoutMs);
}

export function which(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { env: CLIENT_ENV }).status === 0;
}
