/**
 * The reachability routes: explain a flow, the matrix, what-if a policy.
 * Read-only all of them: every table (audit log included) and every host's
 * desired version stay as they were. A tenant token sees only its tenant.
 */
import test, { type ExecutionContext } from 'ava';
import type Database from 'better-sqlite3';
import { isDeepStrictEqual } from 'node:util';
import type { Explanation, ReachabilityMatrix, WhatIf } from '../../src/coordinator/reachability.js';
import { enrollHost, injectCaller, newApp, snapshotTables, withReadOnly, type Call, type Reply, type TestApp } from '../fixtures/harness.js';

interface World {
  t: TestApp;
  acme: Call;
  globex: Call;
  anon: Call;
  addr: Record<string, string>;
}

async function world(prefix: string): Promise<World> {
  const t = await newApp(prefix, { coordinatorAddresses: ['172.16.0.1'] });
  const ok = async <T>(r: Promise<Reply<T>>, what: string): Promise<Reply<T>> => {
    const res = await r;
    if (res.status >= 300) throw new Error(`${what}: ${res.status} ${res.text}`);
    return res;
  };
  for (const name of ['acme', 'globex']) await ok(t.admin('POST', '/v1/tenants', { name }), name);
  await enrollHost(t.admin, 'n1', 'node', { endpoint: '192.0.2.11:51820', mgmtAddress: '172.16.0.11' });
  await enrollHost(t.admin, 'n2', 'node', { endpoint: '192.0.2.12:51820' });
  await enrollHost(t.admin, 'gw1', 'gateway', { endpoint: '192.0.2.21:51820', publicAddress: '198.51.100.21' });
  const addr: Record<string, string> = {};
  for (const [tenant, name, node, labels] of [
    ['acme', 'web', 'n1', { app: 'web' }],
    ['acme', 'db', 'n2', { app: 'db' }],
    ['acme', 'batch', 'n2', { app: 'batch' }],
    ['globex', 'gdb', 'n1', { app: 'db' }],
  ] as const) {
    addr[name] = (await ok(t.admin<{ address: string }>('POST', `/v1/tenants/${tenant}/workloads`, { name, node, labels }), name)).body.address;
  }
  await ok(t.admin('PUT', '/v1/tenants/acme/policies/web-to-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }, { protocol: 'icmp' }] }), 'policy');
  await ok(t.admin('PUT', '/v1/tenants/acme/policies/any-to-db', { from: {}, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: ['5432-5433'] }] }), 'policy 2');
  await ok(t.admin('PUT', '/v1/tenants/globex/policies/all', { from: {}, to: {}, allow: [{ protocol: 'tcp' }] }), 'globex policy');
  await ok(
    t.admin('PUT', '/v1/tenants/acme/exposures/site', { protocol: 'http', hostnames: ['web.acme.test'], mode: 'tunnel', gateways: ['gw1'], target: { selector: { app: 'web' }, port: 8080 } }),
    'exposure',
  );
  await ok(t.admin('PUT', '/v1/tenants/acme/egress/updates', { gateways: ['gw1'], destinations: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: [443] }] }), 'egress');
  const gw1 = await ok(t.admin<{ tenants: { tenant: string; address: string }[] }>('GET', '/v1/gateways/gw1'), 'gw1');
  addr.gw1 = gw1.body.tenants.find((m) => m.tenant === 'acme')!.address;
  const n2 = await ok(t.admin<{ tenants: { tenant: string; address: string }[] }>('GET', '/v1/nodes/n2'), 'n2');
  addr.n2 = n2.body.tenants.find((m) => m.tenant === 'acme')!.address;
  const token = async (tenant: string) => (await ok(t.admin<{ token: string }>('POST', `/v1/tenants/${tenant}/tokens`, { name: 'ci' }), `${tenant} token`)).body.token;
  return { t, acme: injectCaller(t.app, await token('acme')), globex: injectCaller(t.app, await token('globex')), anon: injectCaller(t.app, ''), addr };
}

const EXPLAIN = '/v1/tenants/acme/reachability/explain';

