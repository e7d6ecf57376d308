/**
 * Reachability as pure functions: explain a flow, the matrix, what-if. The
 * world is the render fixtures (acme and globex on node1..3 and gateway1..2)
 * plus a few policies, so explanations follow the same compiled tenant the
 * nodes are sent.
 */
import test from 'ava';
import type { MeshContext, PolicySpec, TenantModel } from '../../../src/coordinator/model.js';
import { explainFlow, reachabilityMatrix, whatIf, type DenyReason, type Flow, type FlowQuery, type MatrixFlow, type ReachabilityModel } from '../../../src/coordinator/reachability.js';
import { compileTenant, withWorkload } from '../../../src/coordinator/render.js';
import { NotFoundError, TooLargeError, ValidationError } from '../../../src/shared/errors.js';
import type { Labels } from '../../../src/shared/names.js';
import { mergeRanges, subtractRanges } from '../../../src/shared/ports.js';
import { acme, globex } from './fixtures.js';

/**
 * acme (acme-web is the entry point of the tunnel-mode exposure "web") plus
 * acme-api and more policies: two that both allow web → db tcp 5432, a port
 * range, an all-ports udp rule, and one towards the tunnel entry point.
 */
function world(): TenantModel {
  const a = acme();
  a.workloads.push({ name: 'acme-api', node: 'node3', address: '10.240.0.194', labels: { app: 'api' } });
  a.policies.push(
    { name: 'any-to-db', spec: { from: {}, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: ['5432-5433'] }] } },
    { name: 'batch-to-api', spec: { from: { app: 'batch' }, to: { app: 'api' }, allow: [{ protocol: 'tcp', ports: ['8000-8080', 9000] }, { protocol: 'udp' }] } },
    { name: 'batch-to-web', spec: { from: { app: 'batch' }, to: { app: 'web' }, allow: [{ protocol: 'tcp', ports: [8080] }] } },
  );
  a.egress.push({ name: 'ssh-out', spec: { gateways: ['gateway2'], destinations: [{ cidr: '192.0.2.0/24', protocol: 'tcp', ports: [22] }, { cidr: '198.51.100.0/24', protocol: 'icmp' }, { cidr: '169.254.169.0/24', protocol: 'tcp', ports: [80] }] } });
  return a;
}

const mesh: MeshContext = {
  pool: '10.240.0.0/12',
  tenants: [
    { name: 'acme', subnet: '10.240.0.0/20' },
    { name: 'globex', subnet: '10.240.16.0/20' },
  ],
  hostAddresses: [
    ...globex().members.map((m) => ({ host: m.host.name, kind: m.host.kind, address: m.address, what: 'mesh' as const, tenant: 'globex' })),
    { host: 'node2', kind: 'node', address: '192.0.2.12', what: 'endpoint', tenant: null },
    { host: 'node1', kind: 'node', address: '172.16.0.11', what: 'mgmt', tenant: null },
    { host: 'node9', kind: 'node', address: '192.0.2.99', what: 'public', tenant: null },
  ],
  coordinatorAddresses: ['172.16.0.1'],
};

const model = (): ReachabilityModel => ({ tenant: compileTenant(world()), mesh });
const p = (port: number) => [{ from: port, to: port }];

interface Case {
  title: string;
  q: FlowQuery;
  allowed: boolean;
  reason?: DenyReason;
  /** Names of the rules cited, `kind:name`. */
  rules?: string[];
  ports?: { from: number; to: number }[];
  verdict?: RegExp;
}

