// Where the gateway listens: "host:port" for TCP or "unix:/path/to.sock".
import { parseHostPort } from "../cli/config.js";
import { AtomicDiskError } from "../util/errors.js";

export type ListenAddress = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (path === "") throw new AtomicDiskError("CONFIG_INVALID", "--listen unix: needs a socket path");
    return { kind: "unix", path };
  }
  const { host, port } = parseHostPort(text, "--listen");
  return { kind: "tcp", host, port };
}

export function formatListenAddress(address: ListenAddress): string {
  return address.kind === "unix" ? `unix:${address.path}` : `${address.host}:${address.port}`;
}
