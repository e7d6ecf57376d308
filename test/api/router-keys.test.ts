import test from 'ava';
import { generateSigningKeyPair } from '../../src/shared/crypto.js';
import type { DesiredState, RouterCredential, SignedDocument } from '../../src/shared/desired.js';
import { verifyGrant } from '../../src/shared/router-protocol.js';
import { testApp } from './helpers.js';

const doc = (body: string): DesiredState => JSON.parse((JSON.parse(body) as SignedDocument).document) as DesiredState;

async function world() {
  const w = await testApp();
  await w.admin('POST', '/v1/tenants', { name: 'acme' });
  await w.admin('POST', '/v1/tenants', { name: 'globex' });
  const n1 = await w.enroll('node', 'node1', { endpoint: '192.0.2.11' });
  const n2 = await w.enroll('node', 'node2', { endpoint: '192.0.2.12' });
  const g1 = await w.enroll('gateway', 'gateway1', { endpoint: '192.0.2.21' });
  await w.admin('POST', '/v1/tenants/acme/workloads', { name: 'web', node: 'node1', labels: { app: 'web' } });
  await w.admin('POST', '/v1/tenants/acme/workloads', { name: 'db', node: 'node1', labels: { app: 'db' } });
  const expose = (tenant: string, name: string, mode: string, host: string) =>
    w.admin('PUT', `/v1/tenants/${tenant}/exposures/${name}`, { protocol: 'http', hostnames: [host], mode, gateways: ['gateway1'], target: { selector: { app: 'web' }, port: 8080 } });
  t_ok(await expose('acme', 'web', 'tunnel', 'web.acme.test'));
  t_ok(await expose('acme', 'web-mesh', 'mesh', 'mesh.acme.test'));
  return { w, n1, n2, g1 };
}
function t_ok(r: { statusCode: number; body: string }): void {
  if (r.statusCode >= 300) throw new Error(r.body);
}

test('a node registers its entry point router key and gets a coordinator-signed grant; the gateway learns the key', async (t) => {
  const { w, n1, g1 } = await world();
  t.teardown(() => w.close());
  const key = generateSigningKeyPair();
  const r = await n1.call('PUT', '/v1/nodes/node1/router-keys/acme/web/web', { publicKey: key.publicKey });
  t.is(r.statusCode, 200, r.body);
  const credential = r.json<{ credential: RouterCredential }>().credential;
  const grant = verifyGrant(credential, w.signingKey.publicKey);
  t.like(grant, { tenant: 'acme', exposure: 'web', workload: 'web', node: 'node1', publicKey: key.publicKey });
  t.true(Date.parse(grant.expiresAt) - Date.parse(grant.issuedAt) >= 29 * 86_400_000);

  const nodeDoc = doc((await n1.call('GET', '/v1/nodes/node1/desired?after=0&wait=0')).body);
  const ep = nodeDoc.tenants[0]!.entryPoints.find((e) => e.exposure === 'web')!;
  t.is(ep.routerKey, key.publicKey);
  t.deepEqual(ep.credential, credential);
  const gwDoc = doc((await g1.call('GET', '/v1/gateways/gateway1/desired?after=0&wait=0')).body);
  t.deepEqual(gwDoc.exposures.find((e) => e.name === 'web')!.routerClients, [{ workload: 'web', node: 'node1', publicKey: key.publicKey }]);
  t.deepEqual(gwDoc.exposures.find((e) => e.name === 'web-mesh')!.routerClients, []);
});

test('router keys: only the entry point node, only tunnel mode, only a selected workload, one key per entry point', async (t) => {
  const { w, n1, n2 } = await world();
  t.teardown(() => w.close());
  const key = generateSigningKeyPair().publicKey;
  t.is((await n2.call('PUT', '/v1/nodes/node2/router-keys/acme/web/web', { publicKey: key })).statusCode, 403);
  t.is((await n1.call('PUT', '/v1/nodes/node1/router-keys/acme/web-mesh/web', { publicKey: key })).statusCode, 409);
  const notSelected = await n1.call('PUT', '/v1/nodes/node1/router-keys/acme/web/db', { publicKey: key });
  t.is(notSelected.statusCode, 409);
  t.regex(notSelected.body, /not an entry point/);
  t.is((await n1.call('PUT', '/v1/nodes/node1/router-keys/globex/web/web', { publicKey: key })).statusCode, 404);
  t.is((await n1.call('PUT', '/v1/nodes/node1/router-keys/acme/web/web', { publicKey: 'nope' })).statusCode, 400);
  // Deleting the workload drops its key from the gateway's list.
  t.is((await n1.call('PUT', '/v1/nodes/node1/router-keys/acme/web/web', { publicKey: key })).statusCode, 200);
  t.is((await w.admin('DELETE', '/v1/tenants/acme/workloads/web')).statusCode, 204);
  const count = w.app.netwall.store.db.prepare('SELECT COUNT(*) FROM router_keys').pluck().get();
  t.is(count, 0);
});
