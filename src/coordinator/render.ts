/**
 * Desired state as pure functions. `compileTenant` turns one tenant's model
 * into pieces every member's document shares by reference (address groups,
 * allow rules, the peer list); `renderHost` cuts one host's document out of
 * the compiled tenants it belongs to without copying them, so rendering N
 * hosts costs O(N × tenants), not O(N × peers). `withWorkload` updates a
 * compiled tenant for one added or removed workload without recompiling it:
 * the tenant-wide lists (workloads, address groups, each node's workloads)
 * are persistent sorted lists, so a change costs O(log n) and the version
 * before it stays intact for whoever still reads it.
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
import { ipToInt } from '../shared/ipv4.js';
import { matchesSelector, selectorKey, type Labels } from '../shared/names.js';
import { parsePorts } from '../shared/ports.js';
import type { MemberModel, RenderSettings, TenantModel, WorkloadModel } from './model.js';
import { SortedList } from './sorted-list.js';

/** A list of addresses in numeric order. */
export type AddressList = SortedList<string, number>;
/** How many of a group's members run on a node. */
export interface NodeCount {
  node: string;
  count: number;
}
/** A node's workloads. */
export interface NodeWorkloads {
  node: string;
  workloads: SortedList<LocalWorkload, string>;
}

export interface CompiledTenant {
  /** The tenant's model but its workloads: those are in `workloads`. */
  model: Omit<TenantModel, 'workloads'>;
  /** Every workload of the tenant, by name. */
  workloads: SortedList<WorkloadModel, string>;
  /** Group id → /32 member addresses. */
  groups: Map<string, AddressList>;
  /** Group id → the selector it stands for (workload groups only). */
  groupSelectors: Map<string, Labels>;
  /** Group id → the nodes its members run on, by node name. */
  groupNodes: Map<string, SortedList<NodeCount, string>>;
  rules: AllowRule[];
  /** The nodes running workloads, by node name, each with its workloads by name. */
  workloadsByNode: SortedList<NodeWorkloads, string>;
  entryPointsByNode: Map<string, EntryPoint[]>;
  exposuresByGateway: Map<string, GatewayExposure[]>;
  membersByHost: Map<string, MemberModel>;
  /** The peer list as nodes see it (every keyed member) and as gateways see it (keyed nodes). */
  nodePeers: PeerState[];
  gatewayPeers: PeerState[];
  egressGateway: string | null;
  egressAllow: EgressAllow[];
}

