import test from 'ava';
import { DEFAULT_RENDER_SETTINGS, type WorkloadModel } from '../../../src/coordinator/model.js';
import { compileTenant, hostsAffectedByWorkload, renderHost, selectorGroupId, withWorkload, type CompiledTenant } from '../../../src/coordinator/render.js';
import { golden } from '../../helpers/golden.js';
import { acme, dumpCompiled, globex, hosts } from './fixtures.js';

const compiled = () => [compileTenant(acme()), compileTenant(globex())];
const render = (name: string, version = 7) => renderHost({ ...hosts[name]!, version, tenants: compiled() }, DEFAULT_RENDER_SETTINGS);

for (const name of ['node1', 'node2', 'node3', 'gateway1', 'gateway2']) {
  test(`golden desired state: ${name}`, (t) => {
    golden(t, `coordinator/desired-${name}.json`, `${JSON.stringify(render(name), null, 2)}\n`);
  });
}

test('rendering is deterministic whatever the input order', (t) => {
  const a = acme();
  const shuffled = { ...a, workloads: [...a.workloads].reverse(), members: [...a.members].reverse(), policies: [...a.policies].reverse() };
  const one = renderHost({ ...hosts.node1!, version: 1, tenants: [compileTenant(a)] }, DEFAULT_RENDER_SETTINGS);
  const two = renderHost({ ...hosts.node1!, version: 1, tenants: [compileTenant(shuffled)] }, DEFAULT_RENDER_SETTINGS);
  // Peers keep member order by design (the store loads them sorted); compare the rest.
  t.deepEqual({ ...one.tenants[0], peers: [] }, { ...two.tenants[0], peers: [] });
});

test('a node peers with every keyed member but itself; a gateway only with nodes', (t) => {
  const n1 = render('node1').tenants.find((x) => x.tenant === 'acme')!;
  // The list is shared by all members and includes the host itself, which skips it; node3 has no key yet.
  t.deepEqual(n1.peers.map((p) => p.host), ['gateway1', 'gateway2', 'node1', 'node2']);
  const g1 = render('gateway1').tenants.find((x) => x.tenant === 'acme')!;
  t.deepEqual(g1.peers.map((p) => p.host), ['node1', 'node2']);
});

test('egress destinations ride on the egress gateway peer only', (t) => {
  const n1 = render('node1').tenants.find((x) => x.tenant === 'acme')!;
  t.deepEqual(n1.peers.find((p) => p.host === 'gateway1')!.allowedIps, ['10.240.0.1/32', '203.0.113.10/32']);
  t.deepEqual(n1.peers.find((p) => p.host === 'gateway2')!.allowedIps, ['10.240.0.2/32']);
  t.deepEqual(render('gateway1').tenants.find((x) => x.tenant === 'acme')!.peers.map((p) => p.allowedIps), [['10.240.0.64/26'], ['10.240.0.128/26']]);
  t.deepEqual(n1.egress.gateway, { host: 'gateway1', meshAddress: '10.240.0.1' });
  t.deepEqual(render('gateway1').tenants.find((x) => x.tenant === 'globex')!.egress, { gateway: null, allow: [] });
});

test('a host behind NAT is told to keep NAT mappings alive; others are not', (t) => {
  t.is(render('node3').settings.keepaliveSeconds, 25);
  t.is(render('node1').settings.keepaliveSeconds, null);
});

test('documents share the tenant peer list instead of copying it', (t) => {
  const world = compiled();
  const a = renderHost({ ...hosts.node1!, version: 1, tenants: world }, DEFAULT_RENDER_SETTINGS);
  const b = renderHost({ ...hosts.node2!, version: 1, tenants: world }, DEFAULT_RENDER_SETTINGS);
  t.is(a.tenants[0]!.peers, b.tenants[0]!.peers);
});

test('withWorkload gives the same result as compiling from scratch', (t) => {
  const base = acme();
  const added = { name: 'acme-web2', node: 'node2', address: '10.240.0.132', labels: { app: 'web' } };
  const incremental = withWorkload(compileTenant(base), added, 'add');
  const full = compileTenant({ ...base, workloads: [...base.workloads, added] });
  for (const n of ['node1', 'node2', 'gateway1']) {
    const r = (c: typeof full) => JSON.stringify(renderHost({ ...hosts[n]!, version: 1, tenants: [c] }, DEFAULT_RENDER_SETTINGS));
    t.is(r(incremental), r(full), n);
  }
  const removed = withWorkload(incremental, added, 'remove');
  const original = compileTenant(base);
  for (const n of ['node1', 'node2', 'gateway2']) {
    const r = (c: typeof full) => JSON.stringify(renderHost({ ...hosts[n]!, version: 1, tenants: [c] }, DEFAULT_RENDER_SETTINGS));
    t.is(r(removed), r(original), n);
  }
});

test('a node only carries the rules and groups it enforces', (t) => {
  const world = [compileTenant(acme())];
  const doc = (n: string) => renderHost({ ...hosts[n]!, version: 1, tenants: world }, DEFAULT_RENDER_SETTINGS).tenants[0]!;
  t.is(doc('node1').firewall.rules.length, 2); // web side of web-to-db (tcp + icmp)
  t.is(doc('node2').firewall.rules.length, 2); // db side
  t.deepEqual(doc('node3').firewall, { groups: {}, rules: [] }); // no workloads
  t.deepEqual(doc('node1').firewall.groups[selectorGroupId({ app: 'db' })], ['10.240.0.130']);
});

