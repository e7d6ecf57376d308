/**
 * The auth matrix: every route, called with no token, a bad token, another
 * tenant's token, a tenant token on admin routes, and (for host routes) a
 * replayed or foreign signature. Routes are enumerated from the app itself,
 * so a new route cannot slip through untested.
 */
import test from 'ava';
import { signRequest } from '../../src/shared/crypto.js';
import { testApp, type TestApp } from './helpers.js';

async function world(): Promise<{ w: TestApp; acmeToken: string; globexToken: string }> {
  // The matrix makes hundreds of failed calls from one address: lift the limiter.
  const w = await testApp({ authFailuresPerMinute: 100_000 });
  for (const name of ['acme', 'globex']) await w.admin('POST', '/v1/tenants', { name });
  const tok = async (tenant: string) => (await w.admin('POST', `/v1/tenants/${tenant}/tokens`, { name: 'ci' })).json<{ token: string }>().token;
  return { w, acmeToken: await tok('acme'), globexToken: await tok('globex') };
}

const fill = (url: string, host = 'node1') => url.replace(':tenant', 'acme').replace(':name', host).replace(':workload', 'web');

test('every route has an explicit access rule and only health, OpenAPI and enrollment are public', async (t) => {
  const { w } = await world();
  const publicRoutes = w.app.netwall.routes.filter((r) => r.access === 'public').map((r) => `${r.method} ${r.url}`).sort();
  t.deepEqual(publicRoutes, ['GET /healthz', 'GET /openapi.json', 'POST /v1/enroll']);
  t.true(w.app.netwall.routes.length > 30);
  await w.close();
});

test('the read-only policy questions (explain, matrix, what-if) are in the matrix as tenant routes', async (t) => {
  const { w } = await world();
  const access = new Map(w.app.netwall.routes.map((r) => [`${r.method} ${r.url}`, r.access]));
  for (const r of [
    'POST /v1/tenants/:tenant/reachability/explain',
    'GET /v1/tenants/:tenant/reachability',
    'PUT /v1/tenants/:tenant/policies/:name/what-if',
    'DELETE /v1/tenants/:tenant/policies/:name/what-if',
  ]) {
    t.is(access.get(r), 'tenant', r);
  }
  await w.close();
});

test('no token and bad tokens are 401 on every non-public route', async (t) => {
  const { w } = await world();
  for (const r of w.app.netwall.routes.filter((x) => x.access !== 'public')) {
    const url = fill(r.url);
    const none = await w.app.inject({ method: r.method as 'GET', url });
    t.is(none.statusCode, 401, `${r.method} ${url} without token`);
    t.is(none.json<{ error: { code: string } }>().error.code, 'unauthorized');
    const bad = await w.as('nwt_not-a-real-token-at-all', r.method, url);
    t.is(bad.statusCode, 401, `${r.method} ${url} with bad token`);
  }
  await w.close();
});

test("tenant tokens: 403 on admin routes and on another tenant's routes, allowed on their own", async (t) => {
  const { w, acmeToken, globexToken } = await world();
  for (const r of w.app.netwall.routes) {
    const url = fill(r.url);
    if (r.access === 'admin') {
      const res = await w.as(acmeToken, r.method, url, r.method === 'GET' || r.method === 'DELETE' ? undefined : {});
      t.is(res.statusCode, 403, `${r.method} ${url} with a tenant token`);
    }
    if (r.access === 'tenant') {
      const res = await w.as(globexToken, r.method, url, r.method === 'GET' || r.method === 'DELETE' ? undefined : {});
      t.is(res.statusCode, 403, `${r.method} ${url} with globex's token`);
      t.regex(res.json<{ error: { message: string } }>().error.message, /scoped to tenant "globex"/);
    }
  }
  const own = await w.as(acmeToken, 'GET', '/v1/tenants/acme/workloads');
  t.is(own.statusCode, 200);
  const admin = await w.as(acmeToken, 'GET', '/v1/tenants');
  t.is(admin.statusCode, 403);
  await w.close();
});

test('host routes: bearer tokens are refused; a host may only use its own routes', async (t) => {
  const { w } = await world();
  const n1 = await w.enroll('node', 'node1');
  const n2 = await w.enroll('node', 'node2');
  for (const r of w.app.netwall.routes.filter((x) => ['node', 'gateway', 'host'].includes(x.access))) {
    const res = await w.admin(r.method, fill(r.url));
    t.is(res.statusCode, 401, `${r.method} ${r.url} with the admin token`);
  }
  const other = await n2.call('GET', '/v1/nodes/node1/desired?wait=0');
  t.is(other.statusCode, 403);
  const wrongKind = await n1.call('GET', '/v1/gateways/node1/desired?wait=0');
  t.is(wrongKind.statusCode, 403);
  const own = await n1.call('GET', '/v1/nodes/node1/desired?wait=0');
  t.is(own.statusCode, 200);
  await w.close();
});

test('host signatures: replayed, tampered, stale and foreign-key requests are 401', async (t) => {
  const { w } = await world();
  const n1 = await w.enroll('node', 'node1');
  const url = '/v1/nodes/node1/status';
  const body = JSON.stringify({ appliedVersion: 1, errors: [], drops: {} });
  const headers = { ...signRequest('node1', n1.keys.secretKey, 'POST', url, body), 'content-type': 'application/json' };
  t.is((await w.app.inject({ method: 'POST', url, headers, payload: body })).statusCode, 204);
  const replay = await w.app.inject({ method: 'POST', url, headers, payload: body });
  t.is(replay.statusCode, 401);
  t.regex(replay.body, /replayed/);

  const fresh = { ...signRequest('node1', n1.keys.secretKey, 'POST', url, body), 'content-type': 'application/json' };
  const tampered = await w.app.inject({ method: 'POST', url, headers: fresh, payload: body.replace('1', '9') });
  t.is(tampered.statusCode, 401);

  const stale = { ...signRequest('node1', n1.keys.secretKey, 'POST', url, body, Date.now() - 5 * 60_000), 'content-type': 'application/json' };
  t.regex((await w.app.inject({ method: 'POST', url, headers: stale, payload: body })).body, /outside the accepted window/);

  const mallory = await w.enroll('node', 'mallory');
  const forged = { ...signRequest('node1', mallory.keys.secretKey, 'POST', url, body), 'content-type': 'application/json' };
  t.is((await w.app.inject({ method: 'POST', url, headers: forged, payload: body })).statusCode, 401);
  await w.close();
});

test('repeated failed authentication is rate limited with Retry-After', async (t) => {
  const w = await testApp({ authFailuresPerMinute: 5 });
  for (let i = 0; i < 5; i++) t.is((await w.as('nwt_wrong-token-xxxxxxxx', 'GET', '/v1/tenants')).statusCode, 401);
  const limited = await w.as('nwt_wrong-token-xxxxxxxx', 'GET', '/v1/tenants');
  t.is(limited.statusCode, 429);
  t.truthy(limited.headers['retry-after']);
  t.is(limited.json<{ error: { code: string } }>().error.code, 'rate_limited');
  await w.close();
});
