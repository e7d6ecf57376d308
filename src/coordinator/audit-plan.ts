/**
 * The reachability audit's plan, as a pure function of the policy model:
 * every probe each node is to run from its workloads' network namespaces,
 * each with the answer the model expects. The expectation of every probe is
 * `explainFlow` (reachability.ts) — one source of truth for "what the wall
 * allows", the same one `policy explain` answers from — never an observation.
 *
 * From every workload of the chosen tenants, towards:
 * - every other workload of every tenant: the ports its tenant's policies and
 *   exposures use towards it (the ends of each range), plus a fixed sample
 *   (AUDIT_PORTS.workloadTcp/Udp) and the request's own ports, and icmp;
 * - every node's and gateway's known address (mesh addresses in every tenant,
 *   underlay endpoint, management, public): a host sample of TCP ports (ssh,
 *   HTTP(S), the coordinator's 7300, the router server's 7400, the gateway's
 *   admin 7401, …), UDP 53 and the host's WireGuard ports, and icmp;
 * - the coordinator's addresses (when it listens on a specific one), the
 *   node's side of the workload's link (169.254.1.1): the host sample;
 * - every egress destination that is a single address (/32): the rule's
 *   ports (the ends of each range), one port no rule allows there, and icmp.
 *   Wider CIDRs are probed only through extra targets inside them;
 * - extra targets from the request (e.g. the lab's internet host).
 * Deterministic: tenants, workloads and addresses in a fixed order, ports
 * ascending, tcp before udp before icmp. More than `limit` probes: 413.
 */
import type { ProbeExpect } from '../shared/audit.js';
import type { HostKind, Protocol } from '../shared/desired.js';
import { TooLargeError } from '../shared/errors.js';
import { ipToInt, parseCidr } from '../shared/ipv4.js';
import { matchesSelector } from '../shared/names.js';
import { mergeRanges, rangesInclude } from '../shared/ports.js';
import type { MeshContext, WorkloadModel } from './model.js';
import { explainFlow, type DenyReason } from './reachability.js';
import type { CompiledTenant } from './render.js';

/** The fixed samples probed besides the ports the model says are in use. */
export const AUDIT_PORTS = {
  workloadTcp: [22, 80, 443, 5432, 8080, 9999],
  workloadUdp: [53, 9999],
  hostTcp: [22, 80, 443, 7300, 7400, 7401, 8443, 9100],
  hostUdp: [53, 51820],
  /** An extra target given without ports. */
  extraTcp: [22, 80, 443],
  /** Candidates for "a port no egress rule allows" on an egress destination. */
  unallowed: [8080, 9999, 81, 65000],
} as const;

/** At most this many probes per audit (beyond: 413, narrow it to fewer tenants). */
export const MAX_AUDIT_PROBES = 20_000;
/** At most this many in-use ports per workload and protocol (the ends of ranges), beyond the sample. */
const MAX_USED_PORTS = 16;
/** A workload's default gateway: the node's side of its veth (the node agent's CONTAINER_GATEWAY). */
const CONTAINER_GATEWAY = '169.254.1.1';

export interface AuditHost {
  name: string;
  kind: HostKind;
  /** WireGuard listen ports (one per tenant it serves). */
  listenPorts: number[];
}

export interface ExtraTarget {
  address: string;
  /** Default AUDIT_PORTS.extraTcp when neither tcp nor udp is given. */
  tcp?: number[];
  udp?: number[];
  /** Default true. */
  icmp?: boolean;
}

export interface AuditPlanInput {
  /** Every tenant (sources and targets), compiled. */
  tenants: CompiledTenant[];
  /** Tenants whose workloads probe; default every tenant. */
  sources?: string[];
  /** Every tenant's subnet and every host's addresses (and the coordinator's). */
  mesh: MeshContext;
  hosts: AuditHost[];
  extraTargets?: ExtraTarget[];
  /** More ports to probe on every workload, besides AUDIT_PORTS and the ports in use (e.g. one a policy no longer allows). */
  ports?: { tcp?: number[]; udp?: number[] };
  limit?: number;
}

export type TargetKind = 'workload' | 'host' | 'coordinator' | 'link' | 'egress' | 'extra';

