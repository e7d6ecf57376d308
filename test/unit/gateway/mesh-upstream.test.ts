/**
 * MeshUpstream on loopback: every 127.0.0.x address is local on Linux, so
 * "entry points" are servers on 127.0.0.1 and the gateway's mesh address is
 * 127.0.0.3. A black-hole target (SYN never answered) is simulated by an
 * injected dialler whose socket never connects.
 */
import net from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { MeshUnavailableError, MeshUpstream } from '../../../src/gateway/mesh-upstream.js';
import type { GatewayExposure } from '../../../src/shared/desired.js';
import { closeAtEnd, exposure, get, listenLoopback, startGateway, until } from './public-helpers.js';

const CLIENT = { address: '203.0.113.9', port: 40000 };

interface Entry {
  port: number;
  /** Remote addresses of the connections it accepted, in order. */
  accepted: string[];
}

/** A TCP entry point that records who connected and writes its id. */
async function entryPoint(t: ExecutionContext, id: string, host = '127.0.0.1'): Promise<Entry> {
  const accepted: string[] = [];
  const server = net.createServer((s) => {
    accepted.push(s.remoteAddress ?? '');
    s.on('error', () => {});
    s.end(id);
  });
  closeAtEnd(t, server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  return { port: (server.address() as net.AddressInfo).port, accepted };
}

/** A port on `host` where nothing listens (connect is refused). */
/**
 * Where refused targets live: no test binds this loopback address, so the port
 * freed below cannot be taken by another test's listener (test files run in
 * parallel on one host; a port freed on 127.0.0.1 once came back as another
 * test's gateway, which answered 429).
 */
const DEAD = '127.0.0.66';

async function refusedPort(host = DEAD): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function meshExposure(targets: { address?: string; port: number }[], p: Partial<GatewayExposure> = {}): GatewayExposure {
  return exposure({
    name: 'web',
    mode: 'mesh',
    protocol: 'tcp',
    targets: targets.map((x, i) => ({ workload: `web-${i}`, node: 'node1', address: x.address ?? '127.0.0.1', port: x.port })),
    ...p,
  });
}

/** What the entry point wrote (its id), then the socket is gone. */
function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString()));
    s.on('end', () => {
      s.end();
      resolve(out);
    });
    s.on('error', reject);
  });
}

async function openId(up: MeshUpstream, e: GatewayExposure): Promise<string> {
  return readAll((await up.open(e, CLIENT)) as net.Socket);
}

test('round-robin over the targets, a connected socket with TCP_NODELAY and keep-alive', async (t) => {
  const a = await entryPoint(t, 'a');
  const b = await entryPoint(t, 'b');
  const c = await entryPoint(t, 'c');
  const dialOptions: net.TcpNetConnectOpts[] = [];
  const up = new MeshUpstream({
    connect: (o) => {
      dialOptions.push(o as net.TcpNetConnectOpts);
      return net.connect(o);
    },
  });
  const e = meshExposure([a, b, c]);
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push(await openId(up, e));
  t.deepEqual(ids, ['a', 'b', 'c', 'a', 'b', 'c']);
  // Another exposure has its own rotation.
  const other = meshExposure([b, c], { name: 'api' });
  t.deepEqual([await openId(up, other), await openId(up, other), await openId(up, e)], ['b', 'c', 'a']);

  const s = (await up.open(e, CLIENT)) as net.Socket;
  t.false(s.connecting, 'open() resolves only once connected');
  t.is(s.remotePort, b.port);
  t.is(s.readyState, 'open');
  t.like(dialOptions[0], { host: '127.0.0.1', port: a.port, noDelay: true, keepAlive: true });
  t.false('localAddress' in dialOptions[0]!, 'no source address configured: the kernel chooses');
  t.is(up.stats().active, 1);
  s.destroy();
  t.true(await until(() => up.stats().active === 0));
  t.like(up.stats(), { opens: 10, active: 0, connectFailures: 0, openRejected: 0, targetsDown: 0 });
});

