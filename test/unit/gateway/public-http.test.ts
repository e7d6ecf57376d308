import http from 'node:http';
import net from 'node:net';
import test from 'ava';
import { exposure, get, httpEntryPoint, LOOPBACK, LoopbackUpstream, rawExchange, sleep, startGateway, until } from './public-helpers.js';

const web = exposure({ name: 'web', hostnames: ['web.example.test'] });
const api = exposure({ name: 'api', hostnames: ['API.example.test', 'api2.example.test'] });

test('routes by Host (case-insensitive, port stripped); keep-alive requests are routed one by one', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const a = await httpEntryPoint(t, 'api');
  const up = new LoopbackUpstream().set(web, w.port).set(api, a.port);
  const { gw, http: port } = await startGateway(t, [web, api], up);
  t.like(await get(port, 'web.example.test'), { status: 200, body: 'web GET /' });
  t.like(await get(port, 'Api.Example.Test:8080', { path: '/x?y=1' }), { status: 200, body: 'api GET /x?y=1' });
  t.like(await get(port, 'api2.example.test'), { status: 200, body: 'api GET /' });

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const before = gw.metrics().accepted.http;
  t.like(await get(port, 'web.example.test', { agent }), { body: 'web GET /' });
  t.like(await get(port, 'api.example.test', { agent }), { body: 'api GET /' });
  t.like(await get(port, 'web.example.test', { agent, method: 'POST', body: 'hello' }), { body: 'web POST /' });
  t.is(gw.metrics().accepted.http - before, 1, 'one client connection carried all three');
  t.is(w.seen.at(-1)!.body, 'hello');
  t.is(gw.metrics().exposures['acme/web']!.requests, 3);
});

test('unknown Host: 404 with a short body, upstream never opened', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up);
  const r = await get(port, 'nope.example.test');
  t.is(r.status, 404);
  t.is(r.body, 'unknown host\n');
  const r2 = await get(port, 'x.web.example.test', { method: 'POST', body: 'x'.repeat(1000) });
  t.is(r2.status, 404);
  // HTTP/1.0 without Host.
  const raw = await rawExchange(port, 'GET / HTTP/1.0\r\n\r\n');
  t.regex(raw.text, /^HTTP\/1\.1 404 /);
  // Absolute-form request targets are refused, not proxied.
  const abs = await rawExchange(port, 'GET http://web.example.test/ HTTP/1.1\r\nHost: web.example.test\r\n\r\n');
  t.regex(abs.text, /^HTTP\/1\.1 400 /);
  t.deepEqual(up.opens, []);
  t.is(w.seen.length, 0);
  t.is(gw.metrics().rejections.unknown_host, 3);
});

test('X-Forwarded-For and Forwarded are appended to, X-Forwarded-Proto/Host set, hop-by-hop headers stripped both ways', async (t) => {
  const w = await httpEntryPoint(t, 'web', (_req, res) => {
    res.setHeader('Connection', 'X-Internal');
    res.setHeader('X-Internal', 'secret');
    res.setHeader('Keep-Alive', 'timeout=99');
    res.setHeader('Set-Cookie', ['a=1', 'b=2']);
    res.end('ok');
  });
  const up = new LoopbackUpstream().set(web, w.port);
  const { http: port } = await startGateway(t, [web], up);
  const r = await get(port, 'web.example.test:8080', {
    headers: {
      'X-Forwarded-For': '198.51.100.7, 203.0.113.9',
      Forwarded: 'for=198.51.100.7;proto=https',
      'X-Forwarded-Proto': 'https',
      'X-Forwarded-Host': 'evil.test',
      Connection: 'X-Hop, keep-alive',
      'X-Hop': 'drop me',
      'Keep-Alive': 'timeout=5',
      'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
      'X-Kept': 'yes',
    },
  });
  t.is(r.status, 200);
  t.is(r.headers['x-internal'], undefined);
  t.not(r.headers['keep-alive'], 'timeout=99', "the entry point's Keep-Alive is not relayed (the gateway's own is)");
  t.deepEqual(r.headers['set-cookie'], ['a=1', 'b=2']);
  const h = w.seen[0]!.headers;
  t.is(h['x-forwarded-for'], '198.51.100.7, 203.0.113.9, 127.0.0.1');
  t.is(h.forwarded, 'for=198.51.100.7;proto=https, for=127.0.0.1;host="web.example.test:8080";proto=http');
  t.is(h['x-forwarded-proto'], 'http');
  t.is(h['x-forwarded-host'], 'web.example.test:8080');
  t.is(h.host, 'web.example.test:8080');
  t.is(h['x-kept'], 'yes');
  t.is(h['x-hop'], undefined);
  t.is(h['keep-alive'], undefined);
  t.is(h['proxy-authorization'], undefined);
  t.is(h.connection, 'keep-alive');
  t.deepEqual(up.opens[0]!.client.address, '127.0.0.1');
  // Only the gateway's own X-Forwarded-For line reaches the entry point (a single header).
  t.is(w.seen[0]!.rawHeaders.filter((x) => x.toLowerCase() === 'x-forwarded-for').length, 1);
});

