/**
 * Reachability as pure functions of one tenant: whether a flow is allowed and
 * by which rules (`explainFlow`), every allowed workload-to-workload flow
 * (`reachabilityMatrix`), and how that matrix would change if a policy were
 * put or deleted (`whatIf`). Nothing here reads the database or the kernel:
 * expected results come from the policy model, never from observation.
 *
 * Everything is read off the compiled tenant render.ts ships to the hosts —
 * its address groups, allow rules, egress allow list, egress gateway and
 * entry points — so an explanation cannot disagree with what the nodes are
 * told to enforce. The semantics are those of the node firewall
 * (src/node-agent/nftables.ts), for new connections (replies to an allowed
 * connection always pass):
 * - workload → workload of the same tenant: allowed iff a policy rule's
 *   from-group holds the source, its to-group holds the destination, the
 *   protocol is the rule's, and (tcp/udp) the port is among its ports (a rule
 *   without ports allows every port). Default deny. A tunnel-mode entry point
 *   accepts no connection at all, whatever the policies say: it is reached
 *   only through its own connection out to the gateway.
 * - towards another tenant's subnet: never ("cross-tenant traffic is never
 *   allowed").
 * - towards a netwall host — any node's or gateway's mesh address, underlay
 *   endpoint, management or public address, the coordinator, link-local
 *   169.254.0.0/16 (the node's side of the veth, metadata services): never.
 *   The one exception is the router client of a tunnel-mode entry point,
 *   which dials its exposure's gateways at their mesh address, tcp 7400.
 *   Where the firewalls do not hold this line — an egress rule whose CIDR
 *   covers a host: the node and the gateway accept egress by allow list
 *   alone — the answer stays "denied" (the property the wall promises, what
 *   an audit must check) and carries a `warning` saying so.
 * - a mesh address nobody holds: denied.
 * - outside the mesh pool: allowed iff an egress rule of the tenant covers
 *   the address, protocol and port and the tenant has an egress gateway.
 */
import { ROUTER_PORT, type PortRange, type Protocol } from '../shared/desired.js';
import { NotFoundError, TooLargeError, ValidationError } from '../shared/errors.js';
import { cidrContains, ipToInt, isIpv4, parseCidr } from '../shared/ipv4.js';
import type { Labels } from '../shared/names.js';
import { ALL_PORTS, formatPorts, mergeRanges, rangesInclude, subtractRanges } from '../shared/ports.js';
import type { HostAddressModel, MeshContext, PolicySpec, TenantModel, WorkloadModel } from './model.js';
import { compileTenant, tenantModel, type AddressList, type CompiledTenant } from './render.js';

/** A tenant as the store caches it (compiled), or its plain model (compiled here). */
export type TenantInput = CompiledTenant | TenantModel;

export interface ReachabilityModel {
  tenant: TenantInput;
  /** The rest of the mesh (other tenants' subnets, every host's addresses); without it only this tenant is known. */
  mesh?: MeshContext;
}

export interface FlowQuery {
  /** A workload of the tenant. */
  from: string;
  /** A workload of the tenant, or an IPv4 address. */
  to: string;
  protocol: Protocol;
  /** tcp/udp only; absent: ask which ports are allowed. */
  port?: number;
}

/**
 * Why a flow is denied. `policy`: same tenant, no policy allows it;
 * `tunnel_entry`: the destination is a tunnel-mode entry point; `egress`:
 * outside the mesh, no egress rule (or gateway) allows it.
 */
export type DenyReason = 'policy' | 'tunnel_entry' | 'cross_tenant' | 'to_host' | 'egress' | 'unknown_address';

export type RuleRef =
  | { kind: 'policy'; name: string; from: Labels; to: Labels; protocol: Protocol; ports?: PortRange[] }
  | { kind: 'egress'; name: string; cidr: string; protocol: Protocol; ports?: PortRange[]; gateway: string }
  | { kind: 'exposure'; name: string; gateway: string; protocol: 'tcp'; ports: PortRange[] };

export interface Explanation {
  allowed: boolean;
  /** null when allowed. */
  reason: DenyReason | null;
  /** One sentence for people. */
  verdict: string;
  from: { workload: string; address: string; node: string };
  /** `workload` is null when the destination is not a workload of the tenant. */
  to: { workload: string | null; address: string };
  protocol: Protocol;
  port: number | null;
  /** tcp/udp: every port of this source, destination and protocol the rules allow (whatever port was asked); absent for icmp. */
  ports?: PortRange[];
  /** The rules that allow the flow (for the asked port; any port when none was asked); empty when denied. */
  rules: RuleRef[];
  /** Where the data plane may not hold the line the model draws (an egress rule covering a host address). */
  warning?: string;
}

