/** Loopback fixtures for the router tests: keys, grants, exposures, a gateway, clients, apps. */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { generateSigningKeyPair, type SigningKeyPair } from '../../../src/shared/crypto.js';
import type { GatewayExposure, RouterCredential, RouterGrant } from '../../../src/shared/desired.js';
import { signGrant } from '../../../src/shared/router-protocol.js';
import { RouterServer, type RouterServerOptions } from '../../../src/gateway/router-server.js';
import { RouterClient, type RouterClientOptions } from '../../../src/node-agent/router-client.js';

export const coordinator = generateSigningKeyPair();

export interface Entry {
  keys: SigningKeyPair;
  grant: RouterGrant;
  credential: RouterCredential;
}

/** A router-client key and a coordinator-signed grant for it. */
export function entry(
  tenant: string,
  exposure: string,
  workload: string,
  opts: { node?: string; signer?: string; issuedAt?: number; ttlMs?: number } = {},
): Entry {
  const keys = generateSigningKeyPair();
  const issued = opts.issuedAt ?? Date.now() - 1000;
  const grant: RouterGrant = {
    v: 1,
    tenant,
    exposure,
    workload,
    node: opts.node ?? 'node1',
    publicKey: keys.publicKey,
    issuedAt: new Date(issued).toISOString(),
    expiresAt: new Date(issued + (opts.ttlMs ?? 3600_000)).toISOString(),
  };
  return { keys, grant, credential: signGrant(grant, opts.signer ?? coordinator.secretKey) };
}

export function exposureOf(tenant: string, name: string, entries: Entry[], mode: 'tunnel' | 'mesh' = 'tunnel'): GatewayExposure {
  return {
    tenant,
    name,
    mode,
    protocol: 'http',
    hostnames: [`${name}.${tenant}.example.com`],
    publicPort: null,
    tls: null,
    proxyProtocol: false,
    targets: entries.map((e) => ({ workload: e.grant.workload, node: e.grant.node, address: '127.0.0.1', port: 8080 })),
    routerClients: entries.map((e) => ({ workload: e.grant.workload, node: e.grant.node, publicKey: e.keys.publicKey })),
  };
}

export interface TestGateway {
  server: RouterServer;
  port: number;
  target: { host: string; meshAddress: string; routerPort: number };
}

export async function startGateway(
  t: { teardown: (fn: () => Promise<void> | void) => void },
  name: string,
  exposures: GatewayExposure[],
  opts: Partial<RouterServerOptions> & { port?: number; tenant?: string } = {},
): Promise<TestGateway> {
  const server = new RouterServer({ name, coordinatorKey: coordinator.publicKey, exposures, ...opts });
  const addr = await server.listen({ host: '127.0.0.1', port: opts.port ?? 0, ...(opts.tenant ? { tenant: opts.tenant } : {}) });
  t.teardown(() => server.close());
  return { server, port: addr.port, target: { host: name, meshAddress: '127.0.0.1', routerPort: addr.port } };
}

export function startClient(
  t: { teardown: (fn: () => Promise<void> | void) => void },
  e: Entry,
  gateways: TestGateway[],
  target: { host: string; port: number },
  opts: Partial<RouterClientOptions> = {},
): RouterClient {
  const client = new RouterClient({
    gateways: gateways.map((g) => g.target),
    credential: e.credential,
    secretKey: e.keys.secretKey,
    target,
    backoffInitialMs: 50,
    backoffMaxMs: 500,
    ...opts,
  });
  client.on('error-gateway', () => {});
  client.start();
  t.teardown(() => client.stop());
  return client;
}

/** An HTTP app answering `<id> <path>`; counts requests. */
export async function startApp(t: { teardown: (fn: () => Promise<void> | void) => void }, id: string) {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    const body = `${id} ${req.url}`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const close = async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  t.teardown(close);
  return { target: { host: '127.0.0.1', port: (server.address() as AddressInfo).port }, hits: () => hits, close };
}

/** A raw TCP echo app. */
export async function startEcho(t: { teardown: (fn: () => Promise<void> | void) => void }) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { target: { host: '127.0.0.1', port: (server.address() as AddressInfo).port }, sockets };
}

/** One HTTP/1.1 GET over a stream from upstream.open (a new tunneled connection per request). */
export function httpGet(stream: Duplex, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: 'app', path, createConnection: () => stream as unknown as net.Socket }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const CLIENT = { address: '203.0.113.9', port: 40000 };