test('a client cannot strip Content-Length or Host by naming them in Connection', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  const { http: port } = await startGateway(t, [web], up);
  const r = await rawExchange(
    port,
    'POST /p HTTP/1.1\r\nHost: web.example.test\r\nConnection: content-length, host, close\r\nContent-Length: 5\r\n\r\nhello',
  );
  t.regex(r.text, /^HTTP\/1\.1 200 /);
  t.is(w.seen[0]!.body, 'hello');
  t.is(w.seen[0]!.headers.host, 'web.example.test');
});

test('bodies: Content-Length and chunked forwarded intact; HEAD and 204 without body', async (t) => {
  const w = await httpEntryPoint(t, 'web', (req, res, body) => {
    if (req.url === '/204') {
      res.statusCode = 204;
      return res.end();
    }
    res.end(`${req.headers['transfer-encoding'] ?? 'cl'}:${body.length}`);
  });
  const up = new LoopbackUpstream().set(web, w.port);
  const { http: port } = await startGateway(t, [web], up);
  const big = 'x'.repeat(300_000);
  t.like(await get(port, 'web.example.test', { method: 'PUT', body: big }), { status: 200, body: `cl:${big.length}` });
  const chunked = await rawExchange(
    port,
    'POST / HTTP/1.1\r\nHost: web.example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
  );
  t.regex(chunked.text, /chunked:11$/);
  t.like(await get(port, 'web.example.test', { method: 'HEAD' }), { status: 200, body: '' });
  t.like(await get(port, 'web.example.test', { path: '/204' }), { status: 204, body: '' });
});

test('a generic Duplex upstream (what a tunnel stream is) works the same', async (t) => {
  const w = await httpEntryPoint(t, 'web', (_req, res, body) => res.end(`got ${body.length}`));
  const up = new LoopbackUpstream().set(web, w.port);
  up.wrap = true;
  const { http: port } = await startGateway(t, [web], up);
  t.like(await get(port, 'web.example.test'), { status: 200, body: 'got 0' });
  t.like(await get(port, 'web.example.test', { method: 'POST', body: 'y'.repeat(200_000) }), { status: 200, body: 'got 200000' });
});

test('no live entry point → 503; the entry point dying mid-response → the client sees a cut, not a clean end', async (t) => {
  const w = await httpEntryPoint(t, 'web', (req, res) => {
    if (req.url === '/die') {
      res.writeHead(200, { 'Content-Length': '100' });
      res.write('partial');
      setTimeout(() => req.socket.destroy(), 50);
      return;
    }
    res.end('ok');
  });
  const up = new LoopbackUpstream(); // nothing registered yet
  const { gw, http: port } = await startGateway(t, [web], up);
  const r = await get(port, 'web.example.test');
  t.is(r.status, 503);
  t.is(r.headers['retry-after'], '1');
  t.is(gw.metrics().rejections.upstream_unavailable, 1);
  up.set(web, w.port);
  await t.throwsAsync(get(port, 'web.example.test', { path: '/die' }));
  t.true(await until(() => gw.metrics().activeStreams === 0), 'the stream slot is released');
});