export interface PlannedProbe {
  i: number;
  tenant: string;
  /** The source workload, its node (which runs the probe) and address. */
  from: string;
  node: string;
  fromAddress: string;
  /** What the address is, for people: `acme/db1`, `node1 mgmt`, `coordinator`, `egress acme/internet`, … */
  target: string;
  targetKind: TargetKind;
  address: string;
  protocol: Protocol;
  port: number | null;
  expect: ProbeExpect;
  /** Why denied (explainFlow's reason); null when allowed. */
  reason: DenyReason | null;
  /** The rules that allow it, `kind:name`. */
  rules: string[];
  /** explainFlow's verdict. */
  why: string;
  warning?: string;
}

export interface AuditPlan {
  tenants: string[];
  probes: PlannedProbe[];
  /** Node → the indices of its probes. */
  nodes: Map<string, number[]>;
}

interface Target {
  kind: TargetKind;
  labels: string[];
  address: string;
  tcp: Set<number>;
  udp: Set<number>;
  icmp: boolean;
}

const byName = <T extends { name: string }>(a: T, b: T): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const sortedPorts = (s: Set<number>): number[] => [...s].sort((a, b) => a - b);

/** The ports a workload's tenant uses towards it: policy and exposure rules whose destination holds it, and exposure target ports. */
export function servingPorts(c: CompiledTenant, w: WorkloadModel): { tcp: number[]; udp: number[] } {
  const out = { tcp: new Set<number>(), udp: new Set<number>() };
  for (const r of c.rules) {
    if (r.protocol === 'icmp' || r.ports.length === 0) continue;
    if (!c.groups.get(r.to)?.has(ipToInt(w.address))) continue; // groups are keyed by the address as a number
    for (const p of r.ports) {
      out[r.protocol].add(p.from);
      out[r.protocol].add(p.to);
    }
  }
  for (const e of c.model.exposures) if (matchesSelector(e.spec.target.selector, w.labels)) out.tcp.add(e.spec.target.port);
  return { tcp: sortedPorts(out.tcp).slice(0, MAX_USED_PORTS), udp: sortedPorts(out.udp).slice(0, MAX_USED_PORTS) };
}