/** One allowed (from, to, protocol) of the matrix; `ports` absent for icmp. */
export interface Flow {
  from: string;
  to: string;
  protocol: Protocol;
  ports?: PortRange[];
}

export interface MatrixFlow extends Flow {
  /** The policies that allow (some of) these ports. */
  policies: string[];
}

export interface ReachabilityMatrix {
  tenant: string;
  /** Every workload of the tenant, by name; a pair with no flow listed is denied everything. */
  workloads: string[];
  flows: MatrixFlow[];
}

export type PolicyChange = { op: 'put'; name: string; spec: PolicySpec } | { op: 'delete'; name: string };

export interface WhatIf {
  tenant: string;
  op: 'put' | 'delete';
  policy: string;
  /** put: the policy does not exist yet. */
  created: boolean;
  /** Flows (or ports of flows) the change would allow that are denied now. */
  added: Flow[];
  /** Flows (or ports of flows) allowed now that the change would deny. */
  removed: Flow[];
}

/** The most (from, to, protocol) entries one matrix computation may produce (and ten times that in pairs visited): beyond, 413. */
export const MAX_MATRIX_FLOWS = 200_000;

const LINK_LOCAL = parseCidr('169.254.0.0/16', 'link-local');
/** A container's default gateway: the node's side of its veth (the node agent's CONTAINER_GATEWAY). */
const CONTAINER_GATEWAY = '169.254.1.1';
const LOOPBACK = parseCidr('127.0.0.0/8', 'loopback');
const PROTOCOL_ORDER: Record<Protocol, number> = { tcp: 0, udp: 1, icmp: 2 };

const compiled = (t: TenantInput): CompiledTenant => ('rules' in t ? t : compileTenant(t));

/** `policy:<name>` → name; null for other origins (exposures). */
const policyOf = (origin: string): string | null => (origin.startsWith('policy:') ? origin.slice('policy:'.length) : null);

/** Is `address` in a group? (Groups are sorted lists keyed by the address as a number.) */
const groupHas = (members: AddressList | undefined, address: number): boolean => members?.has(address) ?? false;

const rulePorts = (protocol: Protocol, ports: readonly PortRange[]): readonly PortRange[] => (protocol === 'icmp' ? [] : ports.length ? ports : ALL_PORTS);

const quoted = (names: readonly string[]): string => {
  const q = names.map((n) => `"${n}"`);
  return q.length <= 1 ? (q[0] ?? '') : `${q.slice(0, -1).join(', ')} and ${q[q.length - 1]}`;
};

const portsText = (ranges: readonly PortRange[]): string => (isAll(ranges) ? 'every port' : `${ranges.length === 1 && ranges[0]!.from === ranges[0]!.to ? 'port' : 'ports'} ${formatPorts(ranges)}`);

const isAll = (ranges: readonly PortRange[]): boolean => ranges.length === 1 && ranges[0]!.from <= 1 && ranges[0]!.to >= 65535;

// ---------------------------------------------------------------- explain

