/**
 * The audit plan as a pure function: which probes each node runs and what
 * each must give, on the render fixtures (acme: a tunnel-mode entry point,
 * an egress rule; globex: a mesh-mode exposure). Every expectation must be
 * `explainFlow`'s answer — the plan never invents its own.
 */
import test from 'ava';
import { AUDIT_PORTS, planAudit, servingPorts, type AuditPlanInput, type PlannedProbe } from '../../../src/coordinator/audit-plan.js';
import type { MeshContext } from '../../../src/coordinator/model.js';
import { explainFlow } from '../../../src/coordinator/reachability.js';
import { compileTenant } from '../../../src/coordinator/render.js';
import { judge } from '../../../src/shared/audit.js';
import { TooLargeError } from '../../../src/shared/errors.js';
import { acme, globex } from './fixtures.js';

const tenants = () => [compileTenant(acme()), compileTenant(globex())];

function mesh(): MeshContext {
  const [a, g] = [acme(), globex()];
  return {
    pool: '10.240.0.0/12',
    tenants: [
      { name: 'acme', subnet: a.subnet },
      { name: 'globex', subnet: g.subnet },
    ],
    hostAddresses: [
      ...a.members.map((m) => ({ host: m.host.name, kind: m.host.kind, address: m.address, what: 'mesh' as const, tenant: 'acme' })),
      ...g.members.map((m) => ({ host: m.host.name, kind: m.host.kind, address: m.address, what: 'mesh' as const, tenant: 'globex' })),
      { host: 'node1', kind: 'node', address: '192.0.2.11', what: 'endpoint', tenant: null },
      { host: 'node1', kind: 'node', address: '198.51.100.11', what: 'mgmt', tenant: null },
      { host: 'node2', kind: 'node', address: '192.0.2.12', what: 'endpoint', tenant: null },
      { host: 'gateway1', kind: 'gateway', address: '192.0.2.21', what: 'public', tenant: null },
    ],
    coordinatorAddresses: ['198.51.100.10'],
  };
}

const input = (extra: Partial<AuditPlanInput> = {}): AuditPlanInput => ({
  tenants: tenants(),
  mesh: mesh(),
  hosts: [
    { name: 'node1', kind: 'node', listenPorts: [51820, 51821] },
    { name: 'node2', kind: 'node', listenPorts: [51820, 51821] },
    { name: 'node3', kind: 'node', listenPorts: [51820] },
    { name: 'gateway1', kind: 'gateway', listenPorts: [51820, 51821] },
    { name: 'gateway2', kind: 'gateway', listenPorts: [51820] },
  ],
  extraTargets: [{ address: '192.0.2.100' }],
  ...extra,
});

const find = (probes: PlannedProbe[], from: string, address: string, protocol: string, port: number | null) =>
  probes.find((p) => p.from === from && p.address === address && p.protocol === protocol && p.port === port);

test('deterministic, and every expectation is explainFlow\'s answer', (t) => {
  const a = planAudit(input());
  const b = planAudit(input());
  t.deepEqual(a.probes, b.probes);
  t.true(a.probes.length > 300, `${a.probes.length} probes`);
  const byName = new Map(tenants().map((c) => [c.model.name, c]));
  for (const p of a.probes) {
    const e = explainFlow({ tenant: byName.get(p.tenant)!, mesh: mesh() }, { from: p.from, to: p.address, protocol: p.protocol, ...(p.port === null ? {} : { port: p.port }) });
    if (e.allowed !== (p.expect === 'allowed') || e.reason !== p.reason) t.fail(`${p.from} → ${p.address} ${p.protocol}/${p.port}: plan ${p.expect}, explain ${e.allowed}`);
  }
  t.deepEqual(
    a.probes.map((p) => p.i),
    a.probes.map((_, i) => i),
  );
});

test('workload cells: policies, default deny, tunnel entry points, cross-tenant', (t) => {
  const { probes } = planAudit(input());
  const web = '10.240.0.66';
  const db = '10.240.0.130';
  t.like(find(probes, 'acme-web', db, 'tcp', 5432), { expect: 'allowed', rules: ['policy:web-to-db'], target: 'acme/acme-db', node: 'node1' });
  t.like(find(probes, 'acme-web', db, 'icmp', null), { expect: 'allowed' });
  t.like(find(probes, 'acme-web', db, 'tcp', 22), { expect: 'denied', reason: 'policy' });
  t.like(find(probes, 'acme-web', db, 'udp', 53), { expect: 'denied', reason: 'policy' });
  // acme-web is the entry point of a tunnel-mode exposure: its service port is probed, and denied.
  t.like(find(probes, 'acme-db', web, 'tcp', 8080), { expect: 'denied', reason: 'tunnel_entry' });
  // Cross-tenant, including the other tenant's ports in use (globex-db serves 5432-5433).
  t.like(find(probes, 'acme-web', '10.240.16.66', 'tcp', 5433), { expect: 'denied', reason: 'cross_tenant', target: 'globex/globex-db' });
  t.like(find(probes, 'globex-app', '10.240.16.66', 'tcp', 5433), { expect: 'allowed' });
  t.is(find(probes, 'globex-app', '10.240.16.66', 'tcp', 5434), undefined, 'only ports in use and the sample');
  t.is(find(probes, 'acme-web', web, 'tcp', 22), undefined, 'never a workload to itself');
});

