/**
 * PublicGateway: the gateway's public listeners (HTTP, HTTPS, one per TCP
 * exposure port), fed by the exposures of the gateway's desired state and
 * forwarding through an injected Upstream.
 *
 *   const pub = new PublicGateway({ upstream, certDir: '/etc/netwall/gateway/certs' });
 *   await pub.start('0.0.0.0', { http: 80, https: 443 });
 *   await pub.update(desired.exposures);   // on every new document
 *   pub.metrics();                          // for /metrics
 *   await pub.stop();
 */
import net from 'node:net';
import type { Server, Socket } from 'node:net';
import type { GatewayExposure } from '../../shared/desired.js';
import type { ConnInfo } from './core.js';
import { PublicCore } from './core.js';
import { HttpFront, rawReply } from './http.js';
import type { PublicLimits } from './limits.js';
import { clientKey, RateLimiter, resolveLimits, Slots } from './limits.js';
import type { PublicMetricsSnapshot } from './metrics.js';
import { PublicMetrics } from './metrics.js';
import { unmapIPv4 } from './proxy-protocol.js';
import type { RouteConflict } from './routes.js';
import { exposureKey, PublicRouter } from './routes.js';
import { acceptTcp } from './tcp.js';
import type { CertificatePair } from './tls.js';
import { CertStore, loadCertDirectory, TlsFront } from './tls.js';
import type { PublicLog, Upstream } from './types.js';

export interface PublicGatewayOptions {
  upstream: Upstream;
  limits?: Partial<PublicLimits>;
  /** Certificates for terminated TLS names, hostname → PEM pair. */
  certificates?: Record<string, CertificatePair>;
  /** Or a directory of `<hostname>.crt` + `<hostname>.key` (read at start and by reloadCertificates). */
  certDir?: string;
  log?: PublicLog;
}

export interface PublicPorts {
  /** HTTP listener port; null = no HTTP listener. Default 80. */
  http?: number | null;
  /** HTTPS (SNI) listener port; null = none. Default 443. */
  https?: number | null;
}

export interface UpdateResult {
  /** TCP exposure ports listening after this update. */
  tcpListening: number[];
  /** Ports that could not be bound (retried on the next update). */
  tcpFailed: { port: number; error: string }[];
  /** Names or ports claimed twice; the first exposure in (tenant, name) order keeps them. */
  conflicts: RouteConflict[];
}

type Kind = 'http' | 'https' | 'tcp';

