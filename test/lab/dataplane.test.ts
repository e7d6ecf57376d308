/**
 * The node data plane against real kernels: two nodes (wireguard-go, nftables,
 * routes) on a bridged underlay, an egress gateway configured by hand, an
 * outsider on the underlay, and container namespaces on both nodes. Every
 * promise of the wall is probed both ways: what must work, and what must fail.
 *
 *   npx ava --config ava.lab.config.js test/lab/dataplane.test.ts
 */
import test from 'ava';
import { Reconciler } from '../../src/shared/dataplane/reconcile.js';
import { nodeFirewall } from '../../src/node-agent/nftables.js';
import { ensureTenantKey } from '../../src/shared/dataplane/wireguard.js';
import type { AllowRule, DesiredState, LocalWorkload, PeerState, TenantState } from '../../src/shared/desired.js';
import { NetnsLab, labUnavailable, waitForAsync, type LabContainer, type LabHost } from './helpers/netns.js';

const skip = labUnavailable(['ip', 'ss', 'nft', 'wg', 'wireguard-go', 'sysctl', 'nsenter', 'unshare', 'socat', 'ping', 'conntrack', 'nping']);
const lab = new NetnsLab();
const reconcilers: Reconciler[] = [];

test.after.always('clean up namespaces and processes', async () => {
  if (skip) return;
  for (const r of reconcilers) await r.stopUserspace();
  await lab.cleanup();
});

// ---------------------------------------------------------------- the hand-written world

const UNDERLAY = { n1: '192.0.2.1', n2: '192.0.2.2', g1: '192.0.2.3', u1: '192.0.2.4' } as const;
const EGRESS_DEST = '198.51.100.10';
const PORT = { acme: 51820, beta: 51821 } as const;

interface TenantPlan {
  name: 'acme' | 'beta';
  octet: number;
  workloads: Record<'n1' | 'n2', LocalWorkload[]>;
  groups: Record<string, string[]>;
  rules: AllowRule[];
}

const port = (p: number): AllowRule['ports'] => [{ from: p, to: p }];

const TENANTS: TenantPlan[] = [
  {
    name: 'acme',
    octet: 1,
    workloads: {
      n1: [
        { name: 'web', address: '10.1.1.10', labels: { app: 'web' } },
        { name: 'cache', address: '10.1.1.11', labels: { app: 'cache' } },
      ],
      n2: [{ name: 'db', address: '10.1.2.10', labels: { app: 'db' } }],
    },
    groups: { 'app=web': ['10.1.1.10/32'], 'app=db': ['10.1.2.10/32'], 'app=cache': ['10.1.1.11/32'] },
    rules: [
      { origin: 'web-db', from: 'app=web', to: 'app=db', protocol: 'tcp', ports: port(5432) },
      { origin: 'web-db', from: 'app=web', to: 'app=db', protocol: 'udp', ports: port(5353) },
      { origin: 'web-db', from: 'app=web', to: 'app=db', protocol: 'icmp', ports: [] },
      { origin: 'web-cache', from: 'app=web', to: 'app=cache', protocol: 'tcp', ports: port(6379) },
      { origin: 'web-cache', from: 'app=web', to: 'app=cache', protocol: 'udp', ports: port(5353) },
    ],
  },
  {
    name: 'beta',
    octet: 2,
    workloads: {
      n1: [{ name: 'api', address: '10.2.1.10', labels: { app: 'api' } }],
      n2: [{ name: 'worker', address: '10.2.2.10', labels: { app: 'worker' } }],
    },
    groups: { 'app=api': ['10.2.1.10/32'], 'app=worker': ['10.2.2.10/32'] },
    rules: [{ origin: 'api-worker', from: 'app=api', to: 'app=worker', protocol: 'tcp', ports: port(5432) }],
  },
];

type NodeName = 'n1' | 'n2';
const sliceOf = (octet: number, n: NodeName): string => `10.${octet}.${n === 'n1' ? 1 : 2}.0/24`;
const addressOf = (octet: number, n: NodeName): string => `10.${octet}.${n === 'n1' ? 1 : 2}.1`;

interface Keys {
  /** node → tenant → public key */
  nodes: Record<NodeName, Record<string, string>>;
  gateway: string;
}

