/**
 * The wall: one nftables table, `table inet netwall`, rendered as text by a
 * pure function of the desired state and replaced atomically in a single
 * `nft -f -` transaction. Nothing outside that table is ever touched.
 *
 * Shape (default deny for everything netwall owns, default accept for the
 * host's other traffic):
 * - input:   containers → host: always dropped; mesh → host: replies only;
 *            underlay → tenant addresses: dropped; optionally the underlay
 *            itself is restricted to ssh, WireGuard ports and icmp.
 * - forward: containers: anti-spoof (veth . address set), replies, then the
 *            tenant's chain (picked by a verdict map on the source subnet):
 *            router clients, egress (interval set), policy rules over address
 *            group sets; mesh → local containers: the same policy rules, picked
 *            by a verdict map on the WireGuard interface; underlay → anything
 *            of netwall: dropped.
 * Per-packet cost and rule count are O(tenants + policies): workloads only
 * ever appear as set elements.
 * Every drop goes through `drop_<reason>`: a named counter and a rate-limited log.
 */
import { createHash } from 'node:crypto';
import type { AllowRule, DesiredState, EgressAllow, PortRange, TenantState } from '../shared/desired.js';
import type { ChangeLogger, Runner } from '../shared/runner.js';
import { CONTAINER_IF_PREFIX, TENANT_IF_PREFIX, containerInterfaceName } from './names.js';
import { cidrRange, intToIpv4, normalizeCidr, stripPrefix } from './routes.js';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'netwall';

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
}

export interface RenderedFirewall {
  /** The full `table inet netwall { … }` text. */
  text: string;
  /** sha256 of the rendered body; also stored in the table's comment. */
  hash: string;
}

// ---------------------------------------------------------------- naming

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Tenant names are DNS labels; `-` is the only character nft identifiers cannot hold. */
function tenantIdent(tenant: string): string {
  const clean = tenant.toLowerCase().replace(/[^a-z0-9]/g, '_');
  return clean === tenant.replace(/-/g, '_') ? clean : `${clean}_${sha(tenant).slice(0, 6)}`;
}

/** Set name for an address group: readable part plus a hash, as group ids are free-form. */
export function groupSetName(tenant: string, group: string): string {
  const readable = group.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '').slice(0, 24);
  return `g_${tenantIdent(tenant)}_${readable ? `${readable}_` : ''}${sha(`${tenant}/${group}`).slice(0, 6)}`;
}

const quote = (s: string): string => `"${s.replace(/["\\\n\r]/g, '_').slice(0, 100)}"`;

// ---------------------------------------------------------------- small renderers

/** `a.b.c.d` for a /32, the CIDR otherwise. */
function addrElement(cidr: string): string {
  const n = normalizeCidr(cidr);
  return n.endsWith('/32') ? stripPrefix(n) : n;
}

function setBlock(name: string, type: string, elements: readonly string[], flags: string[] = []): string[] {
  const lines = [`\t${type.includes(' : ') ? 'map' : 'set'} ${name} {`, `\t\ttype ${type}`];
  if (flags.includes('interval')) lines.push('\t\tflags interval');
  if (flags.includes('auto-merge')) lines.push('\t\tauto-merge');
  if (elements.length > 0) lines.push(`\t\telements = { ${elements.join(',\n\t\t\t     ')} }`);
  lines.push('\t}');
  return lines;
}

/** An IPv4 address set; interval (with merging) only when it holds more than single addresses. */
function addressSet(name: string, cidrs: readonly string[]): string[] {
  const elements = [...new Set(cidrs.map(addrElement))].sort(compareAddr);
  const interval = elements.some((e) => e.includes('/'));
  return setBlock(name, 'ipv4_addr', elements, interval ? ['interval', 'auto-merge'] : []);
}

function compareAddr(a: string, b: string): number {
  const x = cidrRange(a);
  const y = cidrRange(b);
  return x.first - y.first || x.last - y.last;
}

/** Merge port ranges: sorted, overlapping and adjacent ones joined. Empty means every port. */
export function mergePorts(ports: readonly PortRange[]): PortRange[] {
  const list = (ports.length === 0 ? [{ from: 0, to: 65535 }] : ports).map((p) => ({ from: p.from, to: p.to })).sort((a, b) => a.from - b.from);
  const out: PortRange[] = [];
  for (const p of list) {
    const last = out[out.length - 1];
    if (last && p.from <= last.to + 1) last.to = Math.max(last.to, p.to);
    else out.push(p);
  }
  return out;
}

const portText = (p: PortRange): string => (p.from === p.to ? String(p.from) : `${p.from}-${p.to}`);

