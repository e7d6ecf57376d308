import type http from 'node:http';
import net from 'node:net';
import test from 'ava';
import { exposure, freePort, get, httpEntryPoint, LOOPBACK, LoopbackUpstream, rawExchange, startGateway, until } from './public-helpers.js';

// Other loopback addresses stand for other public clients (Linux routes all of 127/8 to lo).
const CLIENT_A = '127.0.0.2';
const CLIENT_B = '127.0.0.3';

const web = exposure({ name: 'web', hostnames: ['web.example.test'] });
const other = exposure({ name: 'other', hostnames: ['other.example.test'] });

test('rate limit per client address: burst, then 429 with Retry-After; another address is unaffected', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { ratePerSecond: 0.5, rateBurst: 3 } });
  for (let i = 0; i < 3; i++) t.like(await get(port, 'web.example.test', { localAddress: CLIENT_A }), { status: 200 });
  const limited = await get(port, 'web.example.test', { localAddress: CLIENT_A });
  t.is(limited.status, 429);
  t.is(limited.headers['retry-after'], '2');
  t.like(await get(port, 'web.example.test', { localAddress: CLIENT_B }), { status: 200 });
  t.is(gw.metrics().rejections.rate_limited, 1);
  t.is(up.opens.length, 4, 'the limited connection never reached the upstream');
});

test('rate limit on a TCP exposure: the connection is closed, nothing opened', async (t) => {
  const publicPort = await freePort();
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort });
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, LOOPBACK, () => r()));
  t.teardown(() => echo.close());
  const up = new LoopbackUpstream().set(db, (echo.address() as net.AddressInfo).port);
  const { gw } = await startGateway(t, [db], up, { limits: { ratePerSecond: 0.1, rateBurst: 1 } });
  const first = await rawExchange(publicPort, 'one', { waitMs: 1500, localAddress: CLIENT_A });
  t.is(first.text, 'one');
  const second = await rawExchange(publicPort, 'two', { waitMs: 1000, localAddress: CLIENT_A });
  t.true(second.closed);
  t.is(second.text, '');
  t.is(up.opens.length, 1);
  t.is(gw.metrics().rejections.rate_limited, 1);
});

test('per-client concurrent connections are capped', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { maxConnectionsPerClient: 2 } });
  const held = [net.connect({ host: LOOPBACK, port, localAddress: CLIENT_A }), net.connect({ host: LOOPBACK, port, localAddress: CLIENT_A })];
  t.teardown(() => held.forEach((s) => s.destroy()));
  t.true(await until(() => gw.metrics().activeConnections === 2));
  const r = await rawExchange(port, 'GET / HTTP/1.1\r\nHost: web.example.test\r\n\r\n', { localAddress: CLIENT_A });
  t.regex(r.text, /^HTTP\/1\.1 429 /);
  t.like(await get(port, 'web.example.test', { localAddress: CLIENT_B }), { status: 200 });
  held.forEach((s) => s.destroy());
  t.true(await until(() => gw.metrics().activeConnections === 0));
  t.like(await get(port, 'web.example.test', { localAddress: CLIENT_A }), { status: 200 });
});

/** An entry point that holds every request until released. */
async function heldEntryPoint(t: Parameters<typeof httpEntryPoint>[0], name: string): Promise<{ port: number; release: () => void; waiting: () => number }> {
  const pending: http.ServerResponse[] = [];
  let released = false;
  const e = await httpEntryPoint(t, name, (_req, res) => {
    if (released) res.end(`${name} ok`);
    else pending.push(res);
  });
  return {
    port: e.port,
    waiting: () => pending.length,
    release: () => {
      released = true;
      for (const r of pending.splice(0)) r.end(`${name} ok`);
    },
  };
}

