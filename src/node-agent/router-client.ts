/**
 * The router client: runs in an entry-point container's network namespace,
 * dials OUT to every gateway of its exposure (the mesh address, ROUTER_PORT),
 * authenticates with its coordinator-issued credential, then serves the
 * gateway's HTTP/2 CONNECT streams by joining each to the app on
 * `target` (the container's own localhost/port).
 *
 * It never listens: every socket it has is one it dialled. One connection per
 * gateway, re-dialled with exponential backoff and full jitter; a GOAWAY from
 * the gateway (grant expiry, gateway shutdown) makes it dial a fresh session
 * at once while the old one finishes its streams (make before break).
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import { isKey } from '../shared/crypto.js';
import { ROUTER_PORT, type RouterCredential, type RouterGrant } from '../shared/desired.js';
import { NetwallError, ValidationError } from '../shared/errors.js';
import { NAME_RE } from '../shared/names.js';
import { answerHello, encodeFrame, HANDSHAKE_TIMEOUT_MS, parseResult, readFrame } from '../shared/router-protocol.js';

export interface GatewayTarget {
  /** The gateway's host name; its hello must carry it (unless anyName). */
  host: string;
  meshAddress: string;
  routerPort: number;
  /** Accept whatever name the gateway gives (hand-run clients given only an address). */
  anyName?: boolean;
}

/** The credential and its key; a function is called before every dial (so a renewed credential is picked up). */
export interface RouterAuth {
  credential: RouterCredential;
  /** The router client's ed25519 secret key (base64, 64 bytes tweetnacl form). */
  secretKey: string;
}

export interface RouterClientOptions {
  gateways: GatewayTarget[];
  credential: RouterCredential;
  secretKey: string;
  /** Or: fetch credential and key before each dial (overrides credential/secretKey). */
  auth?: () => RouterAuth | Promise<RouterAuth>;
  /** The app, as seen from inside the container. */
  target: { host: string; port: number };
  /** Only answer CONNECT for this authority; default the grant's exposure. */
  exposure?: string;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** A session up at least this long resets the backoff. */
  stableAfterMs?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  connectTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  targetConnectTimeoutMs?: number;
  /** After a stream closed cleanly, how long its app socket may take to flush before it is cut. */
  lingerMs?: number;
  /** HTTP/2 settings this side advertises. */
  maxConcurrentStreams?: number;
  streamWindow?: number;
  sessionWindow?: number;
  maxSessionMemory?: number;
  log?: (line: string) => void;
  /** For tests: the random source of the jitter. */
  random?: () => number;
}

export interface GatewayStatus {
  host: string;
  address: string;
  connected: boolean;
  /** ISO time of the current session's start, or null. */
  since: string | null;
  lastError: string | null;
  /** Failed dials since the last stable session. */
  attempts: number;
  activeStreams: number;
  streamsTotal: number;
}

export interface RouterClientStats {
  streamsActive: number;
  streamsTotal: number;
  /** Streams whose app connection failed (answered 502/504). */
  targetErrors: number;
  /** Streams refused because of method/authority. */
  badRequests: number;
  /** Streams the gateway aborted (its public client went away). */
  aborted: number;
}

const { NGHTTP2_CONNECT_ERROR, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;
/** The trailer by which the gateway aborts a stream (src/gateway/router-server.ts TunnelStream). */
const ABORT_TRAILER = 'netwall-abort';

/** Full jitter: a uniform delay in [0, min(max, initial·2^attempt)). */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30)));
}

export class RouterClient extends EventEmitter {
  private readonly links = new Map<string, GatewayLink>();
  private running = false;
  private auth: () => RouterAuth | Promise<RouterAuth>;
  readonly counters: RouterClientStats = { streamsActive: 0, streamsTotal: 0, targetErrors: 0, badRequests: 0, aborted: 0 };
  readonly cfg: Required<Omit<RouterClientOptions, 'gateways' | 'credential' | 'secretKey' | 'auth' | 'exposure'>> & {
    exposure: string | undefined;
  };