function nodeDoc(n: NodeName, keys: Keys, version = 1, tweak?: (t: TenantState) => void): DesiredState {
  const tenants = TENANTS.map((p): TenantState => {
    // The tenant's whole member list, this node included (the agent skips itself).
    const peers: PeerState[] = (['n1', 'n2'] as const).map((m) => ({
      host: m,
      kind: 'node',
      publicKey: keys.nodes[m][p.name]!,
      endpoint: `${UNDERLAY[m]}:${PORT[p.name]}`,
      allowedIps: [`${addressOf(p.octet, m)}/32`, sliceOf(p.octet, m)],
      meshAddress: addressOf(p.octet, m),
    }));
    if (p.name === 'acme') {
      peers.push({
        host: 'g1',
        kind: 'gateway',
        publicKey: keys.gateway,
        endpoint: `${UNDERLAY.g1}:${PORT.acme}`,
        allowedIps: ['10.1.255.1/32', '198.51.100.0/24'],
        meshAddress: '10.1.255.1',
      });
    }
    const t: TenantState = {
      tenant: p.name,
      iface: `nw-${p.name}`,
      subnet: `10.${p.octet}.0.0/16`,
      slice: sliceOf(p.octet, n),
      address: addressOf(p.octet, n),
      listenPort: PORT[p.name],
      publicKey: keys.nodes[n][p.name]!,
      peers,
      workloads: p.workloads[n],
      firewall: { groups: p.groups, rules: p.rules },
      entryPoints: [],
      egress:
        p.name === 'acme'
          ? { gateway: { host: 'g1', meshAddress: '10.1.255.1' }, allow: [{ rule: 'web', cidr: '198.51.100.0/24', protocol: 'tcp', ports: port(80) }] }
          : { gateway: null, allow: [] },
    };
    tweak?.(t);
    return t;
  });
  return { schema: 1, kind: 'node', host: n, version, settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null }, tenants, exposures: [], networks: tenants.map((t) => t.tenant) };
}

// ---------------------------------------------------------------- the test

