import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { RouterUnavailableError, signGrant } from '../../../src/shared/router-protocol.js';
import { CLIENT, coordinator, entry, exposureOf, httpGet, startApp, startClient, startEcho, startGateway, waitFor } from './helpers.js';

test('200 parallel HTTP requests round-trip gateway ↔ router client ↔ app', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const app = await startApp(t, 'A');
  const client = startClient(t, e, [gw], app.target);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1 && client.status()[0]!.connected, 5000, 'session');

  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => httpGet(await gw.server.open(exp, CLIENT), `/r${i}`)),
  );
  results.forEach((r, i) => {
    t.is(r.status, 200);
    t.is(r.body, `A /r${i}`);
  });
  t.is(app.hits(), 200);
  await waitFor(() => gw.server.stats().streamsActive === 0, 5000, 'streams to close');
  const s = gw.server.stats();
  t.is(s.streamsTotal, 200);
  t.is(s.streamsFailed, 0);
  t.is(s.streamsReset, 0);
  t.is(client.stats().streamsTotal, 200);
  await waitFor(() => client.stats().streamsActive === 0, 5000, 'client streams to close');
});

test('raw bytes both ways, half-close propagates, large transfer keeps its order', async (t) => {
  const e = entry('acme', 'tcp', 'db-1');
  const exp = exposureOf('acme', 'tcp', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const echo = await startEcho(t);
  startClient(t, e, [gw], echo.target);
  await waitFor(() => gw.server.liveCount('acme', 'tcp') === 1);
  const stream = await gw.server.open(exp, CLIENT);
  const payload = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < payload.length; i += 4) payload.writeUInt32BE(i, i);
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  stream.end(payload); // our FIN reaches the echo server, whose FIN comes back as END_STREAM
  await done;
  t.true(Buffer.concat(chunks).equals(payload));
});

test('two entry points share the load; killing one moves everything to the other', async (t) => {
  const a = entry('acme', 'web', 'web-1', { node: 'node1' });
  const b = entry('acme', 'web', 'web-2', { node: 'node2' });
  const exp = exposureOf('acme', 'web', [a, b]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const appA = await startApp(t, 'A');
  const appB = await startApp(t, 'B');
  const ca = startClient(t, a, [gw], appA.target);
  startClient(t, b, [gw], appB.target);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 2);

  // Sequential requests: least-streams is a tie every time, so round-robin alternates.
  for (let i = 0; i < 20; i++) await httpGet(await gw.server.open(exp, CLIENT));
  t.is(appA.hits(), 10);
  t.is(appB.hits(), 10);
  // Concurrent: both get a share.
  await Promise.all(Array.from({ length: 100 }, async () => httpGet(await gw.server.open(exp, CLIENT))));
  t.true(appA.hits() > 40 && appB.hits() > 40, `A=${appA.hits()} B=${appB.hits()}`);

  await ca.stop(); // entry point A goes away (GOAWAY, session closed)
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1);
  const before = appB.hits();
  const bodies = await Promise.all(Array.from({ length: 20 }, async () => (await httpGet(await gw.server.open(exp, CLIENT))).body));
  t.true(bodies.every((x) => x === 'B /'));
  t.is(appB.hits(), before + 20);
});

test('an entry point whose app is down is skipped for another one', async (t) => {
  const a = entry('acme', 'web', 'web-1');
  const b = entry('acme', 'web', 'web-2');
  const exp = exposureOf('acme', 'web', [a, b]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const appA = await startApp(t, 'A');
  const appB = await startApp(t, 'B');
  startClient(t, a, [gw], appA.target);
  startClient(t, b, [gw], appB.target);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 2);
  await appA.close();
  for (let i = 0; i < 6; i++) t.is((await httpGet(await gw.server.open(exp, CLIENT))).body, 'B /');
  t.true(gw.server.stats().streamsFailed >= 1);
});

test('open() rejects clearly when no router client is live', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const err = await t.throwsAsync(gw.server.open(exp, CLIENT), { instanceOf: RouterUnavailableError });
  t.regex(err!.message, /no live router client for acme\/web/);
  t.is(gw.server.stats().openRejected, 1);
  await t.throwsAsync(gw.server.open({ ...exp, mode: 'mesh' }, CLIENT), { message: /not in tunnel mode/ });
});

