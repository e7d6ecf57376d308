/**
 * The wall on a node: `table inet netwall`, rendered as text by a pure
 * function of the desired state (its life — replace, element deltas, drift —
 * is src/shared/dataplane/nft-table.ts). The address groups `g_*` and
 * `veth_addr` are its element sets: workloads coming and going change only
 * their members.
 *
 * Shape (default deny for everything netwall owns, default accept for the
 * host's other traffic):
 * - input:   containers → host: always dropped; mesh → host: replies only;
 *            optionally the underlay itself is restricted to ssh,
 *            WireGuard ports and icmp.
 * - forward: containers: anti-spoof (veth . address set), replies, then the
 *            tenant's chain (picked by a verdict map on the source subnet):
 *            router clients, egress (interval set), leaving the subnet dropped,
 *            then the policy rules over address group sets (the mesh chain);
 *            everything else: replies first, then mesh → local containers:
 *            the same policy rules, picked by a verdict map on the WireGuard
 *            interface; underlay → anything of netwall: dropped.
 * - raw:     before conntrack: WireGuard's own packets — the encrypted UDP
 *            to and from this host's listen ports — are not tracked (they
 *            need no state, and conntrack would otherwise look each one up on
 *            top of the packet it carries); packets from or to tenant
 *            addresses that arrive on the underlay are dropped, so they can
 *            never touch a container flow's conntrack entry.
 * Per-packet cost and rule count are O(tenants + policies): workloads only
 * ever appear as set elements.
 */
import { CONTAINER_IF_PREFIX, TENANT_IF_PREFIX, type AllowRule, type DesiredState, type TenantState } from '../shared/desired.js';
import { addrElement, addressElements, egressElements, intervalArgs, protoMatches, tenantIdent } from '../shared/dataplane/nft-elements.js';
import { rawChains, wireguardErrors } from '../shared/dataplane/nft-raw.js';
import { dropChain, finishTable, quote, sha, TableText, type RenderedFirewall, type TableRef } from '../shared/dataplane/nft-table.js';
import type { FirewallSpec } from '../shared/dataplane/reconcile.js';
import { normalizeCidr, stripPrefix } from '../shared/dataplane/routes.js';
import { containerInterfaceName } from './names.js';

/** The node's table. */
export const NODE_TABLE: TableRef = { family: 'inet', name: 'netwall' };

/** Why a packet was dropped; each has a named counter `d_<reason>` and its own log prefix. */
export const DROP_REASONS = [
  'spoof', // a container's source address is not its own
  'ipv6', // containers and meshes are IPv4-only
  'invalid', // conntrack state invalid
  'to_host', // container → this host (agent, sshd, 169.254.1.1, …)
  'mesh_to_host', // mesh → this host, new connections
  'cross_tenant', // towards another tenant's address
  'policy', // same tenant, no policy allows it
  'egress', // leaving the tenant, not on the egress allow list (or via the underlay)
  'transit', // mesh traffic not for a local container
  'underlay', // underlay → tenant addresses or netwall interfaces
  'input', // underlay → host, when the underlay input is restricted
  'tunnel_entry', // → a tunnel-mode entry point: it accepts no connection at all, whatever the policies say
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export interface UnderlayOptions {
  /** Restrict new connections to the host from the underlay (default false: the host's own firewall rules). */
  restrictInput: boolean;
  /** TCP ports left open on the underlay when restricted (default [22], so ssh is never cut off). */
  allowTcpPorts: number[];
  /** Underlay interfaces to restrict; default: every interface that is not netwall's or `lo`. */
  interfaces?: string[];
}

export interface FirewallOptions {
  underlay?: Partial<UnderlayOptions>;
  /** Extra TCP ports the agent serves on the underlay (kept open when the input is restricted). */
  agentPorts?: number[];
  /**
   * Not part of the table: the least time between two drift checks (listings
   * of the table) on ticks with nothing to change. Default 0: every tick.
   */
  verifySeconds?: number;
}

// ---------------------------------------------------------------- naming

/** Names are pure functions of their inputs and hashed: remember them (bounded) across renders. */
function memo(fn: (a: string, b: string) => string): (a: string, b: string) => string {
  const cache = new Map<string, string>();
  return (a, b) => {
    const key = `${a}\n${b}`;
    let v = cache.get(key);
    if (v === undefined) {
      if (cache.size >= 200_000) cache.clear();
      v = fn(a, b);
      cache.set(key, v);
    }
    return v;
  };
}

const vethName = memo(containerInterfaceName);

/** Set name for an address group: readable part plus a hash, as group ids are free-form. */
export const groupSetName = memo(groupSetNameOf);

function groupSetNameOf(tenant: string, group: string): string {
  const readable = group.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '').slice(0, 24);
  return `g_${tenantIdent(tenant)}_${readable ? `${readable}_` : ''}${sha(`${tenant}/${group}`).slice(0, 6)}`;
}