  constructor(options: RouterClientOptions) {
    super();
    const fixed: RouterAuth = { credential: options.credential, secretKey: options.secretKey };
    this.auth = options.auth ?? (() => fixed);
    this.cfg = {
      target: options.target,
      exposure: options.exposure,
      backoffInitialMs: options.backoffInitialMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      stableAfterMs: options.stableAfterMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 15_000,
      pingTimeoutMs: options.pingTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
      targetConnectTimeoutMs: options.targetConnectTimeoutMs ?? 5_000,
      lingerMs: options.lingerMs ?? 30_000,
      maxConcurrentStreams: options.maxConcurrentStreams ?? 1000,
      streamWindow: options.streamWindow ?? 256 * 1024,
      sessionWindow: options.sessionWindow ?? 8 * 1024 * 1024,
      maxSessionMemory: options.maxSessionMemory ?? 64,
      log: options.log ?? (() => {}),
      random: options.random ?? Math.random,
    };
    this.setGateways(options.gateways);
  }

  /** Dial every gateway (and keep dialling). */
  start(): void {
    if (this.running) return;
    this.running = true;
    for (const l of this.links.values()) l.start();
  }

  /** Close every session (GOAWAY, then cut after `graceMs`) and stop dialling. */
  async stop(graceMs = 0): Promise<void> {
    this.running = false;
    await Promise.all([...this.links.values()].map((l) => l.stop(graceMs)));
  }

  /** Follow the desired state: dial new gateways, drop removed ones. */
  setGateways(gateways: GatewayTarget[]): void {
    const want = new Map(gateways.map((g) => [`${g.host}@${g.meshAddress}:${g.routerPort}`, g]));
    for (const [id, link] of this.links) {
      if (!want.has(id)) {
        this.links.delete(id);
        void link.stop(0);
      }
    }
    for (const [id, g] of want) {
      if (this.links.has(id)) continue;
      const link = new GatewayLink(this, g);
      this.links.set(id, link);
      if (this.running) link.start();
    }
  }

  /** Use another credential from the next dial on (sessions up stay up until the gateway drains them). */
  setAuth(credential: RouterCredential, secretKey: string): void {
    const fixed: RouterAuth = { credential, secretKey };
    this.auth = () => fixed;
  }

  /** @internal */
  getAuth(): Promise<RouterAuth> {
    return Promise.resolve(this.auth());
  }

  status(): GatewayStatus[] {
    return [...this.links.values()].map((l) => l.status());
  }

  stats(): RouterClientStats {
    return { ...this.counters };
  }

  /** @internal Join one CONNECT stream to the app. */
  serveStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, exposure: string, link: GatewayLink): void {
    stream.on('error', () => {});
    if (headers[':method'] !== 'CONNECT' || headers[':authority'] !== exposure) {
      this.counters.badRequests++;
      respond(stream, headers[':method'] !== 'CONNECT' ? 405 : 421, true);
      return;
    }
    this.counters.streamsActive++;
    this.counters.streamsTotal++;
    link.activeStreams++;
    link.streamsTotal++;
    const { host, port } = this.cfg.target;
    const sock = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    let connected = false;
    const timer = setTimeout(() => {
      this.counters.targetErrors++;
      respond(stream, 504, true);
      sock.destroy();
    }, this.cfg.targetConnectTimeoutMs);
    timer.unref();
    stream.once('close', () => {
      this.counters.streamsActive--;
      link.activeStreams--;
      clearTimeout(timer);
      // A clean close (both sides ended) leaves the app socket to flush what it still holds for the app.
      if (!connected || stream.rstCode !== NGHTTP2_NO_ERROR || sock.destroyed) return void sock.destroy();
      if (!sock.writableEnded) sock.end();
      const linger = setTimeout(() => sock.destroy(), this.cfg.lingerMs);
      linger.unref();
      sock.once('close', () => clearTimeout(linger));
    });
    sock.once('connect', () => {
      clearTimeout(timer);
      if (stream.destroyed) return void sock.destroy();
      connected = true;
      if (!respond(stream, 200, false)) return void sock.destroy();
      sock.pipe(stream);
      stream.pipe(sock);
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      if (!connected) {
        this.counters.targetErrors++;
        this.cfg.log(`app ${host}:${port}: ${e.message}`);
        respond(stream, 502, true);
      } else if (!stream.destroyed) {
        stream.close(NGHTTP2_CONNECT_ERROR);
      }
    });
    sock.once('close', (hadError) => {
      // A reset from the app resets the stream; a clean close already ended it through the pipe.
      if (connected && hadError && !stream.destroyed) stream.close(NGHTTP2_CONNECT_ERROR);
    });
    stream.once('aborted', () => sock.destroy());
    // The gateway aborts with END_STREAM + a netwall-abort trailer (not RST_STREAM: see the gateway's
    // TunnelStream): reset the app connection and the stream from this side.
    stream.once('trailers', (trailers: http2.IncomingHttpHeaders) => {
      if (trailers[ABORT_TRAILER] === undefined) return;
      this.counters.aborted++;
      if (typeof sock.resetAndDestroy === 'function' && !sock.connecting) sock.resetAndDestroy();
      else sock.destroy();
      if (!stream.destroyed) stream.close(NGHTTP2_CANCEL);
    });
  }
}