test('one client keeps a session to each of two gateways; either serves', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw1 = await startGateway(t, 'gw1', [exp]);
  const gw2 = await startGateway(t, 'gw2', [exp]);
  const app = await startApp(t, 'A');
  const client = startClient(t, e, [gw1, gw2], app.target);
  await waitFor(() => gw1.server.liveCount('acme', 'web') === 1 && gw2.server.liveCount('acme', 'web') === 1);
  await waitFor(() => client.status().every((s) => s.connected));
  t.deepEqual(
    client.status().map((s) => [s.host, s.connected]),
    [
      ['gw1', true],
      ['gw2', true],
    ],
  );
  t.is((await httpGet(await gw1.server.open(exp, CLIENT), '/1')).body, 'A /1');
  t.is((await httpGet(await gw2.server.open(exp, CLIENT), '/2')).body, 'A /2');

  await gw1.server.close(); // gateway 1 dies; gateway 2 still serves
  await waitFor(() => !client.status()[0]!.connected);
  t.is((await httpGet(await gw2.server.open(exp, CLIENT), '/3')).body, 'A /3');
  t.true(client.status()[1]!.connected);
});

test('the client reconnects and re-authenticates after a gateway restart', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const app = await startApp(t, 'A');
  const events: string[] = [];
  const client = startClient(t, e, [gw], app.target);
  client.on('connected', (h: string) => events.push(`up ${h}`));
  client.on('disconnected', (h: string) => events.push(`down ${h}`));
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1);
  await gw.server.close();
  await waitFor(() => !client.status()[0]!.connected);
  // Refused dials while it is down are counted as attempts with a lastError.
  await waitFor(() => client.status()[0]!.attempts >= 2, 5000, 'retries');
  t.truthy(client.status()[0]!.lastError);

  const gw2 = await startGateway(t, 'gw1', [exp], { port: gw.port });
  await waitFor(() => gw2.server.liveCount('acme', 'web') === 1, 5000, 'reconnect');
  t.is((await httpGet(await gw2.server.open(exp, CLIENT))).body, 'A /');
  t.true(client.status()[0]!.connected);
  t.is(client.status()[0]!.lastError, null);
  t.deepEqual(events.slice(0, 1), ['up gw1']);
  t.true(events.includes('down gw1'));
  t.is(events.filter((x) => x === 'up gw1').length, 2);
});

test('update() revoking a key drops its session at once; streams stop', async (t) => {
  const a = entry('acme', 'web', 'web-1');
  const b = entry('acme', 'web', 'web-2');
  const exp = exposureOf('acme', 'web', [a, b]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const echo = await startEcho(t);
  startClient(t, a, [gw], echo.target);
  startClient(t, b, [gw], echo.target);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 2);
  const stream = await gw.server.open(exp, CLIENT);
  const closed = new Promise<void>((r) => stream.on('close', () => r()));
  stream.on('error', () => {});
  gw.server.update([exposureOf('acme', 'web', [])]);
  t.is(gw.server.liveCount('acme', 'web'), 0);
  t.is(gw.server.stats().revoked, 2);
  await closed;
  // The revoked clients keep dialling and are refused as not listed.
  await waitFor(() => gw.server.stats().authFailures['key-not-listed'] >= 2, 5000, 'refusals');
  await t.throwsAsync(gw.server.open(exp, CLIENT), { instanceOf: RouterUnavailableError });
  // Re-listing one lets it back in.
  gw.server.update([exposureOf('acme', 'web', [b])]);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1, 5000, 'b back');
  t.is(gw.server.sessions('acme', 'web')[0]!.workload, 'web-2');
});

test('grant expiry drains the session; the client re-dials with its renewed credential', async (t) => {
  const e = entry('acme', 'web', 'web-1', { issuedAt: Date.now(), ttlMs: 3000 });
  const exp = exposureOf('acme', 'web', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const app = await startApp(t, 'A');
  let current = e.credential;
  const client = startClient(t, e, [gw], app.target, { auth: () => ({ credential: current, secretKey: e.keys.secretKey }) });
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1, 3000, 'first session');
  // The agent renews: same key, new window.
  current = signGrant({ ...e.grant, expiresAt: new Date(Date.now() + 3600_000).toISOString() }, coordinator.secretKey);
  await waitFor(() => gw.server.stats().expired === 1, 8000, 'expiry');
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1 && gw.server.stats().sessionsTotal === 2, 8000, 'renewed session');
  t.is((await httpGet(await gw.server.open(exp, CLIENT))).body, 'A /');
  t.true(client.status()[0]!.connected);
});

