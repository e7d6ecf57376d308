/**
 * Router clients that must be refused, over real loopback connections: each is
 * refused with its reason counted, no session is registered and no stream is
 * ever opened (open() keeps rejecting).
 */
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { generateSigningKeyPair } from '../../../src/shared/crypto.js';
import type { GatewayExposure, RouterCredential } from '../../../src/shared/desired.js';
import {
  answerHello,
  encodeFrame,
  HANDSHAKE_MAX_BYTES,
  parseResult,
  readFrame,
  RouterUnavailableError,
  signGrant,
  type AuthMessage,
  type RouterAuthFailure,
} from '../../../src/shared/router-protocol.js';
import { CLIENT, entry, exposureOf, startApp, startClient, startGateway, waitFor, type Entry, type TestGateway } from './helpers.js';

/** Dial the gateway, answer its hello with `answer(hello)`, and return the result frame. */
async function handshake(port: number, answer: (hello: unknown) => unknown): Promise<{ result: unknown; hello: unknown }> {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  try {
    await new Promise<void>((r, j) => sock.once('connect', r).once('error', j));
    const hello = await readFrame(sock, Date.now() + 3000);
    const a = answer(hello);
    sock.write(Buffer.isBuffer(a) ? a : encodeFrame(a));
    const result = await readFrame(sock, Date.now() + 3000);
    return { result, hello };
  } finally {
    sock.destroy();
  }
}

const honest = (e: { credential: RouterCredential; keys: { secretKey: string } }, gw = 'gw1') => (hello: unknown) =>
  answerHello(hello, e.credential, e.keys.secretKey, gw);

async function expectRefused(t: ExecutionContext, gw: TestGateway, exposure: GatewayExposure, reason: RouterAuthFailure, answer: (hello: unknown) => unknown) {
  const before = gw.server.stats().authFailures[reason];
  const { result } = await handshake(gw.port, answer);
  t.deepEqual(parseResult(result), { type: 'refused', v: 1, reason });
  const s = gw.server.stats();
  t.is(s.authFailures[reason], before + 1, `${reason} counted`);
  t.is(s.sessions, 0);
  t.is(s.streamsTotal, 0);
  await t.throwsAsync(gw.server.open(exposure, CLIENT), { instanceOf: RouterUnavailableError });
}

async function setup(t: ExecutionContext) {
  const good = entry('acme', 'web', 'web-1');
  const other = entry('globex', 'shop', 'shop-1');
  const acme = exposureOf('acme', 'web', [good]);
  const globex = exposureOf('globex', 'shop', [other]);
  const gw = await startGateway(t, 'gw1', [acme, globex, exposureOf('acme', 'internal', [], 'mesh')]);
  return { good, other, acme, globex, gw };
}

test('control: the honest client is welcomed', async (t) => {
  const { good, gw } = await setup(t);
  const { result } = await handshake(gw.port, honest(good));
  t.deepEqual(result, { type: 'welcome', v: 1 });
  t.is(gw.server.stats().sessionsTotal, 1);
});

test('wrong key: challenge signed by a key other than the grant’s', async (t) => {
  const { good, acme, gw } = await setup(t);
  const thief = generateSigningKeyPair();
  await expectRefused(t, gw, acme, 'bad-signature', (h) => answerHello(h, good.credential, thief.secretKey));
});

test('forged grant: signed by a key that is not the coordinator’s', async (t) => {
  const { acme, gw } = await setup(t);
  const fakeCoordinator = generateSigningKeyPair();
  const forged = entry('acme', 'web', 'web-1', { signer: fakeCoordinator.secretKey });
  // Even with its key listed, a grant the coordinator did not sign is refused.
  gw.server.update([exposureOf('acme', 'web', [forged])]);
  await expectRefused(t, gw, acme, 'bad-grant-signature', honest(forged));
});

test('tampered grant: JSON edited after signing (exposure and key swapped)', async (t) => {
  const { good, other, globex, gw } = await setup(t);
  // A client of acme rewrites its grant to claim globex/shop with a key globex lists.
  const grant = { ...good.grant, tenant: 'globex', exposure: 'shop', workload: 'shop-1', publicKey: other.keys.publicKey };
  const tampered: RouterCredential = { grant: JSON.stringify(grant), signature: good.credential.signature };
  await expectRefused(t, gw, globex, 'bad-grant-signature', (h) => answerHello(h, tampered, other.keys.secretKey));
  // Whitespace alone breaks the signature too: the exact text is what is signed.
  const spaced: RouterCredential = { grant: `${good.credential.grant} `, signature: good.credential.signature };
  await expectRefused(t, gw, globex, 'bad-grant-signature', (h) => answerHello(h, spaced, good.keys.secretKey));
});