/** One gateway: at most one current session, re-dialled forever while running. */
class GatewayLink {
  private running = false;
  private session: http2.ServerHttp2Session | null = null;
  /**
   * Each session's own socket: once a session has closed gracefully, Node's
   * destroy() only ends the socket and waits for the peer's FIN, which never
   * comes when the path is gone (the container's veth removed, the gateway
   * dead). Destroying the socket itself is what ends it.
   */
  private readonly sockets = new WeakMap<http2.ServerHttp2Session, Socket>();
  private readonly draining = new Set<http2.ServerHttp2Session>();
  private dialing: Socket | null = null;
  private retry: NodeJS.Timeout | null = null;
  private since: number | null = null;
  private lastError: string | null = null;
  private attempts = 0;
  activeStreams = 0;
  streamsTotal = 0;

  constructor(
    private readonly client: RouterClient,
    readonly gateway: GatewayTarget,
  ) {}

  private get cfg() {
    return this.client.cfg;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.dial();
  }

  async stop(graceMs: number): Promise<void> {
    this.running = false;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.dialing?.destroy();
    this.dialing = null;
    const sessions = [...this.draining, ...(this.session ? [this.session] : [])];
    this.session = null;
    await Promise.all(
      sessions.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.destroyed) return resolve();
            s.once('close', () => resolve());
            try {
              s.close(); // GOAWAY: the gateway stops routing here
            } catch {
              /* gone */
            }
            if (graceMs > 0) setTimeout(() => this.kill(s), graceMs).unref();
            else this.kill(s);
          }),
      ),
    );
  }

  status(): GatewayStatus {
    return {
      host: this.gateway.host,
      address: `${this.gateway.meshAddress}:${this.gateway.routerPort}`,
      connected: this.session !== null && !this.session.destroyed,
      since: this.since === null ? null : new Date(this.since).toISOString(),
      lastError: this.lastError,
      attempts: this.attempts,
      activeStreams: this.activeStreams,
      streamsTotal: this.streamsTotal,
    };
  }

  private schedule(immediate = false): void {
    if (!this.running || this.retry || this.dialing) return;
    const delay = immediate ? 0 : backoffDelay(this.attempts, this.cfg.backoffInitialMs, this.cfg.backoffMaxMs, this.cfg.random);
    if (!immediate) this.attempts++;
    this.retry = setTimeout(() => {
      this.retry = null;
      this.dial();
    }, delay);
  }

  private failed(err: Error): void {
    this.lastError = err.message;
    this.cfg.log(`gateway ${this.gateway.host} (${this.gateway.meshAddress}:${this.gateway.routerPort}): ${err.message}`);
    this.client.emit('error-gateway', this.gateway.host, err);
    this.schedule();
  }

  private dial(): void {
    if (!this.running) return;
    const { meshAddress, routerPort } = this.gateway;
    const socket = net.connect({ host: meshAddress, port: routerPort, noDelay: true, keepAlive: true, keepAliveInitialDelay: 15_000 });
    this.dialing = socket;
    socket.on('error', () => {}); // reported through the handshake / the session
    const connectTimer = setTimeout(() => socket.destroy(new Error('connect timed out')), this.cfg.connectTimeoutMs);
    connectTimer.unref();
    socket.once('connect', () => clearTimeout(connectTimer));
    this.handshake(socket)
      .then((exposure) => {
        clearTimeout(connectTimer);
        if (this.dialing === socket) this.dialing = null;
        if (!this.running) return void socket.destroy();
        this.serve(socket, this.cfg.exposure ?? exposure);
      })
      .catch((e: Error) => {
        clearTimeout(connectTimer);
        if (this.dialing === socket) this.dialing = null;
        socket.destroy();
        if (this.running) this.failed(e);
      });
  }

  /** Authenticate on a fresh socket; resolves with the exposure the grant is for. */
  private async handshake(socket: Socket): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      if (!socket.connecting) return resolve();
      socket.once('connect', () => resolve());
      socket.once('close', () => reject(new NetwallError('connection closed before it was established')));
      socket.once('error', (e) => reject(e));
    });
    const deadline = Date.now() + this.cfg.handshakeTimeoutMs;
    const { credential, secretKey } = await this.client.getAuth();
    const hello = await readFrame(socket, deadline);
    socket.write(encodeFrame(answerHello(hello, credential, secretKey, this.gateway.anyName ? undefined : this.gateway.host)));
    const result = parseResult(await readFrame(socket, deadline));
    if (result.type === 'refused') throw new NetwallError(`refused by the gateway: ${result.reason}`);
    return (JSON.parse(credential.grant) as RouterGrant).exposure;
  }

  private serve(socket: Socket, authority: string): void {
    const session = startH2Server(socket, {
      settings: {
        maxConcurrentStreams: this.cfg.maxConcurrentStreams,
        initialWindowSize: this.cfg.streamWindow,
        enablePush: false,
        maxHeaderListSize: 16 * 1024,
      },
      maxSessionMemory: this.cfg.maxSessionMemory,
      maxHeaderListPairs: 32,
      maxOutstandingPings: 2,
      // Where Node supports it (not 20), also lift nghttp2's incoming-reset limit: the gateway is the only peer.
      ...({ streamResetBurst: 100_000, streamResetRate: 10_000 } as object),
    });
    this.sockets.set(session, socket);
    const previous = this.session;
    this.session = session;
    this.since = Date.now();
    this.lastError = null;
    if (previous && !previous.destroyed) this.retire(previous);
    session.on('error', (e) => (this.lastError = e.message));
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(this.cfg.sessionWindow);
      } catch {
        /* gone */
      }
    });
    session.on('stream', (stream, headers) => this.client.serveStream(stream, headers, authority, this));
    session.on('goaway', () => {
      // The gateway drains this session: dial a new one now, let the old finish.
      if (this.session === session) {
        this.session = null;
        this.since = null;
        this.lastError = 'gateway sent GOAWAY';
        this.retire(session);
        this.client.emit('disconnected', this.gateway.host, this.lastError);
        this.schedule(true);
      }
    });
    let outstanding = false;
    const ping = setInterval(() => {
      if (outstanding || session.destroyed) return;
      outstanding = true;
      const timeout = setTimeout(() => {
        this.lastError = `gateway did not answer PING in ${this.cfg.pingTimeoutMs} ms`;
        session.destroy();
      }, this.cfg.pingTimeoutMs);
      timeout.unref();
      try {
        session.ping((err) => {
          outstanding = false;
          clearTimeout(timeout);
          if (err && !session.destroyed) {
            this.lastError = `PING: ${err.message}`;
            session.destroy();
          }
        });
      } catch (e) {
        outstanding = false;
        clearTimeout(timeout);
        this.lastError = `PING: ${(e as Error).message}`;
        session.destroy();
      }
    }, this.cfg.pingIntervalMs);
    ping.unref();
    session.once('close', () => {
      clearInterval(ping);
      this.draining.delete(session);
      socket.destroy();
      if (this.session !== session) return;
      const upFor = this.since === null ? 0 : Date.now() - this.since;
      this.session = null;
      this.since = null;
      if (upFor >= this.cfg.stableAfterMs) this.attempts = 0;
      this.lastError ??= 'session closed';
      this.cfg.log(`gateway ${this.gateway.host}: session closed after ${upFor} ms (${this.lastError})`);
      this.client.emit('disconnected', this.gateway.host, this.lastError);
      this.schedule();
    });
    this.client.emit('connected', this.gateway.host);
    this.cfg.log(`gateway ${this.gateway.host} (${this.gateway.meshAddress}:${this.gateway.routerPort}): connected`);
  }

  private retire(session: http2.ServerHttp2Session): void {
    this.draining.add(session);
    try {
      session.close();
    } catch {
      /* gone */
    }
    // A drain that never ends (the gateway went away meanwhile) must not hold the session forever.
    setTimeout(() => this.kill(session), RETIRE_DRAIN_MS).unref();
  }

  private kill(session: http2.ServerHttp2Session): void {
    session.destroy();
    this.sockets.get(session)?.destroy();
  }

}

