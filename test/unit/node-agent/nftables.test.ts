import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyFirewallChange, elementsTransaction, parseCounters, parseListing, planFirewall, readDropCounters, tableHash, validMemory, withCounterValues, type FirewallChange, type FirewallMemory, type RenderedFirewall } from '../../../src/shared/dataplane/nft-table.js';
import { egressElements, mergePorts } from '../../../src/shared/dataplane/nft-elements.js';
import { NODE_TABLE, renderFirewall, TenantRenderCache, type FirewallOptions } from '../../../src/node-agent/nftables.js';
import { cidrRange } from '../../../src/shared/dataplane/routes.js';
import type { DesiredState } from '../../../src/shared/desired.js';
import { FakeRunner } from '../../../src/shared/runner.js';
import { golden } from '../../helpers/golden.js';
import { nftCheck } from '../../helpers/nft.js';
import { emptyNode, large, twoTenants } from './dataplane-fixtures.js';

const cases: [string, () => DesiredState, FirewallOptions][] = [
  ['empty-node.nft', emptyNode, {}],
  ['two-tenants.nft', twoTenants, { underlay: { restrictInput: true, interfaces: ['eth0'] }, agentPorts: [7301] }],
  ['large.nft', () => large(3, 120, 6, 10), {}],
];

for (const [name, doc, options] of cases) {
  test(`golden: ${name}`, (t) => {
    const { text } = renderFirewall(doc(), options);
    golden(t, `node-agent/${name}`, text);
  });

  test(`nft -c accepts ${name}`, (t) => {
    const result = nftCheck(renderFirewall(doc(), options).text, NODE_TABLE);
    if (result === 'skip') {
      t.log('skipped: needs root and nft');
      t.pass();
      return;
    }
    t.is(result, null, result ?? '');
  });
}

test('the nft -c check is real: it rejects a broken table', (t) => {
  const broken = renderFirewall(twoTenants()).text.replace('goto drop_policy', 'goto no_such_chain');
  const result = nftCheck(broken, NODE_TABLE);
  if (result === 'skip') {
    t.pass();
    return;
  }
  t.truthy(result, 'nft -c accepted a table that jumps to a missing chain');
});

test('rendering is deterministic and the hash is in the table comment', (t) => {
  const a = renderFirewall(twoTenants());
  const b = renderFirewall(twoTenants());
  t.is(a.text, b.text);
  t.is(tableHash(a.text), a.hash);
  const changed = twoTenants();
  changed.tenants[0]!.firewall.rules.pop();
  t.not(renderFirewall(changed).hash, a.hash);
});