test('explain: policies, cross-tenant, hosts, router clients and egress, as admin and as the tenant', async (t) => {
  const w = await world('explain');
  t.teardown(() => w.t.close());
  const ask = async (body: Record<string, unknown>, as: Call = w.acme) => {
    const r = await as<Explanation>('POST', EXPLAIN, body);
    t.is(r.status, 200, r.text);
    return r.body;
  };
  const allowed = await ask({ from: 'web', to: 'db', protocol: 'tcp', port: 5432 });
  t.like(allowed, { allowed: true, reason: null, to: { workload: 'db', address: w.addr.db }, protocol: 'tcp', port: 5432, ports: [{ from: 5432, to: 5433 }] });
  t.deepEqual(allowed.rules.map((r) => r.name), ['any-to-db', 'web-to-db']);
  t.regex(allowed.verdict, /^tcp port 5432 from web to db is allowed by policies "any-to-db" and "web-to-db"$/);
  t.deepEqual(await ask({ from: 'web', to: 'db', protocol: 'tcp', port: 5432 }, w.t.admin), allowed);

  const denied = await ask({ from: 'db', to: 'batch', protocol: 'tcp', port: 80 });
  t.like(denied, { allowed: false, reason: 'policy', rules: [], ports: [] });
  // web is the entry point of the tunnel-mode exposure "site": nothing may open a connection to it.
  t.like(await ask({ from: 'db', to: 'web', protocol: 'tcp', port: 8080 }), { allowed: false, reason: 'tunnel_entry' });
  t.is((await ask({ from: 'web', to: 'db', protocol: 'icmp' })).allowed, true);
  t.false('ports' in (await ask({ from: 'web', to: 'db', protocol: 'icmp' })));
  t.like(await ask({ from: 'web', to: w.addr.gdb!, protocol: 'tcp', port: 5432 }), { allowed: false, reason: 'cross_tenant' });
  t.like(await ask({ from: 'web', to: w.addr.n2!, protocol: 'tcp', port: 22 }), { allowed: false, reason: 'to_host' });
  const endpoint = await ask({ from: 'db', to: '192.0.2.11', protocol: 'tcp', port: 22 });
  t.like(endpoint, { allowed: false, reason: 'to_host' });
  t.regex(endpoint.verdict, /underlay endpoint of node n1/);
  t.like(await ask({ from: 'web', to: '172.16.0.11', protocol: 'tcp', port: 22 }), { allowed: false, reason: 'to_host' });
  t.like(await ask({ from: 'web', to: '198.51.100.21', protocol: 'tcp', port: 443 }), { allowed: false, reason: 'to_host' });
  const coordinator = await ask({ from: 'web', to: '172.16.0.1', protocol: 'tcp', port: 7300 });
  t.like(coordinator, { allowed: false, reason: 'to_host' });
  t.regex(coordinator.verdict, /address of the coordinator/);
  const router = await ask({ from: 'web', to: w.addr.gw1!, protocol: 'tcp', port: 7400 });
  t.like(router, { allowed: true, rules: [{ kind: 'exposure', name: 'site', gateway: 'gw1' }] });
  t.like(await ask({ from: 'db', to: w.addr.gw1!, protocol: 'tcp', port: 7400 }), { allowed: false, reason: 'to_host' });
  t.like(await ask({ from: 'batch', to: '203.0.113.7', protocol: 'tcp', port: 443 }), { allowed: true, rules: [{ kind: 'egress', name: 'updates', cidr: '203.0.113.0/24', gateway: 'gw1' }] });
  t.like(await ask({ from: 'batch', to: '203.0.113.7', protocol: 'tcp', port: 80 }), { allowed: false, reason: 'egress' });
  t.like(await ask({ from: 'batch', to: '10.255.255.1', protocol: 'udp', port: 53 }), { allowed: false, reason: 'unknown_address' });
  // The other tenant's view of the same node: its own policy, its own verdicts.
  const g = await w.globex<Explanation>('POST', '/v1/tenants/globex/reachability/explain', { from: 'gdb', to: w.addr.web!, protocol: 'tcp', port: 80 });
  t.like(g.body, { allowed: false, reason: 'cross_tenant' });
});

