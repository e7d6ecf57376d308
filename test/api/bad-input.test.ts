/**
 * Bad input on every write route: always a 4xx (never 5xx) with
 * `{"error": {"code", "message"}}`, a 400's message names the field, and the
 * database is exactly as it was (every table, read through a second,
 * read-only connection). Then a seeded fuzz loop over mutated valid bodies:
 * zero 5xx. Replay a fuzz failure with FUZZ_SEED=<seed> (FUZZ_ITERATIONS=<n>).
 */
import test, { type ExecutionContext } from 'ava';
import type Database from 'better-sqlite3';
import { isDeepStrictEqual } from 'node:util';
import { generateSigningKeyPair, generateWireguardKeyPair } from '../../src/shared/crypto.js';
import { bodies } from '../../src/coordinator/schemas.js';
import {
  enrollHost,
  hostHeaders,
  injectCaller,
  newApp,
  snapshotTables,
  withReadOnly,
  type Call,
  type Host,
  type Reply,
  type TestApp,
} from '../fixtures/harness.js';
import { mulberry32 } from '../helpers/random.js';

const MiB = 1024 * 1024;
const STATUS_OF: Record<string, number[]> = {
  invalid: [400],
  unauthorized: [401],
  forbidden: [403],
  not_found: [404],
  conflict: [409],
  exhausted: [409],
  too_large: [413],
  rate_limited: [429],
};

/** Who sends the request. */
type As = 'admin' | 'anon' | 'tenant' | 'other-tenant' | 'n1' | 'gw1' | 'n3';

interface Case {
  title: string;
  method: 'POST' | 'PUT' | 'DELETE';
  path: string;
  /** A value sent as JSON, or `{ raw }` sent verbatim. */
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
  as?: As;
  /** Sign as this host but send to the path anyway (to test "own routes only"). */
  status: number;
  /** Text the message must contain (the field), for 400s by default `body`. */
  field?: string | RegExp;
  code?: string;
}

interface World {
  t: TestApp;
  hosts: Record<'n1' | 'n3' | 'gw1', Host>;
  tenantToken: string;
  otherToken: string;
  n2Token: string;
}

/** A coordinator with one of everything, so every route has something to refuse to touch. */
async function world(prefix: string): Promise<World> {
  const t = await newApp(prefix, { enrollmentsPerMinute: 1_000_000, authFailuresPerMinute: 1_000_000 });
  const ok = async (r: Promise<Reply>, what: string) => {
    const res = await r;
    if (res.status >= 300) throw new Error(`${what}: ${res.status} ${res.text}`);
    return res;
  };
  await ok(t.admin('POST', '/v1/tenants', { name: 'acme' }), 'tenant acme');
  await ok(t.admin('POST', '/v1/tenants', { name: 'other' }), 'tenant other');
  const n1 = await enrollHost(t.admin, 'n1');
  const n3 = await enrollHost(t.admin, 'n3');
  const gw1 = await enrollHost(t.admin, 'gw1', 'gateway', { endpoint: '192.0.2.1:51820', publicAddress: '192.0.2.1' });
  const n2 = await ok(t.admin('POST', '/v1/enrollment-tokens', { kind: 'node', name: 'n2' }), 'n2 token');
  await ok(t.admin('POST', '/v1/tenants/acme/workloads', { name: 'web', node: 'n1', labels: { app: 'web' } }), 'web');
  await ok(t.admin('POST', '/v1/tenants/acme/workloads', { name: 'api', node: 'n3', labels: { app: 'api' } }), 'api');
  await ok(t.admin('POST', '/v1/tenants/other/workloads', { name: 'db', node: 'n3', labels: { app: 'db' } }), 'other/db');
  await ok(t.admin('DELETE', '/v1/tenants/acme/workloads/api'), 'release api');
  await ok(t.admin('POST', '/v1/tenants/acme/workloads', { name: 'api', node: 'n3', labels: { app: 'api' } }), 'api again');
  await ok(t.admin('PUT', '/v1/tenants/acme/policies/web-to-api', { from: { app: 'web' }, to: { app: 'api' }, allow: [{ protocol: 'tcp', ports: [8080, '9000-9010'] }, { protocol: 'icmp' }] }), 'policy');
  await ok(
    t.admin('PUT', '/v1/tenants/acme/exposures/site', { protocol: 'http', hostnames: ['web.acme.test'], mode: 'tunnel', gateways: ['gw1'], target: { selector: { app: 'web' }, port: 8080 } }),
    'exposure site',
  );
  await ok(
    t.admin('PUT', '/v1/tenants/acme/exposures/ssh', { protocol: 'tcp', mode: 'mesh', gateways: ['gw1'], target: { selector: { app: 'api' }, port: 22 }, publicPort: 2222 }),
    'exposure ssh',
  );
  await ok(t.admin('PUT', '/v1/tenants/acme/egress/updates', { gateways: ['gw1'], destinations: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: [443] }] }), 'egress');
  const tok = await ok(t.admin('POST', '/v1/tenants/acme/tokens', { name: 'ci' }), 'tenant token');
  const other = await ok(t.admin('POST', '/v1/tenants/other/tokens', { name: 'ci' }), 'other token');
  return {
    t,
    hosts: { n1, n3, gw1 },
    tenantToken: (tok.body as { token: string }).token,
    otherToken: (other.body as { token: string }).token,
    n2Token: (n2.body as { token: string }).token,
  };
}

function send(w: World, c: Pick<Case, 'method' | 'path' | 'body' | 'raw' | 'headers' | 'as'>): Promise<Reply> {
  const text = c.raw ?? (c.body === undefined ? undefined : JSON.stringify(c.body));
  const as = c.as ?? 'admin';
  const token = as === 'admin' ? w.t.adminToken : as === 'tenant' ? w.tenantToken : as === 'other-tenant' ? w.otherToken : '';
  const call: Call = injectCaller(w.t.app, token);
  let headers = c.headers ?? {};
  if (as === 'n1' || as === 'n3' || as === 'gw1') headers = { ...hostHeaders(w.hosts[as], c.method, c.path, text ?? ''), ...headers };
  return call(c.method, c.path, text, headers);
}

/** Wrong-typed stand-ins for a property of the given JSON Schema. */
function wrongValues(schema: Record<string, unknown>): unknown[] {
  const type = schema.type;
  if (schema.anyOf) return ['80', [80], true];
  if (Array.isArray(type)) return [5, [], {}];
  switch (type) {
    case 'string':
      return [12345, ['x'], { a: 'b' }, true];
    case 'integer':
      return ['7', 1.5, [7], null];
    case 'boolean':
      return ['yes', 1];
    case 'object':
      return [['x'], 'x', 3];
    case 'array':
      return [{ a: 1 }, 'x', 3];
    default:
      return [Symbol.for('none')];
  }
}

interface BodyRoute {
  method: 'POST' | 'PUT';
  path: string;
  schema: { properties: Record<string, unknown>; required: readonly string[] };
  valid: Record<string, unknown>;
  as?: As;
}

