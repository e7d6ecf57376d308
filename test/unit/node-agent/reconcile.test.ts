import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerInterfaceName } from '../../../src/node-agent/names.js';
import { describeChange, FAST_PATH_MAX_UNVERIFIED_MS, Reconciler, orderChanges, type Change } from '../../../src/shared/dataplane/reconcile.js';
import { observeSysctls, planSysctls } from '../../../src/shared/dataplane/sysctl.js';
import { nodeFirewall, renderFirewall } from '../../../src/node-agent/nftables.js';
import type { ChildHandle, Spawner } from '../../../src/shared/dataplane/wgproc.js';
import { emptyDocument, type DesiredState } from '../../../src/shared/desired.js';
import { FakeKernel } from './fake-kernel.js';
import { emptyNode, node, peer, tenant, testKey, twoTenants } from './dataplane-fixtures.js';

const allKeyFiles = (): Map<string, string> => new Map([
  ['/state/wg-acme.key', testKey(101)],
  ['/state/wg-beta-corp.key', testKey(102)],
  ['/state/wg-gamma.key', testKey(103)],
]);

/** wireguard-go stand-in: starting it makes the tun appear in the fake kernel. */
class FakeWireguardGo implements Spawner {
  pids = 100;
  constructor(private readonly kernel: FakeKernel) {}
  spawn(argv: readonly string[]): ChildHandle {
    const iface = argv[argv.length - 1] ?? '';
    this.kernel.addUserspaceLink(iface);
    let end: (code: string) => void = () => {};
    const exited = new Promise<string>((resolve) => (end = resolve));
    return {
      pid: this.pids++,
      exited,
      kill: (signal) => {
        this.kernel.deleteLink(iface);
        end(signal ?? 'SIGTERM');
      },
    };
  }
}

function setup(kernelWireguard = true, keyFiles = allKeyFiles()): { kernel: FakeKernel; reconciler: Reconciler; log: string[] } {
  const kernel = new FakeKernel(keyFiles);
  kernel.kernelWireguard = kernelWireguard;
  const log: string[] = [];
  const reconciler = new Reconciler({
    firewall: nodeFirewall(),
    runner: kernel,
    log: (l) => log.push(l),
    keyFileFor: (t) => `/state/wg-${t}.key`,
    readPublicKey: (f) => allKeyFiles().get(f) ?? 'missing',
    spawner: new FakeWireguardGo(kernel),
  });
  return { kernel, reconciler, log };
}

/** The named desired states of the state-transition table, each with what must hold once applied. */
const states: Record<string, { doc: () => DesiredState; expect: (k: FakeKernel) => string[] }> = {
  empty: {
    doc: emptyNode,
    expect: (k) => (k.links.size === 0 && k.routes.size === 0 && k.rules.size === 0 ? [] : ['leftovers']),
  },
  acmeOnly: {
    doc: () => node([twoTenants().tenants[0]!]),
    expect: (k) => {
      const acme = k.links.get('nw-acme');
      const problems: string[] = [];
      if (!acme || k.links.size !== 1) problems.push('exactly nw-acme');
      if (acme?.peers.size !== 2) problems.push('two peers');
      if (k.rules.size !== 1) problems.push('one egress rule');
      return problems;
    },
  },
  both: {
    doc: twoTenants,
    expect: (k) => (k.links.size === 2 && k.links.get('nw-beta-corp')?.peers.size === 1 ? [] : ['both interfaces']),
  },
  acmeRepeered: {
    doc: () => {
      const d = twoTenants();
      const acme = d.tenants[0]!;
      acme.peers = [peer('node3', 5, ['10.1.3.1/32', '10.1.3.0/24']), acme.peers[0]!];
      acme.egress = { gateway: null, allow: [] };
      return node([acme, tenant('gamma', 3, { peers: [peer('node2', 6, ['10.3.2.0/24'])] })], 2);
    },
    expect: (k) => {
      const acme = k.links.get('nw-acme');
      const problems: string[] = [];
      if (!acme?.peers.has(testKey(5)) || acme.peers.has(testKey(3))) problems.push('acme peers');
      if (k.links.has('nw-beta-corp') || !k.links.has('nw-gamma')) problems.push('links');
      if (k.rules.size !== 0) problems.push('no egress rule');
      if ([...k.routes.keys()].some((r) => r.includes('203.0.113'))) problems.push('no egress routes');
      return problems;
    },
  },
};

