import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import test from 'ava';
import { decodeProxyV2 } from '../../../src/gateway/public/proxy-protocol.js';
import type { ProxyV2Parse } from '../../../src/gateway/public/proxy-protocol.js';
import { closeAtEnd, exposure, httpEntryPoint, listenLoopback, LOOPBACK, LoopbackUpstream, makeCert, rawExchange, startGateway, until } from './public-helpers.js';
import type { TestCert } from './public-helpers.js';

const PASS = 'pass.example.test';
const TERM = 'term.example.test';
const pass = exposure({ name: 'pass', protocol: 'tls', tls: 'passthrough', hostnames: [PASS] });
const passPP = exposure({ name: 'passpp', protocol: 'tls', tls: 'passthrough', hostnames: ['pp.example.test'], proxyProtocol: true });
const term = exposure({ name: 'term', protocol: 'tls', tls: 'terminate', hostnames: [TERM, 'alias.example.test'] });
const nocert = exposure({ name: 'nocert', protocol: 'tls', tls: 'terminate', hostnames: ['nocert.example.test'] });

let entryCert: TestCert;
let gatewayCert: TestCert;
test.before(() => {
  entryCert = makeCert(PASS);
  gatewayCert = makeCert(TERM);
});

/**
 * A TLS entry point with its own certificate; with `proxyProtocol` it first
 * reads a PROXY v2 header off the raw connection and records it.
 */
async function tlsEntryPoint(t: Parameters<typeof closeAtEnd>[0], cert: TestCert, proxyProtocol = false): Promise<{ port: number; headers: ProxyV2Parse[] }> {
  const headers: ProxyV2Parse[] = [];
  const secure = tls.createServer({ cert: cert.cert, key: cert.key }, (s) => {
    s.on('error', () => {});
    s.end(`hello from the entry point, sni=${(s as tls.TLSSocket & { servername?: string }).servername}`);
  });
  const raw = net.createServer((socket) => {
    if (!proxyProtocol) return secure.emit('connection', socket);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const r = decodeProxyV2(buf);
      if (r.status === 'incomplete') return;
      socket.removeListener('data', onData);
      socket.pause();
      headers.push(r);
      if (r.status !== 'ok') return void socket.destroy();
      socket.unshift(buf.subarray(r.length));
      secure.emit('connection', socket);
    };
    socket.on('data', onData);
  });
  const port = await listenLoopback(raw);
  closeAtEnd(t, raw);
  return { port, headers };
}

function tlsGet(port: number, servername: string, ca: string): Promise<{ authorized: boolean; text: string; peerCN: string }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: LOOPBACK, port, servername, ca }, () => {
      let text = '';
      s.on('data', (c: Buffer) => (text += c.toString()));
      s.on('end', () => resolve({ authorized: s.authorized, text, peerCN: String(s.getPeerCertificate().subject.CN) }));
    });
    s.on('error', reject);
  });
}

test('passthrough: end-to-end TLS, the client verifies the entry point’s own certificate', async (t) => {
  const entry = await tlsEntryPoint(t, entryCert);
  const up = new LoopbackUpstream().set(pass, entry.port);
  const { gw, https: port } = await startGateway(t, [pass, term], up, { certificates: { [TERM]: gatewayCert } });
  const r = await tlsGet(port, PASS, entryCert.cert);
  t.true(r.authorized);
  t.is(r.peerCN, PASS);
  t.is(r.text, `hello from the entry point, sni=${PASS}`);
  // The gateway's own certificate does not verify this name: it never terminated the connection.
  await t.throwsAsync(tlsGet(port, PASS, gatewayCert.cert), { message: /self.signed|unable to verify|certificate/i });
  t.is(up.count('acme/pass'), 2);
  t.is(gw.metrics().exposures['acme/pass']!.connections, 2);
});