/** The longest a replaced session may drain its streams. */
const RETIRE_DRAIN_MS = 60_000;

/** Answer a stream unless it is already gone or answered; false if it could not be. */
function respond(stream: http2.ServerHttp2Stream, status: number, endStream: boolean): boolean {
  if (stream.headersSent || stream.destroyed || stream.closed) return false;
  try {
    stream.respond({ ':status': status }, { endStream });
    return true;
  } catch {
    return false;
  }
}

/** HTTP/2 server on an already-connected socket (never a listening server). */
function startH2Server(socket: Socket, options: http2.ServerOptions): http2.ServerHttp2Session {
  const perform = (http2 as unknown as { performServerHandshake?: (s: Socket, o: http2.ServerOptions) => http2.ServerHttp2Session })
    .performServerHandshake;
  if (perform) return perform(socket, options);
  // Older Node: an unlistened Http2Server fed one socket.
  let session: http2.ServerHttp2Session | null = null;
  const server = http2.createServer(options);
  server.once('session', (s) => (session = s));
  server.emit('connection', socket);
  if (!session) throw new NetwallError('HTTP/2 session did not start');
  return session;
}

// ---------------------------------------------------------------- command-line helpers

/** `[NAME@]ADDRESS[:PORT]`, ADDRESS an IPv4, a host name or a [bracketed] IPv6; without NAME@ any gateway name is accepted. */
export function parseGatewayArg(text: string): GatewayTarget {
  const at = text.indexOf('@');
  const name = at >= 0 ? text.slice(0, at) : '';
  const rest = at >= 0 ? text.slice(at + 1) : text;
  if (at >= 0 && !NAME_RE.test(name)) throw new ValidationError(`--gateway ${text}: "${name}" is not a host name`);
  const { host, port } = parseHostPort(rest, ROUTER_PORT, '--gateway');
  return at >= 0 ? { host: name, meshAddress: host, routerPort: port } : { host, meshAddress: host, routerPort: port, anyName: true };
}

