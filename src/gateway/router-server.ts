/**
 * The gateway's router server: router clients (inside entry-point containers)
 * dial it over the tenant mesh on ROUTER_PORT, authenticate
 * (src/shared/router-protocol.ts), and then carry public connections as HTTP/2
 * CONNECT streams, the gateway being the HTTP/2 *client* on the socket the
 * router client opened. The public side reaches it through `Upstream.open`.
 *
 * It holds exposure → live sessions, routes each new stream to the live
 * session with the fewest active streams (round-robin among equals), drops
 * sessions whose key is no longer listed (update), drains them at grant expiry
 * or on GOAWAY, and detects dead peers with HTTP/2 PING.
 */
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { ROUTER_PORT, type GatewayExposure, type RouterGrant } from '../shared/desired.js';
import { NetwallError } from '../shared/errors.js';
import { unmapIPv4 } from './public/proxy-protocol.js';
import type { Upstream } from './public/types.js';
import {
  AUTH_FAILURES,
  authorizeRouterClient,
  comesFromWorkload,
  encodeFrame,
  FrameError,
  HANDSHAKE_TIMEOUT_MS,
  helloMessage,
  isListed,
  newChallenge,
  readFrame,
  RouterAuthError,
  RouterUnavailableError,
  type RouterAuthFailure,
} from '../shared/router-protocol.js';


export interface RouterServerOptions {
  /** This gateway's host name (sent in the hello, covered by the client's signature). */
  name: string;
  /** The coordinator's document-signing key(s); grants must be signed by one of them. */
  coordinatorKey: string | readonly string[];
  exposures?: GatewayExposure[];
  pingIntervalMs?: number;
  /** A session whose PING is not answered within this is destroyed. */
  pingTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  /** Connections still in the handshake; more are closed at once (reason `busy`). */
  maxPendingHandshakes?: number;
  /** How long open() waits for the router client's 200 (it dials its app meanwhile). */
  openTimeoutMs?: number;
  /** Sessions per router-client key per exposure; a new one evicts the oldest. */
  maxSessionsPerKey?: number;
  /** Grace for a draining session's streams (expired grant, GOAWAY, close). */
  drainTimeoutMs?: number;
  /** HTTP/2 per-stream receive window (bytes): also the most a stalled stream buffers. */
  streamWindow?: number;
  /** HTTP/2 connection receive window (bytes). */
  sessionWindow?: number;
  /** nghttp2 memory cap per session, MB. */
  maxSessionMemory?: number;
  /**
   * Refuse a session whose source address is not the mesh address of its
   * grant's workload (default true; a test harness on loopback may turn it off).
   */
  bindSource?: boolean;
  now?: () => number;
  log?: (line: string) => void;
}

export interface RouterSessionInfo {
  id: number;
  tenant: string;
  exposure: string;
  workload: string;
  node: string;
  publicKey: string;
  remote: string;
  connectedAt: string;
  activeStreams: number;
  streamsTotal: number;
  draining: boolean;
}

export interface RouterServerStats {
  /** Live authenticated sessions (including draining ones). */
  sessions: number;
  sessionsTotal: number;
  handshakesPending: number;
  authFailures: Record<RouterAuthFailure, number>;
  streamsActive: number;
  streamsTotal: number;
  /** Streams the router client refused (non-200), reset, or that timed out before 200. */
  streamsFailed: number;
  /** open() calls rejected because no live session could take the stream. */
  openRejected: number;
  /** RST_STREAMs this gateway sent (open timeouts, aborts not closed in time); ~0 in normal operation. */
  streamsReset: number;
  revoked: number;
  expired: number;
  pingTimeouts: number;
}

interface Session {
  id: number;
  key: string;
  grant: RouterGrant;
  h2: http2.ClientHttp2Session;
  socket: Socket;
  remote: string;
  /** Source address the session was authorized from (undefined when not bound). */
  source: string | undefined;
  connectedAt: number;
  activeStreams: number;
  streamsTotal: number;
  draining: boolean;
  closed: boolean;
  timers: NodeJS.Timeout[];
}