test('mesh-mode exposures admit exactly the exposure gateways to the entry port', (t) => {
  const g = renderHost({ ...hosts.node2!, version: 1, tenants: [compileTenant(globex())] }, DEFAULT_RENDER_SETTINGS).tenants[0]!;
  const rule = g.firewall.rules.find((r) => r.origin === 'exposure:app')!;
  t.deepEqual(g.firewall.groups[rule.from], ['10.240.16.1']);
  t.deepEqual(rule.ports, [{ from: 8080, to: 8080 }]);
  t.deepEqual(g.entryPoints.map((e) => [e.workload, e.mode, e.gateways.map((x) => x.host)]), [['globex-app', 'mesh', ['gateway1']]]);
});

test('gateways receive the exposures they carry with live targets and router keys', (t) => {
  const g2 = render('gateway2');
  t.deepEqual(g2.exposures.map((e) => `${e.tenant}/${e.name}`), ['acme/web']);
  t.deepEqual(g2.exposures[0]!.targets, [{ workload: 'acme-web', node: 'node1', address: '10.240.0.66', port: 8080 }]);
  t.deepEqual(g2.exposures[0]!.routerClients, [{ workload: 'acme-web', node: 'node1', publicKey: `${'R'.repeat(43)}=` }]);
  const ep = render('node1').tenants.find((x) => x.tenant === 'acme')!.entryPoints[0]!;
  t.is(ep.routerKey, `${'R'.repeat(43)}=`);
  t.deepEqual(ep.credential, { grant: '{"v":1}', signature: 'test-signature' });
  t.is(render('node1').exposures.length, 0);
});

test('a workload no selector matches affects only its own node', (t) => {
  const c = compileTenant(acme());
  t.deepEqual([...hostsAffectedByWorkload(c, { name: 'x', node: 'node3', address: '10.240.0.194', labels: { app: 'cron' } })], ['node3']);
});

test('a workload a policy selects affects the nodes enforcing that policy and its exposure gateways', (t) => {
  const c = compileTenant(acme());
  const web = hostsAffectedByWorkload(c, { name: 'web2', node: 'node3', address: '10.240.0.194', labels: { app: 'web' } });
  t.deepEqual([...web].sort(), ['gateway1', 'gateway2', 'node1', 'node2', 'node3']);
  const db = hostsAffectedByWorkload(c, { name: 'db2', node: 'node3', address: '10.240.0.195', labels: { app: 'db' } });
  t.deepEqual([...db].sort(), ['node1', 'node2', 'node3']);
});

const renderAll = (c: CompiledTenant): string[] => Object.values(hosts).map((h) => JSON.stringify(renderHost({ ...h, version: 1, tenants: [c] }, DEFAULT_RENDER_SETTINGS)));

test('withWorkload leaves the tenant it started from as it was, and so every version after it', (t) => {
  let c = compileTenant(acme());
  const versions: { c: CompiledTenant; dump: string; docs: string[] }[] = [];
  const changes: [WorkloadModel, 'add' | 'remove'][] = [
    [{ name: 'acme-web2', node: 'node2', address: '10.240.0.132', labels: { app: 'web' } }, 'add'], // exposed, in a policy group
    [{ name: 'acme-cron', node: 'node3', address: '10.240.0.194', labels: { app: 'cron' } }, 'add'], // no group
    [acme().workloads[0]!, 'remove'], // acme-web: exposed, carries a router key
    [acme().workloads[1]!, 'remove'], // acme-db: node2 keeps other workloads
    [{ name: 'acme-db', node: 'node1', address: '10.240.0.67', labels: { app: 'db' } }, 'add'],
  ];
  for (const [w, op] of changes) {
    versions.push({ c, dump: dumpCompiled(c), docs: renderAll(c) });
    c = withWorkload(c, w, op);
  }
  for (const [i, v] of versions.entries()) {
    t.is(dumpCompiled(v.c), v.dump, `version ${i}`);
    t.deepEqual(renderAll(v.c), v.docs, `version ${i} documents`);
  }
});

test('many incremental changes give the same compiled tenant as compiling from scratch', (t) => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const truth = acme();
  let c = compileTenant(acme());
  const slices: Record<string, number> = { node1: 64, node2: 128, node3: 192 };
  for (let i = 0; i < 400; i++) {
    if (truth.workloads.length && rnd() < 0.45) {
      const w = truth.workloads[Math.floor(rnd() * truth.workloads.length)]!;
      truth.workloads = truth.workloads.filter((x) => x.name !== w.name);
      truth.routerKeys = truth.routerKeys.filter((k) => k.workload !== w.name);
      c = withWorkload(c, w, 'remove');
    } else {
      const node = ['node1', 'node2', 'node3'][Math.floor(rnd() * 3)]!;
      const taken = new Set(truth.workloads.map((x) => x.address));
      const host = Array.from({ length: 60 }, (_, k) => `10.240.0.${slices[node]! + 2 + k}`).find((a) => !taken.has(a));
      if (!host) continue;
      const w = { name: `w${i}`, node, address: host, labels: { app: ['web', 'db', 'batch', 'cron'][Math.floor(rnd() * 4)]! } };
      truth.workloads.push(w);
      c = withWorkload(c, w, 'add');
    }
    if (i % 40 === 39) {
      const fresh = compileTenant(truth);
      t.is(dumpCompiled(c), dumpCompiled(fresh), `after change ${i}`);
      t.deepEqual(renderAll(c), renderAll(fresh), `documents after change ${i}`);
    }
  }
});
