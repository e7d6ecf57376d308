/**
 * The heads the gateway writes (src/gateway/public/http-heads.ts), pure:
 * built from the received bytes, so these pin what changes and what is copied
 * as is — hop-by-hop fields dropped, OWS normalised, the status and request
 * lines rewritten to HTTP/1.1, the forwarded fields appended per Host.
 */
import test from 'ava';
import type { ConnInfo } from '../../../src/gateway/public/core.js';
import { forwardHeadBytes, responseHeadBytes } from '../../../src/gateway/public/http-heads.js';
import { parseRequestHead, parseResponseHead, scanRequestHead, scanResponseHead } from '../../../src/gateway/public/http1.js';

const lines = (...l: string[]): string => l.join('\r\n');
const info = (over: Partial<ConnInfo> = {}): ConnInfo => ({
  client: { address: '198.51.100.7', port: 40000 },
  local: { address: '192.0.2.1', port: 80 },
  proto: 'http',
  ...over,
});

const forwarded = (host: string): string[] => [
  'X-Forwarded-For: 198.51.100.7',
  'X-Forwarded-Proto: http',
  `X-Forwarded-Host: ${host}`,
  `Forwarded: for=198.51.100.7;host=${host};proto=http`,
];

test('request: fields as received, hop-by-hop and Connection-named ones dropped, the gateway’s own appended', (t) => {
  const req = parseRequestHead(
    lines(
      'GET /a?b=1 HTTP/1.1',
      'Host: web.example.test',
      'Accept: */*',
      'X-Odd:   spaced out \t',
      'Connection: keep-alive, X-Secret, Host',
      'Keep-Alive: timeout=5',
      'X-Secret: 1',
      'TE: trailers',
      'X-Forwarded-Proto: https',
      'x-forwarded-host: evil.test',
      'Expect: 100-continue',
      'Cookie: a=b',
    ),
  );
  const out = forwardHeadBytes(req, info(), false).toString('latin1');
  t.is(
    out,
    `${lines(
      'GET /a?b=1 HTTP/1.1',
      'Host: web.example.test',
      'Accept: */*',
      'X-Odd: spaced out',
      'Cookie: a=b',
      ...forwarded('web.example.test'),
      'Connection: keep-alive',
    )}\r\n\r\n`,
  );
});

test('request: an HTTP/1.0 request line goes out as HTTP/1.1; a client’s X-Forwarded-For and Forwarded come first', (t) => {
  const req = parseRequestHead(lines('POST /form HTTP/1.0', 'Content-Length: 3', 'X-Forwarded-For: 10.0.0.1', 'Forwarded: for=10.0.0.1'));
  const out = forwardHeadBytes(req, info(), false, Buffer.from('a=b')).toString('latin1');
  t.is(
    out,
    `${lines(
      'POST /form HTTP/1.1',
      'Content-Length: 3',
      'X-Forwarded-For: 10.0.0.1, 198.51.100.7',
      'X-Forwarded-Proto: http',
      'Forwarded: for=10.0.0.1, for=198.51.100.7;proto=http',
      'Connection: keep-alive',
    )}\r\n\r\na=b`,
  );
});

test('request: the forwarded fields follow each request’s own Host on one connection (no stale Host from the cache)', (t) => {
  const conn = info();
  const head = (host: string): string => lines('GET / HTTP/1.1', `Host: ${host}`);
  for (const host of ['a.example.test', 'a.example.test', 'b.example.test', 'a.example.test']) {
    const out = forwardHeadBytes(parseRequestHead(head(host)), conn, false).toString('latin1');
    t.is(out, `${lines(head(host), ...forwarded(host), 'Connection: keep-alive')}\r\n\r\n`, host);
  }
  const other = info({ client: { address: '203.0.113.9', port: 1 } });
  t.regex(forwardHeadBytes(parseRequestHead(head('a.example.test')), other, false).toString('latin1'), /X-Forwarded-For: 203\.0\.113\.9\r\n/, 'another connection, another client');
});