const exposureKey = (tenant: string, name: string) => `${tenant}/${name}`;

const { NGHTTP2_CANCEL } = http2.constants;

/** Trailer by which the gateway aborts a stream (see TunnelStream). */
export const ABORT_TRAILER = 'netwall-abort';
/** How long an aborted stream may take to be closed by the router client before we reset it ourselves. */
const ABORT_GRACE_MS = 10_000;

/**
 * What open() hands the public side: the CONNECT stream as a plain Duplex,
 * with one difference from the raw Http2Stream — destroy() does not send
 * RST_STREAM. A gateway resetting streams is the "rapid reset" pattern, and
 * nghttp2 on the router client (the HTTP/2 server) allows only 1000 + 33/s
 * incoming resets before it kills the whole session (Node 20 cannot raise
 * that limit; streamResetBurst/Rate exist only in later versions). So an
 * abort is END_STREAM carrying a `netwall-abort` trailer; the router client
 * then resets the app connection and the stream from its side (a server's
 * reset is not rate-limited). Only if our side was already ended, or the
 * client does not close it within ABORT_GRACE_MS, do we reset it ourselves.
 */
class TunnelStream extends Duplex {
  constructor(
    private readonly req: http2.ClientHttp2Stream,
    private readonly state: { abort: boolean; reset: (req: http2.ClientHttp2Stream) => void },
  ) {
    super({ allowHalfOpen: true });
    req.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) req.pause();
    });
    req.once('end', () => this.push(null));
    req.on('error', (e) => this.destroy(e));
    req.once('close', () => {
      if (this.destroyed) return;
      const code = req.rstCode ?? 0;
      if (code !== 0 || !this.readableEnded) this.destroy(new NetwallError(`tunnel stream reset by the router client (code ${code})`));
    });
  }

  override _read(): void {
    this.req.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.req.destroyed) return cb(new NetwallError('tunnel stream closed'));
    if (this.req.write(chunk, encoding)) cb();
    else this.req.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.req.destroyed) return cb();
    this.req.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const req = this.req;
    if (!req.destroyed && !req.closed) {
      // Drain what still arrives, and make sure the stream ends one way or another.
      req.removeAllListeners('data');
      req.on('data', () => {});
      req.resume();
      const t = setTimeout(() => this.state.reset(req), ABORT_GRACE_MS);
      t.unref();
      req.once('close', () => clearTimeout(t));
      // Our side still open: abort through the trailer. Already ended: the router client's end (or the
      // grace timer) closes it — both sides done just means the close is in flight.
      if (!req.writableEnded) {
        this.state.abort = true;
        req.end();
      }
    }
    cb(err);
  }

  /** Sockets have it; some callers set one. */
  setTimeout(ms: number, cb?: () => void): this {
    this.req.setTimeout(ms, cb);
    return this;
  }
}
const MAX_TIMER_MS = 2 ** 31 - 1;

export class RouterServer extends EventEmitter implements Upstream {
  private readonly opts: Required<Omit<RouterServerOptions, 'exposures' | 'log' | 'coordinatorKey'>> & {
    coordinatorKey: string | readonly string[];
    log: (line: string) => void;
  };
  private readonly servers = new Map<string, net.Server>();
  private exposures = new Map<string, GatewayExposure>();
  private readonly sessionsByExposure = new Map<string, Session[]>();
  private readonly rr = new Map<string, number>();
  private readonly pending = new Set<Socket>();
  private nextId = 1;
  private closing = false;
  private readonly counters: RouterServerStats;

