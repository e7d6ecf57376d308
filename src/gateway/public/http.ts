/**
 * The HTTP side of the public listeners (port 80, and HTTPS after the TLS
 * listener terminated a connection): route each request by Host, apply the
 * limits, and forward it on an upstream stream.
 *
 * The forwarding core works on the bytes (heads parsed by ./http1.ts, bodies
 * relayed by their framing), not through Node's http server and client, which
 * cost several times the CPU per request (docs/benchmarks.md, gateway).
 *
 * Upstream streams belong to one client connection: a request opens a stream
 * (or takes the one its own connection's previous request to the same
 * exposure left, if idle < upstreamKeepAliveMs); a stream is never shared
 * between client connections. So:
 *  - every request is routed on its own Host: a keep-alive client that
 *    switches Host gets a new stream to the other exposure;
 *  - every request head is written by the gateway (method, target, the
 *    client's end-to-end fields, the gateway's forwarded fields, its own
 *    framing); bodies are re-framed (Content-Length kept, chunked decoded and
 *    re-encoded), so nothing the client framed travels raw, and a desync
 *    provoked against the app can only ever affect the client that provoked
 *    it, never another client's responses;
 *  - a kept stream the entry point closed while idle (the keep-alive race)
 *    costs a bodyless GET/HEAD/OPTIONS one resend on a new stream; anything
 *    else gets 502, never a silent replay.
 * One request at a time per connection: pipelined requests wait in a bounded
 * buffer until the previous response is complete.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { GatewayExposure } from '../../shared/desired.js';
import type { ConnInfo, OpenStream, PublicCore } from './core.js';
import { Rejection } from './core.js';
import {
  chunkLine,
  ChunkedDecoder,
  CRLF,
  CRLFCRLF,
  HttpParseError,
  LAST_CHUNK,
  scanRequestHead,
  scanResponseHead,
  type RequestHead,
  type ResponseHead,
} from './http1.js';
import type { RejectReason } from './metrics.js';
import { forwardHeadBytes, responseHeadBytes, switchingHead } from './http-heads.js';
import { exposureKey, hostFromHeader, normalizeHostname } from './routes.js';
import { splice } from './splice.js';

/** Upstream response heads larger than this are refused (502). */
const MAX_RESPONSE_HEAD = 64 * 1024;

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

