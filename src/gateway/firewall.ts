/**
 * The wall on a gateway: `table inet netwall_gw`, rendered as text by a pure
 * function of the desired state and the listener configuration (its life —
 * replace, drift repair — is src/shared/dataplane/nft-table.ts).
 *
 * Shape:
 * - input, from the mesh (`nw-*`): new connections only from the tenant's
 *   tunnel entry points to the router server port; replies to the gateway's
 *   own connections (mesh-mode forwarding); nothing else — in particular not
 *   the public listeners, the management endpoint or anything else the host
 *   runs.
 * - input, from everywhere else (the public and management networks): the
 *   public listener ports (HTTP, HTTPS, the TCP exposures), the WireGuard
 *   ports, the admin TCP ports (ssh by default), icmp; replies; nothing else.
 *   Mesh addresses are never reachable from outside.
 * - raw (before conntrack; src/shared/dataplane/nft-raw.ts): WireGuard's own
 *   UDP is not tracked; a packet from outside with a mesh address as source
 *   or destination is dropped before it can match a mesh flow's entry.
 * - forward: the mesh's egress only — from a tenant's own subnet, on the
 *   tenant's allow list, and only on the tenant's egress gateway — then
 *   masqueraded behind the gateway's address; nothing from outside is ever
 *   forwarded into a mesh (no DNAT, no port forwarding), and a mesh never
 *   reaches another mesh through the gateway.
 * Every drop goes through `drop_<reason>`: a named counter and a rate-limited log.
 */
import { CONTAINER_IF_PREFIX, NEVER_EGRESS, ROUTER_PORT, TENANT_IF_PREFIX, type DesiredState, type TenantState } from '../shared/desired.js';
import { addressElements, egressElements, intervalArgs, tenantIdent } from '../shared/dataplane/nft-elements.js';
import { rawChains, wireguardErrors } from '../shared/dataplane/nft-raw.js';
import { dropChain, finishTable, TableText, type RenderedFirewall, type TableRef } from '../shared/dataplane/nft-table.js';
import type { FirewallSpec } from '../shared/dataplane/reconcile.js';
import { normalizeCidr, stripPrefix } from '../shared/dataplane/routes.js';

/** The gateway's table (its own name: a host may run an agent too). */
export const GATEWAY_TABLE: TableRef = { family: 'inet', name: 'netwall_gw' };

/** Why a packet was dropped; each has a named counter `d_<reason>` and its own log prefix. */
export const GATEWAY_DROP_REASONS = [
  'invalid', // conntrack state invalid
  'ipv6', // meshes are IPv4-only
  'public', // outside → gateway, not a listener, WireGuard or admin port
  'inbound', // outside → a mesh interface, or from or to a mesh address (raw_prerouting): never let in
  'mesh_to_host', // mesh → gateway, not a router client to the router port
  'spoof', // mesh packet whose source is not in that tenant's subnet
  'egress', // mesh → outside, not on the tenant's egress allow list here
  'transit', // mesh → another mesh interface
] as const;

export interface GatewayFirewallOptions {
  /** TCP ports the public HTTP/HTTPS listeners use (the TCP exposures' ports come from the document). */
  listenerPorts: number[];
  /** TCP ports left open from outside for administration (default [22], so ssh is never cut off). */
  adminTcpPorts?: number[];
  /** Least time between drift checks on idle ticks (see FirewallSpec). */
  verifySeconds?: number;
}

const MESH = `"${TENANT_IF_PREFIX}*"`;

/** Is this gateway the one the tenant's egress leaves through? */
const egressHere = (doc: DesiredState, t: TenantState): boolean => t.egress.gateway?.host === doc.host && t.egress.allow.length > 0;

/** The tunnel entry points that may dial this gateway's router server, as `iface . address`. */
function routerClients(doc: DesiredState, byTenant: Map<string, TenantState>): string[] {
  const out = new Set<string>();
  for (const e of doc.exposures) {
    const t = byTenant.get(e.tenant);
    if (!t || e.mode !== 'tunnel') continue;
    const listed = new Set(e.routerClients.map((r) => `${r.node}/${r.workload}`));
    for (const target of e.targets) if (listed.has(`${target.node}/${target.workload}`)) out.add(`"${t.iface}" . ${stripPrefix(target.address)}`);
  }
  return [...out].sort();
}

function renderEgress(t: TenantState, table: TableText, chains: string[]): void {
  const id = tenantIdent(t.tenant);
  const { l4, icmp } = egressElements(t.egress.allow);
  const rules: string[] = [];
  if (l4.length > 0) {
    table.set(`e_${id}`, 'ipv4_addr . inet_proto . inet_service', l4, ['interval']);
    rules.push(`\t\tip daddr . meta l4proto . th dport @e_${id} accept comment "egress"`);
  }
  if (icmp.length > 0) {
    table.set(`ei_${id}`, 'ipv4_addr', icmp, ['interval', 'auto-merge']);
    rules.push(`\t\tip protocol icmp ip daddr @ei_${id} accept comment "egress icmp"`);
  }
  chains.push(
    `\tchain eg_${id} {`,
    `\t\tip saddr != ${normalizeCidr(t.subnet)} goto drop_spoof`,
    '\t\tip daddr @never_egress goto drop_egress',
    ...rules,
    '\t\tgoto drop_egress',
    '\t}',
  );
}