const W = 'acme-web';
const D = 'acme-db';
const B = 'acme-batch';
const A = 'acme-api';
const cases: Case[] = [
  // same tenant: policies, default deny, direction, protocols, ports
  { title: 'allowed by two policies at once', q: { from: W, to: D, protocol: 'tcp', port: 5432 }, allowed: true, rules: ['policy:any-to-db', 'policy:web-to-db'], verdict: /allowed by policies "any-to-db" and "web-to-db"/ },
  { title: 'the other policy alone', q: { from: W, to: D, protocol: 'tcp', port: 5433 }, allowed: true, rules: ['policy:any-to-db'], ports: [{ from: 5432, to: 5433 }] },
  { title: 'a port no policy allows', q: { from: W, to: D, protocol: 'tcp', port: 22 }, allowed: false, reason: 'policy', ports: [{ from: 5432, to: 5433 }], verdict: /no policy .* allows it.*tcp ports 5432-5433 would be allowed/ },
  { title: 'no port: which ports', q: { from: W, to: D, protocol: 'tcp' }, allowed: true, ports: [{ from: 5432, to: 5433 }], rules: ['policy:any-to-db', 'policy:web-to-db'], verdict: /on ports 5432-5433/ },
  { title: 'icmp allowed', q: { from: W, to: D, protocol: 'icmp' }, allowed: true, rules: ['policy:web-to-db'] },
  { title: 'policies have a direction', q: { from: A, to: B, protocol: 'tcp', port: 8000 }, allowed: false, reason: 'policy' },
  { title: 'udp not allowed web → db', q: { from: W, to: D, protocol: 'udp', port: 5432 }, allowed: false, reason: 'policy', ports: [] },
  { title: 'range: first port', q: { from: B, to: A, protocol: 'tcp', port: 8000 }, allowed: true, rules: ['policy:batch-to-api'] },
  { title: 'range: last port', q: { from: B, to: A, protocol: 'tcp', port: 8080 }, allowed: true },
  { title: 'range: just below', q: { from: B, to: A, protocol: 'tcp', port: 7999 }, allowed: false, reason: 'policy' },
  { title: 'range: just above', q: { from: B, to: A, protocol: 'tcp', port: 8081 }, allowed: false, reason: 'policy' },
  { title: 'single port next to a range', q: { from: B, to: A, protocol: 'tcp' }, allowed: true, ports: [{ from: 8000, to: 8080 }, { from: 9000, to: 9000 }] },
  { title: 'a rule without ports allows every port', q: { from: B, to: A, protocol: 'udp', port: 65535 }, allowed: true, ports: [{ from: 1, to: 65535 }], verdict: /allowed by policy "batch-to-api"/ },
  {
    title: 'a tunnel entry point accepts nothing, whatever the policies say',
    q: { from: B, to: W, protocol: 'tcp', port: 8080 },
    allowed: false,
    reason: 'tunnel_entry',
    ports: [],
    verdict: /acme-web is an entry point of tunnel-mode exposure "web" and accepts no connection at all/,
  },
  { title: 'a tunnel entry point by its address', q: { from: D, to: '10.240.0.66', protocol: 'icmp' }, allowed: false, reason: 'tunnel_entry' },
  { title: 'a tunnel entry point may still open connections', q: { from: W, to: A, protocol: 'tcp', port: 5432 }, allowed: false, reason: 'policy' },
  { title: 'an empty selector matches every workload', q: { from: B, to: D, protocol: 'tcp', port: 5432 }, allowed: true, rules: ['policy:any-to-db'] },
  { title: 'a workload by its address', q: { from: W, to: '10.240.0.130', protocol: 'tcp', port: 5432 }, allowed: true, rules: ['policy:any-to-db', 'policy:web-to-db'] },
  { title: 'its own address never leaves the workload', q: { from: W, to: W, protocol: 'tcp', port: 1 }, allowed: true, rules: [], verdict: /never leaves/ },
  { title: 'loopback', q: { from: W, to: '127.0.0.1', protocol: 'udp', port: 53 }, allowed: true, rules: [] },

  // other tenants
  { title: 'cross-tenant workload', q: { from: W, to: '10.240.16.66', protocol: 'tcp', port: 5432 }, allowed: false, reason: 'cross_tenant', verdict: /cross-tenant traffic is never allowed/ },
  { title: 'cross-tenant, unallocated', q: { from: W, to: '10.240.31.200', protocol: 'icmp' }, allowed: false, reason: 'cross_tenant' },
  { title: "another tenant's gateway", q: { from: W, to: '10.240.16.1', protocol: 'tcp', port: 7400 }, allowed: false, reason: 'cross_tenant' },
  { title: "its own node's address in another tenant", q: { from: W, to: '10.240.16.65', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host', verdict: /own node/ },

  // hosts
  { title: "its node's mesh address", q: { from: W, to: '10.240.0.65', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host', verdict: /mesh address of node node1, the workload's own node/ },
  { title: "its node's management address", q: { from: W, to: '172.16.0.11', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host' },
  { title: "another node's mesh address", q: { from: W, to: '10.240.0.129', protocol: 'icmp' }, allowed: false, reason: 'to_host', verdict: /mesh address of node node2;/ },
  { title: "a node's underlay endpoint", q: { from: W, to: '192.0.2.11', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host' },
  { title: 'a host address an egress rule covers is still a host', q: { from: W, to: '192.0.2.12', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host', verdict: /underlay endpoint of node node2.*but egress "ssh-out" covers it: narrow the rule$/ },
  { title: 'a host of no concern to the tenant is not named', q: { from: W, to: '192.0.2.99', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host', verdict: /public address of a netwall host/ },
  { title: 'the coordinator', q: { from: W, to: '172.16.0.1', protocol: 'tcp', port: 7300 }, allowed: false, reason: 'to_host', verdict: /coordinator/ },
  { title: 'metadata service (link-local)', q: { from: W, to: '169.254.169.254', protocol: 'tcp', port: 443 }, allowed: false, reason: 'to_host', verdict: /link-local/ },
  { title: "the container's default gateway", q: { from: B, to: '169.254.1.1', protocol: 'tcp', port: 22 }, allowed: false, reason: 'to_host', verdict: /own node node2/ },
  { title: "a gateway's mesh address", q: { from: D, to: '10.240.0.1', protocol: 'tcp', port: 7400 }, allowed: false, reason: 'to_host', verdict: /only tunnel entry points reach their gateways, tcp 7400/ },

  // tunnel entry points dial their gateways
  { title: 'router client to gateway1', q: { from: W, to: '10.240.0.1', protocol: 'tcp', port: 7400 }, allowed: true, rules: ['exposure:web'] },
  { title: 'router client to gateway2', q: { from: W, to: '10.240.0.2', protocol: 'tcp' }, allowed: true, rules: ['exposure:web'], ports: p(7400) },
  { title: 'router client, another port', q: { from: W, to: '10.240.0.1', protocol: 'tcp', port: 80 }, allowed: false, reason: 'to_host', ports: p(7400) },
  { title: 'router client, udp', q: { from: W, to: '10.240.0.1', protocol: 'udp', port: 7400 }, allowed: false, reason: 'to_host' },

  // unknown mesh addresses
  { title: 'an unallocated address of the tenant', q: { from: W, to: '10.240.0.99', protocol: 'tcp', port: 80 }, allowed: false, reason: 'unknown_address' },
  { title: 'in the pool, no tenant', q: { from: W, to: '10.250.0.1', protocol: 'tcp', port: 80 }, allowed: false, reason: 'unknown_address', verdict: /not in any tenant's subnet/ },

  // egress
  { title: 'egress allowed', q: { from: W, to: '203.0.113.10', protocol: 'tcp', port: 80 }, allowed: true, rules: ['egress:internet-web'], verdict: /egress rule "internet-web"; it leaves through gateway gateway1/ },
  { title: 'egress, port not listed', q: { from: W, to: '203.0.113.10', protocol: 'tcp', port: 443 }, allowed: false, reason: 'egress', ports: p(80) },
  { title: 'egress, address not listed', q: { from: W, to: '203.0.113.11', protocol: 'tcp', port: 80 }, allowed: false, reason: 'egress', ports: [] },
  { title: 'egress, protocol not listed', q: { from: W, to: '203.0.113.10', protocol: 'udp', port: 80 }, allowed: false, reason: 'egress' },
  { title: 'egress icmp to a CIDR', q: { from: B, to: '198.51.100.7', protocol: 'icmp' }, allowed: true, rules: ['egress:ssh-out'] },
  { title: 'egress through a CIDR with ports', q: { from: B, to: '192.0.2.200', protocol: 'tcp', port: 22 }, allowed: true, rules: ['egress:ssh-out'], verdict: /gateway gateway1/ },
];

for (const c of cases) {
  test(`explain: ${c.title}`, (t) => {
    const e = explainFlow(model(), c.q);
    t.is(e.allowed, c.allowed, e.verdict);
    t.is(e.reason, c.allowed ? null : (c.reason ?? null), e.verdict);
    if (!c.allowed) t.deepEqual(e.rules, []);
    if (c.rules) t.deepEqual(e.rules.map((r) => `${r.kind}:${r.name}`), c.rules, e.verdict);
    if (c.ports) t.deepEqual(e.ports, c.ports, e.verdict);
    if (c.q.protocol === 'icmp') t.false('ports' in e);
    if (c.verdict) t.regex(e.verdict, c.verdict);
    t.regex(e.verdict, new RegExp(`^${c.q.protocol}.* is ${c.allowed ? 'allowed' : 'denied'}|never leaves`));
  });
}

test('explain: a policy citation carries its selectors and the ports it allows', (t) => {
  const e = explainFlow(model(), { from: W, to: D, protocol: 'tcp', port: 5432 });
  t.deepEqual(e.rules[1], { kind: 'policy', name: 'web-to-db', from: { app: 'web' }, to: { app: 'db' }, protocol: 'tcp', ports: p(5432) });
  t.deepEqual(e.from, { workload: W, address: '10.240.0.66', node: 'node1' });
  t.deepEqual(e.to, { workload: D, address: '10.240.0.130' });
  const x = explainFlow(model(), { from: W, to: '203.0.113.10', protocol: 'tcp', port: 80 });
  t.deepEqual(x.rules, [{ kind: 'egress', name: 'internet-web', cidr: '203.0.113.10/32', protocol: 'tcp', ports: p(80), gateway: 'gateway1' }]);
  t.deepEqual(x.to, { workload: null, address: '203.0.113.10' });
});

test('explain: a host inside an egress rule is denied with a warning (the firewalls would let it through)', (t) => {
  const e = explainFlow(model(), { from: W, to: '192.0.2.12', protocol: 'tcp', port: 22 });
  t.regex(e.warning ?? '', /^egress "ssh-out" covers 192\.0\.2\.12, a netwall host/);
  t.false('warning' in explainFlow(model(), { from: W, to: '192.0.2.12', protocol: 'tcp', port: 23 }));
  t.false('warning' in explainFlow(model(), { from: W, to: D, protocol: 'tcp', port: 5432 }));
  // Link-local: a metadata service behind the egress gateway.
  const meta = explainFlow(model(), { from: W, to: '169.254.169.254', protocol: 'tcp', port: 80 });
  t.like(meta, { allowed: false, reason: 'to_host' });
  t.regex(meta.warning ?? '', /a link-local address/);
  // The egress gateway's own address: it takes nothing from the mesh, whatever the allow list says.
  const gw = explainFlow(model(), { from: W, to: '192.0.2.21', protocol: 'tcp', port: 22 });
  t.like(gw, { allowed: false, reason: 'to_host' });
  t.false('warning' in gw);
  // Its own node: delivered locally and dropped there.
  t.false('warning' in explainFlow(model(), { from: W, to: '192.0.2.11', protocol: 'tcp', port: 22 }));
});

test('explain: without an egress gateway nothing leaves', (t) => {
  const g = globex();
  g.egress = [];
  const e = explainFlow({ tenant: g, mesh }, { from: 'globex-app', to: '203.0.113.10', protocol: 'tcp', port: 80 });
  t.false(e.allowed);
  t.is(e.reason, 'egress');
  t.regex(e.verdict, /no egress gateway/);
});

test('explain: without the mesh context only the tenant itself is known', (t) => {
  const e = explainFlow({ tenant: world() }, { from: W, to: '10.240.16.66', protocol: 'tcp', port: 80 });
  t.false(e.allowed);
  t.is(e.reason, 'egress');
  // Its own members are still hosts.
  t.is(explainFlow({ tenant: world() }, { from: W, to: '192.0.2.12', protocol: 'tcp', port: 22 }).reason, 'to_host');
});

test('explain: bad questions name the field', (t) => {
  const m = model();
  t.regex(t.throws(() => explainFlow(m, { from: 'nope', to: D, protocol: 'tcp' }), { instanceOf: NotFoundError }).message, /^from: workload "nope" does not exist in tenant "acme"/);
  t.regex(t.throws(() => explainFlow(m, { from: W, to: 'nope', protocol: 'tcp' }), { instanceOf: NotFoundError }).message, /^to: workload "nope"/);
  t.is((t.throws(() => explainFlow(m, { from: W, to: D, protocol: 'icmp', port: 1 }), { instanceOf: ValidationError }) as ValidationError).field, 'port');
  t.is((t.throws(() => explainFlow(m, { from: W, to: D, protocol: 'tcp', port: 70000 }), { instanceOf: ValidationError }) as ValidationError).field, 'port');
  t.is((t.throws(() => explainFlow(m, { from: W, to: '300.1.1.1', protocol: 'tcp' }), { instanceOf: ValidationError }) as ValidationError).field, 'to');
  // A workload of another tenant is not found by name: names are per tenant.
  t.throws(() => explainFlow(m, { from: W, to: 'globex-db', protocol: 'tcp' }), { instanceOf: NotFoundError });
});

// ---------------------------------------------------------------- matrix

test('matrix: every allowed pair, ports merged across policies, self pairs left out', (t) => {
  const m = reachabilityMatrix(world());
  t.deepEqual(m.workloads, ['acme-api', 'acme-batch', 'acme-db', 'acme-web']);
  t.deepEqual(m.flows, [
    { from: A, to: D, protocol: 'tcp', ports: [{ from: 5432, to: 5433 }], policies: ['any-to-db'] },
    { from: B, to: A, protocol: 'tcp', ports: [{ from: 8000, to: 8080 }, { from: 9000, to: 9000 }], policies: ['batch-to-api'] },
    { from: B, to: A, protocol: 'udp', ports: [{ from: 1, to: 65535 }], policies: ['batch-to-api'] },
    { from: B, to: D, protocol: 'tcp', ports: [{ from: 5432, to: 5433 }], policies: ['any-to-db'] },
    { from: W, to: D, protocol: 'tcp', ports: [{ from: 5432, to: 5433 }], policies: ['any-to-db', 'web-to-db'] },
    { from: W, to: D, protocol: 'icmp', policies: ['web-to-db'] },
  ] satisfies MatrixFlow[]);
  // acme-db is in the empty selector's group too, but never reaches itself on the wire.
  t.false(m.flows.some((f) => f.from === f.to));
  // batch-to-web allows tcp 8080 to acme-web, but a tunnel entry point accepts nothing.
  t.false(m.flows.some((f) => f.to === W));
});

test('matrix and explain agree on every pair, protocol and a few ports', (t) => {
  const tenant = compileTenant(world());
  const m = reachabilityMatrix(tenant);
  const names = tenant.workloads.toArray().map((w) => w.name);
  for (const from of names) {
    for (const to of names) {
      if (from === to) continue;
      for (const protocol of ['tcp', 'udp', 'icmp'] as const) {
        const flow = m.flows.find((f) => f.from === from && f.to === to && f.protocol === protocol);
        const e = explainFlow({ tenant, mesh }, { from, to, protocol });
        t.is(e.allowed, flow !== undefined, `${from} → ${to} ${protocol}`);
        if (protocol !== 'icmp') {
          t.deepEqual(e.ports, flow?.ports ?? []);
          for (const port of [1, 22, 5432, 5433, 8000, 8081, 9000, 65535]) {
            const inFlow = (flow?.ports ?? []).some((r) => r.from <= port && port <= r.to);
            t.is(explainFlow({ tenant, mesh }, { from, to, protocol, port }).allowed, inFlow, `${from} → ${to} ${protocol}:${port}`);
          }
        }
      }
    }
  }
});

test('matrix: a workload added incrementally (withWorkload) shows up like a recompiled one', (t) => {
  const w = { name: 'acme-web2', node: 'node3', address: '10.240.0.195', labels: { app: 'web' } };
  const patched = withWorkload(compileTenant(world()), w, 'add');
  const fresh = world();
  fresh.workloads.push(w);
  t.deepEqual(reachabilityMatrix(patched), reachabilityMatrix(fresh));
  t.true(reachabilityMatrix(patched).flows.some((f) => f.from === 'acme-web2' && f.to === D));
});

test('matrix: too many flows is a 413, not an out-of-memory coordinator', (t) => {
  const a = world();
  a.policies.push({ name: 'all', spec: { from: {}, to: {}, allow: [{ protocol: 'tcp' }] } });
  t.throws(() => reachabilityMatrix(a, 3), { instanceOf: TooLargeError, message: /more than 3 flows/ });
  t.throws(() => whatIf(a, { op: 'delete', name: 'all' }, 3), { instanceOf: TooLargeError });
});

// ---------------------------------------------------------------- what-if

/** The diff of two full matrices, the slow obvious way. */
function fullDiff(before: TenantModel, after: TenantModel) {
  const key = (f: MatrixFlow) => `${f.from}>${f.to}>${f.protocol}`;
  const a = new Map(reachabilityMatrix(before).flows.map((f) => [key(f), f]));
  const b = new Map(reachabilityMatrix(after).flows.map((f) => [key(f), f]));
  const side = (x: Map<string, MatrixFlow>, y: Map<string, MatrixFlow>): Flow[] =>
    [...x].flatMap(([k, f]): Flow[] => {
      const other = y.get(k);
      if (f.protocol === 'icmp') return other ? [] : [{ from: f.from, to: f.to, protocol: f.protocol }];
      const ports = subtractRanges(f.ports!, other?.ports ?? []);
      return ports.length ? [{ from: f.from, to: f.to, protocol: f.protocol, ports }] : [];
    });
  return { added: side(b, a), removed: side(a, b) };
}

test('what-if: narrowing a policy removes ports, a new protocol adds a flow', (t) => {
  const r = whatIf(world(), { op: 'put', name: 'web-to-db', spec: { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5000, '6000-6001'] }] } });
  t.like(r, { tenant: 'acme', op: 'put', policy: 'web-to-db', created: false });
  t.deepEqual(r.added, [{ from: W, to: D, protocol: 'tcp', ports: [p(5000)[0]!, { from: 6000, to: 6001 }] }]);
  // tcp 5432 stays: any-to-db allows it too.
  t.deepEqual(r.removed, [{ from: W, to: D, protocol: 'icmp' }]);
});

test('what-if: deleting a policy removes only what no other policy allows', (t) => {
  const r = whatIf(world(), { op: 'delete', name: 'any-to-db' });
  t.deepEqual(r.added, []);
  t.deepEqual(r.removed, [
    { from: A, to: D, protocol: 'tcp', ports: [{ from: 5432, to: 5433 }] },
    { from: B, to: D, protocol: 'tcp', ports: [{ from: 5432, to: 5433 }] },
    { from: W, to: D, protocol: 'tcp', ports: p(5433) },
  ]);
});

test('what-if: a new policy that allows nothing new changes nothing', (t) => {
  const r = whatIf(world(), { op: 'put', name: 'dup', spec: { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'icmp' }] } });
  t.deepEqual(r, { tenant: 'acme', op: 'put', policy: 'dup', created: true, added: [], removed: [] });
});

test('what-if: deleting an unknown policy is a 404 naming it', (t) => {
  t.throws(() => whatIf(world(), { op: 'delete', name: 'nope' }), { instanceOf: NotFoundError, message: 'policy "nope" does not exist in tenant "acme"' });
});

test('what-if never touches the model it was given (nor the compiled tenant the store caches)', (t) => {
  const tenant = compileTenant(world());
  const before = JSON.stringify({ model: tenant.model, workloads: tenant.workloads, rules: tenant.rules, groups: [...tenant.groups] });
  const matrix = reachabilityMatrix(tenant);
  whatIf(tenant, { op: 'put', name: 'web-to-db', spec: { from: {}, to: {}, allow: [{ protocol: 'udp' }] } });
  whatIf(tenant, { op: 'delete', name: 'web-to-db' });
  t.is(JSON.stringify({ model: tenant.model, workloads: tenant.workloads, rules: tenant.rules, groups: [...tenant.groups] }), before);
  t.deepEqual(reachabilityMatrix(tenant), matrix);
});

test('what-if equals the diff of the full matrices before and after, for many changes', (t) => {
  const selectors: Labels[] = [{}, { app: 'web' }, { app: 'db' }, { app: 'batch' }, { app: 'none' }];
  const allows: PolicySpec['allow'][] = [
    [{ protocol: 'tcp' }],
    [{ protocol: 'tcp', ports: [5432] }],
    [{ protocol: 'tcp', ports: ['5000-5500', 9000] }, { protocol: 'icmp' }],
    [{ protocol: 'udp', ports: [53] }],
    [{ protocol: 'icmp' }],
  ];
  let n = 0;
  let both = 0;
  for (const name of ['web-to-db', 'any-to-db', 'new']) {
    for (const [i, from] of selectors.entries()) {
      const to = selectors[(i * 3 + n) % selectors.length]!;
      const allow = allows[(i + n) % allows.length]!;
      n++;
      const before = world();
      const spec = { from, to, allow };
      const after = { ...before, policies: [...before.policies.filter((x) => x.name !== name), { name, spec }] };
      const r = whatIf(before, { op: 'put', name, spec });
      t.deepEqual({ added: r.added, removed: r.removed }, fullDiff(before, after), `${name}: ${JSON.stringify(spec)}`);
      if (r.added.length && r.removed.length) both++;
    }
    const before = world();
    if (before.policies.some((x) => x.name === name)) {
      const r = whatIf(before, { op: 'delete', name });
      t.deepEqual({ added: r.added, removed: r.removed }, fullDiff(before, { ...before, policies: before.policies.filter((x) => x.name !== name) }));
    }
  }
  t.true(both >= 3, `only ${both} changes both added and removed flows: the cases are too tame`);
});

test('port range helpers: merge and subtract', (t) => {
  t.deepEqual(mergeRanges([{ from: 10, to: 20 }, { from: 1, to: 5 }, { from: 6, to: 8 }, { from: 15, to: 30 }]), [{ from: 1, to: 8 }, { from: 10, to: 30 }]);
  t.deepEqual(subtractRanges([{ from: 1, to: 100 }], [{ from: 10, to: 20 }, { from: 50, to: 50 }]), [{ from: 1, to: 9 }, { from: 21, to: 49 }, { from: 51, to: 100 }]);
  t.deepEqual(subtractRanges([{ from: 1, to: 10 }, { from: 20, to: 30 }], [{ from: 5, to: 25 }]), [{ from: 1, to: 4 }, { from: 26, to: 30 }]);
  t.deepEqual(subtractRanges([{ from: 5, to: 6 }], [{ from: 1, to: 65535 }]), []);
  t.deepEqual(subtractRanges([{ from: 5, to: 6 }], []), [{ from: 5, to: 6 }]);
});