// ---------------------------------------------------------------- the table

/** Rules a mesh exposure adds (`exposure:<name>`): its gateways to its entry points' port. */
const isExposureRule = (r: AllowRule): boolean => r.origin.startsWith('exposure:');

/**
 * The tenant's allow rules: mesh-exposure admissions first, then the wall
 * around tunnel-mode entry points (no policy opens them; a workload that is
 * also a mesh entry point still admits its gateways), then the policies.
 */
function policyRules(t: TenantState): string[] {
  const rule = (r: AllowRule): string[] => {
    const head = `\t\tip saddr @${groupSetName(t.tenant, r.from)} ip daddr @${groupSetName(t.tenant, r.to)}`;
    return protoMatches(r.protocol, r.ports).map((m) => `${head} ${m} accept comment ${quote(r.origin)}`);
  };
  return [
    ...t.firewall.rules.filter(isExposureRule).flatMap(rule),
    '\t\tip daddr @tunnel_entry goto drop_tunnel_entry',
    ...t.firewall.rules.filter((r) => !isExposureRule(r)).flatMap(rule),
  ];
}

/** One set declaration, as `TableText.set` takes it. */
interface SetDecl {
  name: string;
  type: string;
  elements: readonly string[];
  flags: string[];
  dynamic: boolean;
}

/** What one tenant adds to the table: its sets and its chains. Shared between renders: never mutated. */
interface TenantFragment {
  readonly sets: readonly SetDecl[];
  readonly chains: readonly string[];
}

/**
 * Sets and chains of one tenant, a function of its TenantState alone. The
 * policy rules live once, in the mesh chain `m_<tenant>`; the container
 * chain `c_<tenant>` drops what leaves the tenant's subnet and then continues
 * there (`goto m_…`). Address groups only ever hold the tenant's own
 * addresses, so this is the same verdict as repeating the policies in both
 * chains, with half the rules (rule count is what nft's apply and listing
 * time grow with).
 */
function renderTenant(t: TenantState): TenantFragment {
  const id = tenantIdent(t.tenant);
  const subnet = normalizeCidr(t.subnet);
  const sets: SetDecl[] = [];
  const groupNames = new Set([...Object.keys(t.firewall.groups), ...t.firewall.rules.flatMap((r) => [r.from, r.to])]);
  for (const g of [...groupNames].sort()) {
    const { elements, interval } = addressElements(t.firewall.groups[g] ?? []);
    sets.push({ name: groupSetName(t.tenant, g), type: 'ipv4_addr', elements, flags: interval ? ['interval', 'auto-merge'] : [], dynamic: true });
  }

  const fromContainers: string[] = [];
  const routers = t.entryPoints
    .filter((e) => e.mode === 'tunnel')
    .flatMap((e) => e.gateways.map((g) => `${stripPrefix(e.address)} . ${stripPrefix(g.meshAddress)} . ${g.routerPort}`));
  if (routers.length > 0) {
    sets.push({ name: `r_${id}`, type: 'ipv4_addr . ipv4_addr . inet_service', elements: [...new Set(routers)].sort(), flags: [], dynamic: false });
    fromContainers.push(`\t\tip saddr . ip daddr . tcp dport @r_${id} accept comment "router clients"`);
  }
  if (t.egress.gateway) {
    const { l4, icmp } = egressElements(t.egress.allow);
    if (l4.length > 0) {
      sets.push({ name: `e_${id}`, type: 'ipv4_addr . inet_proto . inet_service', elements: l4, flags: ['interval'], dynamic: false });
      fromContainers.push(`\t\toifname "${t.iface}" ip daddr . meta l4proto . th dport @e_${id} accept comment "egress"`);
    }
    if (icmp.length > 0) {
      sets.push({ name: `ei_${id}`, type: 'ipv4_addr', elements: icmp, flags: ['interval', 'auto-merge'], dynamic: false });
      fromContainers.push(`\t\toifname "${t.iface}" ip protocol icmp ip daddr @ei_${id} accept comment "egress icmp"`);
    }
  }
  const chains = [
    `\tchain c_${id} {`,
    ...fromContainers,
    `\t\tip daddr != ${subnet} ip daddr @tenant_nets goto drop_cross_tenant`,
    `\t\tip daddr != ${subnet} goto drop_egress`,
    `\t\tgoto m_${id}`,
    '\t}',
    `\tchain m_${id} {`,
    ...policyRules(t),
    `\t\tip daddr != ${subnet} goto drop_cross_tenant`,
    '\t\tgoto drop_policy',
    '\t}',
  ];
  return { sets, chains };
}