test('WebSocket upgrade passes through both ways with forwarded headers', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  let upgradeHeaders: http.IncomingHttpHeaders = {};
  w.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    upgradeHeaders = req.headers;
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n');
    socket.on('data', (c: Buffer) => socket.write(`echo:${c.toString()}`));
    socket.on('end', () => socket.end());
  });
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up);
  const s = net.connect({ host: LOOPBACK, port });
  t.teardown(() => s.destroy());
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString()));
  s.write(
    'GET /ws HTTP/1.1\r\nHost: web.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 192.0.2.55\r\n\r\n',
  );
  t.true(await until(() => got.includes('\r\n\r\n')));
  t.regex(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  t.regex(got, /Sec-WebSocket-Accept: test/);
  s.write('ping');
  t.true(await until(() => got.endsWith('echo:ping')));
  t.is(upgradeHeaders['x-forwarded-for'], '192.0.2.55, 127.0.0.1');
  t.is(upgradeHeaders.upgrade, 'websocket');
  t.regex(String(upgradeHeaders.connection), /upgrade/i);
  t.is(gw.metrics().exposures['acme/web']!.connections, 1);
  s.destroy();
  t.true(await until(() => gw.metrics().activeStreams === 0));
});

test('an upgrade the entry point declines is relayed and the connection closed', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  w.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope');
  });
  const up = new LoopbackUpstream().set(web, w.port);
  const { http: port } = await startGateway(t, [web], up);
  const r = await rawExchange(port, 'GET /ws HTTP/1.1\r\nHost: web.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  t.regex(r.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.regex(r.text, /\r\n\r\nnope$/);
  t.true(r.closed);
});

test('header size limit: an oversized request head gets 431 and is never forwarded', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { maxHeaderBytes: 4096 } });
  t.like(await get(port, 'web.example.test', { headers: { 'X-Pad': 'a'.repeat(3000) } }), { status: 200 });
  const r = await rawExchange(port, `GET / HTTP/1.1\r\nHost: web.example.test\r\nX-Pad: ${'a'.repeat(5000)}\r\n\r\n`);
  t.regex(r.text, /^HTTP\/1\.1 431 /);
  t.true(r.closed);
  t.is(up.opens.length, 1);
  t.is(gw.metrics().rejections.header_too_large, 1);
});

test('body size limit: 413 on a declared length (nothing opened) and on a chunked body that grows past it', async (t) => {
  const w = await httpEntryPoint(t, 'web', (_req, res, body) => res.end(`len ${body.length}`));
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { maxBodyBytes: 1000 } });
  t.like(await get(port, 'web.example.test', { method: 'POST', body: 'x'.repeat(1000) }), { status: 200, body: 'len 1000' });
  const opensBefore = up.opens.length;
  const declared = await rawExchange(port, 'POST / HTTP/1.1\r\nHost: web.example.test\r\nContent-Length: 1001\r\n\r\n');
  t.regex(declared.text, /^HTTP\/1\.1 413 /);
  t.true(declared.closed);
  t.is(up.opens.length, opensBefore, 'a declared oversized body never opens a stream');
  const chunk = `${(600).toString(16)}\r\n${'y'.repeat(600)}\r\n`;
  const streamed = await rawExchange(port, `POST / HTTP/1.1\r\nHost: web.example.test\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}${chunk}`);
  t.regex(streamed.text, /^HTTP\/1\.1 413 /);
  t.true(streamed.closed);
  t.is(gw.metrics().rejections.body_too_large, 2);
  t.is(w.seen.length, 1, 'the entry point only ever completed the allowed request');
});

test('slowloris: a head trickled byte by byte gets 408 at the header timeout; a silent connection is closed', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const up = new LoopbackUpstream().set(web, w.port);
  const { gw, http: port } = await startGateway(t, [web], up, { limits: { headerTimeoutMs: 400 } });
  const s = net.connect({ host: LOOPBACK, port });
  t.teardown(() => s.destroy());
  let got = '';
  let closedAt = 0;
  s.on('data', (c: Buffer) => (got += c.toString()));
  s.on('close', () => (closedAt = Date.now()));
  s.on('error', () => {});
  const start = Date.now();
  const head = 'GET / HTTP/1.1\r\nHost: web.example.test\r\nX-Slow: ';
  s.write(head);
  const trickle = setInterval(() => !s.destroyed && s.write('a'), 50);
  t.teardown(() => clearInterval(trickle));
  t.true(await until(() => closedAt > 0, 3000));
  clearInterval(trickle);
  t.regex(got, /^HTTP\/1\.1 408 /);
  t.true(closedAt - start >= 350 && closedAt - start < 2500, `closed after ${closedAt - start} ms`);
  const silent = await rawExchange(port, Buffer.alloc(0), { waitMs: 3000 });
  t.true(silent.closed);
  t.deepEqual(up.opens, []);
  t.true(gw.metrics().rejections.header_timeout! >= 2);
  // A keep-alive connection whose second request is slow is caught too.
  const agentSock = net.connect({ host: LOOPBACK, port });
  t.teardown(() => agentSock.destroy());
  let second = '';
  agentSock.on('data', (c: Buffer) => (second += c.toString()));
  agentSock.on('error', () => {});
  agentSock.write('GET / HTTP/1.1\r\nHost: web.example.test\r\n\r\n');
  t.true(await until(() => second.includes('web GET /')));
  agentSock.write('GET / HTTP/1.1\r\nHost: web.example.test\r\n');
  await sleep(1200);
  t.true(agentSock.destroyed || agentSock.readableEnded || second.includes(' 408 '), 'closed by the header timer');
});