test('failover: a refused target is skipped by the same open(), marked down, retried after downForMs', async (t) => {
  const a = await entryPoint(t, 'a');
  const deadPort = await refusedPort();
  let clock = 1_000_000;
  const lines: string[] = [];
  const up = new MeshUpstream({ downForMs: 5000, now: () => clock, log: (l) => lines.push(l) });
  const e = meshExposure([{ address: DEAD, port: deadPort }, a]);
  t.is(await openId(up, e), 'a', 'the refused target failed over to the next one in the same open()');
  t.like(up.stats(), { opens: 1, connectFailures: 1, targetsDown: 1 });
  t.true(up.isDown('acme', DEAD, deadPort));
  t.regex(lines.join('\n'), new RegExp(`127\\.0\\.0\\.66:${deadPort} of acme/web down for 5000 ms`));
  // While it is down, every open goes straight to the live target: no new connect failure.
  for (let i = 0; i < 4; i++) t.is(await openId(up, e), 'a');
  t.is(up.stats().connectFailures, 1, 'the down target was not dialled again');
  // After downForMs it is tried again (and fails again → down again).
  clock += 5001;
  t.false(up.isDown('acme', DEAD, deadPort));
  t.is(await openId(up, e), 'a');
  t.is(await openId(up, e), 'a');
  t.is(up.stats().connectFailures, 2, 'retried once after the down period, then skipped again');
  t.is(a.accepted.length, 7);
});

test('a target that does not answer times out after connectTimeoutMs and the next target is used', async (t) => {
  const a = await entryPoint(t, 'a');
  const BLACK_HOLE = 9; // port of the injected black hole
  const dialled: number[] = [];
  const blackholes: net.Socket[] = [];
  const up = new MeshUpstream({
    connectTimeoutMs: 150,
    connect: (o) => {
      const port = (o as net.TcpNetConnectOpts).port;
      dialled.push(port);
      if (port !== BLACK_HOLE) return net.connect(o);
      const s = new net.Socket(); // never connects: a SYN nobody answers
      blackholes.push(s);
      return s;
    },
  });
  const e = meshExposure([{ port: BLACK_HOLE }, a]);
  const t0 = performance.now();
  t.is(await openId(up, e), 'a');
  const took = performance.now() - t0;
  t.true(took >= 140 && took < 2000, `failed over after the connect timeout (${took.toFixed(0)} ms)`);
  t.deepEqual(dialled, [BLACK_HOLE, a.port]);
  t.true(blackholes[0]!.destroyed, 'the timed-out socket was destroyed');
  t.like(up.stats(), { connectFailures: 1, connectTimeouts: 1, targetsDown: 1 });

  // Only the black hole: rejected after the timeout, with the reason.
  const only = meshExposure([{ port: BLACK_HOLE }], { name: 'slow' });
  const err = await t.throwsAsync(up.open(only, CLIENT), { instanceOf: MeshUnavailableError });
  t.regex(err!.message, /timed out after 150 ms/);
  t.is((err as MeshUnavailableError).status, 503);
});

test('the socket is bound to the tenant’s source address (the entry point sees the gateway’s mesh address)', async (t) => {
  const a = await entryPoint(t, 'a');
  const asked: string[] = [];
  const up = new MeshUpstream({
    sourceAddress: (tenant) => {
      asked.push(tenant);
      return tenant === 'acme' ? '127.0.0.3' : undefined;
    },
  });
  const s = (await up.open(meshExposure([a]), CLIENT)) as net.Socket;
  t.is(s.localAddress, '127.0.0.3');
  t.is(await readAll(s), 'a');
  await readAll((await up.open(meshExposure([a], { tenant: 'other' }), CLIENT)) as net.Socket);
  t.deepEqual(a.accepted, ['127.0.0.3', '127.0.0.1'], 'acme bound to its mesh address; a tenant without one left to the kernel');
  t.deepEqual(asked, ['acme', 'other']);
});

