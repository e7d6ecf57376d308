/**
 * Desired state as pure functions. `compileTenant` turns one tenant's model
 * into shared pieces (address groups, allow rules, peers, entry points) once;
 * `renderHost` cuts each host's document out of the compiled tenants it
 * belongs to without copying the large arrays, so rendering N hosts costs
 * O(N × peers) rather than O(N × workloads).
 */
import { createHash } from 'node:crypto';
import {
  DESIRED_SCHEMA,
  ROUTER_PORT,
  tenantInterfaceName,
  type AllowRule,
  type DesiredState,
  type EgressAllow,
  type EntryPoint,
  type GatewayExposure,
  type HostKind,
  type LocalWorkload,
  type PeerState,
  type TenantState,
} from '../shared/desired.js';
import { matchesSelector, selectorKey, type Labels } from '../shared/names.js';
import { parsePorts } from '../shared/ports.js';
import type { MemberModel, RenderSettings, TenantModel, WorkloadModel } from './model.js';

export interface CompiledTenant {
  model: TenantModel;
  /** Group id → sorted /32 member addresses. */
  groups: Map<string, string[]>;
  /** Group id → the selector it stands for (workload groups only). */
  groupSelectors: Map<string, Labels>;
  /** Group id → the nodes hosting a member of it. */
  groupNodes: Map<string, Set<string>>;
  rules: AllowRule[];
  workloadsByNode: Map<string, LocalWorkload[]>;
  entryPointsByNode: Map<string, EntryPoint[]>;
  exposuresByGateway: Map<string, GatewayExposure[]>;
  membersByHost: Map<string, MemberModel>;
  egressGateway: string | null;
  egressAllow: EgressAllow[];
}

