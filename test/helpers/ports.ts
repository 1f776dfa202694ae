// Free TCP ports on 127.0.0.1 for tests (below the ephemeral range; see src/net/free_ports.ts).
import { freeLoopbackPorts } from "../../src/net/free_ports.js";

/** `count` distinct ports that were free a moment ago. */
export function freePorts(count: number): Promise<number[]> {
  return freeLoopbackPorts(count);
}

export async function freePort(): Promise<number> {
  const [port] = await freeLoopbackPorts(1);
  return port!;
}