export function explainFlow(model: ReachabilityModel, q: FlowQuery): Explanation {
  const c = compiled(model.tenant);
  const t = c.model;
  const src = c.workloads.get(q.from);
  if (!src) throw new NotFoundError(`from: workload "${q.from}" does not exist in tenant "${t.name}"`);
  if (q.port !== undefined) {
    if (q.protocol === 'icmp') throw new ValidationError('port: icmp has no ports', 'port');
    if (!Number.isInteger(q.port) || q.port < 1 || q.port > 65535) throw new ValidationError(`port: ${q.port} is not a port 1-65535`, 'port');
  }
  let dst: WorkloadModel | undefined;
  let address: string;
  if (/^[0-9.]+$/.test(q.to) && q.to.includes('.')) {
    if (!isIpv4(q.to)) throw new ValidationError(`to: "${q.to}" is neither a workload name nor an IPv4 address`, 'to');
    address = q.to;
    dst = c.workloads.toArray().find((w) => w.address === address);
  } else {
    dst = c.workloads.get(q.to);
    if (!dst) throw new NotFoundError(`to: workload "${q.to}" does not exist in tenant "${t.name}"`);
    address = dst.address;
  }

  const flowText = `${q.protocol}${q.port === undefined ? '' : ` port ${q.port}`} from ${src.name} to ${dst ? dst.name : address}`;
  const base = {
    from: { workload: src.name, address: src.address, node: src.node },
    to: { workload: dst?.name ?? null, address },
    protocol: q.protocol,
    port: q.port ?? null,
  };
  const deny = (reason: DenyReason, why: string, ports?: PortRange[]): Explanation => ({
    allowed: false,
    reason,
    verdict: `${flowText} is denied: ${why}`,
    ...base,
    ...(q.protocol === 'icmp' ? {} : { ports: ports ?? [] }),
    rules: [],
  });
  /** Decide from the rules that match the source, destination and protocol, each with its ports. */
  const decide = (candidates: { ref: RuleRef; ports: readonly PortRange[] }[], allowedBy: (names: string) => string, denied: () => Explanation): Explanation => {
    const ports = mergeRanges(candidates.flatMap((x) => x.ports));
    const hits = candidates.filter((x) => q.protocol === 'icmp' || (q.port === undefined ? x.ports.length > 0 : rangesInclude(x.ports, q.port)));
    if (hits.length === 0) {
      if (q.protocol !== 'icmp' && ports.length > 0) {
        const d = denied();
        return { ...d, verdict: `${d.verdict} (${q.protocol} ${portsText(ports)} would be allowed)`, ports };
      }
      return denied();
    }
    const on = q.protocol !== 'icmp' && q.port === undefined ? ` on ${portsText(ports)}` : '';
    return {
      allowed: true,
      reason: null,
      verdict: `${flowText} is allowed${on} by ${allowedBy(quotedKinds(hits.map((h) => h.ref)))}`,
      ...base,
      ...(q.protocol === 'icmp' ? {} : { ports }),
      rules: hits.map((h) => h.ref),
    };
  };

  // Its own address (or loopback) never leaves the workload's network namespace.
  const addr = ipToInt(address);
  if (address === src.address || cidrContains(LOOPBACK, addr)) {
    return {
      allowed: true,
      reason: null,
      verdict: `${flowText} never leaves the workload's network namespace; netwall does not filter it`,
      ...base,
      ...(q.protocol === 'icmp' ? {} : { ports: [...ALL_PORTS] }),
      rules: [],
    };
  }

  // Workload → workload: the policy rules; a tunnel entry point whatever they say.
  if (dst) {
    const tunnels = tunnelExposures(c, dst);
    if (tunnels.length) {
      const what = `tunnel-mode exposure${tunnels.length > 1 ? 's' : ''} ${quoted(tunnels)}`;
      return deny('tunnel_entry', `${dst.name} is an entry point of ${what} and accepts no connection at all, whatever the policies say (it is reached only through its own connection out to the gateway)`);
    }
    return decide(
      policyCandidates(c, ipToInt(src.address), ipToInt(dst.address), q.protocol),
      (names) => names,
      () => deny('policy', `no policy of tenant "${t.name}" allows it (default deny)`),
    );
  }

  const subnet = parseCidr(t.subnet, 'subnet');
  const hosts = hostIndex(c, model.mesh);
  const hostHits = hosts.get(address) ?? [];
  const describe = (h: HostHit): string => {
    if (h.kind === 'coordinator') return `${address} is an address of the coordinator`;
    const what = { mesh: 'the mesh address', endpoint: 'the underlay endpoint', mgmt: 'the management address', public: 'the public address' }[h.what];
    const who = h.host === src.node ? `node ${h.host}, the workload's own node` : c.membersByHost.has(h.host) ? `${h.kind} ${h.host}` : 'a netwall host';
    return `${address} is ${what} of ${who}`;
  };
  const NEVER_HOSTS = 'containers never reach netwall hosts';

  // The workload's own node, whatever the address (delivered locally, dropped on input).
  const own = hostHits.find((h) => h.host === src.node && h.kind === 'node');
  if (own) return deny('to_host', `${describe(own)}; ${NEVER_HOSTS}`);
  if (address === CONTAINER_GATEWAY) return deny('to_host', `${address} is the node's side of the workload's link (its default gateway), on its own node ${src.node}; ${NEVER_HOSTS}`);

  if (cidrContains(subnet, addr)) {
    const member = hostHits.find((h) => h.what === 'mesh' && h.tenant === t.name);
    if (!member) return deny('unknown_address', `no workload or host of tenant "${t.name}" has the address ${address}`);
    // A tunnel-mode entry point's router client dials its gateways' router server.
    const candidates = routerCandidates(c, src, address, q.protocol);
    return decide(
      candidates,
      (names) => `${names} (the entry point's router client dials its gateway)`,
      () => deny('to_host', `${describe(member)}; ${NEVER_HOSTS}${candidates.length === 0 && member.kind === 'gateway' ? ` (only tunnel entry points reach their gateways, tcp ${ROUTER_PORT})` : ''}`),
    );
  }

  const mesh = model.mesh;
  if (mesh) {
    if (mesh.tenants.some((x) => x.name !== t.name && cidrContains(parseCidr(x.subnet, 'subnet'), addr))) {
      return deny('cross_tenant', `${address} is in another tenant's subnet, and cross-tenant traffic is never allowed`);
    }
    if (cidrContains(parseCidr(mesh.pool, 'pool'), addr)) return deny('unknown_address', `${address} is in the mesh address pool but not in any tenant's subnet`);
  }

  // Outside the mesh: the egress allow list, through the tenant's egress gateway — but never to a host.
  const egress = egressCandidates(c, addr, q.protocol);
  const linkLocal = cidrContains(LINK_LOCAL, addr);
  if (hostHits.length > 0 || linkLocal) {
    const what = hostHits.length > 0 ? describe(hostHits[0]!) : `${address} is link-local (a metadata service, or another host's link)`;
    const denied = deny('to_host', `${what}; ${NEVER_HOSTS}`);
    // The firewalls accept egress by allow list alone: a host inside an allowed CIDR is reachable
    // through the egress gateway (unless it is the gateway itself, which takes nothing from the mesh).
    const through = egress.filter((x) => q.protocol === 'icmp' || q.port === undefined || rangesInclude(x.ports, q.port));
    if (through.length === 0 || c.egressGateway === null || (hostHits.length > 0 && hostHits.every((h) => h.host === c.egressGateway))) return denied;
    const rules = quoted([...new Set(through.map((e) => e.ref.name))]);
    return {
      ...denied,
      verdict: `${denied.verdict}, but egress ${rules} covers it: narrow the rule`,
      warning: `egress ${rules} covers ${address}, ${linkLocal ? 'a link-local address' : 'a netwall host'}, and the firewalls do not carve host addresses out of egress allow lists: a workload can reach it through the egress gateway until the rule is narrowed`,
    };
  }
  if (c.egressGateway === null) {
    return deny('egress', `${address} is outside the mesh and tenant "${t.name}" has no egress gateway${egress.length ? '' : ' (nor an egress rule for it)'}`);
  }
  return decide(
    egress,
    (names) => `${names}; it leaves through gateway ${c.egressGateway}`,
    () => deny('egress', `${address} is outside the mesh and no egress rule of tenant "${t.name}" allows it`),
  );
}

