/**
 * The HTTPS listener: read the ClientHello without terminating TLS, route by
 * SNI, then either
 *  - passthrough: (PROXY v2 header,) the peeked bytes, then splice — the
 *    gateway never holds a key and never sees plaintext; or
 *  - terminate: TLS with the certificate configured for that name, then the
 *    same HTTP routing as port 80 with X-Forwarded-Proto: https.
 * Unknown or missing SNI: a fatal unrecognized_name alert, nothing forwarded.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { GatewayExposure } from '../../shared/desired.js';
import type { ConnInfo, PublicCore } from './core.js';
import { Rejection } from './core.js';
import type { HttpFront } from './http.js';
import { lingerThenDestroy } from './http.js';
import type { RejectReason } from './metrics.js';
import { encodeProxyV2, PP2_TYPE_AUTHORITY } from './proxy-protocol.js';
import { exposureKey, normalizeHostname, PublicRouter } from './routes.js';
import { parseClientHello, tlsAlert, ALERT_UNRECOGNIZED_NAME, ALERT_HANDSHAKE_FAILURE } from './sni.js';
import { splice } from './splice.js';

export interface CertificatePair {
  cert: string | Buffer;
  key: string | Buffer;
}

/**
 * Certificates for terminated names: a map hostname → PEM pair, or a
 * directory of `<hostname>.crt` + `<hostname>.key`. One SecureContext per
 * name, built once; `set` swaps the whole table (certificate rotation).
 */
export class CertStore {
  private contexts = new Map<string, tls.SecureContext>();

  /** Replace the table; returns the names that failed to load (the others are in). */
  set(pairs: Record<string, CertificatePair>): { host: string; error: string }[] {
    const next = new Map<string, tls.SecureContext>();
    const errors: { host: string; error: string }[] = [];
    for (const [host, pair] of Object.entries(pairs)) {
      try {
        next.set(normalizeHostname(host), tls.createSecureContext({ cert: pair.cert, key: pair.key, minVersion: 'TLSv1.2' }));
      } catch (err) {
        errors.push({ host, error: err instanceof Error ? err.message : String(err) });
      }
    }
    this.contexts = next;
    return errors;
  }

  get(host: string): tls.SecureContext | undefined {
    return this.contexts.get(normalizeHostname(host));
  }

  get size(): number {
    return this.contexts.size;
  }
}

/** Read `<dir>/<hostname>.crt` and `.key` pairs (a .crt without its .key is skipped). */
export function loadCertDirectory(dir: string): Record<string, CertificatePair> {
  const out: Record<string, CertificatePair> = {};
  const files = new Set(readdirSync(dir));
  for (const f of files) {
    if (!f.endsWith('.crt')) continue;
    const host = f.slice(0, -4);
    if (!files.has(`${host}.key`)) continue;
    out[host] = { cert: readFileSync(join(dir, f)), key: readFileSync(join(dir, `${host}.key`)) };
  }
  return out;
}

export class TlsFront {
  constructor(
    private readonly core: PublicCore,
    private readonly http: HttpFront,
    private readonly certs: CertStore,
  ) {}

  accept(socket: Socket, info: Omit<ConnInfo, 'proto'>): void {
    const { limits, metrics } = this.core;
    let buf: Buffer = Buffer.alloc(0);
    // peek: reading the ClientHello; handshake: terminating; done: handed on or refused.
    const state = { phase: 'peek' as 'peek' | 'handshake' | 'done' };
    // One budget for ClientHello + handshake (the TLS slowloris guard).
    const timer = setTimeout(() => {
      if (state.phase === 'done') return;
      state.phase = 'done';
      metrics.reject('header_timeout');
      socket.destroy();
    }, limits.headerTimeoutMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    const refuse = (reason: RejectReason, alert: number | null, exposure?: string): void => {
      state.phase = 'done';
      clearTimeout(timer);
      socket.removeListener('data', onData);
      metrics.reject(reason, exposure);
      if (alert === null) socket.destroy();
      else {
        socket.end(tlsAlert(alert));
        lingerThenDestroy(socket);
      }
    };
    const onData = (chunk: Buffer): void => {
      if (state.phase !== 'peek') return;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      const hello = parseClientHello(buf, limits.maxClientHelloBytes);
      if (hello.status === 'incomplete') return;
      if (hello.status === 'invalid') return refuse('bad_client_hello', null);
      if (hello.serverName === null) return refuse('no_sni', ALERT_UNRECOGNIZED_NAME);
      const exposure = this.core.router.bySni(hello.serverName);
      if (!exposure) return refuse('unknown_sni', ALERT_UNRECOGNIZED_NAME);
      if (PublicRouter.tlsMode(exposure) === 'passthrough') {
        // Decided: stop reading here (pause before dropping the listener, or bytes would be lost).
        socket.pause();
        socket.removeListener('data', onData);
        state.phase = 'done';
        clearTimeout(timer);
        this.passthrough(socket, info, exposure, hello.serverName, buf);
        return;
      }
      const ctx = this.certs.get(hello.serverName);
      if (!ctx) return refuse('no_certificate', ALERT_HANDSHAKE_FAILURE, exposureKey(exposure));
      socket.pause();
      socket.removeListener('data', onData);
      state.phase = 'handshake';
      this.terminate(socket, info, hello.serverName, ctx, buf, timer, state);
    };
    socket.on('data', onData);
  }

  private passthrough(socket: Socket, info: Omit<ConnInfo, 'proto'>, exposure: GatewayExposure, sni: string, peeked: Buffer): void {
    const { metrics, limits } = this.core;
    const key = exposureKey(exposure);
    this.core.openStream(exposure, info.client).then(
      (stream) => {
        if (socket.destroyed) {
          stream.close();
          return;
        }
        const up = stream.duplex;
        if (exposure.proxyProtocol) {
          up.write(
            encodeProxyV2({ source: info.client, destination: info.local }, [{ type: PP2_TYPE_AUTHORITY, value: Buffer.from(sni) }]),
          );
        }
        up.write(peeked);
        metrics.bytes(key, peeked.length, 0);
        metrics.exposure(key).connections++;
        splice(socket, up, {
          idleTimeoutMs: limits.idleTimeoutMs,
          halfOpenTimeoutMs: limits.halfOpenTimeoutMs,
          onBytes: (a, b) => metrics.bytes(key, a, b),
          onIdle: () => metrics.reject('idle_timeout', key),
          onClose: () => stream.close(),
        });
      },
      (err: unknown) => {
        metrics.reject(err instanceof Rejection ? err.reason : 'upstream_unavailable', key);
        socket.destroy();
      },
    );
  }

  private terminate(
    socket: Socket,
    info: Omit<ConnInfo, 'proto'>,
    sni: string,
    secureContext: tls.SecureContext,
    peeked: Buffer,
    timer: NodeJS.Timeout,
    state: { phase: 'peek' | 'handshake' | 'done' },
  ): void {
    // Give the peeked bytes back; a TLSSocket consumes what is buffered first.
    socket.unshift(peeked);
    const secure = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext,
      ALPNProtocols: ['http/1.1'],
    });
    secure.on('error', () => secure.destroy());
    secure.once('secure', () => {
      if (state.phase !== 'handshake') return;
      state.phase = 'done';
      clearTimeout(timer);
      this.http.accept(secure, { ...info, proto: 'https', sni });
    });
    secure.once('close', () => {
      if (state.phase === 'handshake') {
        state.phase = 'done';
        this.core.metrics.reject('tls_error');
      }
      socket.destroy();
    });
  }
}