test('host cells: every address of every host, the coordinator and the link, denied; the router client allowed', (t) => {
  const { probes } = planAudit(input());
  t.like(find(probes, 'acme-web', '198.51.100.11', 'tcp', 22), { expect: 'denied', reason: 'to_host', target: 'node1 mgmt' });
  t.like(find(probes, 'acme-web', '192.0.2.12', 'udp', 51821), { expect: 'denied', reason: 'to_host', target: 'node2 endpoint' });
  t.like(find(probes, 'acme-web', '198.51.100.10', 'tcp', 7300), { expect: 'denied', reason: 'to_host', target: 'coordinator' });
  t.like(find(probes, 'acme-web', '169.254.1.1', 'icmp', null), { expect: 'denied', reason: 'to_host', target: 'own node link' });
  t.like(find(probes, 'acme-web', '10.240.16.65', 'tcp', 22), { expect: 'denied', reason: 'to_host', target: 'node1 mesh(globex)' }, 'its own node, in any tenant');
  t.like(find(probes, 'acme-web', '10.240.16.129', 'tcp', 22), { expect: 'denied', reason: 'cross_tenant', target: 'node2 mesh(globex)' });
  // acme-web's router client dials its gateways' router servers: the one host cell that is open.
  t.like(find(probes, 'acme-web', '10.240.0.1', 'tcp', 7400), { expect: 'allowed', rules: ['exposure:web'] });
  t.like(find(probes, 'acme-db', '10.240.0.1', 'tcp', 7400), { expect: 'denied', reason: 'to_host' });
  for (const port of AUDIT_PORTS.hostTcp) t.truthy(find(probes, 'globex-db', '192.0.2.21', 'tcp', port), `gateway1 public tcp ${port}`);
});

test('egress cells: the rule\'s port allowed for its tenant, another port and other tenants denied; extra targets', (t) => {
  const { probes } = planAudit(input());
  t.like(find(probes, 'acme-db', '203.0.113.10', 'tcp', 80), { expect: 'allowed', rules: ['egress:internet-web'], target: 'egress acme/internet-web' });
  t.like(find(probes, 'acme-db', '203.0.113.10', 'tcp', 8080), { expect: 'denied', reason: 'egress' });
  t.like(find(probes, 'acme-db', '203.0.113.10', 'icmp', null), { expect: 'denied', reason: 'egress' });
  t.like(find(probes, 'globex-app', '203.0.113.10', 'tcp', 80), { expect: 'denied', reason: 'egress' });
  for (const port of AUDIT_PORTS.extraTcp) t.like(find(probes, 'globex-app', '192.0.2.100', 'tcp', port), { expect: 'denied', target: 'extra target' });
  t.like(find(probes, 'globex-app', '192.0.2.100', 'icmp', null), { expect: 'denied' });
  const only = planAudit(input({ extraTargets: [{ address: '203.0.113.10', udp: [53], icmp: false }] })).probes;
  t.like(find(only, 'acme-db', '203.0.113.10', 'udp', 53), { expect: 'denied', target: 'egress acme/internet-web, extra target' });
});

test('sources: only the chosen tenants probe, every tenant stays a target; probes grouped by node', (t) => {
  const plan = planAudit(input({ sources: ['globex'] }));
  t.deepEqual(plan.tenants, ['globex']);
  t.true(plan.probes.every((p) => p.tenant === 'globex'));
  t.truthy(find(plan.probes, 'globex-app', '10.240.0.130', 'tcp', 5432), 'acme workloads are targets');
  t.deepEqual([...plan.nodes.keys()].sort(), ['node1', 'node2']);
  for (const [node, list] of plan.nodes) t.true(list.every((i) => plan.probes[i]!.node === node));
  t.is([...plan.nodes.values()].reduce((n, l) => n + l.length, 0), plan.probes.length);
});

test('serving ports: the ends of policy ranges and the exposure port, besides the sample', (t) => {
  const [, g] = tenants();
  t.deepEqual(servingPorts(g!, g!.workloads.get('globex-db')!), { tcp: [5432, 5433], udp: [] });
  t.deepEqual(servingPorts(g!, g!.workloads.get('globex-app')!), { tcp: [8080], udp: [] });
});

test('too many probes: 413 before anything is explained', (t) => {
  t.throws(() => planAudit(input({ limit: 100 })), { instanceOf: TooLargeError, message: /more than 100 probes/ });
});

test('judge: denied needs silence; allowed needs the target to answer; UDP silence is inconclusive', (t) => {
  t.is(judge('denied', 'tcp', 'silent'), 'match');
  t.is(judge('denied', 'tcp', 'unreachable'), 'match');
  t.is(judge('denied', 'tcp', 'refused'), 'violation', 'a RST came from the target: the packet got through');
  t.is(judge('denied', 'udp', 'answered'), 'violation');
  t.is(judge('allowed', 'tcp', 'refused'), 'match', 'no listener, but reached');
  t.is(judge('allowed', 'tcp', 'silent'), 'broken');
  t.is(judge('allowed', 'icmp', 'unreachable'), 'broken');
  t.is(judge('allowed', 'udp', 'silent'), 'inconclusive');
  t.is(judge('allowed', 'udp', 'refused'), 'match');
  t.is(judge('denied', 'icmp', 'error'), 'error');
});