test('the matrix, as admin and as the tenant', async (t) => {
  const w = await world('matrix');
  t.teardown(() => w.t.close());
  const r = await w.acme<ReachabilityMatrix>('GET', '/v1/tenants/acme/reachability');
  t.is(r.status, 200, r.text);
  t.deepEqual(r.body, {
    tenant: 'acme',
    workloads: ['batch', 'db', 'web'],
    flows: [
      { from: 'batch', to: 'db', protocol: 'tcp', ports: [{ from: 5432, to: 5433 }], policies: ['any-to-db'] },
      { from: 'web', to: 'db', protocol: 'tcp', ports: [{ from: 5432, to: 5433 }], policies: ['any-to-db', 'web-to-db'] },
      { from: 'web', to: 'db', protocol: 'icmp', policies: ['web-to-db'] },
    ],
  });
  t.deepEqual((await w.t.admin('GET', '/v1/tenants/acme/reachability')).body, r.body);
  t.is((await w.t.admin('GET', '/v1/tenants/nope/reachability')).status, 404);
});

test("auth: a tenant token cannot explain, list or what-if another tenant; no token is a 401", async (t) => {
  const w = await world('auth');
  t.teardown(() => w.t.close());
  const policy = { from: {}, to: {}, allow: [{ protocol: 'tcp' }] };
  const routes: [string, string, unknown][] = [
    ['POST', EXPLAIN, { from: 'web', to: 'db', protocol: 'tcp', port: 5432 }],
    ['GET', '/v1/tenants/acme/reachability', undefined],
    ['PUT', '/v1/tenants/acme/policies/x/what-if', policy],
    ['DELETE', '/v1/tenants/acme/policies/web-to-db/what-if', undefined],
  ];
  for (const [method, path, body] of routes) {
    const other = await w.globex<{ error: { code: string; message: string } }>(method, path, body);
    t.is(other.status, 403, `${method} ${path}: ${other.text}`);
    t.regex(other.body.error.message, /scoped to tenant "globex"/);
    t.is((await w.anon(method, path, body)).status, 401, `${method} ${path} without a token`);
    t.is((await w.acme(method, path, body)).status, 200, `${method} ${path} as acme`);
  }
  // Guessing another tenant's workload name from one's own tenant finds nothing.
  const guess = await w.acme<{ error: { code: string; message: string } }>('POST', EXPLAIN, { from: 'web', to: 'gdb', protocol: 'tcp' });
  t.is(guess.status, 404);
  // Other tenants and hosts not serving this tenant are never named.
  const other = await w.acme<Explanation>('POST', EXPLAIN, { from: 'web', to: w.addr.gdb!, protocol: 'tcp', port: 1 });
  t.false(other.body.verdict.includes('globex'));
});

interface Bad {
  title: string;
  method?: string;
  path?: string;
  body: unknown;
  status: number;
  /** Text the error message must contain. */
  names: string;
  /** Unknown tenants: the admin (a tenant token is refused before the tenant is looked up). */
  admin?: boolean;
}

