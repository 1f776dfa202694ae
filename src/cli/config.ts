// The cluster file shared by replicas and gateways:
//   {"sectors": 1048576, "replicas": ["127.0.0.1:7001", ...], "clientKey": "<64 hex>", "systemKey": "<128 hex>"}
// Replica r (1-based) listens at replicas[r-1].
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { CLIENT_KEY_BYTES, SYSTEM_KEY_BYTES } from "../protocol/messages.js";
import { AtomicDiskError } from "../util/errors.js";
import { MAX_REPLICAS, MAX_SECTORS } from "../util/limits.js";

export interface HostPort {
  host: string;
  port: number;
}

export interface ClusterConfig {
  sectors: number;
  replicas: HostPort[];
  clientKey: Buffer;
  systemKey: Buffer;
}

export interface ClusterConfigJson {
  sectors: number;
  replicas: string[];
  clientKey: string;
  systemKey: string;
}

function invalid(message: string): AtomicDiskError {
  return new AtomicDiskError("CONFIG_INVALID", message);
}

export function parseHostPort(text: string, what: string): HostPort {
  const match = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(text);
  if (match === null) throw invalid(`${what}: expected host:port, got ${JSON.stringify(text)}`);
  const port = Number(match[2]);
  if (port < 1 || port > 65535) throw invalid(`${what}: port ${port} out of range 1..65535`);
  const host = match[1]!.replace(/^\[|\]$/g, "");
  return { host, port };
}

function parseKey(value: unknown, bytes: number, what: string): Buffer {
  if (typeof value !== "string" || !new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`).test(value)) {
    throw invalid(`${what} must be ${bytes * 2} hex digits`);
  }
  return Buffer.from(value, "hex");
}

export function parseClusterConfig(json: unknown): ClusterConfig {
  if (typeof json !== "object" || json === null) throw invalid("config must be a JSON object");
  const o = json as Record<string, unknown>;
  const sectors = o.sectors;
  if (typeof sectors !== "number" || !Number.isSafeInteger(sectors) || sectors < 1 || sectors > MAX_SECTORS) {
    throw invalid(`sectors must be an integer in 1..${MAX_SECTORS}`);
  }
  if (!Array.isArray(o.replicas) || o.replicas.length < 1 || o.replicas.length > MAX_REPLICAS) {
    throw invalid(`replicas must be a list of 1..${MAX_REPLICAS} host:port strings`);
  }
  const replicas = o.replicas.map((r, i) => {
    if (typeof r !== "string") throw invalid(`replicas[${i}] must be a host:port string`);
    return parseHostPort(r, `replicas[${i}]`);
  });
  return {
    sectors,
    replicas,
    clientKey: parseKey(o.clientKey, CLIENT_KEY_BYTES, "clientKey"),
    systemKey: parseKey(o.systemKey, SYSTEM_KEY_BYTES, "systemKey"),
  };
}

export function loadClusterConfig(path: string): ClusterConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new AtomicDiskError("CONFIG_INVALID", `cannot read config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalid(`config ${path} is not valid JSON: ${(err as Error).message}`);
  }
  try {
    return parseClusterConfig(json);
  } catch (err) {
    if (err instanceof AtomicDiskError) throw invalid(`config ${path}: ${err.message}`);
    throw err;
  }
}

/** A new cluster file body with fresh random keys. */
export function newClusterConfigJson(options: { replicas: string[]; sectors: number }): ClusterConfigJson {
  const json: ClusterConfigJson = {
    sectors: options.sectors,
    replicas: options.replicas,
    clientKey: randomBytes(CLIENT_KEY_BYTES).toString("hex"),
    systemKey: randomBytes(SYSTEM_KEY_BYTES).toString("hex"),
  };
  parseClusterConfig(json);
  return json;
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}