/** A small seeded generator, so a failing order can be replayed. */
function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

for (const kernelWireguard of [true, false]) {
  test(`state transitions in random order reach each state; a second plan is empty (${kernelWireguard ? 'kernel' : 'wireguard-go'})`, async (t) => {
    // The snapshot each state reaches from an empty host; every other path must reach the same one.
    const reference = new Map<string, string>();
    for (const [name, s] of Object.entries(states)) {
      const { kernel, reconciler } = setup(kernelWireguard);
      const result = await reconciler.reconcile(s.doc());
      t.deepEqual(result.errors, [], name);
      reference.set(name, JSON.stringify(kernel.snapshot()));
      await reconciler.stopUserspace();
    }
    for (let seed = 1; seed <= 8; seed++) {
      const { kernel, reconciler } = setup(kernelWireguard);
      const order = shuffled([...Object.keys(states), ...Object.keys(states)], seed);
      for (const name of order) {
        const s = states[name]!;
        const result = await reconciler.reconcile(s.doc());
        t.deepEqual(result.errors, [], `seed ${seed} → ${name}`);
        t.deepEqual(s.expect(kernel), [], `seed ${seed} → ${name}`);
        const snapshot = JSON.stringify(kernel.snapshot());
        // Compared as text: ava's structural diff of the whole table is slow; show it only on a mismatch.
        if (snapshot !== reference.get(name)) t.deepEqual(JSON.parse(snapshot), JSON.parse(reference.get(name) ?? 'null'), `seed ${seed} → ${name}: path-dependent state`);
        t.deepEqual(await reconciler.plan(s.doc()), [], `seed ${seed} → ${name}: second plan not empty`);
        t.is((await reconciler.reconcile(s.doc())).changes.length, 0);
      }
      await reconciler.stopUserspace();
    }
  });
}