function bodyRoutes(w: World): BodyRoute[] {
  const wg = generateWireguardKeyPair().publicKey;
  return [
    { method: 'POST', path: '/v1/tenants', schema: bodies.createTenant, valid: { name: 'newt', prefixLength: 24 } },
    { method: 'POST', path: '/v1/tenants/acme/tokens', schema: bodies.createTenantToken, valid: { name: 'ci2', ttlSeconds: 3600 } },
    { method: 'POST', path: '/v1/enrollment-tokens', schema: bodies.createEnrollmentToken, valid: { kind: 'node', name: 'n5', ttlSeconds: 600 } },
    {
      method: 'POST',
      path: '/v1/enroll',
      schema: bodies.enroll,
      valid: { token: w.n2Token, name: 'n2', identityKey: generateSigningKeyPair().publicKey, endpoint: '192.0.2.7:51820', mgmtAddress: '10.1.0.7', publicAddress: '192.0.2.7' },
      as: 'anon',
    },
    { method: 'POST', path: '/v1/tenants/acme/workloads', schema: bodies.createWorkload, valid: { name: 'w2', node: 'n1', labels: { app: 'x' } } },
    { method: 'POST', path: '/v1/tenants/acme/workloads', schema: bodies.createWorkload, valid: { name: 'w2', node: 'n1', labels: { app: 'x' } }, as: 'tenant' },
    {
      method: 'PUT',
      path: '/v1/tenants/acme/policies/p2',
      schema: bodies.policy,
      valid: { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432, '8000-8080'] }, { protocol: 'icmp' }] },
    },
    {
      method: 'PUT',
      path: '/v1/tenants/acme/exposures/e2',
      schema: bodies.exposure,
      valid: { protocol: 'http', hostnames: ['new.acme.test'], mode: 'tunnel', gateways: ['gw1'], target: { selector: { app: 'web' }, port: 8080 }, tls: null, publicPort: null, proxyProtocol: false },
    },
    {
      method: 'PUT',
      path: '/v1/tenants/acme/egress/x2',
      schema: bodies.egress,
      valid: { gateways: ['gw1'], destinations: [{ cidr: '198.51.100.10/32', protocol: 'tcp', ports: [80] }] },
    },
    { method: 'POST', path: '/v1/tenants/acme/reachability/explain', schema: bodies.explain, valid: { from: 'web', to: 'api', protocol: 'tcp', port: 8080 }, as: 'tenant' },
    {
      method: 'PUT',
      path: '/v1/tenants/acme/policies/p2/what-if',
      schema: bodies.policy,
      valid: { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432, '8000-8080'] }, { protocol: 'icmp' }] },
    },
    { method: 'PUT', path: '/v1/nodes/n1/tenants/acme/key', schema: bodies.registerKey, valid: { publicKey: wg }, as: 'n1' },
    { method: 'PUT', path: '/v1/gateways/gw1/tenants/acme/key', schema: bodies.registerKey, valid: { publicKey: wg }, as: 'gw1' },
    { method: 'POST', path: '/v1/nodes/n1/status', schema: bodies.status, valid: { appliedVersion: 3, errors: [], drops: { spoof: 1 }, details: {} }, as: 'n1' },
    { method: 'POST', path: '/v1/gateways/gw1/status', schema: bodies.status, valid: { appliedVersion: 3, errors: ['x'], drops: {} }, as: 'gw1' },
    { method: 'POST', path: '/v1/nodes/n1/workloads', schema: bodies.createNodeWorkload, valid: { tenant: 'acme', name: 'w3', labels: {} }, as: 'n1' },
  ];
}

