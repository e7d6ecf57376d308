/**
 * The host side of enrollment and desired state, against a real coordinator
 * listening on loopback: identity files, the signed on-disk cache, and a
 * watcher that keeps going when the coordinator is down.
 */
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { buildApp } from '../../src/coordinator/app.js';
import { generateSigningKeyPair, generateToken } from '../../src/shared/crypto.js';
import type { DesiredState } from '../../src/shared/desired.js';
import { HostClient } from '../../src/shared/host-client.js';
import { enrollHost, loadCachedDocument, loadIdentity } from '../../src/shared/host-state.js';
import { DesiredStateWatcher } from '../../src/shared/watch.js';

async function coordinator() {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-sync-'));
  const adminToken = generateToken('admin');
  const app = await buildApp({ db: join(dir, 'db'), adminToken, signingKey: generateSigningKeyPair() });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const admin = async (method: string, path: string, body?: unknown) =>
    (await app.inject({ method: method as 'POST', url: path, headers: { authorization: `Bearer ${adminToken}` }, ...(body ? { payload: body as object } : {}) })).json<Record<string, string>>();
  return { app, url, admin, dir };
}

test('enrollment writes a 0600 identity in a 0700 state dir; enrolling again with the same name is a no-op', async (t) => {
  const c = await coordinator();
  t.teardown(() => c.app.close());
  const { token } = await c.admin('POST', '/v1/enrollment-tokens', { kind: 'node', name: 'node1' });
  const stateDir = join(mkdtempSync(join(tmpdir(), 'netwall-state-')), 'agent');
  const id = await enrollHost(stateDir, 'node', { coordinatorUrl: c.url, token: token!, name: 'node1', endpoint: '192.0.2.11' });
  t.is(statSync(stateDir).mode & 0o777, 0o700);
  t.is(statSync(join(stateDir, 'identity.json')).mode & 0o777, 0o600);
  t.is(loadIdentity(stateDir).publicKey, id.publicKey);
  const again = await enrollHost(stateDir, 'node', { coordinatorUrl: c.url, token: 'unused-because-already-enrolled', name: 'node1' });
  t.is(again.publicKey, id.publicKey);
  await t.throwsAsync(enrollHost(stateDir, 'node', { coordinatorUrl: c.url, token: token!, name: 'node2' }), { message: /already holds the identity of "node1"/ });
  // The coordinator has only the public key.
  t.false(readFileSync(join(c.dir, 'db'), 'latin1').includes(id.secretKey));
});

test('a gateway token cannot enroll a node, and is not used up trying', async (t) => {
  const c = await coordinator();
  t.teardown(() => c.app.close());
  const { token } = await c.admin('POST', '/v1/enrollment-tokens', { kind: 'gateway', name: 'gw1' });
  await t.throwsAsync(enrollHost(join(mkdtempSync(join(tmpdir(), 'netwall-state-')), 'x'), 'node', { coordinatorUrl: c.url, token: token!, name: 'gw1' }), {
    message: /for a gateway, not a node/,
  });
  t.truthy(await enrollHost(join(mkdtempSync(join(tmpdir(), 'netwall-state-')), 'x'), 'gateway', { coordinatorUrl: c.url, token: token!, name: 'gw1' }));
});

test('the watcher caches each verified document, and starts from the cache when the coordinator is down', async (t) => {
  const c = await coordinator();
  const { token } = await c.admin('POST', '/v1/enrollment-tokens', { kind: 'node', name: 'node1' });
  const stateDir = join(mkdtempSync(join(tmpdir(), 'netwall-state-')), 'agent');
  const id = await enrollHost(stateDir, 'node', { coordinatorUrl: c.url, token: token!, name: 'node1' });
  await c.admin('POST', '/v1/tenants', { name: 'acme' });
  await c.admin('POST', '/v1/tenants/acme/workloads', { name: 'web', node: 'node1', labels: { app: 'web' } });

  const seen: DesiredState[] = [];
  const w = new DesiredStateWatcher({ client: new HostClient(id), stateDir, coordinatorKey: id.coordinatorKey, log: () => {}, onDocument: async (d) => void seen.push(d), waitSeconds: 1 });
  const running = w.run();
  while (!seen.some((d) => d.tenants.length === 1)) await new Promise((r) => setTimeout(r, 50));
  w.stop();
  await running;
  t.is(statSync(join(stateDir, 'desired.json')).mode & 0o777, 0o600);
  const cached = loadCachedDocument(stateDir, id.coordinatorKey)!;
  t.is(cached.state.tenants[0]!.workloads[0]!.name, 'web');

  // Coordinator gone: a new watcher applies the cached document at once and keeps retrying.
  await c.app.close();
  const logs: string[] = [];
  const offline: DesiredState[] = [];
  const w2 = new DesiredStateWatcher({ client: new HostClient(id), stateDir, coordinatorKey: id.coordinatorKey, log: (l) => logs.push(l), onDocument: async (d) => void offline.push(d), minBackoffMs: 10, maxBackoffMs: 50 });
  const fromCache = await w2.startFromCache();
  t.is(fromCache?.version, cached.state.version);
  const loop = w2.run();
  await new Promise((r) => setTimeout(r, 300));
  w2.stop();
  await loop;
  t.true(w2.offline);
  t.is(offline.length, 1);
  t.true(logs.some((l) => l.includes('keeping version')));
});

test('a cached document not signed by our coordinator is ignored', async (t) => {
  const c = await coordinator();
  t.teardown(() => c.app.close());
  const { token } = await c.admin('POST', '/v1/enrollment-tokens', { kind: 'node', name: 'node1' });
  const stateDir = join(mkdtempSync(join(tmpdir(), 'netwall-state-')), 'agent');
  const id = await enrollHost(stateDir, 'node', { coordinatorUrl: c.url, token: token!, name: 'node1' });
  const forged = { document: JSON.stringify({ schema: 1, kind: 'node', host: 'node1', version: 99, tenants: [] }), signature: Buffer.alloc(64).toString('base64') };
  writeFileSync(join(stateDir, 'desired.json'), JSON.stringify(forged), { mode: 0o600 });
  const logs: string[] = [];
  const applied: DesiredState[] = [];
  const w = new DesiredStateWatcher({ client: new HostClient(id), stateDir, coordinatorKey: id.coordinatorKey, log: (l) => logs.push(l), onDocument: async (d) => void applied.push(d) });
  t.is(await w.startFromCache(), null);
  t.deepEqual(applied, []);
  t.true(logs.some((l) => /bad signature/.test(l)));
});