test('passthrough with PROXY v2: header first, with the client address and the SNI as AUTHORITY', async (t) => {
  const entry = await tlsEntryPoint(t, makeCert('pp.example.test'), true);
  const up = new LoopbackUpstream().set(passPP, entry.port);
  const { https: port } = await startGateway(t, [passPP], up);
  const s = tls.connect({ host: LOOPBACK, port, servername: 'pp.example.test', rejectUnauthorized: false });
  const text = await new Promise<string>((resolve, reject) => {
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
  t.regex(text, /hello from the entry point/);
  const h = entry.headers[0]!;
  t.is(h.status, 'ok');
  if (h.status !== 'ok') return;
  t.is(h.command, 'PROXY');
  t.is(h.family, 'TCP4');
  t.deepEqual(h.addresses, { source: { address: '127.0.0.1', port: s.localPort! }, destination: { address: '127.0.0.1', port } });
  t.deepEqual(h.tlvs, [{ type: 2, value: Buffer.from('pp.example.test') }]);
});

test('terminate: the configured certificate, then HTTP routing with X-Forwarded-Proto https', async (t) => {
  const w = await httpEntryPoint(t, 'term');
  const up = new LoopbackUpstream().set(term, w.port);
  const { gw, https: port } = await startGateway(t, [term], up, { certificates: { [TERM]: gatewayCert } });
  const res = await new Promise<{ status: number; body: string; cn: string }>((resolve, reject) => {
    const req = https.request({ host: LOOPBACK, port, servername: TERM, ca: gatewayCert.cert, headers: { Host: TERM }, path: '/secure', agent: false }, (r) => {
      let body = '';
      r.on('data', (c: Buffer) => (body += c.toString()));
      r.on('end', () => resolve({ status: r.statusCode!, body, cn: String((r.socket as tls.TLSSocket).getPeerCertificate().subject.CN) }));
    });
    req.on('error', reject);
    req.end();
  });
  t.deepEqual(res, { status: 200, body: 'term GET /secure', cn: TERM });
  const h = w.seen[0]!.headers;
  t.is(h['x-forwarded-proto'], 'https');
  t.is(h['x-forwarded-for'], '127.0.0.1');
  t.is(h.forwarded, `for=127.0.0.1;host=${TERM};proto=https`);
  // The client connection is accounted for until it closes, then released (connection caps depend on it).
  t.true(await until(() => gw.metrics().activeConnections === 0 && gw.metrics().activeStreams === 0));
});

test('terminate: a Host of another name on the connection is 421, never forwarded; certificates from a directory', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-certs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, `${TERM}.crt`), gatewayCert.cert);
  writeFileSync(join(dir, `${TERM}.key`), gatewayCert.key);
  writeFileSync(join(dir, 'orphan.example.test.crt'), gatewayCert.cert); // no key: skipped
  const w = await httpEntryPoint(t, 'term');
  const up = new LoopbackUpstream().set(term, w.port);
  const { gw, https: port } = await startGateway(t, [term, exposure({ name: 'web', hostnames: ['web.example.test'] })], up, { certDir: dir });
  const ask = (host: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = https.request({ host: LOOPBACK, port, servername: TERM, ca: gatewayCert.cert, headers: { Host: host }, agent: false }, (r) => {
        r.resume();
        r.on('end', () => resolve(r.statusCode!));
      });
      req.on('error', reject);
      req.end();
    });
  t.is(await ask('web.example.test'), 421);
  t.is(await ask('alias.example.test'), 200, 'another name of the same exposure is fine');
  t.is(up.opens.length, 1);
  t.is(gw.metrics().rejections.misdirected, 1);
});

/** Connect with TLS and report how the handshake failed. */
function handshakeError(port: number, servername: string | undefined): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: LOOPBACK, port, ...(servername ? { servername } : {}), rejectUnauthorized: false });
    s.on('secureConnect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(`${err.code ?? ''} ${err.message}`));
  });
}

test('unknown SNI and no SNI: unrecognized_name alert, nothing forwarded; no certificate: handshake_failure', async (t) => {
  const up = new LoopbackUpstream().set(pass, 1).set(nocert, 1);
  const { gw, https: port } = await startGateway(t, [pass, nocert], up);
  t.regex(await handshakeError(port, 'nope.example.test'), /UNRECOGNIZED_NAME|unrecognized name/i);
  t.regex(await handshakeError(port, undefined), /UNRECOGNIZED_NAME|unrecognized name/i);
  t.regex(await handshakeError(port, 'nocert.example.test'), /HANDSHAKE_FAILURE|handshake failure/i);
  const garbage = await rawExchange(port, 'GET / HTTP/1.1\r\nHost: pass.example.test\r\n\r\n');
  t.true(garbage.closed);
  t.is(garbage.text, '');
  t.deepEqual(up.opens, []);
  t.like(gw.metrics().rejections, { unknown_sni: 1, no_sni: 1, no_certificate: 1, bad_client_hello: 1 });
});

test('a ClientHello that never completes is closed at the header timeout', async (t) => {
  const up = new LoopbackUpstream().set(pass, 1);
  const { gw, https: port } = await startGateway(t, [pass], up, { limits: { headerTimeoutMs: 300 } });
  const start = Date.now();
  const r = await rawExchange(port, Buffer.from([0x16, 3, 1, 0x02, 0x00, 1, 0, 1]), { waitMs: 3000 });
  t.true(r.closed);
  t.true(Date.now() - start < 2000);
  t.true(await until(() => gw.metrics().rejections.header_timeout === 1));
  t.deepEqual(up.opens, []);
});
