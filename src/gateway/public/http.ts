/**
 * The HTTP side of the public listeners (port 80, and HTTPS after the TLS
 * listener terminated a connection): route each request by Host, apply the
 * limits, and forward it on an upstream stream.
 *
 * Upstream streams belong to one client connection: a request opens a stream
 * (or takes the one its own connection's previous request to the same
 * exposure left, if idle < upstreamKeepAliveMs); a stream is never shared
 * between client connections. So:
 *  - every request is routed on its own Host: a keep-alive client that
 *    switches Host gets a new stream to the other exposure;
 *  - every request is written by Node's http client with the gateway's own
 *    forwarded headers (nothing from the client travels raw), and a
 *    request/response desync provoked against the app can only ever affect
 *    the client that provoked it, never another client's responses;
 *  - a kept stream the entry point closed while idle (the keep-alive race)
 *    costs a bodyless GET/HEAD/OPTIONS one resend on a new stream; anything
 *    else gets 502, never a silent replay.
 * Node's http client writes onto the Duplex the Upstream returned
 * (`createConnection: () => duplex`), so the framing (chunked bodies,
 * Content-Length, HEAD, 1xx) is Node's well-tested code, not ours.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { GatewayExposure } from '../../shared/desired.js';
import type { ConnInfo, OpenStream, PublicCore } from './core.js';
import { Rejection } from './core.js';
import type { RejectReason } from './metrics.js';
import { exposureKey, hostFromHeader, normalizeHostname } from './routes.js';
import { splice } from './splice.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and proxy-only ones, never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers the gateway sets itself; a client's copies are dropped (XFF and Forwarded are appended to instead). */
const OWN = new Set(['x-forwarded-proto', 'x-forwarded-host', 'expect']);

/** Never dropped because a client names them in Connection: routing and body framing depend on them. */
const FRAMING = new Set(['host', 'content-length']);

const STATUS: Partial<Record<RejectReason, number>> = {
  unknown_host: 404,
  misdirected: 421,
  bad_request: 400,
  header_too_large: 431,
  body_too_large: 413,
  header_timeout: 408,
  idle_timeout: 504,
  rate_limited: 429,
  client_connections: 429,
  exposure_busy: 503,
  upstream_unavailable: 503,
  upstream_timeout: 504,
  upstream_error: 502,
};

const TEXT: Partial<Record<RejectReason, string>> = {
  unknown_host: 'unknown host',
  misdirected: 'misdirected request: this connection does not serve that host',
  bad_request: 'bad request',
  header_too_large: 'request header too large',
  body_too_large: 'request body too large',
  header_timeout: 'request timeout',
  idle_timeout: 'upstream idle timeout',
  rate_limited: 'too many connections from your address',
  client_connections: 'too many connections from your address',
  exposure_busy: 'service busy',
  upstream_unavailable: 'service unavailable',
  upstream_timeout: 'upstream timeout',
  upstream_error: 'bad gateway',
};

export function statusFor(reason: RejectReason): number {
  return STATUS[reason] ?? 400;
}

/** A complete response written straight onto a socket (before or outside the HTTP parser), then close. */
export function rawReply(socket: Duplex, reason: RejectReason, extra: Record<string, string> = {}): void {
  const status = statusFor(reason);
  const body = `${TEXT[reason] ?? reason}\n`;
  const head = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(extra).map(([k, v]) => `${k}: ${v}`),
  ];
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
  lingerThenDestroy(socket);
}

/**
 * After answering and ending, read and drop what the client still sends for
 * a moment (so its unread bytes do not turn our FIN into a reset that eats
 * the response), then destroy.
 */
export function lingerThenDestroy(socket: Duplex, ms = 1000): void {
  socket.on('data', () => {});
  socket.resume();
  const t = setTimeout(() => socket.destroy(), ms);
  t.unref();
  socket.once('close', () => clearTimeout(t));
}

interface ConnState {
  info: ConnInfo;
  socket: Duplex;
  inflight: number;
  timer: NodeJS.Timeout | null;
  /** The upstream stream kept from this connection's last request, for its next one. */
  idle: { stream: OpenStream; since: number } | null;
}