test('request: chunked and upgrade requests carry their own framing and Connection', (t) => {
  const chunked = parseRequestHead(lines('PUT /x HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked'));
  t.is(forwardHeadBytes(chunked, info(), false).toString('latin1'), `${lines('PUT /x HTTP/1.1', 'Host: a', ...forwarded('a'), 'Transfer-Encoding: chunked', 'Connection: keep-alive')}\r\n\r\n`);
  const ws = parseRequestHead(lines('GET /ws HTTP/1.1', 'Host: a', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13'));
  t.is(
    forwardHeadBytes(ws, info(), true).toString('latin1'),
    `${lines('GET /ws HTTP/1.1', 'Host: a', 'Sec-WebSocket-Version: 13', ...forwarded('a'), 'Connection: Upgrade', 'Upgrade: websocket')}\r\n\r\n`,
  );
});

test('request: scanned from a buffer with more after the head (the body, the next request), only the head is read', (t) => {
  const buf = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n', 'latin1');
  const req = scanRequestHead(buf, buf.indexOf('\r\n\r\n'));
  t.is(req.target, '/');
  t.deepEqual(req.headers, ['Host', 'a']);
  t.is(forwardHeadBytes(req, info(), false).toString('latin1'), `${lines('GET / HTTP/1.1', 'Host: a', ...forwarded('a'), 'Connection: keep-alive')}\r\n\r\n`);
});

test('response: fields as received, hop-by-hop and Connection-named ones dropped, the gateway’s framing', (t) => {
  const res = parseResponseHead(
    lines('HTTP/1.1 200 OK', 'Server: nginx', 'Content-Length: 5', 'Content-Length: 5', 'Connection: keep-alive, X-Internal', 'X-Internal: 1', 'Keep-Alive: timeout=5', 'X-Odd:\tv '),
    'GET',
  );
  t.is(responseHeadBytes(res, 'length', false, false, Buffer.from('hello')).toString('latin1'), `${lines('HTTP/1.1 200 OK', 'Server: nginx', 'Content-Length: 5', 'X-Odd: v')}\r\n\r\nhello`);
  t.is(
    responseHeadBytes(res, 'length', true, false).toString('latin1'),
    `${lines('HTTP/1.1 200 OK', 'Server: nginx', 'Content-Length: 5', 'X-Odd: v', 'Connection: close')}\r\n\r\n`,
    'the last response on the connection',
  );
  t.is(
    responseHeadBytes(res, 'length', false, true).toString('latin1'),
    `${lines('HTTP/1.1 200 OK', 'Server: nginx', 'Content-Length: 5', 'X-Odd: v', 'Connection: keep-alive')}\r\n\r\n`,
    'kept alive for an HTTP/1.0 client',
  );
});

test('response: re-framed bodies lose Content-Length; chunked ones get the gateway’s Transfer-Encoding', (t) => {
  const res = parseResponseHead(lines('HTTP/1.1 200 OK', 'Transfer-Encoding: chunked', 'Content-Length: 9', 'ETag: "x"'), 'GET');
  t.is(responseHeadBytes(res, 'chunked', false, false).toString('latin1'), `${lines('HTTP/1.1 200 OK', 'ETag: "x"', 'Transfer-Encoding: chunked')}\r\n\r\n`);
  t.is(responseHeadBytes(res, 'close', true, false).toString('latin1'), `${lines('HTTP/1.1 200 OK', 'ETag: "x"', 'Connection: close')}\r\n\r\n`, 'to an HTTP/1.0 client: to the close');
});

test('response: status lines go out as HTTP/1.1 with the code and reason received; `Connection: close` also drops a field named Close', (t) => {
  t.is(responseHeadBytes(parseResponseHead(lines('HTTP/1.0 404 Not Found', 'Content-Length: 0'), 'GET'), 'length', false, false).toString('latin1'), 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
  t.is(responseHeadBytes(parseResponseHead(lines('HTTP/1.1 204', 'X: y'), 'GET'), 'none', false, false).toString('latin1'), 'HTTP/1.1 204 \r\nX: y\r\n\r\n', 'no reason phrase');
  t.is(responseHeadBytes(parseResponseHead(lines('HTTP/1.1 200 caf\xe9', 'Close: x', 'Connection: close', 'Content-Length: 0'), 'GET'), 'length', true, false).toString('latin1'), 'HTTP/1.1 200 caf\xe9\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
});

test('response: scanned from a buffer with the body after it, the head and any body given are written once', (t) => {
  const buf = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok', 'latin1');
  const at = buf.indexOf('\r\n\r\n');
  const res = scanResponseHead(buf, at, 'GET');
  t.like(res, { status: 200, reason: 'OK', framing: 'length', contentLength: 2, keepAlive: true });
  t.is(responseHeadBytes(res, 'length', false, false, buf.subarray(at + 4)).toString('latin1'), 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
});
