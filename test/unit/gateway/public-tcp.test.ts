import net from 'node:net';
import test from 'ava';
import { decodeProxyV2 } from '../../../src/gateway/public/proxy-protocol.js';
import { closeAtEnd, exposure, freePort, get, httpEntryPoint, listenLoopback, LOOPBACK, LoopbackUpstream, sleep, startGateway, until } from './public-helpers.js';

/** A TCP entry point: echoes, ends when the client ends, records what it got first. */
async function echoEntryPoint(t: Parameters<typeof closeAtEnd>[0]): Promise<{ port: number; firsts: Buffer[] }> {
  const firsts: Buffer[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let first = true;
    s.on('data', (c: Buffer) => {
      if (first) firsts.push(c);
      first = false;
      s.write(c);
    });
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  const port = await listenLoopback(server);
  closeAtEnd(t, server);
  return { port, firsts };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: LOOPBACK, port, allowHalfOpen: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Write, half-close, and read everything until the server ends. */
function exchange(port: number, data: string): Promise<string> {
  return connect(port).then(
    (s) =>
      new Promise((resolve, reject) => {
        let out = '';
        s.on('data', (c: Buffer) => (out += c.toString()));
        s.on('end', () => {
          s.end();
          resolve(out);
        });
        s.on('error', reject);
        s.end(data);
      }),
  );
}

test('TCP exposure: a listener on its public port, spliced both ways, half-close propagated', async (t) => {
  const entry = await echoEntryPoint(t);
  const publicPort = await freePort();
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort });
  const up = new LoopbackUpstream().set(db, entry.port);
  const { gw } = await startGateway(t, [db], up);
  t.deepEqual(gw.addresses().tcp, [publicPort]);
  t.is(await exchange(publicPort, 'hello over tcp'), 'hello over tcp');
  const big = 'z'.repeat(2_000_000);
  t.is((await exchange(publicPort, big)).length, big.length);
  t.true(await until(() => gw.metrics().activeStreams === 0));
  const m = gw.metrics().exposures['acme/db']!;
  t.is(m.connections, 2);
  t.is(m.bytesFromClients, 14 + big.length);
  t.is(m.bytesToClients, 14 + big.length);
});

test('TCP exposure with PROXY v2: the header comes first with the client and gateway addresses', async (t) => {
  const entry = await echoEntryPoint(t);
  const publicPort = await freePort();
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort, proxyProtocol: true });
  const up = new LoopbackUpstream().set(db, entry.port);
  await startGateway(t, [db], up);
  const s = await connect(publicPort);
  t.teardown(() => s.destroy());
  let out = Buffer.alloc(0);
  s.on('data', (c: Buffer) => (out = Buffer.concat([out, c])));
  s.write('payload');
  t.true(await until(() => out.includes('payload')));
  const h = decodeProxyV2(out);
  t.is(h.status, 'ok');
  if (h.status !== 'ok') return;
  t.deepEqual(h.addresses, { source: { address: '127.0.0.1', port: s.localPort! }, destination: { address: '127.0.0.1', port: publicPort } });
  t.is(out.subarray(h.length).toString(), 'payload');
});

test('an idle spliced connection is closed after the idle timeout', async (t) => {
  const entry = await echoEntryPoint(t);
  const publicPort = await freePort();
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort });
  const up = new LoopbackUpstream().set(db, entry.port);
  const { gw } = await startGateway(t, [db], up, { limits: { idleTimeoutMs: 300 } });
  const s = await connect(publicPort);
  t.teardown(() => s.destroy());
  let closedAt = 0;
  // The gateway closing shows as an end (this client allows half-open connections).
  s.on('end', () => (closedAt = Date.now()));
  s.on('error', () => {});
  s.resume();
  const start = Date.now();
  // Traffic keeps it alive…
  for (let i = 0; i < 4; i++) {
    s.write('x');
    await sleep(150);
  }
  t.is(closedAt, 0);
  // …silence does not.
  t.true(await until(() => closedAt > 0, 3000));
  t.true(closedAt - start >= 700, `closed after ${closedAt - start} ms`); // last write at ~450 ms + 300 ms idle
  t.is(gw.metrics().rejections.idle_timeout, 1);
});

test('update(): TCP listeners follow the ports; live connections survive their exposure going away', async (t) => {
  const entry = await echoEntryPoint(t);
  const [p1, p2] = [await freePort(), await freePort()];
  const a = exposure({ name: 'a', protocol: 'tcp', publicPort: p1 });
  const b = exposure({ name: 'b', protocol: 'tcp', publicPort: p2 });
  const up = new LoopbackUpstream().set(a, entry.port).set(b, entry.port);
  const { gw } = await startGateway(t, [a], up);
  t.deepEqual(gw.addresses().tcp, [p1]);
  await t.throwsAsync(connect(p2), { code: 'ECONNREFUSED' });

  const live = await connect(p1);
  t.teardown(() => live.destroy());
  let got = '';
  live.on('data', (c: Buffer) => (got += c.toString()));
  live.write('before');
  t.true(await until(() => got === 'before'));

  const r = await gw.update([b]);
  t.deepEqual(r.tcpListening, [p2]);
  t.deepEqual(r.tcpFailed, []);
  t.is(await exchange(p2, 'new port'), 'new port');
  await t.throwsAsync(connect(p1), { code: 'ECONNREFUSED' });
  live.write(' after');
  t.true(await until(() => got === 'before after'), 'the established connection kept working');
});

test('update(): swapping HTTP exposures applies to the next request without dropping one in flight', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const one = await httpEntryPoint(t, 'one', (req, res) => {
    if (req.url === '/slow') void held.then(() => res.end('one slow done'));
    else res.end('one');
  });
  const two = await httpEntryPoint(t, 'two');
  const v1 = exposure({ name: 'site', hostnames: ['site.example.test'] });
  const v2 = exposure({ name: 'site2', hostnames: ['site.example.test'] });
  const up = new LoopbackUpstream().set(v1, one.port).set(v2, two.port);
  const { gw, http: port } = await startGateway(t, [v1], up);
  const slow = get(port, 'site.example.test', { path: '/slow' });
  t.true(await until(() => one.seen.length === 1 && gw.metrics().activeStreams === 1));
  await gw.update([v2]);
  t.like(await get(port, 'site.example.test'), { status: 200, body: 'two GET /' });
  release();
  t.like(await slow, { status: 200, body: 'one slow done' });
  await gw.update([]);
  t.like(await get(port, 'site.example.test'), { status: 404 });
  t.deepEqual(gw.metrics().exposures, {}, 'counters of removed, idle exposures are dropped');
});

test('a TCP port the gateway cannot bind is reported, and retried on the next update', async (t) => {
  const blocker = net.createServer();
  const port = await listenLoopback(blocker);
  let blocked = true;
  t.teardown(() => blocked && blocker.close());
  const db = exposure({ name: 'db', protocol: 'tcp', publicPort: port });
  const { gw } = await startGateway(t, [], new LoopbackUpstream());
  const r = await gw.update([db]);
  t.deepEqual(r.tcpListening, []);
  t.is(r.tcpFailed[0]!.port, port);
  t.regex(r.tcpFailed[0]!.error, /EADDRINUSE/);
  await new Promise<void>((res) => blocker.close(() => res()));
  blocked = false;
  t.deepEqual((await gw.update([db])).tcpListening, [port]);
});