/** `tcp dport { 80, 8000-8080 }`, `meta l4proto tcp` (all ports) or `ip protocol icmp`. */
function protoMatch(protocol: AllowRule['protocol'], ports: readonly PortRange[]): string {
  if (protocol === 'icmp') return 'ip protocol icmp';
  if (ports.length === 0) return `meta l4proto ${protocol}`;
  const merged = mergePorts(ports);
  const only = merged[0];
  if (merged.length === 1 && only) return `${protocol} dport ${portText(only)}`;
  return `${protocol} dport { ${merged.map(portText).join(', ')} }`;
}

/**
 * Egress allow entries as disjoint `address-range . proto . port-range`
 * elements: nftables rejects overlapping elements in concatenated interval
 * sets, and allow lists overlap freely (a /24 and a /32 inside it). A sweep
 * over the address boundaries gives disjoint address segments; each gets the
 * union of the ports of every entry covering it.
 */
export function egressElements(allows: readonly EgressAllow[]): { l4: string[]; icmp: string[] } {
  const icmp = allows.filter((a) => a.protocol === 'icmp').map((a) => addrElement(a.cidr));
  const l4 = allows.filter((a) => a.protocol !== 'icmp').map((a) => ({ ...a, range: cidrRange(a.cidr) }));
  const bounds = [...new Set(l4.flatMap((a) => [a.range.first, a.range.last + 1]))].sort((a, b) => a - b);
  type Segment = { first: number; last: number; sig: string; ports: Map<string, PortRange[]> };
  const segments: Segment[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const first = bounds[i] as number;
    const last = (bounds[i + 1] as number) - 1;
    const covering = l4.filter((a) => a.range.first <= first && last <= a.range.last);
    if (covering.length === 0) continue;
    const ports = new Map<string, PortRange[]>();
    for (const proto of ['tcp', 'udp']) {
      const of = covering.filter((a) => a.protocol === proto);
      if (of.length === 0) continue;
      // An entry with no ports allows every port, which absorbs the others.
      ports.set(proto, of.some((a) => a.ports.length === 0) ? mergePorts([]) : mergePorts(of.flatMap((a) => a.ports)));
    }
    const sig = JSON.stringify([...ports]);
    const prev = segments[segments.length - 1];
    if (prev && prev.sig === sig && prev.last + 1 === first) prev.last = last;
    else segments.push({ first, last, sig, ports });
  }
  const elements: string[] = [];
  for (const s of segments) {
    const addr = s.first === s.last ? intToIpv4(s.first) : `${intToIpv4(s.first)}-${intToIpv4(s.last)}`;
    for (const [proto, ranges] of s.ports) for (const p of ranges) elements.push(`${addr} . ${proto} . ${portText(p)}`);
  }
  return { l4: elements, icmp: [...new Set(icmp)].sort(compareAddr) };
}

// ---------------------------------------------------------------- the table

function dropChain(reason: DropReason): string[] {
  return [
    `\tchain drop_${reason} {`,
    `\t\tcounter name "d_${reason}"`,
    `\t\tlimit rate 5/second log prefix "netwall drop ${reason}: "`,
    '\t\tdrop',
    '\t}',
  ];
}

function policyRules(t: TenantState): string[] {
  return t.firewall.rules.map(
    (r) => `\t\tip saddr @${groupSetName(t.tenant, r.from)} ip daddr @${groupSetName(t.tenant, r.to)} ${protoMatch(r.protocol, r.ports)} accept comment ${quote(r.origin)}`,
  );
}

/** Sets and chains of one tenant. */
function renderTenant(t: TenantState): { sets: string[]; chains: string[] } {
  const id = tenantIdent(t.tenant);
  const subnet = normalizeCidr(t.subnet);
  const sets: string[] = [];
  const groupNames = new Set([...Object.keys(t.firewall.groups), ...t.firewall.rules.flatMap((r) => [r.from, r.to])]);
  for (const g of [...groupNames].sort()) sets.push(...addressSet(groupSetName(t.tenant, g), t.firewall.groups[g] ?? []));

  const fromContainers: string[] = [];
  const routers = t.entryPoints
    .filter((e) => e.mode === 'tunnel')
    .flatMap((e) => e.gateways.map((g) => `${stripPrefix(e.address)} . ${stripPrefix(g.meshAddress)} . ${g.routerPort}`));
  if (routers.length > 0) {
    sets.push(...setBlock(`r_${id}`, 'ipv4_addr . ipv4_addr . inet_service', [...new Set(routers)].sort()));
    fromContainers.push(`\t\tip saddr . ip daddr . tcp dport @r_${id} accept comment "router clients"`);
  }
  if (t.egress.gateway) {
    const { l4, icmp } = egressElements(t.egress.allow);
    if (l4.length > 0) {
      sets.push(...setBlock(`e_${id}`, 'ipv4_addr . inet_proto . inet_service', l4, ['interval']));
      fromContainers.push(`\t\toifname "${t.iface}" ip daddr . meta l4proto . th dport @e_${id} accept comment "egress"`);
    }
    if (icmp.length > 0) {
      sets.push(...setBlock(`ei_${id}`, 'ipv4_addr', icmp, ['interval', 'auto-merge']));
      fromContainers.push(`\t\toifname "${t.iface}" ip protocol icmp ip daddr @ei_${id} accept comment "egress icmp"`);
    }
  }
  const policies = policyRules(t);
  const chains = [
    `\tchain c_${id} {`,
    ...fromContainers,
    ...policies,
    `\t\tip daddr != ${subnet} ip daddr @tenant_nets goto drop_cross_tenant`,
    `\t\tip daddr != ${subnet} goto drop_egress`,
    '\t\tgoto drop_policy',
    '\t}',
    `\tchain m_${id} {`,
    ...policies,
    `\t\tip daddr != ${subnet} goto drop_cross_tenant`,
    '\t\tgoto drop_policy',
    '\t}',
  ];
  return { sets, chains };
}