  constructor(options: RouterServerOptions) {
    super();
    this.opts = {
      name: options.name,
      coordinatorKey: options.coordinatorKey,
      pingIntervalMs: options.pingIntervalMs ?? 15_000,
      pingTimeoutMs: options.pingTimeoutMs ?? 10_000,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
      maxPendingHandshakes: options.maxPendingHandshakes ?? 256,
      openTimeoutMs: options.openTimeoutMs ?? 10_000,
      maxSessionsPerKey: options.maxSessionsPerKey ?? 2,
      drainTimeoutMs: options.drainTimeoutMs ?? 30_000,
      streamWindow: options.streamWindow ?? 256 * 1024,
      sessionWindow: options.sessionWindow ?? 8 * 1024 * 1024,
      maxSessionMemory: options.maxSessionMemory ?? 64,
      bindSource: options.bindSource ?? true,
      now: options.now ?? Date.now,
      log: options.log ?? (() => {}),
    };
    this.counters = {
      sessions: 0,
      sessionsTotal: 0,
      handshakesPending: 0,
      authFailures: Object.fromEntries(AUTH_FAILURES.map((r) => [r, 0])) as Record<RouterAuthFailure, number>,
      streamsActive: 0,
      streamsTotal: 0,
      streamsFailed: 0,
      openRejected: 0,
      streamsReset: 0,
      revoked: 0,
      expired: 0,
      pingTimeouts: 0,
    };
    if (options.exposures) this.update(options.exposures);
  }

  // ------------------------------------------------------------ listeners