/** The gateway's own answer for a refusal: status line and headers (and the body unless `head`). */
function replyText(reason: RejectReason, close: boolean, extra: Record<string, string>, head = false): string {
  const status = statusFor(reason);
  const body = `${TEXT[reason] ?? reason}\n`;
  const lines = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
    ...(close ? ['Connection: close'] : []),
    ...((status === 503 || status === 429) && extra['Retry-After'] === undefined ? ['Retry-After: 1'] : []),
    ...Object.entries(extra).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${lines.join('\r\n')}\r\n\r\n${head ? '' : body}`;
}

/** A complete response written straight onto a socket (outside any exchange), then close. */
export function rawReply(socket: Duplex, reason: RejectReason, extra: Record<string, string> = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(replyText(reason, true, extra));
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

/** Requests that may be sent twice: no body, and a method that is safe to repeat. */
function isSafe(req: RequestHead): boolean {
  return req.framing === 'none' && (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS');
}

function append(a: Buffer | null, b: Buffer): Buffer {
  return a === null || a.length === 0 ? b : Buffer.concat([a, b]);
}

export class HttpFront {
  /** How often a connection checks its timers (a quarter of the shortest timeout, 25 ms – 1 s). */
  readonly tickMs: number;

  constructor(readonly core: PublicCore) {
    const l = core.limits;
    const shortest = Math.min(...[l.headerTimeoutMs, l.keepAliveTimeoutMs, l.requestIdleTimeoutMs].filter((v) => v > 0), 4000);
    this.tickMs = Math.max(25, Math.min(1000, Math.floor(shortest / 4)));
  }

  /** Take over an accepted (or TLS-terminated) client connection. */
  accept(socket: Duplex, info: ConnInfo): void {
    new HttpConnection(this, socket, info);
  }
}

/** One request in flight on a connection, from its head to the end of its response. */
interface Exchange {
  req: RequestHead;
  exposure: GatewayExposure | null;
  key: string;
  stream: OpenStream | null;
  /** Request body: bytes still expected (length framing) or the decoder (chunked). */
  bodyLeft: number;
  decoder: ChunkedDecoder | null;
  bodyBytes: number;
  reqDone: boolean;
  /** Response: collecting the head, relaying the body, or complete. */
  res: 'head' | 'body' | 'done';
  resBuf: Buffer | null;
  resHead: ResponseHead | null;
  resLeft: number;
  resDecoder: ChunkedDecoder | null;
  /** How the response body goes to the client. */
  toClient: 'none' | 'length' | 'chunked' | 'close';
  /** Any byte came back from the upstream (a resend is no longer possible). */
  responded: boolean;
  /** The response head went out to the client (a refusal is no longer possible). */
  headSent: boolean;
  /** Close the client connection once this exchange ends. */
  closeAfter: boolean;
  /** Resend once on a new stream if the kept stream dies before answering. */
  retry: boolean;
}

const PENDING_LIMIT = 64 * 1024;

class HttpConnection {
  private phase: 'head' | 'opening' | 'exchange' | 'closing' | 'upgraded' | 'closed' = 'head';
  /** Client bytes received and not consumed yet (a partial head, body bytes before the stream opened, pipelined requests). */
  private pending: Buffer | null = null;
  /** Where the blank-line search resumes in `pending`. */
  private scanned = 0;
  private ex: Exchange | null = null;
  /** The stream kept from this connection's last exchange, for its next one. */
  private idle: { stream: OpenStream; since: number } | null = null;
  /** Streams this connection listens to (their events reach it until they close), with how to stop listening. */
  private readonly detachers = new WeakMap<OpenStream, () => void>();
  private exchanges = 0;
  /** Start of the wait for the current head (connection start or end of the last response). */
  private headSince = performance.now();
  /** performance.now() as of the event being handled (read once per event, not per use). */
  private now = this.headSince;
  /** Last byte either way during an exchange. */
  private last = this.headSince;
  private clientEnded = false;
  private readPaused = false;
  /** Inside parseHeads (an exchange that ends at once must not re-enter it: its loop takes the next request). */
  private parsing = false;
  /** A drain listener is waiting on the client / on the current stream. */
  private waitingClientDrain = false;
  private waitingUpDrain: Duplex | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly front: HttpFront,
    private readonly socket: Duplex,
    private readonly info: ConnInfo,
  ) {
    socket.on('data', this.onClientData);
    socket.on('end', this.onClientEnd);
    socket.on('error', () => socket.destroy());
    socket.once('close', this.onClientClose);
    this.timer = setTimeout(this.onTick, front.tickMs);
    this.timer.unref();
  }

  private get core(): PublicCore {
    return this.front.core;
  }

  // ------------------------------------------------------------ client side

  private readonly onClientData = (chunk: Buffer): void => {
    this.now = performance.now();
    switch (this.phase) {
      case 'head':
        this.pending = append(this.pending, chunk);
        this.parseHeads();
        return;
      case 'exchange':
        this.last = this.now;
        if (!this.ex!.reqDone) this.feedBody(chunk);
        else this.hold(chunk);
        return;
      case 'opening':
        this.hold(chunk);
        return;
      default:
        return; // closing: dropped
    }
  };

  /** A complete request head waits in `pending`. */
  private holdsHead(): boolean {
    return this.pending !== null && this.pending.indexOf(CRLFCRLF) !== -1;
  }

  /** Keep client bytes for later, reading no more once the buffer is full. */
  private hold(chunk: Buffer): void {
    this.pending = append(this.pending, chunk);
    if (this.pending.length > PENDING_LIMIT) this.pauseClient();
  }

  private pauseClient(): void {
    if (!this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    }
  }

  private resumeClient(): void {
    if (this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  /**
   * The client half-closed: requests it completed before are still
   * answered (pipelined ones too); then the connection closes.
   */
  private readonly onClientEnd = (): void => {
    this.clientEnded = true;
    if (this.phase === 'head') this.closeClient(); // nothing pending here is a complete head
    else this.checkTruncated();
  };

  /** After the client's end, a request body still short of its framing can never complete: nothing to answer. */
  private checkTruncated(): void {
    const ex = this.ex;
    if (!this.clientEnded || ex === null || ex.reqDone || ex.stream === null || this.phase !== 'exchange') return;
    ex.stream.close();
    ex.stream = null;
    this.phase = 'closing';
    this.socket.destroy();
  }

  private readonly onClientClose = (): void => {
    if (this.phase === 'closed') return;
    const wasUpgraded = this.phase === 'upgraded';
    this.phase = 'closed';
    clearTimeout(this.timer);
    if (wasUpgraded) return; // the splice owns the stream
    this.ex?.stream?.close();
    this.ex = null;
    this.idle?.stream.close();
    this.idle = null;
  };

  /** End our side after what was written, then drop the connection. */
  private closeClient(): void {
    if (this.phase === 'closed' || this.phase === 'upgraded') return;
    this.phase = 'closing';
    this.resumeClient();
    if (this.socket.writable) {
      this.socket.end();
      lingerThenDestroy(this.socket);
    } else this.socket.destroy();
  }

  private readonly onTick = (): void => {
    if (this.phase === 'closed' || this.phase === 'upgraded') return;
    const { limits, metrics } = this.core;
    const now = (this.now = performance.now());
    if (this.phase === 'head') {
      const waited = now - this.headSince;
      const partial = this.pending !== null && this.pending.length > 0;
      if (!partial && this.exchanges > 0 && limits.keepAliveTimeoutMs > 0 && waited >= limits.keepAliveTimeoutMs) {
        this.closeClient(); // an idle keep-alive connection: no answer owed
        return;
      }
      if (limits.headerTimeoutMs > 0 && waited >= limits.headerTimeoutMs) {
        metrics.reject('header_timeout');
        this.phase = 'closing';
        this.idle?.stream.close();
        this.idle = null;
        rawReply(this.socket, 'header_timeout');
        return;
      }
    } else if (this.phase === 'exchange' && limits.requestIdleTimeoutMs > 0 && now - this.last >= limits.requestIdleTimeoutMs) {
      this.refuse('idle_timeout');
      return;
    }
    this.timer.refresh();
  };

  // ------------------------------------------------------------ request heads

  /** Parse and start the requests waiting in `pending`, one at a time. */
  private parseHeads(): void {
    if (this.parsing) return;
    this.parsing = true;
    try {
      this.parseLoop();
    } finally {
      this.parsing = false;
    }
  }

  private parseLoop(): void {
    const { limits, metrics } = this.core;
    while (this.phase === 'head' && this.pending !== null) {
      let buf = this.pending;
      // Empty lines before a request line are ignored (RFC 9112 §2.2).
      let skip = 0;
      while (skip + 1 < buf.length && buf[skip] === 13 && buf[skip + 1] === 10) skip += 2;
      if (skip > 0) {
        buf = buf.subarray(skip);
        this.pending = buf;
        this.scanned = 0;
      }
      const at = buf.indexOf(CRLFCRLF, Math.max(0, this.scanned - 3));
      if (at === -1 || at + 4 > limits.maxHeaderBytes) {
        if (at !== -1 || buf.length > limits.maxHeaderBytes) {
          metrics.reject('header_too_large');
          this.replyAndClose('header_too_large');
          return;
        }
        // Lines ended by a bare LF never make a blank CRLF line: refuse now, not at the header timeout.
        if (buf.indexOf('\n\n') !== -1 || buf.indexOf('\n\r\n') !== -1) {
          metrics.reject('bad_request');
          this.replyAndClose('bad_request');
          return;
        }
        this.scanned = buf.length;
        if (buf.length === 0) this.pending = null;
        return;
      }
      let req: RequestHead;
      try {
        req = scanRequestHead(buf, at);
      } catch (err) {
        if (!(err instanceof HttpParseError)) throw err;
        metrics.reject('bad_request');
        this.replyAndClose('bad_request');
        return;
      }
      this.pending = at + 4 < buf.length ? buf.subarray(at + 4) : null;
      this.scanned = 0;
      this.start(req);
    }
  }

  /** A refusal outside an exchange (the head could not be read): answer and close. */
  private replyAndClose(reason: RejectReason): void {
    this.phase = 'closing';
    this.pending = null;
    this.idle?.stream.close();
    this.idle = null;
    rawReply(this.socket, reason);
  }

  /** Which exposure serves this request, or why none does. */
  private route(req: RequestHead): GatewayExposure | RejectReason {
    const { info } = this;
    const target = req.target;
    if (!(target.charCodeAt(0) === 47 /* / */ || (target === '*' && req.method === 'OPTIONS'))) return 'bad_request';
    if (info.sni !== undefined) {
      // Terminated TLS: the SNI chose the exposure at the handshake; look it
      // up again (an update may have changed it) and refuse a Host of another
      // exposure on this connection (no fronting one name through another).
      const e = this.core.router.bySni(info.sni);
      if (!e || e.tls !== 'terminate') return 'misdirected';
      const host = req.host === undefined ? info.sni : hostFromHeader(req.host);
      if (!e.hostnames.some((h) => normalizeHostname(h) === host)) return 'misdirected';
      return e;
    }
    return this.core.router.byHost(req.host) ?? 'unknown_host';
  }

  private start(req: RequestHead): void {
    const { limits } = this.core;
    this.phase = 'exchange';
    this.exchanges++;
    this.last = this.now;
    const ex: Exchange = {
      req,
      exposure: null,
      key: '',
      stream: null,
      bodyLeft: req.framing === 'length' ? req.contentLength : 0,
      decoder: req.framing === 'chunked' ? new ChunkedDecoder() : null,
      bodyBytes: 0,
      reqDone: req.framing === 'none',
      res: 'head',
      resBuf: null,
      resHead: null,
      resLeft: 0,
      resDecoder: null,
      toClient: 'none',
      responded: false,
      headSent: false,
      closeAfter: !req.keepAlive,
      retry: false,
    };
    this.ex = ex;
    const routed = this.route(req);
    if (typeof routed === 'string') return this.refuse(routed);
    ex.exposure = routed;
    ex.key = exposureKey(routed);
    if (req.contentLength > limits.maxBodyBytes) return this.refuse('body_too_large');
    const kept = this.takeIdle(ex.key);
    if (kept) {
      ex.retry = isSafe(req);
      this.send(kept);
    } else this.open();
  }

  /** Open a new upstream stream for the current exchange (client reads wait meanwhile). */
  private open(): void {
    const ex = this.ex!;
    this.phase = 'opening';
    this.core.openStream(ex.exposure!, this.info.client).then(
      (stream) => {
        this.now = performance.now();
        if (this.ex !== ex || this.phase !== 'opening') {
          stream.close();
          return;
        }
        this.phase = 'exchange';
        this.send(stream);
      },
      (err: unknown) => {
        this.now = performance.now();
        if (this.ex !== ex || this.phase !== 'opening') return;
        this.phase = 'exchange';
        this.refuse(err instanceof Rejection ? err.reason : 'upstream_unavailable');
      },
    );
  }

  /** The connection's kept stream, if it is for this exposure and still usable; otherwise it is closed. */
  private takeIdle(key: string): OpenStream | null {
    const idle = this.idle;
    this.idle = null;
    if (!idle) return null;
    const d = idle.stream.duplex;
    const fresh = this.now - idle.since < this.core.limits.upstreamKeepAliveMs;
    if (idle.stream.key === key && fresh && !d.destroyed && d.writable && !d.readableEnded) return idle.stream;
    idle.stream.close();
    return null;
  }

  /** Write the request head (and what is already here of its body) on `stream`. */
  private send(stream: OpenStream): void {
    const ex = this.ex!;
    const { metrics } = this.core;
    ex.stream = stream;
    if (!this.detachers.has(stream)) this.attach(stream);
    metrics.requests++;
    metrics.exposure(ex.key).requests++;
    // Expect: 100-continue is answered here, once the request is routed,
    // within limits and has a stream, so a refused client never sends its body.
    if (ex.req.expectContinue && !ex.reqDone) this.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
    const upgrade = ex.req.upgrade !== null;
    const pending = this.pending;
    this.pending = null;
    if (ex.req.framing === 'length' && pending !== null) {
      // The usual small body arrives with its head: one write for both.
      const n = Math.min(ex.bodyLeft, pending.length);
      const body = pending.subarray(0, n);
      if (n < pending.length) this.pending = pending.subarray(n);
      ex.bodyLeft -= n;
      ex.bodyBytes += n;
      metrics.bytes(ex.key, n, 0);
      if (ex.bodyLeft === 0) ex.reqDone = true;
      this.writeUp(forwardHeadBytes(ex.req, this.info, upgrade, body));
    } else {
      this.writeUp(forwardHeadBytes(ex.req, this.info, upgrade));
      if (pending !== null) {
        if (ex.reqDone) this.pending = pending;
        else this.feedBody(pending);
      }
    }
    if (this.pending === null || this.pending.length <= PENDING_LIMIT) this.resumeClient();
    this.checkTruncated();
  }

  private writeUp(data: Buffer | string): void {
    const d = this.ex!.stream!.duplex;
    if (!(typeof data === 'string' ? d.write(data, 'latin1') : d.write(data))) {
      // Backpressure: stop reading the client until the entry point drains.
      this.pauseClient();
      if (this.waitingUpDrain === d) return;
      this.waitingUpDrain = d;
      d.once('drain', () => {
        if (this.waitingUpDrain === d) this.waitingUpDrain = null;
        if (this.phase === 'exchange' && this.ex?.stream?.duplex === d && (this.pending?.length ?? 0) <= PENDING_LIMIT) this.resumeClient();
      });
    }
  }

  /** Request body bytes from the client: relayed by the request's framing; what follows the body waits as the next request. */
  private feedBody(chunk: Buffer): void {
    const ex = this.ex!;
    const { limits, metrics } = this.core;
    if (ex.stream === null) {
      this.hold(chunk);
      return;
    }
    if (ex.decoder === null) {
      const n = Math.min(ex.bodyLeft, chunk.length);
      ex.bodyLeft -= n;
      ex.bodyBytes += n;
      metrics.bytes(ex.key, n, 0);
      this.writeUp(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (n < chunk.length) this.hold(chunk.subarray(n));
      if (ex.bodyLeft === 0) ex.reqDone = true;
    } else {
      let used: number;
      const parts: Buffer[] = [];
      try {
        used = ex.decoder.push(chunk, (data) => {
          parts.push(Buffer.from(chunkLine(data.length), 'latin1'), data, CRLF);
          ex.bodyBytes += data.length;
        });
      } catch (err) {
        if (!(err instanceof HttpParseError)) throw err;
        ex.closeAfter = true;
        this.refuse('bad_request');
        return;
      }
      if (ex.bodyBytes > limits.maxBodyBytes) {
        ex.closeAfter = true;
        this.refuse('body_too_large');
        return;
      }
      if (ex.decoder.done) {
        parts.push(LAST_CHUNK);
        ex.reqDone = true;
      }
      let n = 0;
      for (let i = 1; i < parts.length; i += 3) n += parts[i]!.length;
      if (n > 0) metrics.bytes(ex.key, n, 0);
      if (parts.length > 0) this.writeUp(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      if (used < chunk.length) this.hold(chunk.subarray(used));
    }
    if (ex.reqDone && ex.res === 'done') this.finish();
    else this.checkTruncated();
  }

  // ------------------------------------------------------------ upstream side

  /** Listen to a stream for as long as it lives: its events reach whichever exchange uses it, or close it while it idles. */
  private attach(stream: OpenStream): void {
    const d = stream.duplex;
    const onData = (chunk: Buffer): void => {
      if (this.ex?.stream === stream && this.phase === 'exchange') this.onUpData(chunk);
      else this.drop(stream); // bytes from a stream with no request on it: never reused
    };
    const onEnd = (): void => {
      if (this.ex?.stream === stream && this.phase === 'exchange') this.onUpGone(true);
      else this.drop(stream);
    };
    const onClose = (): void => {
      if (this.ex?.stream === stream && this.phase === 'exchange') this.onUpGone(false);
      else this.drop(stream);
    };
    d.on('data', onData);
    d.once('end', onEnd);
    d.once('close', onClose);
    this.detachers.set(stream, () => {
      d.removeListener('data', onData);
      d.removeListener('end', onEnd);
      d.removeListener('close', onClose);
    });
  }

  private drop(stream: OpenStream): void {
    if (this.idle?.stream === stream) this.idle = null;
    stream.close();
  }

  private onUpData(chunk: Buffer): void {
    const ex = this.ex!;
    ex.responded = true;
    this.last = this.now = performance.now();
    if (ex.res === 'head') {
      ex.resBuf = append(ex.resBuf, chunk);
      this.parseResponse();
    } else if (ex.res === 'body') this.relay(chunk);
    else {
      // Bytes after a complete response: the stream is out of step.
      ex.stream!.close();
    }
  }

  private parseResponse(): void {
    const ex = this.ex!;
    for (;;) {
      const buf = ex.resBuf!;
      const at = buf.indexOf(CRLFCRLF);
      if (at === -1 || at + 4 > MAX_RESPONSE_HEAD) {
        if (at !== -1 || buf.length > MAX_RESPONSE_HEAD) this.upstreamFailed();
        return;
      }
      let res: ResponseHead;
      try {
        res = scanResponseHead(buf, at, ex.req.method);
      } catch (err) {
        if (!(err instanceof HttpParseError)) throw err;
        this.upstreamFailed();
        return;
      }
      const rest = buf.subarray(at + 4);
      if (res.status === 101) {
        if (ex.req.upgrade === null || !ex.reqDone) return this.upstreamFailed();
        return this.upgrade(res, rest);
      }
      if (res.status < 200) {
        // Interim responses are not relayed (the gateway answered any Expect itself).
        ex.resBuf = rest;
        continue;
      }
      ex.resBuf = null;
      ex.resHead = res;
      ex.res = 'body';
      const req = ex.req;
      let toClient: Exchange['toClient'] = res.framing;
      // An HTTP/1.0 client cannot read chunks: the body is delimited by the close instead.
      if (toClient === 'chunked' && req.minor === 0) toClient = 'close';
      ex.toClient = toClient;
      // A client that half-closed with nothing more pending is told this is the last response.
      // So is one answered before its request body was complete (that body is not read on).
      if (toClient === 'close' || req.upgrade !== null || !ex.reqDone || (this.clientEnded && !this.holdsHead())) ex.closeAfter = true;
      if (res.framing === 'length') ex.resLeft = res.contentLength;
      if (res.framing === 'chunked') ex.resDecoder = new ChunkedDecoder();
      const keepAlive10 = !ex.closeAfter && req.minor === 0;
      ex.headSent = true;
      if (res.framing === 'none') {
        this.writeClient(responseHeadBytes(res, toClient, ex.closeAfter, keepAlive10));
        if (rest.length > 0) ex.stream!.close(); // bytes after a bodyless response: out of step, never reused
        this.responseDone();
      } else if (res.framing === 'length' && rest.length <= ex.resLeft) {
        // The usual case: the head and the whole (small) body in one write.
        ex.resLeft -= rest.length;
        this.core.metrics.bytes(ex.key, 0, rest.length);
        this.writeClient(responseHeadBytes(res, toClient, ex.closeAfter, keepAlive10, rest.length > 0 ? rest : null));
        if (ex.resLeft === 0) this.responseDone();
      } else {
        this.writeClient(responseHeadBytes(res, toClient, ex.closeAfter, keepAlive10));
        if (rest.length > 0) this.relay(rest);
      }
      return;
    }
  }

  /** Response body bytes: to the client by its framing. */
  private relay(chunk: Buffer): void {
    const ex = this.ex!;
    const res = ex.resHead!;
    const { metrics } = this.core;
    if (res.framing === 'length') {
      const n = Math.min(ex.resLeft, chunk.length);
      ex.resLeft -= n;
      metrics.bytes(ex.key, 0, n);
      if (n > 0) this.writeClient(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (n < chunk.length) ex.stream!.close(); // more than it declared: never reused
      if (ex.resLeft === 0) this.responseDone();
    } else if (res.framing === 'chunked') {
      const parts: Buffer[] = [];
      let n = 0;
      let used: number;
      try {
        used = ex.resDecoder!.push(chunk, (data) => {
          n += data.length;
          if (ex.toClient === 'chunked') parts.push(Buffer.from(chunkLine(data.length), 'latin1'), data, CRLF);
          else parts.push(data);
        });
      } catch (err) {
        if (!(err instanceof HttpParseError)) throw err;
        this.upstreamFailed();
        return;
      }
      metrics.bytes(ex.key, 0, n);
      if (ex.resDecoder!.done && ex.toClient === 'chunked') parts.push(LAST_CHUNK);
      if (parts.length > 0) this.writeClient(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      if (used < chunk.length) ex.stream!.close();
      if (ex.resDecoder!.done) this.responseDone();
    } else {
      metrics.bytes(ex.key, 0, chunk.length);
      this.writeClient(chunk);
    }
  }

  private writeClient(data: Buffer | string): void {
    const up = this.ex?.stream?.duplex;
    const ok = typeof data === 'string' ? this.socket.write(data, 'latin1') : this.socket.write(data);
    if (!ok && up) {
      // Backpressure: stop reading the entry point until the client drains.
      up.pause();
      if (this.waitingClientDrain) return;
      this.waitingClientDrain = true;
      this.socket.once('drain', () => {
        this.waitingClientDrain = false;
        this.ex?.stream?.duplex.resume();
      });
    }
  }

  /** The upstream ended (`clean`) or closed while this exchange used it. */
  private onUpGone(clean: boolean): void {
    this.now = performance.now();
    const ex = this.ex!;
    if (ex.res === 'done') {
      ex.stream?.close();
      return;
    }
    if (ex.res === 'body' && ex.resHead!.framing === 'close' && clean) {
      this.responseDone(); // a body delimited by the close ended normally
      return;
    }
    if (!ex.responded && ex.retry) {
      // The kept stream was closed by the entry point while idle: send this
      // bodyless request once more on a new stream.
      ex.retry = false;
      const old = ex.stream!;
      ex.stream = null;
      old.close();
      this.open();
      return;
    }
    this.upstreamFailed();
  }

  /** The entry point failed this exchange: 502 if nothing was sent yet, else the client is cut off (a truncated response must not look complete). */
  private upstreamFailed(): void {
    this.ex!.closeAfter = true;
    this.refuse('upstream_error');
  }

  private responseDone(): void {
    const ex = this.ex!;
    ex.res = 'done';
    if (ex.reqDone) this.finish();
    else {
      // The entry point answered before the request body was complete (e.g.
      // its own 413): the rest of the body is not read on.
      ex.closeAfter = true;
      this.finish();
    }
  }

  /** The exchange is over: keep or close the stream and the client connection, then take the next request. */
  private finish(): void {
    const ex = this.ex!;
    this.ex = null;
    const stream = ex.stream;
    if (stream) {
      const reusable = ex.reqDone && ex.resHead !== null && ex.resHead.keepAlive && !ex.closeAfter && ex.req.upgrade === null;
      if (reusable) this.park(stream);
      else stream.close();
    }
    if (ex.closeAfter) {
      this.closeClient();
      return;
    }
    this.phase = 'head';
    this.headSince = this.now;
    if (this.pending !== null) this.parseHeads();
    if (this.phase !== 'head') return;
    if (this.clientEnded) this.closeClient(); // what is left is at most a partial head that can never complete
    else if ((this.pending?.length ?? 0) <= PENDING_LIMIT) this.resumeClient();
  }

  /** Keep a stream whose exchange ended cleanly for this connection's next request. */
  private park(stream: OpenStream): void {
    const d = stream.duplex;
    if (d.destroyed || this.core.limits.upstreamKeepAliveMs <= 0) {
      stream.close();
      return;
    }
    if (d.isPaused()) d.resume();
    this.idle?.stream.close();
    this.idle = { stream, since: this.now };
  }

  /** Answer the current exchange with the gateway's own refusal. */
  private refuse(reason: RejectReason): void {
    const ex = this.ex!;
    this.core.metrics.reject(reason, ex.key || undefined);
    ex.stream?.close();
    ex.stream = null;
    if (ex.headSent) {
      this.phase = 'closing';
      this.socket.destroy();
      return;
    }
    const status = statusFor(reason);
    // Close unless the request was read completely: a refused body is never read on.
    if (!ex.reqDone || status === 400 || status === 413 || status === 431) ex.closeAfter = true;
    ex.headSent = true;
    ex.res = 'done';
    ex.reqDone = true;
    this.socket.write(replyText(reason, ex.closeAfter, {}, ex.req.method === 'HEAD'), 'latin1');
    this.finish();
  }

  /** 101: relay the handshake, then join the client and the stream byte for byte. */
  private upgrade(res: ResponseHead, rest: Buffer): void {
    const ex = this.ex!;
    const stream = ex.stream!;
    const { limits, metrics } = this.core;
    const key = ex.key;
    this.phase = 'upgraded';
    this.ex = null;
    clearTimeout(this.timer);
    this.idle?.stream.close();
    this.idle = null;
    this.detachers.get(stream)?.();
    this.socket.removeListener('data', this.onClientData);
    this.socket.removeListener('end', this.onClientEnd);
    this.socket.write(switchingHead(res), 'latin1');
    if (rest.length > 0) this.socket.write(rest);
    if (this.pending !== null) stream.duplex.write(this.pending);
    this.pending = null;
    this.readPaused = false;
    metrics.exposure(key).connections++;
    splice(this.socket, stream.duplex, {
      idleTimeoutMs: limits.idleTimeoutMs,
      halfOpenTimeoutMs: limits.halfOpenTimeoutMs,
      onBytes: (a, b) => metrics.bytes(key, a, b),
      onIdle: () => metrics.reject('idle_timeout', key),
      onClose: () => stream.close(),
    });
  }
}