function renderInput(underlay: UnderlayOptions): string[] {
  const lines = [
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    `\t\tiifname "${CONTAINER_IF_PREFIX}*" goto drop_to_host`,
    `\t\tiifname "${TENANT_IF_PREFIX}*" ct state established,related accept`,
    `\t\tiifname "${TENANT_IF_PREFIX}*" goto drop_mesh_to_host`,
    '\t\tiifname "lo" accept',
    '\t\tip daddr @tenant_nets goto drop_underlay',
  ];
  if (underlay.restrictInput) lines.push(underlay.interfaces ? '\t\tiifname @underlay_ifs goto underlay_input' : '\t\tgoto underlay_input');
  lines.push('\t}');
  if (underlay.restrictInput) {
    lines.push(
      '\tchain underlay_input {',
      '\t\tct state established,related accept',
      '\t\tct state invalid goto drop_invalid',
      '\t\tmeta l4proto { icmp, ipv6-icmp } accept',
      '\t\tudp dport @wg_ports accept',
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
    `\t\tiifname ${nw} goto from_mesh`,
    '\t\t# from the underlay (or anything else): never into netwall',
    `\t\toifname ${nwc} goto drop_underlay`,
    `\t\toifname ${nw} goto drop_underlay`,
    '\t\tip daddr @tenant_nets goto drop_underlay',
    '\t\tip saddr @tenant_nets goto drop_underlay',
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
    '\t\tct state established,related accept',
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

/** The full table text for a document (pure, deterministic). */
export function renderFirewall(doc: DesiredState, options: FirewallOptions = {}): RenderedFirewall {
  const underlay = normalizeUnderlay(options);
  const tenants = [...doc.tenants].sort((a, b) => a.tenant.localeCompare(b.tenant));
  const body: string[] = [];
  for (const reason of DROP_REASONS) body.push(`\tcounter d_${reason} { }`);

  body.push(...addressSet('tenant_nets', tenants.map((t) => t.subnet)));
  const veths = tenants.flatMap((t) => t.workloads.map((w) => `"${containerInterfaceName(t.tenant, w.name)}" . ${stripPrefix(w.address)}`));
  body.push(...setBlock('veth_addr', 'ifname . ipv4_addr', veths.sort()));
  body.push(
    ...setBlock('container_tenant', 'ipv4_addr : verdict', tenants.map((t) => `${addrElement(t.subnet)} : jump c_${tenantIdent(t.tenant)}`), ['interval']),
  );
  body.push(...setBlock('mesh_tenant', 'ifname : verdict', tenants.map((t) => `"${t.iface}" : jump m_${tenantIdent(t.tenant)}`)));
  if (underlay.restrictInput) {
    const wgPorts = [...new Set(tenants.map((t) => t.listenPort))].sort((a, b) => a - b);
    const tcp = [...new Set([...underlay.allowTcpPorts, ...(options.agentPorts ?? [])])].sort((a, b) => a - b);
    body.push(...setBlock('wg_ports', 'inet_service', wgPorts.map(String)));
    body.push(...setBlock('underlay_tcp', 'inet_service', tcp.map(String)));
    if (underlay.interfaces) body.push(...setBlock('underlay_ifs', 'ifname', underlay.interfaces.map((i) => `"${i}"`)));
  }
  const tenantChains: string[] = [];
  for (const t of tenants) {
    const { sets, chains } = renderTenant(t);
    body.push(...sets);
    tenantChains.push(...chains);
  }
  for (const reason of DROP_REASONS) body.push(...dropChain(reason));
  body.push(...tenantChains, ...renderForward(), ...renderInput(underlay));

  const bodyText = body.join('\n');
  const hash = sha(bodyText);
  const text = [`table ${TABLE_FAMILY} ${TABLE_NAME} {`, `\tcomment "netwall sha256=${hash}"`, bodyText, '}', ''].join('\n');
  return { text, hash };
}

/** The hash a live table was rendered from (its comment), or null. */
export function tableHash(listing: string): string | null {
  return /comment "netwall sha256=([0-9a-f]{64})"/.exec(listing)?.[1] ?? null;
}

// ---------------------------------------------------------------- observe and plan

export interface ObservedFirewall {
  /** `nft -s list table inet netwall`, or null when the table does not exist. */
  listing: string | null;
}

/** What we saw right after our last apply: the kernel's own rendering of it. */
export interface FirewallMemory {
  hash: string;
  listing: string;
}

export type FirewallChange = {
  kind: 'firewall-replace';
  op: 'update';
  /** missing | changed (new document) | drift (edited by hand) | unverified (no record since start). */
  reason: 'missing' | 'changed' | 'drift' | 'unverified';
  old: { hash: string | null } | null;
  new: RenderedFirewall;
};

export async function observeFirewall(runner: Runner): Promise<ObservedFirewall> {
  const res = await runner.run(['nft', '-s', 'list', 'table', TABLE_FAMILY, TABLE_NAME], { allowFailure: true });
  return { listing: res.exitCode === 0 ? res.stdout : null };
}

/** diff(desired, observed): one whole-table replace, or nothing. */
export function planFirewall(desired: RenderedFirewall, observed: ObservedFirewall, memory: FirewallMemory | null): FirewallChange[] {
  const change = (reason: FirewallChange['reason'], old: FirewallChange['old']): FirewallChange[] => [
    { kind: 'firewall-replace', op: 'update', reason, old, new: desired },
  ];
  if (observed.listing === null) return change('missing', null);
  const liveHash = tableHash(observed.listing);
  if (liveHash !== desired.hash) return change('changed', { hash: liveHash });
  if (!memory || memory.hash !== desired.hash) return change('unverified', { hash: liveHash });
  if (memory.listing !== observed.listing) return change('drift', { hash: liveHash });
  return [];
}

// ---------------------------------------------------------------- counters and apply

/** Parse `nft -j list counters table inet netwall` into `{reason: {packets, bytes}}`. */
export function parseCounters(json: string): Record<string, { packets: number; bytes: number }> {
  const out: Record<string, { packets: number; bytes: number }> = {};
  const doc = JSON.parse(json || '{}') as { nftables?: { counter?: { name?: string; packets?: number; bytes?: number } }[] };
  for (const item of doc.nftables ?? []) {
    const c = item.counter;
    if (!c?.name?.startsWith('d_')) continue;
    out[c.name.slice(2)] = { packets: c.packets ?? 0, bytes: c.bytes ?? 0 };
  }
  return out;
}

async function readCounters(runner: Runner): Promise<Record<string, { packets: number; bytes: number }>> {
  const res = await runner.run(['nft', '-j', 'list', 'counters', 'table', TABLE_FAMILY, TABLE_NAME], { allowFailure: true });
  return res.exitCode === 0 ? parseCounters(res.stdout) : {};
}

/** Dropped packets per reason since the table was first created (for status reports). */
export async function readDropCounters(runner: Runner): Promise<Record<string, number>> {
  const counters = await readCounters(runner);
  return Object.fromEntries(Object.entries(counters).map(([k, v]) => [k, v.packets]));
}

/** Carry the live counter values into the new table, so a replace does not reset the drop statistics. */
export function withCounterValues(text: string, counters: Record<string, { packets: number; bytes: number }>): string {
  return text.replace(/\tcounter d_([a-z_]+) \{ \}/g, (line, reason: string) => {
    const c = counters[reason];
    return c ? `\tcounter d_${reason} { packets ${c.packets} bytes ${c.bytes} }` : line;
  });
}

/**
 * The create-or-replace transaction: declaring the table first makes the
 * delete valid when it does not exist yet; all three commands commit together.
 */
export function replaceTransaction(text: string): string {
  return `table ${TABLE_FAMILY} ${TABLE_NAME} {}\ndelete table ${TABLE_FAMILY} ${TABLE_NAME}\n${text}`;
}

/** Apply a replace and return the kernel's rendering of the result (the new memory). */
export async function applyFirewallChange(change: FirewallChange, runner: Runner, log: ChangeLogger): Promise<FirewallMemory> {
  const counters = await readCounters(runner);
  const script = replaceTransaction(withCounterValues(change.new.text, counters));
  log(`[#] nft -f - # replace table ${TABLE_FAMILY} ${TABLE_NAME} (${change.reason}, sha256 ${change.new.hash.slice(0, 12)})`);
  await runner.run(['nft', '-f', '-'], { input: script });
  const after = await observeFirewall(runner);
  if (after.listing === null) throw new Error(`nft: table ${TABLE_FAMILY} ${TABLE_NAME} missing right after apply`);
  return { hash: change.new.hash, listing: after.listing };
}
