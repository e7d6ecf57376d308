import test from 'ava';
import net from 'node:net';
import { generateSigningKeyPair, sha256hex, sign, verifyWithTweetnacl } from '../../../src/shared/crypto.js';
import { ValidationError } from '../../../src/shared/errors.js';
import {
  answerHello,
  authorizeRouterClient,
  authSigningText,
  encodeFrame,
  grantSigningText,
  helloMessage,
  newChallenge,
  parseResult,
  readFrame,
  RouterAuthError,
  signGrant,
  verifyGrant,
  type FrameError,
} from '../../../src/shared/router-protocol.js';
import { backoffDelay, parseGatewayArg, parseHostPort } from '../../../src/node-agent/router-client.js';
import { coordinator, entry, exposureOf } from './helpers.js';

const reason = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    if (e instanceof RouterAuthError) return e.reason;
    throw e;
  }
  return 'ok';
};

test('grants: signature covers the exact text; tweetnacl agrees; verify returns the grant', (t) => {
  const e = entry('acme', 'web', 'web-1');
  t.is(e.credential.grant, JSON.stringify(e.grant));
  t.true(verifyWithTweetnacl(grantSigningText(e.credential.grant), e.credential.signature, coordinator.publicKey));
  t.is(grantSigningText('x'), `netwall-router-grant-v1\n${sha256hex('x')}`);
  t.deepEqual(verifyGrant(e.credential, coordinator.publicKey), e.grant);
  // Rotation: any listed coordinator key.
  t.deepEqual(verifyGrant(e.credential, [generateSigningKeyPair().publicKey, coordinator.publicKey]), e.grant);
});

test('grants: forged, tampered, expired, not yet valid, bad shape', (t) => {
  const now = Date.now();
  const e = entry('acme', 'web', 'web-1', { issuedAt: now - 1000, ttlMs: 60_000 });
  t.is(reason(() => verifyGrant(e.credential, generateSigningKeyPair().publicKey, now)), 'bad-grant-signature');
  t.is(reason(() => verifyGrant({ ...e.credential, grant: e.credential.grant.replace('acme', 'evil') }, coordinator.publicKey, now)), 'bad-grant-signature');
  t.is(reason(() => verifyGrant({ ...e.credential, signature: 'not base64!' }, coordinator.publicKey, now)), 'bad-grant-signature');
  t.is(reason(() => verifyGrant({ grant: 1 } as never, coordinator.publicKey, now)), 'malformed');
  t.is(reason(() => verifyGrant(e.credential, coordinator.publicKey, now + 59_000)), 'expired');
  t.is(reason(() => verifyGrant(e.credential, coordinator.publicKey, now + 58_000)), 'ok');
  t.is(reason(() => verifyGrant(e.credential, coordinator.publicKey, now - 1000 - 5 * 60_000 - 1)), 'not-yet-valid');
  t.is(reason(() => verifyGrant(e.credential, coordinator.publicKey, now - 1000 - 4 * 60_000)), 'ok'); // within clock skew
  // Coordinator-signed text that is not a valid grant (e.g. another version, a bad key) is refused too.
  const signRaw = (text: string) => ({ grant: text, signature: sign(grantSigningText(text), coordinator.secretKey) });
  t.is(reason(() => verifyGrant(signRaw('{"v":2}'), coordinator.publicKey)), 'bad-grant');
  t.is(reason(() => verifyGrant(signRaw('not json'), coordinator.publicKey)), 'bad-grant');
  t.is(reason(() => verifyGrant(signRaw(JSON.stringify({ ...e.grant, publicKey: 'abc' })), coordinator.publicKey, now)), 'bad-grant');
  t.is(reason(() => verifyGrant(signRaw(JSON.stringify({ ...e.grant, tenant: 'A\nB' })), coordinator.publicKey, now)), 'bad-grant');
  // signGrant refuses to sign nonsense.
  t.throws(() => signGrant({ ...e.grant, exposure: 'Bad Name' }, coordinator.secretKey), { instanceOf: ValidationError });
  t.throws(() => signGrant({ ...e.grant, expiresAt: e.grant.issuedAt }, coordinator.secretKey), { instanceOf: ValidationError });
});

