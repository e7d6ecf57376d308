import test from 'ava';
import { Reconciler, orderChanges, type Change } from '../../../src/node-agent/reconcile.js';
import { renderFirewall } from '../../../src/node-agent/nftables.js';
import type { ChildHandle, Spawner } from '../../../src/node-agent/wgproc.js';
import type { DesiredState } from '../../../src/shared/desired.js';
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
  t.is(log[0], '[#] sysctl -w net.ipv4.ip_forward=1');
  t.regex(log[1] ?? '', /^\[#\] nft -f - # replace table inet netwall \(missing/);
  t.is(log[2], '[#] ip link add nw-acme type wireguard');
  t.true(log.includes(`[#] wg set nw-acme peer ${testKey(3)} persistent-keepalive off allowed-ips 10.1.255.1/32,198.51.100.53/32,203.0.113.0/24`));
  t.deepEqual(result.keysToRegister, [
    { tenant: 'acme', publicKey: testKey(101) },
    { tenant: 'beta-corp', publicKey: testKey(102) },
  ]);
  t.true(kernel.table?.includes(renderFirewall(twoTenants()).hash));
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
