// Child processes of this same CLI (dev cluster, benchmark): spawning, waiting for a listener,
// and stopping exactly the pids we started.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export { freeLoopbackPorts } from "../net/free_ports.js";

import { AtomicDiskError } from "../util/errors.js";
import type { HostPort } from "./config.js";
import { SERVER_NODE_FLAGS } from "./node_flags.js";

/** Poll interval while waiting for a child to accept connections. */
const LISTEN_POLL_MS = 20;
/** A stopped child that ignores SIGTERM this long gets SIGKILL. */
const STOP_GRACE_MS = 5_000;

export const CLI_MAIN_PATH = join(dirname(fileURLToPath(import.meta.url)), "main.js");

/** Where `dev`, the benchmarks and the tests keep rank `rank`'s data under their directory. */
export function replicaDataDir(dir: string, rank: number): string {
  return join(dir, `replica-${rank}`);
}

/** Where `dev`, the benchmarks and the tests send rank `rank`'s stdout and stderr. */
export function replicaLogPath(dir: string, rank: number): string {
  return join(dir, `replica-${rank}.log`);
}

/** Arguments of `atomic-disk replica` for one rank of a cluster file, its data in replicaDataDir. */
export function replicaArgs(configPath: string, rank: number, dir: string): string[] {
  return ["replica", "--config", configPath, "--rank", String(rank), "--data", replicaDataDir(dir, rank)];
}

/**
 * Starts `node SERVER_NODE_FLAGS [nodeArgs] main.js <args>` with stdout and stderr appended to logPath (or inherited).
 * The child also gets an IPC channel, used for nothing but its end: a child that sees it close
 * (this process gone, even by SIGKILL) stops itself (stopWhenParentExits), so no replica or gateway
 * outlives the `dev` or benchmark process that started it.
 */
export function spawnCli(args: string[], logPath?: string, nodeArgs: string[] = []): ChildProcess {
  const argv = [...SERVER_NODE_FLAGS, ...nodeArgs, CLI_MAIN_PATH, ...args];
  if (logPath === undefined)
    return spawn(process.execPath, argv, { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const fd = openSync(logPath, "a");
  try {
    return spawn(process.execPath, argv, { stdio: ["ignore", fd, fd, "ipc"] });
  } finally {
    closeSync(fd);
  }
}

/**
 * In a process started by spawnCli: calls `stop` once the parent's end of the IPC channel closes.
 * A process started any other way (by hand, systemd) has no channel and is left alone. The channel
 * does not keep the event loop alive.
 */
export function stopWhenParentExits(stop: (reason: string) => void): void {
  const channel = process.channel;
  if (channel === undefined) return;
  channel.unref();
  process.once("disconnect", () => stop("parent exited"));
}

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

export function waitExit(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the child is gone. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => {
    if (!hasExited(child)) child.kill("SIGKILL");
  }, STOP_GRACE_MS);
  await waitExit(child);
  clearTimeout(timer);
}

function tryConnect(address: HostPort): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address.host, port: address.port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Resolves once address accepts connections; fails if the child exits or timeoutMs passes. */
export async function waitListening(
  address: HostPort,
  child: ChildProcess,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await tryConnect(address)) return;
    if (hasExited(child)) {
      throw new AtomicDiskError(
        "REPLICA_UNAVAILABLE",
        `child for ${address.host}:${address.port} exited early`,
      );
    }
    if (performance.now() > deadline) {
      throw new AtomicDiskError(
        "REPLICA_UNAVAILABLE",
        `nothing listening at ${address.host}:${address.port}`,
      );
    }
    await new Promise((r) => setTimeout(r, LISTEN_POLL_MS));
  }
}