/** The same malformations for every route with a body. */
function genericCases(w: World): Case[] {
  const out: Case[] = [];
  for (const r of bodyRoutes(w)) {
    const base = { method: r.method, path: r.path, as: r.as };
    const at = `${r.method} ${r.path}${r.as ? ` as ${r.as}` : ''}`;
    out.push({ ...base, title: `${at}: malformed JSON`, raw: '{"name": ', status: 400, field: 'body: malformed JSON' });
    out.push({ ...base, title: `${at}: trailing garbage`, raw: `${JSON.stringify(r.valid)}x`, status: 400, field: 'body' });
    out.push({ ...base, title: `${at}: array body`, body: [r.valid], status: 400, field: 'body' });
    out.push({ ...base, title: `${at}: string body`, body: 'hello', status: 400, field: 'body' });
    out.push({ ...base, title: `${at}: number body`, body: 42, status: 400, field: 'body' });
    // Token creation has only optional fields: an empty body means "defaults" there.
    if (!r.path.endsWith('/tokens')) {
      out.push({ ...base, title: `${at}: null body`, raw: 'null', status: 400, field: 'body' });
      out.push({ ...base, title: `${at}: empty body`, raw: '', status: 400, field: 'body' });
    }
    out.push({ ...base, title: `${at}: form content-type`, raw: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' }, status: 400, field: 'content-type' });
    out.push({ ...base, title: `${at}: unknown field`, body: { ...r.valid, bogus: 1 }, status: 400, field: '"bogus"' });
    out.push({ ...base, title: `${at}: > 1 MiB`, body: { ...r.valid, pad: 'x'.repeat(MiB + 10) }, status: 413, code: 'too_large' });
    for (const req of r.schema.required) {
      const body = { ...r.valid };
      delete body[req];
      out.push({ ...base, title: `${at}: missing ${req}`, body, status: 400, field: `'${req}'` });
    }
    for (const [prop, schema] of Object.entries(r.schema.properties)) {
      for (const v of wrongValues(schema as Record<string, unknown>)) {
        out.push({ ...base, title: `${at}: ${prop} = ${JSON.stringify(v)}`, body: { ...r.valid, [prop]: v }, status: 400, field: `body.${prop}` });
      }
    }
  }
  return out;
}

const NAMES: [string, string][] = [
  ['uppercase', 'Web'],
  ['unicode', 'wéb'],
  ['path traversal', '../x'],
  ['64 characters', 'a'.repeat(64)],
  ['empty', ''],
  ['leading dash', '-web'],
  ['trailing dash', 'web-'],
  ['underscore', 'a_b'],
  ['space', 'a b'],
  ['dot', 'a.b'],
  ['NUL', 'a\u0000b'],
];

const HOSTNAMES: [string, string][] = [
  ['uppercase', 'Web.acme.test'],
  ['single label', 'acme'],
  ['leading dash', '-a.acme.test'],
  ['empty label', 'a..acme.test'],
  ['trailing dot', 'a.acme.test.'],
  ['unicode', 'wéb.acme.test'],
  ['wildcard', '*.acme.test'],
  ['space', 'a b.acme.test'],
  ['64-character label', `${'x'.repeat(64)}.test`],
  ['over 253 characters', `${Array.from({ length: 5 }, () => 'x'.repeat(60)).join('.')}.test`],
  ['with port', 'web.acme.test:80'],
  ['empty', ''],
];

function specificCases(w: World): Case[] {
  const exposure = { protocol: 'http', hostnames: ['new.acme.test'], mode: 'tunnel', gateways: ['gw1'], target: { selector: { app: 'web' }, port: 8080 } };
  const tcp = { protocol: 'tcp', mode: 'tunnel', gateways: ['gw1'], target: { selector: { app: 'web' }, port: 8080 }, publicPort: 8443 };
  const policy = (allow: unknown[]) => ({ from: { app: 'web' }, to: { app: 'db' }, allow });
  const egress = (d: Record<string, unknown>, gateways = ['gw1']) => ({ gateways, destinations: [{ protocol: 'tcp', ports: [443], ...d }] });
  const key = generateWireguardKeyPair().publicKey;
  const enroll = (over: Record<string, unknown>) => ({ token: w.n2Token, name: 'n2', identityKey: generateSigningKeyPair().publicKey, ...over });
  const E = '/v1/tenants/acme/exposures/e2';
  const P = '/v1/tenants/acme/policies/p2';
  const X = '/v1/tenants/acme/egress/x2';
  const cases: Case[] = [];
  const add = (c: Omit<Case, 'method'> & { method?: Case['method'] }) => cases.push({ method: 'PUT', ...c });

  // ---- names, in bodies and in paths
  for (const [what, n] of NAMES) {
    add({ title: `tenant name ${what}`, method: 'POST', path: '/v1/tenants', body: { name: n }, status: 400, field: 'body.name' });
    add({ title: `workload name ${what}`, method: 'POST', path: '/v1/tenants/acme/workloads', body: { name: n, node: 'n1' }, status: 400, field: 'body.name' });
    add({ title: `workload node ${what}`, method: 'POST', path: '/v1/tenants/acme/workloads', body: { name: 'w2', node: n }, status: 400, field: 'body.node' });
    add({ title: `enrollment token name ${what}`, method: 'POST', path: '/v1/enrollment-tokens', body: { kind: 'gateway', name: n }, status: 400, field: 'body.name' });
    add({ title: `token name ${what}`, method: 'POST', path: '/v1/tenants/acme/tokens', body: { name: n }, status: 400, field: 'body.name' });
    add({ title: `node workload tenant ${what}`, method: 'POST', path: '/v1/nodes/n1/workloads', body: { tenant: n, name: 'w3' }, as: 'n1', status: 400, field: 'body.tenant' });
    add({ title: `exposure gateway ${what}`, path: E, body: { ...exposure, gateways: [n] }, status: 400, field: 'body.gateways' });
    if (n === '') continue; // an empty path segment is a different route
    const seg = encodeURIComponent(n);
    add({ title: `policy path name ${what}`, path: `/v1/tenants/acme/policies/${seg}`, body: policy([{ protocol: 'icmp' }]), status: 400, field: 'params.name' });
    add({ title: `workload path tenant ${what}`, method: 'POST', path: `/v1/tenants/${seg}/workloads`, body: { name: 'w2', node: 'n1' }, status: 400, field: 'params.tenant' });
    add({ title: `delete workload path ${what}`, method: 'DELETE', path: `/v1/tenants/acme/workloads/${seg}`, status: 400, field: 'params.name' });
    add({ title: `delete tenant path ${what}`, method: 'DELETE', path: `/v1/tenants/${seg}`, status: 400, field: 'params.tenant' });
  }

  // ---- tenants and tokens
  add({ title: 'tenant exists', method: 'POST', path: '/v1/tenants', body: { name: 'acme' }, status: 409, code: 'conflict' });
  for (const p of [7, 29, 0, -1, 20.5, 33]) add({ title: `prefixLength ${p}`, method: 'POST', path: '/v1/tenants', body: { name: 'big', prefixLength: p }, status: 400, field: 'prefixLength' });
  add({ title: 'prefixLength wider than the pool', method: 'POST', path: '/v1/tenants', body: { name: 'big', prefixLength: 8 }, status: 400, field: 'prefixLength' });
  add({ title: 'delete tenant with workloads', method: 'DELETE', path: '/v1/tenants/acme', status: 409, code: 'conflict' });
  add({ title: 'delete tenant ?force=yes', method: 'DELETE', path: '/v1/tenants/acme?force=yes', status: 400, field: 'querystring.force' });
  add({ title: 'delete unknown tenant', method: 'DELETE', path: '/v1/tenants/nope', status: 404, code: 'not_found' });
  add({ title: 'delete tenant as its own tenant token', method: 'DELETE', path: '/v1/tenants/acme?force=true', as: 'tenant', status: 403, code: 'forbidden' });
  add({ title: 'token for unknown tenant', method: 'POST', path: '/v1/tenants/nope/tokens', body: {}, status: 404, code: 'not_found' });
  for (const ttl of [59, 0, 365 * 24 * 3600 + 1]) add({ title: `token ttl ${ttl}`, method: 'POST', path: '/v1/tenants/acme/tokens', body: { ttlSeconds: ttl }, status: 400, field: 'body.ttlSeconds' });
  add({ title: 'enrollment token kind router', method: 'POST', path: '/v1/enrollment-tokens', body: { kind: 'router', name: 'r1' }, status: 400, field: 'body.kind' });
  add({ title: 'enrollment token for an enrolled host', method: 'POST', path: '/v1/enrollment-tokens', body: { kind: 'node', name: 'n1' }, status: 409, code: 'conflict' });
  add({ title: 'enrollment token ttl 8 days', method: 'POST', path: '/v1/enrollment-tokens', body: { kind: 'node', name: 'n9', ttlSeconds: 8 * 24 * 3600 }, status: 400, field: 'body.ttlSeconds' });

  // ---- enrollment
  add({ title: 'enroll: short token', method: 'POST', path: '/v1/enroll', as: 'anon', body: enroll({ token: 'short' }), status: 400, field: 'body.token' });
  add({ title: 'enroll: unknown token', method: 'POST', path: '/v1/enroll', as: 'anon', body: enroll({ token: `nwe_${'A'.repeat(43)}` }), status: 401, code: 'unauthorized' });
  add({ title: 'enroll: token for another name', method: 'POST', path: '/v1/enroll', as: 'anon', body: enroll({ name: 'n7' }), status: 403, code: 'forbidden' });
  add({ title: 'enroll: identity key already enrolled', method: 'POST', path: '/v1/enroll', as: 'anon', body: enroll({ identityKey: w.hosts.n1.keys.publicKey }), status: 409, field: 'identityKey' });
  for (const k of ['abc', 'A'.repeat(44), `${'A'.repeat(42)}B=`, Buffer.alloc(33).toString('base64'), `${'A'.repeat(43)}=\n`]) {
    add({ title: `enroll: identityKey ${JSON.stringify(k)}`, method: 'POST', path: '/v1/enroll', as: 'anon', body: enroll({ identityKey: k }), status: 400, field: 'body.identityKey' });
  }
  for (const e of ['300.1.1.1:51820', '10.0.0.1:70000', '10.0.0.1:0', 'host.example:51820', '10.0.0.1:', '[::1]:51820', '1.2.3.4.5']) {
    add({ title: `enroll: endpoint ${e}`, method: 'POST', path: '/v1/enroll', as: 'anon', body: enroll({ endpoint: e }), status: 400, field: 'endpoint' });
  }

  // ---- hosts
  add({ title: 'delete unknown node', method: 'DELETE', path: '/v1/nodes/nope', status: 404, code: 'not_found' });
  add({ title: 'delete a gateway as a node', method: 'DELETE', path: '/v1/nodes/gw1', status: 404, code: 'not_found' });
  add({ title: 'delete a gateway still in use', method: 'DELETE', path: '/v1/gateways/gw1', status: 409, field: 'exposure acme/site' });
  add({ title: 'delete node with a bad name', method: 'DELETE', path: '/v1/nodes/N1', status: 400, field: 'params.name' });
  add({ title: 'delete node with a tenant token', method: 'DELETE', path: '/v1/nodes/n1', as: 'tenant', status: 403, code: 'forbidden' });

  // ---- workloads
  add({ title: 'workload name taken', method: 'POST', path: '/v1/tenants/acme/workloads', body: { name: 'web', node: 'n3' }, status: 409, code: 'conflict' });
  add({ title: 'workload on unknown node', method: 'POST', path: '/v1/tenants/acme/workloads', body: { name: 'w2', node: 'nope' }, status: 404, code: 'not_found' });
  add({ title: 'workload on a gateway', method: 'POST', path: '/v1/tenants/acme/workloads', body: { name: 'w2', node: 'gw1' }, status: 404, code: 'not_found' });
  add({ title: 'workload in unknown tenant', method: 'POST', path: '/v1/tenants/nope/workloads', body: { name: 'w2', node: 'n1' }, status: 404, code: 'not_found' });
  add({ title: 'workload with another tenant token', method: 'POST', path: '/v1/tenants/acme/workloads', as: 'other-tenant', body: { name: 'w2', node: 'n1' }, status: 403, code: 'forbidden' });
  add({ title: 'workload without a token', method: 'POST', path: '/v1/tenants/acme/workloads', as: 'anon', body: { name: 'w2', node: 'n1' }, status: 401, code: 'unauthorized' });
  const labels: [string, unknown][] = [
    ['key with space', { 'a b': 'x' }],
    ['key with !', { 'bad!': 'x' }],
    ['empty key', { '': 'x' }],
    ['value with space', { app: 'a b' }],
    ['value number', { app: 5 }],
    ['value null', { app: null }],
    ['value object', { app: { x: 'y' } }],
    ['value 64 chars', { app: 'v'.repeat(64) }],
    ['33 labels', Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']))],
    ['array', ['app', 'web']],
  ];
  for (const [what, l] of labels) {
    add({ title: `workload labels: ${what}`, method: 'POST', path: '/v1/tenants/acme/workloads', body: { name: 'w2', node: 'n1', labels: l }, status: 400, field: 'body.labels' });
    add({ title: `policy selector: ${what}`, path: P, body: { ...policy([{ protocol: 'icmp' }]), from: l }, status: 400, field: 'body.from' });
  }
  add({ title: 'delete unknown workload', method: 'DELETE', path: '/v1/tenants/acme/workloads/nope', status: 404, code: 'not_found' });
  add({ title: 'delete workload with a body of garbage', method: 'DELETE', path: '/v1/tenants/acme/workloads/web', raw: '{oops', status: 400, field: 'body' });

  // ---- policies: ports and protocols
  for (const p of [0, 70000, -1, 1.5, '90-80', '0-10', '1-70000', '80-', 'http', '', ' 80', '8O']) {
    add({ title: `policy port ${JSON.stringify(p)}`, path: P, body: policy([{ protocol: 'tcp', ports: [p] }]), status: 400, field: /allow(\.0\.|\[0\]\.)ports/ });
  }
  add({ title: 'policy icmp with ports', path: P, body: policy([{ protocol: 'icmp', ports: [80] }]), status: 400, field: 'allow[0].ports' });
  add({ title: 'policy protocol sctp', path: P, body: policy([{ protocol: 'sctp' }]), status: 400, field: 'body.allow.0.protocol' });
  add({ title: 'policy allow empty', path: P, body: policy([]), status: 400, field: 'body.allow' });
  add({ title: 'policy 65 ports', path: P, body: policy([{ protocol: 'tcp', ports: Array.from({ length: 65 }, (_, i) => i + 1) }]), status: 400, field: 'body.allow.0.ports' });
  add({ title: 'policy for unknown tenant', path: '/v1/tenants/nope/policies/p2', body: policy([{ protocol: 'icmp' }]), status: 404, code: 'not_found' });

  // ---- policy questions (read-only: they must refuse like the writes and change nothing either)
  const EX = '/v1/tenants/acme/reachability/explain';
  const flow = { from: 'web', to: 'api', protocol: 'tcp', port: 8080 };
  add({ title: 'explain: unknown source', method: 'POST', path: EX, body: { ...flow, from: 'nope' }, status: 404, field: 'from: workload "nope"' });
  add({ title: 'explain: unknown destination', method: 'POST', path: EX, body: { ...flow, to: 'nope' }, status: 404, field: 'to: workload "nope"' });
  add({ title: "explain: another tenant's workload by name", method: 'POST', path: EX, body: { ...flow, to: 'db' }, as: 'tenant', status: 404, field: 'to: workload "db"' });
  add({ title: 'explain: protocol sctp', method: 'POST', path: EX, body: { ...flow, protocol: 'sctp' }, status: 400, field: 'body.protocol' });
  add({ title: 'explain: icmp with a port', method: 'POST', path: EX, body: { ...flow, protocol: 'icmp' }, status: 400, field: 'port' });
  for (const port of [0, 65536, -1, 1.5]) add({ title: `explain: port ${port}`, method: 'POST', path: EX, body: { ...flow, port }, status: 400, field: 'body.port' });
  for (const to of ['300.1.1.1', '1.2.3.04.5', 'WEB', '10.0.0.0/8', '', 'a'.repeat(64)]) {
    add({ title: `explain: to ${JSON.stringify(to)}`, method: 'POST', path: EX, body: { ...flow, to }, status: 400, field: /^(body\.)?to: / });
  }
  add({ title: 'explain: unknown tenant', method: 'POST', path: '/v1/tenants/nope/reachability/explain', body: flow, status: 404, code: 'not_found' });
  add({ title: 'explain: another tenant token', method: 'POST', path: EX, body: flow, as: 'other-tenant', status: 403, code: 'forbidden' });
  add({ title: 'what-if: port range backwards', path: '/v1/tenants/acme/policies/p2/what-if', body: policy([{ protocol: 'tcp', ports: ['90-80'] }]), status: 400, field: 'allow[0].ports' });
  add({ title: 'what-if: delete an unknown policy', method: 'DELETE', path: '/v1/tenants/acme/policies/nope/what-if', status: 404, code: 'not_found' });
  add({ title: 'what-if: another tenant token', method: 'DELETE', path: '/v1/tenants/acme/policies/web-to-api/what-if', as: 'other-tenant', status: 403, code: 'forbidden' });
  add({ title: 'delete unknown policy', method: 'DELETE', path: '/v1/tenants/acme/policies/nope', status: 404, code: 'not_found' });

  // ---- exposures
  for (const [what, h] of HOSTNAMES) add({ title: `exposure hostname ${what}`, path: E, body: { ...exposure, hostnames: [h] }, status: 400, field: 'body.hostnames' });
  add({ title: 'exposure duplicate hostnames', path: E, body: { ...exposure, hostnames: ['a.acme.test', 'a.acme.test'] }, status: 400, field: 'body.hostnames' });
  add({ title: 'exposure hostname taken in this tenant', path: E, body: { ...exposure, hostnames: ['new.acme.test', 'web.acme.test'] }, status: 409, field: 'web.acme.test' });
  add({ title: 'exposure hostname taken by another tenant', path: '/v1/tenants/other/exposures/steal', body: { ...exposure, hostnames: ['web.acme.test'] }, status: 409, field: 'another tenant' });
  add({ title: 'exposure tcp without publicPort', path: E, body: { ...tcp, publicPort: undefined }, status: 400, field: 'publicPort' });
  add({ title: 'exposure tcp with publicPort null', path: E, body: { ...tcp, publicPort: null }, status: 400, field: 'publicPort' });
  add({ title: 'exposure tcp on reserved port 80', path: E, body: { ...tcp, publicPort: 80 }, status: 400, field: 'publicPort' });
  add({ title: 'exposure tcp on reserved port 443', path: E, body: { ...tcp, publicPort: 443 }, status: 400, field: 'publicPort' });
  add({ title: 'exposure tcp with hostnames', path: E, body: { ...tcp, hostnames: ['x.acme.test'] }, status: 400, field: 'hostnames' });
  add({ title: 'exposure tcp with tls', path: E, body: { ...tcp, tls: 'terminate' }, status: 400, field: 'tls' });
  add({ title: 'exposure tcp port taken on the gateway', path: E, body: { ...tcp, publicPort: 2222 }, status: 409, field: 'publicPort' });
  for (const p of [0, 70000, -1, 8080.5]) {
    add({ title: `exposure publicPort ${p}`, path: E, body: { ...tcp, publicPort: p }, status: 400, field: 'body.publicPort' });
    add({ title: `exposure target.port ${p}`, path: E, body: { ...exposure, target: { selector: { app: 'web' }, port: p } }, status: 400, field: 'body.target.port' });
  }
  add({ title: 'exposure http with publicPort', path: E, body: { ...exposure, publicPort: 8080 }, status: 400, field: 'publicPort' });
  add({ title: 'exposure http without hostnames', path: E, body: { ...exposure, hostnames: [] }, status: 400, field: 'hostnames' });
  add({ title: 'exposure http with tls', path: E, body: { ...exposure, tls: 'terminate' }, status: 400, field: 'tls' });
  add({ title: 'exposure tls without tls mode', path: E, body: { ...exposure, protocol: 'tls' }, status: 400, field: 'tls' });
  add({ title: 'exposure tls mode bogus', path: E, body: { ...exposure, protocol: 'tls', tls: 'offload' }, status: 400, field: 'body.tls' });
  add({ title: 'exposure protocol udp', path: E, body: { ...exposure, protocol: 'udp' }, status: 400, field: 'body.protocol' });
  add({ title: 'exposure mode direct', path: E, body: { ...exposure, mode: 'direct' }, status: 400, field: 'body.mode' });
  add({ title: 'exposure unknown gateway', path: E, body: { ...exposure, gateways: ['nope'] }, status: 400, field: 'gateways' });
  add({ title: 'exposure on a node', path: E, body: { ...exposure, gateways: ['n1'] }, status: 400, field: 'gateways' });
  add({ title: 'exposure no gateways', path: E, body: { ...exposure, gateways: [] }, status: 400, field: 'body.gateways' });
  add({ title: 'exposure gateways repeated', path: E, body: { ...exposure, gateways: ['gw1', 'gw1'] }, status: 400, field: 'body.gateways' });
  add({ title: 'exposure target without selector', path: E, body: { ...exposure, target: { port: 8080 } }, status: 400, field: 'selector' });
  add({ title: 'exposure target unknown field', path: E, body: { ...exposure, target: { selector: {}, port: 8080, host: 'x' } }, status: 400, field: '"host"' });
  add({ title: 'delete unknown exposure', method: 'DELETE', path: '/v1/tenants/acme/exposures/nope', status: 404, code: 'not_found' });

  // ---- egress
  for (const c of ['10.0.0.1/8', '300.1.1.1/24', '10.0.0.0/33', '1.2.3.4', '1.2.3/24', '01.2.3.0/24', '1.2.3.4/', '.1.2.3/24', '1.2.3.4/032']) {
    add({ title: `egress cidr ${c}`, path: X, body: egress({ cidr: c }), status: 400, field: /destinations(\.0\.|\[0\]\.)cidr/ });
  }
  for (const c of ['10.240.0.0/12', '10.0.0.0/8', '10.250.1.0/24', '10.240.0.5/32', '0.0.0.0/0']) {
    add({ title: `egress cidr ${c} overlaps the mesh pool`, path: X, body: egress({ cidr: c }), status: 400, field: 'destinations[0].cidr' });
  }
  // Egress never reaches special ranges nor netwall's own hosts (gw1 is 192.0.2.1).
  for (const c of ['169.254.169.254/32', '127.0.0.0/8', '224.0.0.0/8', '192.0.2.0/24', '192.0.2.1/32']) {
    add({ title: `egress cidr ${c} covers a special range or a netwall host`, path: X, body: egress({ cidr: c }), status: 400, field: 'destinations[0].cidr' });
  }
  // (`destinations[0][0].ports` in the custom messages is a known gap, see KNOWN_GAPS; accepted here.)
  const destPorts = /destinations(\.0\.|\[0\]\.|\[0\]\[0\]\.)ports/;
  add({ title: 'egress icmp with ports', path: X, body: egress({ cidr: '198.51.100.0/24', protocol: 'icmp', ports: [80] }), status: 400, field: destPorts });
  for (const p of [0, 70000, '90-80']) add({ title: `egress port ${JSON.stringify(p)}`, path: X, body: egress({ cidr: '198.51.100.0/24', ports: [p] }), status: 400, field: destPorts });
  add({ title: 'egress unknown gateway', path: X, body: egress({ cidr: '198.51.100.0/24' }, ['nope']), status: 400, field: 'gateways' });
  add({ title: 'egress through a node', path: X, body: egress({ cidr: '198.51.100.0/24' }, ['n1']), status: 400, field: 'gateways' });
  add({ title: 'egress no destinations', path: X, body: { gateways: ['gw1'], destinations: [] }, status: 400, field: 'body.destinations' });
  add({ title: 'egress destination without cidr', path: X, body: { gateways: ['gw1'], destinations: [{ protocol: 'tcp' }] }, status: 400, field: 'cidr' });
  add({ title: 'egress second destination bad', path: X, body: { gateways: ['gw1'], destinations: [{ cidr: '198.51.100.0/24', protocol: 'tcp' }, { cidr: '10.0.0.0/8', protocol: 'udp' }] }, status: 400, field: 'destinations[1].cidr' });
  add({ title: 'delete unknown egress', method: 'DELETE', path: '/v1/tenants/acme/egress/nope', status: 404, code: 'not_found' });

  // ---- host-signed routes
  const K = '/v1/nodes/n1/tenants/acme/key';
  for (const k of ['abc', '', 'A'.repeat(44), Buffer.alloc(31).toString('base64')]) add({ title: `key ${JSON.stringify(k)}`, path: K, as: 'n1', body: { publicKey: k }, status: 400, field: 'body.publicKey' });
  add({ title: 'key without a signature', path: K, as: 'anon', body: { publicKey: key }, status: 401, code: 'unauthorized' });
  add({ title: 'key with the admin token', path: K, as: 'admin', body: { publicKey: key }, status: 401, code: 'unauthorized' });
  add({ title: 'key for another node', path: K, as: 'n3', body: { publicKey: key }, status: 403, code: 'forbidden' });
  add({ title: 'key signed by a gateway on a node route', path: K, as: 'gw1', body: { publicKey: key }, status: 403, code: 'forbidden' });
  add({ title: 'key for a tenant it does not serve', path: '/v1/nodes/n1/tenants/other/key', as: 'n1', body: { publicKey: key }, status: 404, code: 'not_found' });
  add({ title: 'key for an unknown tenant', path: '/v1/nodes/n1/tenants/nope/key', as: 'n1', body: { publicKey: key }, status: 404, code: 'not_found' });
  add({ title: 'key with a forged signature', path: K, as: 'n1', body: { publicKey: key }, headers: { 'x-netwall-signature': Buffer.alloc(64).toString('base64') }, status: 401, code: 'unauthorized' });
  add({ title: 'key with an old timestamp', path: K, as: 'n1', body: { publicKey: key }, headers: { 'x-netwall-timestamp': String(Date.now() - 120_000) }, status: 401, code: 'unauthorized' });
  add({ title: 'key with a malformed nonce', path: K, as: 'n1', body: { publicKey: key }, headers: { 'x-netwall-nonce': 'zz' }, status: 401, code: 'unauthorized' });
  const S = '/v1/nodes/n1/status';
  const status = { appliedVersion: 1, errors: [], drops: {} };
  for (const [what, over, field] of [
    ['negative appliedVersion', { appliedVersion: -1 }, 'body.appliedVersion'],
    ['fractional appliedVersion', { appliedVersion: 1.5 }, 'body.appliedVersion'],
    ['errors of numbers', { errors: [1] }, 'body.errors.0'],
    ['101 errors', { errors: Array(101).fill('e') }, 'body.errors'],
    ['an error of 2001 characters', { errors: ['e'.repeat(2001)] }, 'body.errors.0'],
    ['negative drop', { drops: { spoof: -1 } }, 'body.drops.spoof'],
    ['fractional drop', { drops: { spoof: 0.5 } }, 'body.drops.spoof'],
    ['string drop', { drops: { spoof: '1' } }, 'body.drops.spoof'],
    ['details array', { details: [] }, 'body.details'],
  ] as [string, Record<string, unknown>, string][]) {
    add({ title: `status: ${what}`, method: 'POST', path: S, as: 'n1', body: { ...status, ...over }, status: 400, field });
  }
  add({ title: 'status for another node', method: 'POST', path: '/v1/nodes/n3/status', as: 'n1', body: status, status: 403, code: 'forbidden' });
  add({ title: 'status of a gateway on the node route', method: 'POST', path: '/v1/nodes/gw1/status', as: 'gw1', body: status, status: 403, code: 'forbidden' });
  const NW = '/v1/nodes/n1/workloads';
  add({ title: 'node workload in unknown tenant', method: 'POST', path: NW, as: 'n1', body: { tenant: 'nope', name: 'w3' }, status: 404, code: 'not_found' });
  add({ title: 'node workload named like one on another node', method: 'POST', path: NW, as: 'n1', body: { tenant: 'acme', name: 'api' }, status: 409, code: 'conflict' });
  add({ title: 'node workload from a gateway', method: 'POST', path: '/v1/nodes/gw1/workloads', as: 'gw1', body: { tenant: 'acme', name: 'w3' }, status: 403, code: 'forbidden' });
  add({ title: 'node workload with the admin token', method: 'POST', path: NW, as: 'admin', body: { tenant: 'acme', name: 'w3' }, status: 401, code: 'unauthorized' });
  add({ title: 'node deletes a workload of another node', method: 'DELETE', path: '/v1/nodes/n1/workloads/acme/api', as: 'n1', status: 403, code: 'forbidden' });
  add({ title: 'node deletes with a bad tenant', method: 'DELETE', path: '/v1/nodes/n1/workloads/ACME/web', as: 'n1', status: 400, field: 'params.tenant' });
  add({ title: 'node deletes for another node', method: 'DELETE', path: '/v1/nodes/n3/workloads/acme/api', as: 'n1', status: 403, code: 'forbidden' });
  return cases;
}

/** The state a refused request must not touch: every table but the audit log, and hosts without last_seen (any authenticated host request refreshes it). */
function state(db: Database.Database): unknown {
  const s = snapshotTables(db, ['audit_log']);
  s.hosts = (s.hosts as Record<string, unknown>[]).map(({ last_seen: _seen, ...rest }) => rest);
  return { ...s, audit_entries: db.prepare('SELECT COUNT(*) FROM audit_log').pluck().get() };
}

/** Problems with an error answer go to `failures`; returns the error when it is well formed. */
function errorBodyProblems(r: Reply, where: string, failures: string[]): { code: string; message: string } | undefined {
  const e = (r.body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (typeof r.body !== 'object' || r.body === null || Object.keys(r.body).join() !== 'error' || typeof e?.code !== 'string' || typeof e.message !== 'string' || Object.keys(e).sort().join() !== 'code,message') {
    failures.push(`${where}: body is not {"error":{"code","message"}}: ${r.text.slice(0, 300)}`);
    return undefined;
  }
  if (!STATUS_OF[e.code]?.includes(r.status)) failures.push(`${where}: code ${e.code} with status ${r.status}`);
  if (!String(r.headers['content-type']).startsWith('application/json')) failures.push(`${where}: content-type ${String(r.headers['content-type'])}`);
  if (/\n\s+at |node_modules|SqliteError|\.ts:\d/.test(e.message)) failures.push(`${where}: message leaks internals: ${e.message}`);
  return { code: e.code, message: e.message };
}

function checkErrorBody(t: ExecutionContext, r: Reply, where: string): { code: string; message: string } | undefined {
  const failures: string[] = [];
  const e = errorBodyProblems(r, where, failures);
  for (const f of failures) t.fail(f);
  return e;
}

/** Send each case; return what went wrong (wrong status, body shape, message, state change). */
async function runCases(w: World, cases: readonly Case[]): Promise<{ failures: string[]; byStatus: Record<number, number> }> {
  const byStatus: Record<number, number> = {};
  const failures: string[] = [];
  const check = (ok: unknown, message: string) => {
    if (!ok) failures.push(message);
  };
  await withReadOnly(w.t.dbPath, async (db) => {
    let before = state(db);
    for (const c of cases) {
      const where = `${c.title} (${c.method} ${c.path})`;
      const r = await send(w, c);
      byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
      check(r.status === c.status, `${where}: expected ${c.status}, got ${r.status} ${r.text.slice(0, 300)}`);
      const e = errorBodyProblems(r, where, failures);
      if (e && c.code) check(e.code === c.code, `${where}: code ${e.code}, expected ${c.code}`);
      // Schema errors write array indices as body.allow[0].ports; cases may give them as body.allow.0.ports.
      const given = typeof c.field === 'string' ? c.field.replace(/\.(\d+)(?=\.|$)/g, '[$1]') : c.field;
      const field = given ?? (c.status === 400 ? 'body' : undefined);
      if (e && field !== undefined) check(typeof field === 'string' ? e.message.includes(field) : field.test(e.message), `${where}: message does not name ${String(field)}: ${e.message}`);
      const after = state(db);
      check(isDeepStrictEqual(after, before), `${where}: state changed`);
      before = after;
    }
  });
  return { failures, byStatus };
}

test('every write route refuses bad input with a 4xx, a clear message, and no change', async (t) => {
  t.timeout(90_000);
  const w = await world('bad-input');
  t.teardown(() => w.t.close());
  const cases = [...genericCases(w), ...specificCases(w)];
  const { failures, byStatus } = await runCases(w, cases);
  t.deepEqual(failures, [], `${failures.length} of ${cases.length} cases misbehaved`);
  t.log(`${cases.length} cases: ${JSON.stringify(byStatus)}`);
  // A replayed signed request is refused even though the first one was fine to authenticate.
  const body = JSON.stringify({ publicKey: 'abc' });
  const headers = hostHeaders(w.hosts.n1, 'PUT', '/v1/nodes/n1/tenants/acme/key', body);
  const call = injectCaller(w.t.app, '');
  t.is((await call('PUT', '/v1/nodes/n1/tenants/acme/key', body, headers)).status, 400);
  const replay = await call('PUT', '/v1/nodes/n1/tenants/acme/key', body, headers);
  t.is(replay.status, 401);
  t.regex(checkErrorBody(t, replay, 'replay')?.message ?? '', /replayed/);
});

test('too many failed authentications: 429 with Retry-After and the error body', async (t) => {
  const a = await newApp('bad-auth', { authFailuresPerMinute: 3 });
  t.teardown(() => a.close());
  const bad = injectCaller(a.app, 'nwa_definitely-not-the-token');
  for (let i = 0; i < 3; i++) t.is((await bad('POST', '/v1/tenants', { name: 'x' })).status, 401);
  const r = await bad('POST', '/v1/tenants', { name: 'x' });
  t.is(r.status, 429);
  t.is(checkErrorBody(t, r, '429')?.code, 'rate_limited');
  t.regex(String(r.headers['retry-after']), /^\d+$/);
});

/** Gaps this suite found in the coordinator, now fixed: kept as regression tests. */
const FIXED_GAPS: { title: string; cases: (w: World) => Case[] }[] = [
  {
    // The schema only checks ^[0-9.]{7,15}$ and routes/hosts.ts stores the text as given.
    title: 'enroll refuses mgmtAddress / publicAddress that are not IPv4 addresses',
    cases: (w) =>
      (
        [
          ['mgmtAddress', '999.1.1.1'],
          ['publicAddress', '1.2.3.4.5'],
          ['mgmtAddress', '.........'],
        ] as const
      ).map(([field, value]) => ({
        title: `enroll: ${field} ${value}`,
        method: 'POST',
        path: '/v1/enroll',
        as: 'anon',
        body: { token: w.n2Token, name: 'n2', identityKey: generateSigningKeyPair().publicKey, [field]: value },
        status: 400,
        field,
      })),
  },
  {
    // HOSTNAME_PATTERN accepts all-numeric labels: a tenant can claim a gateway's own public
    // address as its hostname and get every request that reaches the gateway by bare IP
    // (and TLS SNI never carries an IP address, RFC 6066 §3).
    title: 'an exposure hostname may not be an IPv4 address',
    cases: () => [
      {
        title: 'exposure hostname 192.0.2.1',
        method: 'PUT',
        path: '/v1/tenants/acme/exposures/e2',
        body: { protocol: 'http', hostnames: ['192.0.2.1'], mode: 'tunnel', gateways: ['gw1'], target: { selector: { app: 'web' }, port: 8080 } },
        status: 400,
        field: 'hostnames',
      },
    ],
  },
  {
    // validate.ts normalizeEgress passes `destinations[i]` to checkAllow, which appends its own
    // `[0]`: the message says "destinations[0][0].ports".
    title: 'egress port errors name destinations[i].ports',
    cases: () =>
      [
        { protocol: 'icmp', ports: [80] },
        { protocol: 'tcp', ports: ['90-80'] },
      ].map((d) => ({
        title: `egress ${JSON.stringify(d)}`,
        method: 'PUT',
        path: '/v1/tenants/acme/egress/x2',
        body: { gateways: ['gw1'], destinations: [{ cidr: '198.51.100.0/24', ...d }] },
        status: 400,
        field: /(^|[^\]])destinations\[0\]\.ports/,
      })),
  },
  {
    // Fastify answers a bad percent-encoding itself (FST_ERR_BAD_URL), bypassing the error
    // handler: {"error":"Bad Request","code":"FST_ERR_BAD_URL",...} instead of our error body.
    title: 'a malformed percent-encoding in the path gets our error body',
    cases: () => [
      { title: 'lone surrogate in a path segment', method: 'POST', path: '/v1/tenants/%ED%A0%80/workloads', body: { name: 'w2', node: 'n1' }, status: 400, field: 'url' },
      { title: 'truncated escape', method: 'DELETE', path: '/v1/tenants/acme/workloads/%E0%A4%A', status: 400, field: 'url' },
    ],
  },
];

for (const gap of FIXED_GAPS) {
  test(`regression: ${gap.title}`, async (t) => {
    const w = await world('gap');
    t.teardown(() => w.t.close());
    const cases = gap.cases(w);
    const { failures } = await runCases(w, cases);
    t.deepEqual(failures, []);
  });
}

// ---------------------------------------------------------------- fuzz

const deep = (n: number): unknown => (n === 0 ? {} : { a: deep(n - 1) });
const ATOMS: unknown[] = [
  null, true, false, 0, -1, 1, 22, 80, 443, 65535, 65536, 2 ** 31, 2 ** 53, -(2 ** 53), 1e308, 1.5, -0.0001,
  '', 'a', 'A', 'acme', 'other', 'n1', 'n3', 'gw1', 'web', 'api', 'tcp', 'udp', 'icmp', 'http', 'tls', 'tunnel', 'mesh', 'passthrough', 'terminate', 'node', 'gateway',
  '../x', '..', '/', '%00', 'é', '\u0000', '\ud800', '💥', 'x'.repeat(300), 'x'.repeat(70_000), '<script>', "'; DROP TABLE tenants; --", '__proto__', 'constructor',
  '10.0.0.0/8', '10.240.0.0/12', '300.1.1.1/24', '0.0.0.0/0', '203.0.113.5/32', '198.51.100.0/24', '1.2.3.4', '1.2.3.4:5', '1-65535', '90-80', '80', '0',
  'web.acme.test', 'x.y', 'new.acme.test', [], [1], ['x'], [null], {}, { a: 'b' }, { app: 'web' }, { __proto__: { x: 1 } }, { constructor: 'x' },
  deep(60), Array.from({ length: 500 }, (_, i) => i),
];

function pick<T>(rnd: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rnd() * xs.length)]!;
}

/** A fresh copy of a random atom (so later mutations never edit the shared one, or make cycles). */
const atom = (rnd: () => number): unknown => structuredClone(pick(rnd, ATOMS));

/** Every path (list of keys/indices) into a JSON value. */
function paths(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

function mutate(rnd: () => number, body: unknown): { body?: unknown; raw?: string } {
  let v = structuredClone(body) as unknown;
  const rounds = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < rounds; i++) {
    const all = paths(v);
    const p = pick(rnd, all);
    const parentPath = p.slice(0, -1);
    const key = p[p.length - 1];
    let parent = v as Record<string | number, unknown>;
    for (const k of parentPath) parent = parent[k] as Record<string | number, unknown>;
    const op = rnd();
    if (p.length === 0) {
      if (op < 0.3) v = atom(rnd);
      else if (v && typeof v === 'object' && !Array.isArray(v)) (v as Record<string, unknown>)[pick(rnd, ['bogus', 'name', 'labels', 'ports', '__proto__', 'constructor'])] = atom(rnd);
    } else if (op < 0.55) parent[key!] = atom(rnd);
    else if (op < 0.7) {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key!];
    } else if (op < 0.8 && Array.isArray(parent)) parent.push(structuredClone(parent[key!]));
    else if (op < 0.9 && parent && typeof parent === 'object' && !Array.isArray(parent)) parent[pick(rnd, ['extra', 'protocol', 'ports', 'cidr', 'port', 'selector'])] = atom(rnd);
    else if (typeof parent[key!] === 'number') parent[key!] = (parent[key!] as number) + pick(rnd, [-1, 1, 65535, -65536, 0.5]);
    else parent[key!] = atom(rnd);
  }
  const r = rnd();
  if (r < 0.1) {
    // Byte-level damage to the JSON text.
    const text = JSON.stringify(v) ?? '';
    const at = Math.floor(rnd() * (text.length + 1));
    const how = rnd();
    const raw = how < 0.33 ? text.slice(0, at) : how < 0.66 ? text.slice(0, at) + pick(rnd, ['"', '{', ']', ',', '\\', '\u0000', 'ÿ', '1e999']) + text.slice(at) : text.slice(0, at) + text.slice(at + 1);
    return { raw };
  }
  return { body: v };
}