/** `policy "a"`, `policies "a" and "b"`, `egress rule "x"`, `exposure "web"` (kinds are never mixed). */
function quotedKinds(refs: readonly RuleRef[]): string {
  const names = [...new Set(refs.map((r) => r.name))];
  const kind = refs[0]!.kind;
  const noun = kind === 'policy' ? (names.length > 1 ? 'policies' : 'policy') : kind === 'egress' ? (names.length > 1 ? 'egress rules' : 'egress rule') : names.length > 1 ? 'exposures' : 'exposure';
  return `${noun} ${quoted(names)}`;
}

/** Per policy: its rules that hold the source and destination for this protocol, ports merged. */
function policyCandidates(c: CompiledTenant, src: number, dst: number, protocol: Protocol): { ref: RuleRef; ports: readonly PortRange[] }[] {
  const byPolicy = new Map<string, PortRange[]>();
  for (const r of c.rules) {
    const name = policyOf(r.origin);
    if (name === null || r.protocol !== protocol) continue;
    if (!groupHas(c.groups.get(r.from), src) || !groupHas(c.groups.get(r.to), dst)) continue;
    byPolicy.set(name, [...(byPolicy.get(name) ?? []), ...rulePorts(protocol, r.ports)]);
  }
  const specs = new Map(c.model.policies.map((p) => [p.name, p.spec]));
  return [...byPolicy]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, ranges]) => {
      const ports = mergeRanges(ranges);
      const spec = specs.get(name);
      return { ref: { kind: 'policy', name, from: spec?.from ?? {}, to: spec?.to ?? {}, protocol, ...(protocol === 'icmp' ? {} : { ports }) }, ports };
    });
}