export function parseHostPort(text: string, defaultPort: number | null, flag: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]@]+))(?::(\d{1,5}))?$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = m?.[3] !== undefined ? Number(m[3]) : defaultPort;
  if (!host || port === null || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ValidationError(`${flag} ${text}: expected HOST:PORT`);
  }
  return { host, port };
}

/** A secret key file: base64 of the 64-byte tweetnacl secret key, or JSON {"secretKey": ...}. */
export function readSecretKey(path: string): string {
  const text = readFileSync(path, 'utf8').trim();
  const key = text.startsWith('{') ? (JSON.parse(text) as { secretKey?: unknown }).secretKey : text;
  if (!isKey(key, 64)) throw new NetwallError(`${path}: not a base64 64-byte ed25519 secret key`);
  return key;
}

export function readCredential(path: string): RouterCredential {
  const c = JSON.parse(readFileSync(path, 'utf8')) as Partial<RouterCredential>;
  if (typeof c.grant !== 'string' || typeof c.signature !== 'string') throw new NetwallError(`${path}: not a router credential {grant, signature}`);
  return { grant: c.grant, signature: c.signature };
}

/** Key and credential from their files, checked to belong together. */
export function loadAuth(keyFile: string, credentialFile: string): RouterAuth & { grant: RouterGrant } {
  const secretKey = readSecretKey(keyFile);
  const credential = readCredential(credentialFile);
  let grant: RouterGrant;
  try {
    grant = JSON.parse(credential.grant) as RouterGrant;
  } catch {
    throw new NetwallError(`${credentialFile}: grant is not JSON`);
  }
  const publicKey = Buffer.from(secretKey, 'base64').subarray(32).toString('base64');
  if (grant.publicKey !== publicKey) throw new NetwallError(`${credentialFile} was issued for another key than ${keyFile}`);
  return { secretKey, credential, grant };
}