/** A gateway and client joined through a relay that can go silent, like a path that black-holes packets. */
async function frozenPath(t: ExecutionContext, side: 'gateway' | 'client') {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const fast = { pingIntervalMs: 100, pingTimeoutMs: 300 };
  const slow = { pingIntervalMs: 60_000, pingTimeoutMs: 60_000 };
  const gw = await startGateway(t, 'gw1', [exp], side === 'gateway' ? fast : slow);
  const app = await startApp(t, 'A');
  const pairs: net.Socket[][] = [];
  let frozen = false;
  const relay = net.createServer((down) => {
    const up = net.connect(gw.port, '127.0.0.1');
    pairs.push([down, up]);
    for (const s of [down, up]) s.on('error', () => {});
    down.on('data', (d) => !frozen && up.write(d));
    up.on('data', (d) => !frozen && down.write(d));
    down.on('close', () => up.destroy());
    up.on('close', () => down.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const p of pairs) p.forEach((s) => s.destroy());
    relay.close();
  });
  const relayPort = (relay.address() as net.AddressInfo).port;
  const client = startClient(t, e, [{ ...gw, target: { ...gw.target, routerPort: relayPort } }], app.target, {
    ...(side === 'client' ? fast : slow),
    handshakeTimeoutMs: 500,
  });
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1 && client.status()[0]!.connected);
  const disconnected = new Promise<string>((r) => client.once('disconnected', (_h: string, why: string) => r(why)));
  frozen = true;
  const thaw = async () => {
    frozen = false;
    for (const p of pairs) p.forEach((s) => s.destroy());
    await waitFor(() => gw.server.liveCount('acme', 'web') === 1 && client.status()[0]!.connected, 5000, 'recovered');
    t.is((await httpGet(await gw.server.open(exp, CLIENT))).body, 'A /');
  };
  return { gw, client, disconnected, thaw };
}

test('a dead router client is detected by the gateway PING timeout', async (t) => {
  const { gw, thaw } = await frozenPath(t, 'gateway');
  const dead = gw.server.sessions('acme', 'web').map((s) => s.id);
  // A loaded machine may have timed out an earlier session already: count from here.
  const before = gw.server.stats().pingTimeouts;
  await waitFor(() => gw.server.stats().pingTimeouts > before, 10_000, 'gateway ping timeout');
  // (The client may already be back on a new session: only the frozen one must be gone.)
  await waitFor(() => !gw.server.sessions('acme', 'web').some((s) => dead.includes(s.id)), 10_000, 'the session that stopped answering is dropped');
  await thaw();
});

test('a dead gateway is detected by the client PING timeout', async (t) => {
  const { gw, disconnected, thaw } = await frozenPath(t, 'client');
  t.regex(await disconnected, /PING/);
  t.is(gw.server.stats().pingTimeouts, 0);
  await thaw();
});

test('aborts by the public side never reset the session (nghttp2 rapid-reset limit: 1000 + 33/s)', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  const echo = await startEcho(t);
  const client = startClient(t, e, [gw], echo.target);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1 && client.status()[0]!.connected);
  const N = 1500;
  for (let i = 0; i < N; i += 100) {
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        const s = await gw.server.open(exp, CLIENT);
        s.write('x');
        await new Promise((r) => s.once('data', r));
        s.destroy(); // the public client vanished mid-connection
      }),
    );
  }
  await waitFor(() => client.stats().streamsActive === 0 && echo.sockets.size === 0, 10_000, 'aborted streams and app sockets to close');
  t.is(gw.server.stats().sessionsTotal, 1, 'still the first session');
  t.is(client.stats().aborted, N);
  t.is(gw.server.stats().streamsReset, 0, 'the gateway sent no RST_STREAM');
  const last = await gw.server.open(exp, CLIENT);
  last.end('still up');
  const chunks: Buffer[] = [];
  for await (const c of last) chunks.push(c as Buffer);
  t.is(Buffer.concat(chunks).toString(), 'still up');
  await waitFor(() => gw.server.stats().streamsActive === 0, 5000, 'gateway streams to close');
});

test('an app that closes its side first still receives everything sent after (no cut on clean close)', async (t) => {
  const e = entry('acme', 'tcp', 'sink-1');
  const exp = exposureOf('acme', 'tcp', [e]);
  const gw = await startGateway(t, 'gw1', [exp]);
  let received = -1;
  const app = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.end('bye'); // half-close first, then read only later, so data piles up in buffers on the way
    s.pause();
    setTimeout(() => s.resume(), 500);
    s.on('data', (c: Buffer) => (n += c.length));
    s.on('end', () => (received = n));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => app.close());
  startClient(t, e, [gw], { host: '127.0.0.1', port: (app.address() as net.AddressInfo).port });
  await waitFor(() => gw.server.liveCount('acme', 'tcp') === 1);
  const stream = await gw.server.open(exp, CLIENT);
  let greeting = '';
  stream.on('data', (c: Buffer) => (greeting += c));
  await new Promise((r) => stream.once('end', r));
  t.is(greeting, 'bye');
  const size = 32 * 1024 * 1024;
  stream.end(Buffer.alloc(size, 7));
  await waitFor(() => received >= 0, 10_000, 'the app to get everything');
  t.is(received, size);
});