/**
 * The last render's tenant fragments, keyed by the tenant's whole state (its
 * JSON): a document that changes one tenant renders that tenant again and
 * reuses the others'. Serialising a tenant costs a sixth of rendering it
 * (most of a large tenant is its address groups). One entry per tenant of the
 * last document.
 */
export class TenantRenderCache {
  private readonly byTenant = new Map<string, { key: string; fragment: TenantFragment }>();

  fragment(t: TenantState): TenantFragment {
    const key = JSON.stringify(t);
    const hit = this.byTenant.get(t.tenant);
    if (hit?.key === key) return hit.fragment;
    const fragment = renderTenant(t);
    this.byTenant.set(t.tenant, { key, fragment });
    return fragment;
  }

  /** Forget tenants that left the document. */
  retain(tenants: ReadonlySet<string>): void {
    for (const name of this.byTenant.keys()) if (!tenants.has(name)) this.byTenant.delete(name);
  }
}

function renderInput(underlay: UnderlayOptions, wgPorts: readonly number[]): string[] {
  const lines = [
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    `\t\tiifname "${CONTAINER_IF_PREFIX}*" goto drop_to_host`,
    `\t\tiifname "${TENANT_IF_PREFIX}*" goto mesh_to_host`,
    '\t\tiif "lo" accept',
    // (underlay → tenant addresses: dropped in raw_prerouting, before conntrack)
  ];
  if (underlay.restrictInput) lines.push(underlay.interfaces ? '\t\tiifname @underlay_ifs goto underlay_input' : '\t\tgoto underlay_input');
  lines.push('\t}', '\tchain mesh_to_host {', '\t\tct state established,related accept', '\t\tgoto drop_mesh_to_host', '\t}');
  if (underlay.restrictInput) {
    lines.push(
      '\tchain underlay_input {',
      '\t\tct state established,related accept',
      // Untracked (raw_prerouting), so never established: accepted by port, before any other state test.
      '\t\tudp dport @wg_ports accept',
      ...wireguardErrors(wgPorts),
      '\t\tct state invalid goto drop_invalid',
      '\t\tmeta l4proto { icmp, ipv6-icmp } accept',
      '\t\ttcp dport @underlay_tcp accept',
      '\t\tgoto drop_input',
      '\t}',
    );
  }
  return lines;
}

function renderForward(): string[] {
  const nwc = `"${CONTAINER_IF_PREFIX}*"`;
  const nw = `"${TENANT_IF_PREFIX}*"`;
  return [
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy accept;',
    `\t\tiifname ${nwc} goto from_container`,
    // The bulk of a node's packets are replies and mesh flows it has seen before: one test each. A
    // container's packets never get here (spoofing is checked first, in from_container); a mesh
    // packet's source is vouched for by WireGuard (its peer's allowed IPs); and the underlay holds no
    // established flow into netwall (tenant addresses: dropped in raw_prerouting; new flows: below).
    '\t\tct state established,related accept',
    `\t\tiifname ${nw} goto from_mesh`,
    '\t\t# from the underlay (or anything else): never into netwall (tenant addresses: already dropped in raw_prerouting)',
    `\t\toifname ${nwc} goto drop_underlay`,
    `\t\toifname ${nw} goto drop_underlay`,
    '\t}',
    '\tchain from_container {',
    '\t\tmeta nfproto ipv6 goto drop_ipv6',
    '\t\tiifname . ip saddr != @veth_addr goto drop_spoof',
    '\t\tct state established,related accept',
    '\t\tct state invalid goto drop_invalid',
    `\t\toifname != ${nwc} oifname != ${nw} goto drop_egress`,
    '\t\tip saddr vmap @container_tenant',
    '\t\tgoto drop_spoof',
    '\t}',
    '\tchain from_mesh {',
    '\t\tmeta nfproto ipv6 goto drop_ipv6',
    '\t\tct state invalid goto drop_invalid',
    `\t\toifname != ${nwc} goto drop_transit`,
    '\t\tiifname vmap @mesh_tenant',
    '\t\tgoto drop_transit',
    '\t}',
  ];
}