/** The tunnel-mode exposures `w` is an entry point of (its node drops every new connection to it). */
function tunnelExposures(c: CompiledTenant, w: WorkloadModel): string[] {
  return (c.entryPointsByNode.get(w.node) ?? []).filter((e) => e.workload === w.name && e.mode === 'tunnel').map((e) => e.exposure);
}

/** The addresses of every tunnel-mode entry point of the tenant. */
function tunnelEntryAddresses(c: CompiledTenant): Set<string> {
  const out = new Set<string>();
  for (const list of c.entryPointsByNode.values()) for (const e of list) if (e.mode === 'tunnel') out.add(e.address);
  return out;
}

function routerCandidates(c: CompiledTenant, src: WorkloadModel, address: string, protocol: Protocol): { ref: RuleRef; ports: readonly PortRange[] }[] {
  if (protocol !== 'tcp') return [];
  const out: { ref: RuleRef; ports: readonly PortRange[] }[] = [];
  for (const e of c.entryPointsByNode.get(src.node) ?? []) {
    if (e.workload !== src.name || e.mode !== 'tunnel') continue;
    for (const g of e.gateways) {
      if (g.meshAddress !== address) continue;
      const ports = [{ from: g.routerPort, to: g.routerPort }];
      out.push({ ref: { kind: 'exposure', name: e.exposure, gateway: g.host, protocol: 'tcp', ports }, ports });
    }
  }
  return out;
}

function egressCandidates(c: CompiledTenant, address: number, protocol: Protocol): { ref: RuleRef; ports: readonly PortRange[] }[] {
  const gateway = c.egressGateway ?? '';
  return c.egressAllow
    .filter((a) => a.protocol === protocol && cidrContains(parseCidr(a.cidr, 'cidr'), address))
    .map((a) => {
      const ports = [...rulePorts(protocol, a.ports)];
      return { ref: { kind: 'egress', name: a.rule, cidr: a.cidr, protocol, ...(protocol === 'icmp' ? {} : { ports }), gateway }, ports };
    });
}

type HostHit = Omit<HostAddressModel, 'kind'> & { kind: HostAddressModel['kind'] | 'coordinator' };

/** Address → the hosts known by it: the mesh context, or (without one) this tenant's own members. */
function hostIndex(c: CompiledTenant, mesh: MeshContext | undefined): Map<string, HostHit[]> {
  const all: HostHit[] = [];
  for (const m of c.model.members) {
    all.push({ host: m.host.name, kind: m.host.kind, address: m.address, what: 'mesh', tenant: c.model.name });
    if (m.host.endpointHost !== null) all.push({ host: m.host.name, kind: m.host.kind, address: m.host.endpointHost, what: 'endpoint', tenant: null });
  }
  if (mesh) {
    all.push(...mesh.hostAddresses);
    for (const a of mesh.coordinatorAddresses) all.push({ host: 'coordinator', kind: 'coordinator', address: a, what: 'mgmt', tenant: null });
  }
  const index = new Map<string, HostHit[]>();
  for (const h of all) {
    const list = index.get(h.address) ?? [];
    if (!list.some((x) => x.host === h.host && x.what === h.what && x.tenant === h.tenant)) list.push(h);
    index.set(h.address, list);
  }
  return index;
}

// ---------------------------------------------------------------- matrix

interface Cell {
  from: string;
  to: string;
  protocol: Protocol;
  ranges: PortRange[];
  policies: Set<string>;
}

/**
 * (source address, destination address, protocol) → allowed ports and the
 * policies allowing them, optionally only for sources in `only.from` and
 * destinations in `only.to`. A workload to itself is left out (never on the
 * wire), and so are tunnel entry points as destinations (they accept nothing).
 */