  /**
   * Listen on one mesh address (default port ROUTER_PORT). With `tenant`, only
   * that tenant's grants are accepted on it (a tenant's router clients reach
   * the gateway through that tenant's WireGuard interface).
   */
  async listen(opts: { host: string; port?: number; tenant?: string }): Promise<AddressInfo> {
    const id = `${opts.host}:${opts.port ?? ROUTER_PORT}`;
    if (this.servers.has(id)) return this.servers.get(id)!.address() as AddressInfo;
    const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: 15_000 }, (socket) =>
      this.accept(socket, opts.tenant),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host, port: opts.port ?? ROUTER_PORT, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.opts.log(`router server ${id}: ${e.message}`));
    this.servers.set(id, server);
    return server.address() as AddressInfo;
  }

  /** Stop listening on one address (sessions that arrived on it stay up). */
  async unlisten(host: string, port: number = ROUTER_PORT): Promise<void> {
    const id = `${host}:${port}`;
    const server = this.servers.get(id);
    if (!server) return;
    this.servers.delete(id);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Listening addresses, `host:port`. */
  addresses(): string[] {
    return [...this.servers.values()].map((s) => {
      const a = s.address() as AddressInfo;
      return `${a.address}:${a.port}`;
    });
  }

  // ------------------------------------------------------------ desired state

  /** Replace the exposures served; sessions whose key is no longer listed are dropped at once. */
  update(exposures: GatewayExposure[]): void {
    this.exposures = new Map(exposures.map((e) => [exposureKey(e.tenant, e.name), e]));
    for (const [key, list] of this.sessionsByExposure) {
      const exposure = this.exposures.get(key);
      for (const s of [...list]) {
        if (exposure && isListed(exposure, s.grant) && (s.source === undefined || comesFromWorkload(exposure, s.grant, s.source))) continue;
        this.counters.revoked++;
        this.opts.log(`router session ${s.id} (${key}, ${s.grant.workload}@${s.grant.node}) revoked`);
        this.dropSession(s, 'revoked');
      }
    }
  }

  // ------------------------------------------------------------ handshake

  private accept(socket: Socket, tenant: string | undefined): void {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.closing || this.pending.size >= this.opts.maxPendingHandshakes) {
      this.fail('busy', remote, 'too many handshakes in progress');
      socket.destroy();
      return;
    }
    this.pending.add(socket);
    this.counters.handshakesPending = this.pending.size;
    socket.on('error', () => {}); // reported through readFrame / the session
    const deadline = Date.now() + this.opts.handshakeTimeoutMs;
    const challenge = newChallenge().toString('base64');
    const source = this.opts.bindSource ? unmapIPv4(socket.remoteAddress ?? '') : undefined;
    socket.write(encodeFrame(helloMessage(this.opts.name, Buffer.from(challenge, 'base64'))));
    readFrame(socket, deadline)
      .then((message) => {
        const ok = authorizeRouterClient({
          message,
          challenge,
          gateway: this.opts.name,
          coordinatorKey: this.opts.coordinatorKey,
          lookup: (t, e) => this.exposures.get(exposureKey(t, e)),
          tenant,
          source,
          now: this.opts.now(),
        });
        this.pending.delete(socket);
        this.counters.handshakesPending = this.pending.size;
        if (this.closing || socket.destroyed) {
          socket.destroy();
          return;
        }
        socket.write(encodeFrame({ type: 'welcome', v: 1 }));
        this.startSession(socket, ok.grant, remote, source);
      })
      .catch((err: unknown) => {
        this.pending.delete(socket);
        this.counters.handshakesPending = this.pending.size;
        const reason: RouterAuthFailure =
          err instanceof RouterAuthError || err instanceof FrameError ? err.reason : 'malformed';
        this.fail(reason, remote, err instanceof Error ? err.message : String(err));
        if (socket.destroyed) return;
        // Tell the client why (a stable code, nothing secret), then close.
        socket.end(encodeFrame({ type: 'refused', v: 1, reason }));
        setTimeout(() => socket.destroy(), 1000).unref();
      });
  }

  private fail(reason: RouterAuthFailure, remote: string, message: string): void {
    this.counters.authFailures[reason]++;
    this.opts.log(`router client ${remote} refused (${reason}): ${message}`);
    this.emit('auth-failure', { reason, remote, message });
  }

  // ------------------------------------------------------------ sessions

  private startSession(socket: Socket, grant: RouterGrant, remote: string, source: string | undefined): void {
    const key = exposureKey(grant.tenant, grant.exposure);
    const h2 = http2.connect('http://router.netwall', {
      createConnection: () => socket,
      settings: { enablePush: false, initialWindowSize: this.opts.streamWindow, maxHeaderListSize: 16 * 1024 },
      maxSessionMemory: this.opts.maxSessionMemory,
      maxHeaderListPairs: 32,
      maxOutstandingPings: 2,
      maxReservedRemoteStreams: 0,
      peerMaxConcurrentStreams: 1000,
    });
    const s: Session = {
      id: this.nextId++,
      key,
      grant,
      h2,
      socket,
      remote,
      source,
      connectedAt: Date.now(),
      activeStreams: 0,
      streamsTotal: 0,
      draining: false,
      closed: false,
      timers: [],
    };
    h2.once('connect', () => {
      try {
        h2.setLocalWindowSize(this.opts.sessionWindow);
      } catch {
        /* session already gone */
      }
    });
    h2.on('error', (e) => this.opts.log(`router session ${s.id} (${key}): ${e.message}`));
    h2.on('goaway', () => this.drain(s, 'goaway'));
    h2.on('close', () => this.removeSession(s));
    h2.on('stream', (stream) => stream.close(NGHTTP2_CANCEL)); // no pushes (also disabled by settings)

    // Keepalive: a PING every interval (one at a time); no answer within the timeout → dead.
    let outstanding = false;
    const ping = setInterval(() => {
      if (s.closed || outstanding || h2.destroyed) return;
      outstanding = true;
      const timeout = setTimeout(() => {
        this.counters.pingTimeouts++;
        this.opts.log(`router session ${s.id} (${key}): no PING answer in ${this.opts.pingTimeoutMs} ms, closing`);
        this.dropSession(s, 'ping timeout');
      }, this.opts.pingTimeoutMs);
      timeout.unref();
      try {
        h2.ping((err) => {
          outstanding = false;
          clearTimeout(timeout);
          if (err && !s.closed) this.dropSession(s, `ping: ${err.message}`);
        });
      } catch (e) {
        // Destroyed between its 'close' and our bookkeeping: never let a timer throw.
        outstanding = false;
        clearTimeout(timeout);
        this.dropSession(s, `ping: ${(e as Error).message}`);
      }
    }, this.opts.pingIntervalMs);
    ping.unref();
    s.timers.push(ping);

    // The grant's end is the session's end: drain then, and the client re-authenticates.
    const left = Date.parse(grant.expiresAt) - this.opts.now();
    if (left < MAX_TIMER_MS) {
      const t = setTimeout(() => {
        this.counters.expired++;
        this.drain(s, 'grant expired');
      }, Math.max(0, left));
      t.unref();
      s.timers.push(t);
    }

    // Evict the oldest sessions of this key beyond the cap (a reconnect usually replaces a dead one).
    const list = this.sessionsByExposure.get(key) ?? [];
    const same = list.filter((x) => x.grant.publicKey === grant.publicKey && !x.closed);
    for (const old of same.slice(0, Math.max(0, same.length - this.opts.maxSessionsPerKey + 1))) this.dropSession(old, 'replaced');
    list.push(s);
    this.sessionsByExposure.set(key, list);
    this.counters.sessions++;
    this.counters.sessionsTotal++;
    this.opts.log(`router session ${s.id} up: ${key} ${grant.workload}@${grant.node} from ${remote}`);
    this.emit('session', this.info(s));
  }

  /** Stop routing to a session; let its streams finish (GOAWAY), then cut it after drainTimeoutMs. */
  private drain(s: Session, why: string): void {
    if (s.closed || s.draining) return;
    s.draining = true;
    this.opts.log(`router session ${s.id} (${s.key}) draining: ${why}`);
    try {
      s.h2.close();
    } catch {
      /* already closed */
    }
    const t = setTimeout(() => this.dropSession(s, `${why}, drain timeout`), this.opts.drainTimeoutMs);
    t.unref();
    s.timers.push(t);
  }

  private dropSession(s: Session, why: string): void {
    if (s.closed) return;
    this.opts.log(`router session ${s.id} (${s.key}) closed: ${why}`);
    s.draining = true;
    s.h2.destroy();
    s.socket.destroy();
    this.removeSession(s);
  }

  private removeSession(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    for (const t of s.timers) clearTimeout(t);
    const list = this.sessionsByExposure.get(s.key);
    if (list) {
      const i = list.indexOf(s);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.sessionsByExposure.delete(s.key);
    }
    this.counters.sessions--;
    this.emit('session-closed', this.info(s));
  }

  private info(s: Session): RouterSessionInfo {
    return {
      id: s.id,
      tenant: s.grant.tenant,
      exposure: s.grant.exposure,
      workload: s.grant.workload,
      node: s.grant.node,
      publicKey: s.grant.publicKey,
      remote: s.remote,
      connectedAt: new Date(s.connectedAt).toISOString(),
      activeStreams: s.activeStreams,
      streamsTotal: s.streamsTotal,
      draining: s.draining,
    };
  }

  // ------------------------------------------------------------ Upstream

  /**
   * A byte stream to one live router client of `exposure`: an HTTP/2 CONNECT
   * stream, resolved once the client has reached its app (200). Sessions are
   * tried least-busy first (round-robin among equals); a client that cannot
   * reach its app (502/504) or resets is skipped for the next one.
   */
  async open(exposure: GatewayExposure, client: { address: string; port: number }): Promise<Duplex> {
    const key = exposureKey(exposure.tenant, exposure.name);
    if (exposure.mode !== 'tunnel') throw new NetwallError(`exposure ${key} is not in tunnel mode`);
    const candidates = this.pick(key);
    if (candidates.length === 0) {
      this.counters.openRejected++;
      throw new RouterUnavailableError(`no live router client for ${key}`);
    }
    let last: Error | null = null;
    for (const s of candidates.slice(0, 3)) {
      if (s.closed || s.draining) continue;
      try {
        return await this.openStream(s, exposure.name, client);
      } catch (e) {
        last = e as Error;
      }
    }
    this.counters.openRejected++;
    throw new RouterUnavailableError(`no router client of ${key} took the stream${last ? `: ${last.message}` : ''}`);
  }

  /** Live sessions of `key`, least active streams first, rotating among equals. */
  private pick(key: string): Session[] {
    const live = (this.sessionsByExposure.get(key) ?? []).filter((s) => !s.closed && !s.draining && !s.h2.closed && !s.h2.destroyed);
    if (live.length <= 1) return live;
    const start = (this.rr.get(key) ?? 0) % live.length;
    this.rr.set(key, start + 1);
    const rotated = [...live.slice(start), ...live.slice(0, start)];
    return rotated.sort((a, b) => a.activeStreams - b.activeStreams); // stable: ties keep the rotation
  }

  private openStream(s: Session, exposure: string, client: { address: string; port: number }): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      let req: http2.ClientHttp2Stream;
      try {
        req = s.h2.request(
          { ':method': 'CONNECT', ':authority': exposure, 'netwall-client': `${client.address}:${client.port}` },
          // Our END_STREAM always goes out as (possibly empty) trailers, so an abort can be told apart.
          { endStream: false, waitForTrailers: true },
        );
      } catch (e) {
        reject(e as Error);
        return;
      }
      const state = {
        abort: false,
        // The one way this gateway sends RST_STREAM, counted: rare by design (see TunnelStream).
        reset: (r: http2.ClientHttp2Stream) => {
          if (r.destroyed || r.closed) return;
          this.counters.streamsReset++;
          r.close(NGHTTP2_CANCEL);
        },
      };
      req.on('wantTrailers', () => {
        try {
          if (!req.destroyed) req.sendTrailers(state.abort ? { [ABORT_TRAILER]: '1' } : {}); // {} = a bare END_STREAM
        } catch {
          state.reset(req);
        }
      });
      s.activeStreams++;
      s.streamsTotal++;
      this.counters.streamsActive++;
      this.counters.streamsTotal++;
      let settled = false;
      let answered = false;
      const settle = (err: Error | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          this.counters.streamsFailed++;
          // The router client already ended a refused stream: end ours cleanly; RST only a silent one.
          if (!req.destroyed) {
            if (answered) req.end();
            else state.reset(req);
          }
          reject(err);
        } else resolve(new TunnelStream(req, state));
      };
      const timer = setTimeout(() => settle(new NetwallError(`router client ${s.id} did not answer in ${this.opts.openTimeoutMs} ms`)), this.opts.openTimeoutMs);
      timer.unref();
      // Keep a listener so a reset never becomes an uncaught 'error'.
      req.on('error', (e) => settle(e));
      req.once('close', () => {
        s.activeStreams--;
        this.counters.streamsActive--;
        // (An Error captures a stack: build it only when it is the outcome.)
        if (!settled) settle(new NetwallError(`router client ${s.id} closed the stream (code ${req.rstCode ?? '?'})`));
      });
      req.once('response', (headers) => {
        answered = true;
        const status = Number(headers[':status']);
        if (status === 200) settle(null);
        else settle(new NetwallError(`router client ${s.id} answered ${status}`));
      });
    });
  }

  // ------------------------------------------------------------ status

  stats(): RouterServerStats {
    return { ...this.counters, authFailures: { ...this.counters.authFailures } };
  }

  sessions(tenant?: string, exposure?: string): RouterSessionInfo[] {
    const out: RouterSessionInfo[] = [];
    for (const list of this.sessionsByExposure.values()) {
      for (const s of list) {
        if (tenant !== undefined && s.grant.tenant !== tenant) continue;
        if (exposure !== undefined && s.grant.exposure !== exposure) continue;
        out.push(this.info(s));
      }
    }
    return out;
  }

  /** Number of sessions that can take new streams for an exposure. */
  liveCount(tenant: string, exposure: string): number {
    return (this.sessionsByExposure.get(exposureKey(tenant, exposure)) ?? []).filter((s) => !s.closed && !s.draining).length;
  }

  /**
   * Stop listening, refuse handshakes in progress, and close every session:
   * GOAWAY first (router clients reconnect elsewhere), cut after `graceMs`.
   */
  async close(graceMs = 0): Promise<void> {
    this.closing = true;
    const servers = [...this.servers.values()];
    this.servers.clear();
    for (const sock of this.pending) sock.destroy();
    this.pending.clear();
    const sessions = [...this.sessionsByExposure.values()].flat();
    for (const s of sessions) {
      s.draining = true;
      try {
        s.h2.close();
      } catch {
        /* gone */
      }
    }
    if (graceMs > 0 && sessions.some((s) => !s.closed)) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, graceMs);
        const check = () => {
          if (sessions.every((s) => s.closed)) {
            clearTimeout(t);
            resolve();
          }
        };
        this.on('session-closed', check);
        check();
      });
    }
    for (const s of sessions) this.dropSession(s, 'gateway closing');
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