/** The table for a document (pure, deterministic). */
export function renderGatewayFirewall(doc: DesiredState, options: GatewayFirewallOptions): RenderedFirewall {
  const tenants = [...doc.tenants].sort((a, b) => a.tenant.localeCompare(b.tenant));
  const byTenant = new Map(tenants.map((t) => [t.tenant, t]));
  const table = new TableText();
  for (const reason of GATEWAY_DROP_REASONS) table.push(`\tcounter d_${reason} { }`);

  const publicTcp = new Set([...options.listenerPorts, ...(options.adminTcpPorts ?? [22])]);
  for (const e of doc.exposures) if (e.protocol === 'tcp' && e.publicPort !== null) publicTcp.add(e.publicPort);
  table.set('tenant_nets', 'ipv4_addr', ...intervalArgs(addressElements(tenants.map((t) => t.subnet))));
  table.set('public_tcp', 'inet_service', [...publicTcp].sort((a, b) => a - b).map(String));
  const wgPorts = [...new Set(tenants.map((t) => t.listenPort))].sort((a, b) => a - b);
  table.set('wg_ports', 'inet_service', wgPorts.map(String));
  table.set('router_clients', 'ifname . ipv4_addr', routerClients(doc, byTenant));
  const egress = tenants.filter((t) => egressHere(doc, t));
  table.set('egress_tenant', 'ifname : verdict', egress.map((t) => `"${t.iface}" : jump eg_${tenantIdent(t.tenant)}`));
  // Never reached by egress: special ranges and the nodes' own underlay addresses (the coordinator refuses rules covering any netwall host).
  const endpoints = tenants.flatMap((t) => t.peers.filter((p) => p.endpoint !== null).map((p) => (p.endpoint as string).replace(/:\d+$/, '')));
  table.set('never_egress', 'ipv4_addr', ...intervalArgs(addressElements([...NEVER_EGRESS.map((n) => n.cidr), ...endpoints])));
  // Only the subnets whose egress leaves here are masqueraded.
  table.set('egress_nets', 'ipv4_addr', ...intervalArgs(addressElements(egress.map((t) => t.subnet))));

  const egressChains: string[] = [];
  for (const t of egress) renderEgress(t, table, egressChains);
  for (const reason of GATEWAY_DROP_REASONS) table.push(...dropChain(reason));
  table.push(
    ...egressChains,
    ...rawChains([`${TENANT_IF_PREFIX}*`, `${CONTAINER_IF_PREFIX}*`], 'drop_inbound'),
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    '\t\tiif "lo" accept',
    `\t\tiifname ${MESH} goto mesh_input`,
    // (outside → mesh addresses: dropped in raw_prerouting, before conntrack)
    '\t\tct state established,related accept',
    // Untracked (raw_prerouting), so never established: accepted by port, before any other state test.
    '\t\tudp dport @wg_ports accept',
    ...wireguardErrors(wgPorts),
    '\t\tct state invalid goto drop_invalid',
    '\t\tmeta l4proto { icmp, ipv6-icmp } accept',
    '\t\ttcp dport @public_tcp accept',
    '\t\tgoto drop_public',
    '\t}',
    '\tchain mesh_input {',
    '\t\tmeta nfproto ipv6 goto drop_ipv6',
    '\t\tct state established,related accept',
    '\t\tct state invalid goto drop_invalid',
    `\t\tiifname . ip saddr @router_clients tcp dport ${ROUTER_PORT} accept comment "router clients"`,
    '\t\tgoto drop_mesh_to_host',
    '\t}',
    '\tchain forward {',
    '\t\ttype filter hook forward priority filter; policy accept;',
    '\t\t# replies to the egress the mesh opened (nothing from outside can open a flow inwards;',
    '\t\t# packets from or to mesh addresses arriving from outside: dropped in raw_prerouting)',
    '\t\tct state established,related accept',
    `\t\tiifname ${MESH} goto from_mesh`,
    `\t\toifname ${MESH} goto drop_inbound`,
    '\t}',
    '\tchain from_mesh {',
    '\t\tmeta nfproto ipv6 goto drop_ipv6',
    '\t\tct state invalid goto drop_invalid',
    `\t\toifname ${MESH} goto drop_transit`,
    '\t\tiifname vmap @egress_tenant',
    '\t\tgoto drop_egress',
    '\t}',
    '\tchain postrouting {',
    '\t\ttype nat hook postrouting priority srcnat; policy accept;',
    `\t\toifname != ${MESH} ip saddr @egress_nets masquerade comment "egress"`,
    '\t}',
  );
  return finishTable(GATEWAY_TABLE, table);
}

/** How the gateway's reconciler renders and checks its table. */
export function gatewayFirewall(options: GatewayFirewallOptions): FirewallSpec {
  return {
    table: GATEWAY_TABLE,
    render: (doc) => renderGatewayFirewall(doc, options),
    ...(options.verifySeconds !== undefined ? { verifySeconds: options.verifySeconds } : {}),
  };
}