function cells(c: CompiledTenant, limit: number, only?: { from: Set<string>; to: Set<string> }): Map<string, Cell> {
  const out = new Map<string, Cell>();
  const tunnel = tunnelEntryAddresses(c);
  let visits = 0;
  for (const r of c.rules) {
    const name = policyOf(r.origin);
    if (name === null) continue;
    let srcs = c.groups.get(r.from)?.toArray() ?? [];
    let dsts = c.groups.get(r.to)?.toArray() ?? [];
    if (only) {
      srcs = srcs.filter((a) => only.from.has(a));
      dsts = dsts.filter((a) => only.to.has(a));
    }
    if (tunnel.size) dsts = dsts.filter((a) => !tunnel.has(a));
    const ports = rulePorts(r.protocol, r.ports);
    visits += srcs.length * dsts.length;
    if (visits > limit * 10) tooLarge(c, limit);
    for (const s of srcs) {
      for (const d of dsts) {
        if (s === d) continue;
        const key = `${s}>${d}>${r.protocol}`;
        let cell = out.get(key);
        if (!cell) {
          out.set(key, (cell = { from: s, to: d, protocol: r.protocol, ranges: [], policies: new Set() }));
          if (out.size > limit) tooLarge(c, limit);
        }
        cell.ranges.push(...ports);
        cell.policies.add(name);
      }
    }
  }
  for (const cell of out.values()) cell.ranges = mergeRanges(cell.ranges);
  return out;
}

function tooLarge(c: CompiledTenant, limit: number): never {
  throw new TooLargeError(`reachability of tenant "${c.model.name}" has more than ${limit} flows; explain single flows instead`);
}

const names = (c: CompiledTenant): Map<string, string> => new Map(c.workloads.toArray().map((w) => [w.address, w.name]));

const byFlow = (a: Flow, b: Flow): number => (a.from !== b.from ? (a.from < b.from ? -1 : 1) : a.to !== b.to ? (a.to < b.to ? -1 : 1) : PROTOCOL_ORDER[a.protocol] - PROTOCOL_ORDER[b.protocol]);

const flowOf = (from: string, to: string, protocol: Protocol, ranges: PortRange[]): Flow => ({ from, to, protocol, ...(protocol === 'icmp' ? {} : { ports: ranges }) });

/** Every allowed workload-to-workload flow of the tenant, from its policies. */
export function reachabilityMatrix(tenant: TenantInput, limit = MAX_MATRIX_FLOWS): ReachabilityMatrix {
  const c = compiled(tenant);
  const nameOf = names(c);
  const flows: MatrixFlow[] = [];
  for (const cell of cells(c, limit).values()) {
    flows.push({ ...flowOf(nameOf.get(cell.from)!, nameOf.get(cell.to)!, cell.protocol, cell.ranges), policies: [...cell.policies].sort() });
  }
  // Workloads are in name order already.
  return { tenant: c.model.name, workloads: c.workloads.toArray().map((w) => w.name), flows: flows.sort(byFlow) };
}

// ---------------------------------------------------------------- what-if

/**
 * The matrix diff if `change` were applied, without applying it. Only the
 * pairs the changed policy reaches (before or after) can change, so only
 * those are computed. The spec must be validated already (normalizePolicy).
 */
export function whatIf(tenant: TenantInput, change: PolicyChange, limit = MAX_MATRIX_FLOWS): WhatIf {
  const before = compiled(tenant);
  const t = before.model;
  const exists = t.policies.some((p) => p.name === change.name);
  if (change.op === 'delete' && !exists) throw new NotFoundError(`policy "${change.name}" does not exist in tenant "${t.name}"`);
  const policies = t.policies.filter((p) => p.name !== change.name);
  if (change.op === 'put') policies.push({ name: change.name, spec: change.spec });
  const after = compileTenant({ ...tenantModel(before), policies });

  const only = { from: new Set<string>(), to: new Set<string>() };
  for (const c of [before, after]) {
    for (const r of c.rules) {
      if (r.origin !== `policy:${change.name}`) continue;
      for (const a of c.groups.get(r.from) ?? []) only.from.add(a);
      for (const a of c.groups.get(r.to) ?? []) only.to.add(a);
    }
  }
  const was = cells(before, limit, only);
  const will = cells(after, limit, only);
  const nameOf = names(before);
  const added: Flow[] = [];
  const removed: Flow[] = [];
  const diff = (from: Map<string, Cell>, to: Map<string, Cell>, into: Flow[]) => {
    for (const [key, cell] of from) {
      const other = to.get(key);
      const ranges = cell.protocol === 'icmp' ? [] : subtractRanges(cell.ranges, other?.ranges ?? []);
      if (cell.protocol === 'icmp' ? other === undefined : ranges.length > 0) into.push(flowOf(nameOf.get(cell.from)!, nameOf.get(cell.to)!, cell.protocol, ranges));
    }
  };
  diff(will, was, added);
  diff(was, will, removed);
  return { tenant: t.name, op: change.op, policy: change.name, created: change.op === 'put' && !exists, added: added.sort(byFlow), removed: removed.sort(byFlow) };
}