/** Requests that may be sent twice: no body, and a method that is safe to repeat. */
function isSafe(req: IncomingMessage): boolean {
  const m = req.method ?? '';
  const noBody = req.headers['transfer-encoding'] === undefined && Number(req.headers['content-length'] ?? 0) === 0;
  return noBody && (m === 'GET' || m === 'HEAD' || m === 'OPTIONS');
}

export class HttpFront {
  readonly server: http.Server;
  private readonly conns = new WeakMap<Duplex, ConnState>();

  constructor(private readonly core: PublicCore) {
    const { limits } = core;
    this.server = http.createServer({ maxHeaderSize: limits.maxHeaderBytes, keepAliveTimeout: limits.keepAliveTimeoutMs });
    this.server.keepAliveTimeout = limits.keepAliveTimeoutMs;
    this.server.on('request', (req, res) => this.onRequest(req, res, false));
    // Expect: 100-continue: answer 100 only once the request is routed, within
    // limits and has a stream, so a refused client never sends its body.
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res, true));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket));
  }

  /** Hand an accepted (or TLS-terminated) connection to the HTTP parser. */
  accept(socket: Duplex, info: ConnInfo): void {
    const st: ConnState = { info, socket, inflight: 0, timer: null, idle: null };
    this.conns.set(socket, st);
    this.armHeaderTimer(st);
    socket.once('close', () => {
      this.clearHeaderTimer(st);
      st.idle?.stream.close();
      st.idle = null;
    });
    this.server.emit('connection', socket);
  }

  /**
   * The slowloris guard: from connection start, or from the end of the last
   * response, the next request head must be complete within headerTimeoutMs.
   * (Node's own headersTimeout needs server.listen() to run its checker; this
   * server only receives connections handed to it.)
   */
  private armHeaderTimer(st: ConnState): void {
    this.clearHeaderTimer(st);
    st.timer = setTimeout(() => {
      st.timer = null;
      if (st.inflight > 0 || st.socket.destroyed) return;
      this.core.metrics.reject('header_timeout');
      rawReply(st.socket, 'header_timeout');
    }, this.core.limits.headerTimeoutMs);
    st.timer.unref();
  }

  private clearHeaderTimer(st: ConnState): void {
    if (st.timer) clearTimeout(st.timer);
    st.timer = null;
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const reason: RejectReason = err.code === 'HPE_HEADER_OVERFLOW' ? 'header_too_large' : 'bad_request';
    this.core.metrics.reject(reason);
    const st = this.conns.get(socket);
    if (st) this.clearHeaderTimer(st);
    // A response already under way on this connection cannot be followed by another.
    if ((socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage?.headersSent) socket.destroy();
    else rawReply(socket, reason);
  }

  /** Which exposure serves this request, or why none does. */
  private route(req: IncomingMessage, info: ConnInfo): GatewayExposure | RejectReason {
    const url = req.url ?? '';
    if (!(url.startsWith('/') || (url === '*' && req.method === 'OPTIONS'))) return 'bad_request';
    if (info.sni !== undefined) {
      // Terminated TLS: the SNI chose the exposure at the handshake; look it
      // up again (an update may have changed it) and refuse a Host of another
      // exposure on this connection (no fronting one name through another).
      const e = this.core.router.bySni(info.sni);
      if (!e || e.tls !== 'terminate') return 'misdirected';
      const host = req.headers.host === undefined ? info.sni : hostFromHeader(req.headers.host);
      if (!e.hostnames.some((h) => normalizeHostname(h) === host)) return 'misdirected';
      return e;
    }
    return this.core.router.byHost(req.headers.host) ?? 'unknown_host';
  }

  private onRequest(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
    const st = this.conns.get(req.socket);
    if (!st) {
      req.socket.destroy();
      return;
    }
    st.inflight++;
    this.clearHeaderTimer(st);
    res.once('close', () => {
      st.inflight--;
      if (st.inflight === 0 && !st.socket.destroyed) this.armHeaderTimer(st);
    });
    const routed = this.route(req, st.info);
    if (typeof routed === 'string') {
      this.refuse(req, res, routed);
      return;
    }
    const key = exposureKey(routed);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.core.limits.maxBodyBytes) {
      this.refuse(req, res, 'body_too_large', key);
      return;
    }
    const send = (retryable: boolean): void => {
      const kept = this.takeIdle(st, key);
      if (kept) return this.forward(req, res, st, kept, retryable ? () => send(false) : null);
      this.core.openStream(routed, st.info.client).then(
        (stream) => this.forward(req, res, st, stream, null),
        (err: unknown) => this.refuse(req, res, err instanceof Rejection ? err.reason : 'upstream_unavailable', key),
      );
    };
    if (expectContinue) res.writeContinue();
    // Only a request without a body can be sent again (after a kept stream turned out to be closed).
    send(isSafe(req));
  }

  /** The connection's kept stream, if it is for this exposure and still usable; otherwise it is closed. */
  private takeIdle(st: ConnState, key: string): OpenStream | null {
    const idle = st.idle;
    st.idle = null;
    if (!idle) return null;
    const d = idle.stream.duplex;
    const fresh = performance.now() - idle.since < this.core.limits.upstreamKeepAliveMs;
    if (idle.stream.key === key && fresh && !d.destroyed && d.writable && !d.readableEnded) return idle.stream;
    idle.stream.close();
    return null;
  }

  /** Keep a stream whose exchange ended cleanly for this connection's next request. */
  private park(st: ConnState, stream: OpenStream): void {
    if (st.socket.destroyed || stream.duplex.destroyed || this.core.limits.upstreamKeepAliveMs <= 0) {
      stream.close();
      return;
    }
    st.idle?.stream.close();
    st.idle = { stream, since: performance.now() };
  }

  private refuse(req: IncomingMessage, res: ServerResponse, reason: RejectReason, exposure?: string): void {
    this.core.metrics.reject(reason, exposure);
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const status = statusFor(reason);
    const body = `${TEXT[reason] ?? reason}\n`;
    // Close unless the request is complete: never read a refused body on.
    const close = !req.complete || status === 413 || status === 400 || status === 431;
    res.writeHead(status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      ...(close ? { Connection: 'close' } : {}),
      ...(status === 503 || status === 429 ? { 'Retry-After': '1' } : {}),
    });
    res.end(body);
  }

  /**
   * Send one request on `stream` and relay the response. `retry` is set when
   * the stream was kept from an earlier request and the request has no body:
   * if the stream fails before any response byte (the entry point closed it
   * while idle), the request is sent once more on a new stream.
   */
  private forward(req: IncomingMessage, res: ServerResponse, st: ConnState, stream: OpenStream, retry: (() => void) | null): void {
    const { metrics, limits } = this.core;
    const key = stream.key;
    if (res.destroyed || req.socket.destroyed) {
      stream.close();
      return;
    }
    metrics.requests++;
    metrics.exposure(key).requests++;
    let last = performance.now();
    let timer: NodeJS.Timeout | null = null;
    let responded = false;
    let retried = false;
    const idle = (): void => {
      timer = setTimeout(() => {
        const quiet = performance.now() - last;
        if (quiet < limits.requestIdleTimeoutMs) return idle();
        preq.destroy();
        this.refuse(req, res, 'idle_timeout', key);
      }, limits.requestIdleTimeoutMs);
      timer.unref();
    };
    const preq = http.request({
      method: req.method,
      path: req.url,
      headers: forwardHeaders(req, st.info, false),
      createConnection: () => stream.duplex as Socket,
    });
    // Without an Agent, Node's client ends the connection after the response;
    // this makes it emit 'free' instead when the exchange allows keep-alive
    // (it still turns false by itself if the entry point answers Connection: close).
    preq.shouldKeepAlive = true;
    if (limits.requestIdleTimeoutMs > 0) idle();
    // Reuse needs both: our client saw a complete keep-alive exchange ('free')
    // and the response reached the client completely.
    let freed = false;
    let resDone = false;
    let settled = false;
    const settle = (): void => {
      if (settled || !resDone || retried) return;
      const clean = res.writableFinished; // the client got the whole response
      if (freed && clean) {
        settled = true;
        this.park(st, stream);
        return;
      }
      if (!freed && clean && preq.shouldKeepAlive && !stream.duplex.destroyed) {
        // 'free' comes on the next tick after the response ended; give it a moment.
        const t = setTimeout(() => {
          if (settled) return;
          settled = true;
          stream.close();
        }, 1000);
        t.unref();
        return;
      }
      settled = true;
      if (!preq.destroyed) preq.destroy();
      stream.close();
    };
    const onFree = (): void => {
      freed = true;
      settle();
    };
    stream.duplex.once('free', onFree);
    res.once('close', () => {
      if (timer) clearTimeout(timer);
      resDone = true;
      settle();
    });
    preq.on('error', () => {
      stream.duplex.removeListener('free', onFree);
      if (resDone) return; // the client went away first: not the upstream's fault
      if (retry && !responded && !res.headersSent && !res.destroyed) {
        retried = true;
        if (timer) clearTimeout(timer);
        stream.close();
        retry();
        return;
      }
      if (!res.headersSent) this.refuse(req, res, 'upstream_error', key);
      else res.destroy();
    });
    preq.on('response', (pres) => {
      responded = true;
      try {
        res.writeHead(pres.statusCode ?? 502, pres.statusMessage, responseHeaders(pres.rawHeaders));
      } catch {
        pres.destroy();
        this.refuse(req, res, 'upstream_error', key);
        return;
      }
      pres.on('data', (c: Buffer) => {
        last = performance.now();
        metrics.bytes(key, 0, c.length);
      });
      // An upstream that dies mid-body must not look like a complete response.
      pres.on('error', () => res.destroy());
      pres.on('aborted', () => res.destroy());
      pres.pipe(res);
    });
    if (req.readableEnded) {
      preq.end(); // a request without a body, sent again
      return;
    }
    let body = 0;
    req.on('data', (c: Buffer) => {
      if (retried) return;
      last = performance.now();
      body += c.length;
      if (body > limits.maxBodyBytes) {
        req.pause();
        preq.destroy();
        this.refuse(req, res, 'body_too_large', key);
        return;
      }
      metrics.bytes(key, c.length, 0);
      if (!preq.write(c)) req.pause();
    });
    preq.on('drain', () => req.resume());
    req.on('end', () => !retried && preq.end());
    req.on('error', () => preq.destroy());
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const st = this.conns.get(socket);
    if (!st) {
      socket.destroy();
      return;
    }
    this.clearHeaderTimer(st);
    st.inflight++; // the socket leaves the HTTP parser for good
    const { metrics, limits } = this.core;
    const routed = this.route(req, st.info);
    if (typeof routed === 'string') {
      metrics.reject(routed);
      rawReply(socket, routed);
      return;
    }
    const key = exposureKey(routed);
    this.core.openStream(routed, st.info.client).then(
      (stream) => {
        if (socket.destroyed) {
          stream.close();
          return;
        }
        metrics.requests++;
        metrics.exposure(key).requests++;
        const preq = http.request({
          method: req.method,
          path: req.url,
          headers: forwardHeaders(req, st.info, true),
          createConnection: () => stream.duplex as Socket,
        });
        const onClientGone = (): void => {
          preq.destroy();
          stream.close();
        };
        socket.once('close', onClientGone);
        socket.on('error', () => socket.destroy());
        preq.on('error', () => {
          if (socket.destroyed) return;
          metrics.reject('upstream_error', key);
          rawReply(socket, 'upstream_error');
        });
        preq.on('upgrade', (pres: IncomingMessage, usock: Duplex, uhead: Buffer) => {
          socket.removeListener('close', onClientGone);
          socket.write(responseHead(pres, pres.rawHeaders));
          if (uhead.length) socket.write(uhead);
          if (head.length) usock.write(head);
          metrics.exposure(key).connections++;
          splice(socket, usock, {
            idleTimeoutMs: limits.idleTimeoutMs,
            halfOpenTimeoutMs: limits.halfOpenTimeoutMs,
            onBytes: (a, b) => metrics.bytes(key, a, b),
            onIdle: () => metrics.reject('idle_timeout', key),
            onClose: () => stream.close(),
          });
        });
        preq.on('response', (pres) => {
          // No upgrade after all: relay the answer, delimited by closing.
          const headers = responseHeaders(pres.rawHeaders);
          const clean: string[] = [];
          for (let i = 0; i + 1 < headers.length; i += 2) {
            if (headers[i]!.toLowerCase() === 'content-length') continue;
            clean.push(headers[i]!, headers[i + 1]!);
          }
          socket.write(responseHead(pres, [...clean, 'Connection', 'close']));
          pres.on('data', (c: Buffer) => metrics.bytes(key, 0, c.length));
          pres.pipe(socket);
          pres.on('error', () => socket.destroy());
        });
        preq.end();
      },
      (err: unknown) => {
        const reason = err instanceof Rejection ? err.reason : 'upstream_unavailable';
        metrics.reject(reason, key);
        rawReply(socket, reason, reason === 'exposure_busy' ? { 'Retry-After': '1' } : {});
      },
    );
  }
}

