import test from 'ava';
import { generateWireguardKeyPair, verifyDocument } from '../../src/shared/crypto.js';
import type { DesiredState, SignedDocument } from '../../src/shared/desired.js';
import { testApp } from './helpers.js';

const doc = (body: string): DesiredState => JSON.parse((JSON.parse(body) as SignedDocument).document) as DesiredState;

test('enrollment tokens are single use, bound to a name, and expire', async (t) => {
  let clock = Date.parse('2026-11-22T12:00:00Z');
  const w = await testApp({ now: () => clock });
  const mk = async (name: string, ttlSeconds = 600) => (await w.admin('POST', '/v1/enrollment-tokens', { kind: 'node', name, ttlSeconds })).json<{ token: string }>().token;
  const key = () => generateWireguardKeyPair().publicKey; // any 32-byte base64 key will do as identity here
  const tok = await mk('node1');
  t.true(tok.length >= 40); // >= 128 bits after the prefix
  t.is((await w.app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: tok, name: 'node9', identityKey: key() } })).statusCode, 403);
  const ok = await w.app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: tok, name: 'node1', identityKey: key() } });
  t.is(ok.statusCode, 201);
  t.is(ok.json<{ coordinatorKey: string }>().coordinatorKey, w.signingKey.publicKey);
  t.is((await w.app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: tok, name: 'node1', identityKey: key() } })).statusCode, 401);
  const late = await mk('node2', 60);
  clock += 61_000;
  const expired = await w.app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: late, name: 'node2', identityKey: key() } });
  t.is(expired.statusCode, 401);
  t.regex(expired.body, /expired or already used/);
  await w.close();
});

test('enrollment is rate limited per client', async (t) => {
  const w = await testApp({ enrollmentsPerMinute: 3 });
  const codes: number[] = [];
  for (let i = 0; i < 5; i++) codes.push((await w.app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: 'x'.repeat(40), name: 'n', identityKey: generateWireguardKeyPair().publicKey } })).statusCode);
  t.deepEqual(codes, [401, 401, 401, 429, 429]);
  await w.close();
});