test('fuzz: thousands of mutated valid bodies never produce a 5xx', async (t) => {
  t.timeout(60_000);
  const seed = Number(process.env.FUZZ_SEED ?? 20_260_101);
  const iterations = Number(process.env.FUZZ_ITERATIONS ?? 3000);
  const budgetMs = Number(process.env.FUZZ_BUDGET_MS ?? 15_000);
  const rnd = mulberry32(seed);
  const w = await world('fuzz');
  t.teardown(() => w.t.close());
  // Host-signed requests cost the coordinator a tweetnacl verification (~5-25 ms): keep them to a few percent.
  const signed = bodyRoutes(w).filter((r) => r.as && r.as !== 'anon');
  const plain = bodyRoutes(w).filter((r) => !r.as || r.as === 'anon');
  const byStatus: Record<number, number> = {};
  const started = Date.now();
  let done = 0;
  // At least MIN_FUZZ requests whatever the machine's load; the budget only cuts the rest short.
  const MIN_FUZZ = Math.min(iterations, 1000);
  for (; done < iterations && (done < MIN_FUZZ || Date.now() - started < budgetMs); done++) {
    const r = rnd() < 0.06 ? pick(rnd, signed) : pick(rnd, plain);
    const m = mutate(rnd, r.valid);
    // Now and then the path is damaged too.
    let path = r.path;
    if (rnd() < 0.05) {
      const segs = path.split('/');
      const seg = String(atom(rnd)).slice(0, 100);
      let enc: string;
      try {
        enc = encodeURIComponent(seg);
      } catch {
        enc = 'x'; // not UTF-8: a bad percent-encoding is a known gap (see KNOWN_GAPS), not fuzzed here
      }
      segs[2 + Math.floor(rnd() * (segs.length - 2))] = enc;
      path = segs.join('/');
    }
    const res = await send(w, { method: r.method, path, as: r.as, ...m });
    byStatus[res.status] = (byStatus[res.status] ?? 0) + 1;
    const where = `FUZZ_SEED=${seed} iteration ${done}: ${r.method} ${path} ${(m.raw ?? JSON.stringify(m.body) ?? '').slice(0, 300)}`;
    if (res.status >= 500) t.fail(`${where} → ${res.status} ${res.text.slice(0, 300)}`);
    if (res.status >= 400) checkErrorBody(t, res, where);
  }
  t.log(`FUZZ_SEED=${seed}: ${done} requests in ${Date.now() - started} ms: ${JSON.stringify(byStatus)}`);
  // Whatever got through left a consistent database that the API still serves.
  withReadOnly(w.t.dbPath, (db) => {
    t.is(db.pragma('integrity_check', { simple: true }), 'ok');
    t.deepEqual(db.pragma('foreign_key_check'), []);
  });
  for (const p of ['/v1/tenants', '/v1/nodes', '/v1/gateways', '/v1/tenants/acme/workloads', '/v1/tenants/acme/policies', '/v1/tenants/acme/exposures', '/v1/tenants/acme/egress', '/v1/audit?limit=10000']) {
    const r = await w.t.admin('GET', p);
    t.is(r.status, 200, `${p}: ${r.text.slice(0, 200)}`);
  }
});