test('node data plane: mesh, policies, isolation, egress, anti-spoofing, drift', async (t) => {
  if (skip) {
    t.log(`SKIPPED: ${skip}`);
    t.pass();
    return;
  }
  const logs: Record<string, string[]> = { n1: [], n2: [] };
  const hosts: Record<'n1' | 'n2' | 'g1', LabHost> = {
    n1: await lab.host('n1'),
    n2: await lab.host('n2'),
    g1: await lab.host('g1'),
  };
  const u1 = await lab.namespace('u1');
  await lab.underlay([
    { ns: hosts.n1.ns, address: `${UNDERLAY.n1}/24` },
    { ns: hosts.n2.ns, address: `${UNDERLAY.n2}/24` },
    { ns: hosts.g1.ns, address: `${UNDERLAY.g1}/24` },
    { ns: u1, address: `${UNDERLAY.u1}/24` },
  ]);

  // A firewall of the host's own, which netwall must never disturb.
  await hosts.n1.runner.run(['nft', '-f', '-'], {
    input: 'table inet hostfw {\n\tchain input {\n\t\ttype filter hook input priority 10; policy accept;\n\t\ttcp dport 9999 counter drop comment "host rule"\n\t}\n}\n',
  });

  // Keys first: each node's documents name the other's public keys.
  const keys: Keys = { nodes: { n1: {}, n2: {} }, gateway: ensureTenantKey(hosts.g1.stateDir, 'acme').publicKey };
  for (const n of ['n1', 'n2'] as const) for (const p of TENANTS) keys.nodes[n][p.name] = ensureTenantKey(hosts[n].stateDir, p.name).publicKey;

  const reconciler = (n: NodeName): Reconciler => {
    const r = new Reconciler({
      runner: hosts[n].runner,
      spawner: hosts[n].spawner,
      log: (l) => logs[n]!.push(l),
      keyFileFor: (tenant) => ensureTenantKey(hosts[n].stateDir, tenant).privateKeyFile,
      // n1 also restricts its underlay input (ssh stays open); n2 keeps the default.
      firewall: nodeFirewall(n === 'n1' ? { underlay: { restrictInput: true, allowTcpPorts: [22] } } : {}),
    });
    reconcilers.push(r);
    return r;
  };
  const rec = { n1: reconciler('n1'), n2: reconciler('n2') };

  // Containers: routed veths made by hand, as the CNI plugin would.
  const c: Record<string, LabContainer> = {};
  for (const p of TENANTS) {
    for (const n of ['n1', 'n2'] as const) {
      for (const w of p.workloads[n]) c[w.name] = await lab.container(hosts[n].ns, p.name, w.name, w.address);
    }
  }

  // The egress gateway, configured by hand: wireguard-go, peers, and the destination on its lo.
  const g1 = hosts.g1;
  const gw = g1.spawner.spawn(['wireguard-go', 'nw-acme'], { WG_PROCESS_FOREGROUND: '1' });
  await waitForAsync(async () => (await g1.runner.run(['wg', 'show', 'nw-acme'], { allowFailure: true })).exitCode === 0, 5000, 'g1 wireguard-go');
  await g1.runner.run([
    'wg', 'set', 'nw-acme', 'listen-port', String(PORT.acme), 'private-key', ensureTenantKey(g1.stateDir, 'acme').privateKeyFile,
    'peer', keys.nodes.n1.acme!, 'endpoint', `${UNDERLAY.n1}:${PORT.acme}`, 'allowed-ips', '10.1.1.0/24',
    'peer', keys.nodes.n2.acme!, 'endpoint', `${UNDERLAY.n2}:${PORT.acme}`, 'allowed-ips', '10.1.2.0/24',
  ]);
  for (const argv of [
    ['ip', 'addr', 'add', '10.1.255.1/32', 'dev', 'nw-acme'],
    ['ip', 'link', 'set', 'nw-acme', 'up'],
    ['ip', 'route', 'add', '10.1.0.0/16', 'dev', 'nw-acme'],
    ['ip', 'addr', 'add', `${EGRESS_DEST}/32`, 'dev', 'lo'],
  ]) await g1.runner.run(argv);

  // Listeners.
  await lab.listen(c.db!.ns, 'tcp', 5432);
  await lab.listen(c.db!.ns, 'tcp', 22);
  await lab.listen(c.db!.ns, 'udp', 5353);
  await lab.listen(c.cache!.ns, 'tcp', 6379);
  await lab.listen(c.cache!.ns, 'udp', 5353);
  await lab.listen(c.cache!.ns, 'udp', 5354);
  await lab.listen(c.web!.ns, 'tcp', 8080);
  await lab.listen(c.worker!.ns, 'tcp', 5432);
  await lab.listen(c.api!.ns, 'tcp', 5432);
  await lab.listen(hosts.n1.ns, 'tcp', 22);
  await lab.listen(hosts.n1.ns, 'tcp', 2222);
  await lab.listen(g1.ns, 'tcp', 80, EGRESS_DEST);
  await lab.listen(g1.ns, 'tcp', 81, EGRESS_DEST);

  // ---- first reconcile on both nodes
  for (const n of ['n1', 'n2'] as const) {
    const result = await rec[n].reconcile(nodeDoc(n, keys));
    t.deepEqual(result.errors, [], `${n}: first reconcile`);
    t.true(result.changes.length > 0);
    t.log(`${n}: ${result.changes.length} changes; first lines:\n${logs[n]!.slice(0, 6).join('\n')}`);
  }
  t.true(logs.n1!.some((l) => /^\[#\] wg set nw-acme peer \S+ endpoint 192\.0\.2\.2:51820 persistent-keepalive off allowed-ips 10\.1\.2\.0\/24,10\.1\.2\.1\/32$/.test(l)));
  const forward = await hosts.n1.runner.run(['sysctl', '-n', 'net.ipv4.ip_forward']);
  t.is(forward.stdout.trim(), '1', 'ip_forward set in the node namespace');

  // ---- second reconcile: nothing to do
  for (const n of ['n1', 'n2'] as const) t.deepEqual(await rec[n].plan(nodeDoc(n, keys)), [], `${n}: second plan must be empty`);

  // ---- what must work (the first exchange also completes the WireGuard handshakes)
  await waitForAsync(() => lab.ping(c.web!.ns, c.db!.address), 10_000, 'web → db ping across the mesh');
  t.true(await lab.reach(c.web!.ns, 'tcp', c.db!.address, 5432), 'web → db tcp 5432 (across nodes)');
  t.true(await lab.reach(c.web!.ns, 'udp', c.db!.address, 5353), 'web → db udp 5353 (across nodes)');
  t.true(await lab.reach(c.web!.ns, 'tcp', c.cache!.address, 6379), 'web → cache tcp 6379 (same node)');
  t.true(await lab.reach(c.web!.ns, 'udp', c.cache!.address, 5353), 'web → cache udp 5353 (same node)');
  t.true(await lab.reach(c.api!.ns, 'tcp', c.worker!.address, 5432), 'beta api → worker tcp 5432');
  t.true(await lab.reach(c.web!.ns, 'tcp', EGRESS_DEST, 80), 'web → egress destination tcp 80 through the gateway');
  t.true(await lab.reach(u1, 'tcp', UNDERLAY.n1, 22), 'underlay → n1 ssh stays open with restrictInput');

  // ---- what must fail (in parallel: each waits for its timeout)
  const before = { n1: await rec.n1.dropCounters(), n2: await rec.n2.dropCounters() };
  await lab.exec(u1, ['ip', 'route', 'add', '10.0.0.0/8', 'via', UNDERLAY.n1]);
  const mustFail: [string, Promise<boolean>][] = [
    ['web → db tcp 22 (port not allowed)', lab.reach(c.web!.ns, 'tcp', c.db!.address, 22)],
    ['db → web tcp 8080 (wrong direction)', lab.reach(c.db!.ns, 'tcp', c.web!.address, 8080)],
    ['web → cache udp 5354 (port not allowed, same node)', lab.reach(c.web!.ns, 'udp', c.cache!.address, 5354)],
    ['cache → db tcp 5432 (not in the policy)', lab.reach(c.cache!.ns, 'tcp', c.db!.address, 5432)],
    ['web → beta worker (cross-tenant, across nodes)', lab.reach(c.web!.ns, 'tcp', c.worker!.address, 5432)],
    ['web → beta api (cross-tenant, same node)', lab.reach(c.web!.ns, 'tcp', c.api!.address, 5432)],
    ['beta api → acme db (cross-tenant)', lab.reach(c.api!.ns, 'tcp', c.db!.address, 5432)],
    ['web → 169.254.1.1:22 (host)', lab.reach(c.web!.ns, 'tcp', '169.254.1.1', 22)],
    ['web → n1 underlay address :22 (host)', lab.reach(c.web!.ns, 'tcp', UNDERLAY.n1, 22)],
    ['web → n1 mesh address :2222 (host)', lab.reach(c.web!.ns, 'tcp', '10.1.1.1', 2222)],
    ['web ping 169.254.1.1', lab.ping(c.web!.ns, '169.254.1.1')],
    ['web → egress destination tcp 81 (not allowed)', lab.reach(c.web!.ns, 'tcp', EGRESS_DEST, 81)],
    ['web → underlay host (containers never use the underlay)', lab.reach(c.web!.ns, 'tcp', UNDERLAY.u1, 22)],
    ['beta api → egress destination (no egress for beta)', lab.reach(c.api!.ns, 'tcp', EGRESS_DEST, 80)],
    ['underlay host with a route → web 8080', lab.reach(u1, 'tcp', c.web!.address, 8080)],
    ['underlay host with a route → n1 mesh address', lab.ping(u1, '10.1.1.1')],
    ['underlay → n1 tcp 2222 (input restricted)', lab.reach(u1, 'tcp', UNDERLAY.n1, 2222)],
    ['db (n2) → n1 mesh address over the mesh', lab.reach(c.db!.ns, 'tcp', '10.1.1.1', 2222)],
    ['n2 host → web 8080 over the mesh (the destination enforces policy too)', lab.reach(hosts.n2.ns, 'tcp', c.web!.address, 8080)],
    ['n2 host → n1 mesh address (mesh → host)', lab.reach(hosts.n2.ns, 'tcp', '10.1.1.1', 2222)],
  ];
  for (const [what, probe] of mustFail) t.false(await probe, `must fail: ${what}`);

  // Spoofing: web claims cache's address.
  await lab.exec(c.web!.ns, ['ip', 'addr', 'add', '10.1.1.11/32', 'dev', 'eth0']);
  t.false(await lab.reach(c.web!.ns, 'tcp', c.db!.address, 5432, { bind: '10.1.1.11' }), 'must fail: spoofed source');
  await lab.exec(c.web!.ns, ['ip', 'addr', 'del', '10.1.1.11/32', 'dev', 'eth0']);

  // A forged "reply" from the underlay host never reaches conntrack (dropped in raw_prerouting). Conntrack
  // matches by addresses and ports, not by interface: dropped only later, in forward, the packet would
  // already have marked the container flow as replied. The flow web → cache udp 5353 waits for its reply.
  const flow = ['-p', 'udp', '-s', c.web!.address, '-d', c.cache!.address, '--sport', '40001', '--dport', '5353'];
  await hosts.n1.runner.run(['conntrack', '-I', ...flow, '-t', '120', '-u', 'UNSET']);
  const entry = async (): Promise<string> => (await hosts.n1.runner.run(['conntrack', '-L', ...flow], { allowFailure: true })).stdout;
  t.regex(await entry(), /\[UNREPLIED\]/, 'the flow web → cache udp 5353 waits for its reply');
  const forgedBefore = (await rec.n1.dropCounters()).underlay ?? 0;
  await lab.exec(u1, ['nping', '-q', '--udp', '-S', c.cache!.address, '--source-port', '5353', '-p', '40001', '-c', '1', c.web!.address], { allowFailure: true, timeoutMs: 10_000 });
  await waitForAsync(async () => ((await rec.n1.dropCounters()).underlay ?? 0) > forgedBefore, 3000, 'the forged reply from the underlay is dropped (underlay)');
  t.regex(await entry(), /\[UNREPLIED\]/, "the forged reply did not touch the flow's conntrack entry");
  await hosts.n1.runner.run(['conntrack', '-D', ...flow], { allowFailure: true });

  const after = { n1: await rec.n1.dropCounters(), n2: await rec.n2.dropCounters() };
  const grew = (n: 'n1' | 'n2', reason: string): boolean => (after[n][reason] ?? 0) > (before[n][reason] ?? 0);
  t.log(`drop counters n1: ${JSON.stringify(after.n1)}\ndrop counters n2: ${JSON.stringify(after.n2)}`);
  for (const reason of ['policy', 'cross_tenant', 'to_host', 'mesh_to_host', 'egress', 'underlay', 'spoof', 'input']) {
    t.true(grew('n1', reason), `n1 counter ${reason} grew`);
  }
  t.true(grew('n2', 'policy'), 'n2 stops db → web and db → n1 at the source');

  // ---- WireGuard's own UDP is untracked on both nodes, and on n1 (input restricted) ICMP errors about
  // it still reach the host: a "fragmentation needed" quoting n1's WireGuard packet sets the path MTU.
  for (const n of ['n1', 'n2'] as const) {
    const entries = (await hosts[n].runner.run(['conntrack', '-L', '-p', 'udp'], { allowFailure: true })).stdout;
    t.false(new RegExp(`port=(${PORT.acme}|${PORT.beta})\\b`).test(entries), `${n}: no conntrack entry for WireGuard's UDP`);
  }
  const pmtu = async (): Promise<boolean> => /\bmtu\b/.test((await hosts.n1.runner.run(['ip', 'route', 'get', UNDERLAY.u1])).stdout);
  t.false(await pmtu(), 'no path MTU to u1 known before');
  const invalidBefore = (await rec.n1.dropCounters()).invalid ?? 0;
  const hex = (ip: string): string => ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');
  const port16 = PORT.acme.toString(16).padStart(4, '0');
  // The quoted packet: IPv4 (no options, DF, UDP) n1 → u1, then UDP from n1's WireGuard port.
  const quoted = `450005a00000400040110000${hex(UNDERLAY.n1)}${hex(UNDERLAY.u1)}${port16}${port16}058c0000`;
  await lab.exec(u1, ['nping', '-q', '--icmp', '--icmp-type', '3', '--icmp-code', '4', '--data', quoted, '-c', '1', UNDERLAY.n1], { allowFailure: true, timeoutMs: 10_000 });
  await waitForAsync(pmtu, 3000, 'n1 learns the path MTU from the ICMP error about its WireGuard packet');
  t.is((await rec.n1.dropCounters()).invalid ?? 0, invalidBefore, 'the error was not dropped as invalid');

  // ---- the foreign table survived
  const foreign = await hosts.n1.runner.run(['nft', 'list', 'table', 'inet', 'hostfw']);
  t.regex(foreign.stdout, /tcp dport 9999 counter packets \d+ bytes \d+ drop comment "host rule"/);

  // ---- an unrelated peer change keeps the other peers' sessions
  const handshake = async (): Promise<string> => {
    const dump = await hosts.n1.runner.run(['wg', 'show', 'nw-acme', 'latest-handshakes']);
    return dump.stdout.split('\n').find((l) => l.startsWith(keys.nodes.n2.acme!)) ?? '';
  };
  const hs = await handshake();
  t.regex(hs, /\t[1-9]\d+$/, 'n1 ↔ n2 handshake happened');
  logs.n1!.length = 0;
  const changedGateway = nodeDoc('n1', keys, 2, (tt) => {
    tt.peers.find((p) => p.host === 'g1')?.allowedIps.push('10.1.255.2/32');
  });
  const res = await rec.n1.reconcile(changedGateway);
  t.deepEqual(res.errors, []);
  t.deepEqual(
    logs.n1,
    [
      `[#] wg set nw-acme peer ${keys.gateway} allowed-ips 10.1.255.1/32,10.1.255.2/32,198.51.100.0/24`,
      '[#] ip route replace 10.1.255.2/32 dev nw-acme',
    ],
    'only the gateway peer (and its new route) is touched',
  );
  t.is(await handshake(), hs, 'n2 peer keeps its latest handshake');
  t.true(await lab.reach(c.web!.ns, 'tcp', c.db!.address, 5432), 'still connected');
  t.deepEqual(await rec.n1.plan(changedGateway), []);

  // ---- drift: a rule deleted by hand, a peer removed by hand
  const chain = await hosts.n1.runner.run(['nft', '-a', 'list', 'chain', 'inet', 'netwall', 'from_container']);
  const handle = /iifname \. ip saddr != @veth_addr goto drop_spoof # handle (\d+)/.exec(chain.stdout)?.[1];
  t.truthy(handle, 'found the anti-spoof rule');
  await hosts.n1.runner.run(['nft', 'delete', 'rule', 'inet', 'netwall', 'from_container', 'handle', handle ?? '0']);
  await hosts.n1.runner.run(['wg', 'set', 'nw-acme', 'peer', keys.nodes.n2.acme!, 'remove']);
  const drift = await rec.n1.plan(changedGateway);
  t.deepEqual(
    drift.map((ch) => (ch.kind === 'firewall-replace' ? `${ch.kind}:${ch.reason}` : ch.kind)),
    ['firewall-replace:drift', 'peer-set'],
  );
  const repaired = await rec.n1.reconcile(changedGateway);
  t.deepEqual(repaired.errors, []);
  t.deepEqual(await rec.n1.plan(changedGateway), [], 'drift repaired');
  t.true(await lab.reach(c.web!.ns, 'tcp', c.db!.address, 5432), 'web → db works again after repair');
  t.regex((await hosts.n1.runner.run(['nft', 'list', 'table', 'inet', 'hostfw'])).stdout, /host rule/, 'foreign table still there');

  // ---- wireguard-go dies: the link vanishes, the next reconcile starts it again
  const pid = rec.n1.supervisor.pid('nw-acme');
  t.truthy(pid, 'wireguard-go for nw-acme is supervised');
  process.kill(pid ?? 0, 'SIGKILL');
  await waitForAsync(async () => (await hosts.n1.runner.run(['ip', 'link', 'show', 'dev', 'nw-acme'], { allowFailure: true })).exitCode !== 0, 5000, 'nw-acme gone');
  await waitForAsync(async () => !rec.n1.supervisor.has('nw-acme'), 5000, 'exit noticed');
  const restarted = await rec.n1.reconcile(changedGateway);
  t.deepEqual(restarted.errors, []);
  t.not(rec.n1.supervisor.pid('nw-acme'), pid, 'a new wireguard-go');
  t.deepEqual(await rec.n1.plan(changedGateway), []);
  await waitForAsync(() => lab.reach(c.web!.ns, 'tcp', c.db!.address, 5432), 10_000, 'web → db after the restart');

  // ---- a tenant removed: its interface goes, wireguard-go stopped by pid, its routes and rule with it
  const acmeOnly = nodeDoc('n1', keys, 3);
  acmeOnly.tenants = acmeOnly.tenants.filter((tt) => tt.tenant === 'acme');
  const removed = await rec.n1.reconcile(acmeOnly);
  t.deepEqual(removed.errors, []);
  t.is((await hosts.n1.runner.run(['ip', 'link', 'show', 'dev', 'nw-beta'], { allowFailure: true })).exitCode, 1, 'nw-beta deleted');
  t.is(rec.n1.supervisor.pid('nw-beta'), undefined);
  t.true(rec.n1.supervisor.pid('nw-acme') !== undefined);
  t.deepEqual(await rec.n1.plan(acmeOnly), []);
  t.false(await lab.reach(c.api!.ns, 'tcp', c.worker!.address, 5432), 'must fail: a removed tenant has no data plane');

  gw.kill('SIGTERM');
  await gw.exited;
});

test.after.always('nothing left behind', async (t) => {
  if (skip) return;
  t.deepEqual(await lab.leftovers(), []);
});