test('desired state: signed, long-polled, and bumped only for the hosts a change affects', async (t) => {
  const w = await testApp();
  await w.admin('POST', '/v1/tenants', { name: 'acme' });
  const n1 = await w.enroll('node', 'node1', { endpoint: '192.0.2.11' });
  const n2 = await w.enroll('node', 'node2', { endpoint: '192.0.2.12:51900' });
  const n3 = await w.enroll('node', 'node3');
  await w.enroll('gateway', 'gateway1', { endpoint: '192.0.2.21' });

  const first = await n1.call('GET', '/v1/nodes/node1/desired?after=0&wait=0');
  t.is(first.statusCode, 200);
  t.true(verifyDocument(first.json<SignedDocument>(), w.signingKey.publicKey));
  const v0 = doc(first.body).version;
  t.true(v0 > 0);
  t.deepEqual(doc(first.body).tenants, []);

  // Nothing newer: an empty answer after the wait.
  const started = Date.now();
  const idle = await n1.call('GET', `/v1/nodes/node1/desired?after=${v0}&wait=1`);
  t.is(idle.statusCode, 204);
  t.true(Date.now() - started >= 900);

  // A parked poll wakes when the node gets a workload.
  const parked = n1.call('GET', `/v1/nodes/node1/desired?after=${v0}&wait=20`);
  await new Promise((r) => setTimeout(r, 100));
  const wl = await w.admin('POST', '/v1/tenants/acme/workloads', { name: 'web', node: 'node1', labels: { app: 'web' } });
  t.is(wl.statusCode, 201);
  const woke = await parked;
  t.is(woke.statusCode, 200);
  const d1 = doc(woke.body);
  t.is(d1.tenants[0]!.workloads[0]!.address, wl.json<{ address: string }>().address);
  t.is(d1.tenants[0]!.publicKey, null);

  // Register WireGuard keys: every member of the tenant is bumped and sees the peer.
  await w.admin('POST', '/v1/tenants/acme/workloads', { name: 'db', node: 'node2', labels: { app: 'db' } });
  const k1 = generateWireguardKeyPair();
  const k2 = generateWireguardKeyPair();
  t.is((await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1.publicKey })).statusCode, 200);
  t.is((await n2.call('PUT', '/v1/nodes/node2/tenants/acme/key', { publicKey: k2.publicKey })).statusCode, 200);
  const d2 = doc((await n2.call('GET', '/v1/nodes/node2/desired?after=0&wait=0')).body);
  t.deepEqual(d2.tenants[0]!.peers.map((p) => [p.host, p.publicKey, p.endpoint]), [
    ['node1', k1.publicKey, '192.0.2.11:51820'],
    ['node2', k2.publicKey, '192.0.2.12:51900'], // itself: the list is shared, each host skips its own entry
  ]);

  // A workload no policy selects bumps only its own node; node3 (not a member) never moves.
  const versions = async () => {
    const out: Record<string, number> = {};
    for (const n of ['node1', 'node2', 'node3']) out[n] = (await w.admin('GET', `/v1/nodes/${n}`)).json<{ version: number }>().version;
    return out;
  };
  const before = await versions();
  await w.admin('POST', '/v1/tenants/acme/workloads', { name: 'batch', node: 'node2', labels: { app: 'batch' } });
  const after = await versions();
  t.is(after.node1, before.node1);
  t.true(after.node2! > before.node2!);
  t.is(after.node3, before.node3);

  // A policy touches all members; then a matching workload bumps node1 (it enforces web→db) too.
  await w.admin('PUT', '/v1/tenants/acme/policies/web-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }] });
  const b2 = await versions();
  await w.admin('POST', '/v1/tenants/acme/workloads', { name: 'db2', node: 'node2', labels: { app: 'db' } });
  const a2 = await versions();
  t.true(a2.node1! > b2.node1!);
  t.is(a2.node3, b2.node3);

  // Rotation, in two steps. 1: the new key is node1's next key — its own document names it, the peers' do not.
  const k1b = generateWireguardKeyPair();
  const desired = async (c: typeof n1, name: string) => doc((await c.call('GET', `/v1/nodes/${name}/desired?after=0&wait=0`)).body);
  const b3 = await versions();
  t.is((await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1b.publicKey, inUse: false })).statusCode, 200);
  t.is((await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1b.publicKey, inUse: false })).statusCode, 200, 'again (a stale tick): no change');
  const a3 = await versions();
  t.true(a3.node1! > b3.node1!, 'node1 gets a document naming its next key');
  t.is(a3.node2, b3.node2, "node2's document does not change yet");
  const own = (await desired(n1, 'node1')).tenants[0]!;
  t.is(own.publicKey, k1b.publicKey, "node1's own entry names the next key");
  t.is(own.peerKey, k1.publicKey, 'and says its peers still have the current one');
  t.is((await desired(n2, 'node2')).tenants[0]!.peers.find((p) => p.host === 'node1')!.publicKey, k1.publicKey);
  const view = (await w.admin('GET', '/v1/nodes/node1')).json<{ tenants: { publicKey: string; nextPublicKey: string | null }[] }>().tenants[0]!;
  t.deepEqual([view.publicKey, view.nextPublicKey], [k1.publicKey, k1b.publicKey], 'the node view shows the pending rotation');
  // Another member cannot take a key that waits as node1's next one.
  t.is((await n2.call('PUT', '/v1/nodes/node2/tenants/acme/key', { publicKey: k1b.publicKey })).statusCode, 409);
  t.is((await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1b.publicKey, inUse: 'yes' })).statusCode, 400, 'inUse: a boolean');
  // 2: node1 registers the key in use once it uses it — now every member gets it.
  t.is((await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1b.publicKey, inUse: true })).statusCode, 200);
  const a4 = await versions();
  t.true(a4.node2! > a3.node2!, "node2's document changes");
  const d2b = await desired(n2, 'node2');
  t.is(d2b.tenants[0]!.peers.find((p) => p.host === 'node1')!.publicKey, k1b.publicKey);
  const own2 = (await desired(n1, 'node1')).tenants[0]!;
  t.deepEqual([own2.publicKey, own2.peerKey], [k1b.publicKey, k1b.publicKey]);
  // A next key dropped: registering the current key again takes it back (node1's document only).
  const k1c = generateWireguardKeyPair();
  await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1c.publicKey, inUse: false });
  t.is((await desired(n1, 'node1')).tenants[0]!.publicKey, k1c.publicKey);
  const b5 = await versions();
  await n1.call('PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: k1b.publicKey, inUse: true });
  const a5 = await versions();
  t.deepEqual([a5.node1! > b5.node1!, a5.node2 === b5.node2], [true, true]);
  t.deepEqual([(await desired(n1, 'node1')).tenants[0]!.publicKey, (await desired(n1, 'node1')).tenants[0]!.peerKey], [k1b.publicKey, k1b.publicKey]);
  // Not a member: 404.
  t.is((await n3.call('PUT', '/v1/nodes/node3/tenants/acme/key', { publicKey: k1.publicKey })).statusCode, 404);
  await w.close();
});

test('status reports are recorded and shown on the host', async (t) => {
  const w = await testApp();
  const n1 = await w.enroll('node', 'node1');
  t.is((await n1.call('POST', '/v1/nodes/node1/status', { appliedVersion: 3, errors: ['wg: boom'], drops: { spoof: 2 } })).statusCode, 204);
  const h = (await w.admin('GET', '/v1/nodes/node1')).json<{ appliedVersion: number; status: string; drops: Record<string, number>; errors: string[] }>();
  t.is(h.appliedVersion, 3);
  t.is(h.status, 'degraded');
  t.deepEqual(h.drops, { spoof: 2 });
  t.deepEqual(h.errors, ['wg: boom']);
  await w.close();
});

test('node-side workload calls (the CNI path) are idempotent and confined to the node', async (t) => {
  const w = await testApp();
  await w.admin('POST', '/v1/tenants', { name: 'acme' });
  const n1 = await w.enroll('node', 'node1');
  const n2 = await w.enroll('node', 'node2');
  const a = await n1.call('POST', '/v1/nodes/node1/workloads', { tenant: 'acme', name: 'c-1', labels: { app: 'web' } });
  t.is(a.statusCode, 201);
  const again = await n1.call('POST', '/v1/nodes/node1/workloads', { tenant: 'acme', name: 'c-1', labels: { app: 'web' } });
  t.is(again.statusCode, 200);
  t.is(again.json<{ address: string }>().address, a.json<{ address: string }>().address);
  t.is((await n2.call('POST', '/v1/nodes/node2/workloads', { tenant: 'acme', name: 'c-1' })).statusCode, 409);
  t.is((await n2.call('DELETE', '/v1/nodes/node2/workloads/acme/c-1')).statusCode, 403);
  t.is((await n1.call('DELETE', '/v1/nodes/node1/workloads/acme/c-1')).statusCode, 204);
  t.is((await n1.call('DELETE', '/v1/nodes/node1/workloads/acme/c-1')).statusCode, 204);
  await w.close();
});