test('bad questions: 4xx naming the field, never a change', async (t) => {
  const w = await world('bad');
  t.teardown(() => w.t.close());
  const flow = { from: 'web', to: 'db', protocol: 'tcp', port: 5432 };
  const cases: Bad[] = [
    { title: 'unknown source workload', body: { ...flow, from: 'nope' }, status: 404, names: 'from: workload "nope"' },
    { title: 'unknown destination workload', body: { ...flow, to: 'nope' }, status: 404, names: 'to: workload "nope"' },
    { title: 'protocol sctp', body: { ...flow, protocol: 'sctp' }, status: 400, names: 'body.protocol' },
    { title: 'port 0', body: { ...flow, port: 0 }, status: 400, names: 'body.port' },
    { title: 'port 70000', body: { ...flow, port: 70000 }, status: 400, names: 'body.port' },
    { title: 'port as a string', body: { ...flow, port: '80' }, status: 400, names: 'body.port' },
    { title: 'icmp with a port', body: { ...flow, protocol: 'icmp', port: 1 }, status: 400, names: 'port: icmp has no ports' },
    { title: 'address out of range', body: { ...flow, to: '300.1.1.1' }, status: 400, names: 'to: "300.1.1.1"' },
    { title: 'neither name nor address', body: { ...flow, to: 'Web_1' }, status: 400, names: 'body.to' },
    { title: 'a CIDR', body: { ...flow, to: '10.0.0.0/8' }, status: 400, names: 'body.to' },
    { title: 'missing to', body: { from: 'web', protocol: 'tcp' }, status: 400, names: "'to'" },
    { title: 'unknown field', body: { ...flow, ports: [80] }, status: 400, names: 'unknown field "ports"' },
    { title: 'unknown tenant', path: '/v1/tenants/nope/reachability/explain', body: flow, status: 404, names: 'tenant "nope"', admin: true },
    { title: 'what-if: unknown policy to delete', method: 'DELETE', path: '/v1/tenants/acme/policies/nope/what-if', body: undefined, status: 404, names: 'policy "nope"' },
    { title: 'what-if: bad policy name', method: 'PUT', path: '/v1/tenants/acme/policies/Bad_Name/what-if', body: { from: {}, to: {}, allow: [{ protocol: 'icmp' }] }, status: 400, names: 'params.name' },
    { title: 'what-if: unknown tenant', method: 'PUT', path: '/v1/tenants/nope/policies/p/what-if', body: { from: {}, to: {}, allow: [{ protocol: 'icmp' }] }, status: 404, names: 'tenant "nope"', admin: true },
  ];
  await withReadOnly(w.t.dbPath, async (db) => {
    const before = state(db);
    for (const c of cases) {
      const r = await (c.admin ? w.t.admin : w.acme)<{ error: { code: string; message: string } }>(c.method ?? 'POST', c.path ?? EXPLAIN, c.body);
      t.is(r.status, c.status, `${c.title}: ${r.text}`);
      t.true(r.body.error.message.includes(c.names), `${c.title}: ${r.body.error.message}`);
    }
    t.deepEqual(state(db), before);
  });
});

test('what-if validates a policy exactly like the real write: same status, same message', async (t) => {
  const w = await world('same');
  t.teardown(() => w.t.close());
  const bodies: unknown[] = [
    { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: ['90-80'] }] },
    { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'icmp', ports: [80] }] },
    { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [0] }] },
    { from: { app: 'web' }, to: { app: 'db' }, allow: [] },
    { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'sctp' }] },
    { from: { 'bad key!': 'x' }, to: {}, allow: [{ protocol: 'icmp' }] },
    { from: {}, to: {}, allow: [{ protocol: 'icmp' }], bogus: true },
    { from: {}, allow: [{ protocol: 'icmp' }] },
    [{ from: {}, to: {}, allow: [] }],
    '{"from": ',
  ];
  await withReadOnly(w.t.dbPath, async (db) => {
    const before = state(db);
    for (const b of bodies) {
      const whatIf = await w.acme('PUT', '/v1/tenants/acme/policies/p9/what-if', b);
      const real = await w.acme('PUT', '/v1/tenants/acme/policies/p9', b);
      t.is(whatIf.status, 400, whatIf.text);
      t.deepEqual({ status: whatIf.status, body: whatIf.body }, { status: real.status, body: real.body }, JSON.stringify(b));
    }
    t.deepEqual(state(db), before);
  });
});

/** Everything a write would touch: every table, the audit log included, and the hosts' versions. */
function state(db: Database.Database): unknown {
  return { ...snapshotTables(db, []), hosts: (db.prepare('SELECT name, version, applied_version FROM hosts ORDER BY name').all() as unknown[]) };
}

async function hostVersions(w: World): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const kind of ['nodes', 'gateways']) {
    for (const h of (await w.t.admin<Record<string, { name: string; version: number }[]>>('GET', `/v1/${kind}`)).body[kind]!) out[h.name] = h.version;
  }
  return out;
}

async function whatIfThenApply(t: ExecutionContext, w: World, method: 'PUT' | 'DELETE', name: string, body?: unknown): Promise<WhatIf> {
  const r = await w.acme<WhatIf>(method, `/v1/tenants/acme/policies/${name}/what-if`, body);
  t.is(r.status, 200, r.text);
  return r.body;
}