test('first reconcile on a fresh host: sysctl, firewall, then interfaces, logged like wg-quick', async (t) => {
  const { kernel, reconciler, log } = setup();
  const result = await reconciler.reconcile(twoTenants());
  t.deepEqual(result.errors, []);
  t.is(kernel.sysctls.get('net.ipv4.ip_forward'), '1');
  t.is(kernel.sysctls.get('net.netfilter.nf_conntrack_checksum'), '0');
  t.is(log[0], '[#] sysctl -w net.ipv4.ip_forward=1');
  t.is(log[1], '[#] sysctl -w net.netfilter.nf_conntrack_checksum=0');
  t.regex(log[2] ?? '', /^\[#\] nft -f - # replace table inet netwall \(missing/);
  t.is(log[3], '[#] ip link add nw-acme type wireguard');
  t.true(log.includes(`[#] wg set nw-acme peer ${testKey(3)} persistent-keepalive off allowed-ips 10.1.255.1/32,198.51.100.53/32,203.0.113.0/24`));
  t.true(kernel.table?.includes(renderFirewall(twoTenants()).hash));
});

test('sysctls: read in one call; a missing required key is set, a missing optional one (its module not loaded yet) waits', async (t) => {
  const kernel = new FakeKernel(new Map());
  kernel.sysctls.delete('net.netfilter.nf_conntrack_checksum');
  const observed = await observeSysctls(kernel);
  t.deepEqual(observed, { 'net.ipv4.ip_forward': '0', 'net.netfilter.nf_conntrack_checksum': null });
  t.deepEqual(kernel.log, ['sysctl net.ipv4.ip_forward net.netfilter.nf_conntrack_checksum']);
  t.deepEqual(planSysctls(observed).map((c) => `${c.key}=${c.new}`), ['net.ipv4.ip_forward=1']);
  t.deepEqual(planSysctls({ 'net.ipv4.ip_forward': null, 'net.netfilter.nf_conntrack_checksum': '1' }).map((c) => `${c.key}=${c.new}`), [
    'net.ipv4.ip_forward=1',
    'net.netfilter.nf_conntrack_checksum=0',
  ]);
  t.deepEqual(planSysctls({ 'net.ipv4.ip_forward': '1', 'net.netfilter.nf_conntrack_checksum': '0' }), []);
});

test('conntrack as a module: the table load brings its sysctl, set in the same tick; the second plan is empty', async (t) => {
  const { kernel, reconciler, log } = setup();
  kernel.conntrackModule = true;
  kernel.sysctls.delete('net.netfilter.nf_conntrack_checksum');
  const result = await reconciler.reconcile(twoTenants());
  t.deepEqual(result.errors, []);
  t.is(kernel.sysctls.get('net.netfilter.nf_conntrack_checksum'), '0');
  const replace = log.findIndex((l) => l.startsWith('[#] nft -f - # replace table'));
  t.true(replace > 0 && log.indexOf('[#] sysctl -w net.netfilter.nf_conntrack_checksum=0') > replace, 'set after the table load');
  t.deepEqual(result.changes.filter((c) => c.kind === 'sysctl').map((c) => describeChange(c)), ['sysctl net.ipv4.ip_forward: 0 → 1', 'sysctl net.netfilter.nf_conntrack_checksum: 1 → 0']);
  t.deepEqual(await reconciler.plan(twoTenants()), []);
});

test('an unrelated peer change leaves the other peers (and their handshakes) alone', async (t) => {
  const { kernel, reconciler, log } = setup();
  await reconciler.reconcile(twoTenants());
  kernel.links.get('nw-acme')!.peers.get(testKey(2))!.latestHandshake = 1700000000;
  log.length = 0;
  const doc = twoTenants();
  doc.tenants[0]!.peers[1]!.allowedIps.push('203.0.113.77/32');
  await reconciler.reconcile(doc);
  t.false(log.some((l) => l.includes(testKey(2))), log.join('\n'));
  t.true(log.some((l) => l.includes(testKey(3))));
  t.is(kernel.links.get('nw-acme')!.peers.get(testKey(2))!.latestHandshake, 1700000000);
  t.false(log.some((l) => l.includes('link add') || l.includes('link del')));
});

test('drift is repaired: a rule removed from the table, a peer removed by hand', async (t) => {
  const { kernel, reconciler } = setup();
  await reconciler.reconcile(twoTenants());
  kernel.table = kernel.table!.replace('\t\tct state invalid goto drop_invalid\n', '');
  kernel.links.get('nw-acme')!.peers.delete(testKey(2));
  const changes = await reconciler.plan(twoTenants());
  t.deepEqual(
    changes.map((c) => `${c.kind}${c.kind === 'firewall-replace' ? ` ${c.reason}` : ''}`),
    ['firewall-replace drift', 'peer-set'],
  );
  await reconciler.reconcile(twoTenants());
  t.deepEqual(await reconciler.plan(twoTenants()), []);
});

test('errors are collected and the rest still applies; a failed interface skips its own changes', async (t) => {
  const keyFiles = allKeyFiles();
  keyFiles.delete('/state/wg-beta-corp.key');
  const { kernel, reconciler } = setup(true, keyFiles);
  const result = await reconciler.reconcile(twoTenants());
  t.true(result.errors.some((e) => e.includes('nw-beta-corp: wg-config')), result.errors.join('\n'));
  t.true(kernel.links.get('nw-acme')?.up, 'the other tenant is still configured');
  t.true(kernel.table !== null);
});

test('orderChanges puts every add and update before any delete, keeping plan order', (t) => {
  const c = (kind: string, op: string): Change => ({ kind, op, iface: kind }) as unknown as Change;
  const ordered = orderChanges([c('a', 'delete'), c('b', 'add'), c('c', 'update'), c('d', 'delete'), c('e', 'add')]);
  t.deepEqual(
    ordered.map((x) => ('iface' in x ? x.iface : '')),
    ['b', 'c', 'e', 'a', 'd'],
  );
});

/** twoTenants with a workload `cache` (10.1.1.12, app=web) started on this node. */
function withCache(): DesiredState {
  const doc = twoTenants();
  const acme = doc.tenants[0]!;
  acme.workloads.push({ name: 'cache', address: '10.1.1.12', labels: { app: 'web' } });
  acme.firewall.groups['app=web']!.push('10.1.1.12/32');
  return doc;
}

const kinds = (changes: Change[]): string[] => changes.map((c) => (c.kind.startsWith('firewall') ? `${c.kind}:${(c as { reason: string }).reason}` : c.kind));

test('a workload coming and going is an element delta: no listing, no replace, same table as a fresh apply', async (t) => {
  const { kernel, reconciler, log } = setup();
  await reconciler.reconcile(twoTenants());
  t.deepEqual(await reconciler.plan(twoTenants()), []);
  t.deepEqual(kinds(await reconciler.plan(withCache())), ['firewall-elements:changed']);
  log.length = 0;
  kernel.log.length = 0;
  const result = await reconciler.reconcile(withCache());
  t.deepEqual(result.errors, []);
  t.deepEqual(kinds(result.changes), ['firewall-elements:changed']);
  t.false(kernel.log.some((c) => c.startsWith('nft list')), 'the fast path lists nothing (the last check is fresh)');
  t.is(kernel.log.filter((c) => c === 'nft -f -').length, 1, 'one transaction');
  t.is(kernel.elementTransactions, 1);
  t.deepEqual(log, [
    `[#] nft create element inet netwall veth_addr { "${containerInterfaceName('acme', 'cache')}" . 10.1.1.12 }`,
    '[#] nft create element inet netwall g_acme_app_web_686126 { 10.1.1.12 }',
  ]);
  // The same state as a host that got the new document in one replace.
  const fresh = setup();
  await fresh.reconciler.reconcile(withCache());
  t.is(kernel.table, fresh.kernel.table);
  t.deepEqual(await reconciler.plan(withCache()), [], 'a full check after the delta finds nothing');
  // And back.
  t.deepEqual(kinds((await reconciler.reconcile(twoTenants())).changes), ['firewall-elements:changed']);
  t.deepEqual(log.slice(-2), [
    `[#] nft delete element inet netwall veth_addr { "${containerInterfaceName('acme', 'cache')}" . 10.1.1.12 }`,
    '[#] nft delete element inet netwall g_acme_app_web_686126 { 10.1.1.12 }',
  ]);
  t.deepEqual(await reconciler.plan(twoTenants()), []);
});

test('a structure change (a policy) replaces the table, counters carried from the listing', async (t) => {
  const { kernel, reconciler } = setup();
  await reconciler.reconcile(twoTenants());
  kernel.counters.set('policy', { packets: 11, bytes: 660 });
  const doc = twoTenants();
  doc.tenants[1]!.firewall.rules[0]!.ports = [{ from: 443, to: 443 }];
  kernel.log.length = 0;
  const result = await reconciler.reconcile(doc);
  t.deepEqual(kinds(result.changes), ['firewall-replace:changed']);
  t.deepEqual(kernel.log.filter((c) => c.startsWith('nft')), ['nft list table inet netwall', 'nft -f -', 'nft list table inet netwall'], 'one listing before, one after; no counter dump');
  t.deepEqual(kernel.counters.get('policy'), { packets: 11, bytes: 660 });
  kernel.log.length = 0;
  t.is((await reconciler.dropCounters()).policy, 11);
  t.deepEqual(kernel.log, [], 'status counters come from the tick’s listing, no second dump');
});

test('idle ticks list the table every time by default (drift check), or every verifySeconds', async (t) => {
  const { kernel, reconciler } = setup();
  await reconciler.reconcile(twoTenants());
  kernel.log.length = 0;
  await reconciler.reconcile(twoTenants());
  await reconciler.reconcile(twoTenants());
  t.is(kernel.log.filter((c) => c === 'nft list table inet netwall').length, 2);

  let now = 1_000_000;
  const k2 = new FakeKernel(allKeyFiles());
  const r2 = new Reconciler({ runner: k2, log: () => {}, keyFileFor: (x) => `/state/wg-${x}.key`, readPublicKey: (f) => allKeyFiles().get(f) ?? 'missing', firewall: nodeFirewall({ verifySeconds: 60 }), now: () => now });
  await r2.reconcile(twoTenants());
  k2.log.length = 0;
  now += 30_000;
  await r2.reconcile(twoTenants());
  t.is(k2.log.filter((c) => c.startsWith('nft list')).length, 0, 'checked 30 s ago: not due');
  now += 31_000;
  k2.table = k2.table!.replace('\t\tct state invalid goto drop_invalid\n', '');
  const repaired = await r2.reconcile(twoTenants());
  t.deepEqual(kinds(repaired.changes), ['firewall-replace:drift'], 'due after 60 s: drift found and repaired');
});

test('the element fast path lists again once the last check is FAST_PATH_MAX_UNVERIFIED_MS old', async (t) => {
  let now = 1_000_000;
  const kernel = new FakeKernel(allKeyFiles());
  const reconciler = new Reconciler({ firewall: nodeFirewall(), runner: kernel, log: () => {}, keyFileFor: (x) => `/state/wg-${x}.key`, readPublicKey: (f) => allKeyFiles().get(f) ?? 'missing', now: () => now });
  await reconciler.reconcile(twoTenants());
  now += FAST_PATH_MAX_UNVERIFIED_MS;
  kernel.log.length = 0;
  t.deepEqual(kinds((await reconciler.reconcile(withCache())).changes), ['firewall-elements:changed']);
  t.true(kernel.log.includes('nft list table inet netwall'), 'listed before the delta');
});

test('a set member deleted by hand is found by the next check and repaired', async (t) => {
  const { kernel, reconciler } = setup();
  await reconciler.reconcile(twoTenants());
  kernel.table = kernel.table!.replace('elements = { 10.1.1.10,\n\t\t\t     10.1.2.10 }', 'elements = { 10.1.1.10 }');
  t.true(!kernel.table.includes('10.1.2.10 }'), 'member removed');
  t.deepEqual(kinds(await reconciler.plan(twoTenants())), ['firewall-replace:drift']);
  await reconciler.reconcile(twoTenants());
  t.deepEqual(await reconciler.plan(twoTenants()), []);
});

test('an element delta refused by the kernel (memory stale) falls back to a replace', async (t) => {
  const { kernel, reconciler, log } = setup();
  await reconciler.reconcile(twoTenants());
  // Someone else added the member already: `create element` fails, the whole delta is refused.
  kernel.table = kernel.table!.replace('elements = { 10.1.1.10,\n\t\t\t     10.1.2.10 }', 'elements = { 10.1.1.10,\n\t\t\t     10.1.1.12,\n\t\t\t     10.1.2.10 }');
  const result = await reconciler.reconcile(withCache());
  t.deepEqual(result.errors, []);
  t.true(log.some((l) => l.includes('element delta refused')), log.join('\n'));
  t.deepEqual(await reconciler.plan(withCache()), []);
});

test('memory file: persisted after a delta, reused after a restart; an old-format file means one unverified replace', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nwt-fwmem-'));
  try {
    const file = join(dir, 'firewall.json');
    const kernel = new FakeKernel(allKeyFiles());
    const make = () => new Reconciler({ firewall: nodeFirewall(), runner: kernel, log: () => {}, keyFileFor: (x) => `/state/wg-${x}.key`, readPublicKey: (f) => allKeyFiles().get(f) ?? 'missing', firewallMemoryFile: file });
    await make().reconcile(twoTenants());
    await make().reconcile(withCache());
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { version: number; elements: Record<string, string[]> };
    t.is(saved.version, 2);
    t.true(saved.elements.g_acme_app_web_686126?.includes('10.1.1.12'));
    t.deepEqual(await make().plan(withCache()), [], 'a restarted agent trusts its memory and the table');
    // The format before element deltas: {hash, listing}.
    writeFileSync(file, JSON.stringify({ hash: renderFirewall(withCache()).hash, listing: kernel.table }));
    t.deepEqual(kinds(await make().plan(withCache())), ['firewall-replace:unverified']);
    const again = make();
    await again.reconcile(withCache());
    t.deepEqual(await again.plan(withCache()), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ensureFirewall: a missing table is loaded from the empty document before anything else; a present one is left alone', async (t) => {
  const { kernel, reconciler } = setup();
  t.true(await reconciler.ensureFirewall(emptyDocument('node', 'node1')));
  t.is(kernel.links.size, 0, 'no interface, route or peer is touched');
  t.false(await reconciler.ensureFirewall(emptyDocument('node', 'node1')), 'already there: nothing to do');
  // The first real document then replaces it as a structural change, and the next plan is empty.
  await reconciler.reconcile(twoTenants());
  t.deepEqual(await reconciler.plan(twoTenants()), []);
});
