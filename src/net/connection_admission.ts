// Which accepted connections a replica keeps. A connection is unidentified until its first
// authenticated message says what it is: a client (a client command under the client key) or a
// peer (a system message under the system key). The limits bound what connections can pin
// (MAX_UNIDENTIFIED_CONNECTIONS, MAX_CLIENT_CONNECTIONS in limits.ts) without ever locking peers
// out: a new connection past the unidentified limit evicts the OLDEST unidentified one instead of
// being refused, so a flood of idle sockets (which needs no key) cannot keep a restarting peer
// from getting in; the peer identifies itself with its first message and is never counted again.
// A peer link evicted while idle just reconnects when it next has something to send.
import type { RateLimitedLog } from "./rate_limited_log.js";

export type ConnectionRole = "client" | "peer";

/** What the admission needs of a connection. */
export interface AdmittedConnection {
  readonly remote: string;
  destroy(): void;
}

export interface ConnectionAdmissionOptions {
  maxUnidentified: number;
  maxClients: number;
  log: RateLimitedLog;
}

export interface ConnectionAdmissionStats {
  unidentified: number;
  clients: number;
  peers: number;
  evictedUnidentified: number;
  refusedClients: number;
}

export class ConnectionAdmission {
  /** In accept order (a Set iterates in insertion order): the first is the oldest. */
  private readonly unidentified = new Set<AdmittedConnection>();
  private readonly clients = new Set<AdmittedConnection>();
  private readonly peers = new Set<AdmittedConnection>();
  private evictedUnidentified = 0;
  private refusedClients = 0;

  constructor(private readonly options: ConnectionAdmissionOptions) {}

  /** A freshly accepted connection; may evict the oldest unidentified one to make room. */
  accepted(connection: AdmittedConnection): void {
    this.unidentified.add(connection);
    while (this.unidentified.size > this.options.maxUnidentified) {
      const oldest = this.unidentified.values().next().value as AdmittedConnection;
      this.unidentified.delete(oldest);
      this.evictedUnidentified++;
      this.options.log.warn(
        { remote: oldest.remote, limit: this.options.maxUnidentified, evicted: this.evictedUnidentified },
        "closed the oldest unidentified connection to admit a new one",
      );
      oldest.destroy();
    }
  }

  /**
   * The connection's first authenticated message names its role. False: it must be closed now
   * (a client past the client limit), and the message must not be acted on.
   */
  identified(connection: AdmittedConnection, role: ConnectionRole): boolean {
    // Evicted meanwhile (destroy is asynchronous for the socket's last data): ignore it.
    if (!this.unidentified.delete(connection)) return false;
    if (role === "peer") {
      this.peers.add(connection);
      return true;
    }
    if (this.clients.size >= this.options.maxClients) {
      this.refusedClients++;
      this.options.log.warn(
        { remote: connection.remote, limit: this.options.maxClients, refused: this.refusedClients },
        "connection refused: too many client connections",
      );
      return false;
    }
    this.clients.add(connection);
    return true;
  }

  closed(connection: AdmittedConnection): void {
    this.unidentified.delete(connection);
    this.clients.delete(connection);
    this.peers.delete(connection);
  }

  stats(): ConnectionAdmissionStats {
    return {
      unidentified: this.unidentified.size,
      clients: this.clients.size,
      peers: this.peers.size,
      evictedUnidentified: this.evictedUnidentified,
      refusedClients: this.refusedClients,
    };
  }
}