const groupId = (kind: 's' | 'x', key: string): string =>
  `${kind}_${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;

/** The group id of a workload selector (stable across renders and hosts). */
export const selectorGroupId = (selector: Labels): string => groupId('s', selectorKey(selector));

export function compileTenant(model: TenantModel): CompiledTenant {
  const groups = new Map<string, string[]>();
  const groupSelectors = new Map<string, Labels>();
  const groupNodes = new Map<string, Set<string>>();

  const workloadGroup = (selector: Labels): string => {
    const id = selectorGroupId(selector);
    if (!groups.has(id)) {
      const members = model.workloads.filter((w) => matchesSelector(selector, w.labels));
      groups.set(id, members.map((w) => w.address).sort(compareIp));
      groupSelectors.set(id, selector);
      groupNodes.set(id, new Set(members.map((w) => w.node)));
    }
    return id;
  };

  const membersByHost = new Map(model.members.map((m) => [m.host.name, m]));
  const rules: AllowRule[] = [];
  for (const p of [...model.policies].sort(byName)) {
    const from = workloadGroup(p.spec.from);
    const to = workloadGroup(p.spec.to);
    for (const [i, a] of p.spec.allow.entries()) {
      rules.push({
        origin: `policy:${p.name}`,
        from,
        to,
        protocol: a.protocol,
        ports: a.protocol === 'icmp' ? [] : parsePorts(a.ports, `allow[${i}].ports`),
      });
    }
  }

  const workloadsByNode = new Map<string, LocalWorkload[]>();
  for (const w of [...model.workloads].sort(byName)) {
    let list = workloadsByNode.get(w.node);
    if (!list) workloadsByNode.set(w.node, (list = []));
    list.push({ name: w.name, address: w.address, labels: w.labels });
  }

  const entryPointsByNode = new Map<string, EntryPoint[]>();
  const exposuresByGateway = new Map<string, GatewayExposure[]>();
  for (const e of [...model.exposures].sort(byName)) {
    const targets = model.workloads.filter((w) => matchesSelector(e.spec.target.selector, w.labels)).sort(byName);
    const gateways = [...e.spec.gateways]
      .sort()
      .map((g) => membersByHost.get(g))
      .filter((m): m is MemberModel => m !== undefined)
      .map((m) => ({ host: m.host.name, meshAddress: m.address, routerPort: ROUTER_PORT }));
    for (const w of targets) {
      let list = entryPointsByNode.get(w.node);
      if (!list) entryPointsByNode.set(w.node, (list = []));
      list.push({ exposure: e.name, workload: w.name, address: w.address, port: e.spec.target.port, mode: e.spec.mode, gateways });
    }
    if (e.spec.mode === 'mesh' && gateways.length > 0 && targets.length > 0) {
      // Admit only the exposure's gateways to the entry point's port.
      const from = groupId('x', `exposure:${e.name}`);
      groups.set(from, gateways.map((g) => g.meshAddress).sort(compareIp));
      const to = workloadGroup(e.spec.target.selector);
      const port = e.spec.target.port;
      rules.push({ origin: `exposure:${e.name}`, from, to, protocol: 'tcp', ports: [{ from: port, to: port }] });
    }
    const exposure: GatewayExposure = {
      tenant: model.name,
      name: e.name,
      mode: e.spec.mode,
      protocol: e.spec.protocol,
      hostnames: [...e.spec.hostnames].sort(),
      publicPort: e.spec.publicPort,
      tls: e.spec.tls,
      proxyProtocol: e.spec.proxyProtocol,
      targets: targets.map((w) => ({ workload: w.name, node: w.node, address: w.address, port: e.spec.target.port })),
    };
    for (const g of gateways) {
      let list = exposuresByGateway.get(g.host);
      if (!list) exposuresByGateway.set(g.host, (list = []));
      list.push(exposure);
    }
  }

  // Egress leaves through one gateway per tenant: the first, by name, of those named by any rule.
  const egressGateways = [...new Set(model.egress.flatMap((r) => r.spec.gateways))].filter((g) => membersByHost.has(g)).sort();
  const egressAllow: EgressAllow[] = [];
  for (const r of [...model.egress].sort(byName)) {
    for (const [i, d] of r.spec.destinations.entries()) {
      egressAllow.push({
        rule: r.name,
        cidr: d.cidr,
        protocol: d.protocol,
        ports: d.protocol === 'icmp' ? [] : parsePorts(d.ports, `destinations[${i}].ports`),
      });
    }
  }

  return {
    model,
    groups,
    groupSelectors,
    groupNodes,
    rules,
    workloadsByNode,
    entryPointsByNode,
    exposuresByGateway,
    membersByHost,
    egressGateway: egressGateways[0] ?? null,
    egressAllow,
  };
}

export interface HostToRender {
  name: string;
  kind: HostKind;
  version: number;
  /** The compiled tenants this host is a member of. */
  tenants: CompiledTenant[];
}

export function renderHost(host: HostToRender, settings: RenderSettings): DesiredState {
  const tenants: TenantState[] = [];
  const exposures: GatewayExposure[] = [];
  for (const t of [...host.tenants].sort((a, b) => a.model.name.localeCompare(b.model.name))) {
    const self = t.membersByHost.get(host.name);
    if (!self) continue;
    tenants.push(renderTenant(t, self, settings));
    if (host.kind === 'gateway') exposures.push(...(t.exposuresByGateway.get(host.name) ?? []));
  }
  return {
    schema: DESIRED_SCHEMA,
    kind: host.kind,
    host: host.name,
    version: host.version,
    settings: { mtu: settings.mtu, statusIntervalSeconds: settings.statusIntervalSeconds },
    tenants,
    exposures,
  };
}

function renderTenant(t: CompiledTenant, self: MemberModel, settings: RenderSettings): TenantState {
  const me = self.host;
  const egressCidrs = t.egressAllow.map((a) => a.cidr);
  const peers: PeerState[] = [];
  for (const m of t.model.members) {
    if (m.host.name === me.name || m.publicKey === null) continue;
    // Nodes peer with every member; gateways only with nodes.
    if (me.kind === 'gateway' && m.host.kind === 'gateway') continue;
    const allowedIps = m.host.kind === 'node' ? [m.slice] : [`${m.address}/32`];
    if (me.kind === 'node' && m.host.name === t.egressGateway) allowedIps.push(...dedupe(egressCidrs));
    peers.push({
      host: m.host.name,
      kind: m.host.kind,
      publicKey: m.publicKey,
      endpoint: m.host.endpointHost === null ? null : `${m.host.endpointHost}:${m.listenPort}`,
      allowedIps,
      meshAddress: m.address,
      keepalive: me.endpointHost === null && m.host.endpointHost !== null ? settings.keepaliveSeconds : null,
    });
  }

  const isNode = me.kind === 'node';
  const workloads = isNode ? (t.workloadsByNode.get(me.name) ?? []) : [];
  const rules = isNode ? t.rules.filter((r) => touchesNode(t, r, me.name)) : [];
  const groups: Record<string, string[]> = {};
  for (const r of rules) {
    groups[r.from] = t.groups.get(r.from) ?? [];
    groups[r.to] = t.groups.get(r.to) ?? [];
  }
  const gw = t.egressGateway === null ? null : t.membersByHost.get(t.egressGateway);

  return {
    tenant: t.model.name,
    iface: tenantInterfaceName(t.model.name, t.model.id),
    subnet: t.model.subnet,
    slice: self.slice,
    address: self.address,
    listenPort: self.listenPort,
    publicKey: self.publicKey,
    peers,
    workloads,
    firewall: { groups, rules },
    entryPoints: isNode ? (t.entryPointsByNode.get(me.name) ?? []) : [],
    egress: {
      gateway: gw ? { host: gw.host.name, meshAddress: gw.address } : null,
      allow: gw ? t.egressAllow : [],
    },
  };
}

/** A node enforces a rule when it hosts a workload on either side of it. */
function touchesNode(t: CompiledTenant, r: AllowRule, node: string): boolean {
  return (t.groupNodes.get(r.from)?.has(node) ?? false) || (t.groupNodes.get(r.to)?.has(node) ?? false);
}

/**
 * The hosts whose documents change when `w` is added to or removed from the
 * tenant: its own node; every node enforcing a rule that references a group
 * the workload falls in (their sets gain or lose an address); and the
 * gateways of exposures that select it.
 */
export function hostsAffectedByWorkload(t: CompiledTenant, w: WorkloadModel): Set<string> {
  const affected = new Set<string>([w.node]);
  const hit = new Set<string>();
  for (const [id, selector] of t.groupSelectors) if (matchesSelector(selector, w.labels)) hit.add(id);
  for (const r of t.rules) {
    if (!hit.has(r.from) && !hit.has(r.to)) continue;
    for (const n of t.groupNodes.get(r.from) ?? []) affected.add(n);
    for (const n of t.groupNodes.get(r.to) ?? []) affected.add(n);
  }
  for (const e of t.model.exposures) {
    if (matchesSelector(e.spec.target.selector, w.labels)) for (const g of e.spec.gateways) affected.add(g);
  }
  return affected;
}

function compareIp(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
}

const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const dedupe = (xs: string[]): string[] => [...new Set(xs)];