test('what-if never writes: tables, audit log and desired versions unchanged; then applying it does what it said', async (t) => {
  const w = await world('what-if');
  t.teardown(() => w.t.close());
  const matrix = async () => (await w.acme<ReachabilityMatrix>('GET', '/v1/tenants/acme/reachability')).body;
  const versions = await hostVersions(w);
  const m0 = await matrix();
  const put = { from: { app: 'batch' }, to: {}, allow: [{ protocol: 'udp', ports: [53] }, { protocol: 'tcp', ports: ['5000-6000'] }] };

  let predicted!: WhatIf;
  let deleting!: WhatIf;
  await withReadOnly(w.t.dbPath, async (db) => {
    const before = state(db);
    predicted = await whatIfThenApply(t, w, 'PUT', 'batch-out', put);
    t.like(predicted, { tenant: 'acme', op: 'put', policy: 'batch-out', created: true, removed: [] });
    // batch → web stays closed: web is a tunnel entry point.
    t.deepEqual(predicted.added, [
      { from: 'batch', to: 'db', protocol: 'tcp', ports: [{ from: 5000, to: 5431 }, { from: 5434, to: 6000 }] },
      { from: 'batch', to: 'db', protocol: 'udp', ports: [{ from: 53, to: 53 }] },
    ]);
    deleting = await whatIfThenApply(t, w, 'DELETE', 'web-to-db');
    t.deepEqual(deleting.removed, [{ from: 'web', to: 'db', protocol: 'icmp' }]);
    const replacing = await whatIfThenApply(t, w, 'PUT', 'any-to-db', { from: {}, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }] });
    t.like(replacing, { created: false, added: [] });
    t.deepEqual(replacing.removed, [
      { from: 'batch', to: 'db', protocol: 'tcp', ports: [{ from: 5433, to: 5433 }] },
      { from: 'web', to: 'db', protocol: 'tcp', ports: [{ from: 5433, to: 5433 }] },
    ]);
    await w.acme('POST', EXPLAIN, { from: 'web', to: 'db', protocol: 'tcp' });
    await w.acme('GET', '/v1/tenants/acme/reachability');
    t.deepEqual(state(db), before, 'what-if, explain and the matrix changed the database');
  });
  t.deepEqual(await hostVersions(w), versions);
  t.deepEqual(await matrix(), m0);
  t.is((await w.acme('GET', '/v1/tenants/acme/policies/batch-out')).status, 404);

  // Now for real: the matrix moves exactly as predicted.
  t.is((await w.acme('PUT', '/v1/tenants/acme/policies/batch-out', put)).status, 201);
  const m1 = await matrix();
  t.notDeepEqual(await hostVersions(w), versions);
  const keyed = (m: ReachabilityMatrix) => new Map(m.flows.map((f) => [`${f.from}>${f.to}>${f.protocol}`, f.ports ?? 'icmp']));
  const k0 = keyed(m0);
  for (const a of predicted.added) t.truthy(keyed(m1).get(`${a.from}>${a.to}>${a.protocol}`), JSON.stringify(a));
  t.is(m1.flows.length, m0.flows.length + predicted.added.filter((a) => !k0.has(`${a.from}>${a.to}>${a.protocol}`)).length);
  const again = await whatIfThenApply(t, w, 'PUT', 'batch-out', put);
  t.like(again, { created: false, added: [], removed: [] });
  t.is((await w.acme('DELETE', '/v1/tenants/acme/policies/web-to-db')).status, 204);
  t.false((await matrix()).flows.some((f) => f.from === 'web' && f.protocol === 'icmp'));
});

test('the new routes are in the OpenAPI document with their schemas', async (t) => {
  const w = await world('openapi');
  t.teardown(() => w.t.close());
  const doc = (await w.anon<{ paths: Record<string, Record<string, { requestBody?: unknown; responses?: Record<string, unknown> }>> }>('GET', '/openapi.json')).body;
  t.truthy(doc.paths['/v1/tenants/{tenant}/reachability/explain']?.post?.requestBody);
  t.truthy(doc.paths['/v1/tenants/{tenant}/reachability']?.get?.responses?.['200']);
  t.truthy(doc.paths['/v1/tenants/{tenant}/policies/{name}/what-if']?.put?.requestBody);
  t.truthy(doc.paths['/v1/tenants/{tenant}/policies/{name}/what-if']?.delete);
  t.true(isDeepStrictEqual(Object.keys(doc.paths['/v1/tenants/{tenant}/policies/{name}/what-if'] ?? {}).sort(), ['delete', 'put']));
});