function responseHead(pres: IncomingMessage, raw: string[]): string {
  const lines = [`HTTP/1.1 ${pres.statusCode ?? 502} ${pres.statusMessage ?? ''}`];
  for (let i = 0; i + 1 < raw.length; i += 2) lines.push(`${raw[i]}: ${raw[i + 1]}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Names listed in Connection headers: hop-by-hop too. */
function connectionTokens(raw: string[]): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'connection') continue;
    for (const t of raw[i + 1]!.split(',')) if (t.trim()) out.add(t.trim().toLowerCase());
  }
  return out;
}

/** RFC 7239 node: IPv4 as is, IPv6 bracketed and quoted. */
function forwardedNode(address: string): string {
  return address.includes(':') ? `"[${address}]"` : address;
}

/** RFC 7230 token, else a quoted-string. */
function forwardedValue(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * The request headers sent to the entry point, as a flat raw list (order and
 * case kept): hop-by-hop ones dropped, then X-Forwarded-For and Forwarded
 * appended to (a client's own entries stay first; the gateway's is last, the
 * only one an entry point should trust), X-Forwarded-Proto/Host set.
 */
export function forwardHeaders(req: IncomingMessage, info: ConnInfo, upgrade: boolean): string[] {
  const raw = req.rawHeaders;
  const tokens = connectionTokens(raw);
  const out: string[] = [];
  const xff: string[] = [];
  const fwd: string[] = [];
  let host = '';
  let upgradeValue: string | null = null;
  let chunked = false;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (lower === 'transfer-encoding') chunked = true;
    if (lower === 'upgrade') upgradeValue = value;
    if (lower === 'host') host = value;
    if (HOP_BY_HOP.has(lower) || OWN.has(lower) || (tokens.has(lower) && !FRAMING.has(lower))) continue;
    if (lower === 'x-forwarded-for') {
      xff.push(value);
      continue;
    }
    if (lower === 'forwarded') {
      fwd.push(value);
      continue;
    }
    out.push(name, value);
  }
  const proto = info.proto;
  if (!host && info.sni) host = info.sni;
  const client = info.client.address;
  out.push('X-Forwarded-For', [...xff, client].join(', '));
  out.push('X-Forwarded-Proto', proto);
  if (host) out.push('X-Forwarded-Host', host);
  const element = [`for=${forwardedNode(client)}`, ...(host ? [`host=${forwardedValue(host)}`] : []), `proto=${proto}`].join(';');
  out.push('Forwarded', [...fwd, element].join(', '));
  if (chunked) {
    // Node re-frames the body (we forward the decoded bytes).
    for (let i = 0; i < out.length; i += 2) if (out[i]!.toLowerCase() === 'content-length') out.splice(i, 2);
    out.push('Transfer-Encoding', 'chunked');
  }
  if (upgrade && upgradeValue !== null) out.push('Connection', 'Upgrade', 'Upgrade', upgradeValue);
  else out.push('Connection', 'keep-alive');
  return out;
}

/** Response headers relayed to the client: hop-by-hop ones dropped (Node frames the body itself). */
export function responseHeaders(raw: string[]): string[] {
  const tokens = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(lower) || tokens.has(lower)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}