test('a source address that is not on this host rejects at once and marks no target down', async (t) => {
  const a = await entryPoint(t, 'a');
  const up = new MeshUpstream({ sourceAddress: () => '192.0.2.77' });
  const err = await t.throwsAsync(up.open(meshExposure([a]), CLIENT), { instanceOf: MeshUnavailableError });
  t.regex(err!.message, /from 192\.0\.2\.77.*EADDRNOTAVAIL/);
  t.like(up.stats(), { connectFailures: 1, targetsDown: 0, openRejected: 1 });
  t.is(a.accepted.length, 0);
});

test('all targets down: rejected; the next open still tries them (never wedged) and a recovered one is up at once', async (t) => {
  const host = '127.0.0.7';
  const p1 = await refusedPort(host);
  const p2 = await refusedPort(host);
  const up = new MeshUpstream({ downForMs: 60_000, now: () => 0 }); // the marks never expire in this test
  const e = meshExposure([
    { address: host, port: p1 },
    { address: host, port: p2 },
  ]);
  const err = await t.throwsAsync(up.open(e, CLIENT), { instanceOf: MeshUnavailableError });
  t.regex(err!.message, new RegExp(`no mesh target of acme/web connected \\(${host.replace(/\./g, '\\.')}:${p1} .*ECONNREFUSED.*; .*:${p2} `));
  t.like(up.stats(), { connectFailures: 2, targetsDown: 2, openRejected: 1 });

  // Both still down (the clock has not moved): open() tries them anyway, each once.
  await t.throwsAsync(up.open(e, CLIENT), { instanceOf: MeshUnavailableError });
  t.is(up.stats().connectFailures, 4);

  // One comes back while still marked down: the next open finds it.
  const back = net.createServer((s) => s.end('back'));
  closeAtEnd(t, back);
  await new Promise<void>((resolve, reject) => {
    back.once('error', reject);
    back.listen(p2, host, () => resolve());
  });
  t.is(await openId(up, e), 'back');
  t.is(up.stats().connectFailures, 5, 'p1 (still refused) was tried first, then p2');
  t.false(up.isDown('acme', host, p2), 'a target that connected is up again at once');
  t.true(up.isDown('acme', host, p1));
});

test('refuses exposures that are not mesh mode or have no targets', async (t) => {
  const up = new MeshUpstream();
  await t.throwsAsync(up.open(meshExposure([{ port: 1 }], { mode: 'tunnel' }), CLIENT), { message: /not in mesh mode/ });
  await t.throwsAsync(up.open(meshExposure([]), CLIENT), { instanceOf: MeshUnavailableError, message: /no mesh target/ });
  t.is(up.stats().openRejected, 2);
  t.is(up.stats().connectFailures, 0);
});

test('behind PublicGateway: HTTP reaches the entry point over MeshUpstream; no live target → 503', async (t) => {
  const http = await import('node:http');
  const seen: string[] = [];
  const app = http.createServer((req, res) => {
    seen.push(`${req.socket.remoteAddress} ${req.url}`);
    res.end('hello from the mesh');
  });
  const appPort = await listenLoopback(app);
  closeAtEnd(t, app);
  const dead = await refusedPort();
  const up = new MeshUpstream({ sourceAddress: () => '127.0.0.3' });
  const web = meshExposure([{ address: DEAD, port: dead }, { port: appPort }], { protocol: 'http', hostnames: ['web.example.com'] });
  const down = meshExposure([{ address: DEAD, port: dead }], { name: 'down', protocol: 'http', hostnames: ['down.example.com'] });
  const { http: port } = await startGateway(t, [web, down], up);
  const r1 = await get(port, 'web.example.com', { path: '/one' });
  const r2 = await get(port, 'web.example.com', { path: '/two' });
  t.is(r1.status, 200);
  t.is(r1.body, 'hello from the mesh');
  t.is(r2.status, 200);
  t.deepEqual(seen, ['127.0.0.3 /one', '127.0.0.3 /two']);
  const r3 = await get(port, 'down.example.com');
  t.is(r3.status, 503);
  t.like(up.stats(), { openRejected: 1 });
});