test('concurrent streams per exposure: over the cap → 503 (HTTP) and close (TCP); freed slots are reused', async (t) => {
  const slow = await heldEntryPoint(t, 'web');
  const publicPort = await freePort();
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort });
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, LOOPBACK, () => r()));
  t.teardown(() => echo.close());
  const up = new LoopbackUpstream().set(web, slow.port).set(db, (echo.address() as net.AddressInfo).port);
  const { gw, http: port } = await startGateway(t, [web, db], up, { limits: { maxStreamsPerExposure: 3 } });
  const inflight = [1, 2, 3].map(() => get(port, 'web.example.test'));
  t.true(await until(() => slow.waiting() === 3));
  const busy = await get(port, 'web.example.test');
  t.is(busy.status, 503);
  t.is(busy.body, 'service busy\n');
  t.is(busy.headers['retry-after'], '1');
  slow.release();
  for (const r of await Promise.all(inflight)) t.like(r, { status: 200, body: 'web ok' });
  t.like(await get(port, 'web.example.test'), { status: 200 });

  const tcp = [1, 2, 3].map(() => net.connect({ host: LOOPBACK, port: publicPort }));
  t.teardown(() => tcp.forEach((s) => s.destroy()));
  t.true(await until(() => gw.metrics().exposures['acme/db']?.activeStreams === 3));
  const fourth = await rawExchange(publicPort, 'x', { waitMs: 2000 });
  t.true(fourth.closed);
  t.is(fourth.text, '');
  t.is(gw.metrics().exposures['acme/db']!.rejections.exposure_busy, 1);
  t.is(gw.metrics().exposures['acme/web']!.rejections.exposure_busy, 1);
});

test('flood isolation: one exposure saturated by a flood, the other keeps answering', async (t) => {
  const flooded = await heldEntryPoint(t, 'web');
  const calm = await httpEntryPoint(t, 'other');
  const up = new LoopbackUpstream().set(web, flooded.port).set(other, calm.port);
  const { gw, http: port } = await startGateway(t, [web, other], up, {
    limits: { maxStreamsPerExposure: 20, ratePerSecond: 10_000, rateBurst: 10_000, maxConnectionsPerClient: 1000 },
  });
  // 100 concurrent requests at the flooded exposure, whose entry point answers none of them (yet).
  const flood = Array.from({ length: 100 }, () => get(port, 'web.example.test').catch(() => ({ status: 0, body: '', headers: {} })));
  t.true(await until(() => flooded.waiting() === 20, 5000));
  // Meanwhile the other exposure answers every request, promptly.
  const start = Date.now();
  const calmResults = await Promise.all(Array.from({ length: 30 }, () => get(port, 'other.example.test')));
  const elapsed = Date.now() - start;
  t.true(calmResults.every((r) => r.status === 200 && r.body === 'other GET /'));
  t.true(elapsed < 3000, `30 requests took ${elapsed} ms during the flood`);
  flooded.release();
  const floodResults = await Promise.all(flood);
  t.is(floodResults.filter((r) => r.status === 200).length, 20);
  t.is(floodResults.filter((r) => r.status === 503).length, 80);
  const m = gw.metrics();
  t.is(m.exposures['acme/web']!.rejections.exposure_busy, 80);
  t.deepEqual(m.exposures['acme/other']!.rejections, {});
});

test('an Upstream that takes too long: 504, and the late stream is closed', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  up.delayMs = 500;
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { upstreamOpenTimeoutMs: 100 } });
  const r = await get(port, 'web.example.test');
  t.is(r.status, 504);
  t.is(gw.metrics().rejections.upstream_timeout, 1);
  t.true(await until(() => gw.metrics().activeStreams === 0));
  await new Promise((res) => setTimeout(res, 600));
  t.is(w.seen.length, 0, 'the request was never sent on the late stream');
});

test('a proxied request whose entry point stalls gets 504 after the request idle timeout', async (t) => {
  const stalled = await heldEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, stalled.port);
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { requestIdleTimeoutMs: 300 } });
  const r = await get(port, 'web.example.test');
  t.is(r.status, 504);
  t.is(gw.metrics().rejections.idle_timeout, 1);
  t.true(await until(() => gw.metrics().activeStreams === 0));
  stalled.release();
});

test('stop() closes listeners, client connections and upstream streams', async (t) => {
  const stalled = await heldEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, stalled.port);
  const { gw, http: port } = await startGateway(t, [web], up);
  const pending = get(port, 'web.example.test').then(
    () => 'answered',
    () => 'cut',
  );
  t.true(await until(() => stalled.waiting() === 1));
  await gw.stop();
  t.is(await pending, 'cut');
  t.is(gw.metrics().activeStreams, 0);
  t.is(gw.metrics().activeConnections, 0);
  await t.throwsAsync(get(port, 'web.example.test'), { code: 'ECONNREFUSED' });
  stalled.release();
});