const groupId = (kind: 's' | 'x', key: string): string => `${kind}_${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;

/** The group id of a workload selector (stable across renders and hosts). */
export const selectorGroupId = (selector: Labels): string => groupId('s', selectorKey(selector));

const nameOf = (x: { name: string }): string => x.name;
const nodeOf = (x: { node: string }): string => x.node;
const addresses = (ips: Iterable<string>): AddressList => SortedList.from(ips, ipToInt);
const localWorkloads = (list: Iterable<LocalWorkload>): SortedList<LocalWorkload, string> => SortedList.from(list, nameOf);

/** The compiled tenant's model as a plain TenantModel (for recompiling a variant of it). */
export const tenantModel = (c: CompiledTenant): TenantModel => ({ ...c.model, workloads: [...c.workloads] });

export function compileTenant(tenant: TenantModel): CompiledTenant {
  // The workload array stays out of `model`: after withWorkload it would be stale. Compiling
  // reads the array as given; the list by name sorts itself when first used.
  const { workloads: all, ...model } = tenant;
  const workloads = SortedList.from(all, nameOf);
  const membersByHost = new Map(model.members.map((m) => [m.host.name, m]));
  const groups = new Map<string, AddressList>();
  const groupSelectors = new Map<string, Labels>();
  const groupNodes = new Map<string, SortedList<NodeCount, string>>();

  const workloadGroup = (selector: Labels): string => {
    const id = selectorGroupId(selector);
    if (!groups.has(id)) {
      const members = all.filter((w) => matchesSelector(selector, w.labels));
      groups.set(id, addresses(members.map((w) => w.address)));
      groupSelectors.set(id, selector);
      const nodes = new Map<string, number>();
      for (const w of members) nodes.set(w.node, (nodes.get(w.node) ?? 0) + 1);
      groupNodes.set(id, SortedList.from([...nodes].map(([node, count]) => ({ node, count })), nodeOf));
    }
    return id;
  };

  const rules: AllowRule[] = [];
  for (const p of [...model.policies].sort(byName)) {
    const from = workloadGroup(p.spec.from);
    const to = workloadGroup(p.spec.to);
    for (const [i, a] of p.spec.allow.entries()) {
      rules.push({ origin: `policy:${p.name}`, from, to, protocol: a.protocol, ports: a.protocol === 'icmp' ? [] : parsePorts(a.ports, `allow[${i}].ports`) });
    }
  }
  for (const e of [...model.exposures].sort(byName)) {
    const gateways = exposureGateways(e.spec.gateways, membersByHost);
    // Workload group even without mesh mode: adding a target must find this exposure.
    const to = workloadGroup(e.spec.target.selector);
    if (e.spec.mode !== 'mesh' || gateways.length === 0) continue;
    // Admit only the exposure's gateways to the entry point's port.
    const from = groupId('x', `exposure:${e.name}`);
    groups.set(from, addresses(gateways.map((g) => g.meshAddress)));
    const port = e.spec.target.port;
    rules.push({ origin: `exposure:${e.name}`, from, to, protocol: 'tcp', ports: [{ from: port, to: port }] });
  }

  const local = new Map<string, LocalWorkload[]>();
  for (const w of all) {
    let list = local.get(w.node);
    if (!list) local.set(w.node, (list = []));
    list.push(localWorkload(w));
  }
  const workloadsByNode = SortedList.from([...local].map(([node, list]) => ({ node, workloads: localWorkloads(list) })), nodeOf);

  // Egress leaves through one gateway per tenant: the first, by name, of those named by any rule.
  const egressGateway = [...new Set(model.egress.flatMap((r) => r.spec.gateways))].filter((g) => membersByHost.has(g)).sort()[0] ?? null;
  const egressAllow: EgressAllow[] = [];
  for (const r of [...model.egress].sort(byName)) {
    for (const [i, d] of r.spec.destinations.entries()) {
      egressAllow.push({ rule: r.name, cidr: d.cidr, protocol: d.protocol, ports: d.protocol === 'icmp' ? [] : parsePorts(d.ports, `destinations[${i}].ports`) });
    }
  }

  const { nodePeers, gatewayPeers } = compilePeers(model.members, egressGateway, egressAllow);
  return {
    model,
    workloads,
    groups,
    groupSelectors,
    groupNodes,
    rules,
    workloadsByNode,
    ...compileExposures(model, all, membersByHost),
    membersByHost,
    nodePeers,
    gatewayPeers,
    egressGateway,
    egressAllow,
  };
}

function exposureGateways(names: string[], membersByHost: Map<string, MemberModel>): EntryPoint['gateways'] {
  return [...names]
    .sort()
    .map((g) => membersByHost.get(g))
    .filter((m): m is MemberModel => m !== undefined)
    .map((m) => ({ host: m.host.name, meshAddress: m.address, routerPort: ROUTER_PORT }));
}

function compileExposures(
  model: CompiledTenant['model'],
  workloads: readonly WorkloadModel[],
  membersByHost: Map<string, MemberModel>,
): Pick<CompiledTenant, 'entryPointsByNode' | 'exposuresByGateway'> {
  const entryPointsByNode = new Map<string, EntryPoint[]>();
  const exposuresByGateway = new Map<string, GatewayExposure[]>();
  const keys = new Map(model.routerKeys.map((k) => [`${k.exposure}/${k.workload}`, k]));
  for (const e of [...model.exposures].sort(byName)) {
    const targets = workloads.filter((w) => matchesSelector(e.spec.target.selector, w.labels)).sort(byName);
    const gateways = exposureGateways(e.spec.gateways, membersByHost);
    const tunnel = e.spec.mode === 'tunnel';
    const routerClients: GatewayExposure['routerClients'] = [];
    for (const w of targets) {
      let list = entryPointsByNode.get(w.node);
      if (!list) entryPointsByNode.set(w.node, (list = []));
      const key = tunnel ? keys.get(`${e.name}/${w.name}`) : undefined;
      if (key) routerClients.push({ workload: w.name, node: w.node, publicKey: key.publicKey });
      list.push({
        exposure: e.name,
        workload: w.name,
        address: w.address,
        port: e.spec.target.port,
        mode: e.spec.mode,
        gateways,
        routerKey: key?.publicKey ?? null,
        credential: key?.credential ?? null,
      });
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
      routerClients,
    };
    for (const g of gateways) {
      let list = exposuresByGateway.get(g.host);
      if (!list) exposuresByGateway.set(g.host, (list = []));
      list.push(exposure);
    }
  }
  return { entryPointsByNode, exposuresByGateway };
}

function compilePeers(members: MemberModel[], egressGateway: string | null, egressAllow: EgressAllow[]): { nodePeers: PeerState[]; gatewayPeers: PeerState[] } {
  const egressCidrs = [...new Set(egressAllow.map((a) => a.cidr))];
  const nodePeers: PeerState[] = [];
  const gatewayPeers: PeerState[] = [];
  for (const m of [...members].sort((a, b) => (a.host.name < b.host.name ? -1 : 1))) {
    if (m.publicKey === null) continue;
    const isNode = m.host.kind === 'node';
    const peer: PeerState = {
      host: m.host.name,
      kind: m.host.kind,
      publicKey: m.publicKey,
      endpoint: m.host.endpointHost === null ? null : `${m.host.endpointHost}:${m.listenPort}`,
      allowedIps: isNode ? [m.slice] : [`${m.address}/32`, ...(m.host.name === egressGateway ? egressCidrs : [])],
      meshAddress: m.address,
    };
    nodePeers.push(peer);
    // Gateways peer only with nodes; egress destinations are not routes on a gateway.
    if (isNode) gatewayPeers.push(peer);
  }
  return { nodePeers, gatewayPeers };
}

/**
 * The compiled tenant after one workload is added (or removed), sharing
 * every piece the change does not touch; `c` itself stays as it was. The
 * caller guarantees membership did not change (a new member needs
 * compileTenant). O(log n) in the tenant's workloads and nodes, times its
 * selectors — except for a workload an exposure selects, whose exposures
 * are recompiled (O(n)).
 */
export function withWorkload(c: CompiledTenant, w: WorkloadModel, op: 'add' | 'remove'): CompiledTenant {
  const add = op === 'add';
  const workloads = add ? c.workloads.with(w) : c.workloads.without(w.name);
  // A removed workload's router keys go with it (the database cascades the same way).
  const model = add ? c.model : { ...c.model, routerKeys: c.model.routerKeys.filter((k) => k.workload !== w.name) };

  // Copies of the group-keyed maps: as many entries as the tenant has selectors, not workloads.
  const groups = new Map(c.groups);
  const groupNodes = new Map(c.groupNodes);
  for (const [id, selector] of c.groupSelectors) {
    if (!matchesSelector(selector, w.labels)) continue;
    const members = c.groups.get(id) ?? addresses([]);
    groups.set(id, add ? members.with(w.address) : members.without(ipToInt(w.address)));
    const nodes = c.groupNodes.get(id) ?? SortedList.from<NodeCount, string>([], nodeOf);
    const count = (nodes.get(w.node)?.count ?? 0) + (add ? 1 : -1);
    groupNodes.set(id, count > 0 ? nodes.with({ node: w.node, count }) : nodes.without(w.node));
  }

  const local = c.workloadsByNode.get(w.node)?.workloads ?? localWorkloads([]);
  const next = add ? local.with(localWorkload(w)) : local.without(w.name);
  const workloadsByNode = next.size ? c.workloadsByNode.with({ node: w.node, workloads: next }) : c.workloadsByNode.without(w.node);

  const exposed = c.model.exposures.some((e) => matchesSelector(e.spec.target.selector, w.labels));
  return {
    ...c,
    model,
    workloads,
    groups,
    groupNodes,
    workloadsByNode,
    ...(exposed ? compileExposures(model, workloads.toArray(), c.membersByHost) : {}),
  };
}

export interface HostToRender {
  name: string;
  kind: HostKind;
  version: number;
  /** Underlay endpoint; null when behind NAT (it then keeps NAT mappings alive). */
  endpointHost: string | null;
  /** The compiled tenants this host is a member of. */
  tenants: CompiledTenant[];
  /** Nodes: the names of all tenants (their CNI networks). */
  networks?: string[];
}

export function renderHost(host: HostToRender, settings: RenderSettings): DesiredState {
  const tenants: TenantState[] = [];
  const exposures: GatewayExposure[] = [];
  for (const t of [...host.tenants].sort((a, b) => (a.model.name < b.model.name ? -1 : 1))) {
    const self = t.membersByHost.get(host.name);
    if (!self) continue;
    tenants.push(renderTenant(t, self));
    if (host.kind === 'gateway') exposures.push(...(t.exposuresByGateway.get(host.name) ?? []));
  }
  return {
    schema: DESIRED_SCHEMA,
    kind: host.kind,
    host: host.name,
    version: host.version,
    settings: {
      mtu: settings.mtu,
      statusIntervalSeconds: settings.statusIntervalSeconds,
      keepaliveSeconds: host.endpointHost === null ? settings.keepaliveSeconds : null,
    },
    tenants,
    exposures,
    networks: host.kind === 'node' ? (host.networks ?? []) : [],
  };
}

function renderTenant(t: CompiledTenant, self: MemberModel): TenantState {
  const me = self.host;
  const isNode = me.kind === 'node';
  // toMap: one hash index per version, shared by every host rendered from it.
  const enforces = (group: string): boolean => t.groupNodes.get(group)?.toMap().has(me.name) ?? false;
  const rules = isNode ? t.rules.filter((r) => enforces(r.from) || enforces(r.to)) : [];
  // Documents share the lists' arrays by reference, like the peer list (nobody mutates a document).
  const groups: Record<string, string[]> = {};
  for (const r of rules) {
    groups[r.from] = (t.groups.get(r.from)?.toArray() ?? []) as string[];
    groups[r.to] = (t.groups.get(r.to)?.toArray() ?? []) as string[];
  }
  const gw = t.egressGateway === null ? null : t.membersByHost.get(t.egressGateway);
  return {
    tenant: t.model.name,
    iface: tenantInterfaceName(t.model.name, t.model.id),
    subnet: t.model.subnet,
    slice: self.slice,
    address: self.address,
    listenPort: self.listenPort,
    publicKey: self.nextPublicKey ?? self.publicKey,
    peerKey: self.publicKey,
    peers: isNode ? t.nodePeers : t.gatewayPeers,
    workloads: isNode ? ((t.workloadsByNode.toMap().get(me.name)?.workloads.toArray() ?? []) as LocalWorkload[]) : [],
    firewall: { groups, rules },
    entryPoints: isNode ? (t.entryPointsByNode.get(me.name) ?? []) : [],
    egress: { gateway: gw ? { host: gw.host.name, meshAddress: gw.address } : null, allow: gw ? t.egressAllow : [] },
  };
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
    for (const { node } of t.groupNodes.get(r.from) ?? []) affected.add(node);
    for (const { node } of t.groupNodes.get(r.to) ?? []) affected.add(node);
  }
  for (const e of t.model.exposures) {
    if (matchesSelector(e.spec.target.selector, w.labels)) for (const g of e.spec.gateways) affected.add(g);
  }
  return affected;
}

const localWorkload = (w: WorkloadModel): LocalWorkload => ({ name: w.name, address: w.address, labels: w.labels });

const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
