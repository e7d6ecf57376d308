/** Hand-written desired-state documents for the node agent's data plane tests. */
import { b64, wireguardPublicKey } from '../../../src/shared/crypto.js';
import type { AllowRule, DesiredState, LocalWorkload, PeerState, TenantState } from '../../../src/shared/desired.js';

const keyCache = new Map<number, string>();

/** A deterministic, valid WireGuard public key (memoised: x25519 in pure JS takes ~40 ms). */
export function testKey(n: number): string {
  const cached = keyCache.get(n);
  if (cached) return cached;
  const priv = new Uint8Array(32).fill(n & 255);
  priv[1] = (n >> 8) & 255;
  priv[0]! &= 248;
  priv[31]! = (priv[31]! & 127) | 64;
  const key = wireguardPublicKey(b64(priv));
  keyCache.set(n, key);
  return key;
}

export function node(tenants: TenantState[], version = 1): DesiredState {
  return { schema: 1, kind: 'node', host: 'node1', version, settings: { mtu: 1420, statusIntervalSeconds: 30, keepaliveSeconds: null }, tenants, exposures: [], networks: tenants.map((t) => t.tenant) };
}

export function peer(host: string, n: number, allowedIps: string[], extra: Partial<PeerState> = {}): PeerState {
  return {
    host,
    kind: 'node',
    publicKey: testKey(n),
    endpoint: `192.0.2.${n}:51820`,
    allowedIps,
    meshAddress: allowedIps[0]?.split('/')[0] ?? '',
    ...extra,
  };
}

export function tenant(name: string, octet: number, extra: Partial<TenantState> = {}): TenantState {
  return {
    tenant: name,
    iface: `nw-${name}`,
    subnet: `10.${octet}.0.0/16`,
    slice: `10.${octet}.1.0/24`,
    address: `10.${octet}.1.1`,
    listenPort: 51820 + octet,
    publicKey: null,
    peers: [],
    workloads: [],
    firewall: { groups: {}, rules: [] },
    entryPoints: [],
    egress: { gateway: null, allow: [] },
    ...extra,
  };
}

/** The empty node: no tenants at all. */
export const emptyNode = (): DesiredState => node([]);

/** Two tenants with policies, egress, and both kinds of entry point. */
export function twoTenants(): DesiredState {
  const web: LocalWorkload = { name: 'web', address: '10.1.1.10', labels: { app: 'web' } };
  const db: LocalWorkload = { name: 'db', address: '10.1.1.11', labels: { app: 'db' } };
  const api: LocalWorkload = { name: 'api', address: '10.2.1.10', labels: { app: 'api' } };
  const rules: AllowRule[] = [
    { origin: 'web-to-db', from: 'app=web', to: 'app=db', protocol: 'tcp', ports: [{ from: 5432, to: 5432 }] },
    { origin: 'web-to-db', from: 'app=web', to: 'app=db', protocol: 'udp', ports: [{ from: 5353, to: 5353 }, { from: 8000, to: 8080 }] },
    { origin: 'web-to-db', from: 'app=web', to: 'app=db', protocol: 'icmp', ports: [] },
    { origin: 'exposure:shop', from: 'gw', to: 'app=web', protocol: 'tcp', ports: [{ from: 8080, to: 8080 }] },
  ];
  const acme = tenant('acme', 1, {
    publicKey: testKey(1),
    peers: [
      peer('node2', 2, ['10.1.2.1/32', '10.1.2.0/24']),
      peer('gateway1', 3, ['10.1.255.1/32', '203.0.113.0/24', '198.51.100.53/32'], { kind: 'gateway', endpoint: null }),
      // The shared member list includes this host itself; it must be skipped.
      peer('node1', 1, ['10.1.1.1/32', '10.1.1.0/24']),
    ],
    workloads: [web, db],
    firewall: {
      groups: { 'app=web': ['10.1.1.10/32', '10.1.2.10/32'], 'app=db': ['10.1.1.11/32'], gw: ['10.1.255.1/32'] },
      rules,
    },
    entryPoints: [
      { exposure: 'shop', workload: 'web', address: '10.1.1.10', port: 8080, mode: 'mesh', gateways: [{ host: 'gateway1', meshAddress: '10.1.255.1', routerPort: 7400 }], routerKey: null, credential: null },
      { exposure: 'shop-tunnel', workload: 'web', address: '10.1.1.10', port: 8080, mode: 'tunnel', gateways: [{ host: 'gateway1', meshAddress: '10.1.255.1', routerPort: 7400 }], routerKey: null, credential: null },
    ],
    egress: {
      gateway: { host: 'gateway1', meshAddress: '10.1.255.1' },
      allow: [
        { rule: 'web', cidr: '203.0.113.0/24', protocol: 'tcp', ports: [{ from: 80, to: 80 }, { from: 443, to: 443 }] },
        { rule: 'special', cidr: '203.0.113.10/32', protocol: 'tcp', ports: [{ from: 8080, to: 8080 }] },
        { rule: 'dns', cidr: '198.51.100.53/32', protocol: 'udp', ports: [{ from: 53, to: 53 }] },
        { rule: 'ping', cidr: '203.0.113.0/24', protocol: 'icmp', ports: [] },
      ],
    },
  });
  const beta = tenant('beta-corp', 2, {
    iface: 'nw-beta-corp',
    peers: [peer('node2', 4, ['10.2.2.1/32', '10.2.2.0/24'])],
    workloads: [api],
    firewall: { groups: { 'app=api': ['10.2.1.10/32', '10.2.2.10/32'] }, rules: [{ origin: 'api-mesh', from: 'app=api', to: 'app=api', protocol: 'tcp', ports: [] }] },
  });
  const doc = node([acme, beta]);
  doc.settings.keepaliveSeconds = 25;
  return doc;
}

/**
 * Many tenants, workloads and policies: `tenants` tenants, each with
 * `workloadsPerTenant` local workloads spread over `groupsPerTenant` groups and
 * `policiesPerTenant` policies between them.
 */
export function large(tenants: number, workloadsPerTenant: number, groupsPerTenant: number, policiesPerTenant: number): DesiredState {
  const list: TenantState[] = [];
  for (let t = 0; t < tenants; t++) {
    const octet = 10 + t;
    const name = `t${t}`;
    const workloads: LocalWorkload[] = [];
    const groups: Record<string, string[]> = {};
    for (let w = 0; w < workloadsPerTenant; w++) {
      const address = `10.${octet}.${1 + Math.floor(w / 250)}.${2 + (w % 250)}`;
      const group = `app=g${w % groupsPerTenant}`;
      workloads.push({ name: `w${w}`, address, labels: { app: `g${w % groupsPerTenant}` } });
      (groups[group] ??= []).push(`${address}/32`);
    }
    const rules: AllowRule[] = [];
    for (let p = 0; p < policiesPerTenant; p++) {
      rules.push({
        origin: `p${p}`,
        from: `app=g${p % groupsPerTenant}`,
        to: `app=g${(p + 1) % groupsPerTenant}`,
        protocol: p % 3 === 0 ? 'udp' : 'tcp',
        ports: [{ from: 1000 + p, to: 1000 + p }],
      });
    }
    list.push(
      tenant(name, octet, {
        slice: `10.${octet}.0.0/18`,
        address: `10.${octet}.0.1`,
        peers: [peer('node2', 100 + t, [`10.${octet}.64.1/32`, `10.${octet}.64.0/18`])],
        workloads,
        firewall: { groups, rules },
      }),
    );
  }
  return node(list);
}