test('authorize: binds challenge, gateway, tenant, exposure, workload and the grant text', (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const lookup = (tenant: string, name: string) => (tenant === 'acme' && name === 'web' ? exp : undefined);
  const challenge = newChallenge();
  const hello = helloMessage('gw1', challenge);
  const message = answerHello(hello, e.credential, e.keys.secretKey, 'gw1');
  const base = { message, challenge: hello.challenge, gateway: 'gw1', coordinatorKey: coordinator.publicKey, lookup };
  t.deepEqual(authorizeRouterClient(base).grant, e.grant);
  t.is(reason(() => authorizeRouterClient({ ...base, challenge: newChallenge().toString('base64') })), 'bad-signature');
  t.is(reason(() => authorizeRouterClient({ ...base, gateway: 'gw2' })), 'bad-signature');
  t.is(reason(() => authorizeRouterClient({ ...base, tenant: 'globex' })), 'wrong-tenant');
  t.is(reason(() => authorizeRouterClient({ ...base, tenant: 'acme' })), 'ok');
  t.is(reason(() => authorizeRouterClient({ ...base, lookup: () => undefined })), 'unknown-exposure');
  t.is(reason(() => authorizeRouterClient({ ...base, lookup: () => ({ ...exp, tenant: 'globex' }) })), 'unknown-exposure');
  t.is(reason(() => authorizeRouterClient({ ...base, lookup: () => ({ ...exp, mode: 'mesh' }) })), 'not-tunnel');
  t.is(reason(() => authorizeRouterClient({ ...base, lookup: () => ({ ...exp, routerClients: [] }) })), 'key-not-listed');
  // The connection must come from the grant's workload's mesh address (exposureOf: 127.0.0.1).
  t.is(reason(() => authorizeRouterClient({ ...base, source: '127.0.0.1' })), 'ok');
  t.is(reason(() => authorizeRouterClient({ ...base, source: '127.0.0.2' })), 'wrong-source');
  t.is(reason(() => authorizeRouterClient({ ...base, source: '127.0.0.1', lookup: () => ({ ...exp, targets: [] }) })), 'wrong-source');
  const elsewhere = { ...exp, targets: exp.targets.map((x) => ({ ...x, node: 'node9' })) };
  t.is(reason(() => authorizeRouterClient({ ...base, source: '127.0.0.1', lookup: () => elsewhere })), 'wrong-source');
  t.is(reason(() => authorizeRouterClient({ ...base, message: { ...message, v: 2 } })), 'malformed');
  t.is(reason(() => authorizeRouterClient({ ...base, message: null })), 'malformed');
  t.is(
    authSigningText(hello.challenge, 'gw1', e.credential, e.grant),
    ['netwall-router-auth-v1', hello.challenge, 'gw1', 'acme', 'web', 'web-1', sha256hex(e.credential.grant)].join('\n'),
  );
});

test('answerHello: pins the gateway name and checks the challenge', (t) => {
  const e = entry('acme', 'web', 'web-1');
  const hello = helloMessage('gw1', newChallenge());
  t.is(answerHello(hello, e.credential, e.keys.secretKey).type, 'auth');
  t.throws(() => answerHello(hello, e.credential, e.keys.secretKey, 'gw2'), { message: /dialled gateway "gw2" but "gw1" answered/ });
  t.throws(() => answerHello({ ...hello, challenge: 'AAAA' }, e.credential, e.keys.secretKey), { message: /challenge/ });
  t.throws(() => answerHello({ type: 'welcome', v: 1 }, e.credential, e.keys.secretKey), { message: /hello/ });
  t.deepEqual(parseResult({ type: 'refused', v: 1, reason: 'expired' }), { type: 'refused', v: 1, reason: 'expired' });
  t.deepEqual(parseResult({ type: 'refused', v: 1, reason: '<script>' }), { type: 'refused', v: 1, reason: 'malformed' });
  t.throws(() => parseResult({}));
  t.true(newChallenge().length === 32 && !newChallenge().equals(newChallenge()));
});

test('framing: one frame read exactly; the rest is left for HTTP/2; size and time bounded', async (t) => {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.write(Buffer.concat([encodeFrame({ a: 1 }), Buffer.from('PRI * HTTP/2.0')]));
    // Then a frame in two pieces, then an oversized header.
    setTimeout(() => s.write(encodeFrame({ b: 2 }).subarray(0, 3)), 20);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.deepEqual(await readFrame(sock, Date.now() + 1000), { a: 1 });
  t.is(sock.read(14)?.toString(), 'PRI * HTTP/2.0');
  const err = await t.throwsAsync(readFrame(sock, Date.now() + 200));
  t.is((err as FrameError).reason, 'timeout');
  sock.destroy();
  t.throws(() => encodeFrame({ x: 'y'.repeat(20_000) }), { instanceOf: ValidationError });
});

test('backoff: full jitter under an exponential cap', (t) => {
  t.is(backoffDelay(0, 500, 30_000, () => 0.999), 499);
  t.is(backoffDelay(3, 500, 30_000, () => 0.5), 2000);
  t.is(backoffDelay(20, 500, 30_000, () => 0.5), 15_000);
  t.is(backoffDelay(100, 500, 30_000, () => 0), 0);
});

test('command-line parsing of gateways and targets', (t) => {
  t.deepEqual(parseGatewayArg('gw1@10.77.0.1:7401'), { host: 'gw1', meshAddress: '10.77.0.1', routerPort: 7401 });
  t.deepEqual(parseGatewayArg('10.77.0.1'), { host: '10.77.0.1', meshAddress: '10.77.0.1', routerPort: 7400, anyName: true });
  t.deepEqual(parseGatewayArg('gw2@[fd00::1]:7400'), { host: 'gw2', meshAddress: 'fd00::1', routerPort: 7400 });
  t.deepEqual(parseHostPort('127.0.0.1:8080', null, '--target'), { host: '127.0.0.1', port: 8080 });
  t.throws(() => parseHostPort('127.0.0.1', null, '--target'), { message: /expected HOST:PORT/ });
  t.throws(() => parseGatewayArg('Bad Name@1.2.3.4'), { message: /not a host name/ });
  t.throws(() => parseGatewayArg('1.2.3.4:99999'), { message: /expected HOST:PORT/ });
});