function normalizeUnderlay(options: FirewallOptions): UnderlayOptions {
  const u = options.underlay ?? {};
  return {
    restrictInput: u.restrictInput ?? false,
    allowTcpPorts: u.allowTcpPorts ?? [22],
    ...(u.interfaces ? { interfaces: u.interfaces } : {}),
  };
}

/** The table for a document (pure, deterministic): structure hash, element sets, and the full text on demand. */
export function renderFirewall(doc: DesiredState, options: FirewallOptions = {}, cache?: TenantRenderCache): RenderedFirewall {
  const underlay = normalizeUnderlay(options);
  const tenants = [...doc.tenants].sort((a, b) => a.tenant.localeCompare(b.tenant));
  const table = new TableText();
  for (const reason of DROP_REASONS) table.push(`\tcounter d_${reason} { }`);

  table.set('tenant_nets', 'ipv4_addr', ...intervalArgs(addressElements(tenants.map((t) => t.subnet))));
  const veths = tenants.flatMap((t) => t.workloads.map((w) => `"${vethName(t.tenant, w.name)}" . ${stripPrefix(w.address)}`));
  table.set('veth_addr', 'ifname . ipv4_addr', [...new Set(veths)].sort(), [], true);
  // Local tunnel-mode entry points: reached only through their own outbound connections.
  const tunnelEntries = tenants.flatMap((t) => t.entryPoints.filter((e) => e.mode === 'tunnel').map((e) => e.address));
  table.set('tunnel_entry', 'ipv4_addr', addressElements(tunnelEntries).elements, [], true);
  table.set('container_tenant', 'ipv4_addr : verdict', tenants.map((t) => `${addrElement(t.subnet)} : jump c_${tenantIdent(t.tenant)}`), ['interval']);
  table.set('mesh_tenant', 'ifname : verdict', tenants.map((t) => `"${t.iface}" : jump m_${tenantIdent(t.tenant)}`));
  const wgPorts = [...new Set(tenants.map((t) => t.listenPort))].sort((a, b) => a - b);
  table.set('wg_ports', 'inet_service', wgPorts.map(String));
  if (underlay.restrictInput) {
    const tcp = [...new Set([...underlay.allowTcpPorts, ...(options.agentPorts ?? [])])].sort((a, b) => a - b);
    table.set('underlay_tcp', 'inet_service', tcp.map(String));
    if (underlay.interfaces) table.set('underlay_ifs', 'ifname', underlay.interfaces.map((i) => `"${i}"`));
  }
  const tenantChains: string[] = [];
  for (const t of tenants) {
    const fragment = cache ? cache.fragment(t) : renderTenant(t);
    for (const s of fragment.sets) table.set(s.name, s.type, s.elements, s.flags, s.dynamic);
    tenantChains.push(...fragment.chains);
  }
  cache?.retain(new Set(tenants.map((t) => t.tenant)));
  for (const reason of DROP_REASONS) table.push(...dropChain(reason));
  table.push(...tenantChains, ...rawChains([`${TENANT_IF_PREFIX}*`, `${CONTAINER_IF_PREFIX}*`], 'drop_underlay'), ...renderForward(), ...renderInput(underlay, wgPorts));

  return finishTable(NODE_TABLE, table);
}

/** How a node's reconciler renders and checks its table. */
export function nodeFirewall(options: FirewallOptions = {}): FirewallSpec {
  const cache = new TenantRenderCache();
  return {
    table: NODE_TABLE,
    render: (doc) => renderFirewall(doc, options, cache),
    ...(options.verifySeconds !== undefined ? { verifySeconds: options.verifySeconds } : {}),
  };
}