/** The targets every source probes, keyed (and merged) by address, in a fixed order. */
function targets(input: AuditPlanInput): Target[] {
  const all = new Map<string, Target>();
  const add = (kind: TargetKind, label: string, address: string, tcp: readonly number[], udp: readonly number[], icmp = true) => {
    let t = all.get(address);
    if (!t) all.set(address, (t = { kind, labels: [], address, tcp: new Set(), udp: new Set(), icmp: false }));
    if (!t.labels.includes(label)) t.labels.push(label);
    for (const p of tcp) t.tcp.add(p);
    for (const p of udp) t.udp.add(p);
    t.icmp ||= icmp;
  };
  const tenants = [...input.tenants].sort((a, b) => byName(a.model, b.model));

  // Workloads of every tenant.
  for (const c of tenants) {
    for (const w of c.workloads) {
      const used = servingPorts(c, w);
      add('workload', `${c.model.name}/${w.name}`, w.address, [...AUDIT_PORTS.workloadTcp, ...(input.ports?.tcp ?? []), ...used.tcp], [...AUDIT_PORTS.workloadUdp, ...(input.ports?.udp ?? []), ...used.udp]);
    }
  }

  // Hosts: every known address, with the WireGuard ports of the host holding it.
  const wg = new Map(input.hosts.map((h) => [h.name, h.listenPorts]));
  const hostAddresses = [...input.mesh.hostAddresses].sort((a, b) => ipToInt(a.address) - ipToInt(b.address) || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  for (const h of hostAddresses) {
    const label = `${h.host} ${h.what === 'mesh' ? `mesh(${h.tenant ?? '?'})` : h.what}`;
    add('host', label, h.address, AUDIT_PORTS.hostTcp, [...AUDIT_PORTS.hostUdp, ...(wg.get(h.host) ?? [])]);
  }
  for (const a of [...input.mesh.coordinatorAddresses].sort()) add('coordinator', 'coordinator', a, AUDIT_PORTS.hostTcp, AUDIT_PORTS.hostUdp);
  add('link', 'own node link', CONTAINER_GATEWAY, AUDIT_PORTS.hostTcp, AUDIT_PORTS.hostUdp);

  // Egress destinations that are single addresses: the rule's ports, one port no rule allows, icmp.
  const egress = new Map<string, { labels: string[]; tcp: { from: number; to: number }[]; udp: { from: number; to: number }[]; any: { tcp: boolean; udp: boolean } }>();
  for (const c of tenants) {
    for (const a of c.egressAllow) {
      const cidr = parseCidr(a.cidr, 'cidr');
      if (cidr.prefix !== 32) continue;
      const address = a.cidr.slice(0, a.cidr.indexOf('/'));
      let e = egress.get(address);
      if (!e) egress.set(address, (e = { labels: [], tcp: [], udp: [], any: { tcp: false, udp: false } }));
      const label = `egress ${c.model.name}/${a.rule}`;
      if (!e.labels.includes(label)) e.labels.push(label);
      if (a.protocol === 'icmp') continue;
      if (a.ports.length === 0) e.any[a.protocol] = true;
      e[a.protocol].push(...a.ports);
    }
  }
  for (const [address, e] of egress) {
    const ports = (proto: 'tcp' | 'udp'): number[] => {
      const ranges = mergeRanges(e[proto]);
      if (ranges.length === 0 && !e.any[proto]) return [];
      const out = ranges.flatMap((r) => [r.from, r.to]);
      if (e.any[proto]) out.push(...(proto === 'tcp' ? [80, 443] : [53]));
      else {
        const unallowed = AUDIT_PORTS.unallowed.find((p) => !rangesInclude(ranges, p));
        if (unallowed !== undefined) out.push(unallowed);
      }
      return out;
    };
    for (const label of e.labels) add('egress', label, address, ports('tcp'), ports('udp'));
  }

  for (const x of input.extraTargets ?? []) {
    const given = x.tcp !== undefined || x.udp !== undefined;
    add('extra', 'extra target', x.address, given ? (x.tcp ?? []) : AUDIT_PORTS.extraTcp, x.udp ?? [], x.icmp ?? true);
  }
  return [...all.values()];
}

export function planAudit(input: AuditPlanInput): AuditPlan {
  const limit = input.limit ?? MAX_AUDIT_PROBES;
  const byTenant = new Map(input.tenants.map((c) => [c.model.name, c]));
  const sourceNames = [...new Set(input.sources ?? [...byTenant.keys()])].sort();
  const list = targets(input);

  // First the cells (cheap), so a huge audit is refused before anything is explained.
  const cells: { c: CompiledTenant; w: WorkloadModel; t: Target; protocol: Protocol; port: number | null }[] = [];
  const push = (cell: (typeof cells)[number]) => {
    if (cells.length >= limit) {
      throw new TooLargeError(`the audit would run more than ${limit} probes; audit fewer tenants at a time (tenants / --tenant)`);
    }
    cells.push(cell);
  };
  for (const name of sourceNames) {
    const c = byTenant.get(name);
    if (!c) continue;
    for (const w of c.workloads) {
      for (const t of list) {
        if (t.address === w.address) continue;
        for (const port of sortedPorts(t.tcp)) push({ c, w, t, protocol: 'tcp', port });
        for (const port of sortedPorts(t.udp)) push({ c, w, t, protocol: 'udp', port });
        if (t.icmp) push({ c, w, t, protocol: 'icmp', port: null });
      }
    }
  }

  const probes: PlannedProbe[] = [];
  const nodes = new Map<string, number[]>();
  for (const { c, w, t, protocol, port } of cells) {
    const e = explainFlow({ tenant: c, mesh: input.mesh }, { from: w.name, to: t.address, protocol, ...(port === null ? {} : { port }) });
    const i = probes.length;
    probes.push({
      i,
      tenant: c.model.name,
      from: w.name,
      node: w.node,
      fromAddress: w.address,
      target: t.labels.join(', '),
      targetKind: t.kind,
      address: t.address,
      protocol,
      port,
      expect: e.allowed ? 'allowed' : 'denied',
      reason: e.reason,
      rules: e.rules.map((r) => `${r.kind}:${r.name}`),
      why: e.verdict,
      ...(e.warning ? { warning: e.warning } : {}),
    });
    const list = nodes.get(w.node);
    if (list) list.push(i);
    else nodes.set(w.node, [i]);
  }
  return { tenants: sourceNames.filter((n) => byTenant.has(n)), probes, nodes };
}