test('expired and not-yet-valid grants', async (t) => {
  const { acme, gw } = await setup(t);
  const old = entry('acme', 'web', 'web-1', { issuedAt: Date.now() - 7200_000, ttlMs: 3600_000 });
  const future = entry('acme', 'web', 'web-1', { issuedAt: Date.now() + 3600_000 });
  gw.server.update([exposureOf('acme', 'web', [old, future])]);
  await expectRefused(t, gw, acme, 'expired', honest(old));
  await expectRefused(t, gw, acme, 'not-yet-valid', honest(future));
});

test('replay: a recorded valid answer does not verify against a new challenge', async (t) => {
  const { good, acme, gw } = await setup(t);
  // Record the honest answer to one connection's hello — without letting it finish.
  let recorded: AuthMessage | null = null;
  const sock = net.connect(gw.port, '127.0.0.1');
  sock.on('error', () => {});
  const hello = await readFrame(sock, Date.now() + 3000);
  recorded = answerHello(hello, good.credential, good.keys.secretKey, 'gw1');
  sock.destroy();
  await waitFor(() => gw.server.stats().handshakesPending === 0);
  // Replay it on a fresh connection: different challenge, refused.
  await expectRefused(t, gw, acme, 'bad-signature', () => recorded);
  // And a second replay of the same bytes, same result.
  await expectRefused(t, gw, acme, 'bad-signature', () => recorded);
  // A signature made for another gateway (a relay) does not verify here either.
  await expectRefused(t, gw, acme, 'bad-signature', (h) => {
    const hello2 = { ...(h as object), gateway: 'gw2' };
    return answerHello(hello2, good.credential, good.keys.secretKey);
  });
});

test('a client of tenant A claiming tenant B’s exposure', async (t) => {
  const { good, globex, gw } = await setup(t);
  // acme's coordinator-signed grant names acme/web; it cannot serve globex/shop even with globex listing its key.
  gw.server.update([exposureOf('acme', 'web', [good]), { ...globex, routerClients: [...globex.routerClients, { workload: 'web-1', node: 'node1', publicKey: good.keys.publicKey }] }]);
  const { result } = await handshake(gw.port, honest(good));
  t.deepEqual(result, { type: 'welcome', v: 1 });
  t.deepEqual(gw.server.sessions().map((s) => `${s.tenant}/${s.exposure}`), ['acme/web']);
  await t.throwsAsync(gw.server.open(globex, CLIENT), { instanceOf: RouterUnavailableError });

  // A grant signed for acme but naming globex's exposure (a coordinator mistake) is still bound to acme's list.
  const g2 = entry('acme', 'shop', 'web-1');
  await expectRefused(t, gw, globex, 'unknown-exposure', honest(g2));
  // And a listener bound to acme's mesh address refuses globex grants outright.
  const acmeOnly = await startGateway(t, 'gw1', [globex], { tenant: 'acme' });
  const shop = entry('globex', 'shop', 'shop-1');
  acmeOnly.server.update([exposureOf('globex', 'shop', [shop])]);
  await expectRefused(t, acmeOnly, globex, 'wrong-tenant', honest(shop));
});

test('a key not in routerClients, a workload mismatch, and a mesh-mode exposure', async (t) => {
  const { acme, gw } = await setup(t);
  const stranger = entry('acme', 'web', 'web-9'); // coordinator-signed, but not listed on this gateway
  await expectRefused(t, gw, acme, 'key-not-listed', honest(stranger));
  // Listed key, but the grant names another workload than the listing.
  const moved: Entry = entry('acme', 'web', 'web-2');
  gw.server.update([{ ...acme, routerClients: [...acme.routerClients, { workload: 'web-3', node: 'node1', publicKey: moved.keys.publicKey }] }]);
  await expectRefused(t, gw, acme, 'key-not-listed', honest(moved));
  const mesh = entry('acme', 'internal', 'api-1');
  gw.server.update([acme, exposureOf('acme', 'internal', [mesh], 'mesh')]);
  await expectRefused(t, gw, acme, 'not-tunnel', honest(mesh));
});

