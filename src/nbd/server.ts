// The NBD gateway's listener (TCP or unix socket) and its sessions over one shared Volume.
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { RateLimitedLog } from "../net/rate_limited_log.js";
import { assert } from "../util/assert.js";
import { AtomicDiskError } from "../util/errors.js";
import {
  BAD_INPUT_LOG_INTERVAL_MS,
  NBD_HANDSHAKE_TIMEOUT_MS,
  NBD_MAX_CONNECTIONS,
  NBD_REQUEST_TIMEOUT_MS,
} from "../util/limits.js";
import { componentLogger, type Logger } from "../util/log.js";
import { NbdActivity } from "./activity.js";
import type { ExportInfo } from "./export_info.js";
import { formatListenAddress, type ListenAddress } from "./listen_address.js";
import type { SectorBackend } from "./sector_backend.js";
import { Session } from "./session.js";
import { Volume } from "./volume.js";

/** How long a stopping gateway lets in-flight requests finish before it closes their sockets. */
const SHUTDOWN_GRACE_MS = 5_000;

export interface NbdServerOptions {
  backend: SectorBackend;
  listen: ListenAddress;
  exportName?: string;
  timeoutMs?: number;
  /** How long a client may take to finish the handshake (default NBD_HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
  maxInflightSectors?: number;
  log?: Logger;
}

export class NbdServer {
  private readonly sessions = new Set<Session>();
  private readonly server: Server;
  private readonly log: Logger;
  private readonly volume: Volume;
  private readonly exportInfo: ExportInfo;
  private readonly timeoutMs: number;
  private readonly handshakeTimeoutMs: number;
  private nextSessionId = 1;
  /** Every request of every session, for the activity log. */
  readonly activity = new NbdActivity();

  private constructor(private readonly options: NbdServerOptions) {
    this.log = options.log ?? componentLogger("nbd");
    this.volume = new Volume(options.backend, options.maxInflightSectors);
    this.timeoutMs = options.timeoutMs ?? NBD_REQUEST_TIMEOUT_MS;
    assert(this.timeoutMs > 0, "timeoutMs must be positive");
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? NBD_HANDSHAKE_TIMEOUT_MS;
    assert(this.handshakeTimeoutMs > 0, "handshakeTimeoutMs must be positive");
    this.exportInfo = {
      name: options.exportName ?? "",
      description: "atomic-disk replicated volume",
      sizeBytes: this.volume.sizeBytes,
    };
    this.server = createServer((socket) => this.accept(socket));
    // Past the limit node closes each new socket at once; the flood is logged, rate-limited.
    this.server.maxConnections = NBD_MAX_CONNECTIONS;
    const refusedLog = new RateLimitedLog(this.log, BAD_INPUT_LOG_INTERVAL_MS);
    this.server.on("drop", (info) =>
      refusedLog.warn(
        { remote: info?.remoteAddress, limit: NBD_MAX_CONNECTIONS },
        "connection refused: too many open connections",
      ),
    );
  }

  static async start(options: NbdServerOptions): Promise<NbdServer> {
    const server = new NbdServer(options);
    await server.listen();
    return server;
  }

  /** The bound address (the real port when listening on port 0). */
  address(): ListenAddress {
    if (this.options.listen.kind === "unix") return this.options.listen;
    const a = this.server.address();
    assert(a !== null && typeof a !== "string", "tcp server has no address");
    return { kind: "tcp", host: this.options.listen.host, port: a.port };
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.all([...this.sessions].map((s) => s.shutdown(SHUTDOWN_GRACE_MS)));
    await closed;
    await this.options.backend.close();
    if (this.options.listen.kind === "unix") removeStaleSocket(this.options.listen.path);
    this.log.info("nbd gateway stopped");
  }

  private async listen(): Promise<void> {
    const listen = this.options.listen;
    if (listen.kind === "unix" && existsSync(listen.path)) {
      if (await socketAnswers(listen.path)) {
        throw new AtomicDiskError("ADDRESS_IN_USE", `${formatListenAddress(listen)} is already in use`);
      }
      removeStaleSocket(listen.path);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const where = formatListenAddress(listen);
        if (err.code === "EADDRINUSE")
          reject(new AtomicDiskError("ADDRESS_IN_USE", `${where} is already in use`));
        else
          reject(
            new AtomicDiskError("CONFIG_INVALID", `cannot listen on ${where}: ${err.message}`, {
              cause: err,
            }),
          );
      };
      this.server.once("error", onError);
      const ready = () => {
        this.server.off("error", onError);
        this.server.on("error", (err) => this.log.error({ err }, "nbd listener error"));
        this.log.info(
          {
            listen: formatListenAddress(this.address()),
            sizeBytes: this.exportInfo.sizeBytes,
            export: this.exportInfo.name,
          },
          "nbd gateway listening",
        );
        resolve();
      };
      if (listen.kind === "unix") this.server.listen(listen.path, ready);
      else this.server.listen({ host: listen.host, port: listen.port }, ready);
    });
  }

  private accept(socket: Socket): void {
    const id = this.nextSessionId++;
    const log = this.log.child({ session: id });
    log.info({ remote: socket.remoteAddress ?? "unix" }, "nbd client connected");
    const session = new Session(socket, {
      exportInfo: this.exportInfo,
      volume: this.volume,
      timeoutMs: this.timeoutMs,
      activity: this.activity,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      log,
    });
    this.sessions.add(session);
    socket.on("close", () => {
      this.sessions.delete(session);
      log.info("nbd client disconnected");
    });
  }
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

/** A socket file left by a dead gateway would make listen() fail with EADDRINUSE. */
function removeStaleSocket(path: string): void {
  try {
    if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // listen() reports the real problem.
  }
}