export class PublicGateway {
  private readonly core: PublicCore;
  private readonly limits: PublicLimits;
  private readonly httpFront: HttpFront;
  private readonly tlsFront: TlsFront;
  private readonly certs = new CertStore();
  private readonly rate: RateLimiter;
  private readonly clientSlots: Slots;
  private readonly sockets = new Set<Socket>();
  private readonly tcpServers = new Map<number, Server>();
  private httpServer: Server | null = null;
  private httpsServer: Server | null = null;
  private listenAddress: string | null = null;
  private exposures: GatewayExposure[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  private readonly log: PublicLog;

  constructor(private readonly options: PublicGatewayOptions) {
    this.limits = resolveLimits(options.limits);
    this.log = options.log ?? (() => {});
    this.core = new PublicCore(this.limits, new PublicMetrics(), options.upstream, this.log);
    this.httpFront = new HttpFront(this.core);
    this.tlsFront = new TlsFront(this.core, this.httpFront, this.certs);
    this.rate = new RateLimiter(this.limits.ratePerSecond, this.limits.rateBurst, this.limits.rateTableSize);
    this.clientSlots = new Slots(() => this.limits.maxConnectionsPerClient);
    this.reloadCertificates();
  }

  /** The routes in force now. */
  get router(): PublicRouter {
    return this.core.router;
  }

  /** Re-read certificates (option map and certDir; the directory wins on a clash). Returns names that failed. */
  reloadCertificates(): { host: string; error: string }[] {
    let pairs: Record<string, CertificatePair> = { ...this.options.certificates };
    const errors: { host: string; error: string }[] = [];
    if (this.options.certDir) {
      try {
        pairs = { ...pairs, ...loadCertDirectory(this.options.certDir) };
      } catch (err) {
        errors.push({ host: '*', error: `${this.options.certDir}: ${err instanceof Error ? err.message : String(err)}` });
      }
    }
    errors.push(...this.certs.set(pairs));
    for (const e of errors) this.log('certificate_error', e);
    return errors;
  }

  /** Replace the certificate table (rotation). Live connections keep the certificate they were served. */
  setCertificates(pairs: Record<string, CertificatePair>): { host: string; error: string }[] {
    return this.certs.set(pairs);
  }

  /** Bind the HTTP and HTTPS listeners and the TCP ports of the current exposures. */
  start(listenAddress: string, ports: PublicPorts = {}): Promise<UpdateResult> {
    return this.serialize(async () => {
      if (this.listenAddress !== null) throw new Error('PublicGateway already started');
      this.listenAddress = listenAddress;
      const httpPort = ports.http === undefined ? 80 : ports.http;
      const httpsPort = ports.https === undefined ? 443 : ports.https;
      try {
        if (httpPort !== null) this.httpServer = await this.listen('http', httpPort, 0);
        if (httpsPort !== null) this.httpsServer = await this.listen('https', httpsPort, 0);
      } catch (err) {
        await this.closeAll();
        this.listenAddress = null;
        throw err;
      }
      return this.apply();
    });
  }

  /** Swap the exposures served. Live connections are untouched; TCP listeners follow the ports. */
  update(exposures: readonly GatewayExposure[]): Promise<UpdateResult> {
    return this.serialize(async () => {
      this.exposures = [...exposures];
      return this.apply();
    });
  }

  /** Bound ports (useful when started on port 0). */
  addresses(): { http: number | null; https: number | null; tcp: number[] } {
    return { http: boundPort(this.httpServer), https: boundPort(this.httpsServer), tcp: [...this.tcpServers.keys()].sort((a, b) => a - b) };
  }

  metrics(): PublicMetricsSnapshot {
    return this.core.metrics.snapshot();
  }

  /** Close the listeners and every connection and upstream stream. */
  stop(): Promise<void> {
    return this.serialize(async () => {
      await this.closeAll();
      this.listenAddress = null;
    });
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  private async apply(): Promise<UpdateResult> {
    const reserved = [boundPort(this.httpServer), boundPort(this.httpsServer)].filter((p): p is number => p !== null);
    const router = new PublicRouter(this.exposures, reserved);
    this.core.router = router;
    this.core.metrics.prune(new Set(this.exposures.map(exposureKey)));
    for (const c of router.conflicts) this.log('route_conflict', { ...c });
    const failed: { port: number; error: string }[] = [];
    if (this.listenAddress !== null) {
      const wanted = new Set(router.tcpPorts());
      for (const [port, server] of this.tcpServers) {
        if (wanted.has(port)) continue;
        // Stop accepting; connections already spliced live on until they end.
        server.close();
        this.tcpServers.delete(port);
        this.log('tcp_listener_closed', { port });
      }
      for (const port of wanted) {
        if (this.tcpServers.has(port)) continue;
        try {
          this.tcpServers.set(port, await this.listen('tcp', port, port));
          this.log('tcp_listener_opened', { port });
        } catch (err) {
          const error = err instanceof Error ? err.message : String(err);
          failed.push({ port, error });
          this.log('tcp_listener_failed', { port, error });
        }
      }
    }
    return { tcpListening: [...this.tcpServers.keys()].sort((a, b) => a - b), tcpFailed: failed, conflicts: router.conflicts };
  }

  private listen(kind: Kind, port: number, publicPort: number): Promise<Server> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(kind, socket, publicPort));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host: this.listenAddress ?? undefined }, () => {
        server.removeListener('error', reject);
        server.on('error', (err) => this.log('listener_error', { kind, port, error: err.message }));
        resolve(server);
      });
    });
  }

  private accept(kind: Kind, socket: Socket, publicPort: number): void {
    const { metrics } = this.core;
    metrics.accepted[kind]++;
    socket.on('error', () => socket.destroy());
    const address = unmapIPv4(socket.remoteAddress ?? '');
    if (!address) {
      socket.destroy();
      return;
    }
    if (this.sockets.size >= this.limits.maxConnections) {
      metrics.reject('gateway_full');
      socket.destroy();
      return;
    }
    const ckey = clientKey(address);
    const releaseClient = this.clientSlots.acquire(ckey);
    if (!releaseClient) return this.refuse(kind, socket, 'client_connections', 1);
    if (!this.rate.take(ckey)) {
      releaseClient();
      return this.refuse(kind, socket, 'rate_limited', this.rate.retryAfter(ckey));
    }
    this.sockets.add(socket);
    metrics.activeConnections++;
    socket.once('close', () => {
      this.sockets.delete(socket);
      metrics.activeConnections--;
      releaseClient();
    });
    socket.setNoDelay(true);
    const info: Omit<ConnInfo, 'proto'> = {
      client: { address, port: socket.remotePort ?? 0 },
      local: { address: unmapIPv4(socket.localAddress ?? ''), port: socket.localPort ?? 0 },
    };
    if (kind === 'http') this.httpFront.accept(socket, { ...info, proto: 'http' });
    else if (kind === 'https') this.tlsFront.accept(socket, info);
    else acceptTcp(this.core, socket, info, publicPort);
  }

  private refuse(kind: Kind, socket: Socket, reason: 'rate_limited' | 'client_connections', retryAfter: number): void {
    this.core.metrics.reject(reason);
    if (kind === 'http') rawReply(socket, reason, { 'Retry-After': String(retryAfter) });
    else socket.destroy();
  }

  private async closeAll(): Promise<void> {
    const servers = [this.httpServer, this.httpsServer, ...this.tcpServers.values()].filter((s): s is Server => s !== null);
    this.httpServer = null;
    this.httpsServer = null;
    this.tcpServers.clear();
    const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const s of this.sockets) {
      closed.push(new Promise<void>((resolve) => s.once('close', () => resolve())));
      s.destroy();
    }
    for (const close of [...this.core.streams.values()]) close();
    await Promise.all(closed);
  }
}

function boundPort(server: Server | null): number | null {
  const a = server?.address();
  return a && typeof a === 'object' ? a.port : null;
}