test('Expect: 100-continue is answered only for a request that will be forwarded', async (t) => {
  const w = await httpEntryPoint(t, 'web', (_req, res, body) => res.end(`got ${body}`));
  const up = new LoopbackUpstream().set(web, w.port);
  const { http: port } = await startGateway(t, [web], up, { limits: { maxBodyBytes: 10 } });
  const refused = await rawExchange(port, 'POST / HTTP/1.1\r\nHost: web.example.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n');
  t.regex(refused.text, /^HTTP\/1\.1 413 /, 'no 100 Continue before the refusal');
  const s = net.connect({ host: LOOPBACK, port });
  t.teardown(() => s.destroy());
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString()));
  s.write('POST / HTTP/1.1\r\nHost: web.example.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
  t.true(await until(() => got.startsWith('HTTP/1.1 100 Continue')));
  s.write('hello');
  t.true(await until(() => got.endsWith('got hello')));
  t.is(w.seen[0]!.headers.expect, undefined, 'the gateway answered the expectation itself');
});

test('a keep-alive client connection reuses its upstream stream for the same exposure, not across exposures', async (t) => {
  const w = await httpEntryPoint(t, 'web');
  const a = await httpEntryPoint(t, 'api');
  const up = new LoopbackUpstream().set(web, w.port).set(api, a.port);
  const { gw, http: port } = await startGateway(t, [web, api], up);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 3; i++) t.like(await get(port, 'web.example.test', { agent }), { body: 'web GET /' });
  t.is(up.count('acme/web'), 1, 'three requests, one stream');
  t.is(new Set(w.seen.map((s) => s.remotePort)).size, 1);
  t.like(await get(port, 'api.example.test', { agent }), { body: 'api GET /' });
  t.like(await get(port, 'web.example.test', { agent }), { body: 'web GET /' });
  t.is(up.count('acme/web'), 2, 'switching Host closed the kept stream');
  // Another client connection never gets this connection's stream.
  t.like(await get(port, 'web.example.test'), { body: 'web GET /' });
  t.is(up.count('acme/web'), 3);
  // Each request still carries the gateway's own forwarded headers.
  t.true(w.seen.every((s) => s.headers['x-forwarded-for'] === '127.0.0.1'));
  agent.destroy();
  t.true(await until(() => gw.metrics().activeStreams === 0 && gw.metrics().activeConnections === 0));
});

test('a kept stream the entry point closed: a GET is sent again on a new stream, a POST gets 502', async (t) => {
  // The entry point answers the first request of each connection, then drops
  // the connection on the second without answering (an idle-close race).
  const counts = new WeakMap<object, number>();
  const w = await httpEntryPoint(t, 'web', (req, res) => {
    const n = (counts.get(req.socket) ?? 0) + 1;
    counts.set(req.socket, n);
    if (n >= 2) return void req.socket.destroy();
    res.end(`ok ${req.method}`);
  });
  const up = new LoopbackUpstream().set(web, w.port);
  const { http: port } = await startGateway(t, [web], up);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  t.like(await get(port, 'web.example.test', { agent }), { status: 200, body: 'ok GET' });
  t.like(await get(port, 'web.example.test', { agent }), { status: 200, body: 'ok GET' });
  t.is(up.count('acme/web'), 2);
  t.like(await get(port, 'web.example.test', { agent, method: 'POST', body: 'x' }), { status: 502 });
  t.is(up.count('acme/web'), 2, 'a request with a body is never sent twice');
});