test('a listed credential used from another address than its workload\'s is refused; a live session is revoked when its workload\'s address changes', async (t) => {
  const { good, acme, gw } = await setup(t);
  // The same key and grant, but the exposure says web-1 lives at 10.0.0.1 (the dial comes from 127.0.0.1).
  const moved = { ...acme, targets: acme.targets.map((x) => ({ ...x, address: '10.0.0.1' })) };
  gw.server.update([moved]);
  await expectRefused(t, gw, moved, 'wrong-source', honest(good));
  // Back at its address: a real client gets a session; moving the workload's address revokes it at once.
  gw.server.update([acme]);
  const app = await startApp(t, 'A');
  startClient(t, good, [gw], app.target);
  await waitFor(() => gw.server.liveCount('acme', 'web') === 1, 5000, 'session');
  const revoked = gw.server.stats().revoked;
  gw.server.update([moved]);
  t.is(gw.server.liveCount('acme', 'web'), 0);
  t.is(gw.server.stats().revoked, revoked + 1);
  await waitFor(() => gw.server.stats().authFailures['wrong-source'] >= 2, 5000, 'the re-dial refused too');
  await t.throwsAsync(gw.server.open(moved, CLIENT), { instanceOf: RouterUnavailableError });
});

test('malformed, oversized and silent handshakes', async (t) => {
  const { good, acme, gw } = await setup(t);
  await expectRefused(t, gw, acme, 'malformed', () => ({ type: 'auth', v: 1 }));
  await expectRefused(t, gw, acme, 'malformed', () => Buffer.from('\u0000\u0000\u0000\u0004nope'));
  const big = Buffer.alloc(4);
  big.writeUInt32BE(HANDSHAKE_MAX_BYTES + 1);
  await expectRefused(t, gw, acme, 'too-large', () => big);
  const bad = { grant: good.credential.grant, signature: 'AAAA' };
  await expectRefused(t, gw, acme, 'bad-grant-signature', (h) => ({ ...answerHello(h, good.credential, good.keys.secretKey), credential: bad }));
  const unsigned = signGrant({ ...good.grant }, generateSigningKeyPair().secretKey);
  await expectRefused(t, gw, acme, 'bad-grant-signature', (h) => answerHello(h, unsigned, good.keys.secretKey));
});

test('a client that says nothing is cut at the handshake timeout', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const exp = exposureOf('acme', 'web', [e]);
  const gw = await startGateway(t, 'gw1', [exp], { handshakeTimeoutMs: 200 });
  const sock = net.connect(gw.port, '127.0.0.1');
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  sock.resume();
  await closed;
  t.is(gw.server.stats().authFailures.timeout, 1);
  t.is(gw.server.stats().handshakesPending, 0);
});

test('a real RouterClient with a bad credential keeps retrying, refused each time, with the reason as lastError', async (t) => {
  const { acme, gw } = await setup(t);
  const stranger = entry('acme', 'web', 'web-9');
  const app = await startApp(t, 'A');
  const client = startClient(t, stranger, [gw], app.target);
  await waitFor(() => gw.server.stats().authFailures['key-not-listed'] >= 3, 5000, 'three refusals');
  t.regex(client.status()[0]!.lastError ?? '', /refused by the gateway: key-not-listed/);
  t.false(client.status()[0]!.connected);
  t.is(gw.server.stats().streamsTotal, 0);
  await t.throwsAsync(gw.server.open(acme, CLIENT), { instanceOf: RouterUnavailableError });
});

test('the client refuses a gateway that answers with another name', async (t) => {
  const e = entry('acme', 'web', 'web-1');
  const gw = await startGateway(t, 'gw-evil', [exposureOf('acme', 'web', [e])]);
  const app = await startApp(t, 'A');
  const client = startClient(t, e, [{ ...gw, target: { ...gw.target, host: 'gw1' } }], app.target);
  await waitFor(() => client.status()[0]!.lastError !== null, 5000, 'an error');
  t.regex(client.status()[0]!.lastError!, /dialled gateway "gw1" but "gw-evil" answered/);
  t.is(gw.server.stats().sessionsTotal, 0);
});