test('underlay input is left alone unless restricted; ssh stays open when restricted', (t) => {
  const open = renderFirewall(twoTenants()).text;
  t.false(open.includes('underlay_input'));
  const closed = renderFirewall(twoTenants(), { underlay: { restrictInput: true } }).text;
  t.regex(closed, /set underlay_tcp \{\n\t\ttype inet_service\n\t\telements = \{ 22 \}/);
  t.regex(closed, /\t\tgoto underlay_input\n/);
  t.regex(closed, /udp dport @wg_ports accept/);
});

/** The rule lines of one chain of a rendered table. */
function chainRules(text: string, chain: string): string[] {
  const body = new RegExp(`\\n\\tchain ${chain} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(text)?.[1] ?? '';
  return body.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('type ') && !l.startsWith('#'));
}

test("WireGuard's own UDP is untracked: to the host on its ports, from the host from them, nothing else", (t) => {
  const text = renderFirewall(twoTenants()).text;
  t.regex(text, /set wg_ports \{\n\t\ttype inet_service\n\t\telements = \{ 51821,\n\t\t\t {5}51822 \}/, 'every tenant port, restricted input or not');
  t.regex(text, /chain raw_prerouting \{\n\t\ttype filter hook prerouting priority raw;/);
  t.deepEqual(
    chainRules(text, 'raw_prerouting').slice(0, 2),
    ['udp dport @wg_ports ip daddr != @tenant_nets fib daddr type local notrack accept', 'meta nfproto ipv6 udp dport @wg_ports fib daddr type local notrack accept'],
    'routed traffic on those ports stays tracked; the host mesh addresses are no WireGuard endpoint for the underlay',
  );
  t.regex(text, /chain raw_output \{\n\t\ttype filter hook output priority raw;/);
  t.deepEqual(chainRules(text, 'raw_output'), ['udp sport @wg_ports notrack']);
  t.is(text.match(/notrack/g)?.length, 3, 'no other notrack anywhere');
});

test('tenant addresses arriving off the netwall interfaces are dropped before conntrack, not later in forward or input', (t) => {
  const text = renderFirewall(twoTenants()).text;
  t.deepEqual(chainRules(text, 'raw_prerouting').slice(2), [
    'iifname "nw-*" accept',
    'iifname "nwc*" accept',
    'iif "lo" accept',
    'ip daddr @tenant_nets goto drop_underlay',
    'ip saddr @tenant_nets goto drop_underlay',
  ]);
  // Not tested twice: the hot paths (forward from meshes and containers, input of WireGuard's UDP) skip it.
  for (const chain of ['forward', 'input']) t.false(chainRules(text, chain).some((r) => r.includes('@tenant_nets')), chain);
});

test('restricted underlay: WireGuard accepted by port, errors about its packets before the invalid drop, the rest in order', (t) => {
  const rules = chainRules(renderFirewall(twoTenants(), { underlay: { restrictInput: true } }).text, 'underlay_input');
  t.deepEqual(rules.slice(0, 2), ['ct state established,related accept', 'udp dport @wg_ports accept']);
  const errors = rules.filter((r) => r.includes('errors about our WireGuard packets'));
  t.deepEqual(errors, [
    'icmp type { destination-unreachable, time-exceeded, parameter-problem } @th,64,8 0x45 @th,136,8 17 @th,224,16 { 51821, 51822 } accept comment "errors about our WireGuard packets"',
    'icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } @th,112,8 17 @th,384,16 { 51821, 51822 } accept comment "errors about our WireGuard packets"',
  ]);
  t.deepEqual(rules.slice(2 + errors.length), ['ct state invalid goto drop_invalid', 'meta l4proto { icmp, ipv6-icmp } accept', 'tcp dport @underlay_tcp accept', 'goto drop_input']);
  // No tenant, no WireGuard port: no error rule (an empty anonymous set is no valid nft).
  t.false(renderFirewall(emptyNode(), { underlay: { restrictInput: true } }).text.includes('errors about our WireGuard packets'));
});

test('from a container, the anti-spoof lookup comes before any conntrack shortcut', (t) => {
  const rules = chainRules(renderFirewall(twoTenants()).text, 'from_container');
  const spoof = rules.indexOf('iifname . ip saddr != @veth_addr goto drop_spoof');
  t.true(spoof >= 0);
  t.true(rules.findIndex((r) => r.startsWith('ct state')) > spoof, 'a spoofed packet must never ride an established flow');
});

/** Rules are the lines inside chains that are not chain headers, comments or closing braces. */
function countRules(text: string): number {
  let inChain = false;
  let n = 0;
  for (const line of text.split('\n')) {
    if (/^\tchain /.test(line)) inChain = true;
    else if (line === '\t}') inChain = false;
    else if (inChain && !/^\t\t(type |#)/.test(line)) n++;
  }
  return n;
}

test('scale: 10,000 workloads and 1,000 policies give O(policies) rules, not O(workloads)', (t) => {
  const started = Date.now();
  const big = renderFirewall(large(10, 1000, 50, 100));
  const small = renderFirewall(large(10, 10, 50, 100));
  t.log(`rendered ${big.text.length} bytes in ${Date.now() - started} ms`);
  const bigRules = countRules(big.text);
  t.is(bigRules, countRules(small.text), 'the rule count must not depend on the number of workloads');
  // Two chains per tenant, each with every policy rule, plus a constant frame.
  t.true(bigRules <= 2 * 1000 + 10 * 10 + 60, `rules: ${bigRules}`);
  t.true(big.text.includes('"nwc'), 'workloads are set elements');
});

test('nft -c accepts the 10,000-workload table', (t) => {
  const result = nftCheck(renderFirewall(large(10, 1000, 50, 100)).text, NODE_TABLE);
  if (result === 'skip') {
    t.pass();
    return;
  }
  t.is(result, null, result ?? '');
});

test('egress elements are disjoint and cover exactly the allow list', (t) => {
  const allows = twoTenants().tenants[0]!.egress.allow;
  const { l4, icmp } = egressElements(allows);
  t.deepEqual(icmp, ['203.0.113.0/24']);
  const parsed = l4.map((e) => {
    const [addr = '', proto, port = ''] = e.split(' . ');
    const [a, b = a] = addr.split('-');
    const [p, q = p] = port.split('-');
    return { first: cidrRange(a!).first, last: cidrRange(b!).first, proto, from: Number(p), to: Number(q) };
  });
  for (const [i, x] of parsed.entries()) {
    for (const y of parsed.slice(i + 1)) {
      const overlap = x.proto === y.proto && x.first <= y.last && y.first <= x.last && x.from <= y.to && y.from <= x.to;
      t.false(overlap, `${JSON.stringify(x)} overlaps ${JSON.stringify(y)}`);
    }
  }
  const allowed = (ip: string, proto: string, port: number): boolean =>
    parsed.some((e) => e.proto === proto && e.first <= cidrRange(ip).first && cidrRange(ip).first <= e.last && e.from <= port && port <= e.to);
  t.true(allowed('203.0.113.10', 'tcp', 8080));
  t.true(allowed('203.0.113.10', 'tcp', 443));
  t.true(allowed('203.0.113.200', 'tcp', 80));
  t.false(allowed('203.0.113.200', 'tcp', 8080));
  t.true(allowed('198.51.100.53', 'udp', 53));
  t.false(allowed('198.51.100.53', 'tcp', 53));
  t.false(allowed('192.0.2.1', 'tcp', 80));
});

test('mergePorts joins overlapping and adjacent ranges; empty means all', (t) => {
  t.deepEqual(mergePorts([{ from: 80, to: 80 }, { from: 81, to: 90 }, { from: 22, to: 22 }, { from: 85, to: 100 }]), [
    { from: 22, to: 22 },
    { from: 80, to: 100 },
  ]);
  t.deepEqual(mergePorts([]), [{ from: 0, to: 65535 }]);
});

const TWO_OPTIONS: FirewallOptions = { underlay: { restrictInput: true, interfaces: ['eth0'] }, agentPorts: [7301] };

/** The kernel's listing (nft 1.0.6) of the two-tenants table: structure, elements and counters as the agent sees them. */
function kernelListing(): string {
  return readFileSync(join(import.meta.dirname, '../../golden/node-agent/two-tenants.kernel-listing.txt'), 'utf8');
}

/** Members as the kernel lists them right after a replace with `r`, as a memory would record them. */
const memoryOf = (r: RenderedFirewall, listing: string): FirewallMemory => ({
  version: 2,
  hash: r.hash,
  listing: parseListing(listing).structure,
  elements: Object.fromEntries(Object.entries(r.elementSets).map(([k, v]) => [k, v.elements])),
});

/** twoTenants with one more workload `cache` (10.1.1.12) in app=web. */
function withNewWorkload(): DesiredState {
  const doc = twoTenants();
  const acme = doc.tenants[0]!;
  acme.workloads.push({ name: 'cache', address: '10.1.1.12', labels: { app: 'web' } });
  acme.firewall.groups['app=web']!.push('10.1.1.12/32');
  return doc;
}

test('the structure hash ignores workload set members; the full text carries them', (t) => {
  const a = renderFirewall(twoTenants());
  const b = renderFirewall(withNewWorkload());
  t.is(a.hash, b.hash, 'a workload coming changes members only');
  t.not(a.text, b.text);
  t.true(b.text.includes('10.1.1.12'));
  t.deepEqual(Object.keys(a.elementSets).sort(), ['g_acme_app_db_61949d', 'g_acme_app_web_686126', 'g_acme_gw_636777', 'g_beta_corp_app_api_e10182', 'tunnel_entry', 'veth_addr']);
  t.deepEqual(b.elementSets.g_acme_app_web_686126?.elements, ['10.1.1.10', '10.1.1.12', '10.1.2.10']);
  const structural = twoTenants();
  structural.tenants[0]!.firewall.rules[0]!.ports = [{ from: 5433, to: 5433 }];
  t.not(renderFirewall(structural).hash, a.hash, 'a policy change is structure');
  const newGroup = twoTenants();
  newGroup.tenants[0]!.firewall.groups['app=new'] = [];
  t.not(renderFirewall(newGroup).hash, a.hash, 'a group coming into existence is structure');
});

test('the tenant render cache: every document renders as without it; only changed tenants render again', (t) => {
  const cache = new TenantRenderCache();
  const same = (doc: DesiredState, label: string): RenderedFirewall => {
    const cached = renderFirewall(doc, TWO_OPTIONS, cache);
    const plain = renderFirewall(doc, TWO_OPTIONS);
    t.is(cached.text, plain.text, label);
    t.is(cached.hash, plain.hash, label);
    return cached;
  };
  const first = same(twoTenants(), 'first render');
  const again = same(twoTenants(), 'the same document, parsed anew');
  t.is(again.elementSets.g_acme_app_web_686126?.elements, first.elementSets.g_acme_app_web_686126?.elements, 'an unchanged tenant is not rendered again');
  const grown = same(withNewWorkload(), 'a member joins');
  t.deepEqual(grown.elementSets.g_acme_app_web_686126?.elements, ['10.1.1.10', '10.1.1.12', '10.1.2.10']);
  t.is(grown.elementSets.g_beta_corp_app_api_e10182?.elements, first.elementSets.g_beta_corp_app_api_e10182?.elements, 'the other tenant is reused');
  const structural = twoTenants();
  structural.tenants[0]!.firewall.rules[0]!.ports = [{ from: 5433, to: 5433 }];
  t.not(same(structural, 'a policy port changes').hash, first.hash);
  const oneLeft = twoTenants();
  oneLeft.tenants.splice(1, 1);
  same(oneLeft, 'a tenant leaves');
  same(twoTenants(), 'and comes back');
  same(large(3, 120, 6, 10), 'another document altogether');
});

test('parseListing: the kernel listing splits into structure, workload set members and counters', (t) => {
  const rendered = renderFirewall(twoTenants(), TWO_OPTIONS);
  const live = parseListing(kernelListing());
  t.is(live.hash, rendered.hash, 'fixture from an older render: recapture test/golden/node-agent/two-tenants.kernel-listing.txt (nft list table inet netwall)');
  t.deepEqual(live.counters.spoof, { packets: 7, bytes: 420 });
  t.deepEqual(live.counters.policy, { packets: 0, bytes: 0 });
  t.false(/packets \d+/.test(live.structure), 'no counter values in the structure');
  t.false(live.structure.includes('nwc86f279ce9c2'), 'no workload members in the structure');
  t.true(live.structure.includes('203.0.113.10 . tcp . 8080'), 'other sets keep their elements in the structure');
  // The kernel lists hash set members exactly in the canonical text the delta sends, only in its own order.
  for (const [name, set] of Object.entries(rendered.elementSets)) t.deepEqual([...(live.elements[name] ?? [])].sort(), [...set.elements].sort(), name);
});

test('planFirewall: missing, changed, unverified, drift, up to date', (t) => {
  const desired = renderFirewall(twoTenants(), TWO_OPTIONS);
  const listing = kernelListing();
  const live = parseListing(listing);
  const memory = memoryOf(desired, listing);
  const reason = (changes: FirewallChange[]): string => changes.map((c) => `${c.kind}:${c.reason}`).join() || 'none';
  t.is(reason(planFirewall(desired, { table: null }, null)), 'firewall-replace:missing');
  t.is(reason(planFirewall(desired, { table: { ...live, hash: 'f'.repeat(64) } }, memory)), 'firewall-replace:changed');
  t.is(reason(planFirewall(desired, { table: live }, null)), 'firewall-replace:unverified');
  t.is(reason(planFirewall(desired, { table: parseListing(listing.replace(/\t\tct state invalid goto drop_invalid\n/, '')) }, memory)), 'firewall-replace:drift');
  t.is(reason(planFirewall(desired, { table: live }, memory)), 'none');
  // The counters read by the listing ride along, so the replace needs no second dump.
  const [drift] = planFirewall(desired, { table: parseListing(listing.replace(/\t\tgoto drop_policy\n/, '')) }, memory);
  t.deepEqual(drift?.kind === 'firewall-replace' ? drift.old?.counters?.spoof : null, { packets: 7, bytes: 420 });
});

test('planFirewall: an old memory file (no set members recorded) means unverified, replace once', (t) => {
  const desired = renderFirewall(twoTenants(), TWO_OPTIONS);
  const old = { hash: desired.hash, listing: kernelListing() } as unknown as FirewallMemory;
  t.false(validMemory(old));
  const [change] = planFirewall(desired, { table: parseListing(kernelListing()) }, old);
  t.is(change?.kind, 'firewall-replace');
  t.is(change?.reason, 'unverified');
});

test('planFirewall: a set member deleted by hand is drift', (t) => {
  const desired = renderFirewall(twoTenants(), TWO_OPTIONS);
  const memory = memoryOf(desired, kernelListing());
  const edited = kernelListing().replace('elements = { 10.1.1.10, 10.1.2.10 }', 'elements = { 10.1.1.10 }');
  t.not(edited, kernelListing());
  const [change] = planFirewall(desired, { table: parseListing(edited) }, memory);
  t.is(`${change?.kind}:${change?.reason}`, 'firewall-replace:drift');
  const added = kernelListing().replace('elements = { 10.1.255.1 }', 'elements = { 10.1.255.1, 10.1.9.9 }');
  t.is(planFirewall(desired, { table: parseListing(added) }, memory)[0]?.reason, 'drift', 'a member added by hand too');
});

test('planFirewall: only members changed → one firewall-elements change; structure changed → replace', (t) => {
  const before = renderFirewall(twoTenants(), TWO_OPTIONS);
  const memory = memoryOf(before, kernelListing());
  const live = parseListing(kernelListing());
  const after = renderFirewall(withNewWorkload(), TWO_OPTIONS);
  for (const table of [live, undefined]) {
    const changes = planFirewall(after, { table }, memory);
    t.is(changes.length, 1);
    const c = changes[0]!;
    if (c.kind !== 'firewall-elements') {
      t.fail(`planned ${c.kind}`);
      continue;
    }
    t.deepEqual(c.sets, [
      { set: 'veth_addr', add: ['"nwc893ae2354e2" . 10.1.1.12'], delete: [] },
      { set: 'g_acme_app_web_686126', add: ['10.1.1.12'], delete: [] },
    ]);
    t.is(
      elementsTransaction(c.sets, NODE_TABLE),
      'create element inet netwall veth_addr { "nwc893ae2354e2" . 10.1.1.12 }\ncreate element inet netwall g_acme_app_web_686126 { 10.1.1.12 }\n',
    );
  }
  // Back again: deletes.
  const back = planFirewall(before, { table: undefined }, memoryOf(after, kernelListing()));
  t.deepEqual(back[0]?.kind === 'firewall-elements' ? back[0].sets.map((d) => d.delete) : null, [['"nwc893ae2354e2" . 10.1.1.12'], ['10.1.1.12']]);
  // A structural change (a policy's port) is a replace, listed or not.
  const policy = twoTenants();
  policy.tenants[1]!.firewall.rules[0]!.ports = [{ from: 80, to: 80 }];
  const structural = renderFirewall(policy, TWO_OPTIONS);
  t.is(planFirewall(structural, { table: live }, memory)[0]?.reason, 'changed');
  t.is(planFirewall(structural, { table: undefined }, memory)[0]?.kind, 'firewall-replace');
  // A group holding a CIDR is an interval set: its member changes replace the table (the kernel merges intervals).
  const cidr = twoTenants();
  cidr.tenants[0]!.firewall.groups.gw = ['10.1.255.0/28'];
  const cidrRendered = renderFirewall(cidr, TWO_OPTIONS);
  t.true(cidrRendered.elementSets.g_acme_gw_636777?.interval);
  const cidr2 = twoTenants();
  cidr2.tenants[0]!.firewall.groups.gw = ['10.1.255.0/28', '10.1.254.0/28'];
  t.is(planFirewall(renderFirewall(cidr2, TWO_OPTIONS), { table: undefined }, memoryOf(cidrRendered, kernelListing()))[0]?.kind, 'firewall-replace');
});

test('policy ports: single ports share a set, each range is its own rule (no anonymous interval sets)', (t) => {
  const text = renderFirewall(twoTenants()).text;
  t.true(text.includes('udp dport 5353 accept comment "web-to-db"'));
  t.true(text.includes('udp dport 8000-8080 accept comment "web-to-db"'));
  const doc = twoTenants();
  doc.tenants[1]!.firewall.rules[0]!.ports = [{ from: 443, to: 443 }, { from: 80, to: 80 }, { from: 9000, to: 9100 }];
  const rendered = renderFirewall(doc).text;
  t.true(rendered.includes('tcp dport { 80, 443 } accept comment "api-mesh"'));
  t.true(rendered.includes('tcp dport 9000-9100 accept comment "api-mesh"'));
  t.false(/dport \{[^}]*-/.test(rendered), 'no range inside an anonymous set');
  t.false(/chain c_[a-z_]+ \{[^}]*ip saddr @g_/.test(rendered), 'policies live once, in the mesh chain');
});

test('counters survive a replace and are read per reason', (t) => {
  const json = JSON.stringify({
    nftables: [{ metainfo: {} }, { counter: { name: 'd_spoof', packets: 7, bytes: 420 } }, { counter: { name: 'other', packets: 1 } }],
  });
  t.deepEqual(parseCounters(json), { spoof: { packets: 7, bytes: 420 } });
  const text = withCounterValues(renderFirewall(emptyNode()).text, parseCounters(json));
  t.true(text.includes('\tcounter d_spoof { packets 7 bytes 420 }'));
  t.true(text.includes('\tcounter d_policy { }'));
});

test('applyFirewallChange: one atomic replace with the listed counters, logged, then recorded from the kernel', async (t) => {
  const desired = renderFirewall(twoTenants(), TWO_OPTIONS);
  const runner = new FakeRunner().expect(['nft', '-f', '-']).expect(['nft', 'list', 'table', 'inet', 'netwall'], { stdout: kernelListing() });
  const lines: string[] = [];
  const [change] = planFirewall(desired, { table: { ...parseListing(kernelListing()), hash: null } }, null);
  const memory = await applyFirewallChange(change!, runner, (l) => lines.push(l));
  t.deepEqual(memory, memoryOf(desired, kernelListing()));
  t.deepEqual(runner.pending(), [], 'no counter read: the listing carried them');
  const input = runner.calls[0]?.input ?? '';
  t.true(input.startsWith('table inet netwall {}\ndelete table inet netwall\ntable inet netwall {\n'));
  t.true(input.includes('\tcounter d_spoof { packets 7 bytes 420 }'));
  t.regex(lines[0] ?? '', /^\[#\] nft -f - # replace table inet netwall \(changed/);
});

test('applyFirewallChange: a missing table is created without reading counters', async (t) => {
  const desired = renderFirewall(twoTenants(), TWO_OPTIONS);
  const runner = new FakeRunner().expect(['nft', '-f', '-']).expect(['nft', 'list', 'table', 'inet', 'netwall'], { stdout: kernelListing() });
  const [change] = planFirewall(desired, { table: null }, null);
  await applyFirewallChange(change!, runner, () => {});
  t.is(runner.calls.length, 2);
});

test('applyFirewallChange: an element delta is one nft -f of create/delete element lines, nothing listed', async (t) => {
  const before = renderFirewall(twoTenants(), TWO_OPTIONS);
  const memory = memoryOf(before, kernelListing());
  const after = renderFirewall(withNewWorkload(), TWO_OPTIONS);
  const [change] = planFirewall(after, { table: undefined }, memory);
  const runner = new FakeRunner().expect(['nft', '-f', '-']);
  const lines: string[] = [];
  const next = await applyFirewallChange(change!, runner, (l) => lines.push(l), memory);
  t.is(runner.calls.length, 1);
  t.is(runner.calls[0]?.input, elementsTransaction(change?.kind === 'firewall-elements' ? change.sets : [], NODE_TABLE));
  t.deepEqual(lines, [
    '[#] nft create element inet netwall veth_addr { "nwc893ae2354e2" . 10.1.1.12 }',
    '[#] nft create element inet netwall g_acme_app_web_686126 { 10.1.1.12 }',
  ]);
  t.is(next.listing, memory.listing, 'the structure listing stays valid');
  t.deepEqual(next.elements.g_acme_app_web_686126, ['10.1.1.10', '10.1.1.12', '10.1.2.10']);
});

test('applyFirewallChange: a refused element delta (sets not as remembered) falls back to a replace', async (t) => {
  const before = renderFirewall(twoTenants(), TWO_OPTIONS);
  const memory = memoryOf(before, kernelListing());
  const after = renderFirewall(withNewWorkload(), TWO_OPTIONS);
  const [change] = planFirewall(after, { table: undefined }, memory);
  const runner = new FakeRunner()
    .expect(['nft', '-f', '-'], { exitCode: 1, stderr: 'Error: Could not process rule: File exists' })
    .expect(['nft', '-j', 'list', 'counters', 'table', 'inet', 'netwall'], { stdout: JSON.stringify({ nftables: [{ counter: { name: 'd_spoof', packets: 9, bytes: 540 } }] }) })
    .expect(['nft', '-f', '-'])
    .expect(['nft', 'list', 'table', 'inet', 'netwall'], { stdout: kernelListing() });
  const lines: string[] = [];
  const next = await applyFirewallChange(change!, runner, (l) => lines.push(l), memory);
  t.deepEqual(runner.pending(), []);
  t.true(runner.calls[2]?.input?.includes('\tcounter d_spoof { packets 9 bytes 540 }'));
  t.true(lines.some((l) => l.includes('element delta refused (Error: Could not process rule: File exists)')));
  t.regex(lines[lines.length - 1] ?? '', /replace table inet netwall \(drift/);
  t.is(next.hash, after.hash);
});

test('readDropCounters returns packets per reason', async (t) => {
  const runner = new FakeRunner().expect(['nft', '-j', 'list', 'counters', 'table', 'inet', 'netwall'], {
    stdout: JSON.stringify({ nftables: [{ counter: { name: 'd_policy', packets: 2, bytes: 120 } }] }),
  });
  t.deepEqual(await readDropCounters(runner, NODE_TABLE), { policy: 2 });
});
