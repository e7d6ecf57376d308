/**
 * Helpers for the public-side tests: loopback "entry points", an Upstream
 * that dials them and records every open, raw clients, throwaway certificates.
 * Everything listens on 127.0.0.1 only and is closed by the test that made it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import type { ExecutionContext } from 'ava';
import type { GatewayExposure } from '../../../src/shared/desired.js';
import { PublicGateway } from '../../../src/gateway/public/gateway.js';
import type { PublicGatewayOptions } from '../../../src/gateway/public/gateway.js';
import type { PublicLimits } from '../../../src/gateway/public/limits.js';
import { exposureKey } from '../../../src/gateway/public/routes.js';
import type { ClientAddress, Upstream } from '../../../src/gateway/public/types.js';

export const LOOPBACK = '127.0.0.1';

export function exposure(p: Partial<GatewayExposure> & Pick<GatewayExposure, 'name'>): GatewayExposure {
  return {
    tenant: 'acme',
    mode: 'tunnel',
    protocol: 'http',
    hostnames: [],
    publicPort: null,
    tls: null,
    proxyProtocol: false,
    targets: [],
    routerClients: [],
    ...p,
  };
}

/** Close a server and every connection it accepted (upgraded ones too) when the test ends. */
export function closeAtEnd(t: ExecutionContext, server: net.Server): void {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
}

export async function listenLoopback<S extends net.Server>(server: S): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => resolve());
  });
  return (server.address() as net.AddressInfo).port;
}

/** A port that was free a moment ago (for TCP exposures, whose public port is fixed). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  const port = await listenLoopback(s);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface SeenRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  headers: http.IncomingHttpHeaders;
  body: string;
  remotePort: number;
}

/** An HTTP entry point that answers `<name> <method> <url>` and records what it saw. */
export async function httpEntryPoint(
  t: ExecutionContext,
  name: string,
  handler?: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void,
): Promise<{ port: number; seen: SeenRequest[]; server: http.Server }> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders, headers: req.headers, body, remotePort: req.socket.remotePort! });
      if (handler) return handler(req, res, body);
      res.setHeader('X-Entry', name);
      res.end(`${name} ${req.method} ${req.url}`);
    });
  });
  const port = await listenLoopback(server);
  closeAtEnd(t, server);
  return { port, seen, server };
}

/**
 * The test Upstream: exposure key → loopback port. Records every open (so a
 * test can assert nothing was forwarded); `wrap` hands out a plain Duplex
 * around the socket, like a tunnel stream would be.
 */
export class LoopbackUpstream implements Upstream {
  readonly opens: { exposure: string; client: ClientAddress }[] = [];
  readonly ports = new Map<string, number>();
  wrap = false;
  delayMs = 0;

  set(e: GatewayExposure | string, port: number): this {
    this.ports.set(typeof e === 'string' ? e : exposureKey(e), port);
    return this;
  }

  async open(e: GatewayExposure, client: ClientAddress): Promise<Duplex> {
    const key = exposureKey(e);
    this.opens.push({ exposure: key, client });
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    const port = this.ports.get(key);
    if (port === undefined) throw new Error(`no live entry point for ${key}`);
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: LOOPBACK, port, allowHalfOpen: true });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    return this.wrap ? wrapDuplex(socket) : socket;
  }

  count(key: string): number {
    return this.opens.filter((o) => o.exposure === key).length;
  }
}

/** A generic Duplex (no socket methods) around a socket: what a multiplexed tunnel stream looks like. */
export function wrapDuplex(socket: net.Socket): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end(cb);
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  socket.on('data', (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', (err) => d.destroy(err));
  socket.on('close', () => d.destroy());
  return d;
}

export async function startGateway(
  t: ExecutionContext,
  exposures: GatewayExposure[],
  upstream: Upstream,
  options: Partial<PublicGatewayOptions> & { limits?: Partial<PublicLimits> } = {},
): Promise<{ gw: PublicGateway; http: number; https: number }> {
  const gw = new PublicGateway({ upstream, ...options });
  await gw.update(exposures);
  await gw.start(LOOPBACK, { http: 0, https: 0 });
  t.teardown(() => gw.stop());
  const a = gw.addresses();
  return { gw, http: a.http!, https: a.https! };
}

export interface RawResponse {
  text: string;
  closed: boolean;
}

/** Send raw bytes, collect everything until the server closes (or `waitMs`). */
export function rawExchange(
  port: number,
  data: string | Buffer,
  opts: { waitMs?: number; localAddress?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: LOOPBACK, port, localAddress: opts.localAddress });
    const done = (closed: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const timer = setTimeout(() => done(false), opts.waitMs ?? 3000);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => done(true));
    s.on('close', () => done(true));
    s.on('connect', () => s.write(data));
  });
}

export interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request to the gateway (own agent unless given). */
export function get(
  port: number,
  host: string,
  opts: { path?: string; method?: string; headers?: Record<string, string>; body?: string | Buffer; agent?: http.Agent | false; localAddress?: string } = {},
): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: LOOPBACK,
        port,
        path: opts.path ?? '/',
        method: opts.method ?? 'GET',
        headers: { Host: host, ...opts.headers },
        agent: opts.agent ?? false,
        localAddress: opts.localAddress,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

export interface TestCert {
  cert: string;
  key: string;
}

/** A throwaway self-signed certificate for `name` (openssl, EC P-256, one day). */
export function makeCert(name: string): TestCert {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-cert-'));
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${name}`,
        '-addext', `subjectAltName=DNS:${name}`, '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')],
      { stdio: 'pipe' },
    );
    return { cert: readFileSync(join(dir, 'c.pem'), 'utf8'), key: readFileSync(join(dir, 'k.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until `fn` is true (bounded). */
export async function until(fn: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return true;
    await sleep(10);
  }
  return fn();
}
