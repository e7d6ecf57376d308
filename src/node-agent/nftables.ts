/**
 * The wall: one nftables table, `table inet netwall`, rendered as text by a
 * pure function of the desired state. Nothing outside that table is ever
 * touched. Two ways to change it, each one atomic `nft -f -` transaction:
 * - replace: the whole table (counters carried over), when its structure
 *   (tables, chains, rules, set declarations; hashed into the table comment)
 *   changes, when it is missing, or when it drifted;
 * - element delta: `create element` / `delete element` lines on the
 *   workload-dependent sets (`veth_addr`, the address groups `g_*`) when only
 *   their members changed since our last apply.
 *
 * Shape (default deny for everything netwall owns, default accept for the
 * host's other traffic):
 * - input:   containers → host: always dropped; mesh → host: replies only;
 *            underlay → tenant addresses: dropped; optionally the underlay
 *            itself is restricted to ssh, WireGuard ports and icmp.
 * - forward: containers: anti-spoof (veth . address set), replies, then the
 *            tenant's chain (picked by a verdict map on the source subnet):
 *            router clients, egress (interval set), leaving the subnet dropped,
 *            then the policy rules over address group sets (the mesh chain);
 *            mesh → local containers: the same policy rules, picked by a
 *            verdict map on the WireGuard interface; underlay → anything of
 *            netwall: dropped.
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
  /**
   * Not part of the table: the least time between two drift checks (listings
   * of the table) on ticks with nothing to change. Default 0: every tick.
   */
  verifySeconds?: number;
}

/** A workload-dependent set: its members change as workloads come and go, the declaration does not. */
export interface ElementSet {
  /** Interval sets (a group holding a CIDR) are never patched element by element: a change replaces the table. */
  interval: boolean;
  /** Canonical element texts, sorted (`10.1.1.10`, `"nwc…" . 10.1.1.10`). */
  elements: readonly string[];
}

export interface RenderedFirewall {
  /** The full `table inet netwall { … }` text, elements included (built on first use). */
  readonly text: string;
  /**
   * sha256 of the structure: tables, chains, rules and set declarations, with
   * the members of the workload-dependent sets left out. Stored in the
   * table's comment; equal hashes mean an element delta can reach the document.
   */
  hash: string;
  /** The workload-dependent sets (`veth_addr`, the address groups `g_*`) by name. */
  elementSets: Record<string, ElementSet>;
}

// ---------------------------------------------------------------- naming

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Tenant names are DNS labels; `-` is the only character nft identifiers cannot hold. */
function tenantIdent(tenant: string): string {
  const clean = tenant.toLowerCase().replace(/[^a-z0-9]/g, '_');
  return clean === tenant.replace(/-/g, '_') ? clean : `${clean}_${sha(tenant).slice(0, 6)}`;
}

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

const quote = (s: string): string => `"${s.replace(/["\\\n\r]/g, '_').slice(0, 100)}"`;

// ---------------------------------------------------------------- small renderers

/**
 * One rendered table under construction. Element lines of the
 * workload-dependent sets go to the full text only; everything else is the
 * structure, whose hash names the table.
 */
class TableText {
  readonly structure: string[] = [];
  /** The full text's lines: a string, or the name of an element set whose `elements = …` line goes there. */
  readonly full: (string | { set: string })[] = [];
  readonly elementSets: Record<string, ElementSet> = {};

  push(...lines: string[]): void {
    for (const l of lines) {
      this.structure.push(l);
      this.full.push(l);
    }
  }

  /** A set block; `dynamic` sets keep their elements out of the structure. */
  set(name: string, type: string, elements: readonly string[], flags: string[] = [], dynamic = false): void {
    this.push(`\t${type.includes(' : ') ? 'map' : 'set'} ${name} {`, `\t\ttype ${type}`);
    const interval = flags.includes('interval');
    if (interval) this.push('\t\tflags interval');
    if (flags.includes('auto-merge')) this.push('\t\tauto-merge');
    if (dynamic) {
      this.elementSets[name] = { interval, elements };
      this.full.push({ set: name });
    } else if (elements.length > 0) {
      this.push(elementsLine(elements));
    }
    this.push('\t}');
  }
}

const elementsLine = (elements: readonly string[]): string => `\t\telements = { ${elements.join(',\n\t\t\t     ')} }`;

/** `a.b.c.d` for a /32, the CIDR otherwise. */
function addrElement(cidr: string): string {
  const n = normalizeCidr(cidr);
  return n.endsWith('/32') ? stripPrefix(n) : n;
}

/**
 * A plain address (`a.b.c.d`, optionally `/32`) as its number, parsed by hand,
 * or null for anything else (CIDRs, leading zeros: the general path). Group
 * members are nearly all plain addresses, and parsing them was most of the
 * render time at 20,000 members.
 */
function plainAddress(text: string): number | null {
  const end = text.endsWith('/32') ? text.length - 3 : text.length;
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return null;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return null; // a leading zero: let the general path normalise it
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return null;
    } else return null;
  }
  if (dots !== 3 || digits === 0) return null;
  return value * 256 + octet;
}

/**
 * Address elements, deduplicated and sorted by address. Each member is parsed
 * once (decorate, sort numbers, undecorate), never inside the comparator.
 */
function addressElements(cidrs: readonly string[]): { elements: string[]; interval: boolean } {
  // The usual case: plain addresses (often already sorted: the coordinator sorts groups).
  const count = cidrs.length;
  const nums = new Float64Array(count);
  const texts: string[] = new Array<string>(count);
  let sorted = true;
  let i = 0;
  for (; i < count; i++) {
    const c = cidrs[i] as string;
    const n = plainAddress(c);
    if (n === null) break;
    nums[i] = n;
    texts[i] = c.endsWith('/32') ? c.slice(0, -3) : c;
    if (i > 0 && n <= (nums[i - 1] as number)) sorted = false;
  }
  if (i === count) {
    if (sorted) return { elements: texts, interval: false };
    const order = Array.from({ length: count }, (_, k) => k).sort((a, b) => (nums[a] as number) - (nums[b] as number));
    const elements: string[] = [];
    let prev = -1;
    for (const k of order) {
      if (nums[k] === prev) continue;
      prev = nums[k] as number;
      elements.push(texts[k] as string);
    }
    return { elements, interval: false };
  }
  const seen = new Map<string, { first: number; last: number }>();
  let interval = false;
  for (const c of cidrs) {
    const n = plainAddress(c);
    if (n !== null) {
      const text = c.endsWith('/32') ? c.slice(0, -3) : c;
      if (!seen.has(text)) seen.set(text, { first: n, last: n });
      continue;
    }
    const { first, last } = cidrRange(c);
    const text = first === last ? intToIpv4(first) : `${intToIpv4(first)}/${32 - Math.log2(last - first + 1)}`;
    if (first !== last) interval = true;
    if (!seen.has(text)) seen.set(text, { first, last });
  }
  const decorated = [...seen].sort((a, b) => a[1].first - b[1].first || a[1].last - b[1].last);
  return { elements: decorated.map(([text]) => text), interval };
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

/**
 * The protocol/port matches of one allow rule; the rule is rendered once per
 * match. Single ports share one anonymous set (`tcp dport { 80, 443 }`); each
 * port range gets its own match (`tcp dport 8000-8080`). Never an anonymous
 * *interval* set: nft fetches the elements of every interval set in the table
 * before any `add element`, which cost ~40 ms per transaction with 500 of
 * them (measured, nft 1.0.6), so ranges stay plain range expressions.
 */
function protoMatches(protocol: AllowRule['protocol'], ports: readonly PortRange[]): string[] {
  if (protocol === 'icmp') return ['ip protocol icmp'];
  if (ports.length === 0) return [`meta l4proto ${protocol}`];
  const merged = mergePorts(ports);
  const singles = merged.filter((p) => p.from === p.to).map((p) => String(p.from));
  const out: string[] = [];
  if (singles.length === 1) out.push(`${protocol} dport ${singles[0]}`);
  else if (singles.length > 1) out.push(`${protocol} dport { ${singles.join(', ')} }`);
  for (const p of merged) if (p.from !== p.to) out.push(`${protocol} dport ${portText(p)}`);
  return out;
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
  return t.firewall.rules.flatMap((r) => {
    const head = `\t\tip saddr @${groupSetName(t.tenant, r.from)} ip daddr @${groupSetName(t.tenant, r.to)}`;
    return protoMatches(r.protocol, r.ports).map((m) => `${head} ${m} accept comment ${quote(r.origin)}`);
  });
}

/**
 * Sets and chains of one tenant. The policy rules live once, in the mesh
 * chain `m_<tenant>`; the container chain `c_<tenant>` drops what leaves the
 * tenant's subnet and then continues there (`goto m_…`). Address groups only
 * ever hold the tenant's own addresses, so this is the same verdict as
 * repeating the policies in both chains, with half the rules (rule count is
 * what nft's apply and listing time grow with).
 */
function renderTenant(t: TenantState, table: TableText, chains: string[]): void {
  const id = tenantIdent(t.tenant);
  const subnet = normalizeCidr(t.subnet);
  const groupNames = new Set([...Object.keys(t.firewall.groups), ...t.firewall.rules.flatMap((r) => [r.from, r.to])]);
  for (const g of [...groupNames].sort()) {
    const { elements, interval } = addressElements(t.firewall.groups[g] ?? []);
    table.set(groupSetName(t.tenant, g), 'ipv4_addr', elements, interval ? ['interval', 'auto-merge'] : [], true);
  }

  const fromContainers: string[] = [];
  const routers = t.entryPoints
    .filter((e) => e.mode === 'tunnel')
    .flatMap((e) => e.gateways.map((g) => `${stripPrefix(e.address)} . ${stripPrefix(g.meshAddress)} . ${g.routerPort}`));
  if (routers.length > 0) {
    table.set(`r_${id}`, 'ipv4_addr . ipv4_addr . inet_service', [...new Set(routers)].sort());
    fromContainers.push(`\t\tip saddr . ip daddr . tcp dport @r_${id} accept comment "router clients"`);
  }
  if (t.egress.gateway) {
    const { l4, icmp } = egressElements(t.egress.allow);
    if (l4.length > 0) {
      table.set(`e_${id}`, 'ipv4_addr . inet_proto . inet_service', l4, ['interval']);
      fromContainers.push(`\t\toifname "${t.iface}" ip daddr . meta l4proto . th dport @e_${id} accept comment "egress"`);
    }
    if (icmp.length > 0) {
      table.set(`ei_${id}`, 'ipv4_addr', icmp, ['interval', 'auto-merge']);
      fromContainers.push(`\t\toifname "${t.iface}" ip protocol icmp ip daddr @ei_${id} accept comment "egress icmp"`);
    }
  }
  chains.push(
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
  );
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

/** The table for a document (pure, deterministic): structure hash, element sets, and the full text on demand. */
export function renderFirewall(doc: DesiredState, options: FirewallOptions = {}): RenderedFirewall {
  const underlay = normalizeUnderlay(options);
  const tenants = [...doc.tenants].sort((a, b) => a.tenant.localeCompare(b.tenant));
  const table = new TableText();
  for (const reason of DROP_REASONS) table.push(`\tcounter d_${reason} { }`);

  table.set('tenant_nets', 'ipv4_addr', ...intervalArgs(addressElements(tenants.map((t) => t.subnet))));
  const veths = tenants.flatMap((t) => t.workloads.map((w) => `"${vethName(t.tenant, w.name)}" . ${stripPrefix(w.address)}`));
  table.set('veth_addr', 'ifname . ipv4_addr', [...new Set(veths)].sort(), [], true);
  table.set('container_tenant', 'ipv4_addr : verdict', tenants.map((t) => `${addrElement(t.subnet)} : jump c_${tenantIdent(t.tenant)}`), ['interval']);
  table.set('mesh_tenant', 'ifname : verdict', tenants.map((t) => `"${t.iface}" : jump m_${tenantIdent(t.tenant)}`));
  if (underlay.restrictInput) {
    const wgPorts = [...new Set(tenants.map((t) => t.listenPort))].sort((a, b) => a - b);
    const tcp = [...new Set([...underlay.allowTcpPorts, ...(options.agentPorts ?? [])])].sort((a, b) => a - b);
    table.set('wg_ports', 'inet_service', wgPorts.map(String));
    table.set('underlay_tcp', 'inet_service', tcp.map(String));
    if (underlay.interfaces) table.set('underlay_ifs', 'ifname', underlay.interfaces.map((i) => `"${i}"`));
  }
  const tenantChains: string[] = [];
  for (const t of tenants) renderTenant(t, table, tenantChains);
  for (const reason of DROP_REASONS) table.push(...dropChain(reason));
  table.push(...tenantChains, ...renderForward(), ...renderInput(underlay));

  const hash = sha(table.structure.join('\n'));
  const elementSets = table.elementSets;
  let text: string | undefined;
  return {
    hash,
    elementSets,
    get text(): string {
      if (text === undefined) {
        const body = table.full.map((l) => {
          if (typeof l === 'string') return l;
          const els = elementSets[l.set]?.elements ?? [];
          return els.length > 0 ? elementsLine(els) : null;
        });
        text = [`table ${TABLE_FAMILY} ${TABLE_NAME} {`, `\tcomment "netwall sha256=${hash}"`, ...body.filter((l) => l !== null), '}', ''].join('\n');
      }
      return text;
    },
  };
}

function intervalArgs(a: { elements: string[]; interval: boolean }): [string[], string[]] {
  return [a.elements, a.interval ? ['interval', 'auto-merge'] : []];
}

/** The hash a live table was rendered from (its comment), or null. */
export function tableHash(listing: string): string | null {
  return /comment "netwall sha256=([0-9a-f]{64})"/.exec(listing)?.[1] ?? null;
}

// ---------------------------------------------------------------- observe

type Counters = Record<string, { packets: number; bytes: number }>;

/** Our table as the kernel lists it (`nft list table inet netwall`), split the way the plan compares it. */
export interface LiveTable {
  /** The structure hash in the table's comment, or null. */
  hash: string | null;
  /**
   * The listing without counter values and without the members of the
   * workload-dependent hash sets: what must stay exactly as we left it.
   * (Interval sets keep their members here: the kernel may merge them.)
   */
  structure: string;
  /** Members of the workload-dependent hash sets (`veth_addr`, non-interval `g_*`), as listed. */
  elements: Record<string, string[]>;
  /** The drop counters' values (`d_<reason>` → packets, bytes). */
  counters: Counters;
}

export interface ObservedFirewall {
  /**
   * The live table; null when it does not exist; undefined when it was not
   * listed this tick (the element fast path relies on the memory and on the
   * delta's own preconditions, see applyFirewallElements).
   */
  table: LiveTable | null | undefined;
}

/** Sets whose members follow the workloads (never part of the structure hash). */
export const isElementSetName = (name: string): boolean => name === 'veth_addr' || name.startsWith('g_');

/**
 * Split a kernel listing (nft 1.0 text format) into structure, elements and
 * counters. A counter object lists as `counter d_x {\n\t\tpackets N bytes M\n\t}`;
 * a set's members as `\t\telements = { a,\n\t\t\t     b }` after its type and flags.
 */
export function parseListing(listing: string): LiveTable {
  const lines = listing.split('\n');
  const out: string[] = [];
  const elements: Record<string, string[]> = {};
  const counters: Counters = {};
  let block: { kind: string; name: string; interval: boolean } | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.charCodeAt(1) !== 9) {
      // Depth one: an object opens or closes (cheap test first; most lines are rules, depth two).
      const open = line.endsWith(' {') ? /^\t(counter|set|map|chain|quota|limit) (\S+) \{$/.exec(line) : null;
      if (open) block = { kind: open[1] as string, name: open[2] as string, interval: false };
      else if (line === '\t}') block = null;
    } else if (block?.kind === 'counter') {
      const c = /^\t\tpackets (\d+) bytes (\d+)$/.exec(line);
      if (c && block.name.startsWith('d_')) {
        counters[block.name.slice(2)] = { packets: Number(c[1]), bytes: Number(c[2]) };
        continue;
      }
    } else if (block?.kind === 'set') {
      if (line.startsWith('\t\tflags ') && /\binterval\b/.test(line)) block.interval = true;
      if (line.startsWith('\t\telements = { ') && isElementSetName(block.name) && !block.interval) {
        const parts = [line.slice('\t\telements = { '.length)];
        while (!(parts[parts.length - 1] as string).endsWith(' }') && i + 1 < lines.length) parts.push(lines[++i] as string);
        const members = parts.join(',').slice(0, -2).split(',');
        const list: string[] = [];
        for (const m of members) {
          const e = m.trim();
          if (e !== '') list.push(e);
        }
        elements[block.name] = list;
        continue;
      }
    }
    out.push(line);
  }
  const structure = out.join('\n');
  return { hash: tableHash(structure), structure, elements, counters };
}

/** List the table (with counter values: a replace carries them over without a second dump). */
export async function observeFirewall(runner: Runner): Promise<ObservedFirewall> {
  const res = await runner.run(['nft', 'list', 'table', TABLE_FAMILY, TABLE_NAME], { allowFailure: true });
  return { table: res.exitCode === 0 ? parseListing(res.stdout) : null };
}

// ---------------------------------------------------------------- plan

/** What we know about the table since our last apply (persisted by the agent as JSON). */
export interface FirewallMemory {
  version: 2;
  /** Structure hash of the table we applied. */
  hash: string;
  /** LiveTable.structure as listed after (or verified since) our last replace. */
  listing: string;
  /** The members we last applied to each element set (sorted canonical texts). */
  elements: Record<string, readonly string[]>;
}

/** A memory usable for planning; older files (no version, no elements) are not: unverified, replace once. */
export function validMemory(memory: unknown): memory is FirewallMemory {
  const m = memory as Partial<FirewallMemory> | null;
  return !!m && m.version === 2 && typeof m.hash === 'string' && typeof m.listing === 'string' && typeof m.elements === 'object' && m.elements !== null;
}

export interface ElementDelta {
  set: string;
  add: string[];
  delete: string[];
}

export type FirewallChange =
  | {
      kind: 'firewall-replace';
      op: 'update';
      /** missing | changed (new structure) | drift (edited by hand) | unverified (no usable record of our last apply). */
      reason: 'missing' | 'changed' | 'drift' | 'unverified';
      /** The live hash and counters (carried into the new table), when the table was listed. */
      old: { hash: string | null; counters?: Counters } | null;
      new: RenderedFirewall;
    }
  | {
      kind: 'firewall-elements';
      op: 'update';
      reason: 'changed';
      old: { hash: string };
      new: RenderedFirewall;
      /** Per set, the members to add and to delete (one atomic transaction for all). */
      sets: ElementDelta[];
    };

/** Members to add and delete per set, to go from `before` to the desired sets; null when a delta cannot do it. */
export function elementDeltas(desired: RenderedFirewall, before: Record<string, readonly string[]>): ElementDelta[] | null {
  const out: ElementDelta[] = [];
  const names = Object.keys(desired.elementSets);
  if (Object.keys(before).length !== names.length) return null;
  for (const name of names) {
    const want = desired.elementSets[name] as ElementSet;
    const had = before[name];
    if (!had) return null;
    if (sameMembers(want.elements, had)) continue;
    if (want.interval) return null;
    const wantSet = new Set(want.elements);
    const hadSet = new Set(had);
    out.push({ set: name, add: want.elements.filter((e) => !hadSet.has(e)), delete: had.filter((e) => !wantSet.has(e)) });
  }
  return out;
}

function sameMembers(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++; // both sorted: the usual case ends here
  if (i === a.length) return true;
  const set = new Set(a);
  return b.every((e) => set.has(e));
}

/** The listed hash-set members equal what we applied (any order)? Interval sets are compared in the structure. */
function sameLiveElements(live: LiveTable, memory: FirewallMemory, desired: RenderedFirewall): boolean {
  for (const [name, applied] of Object.entries(memory.elements)) {
    if (desired.elementSets[name]?.interval) continue;
    if (!sameMembers(applied, live.elements[name] ?? [])) return false;
  }
  return Object.keys(live.elements).every((name) => name in memory.elements);
}

/**
 * diff(desired, observed): a whole-table replace, an element delta, or nothing.
 * Replace when the table is missing, its structure hash is not the desired
 * one, we hold no usable memory of our last apply, or it drifted (structure
 * listing or set members differ from what we left); otherwise a delta when
 * only the members of workload sets changed since our last apply.
 */
export function planFirewall(desired: RenderedFirewall, observed: ObservedFirewall, memory: FirewallMemory | null): FirewallChange[] {
  const replace = (reason: Extract<FirewallChange, { kind: 'firewall-replace' }>['reason'], old: { hash: string | null; counters?: Counters } | null): FirewallChange[] => [
    { kind: 'firewall-replace', op: 'update', reason, old, new: desired },
  ];
  const live = observed.table;
  if (live === null) return replace('missing', null);
  const mem = validMemory(memory) ? memory : null;
  if (live === undefined) {
    // Not listed this tick: only the memory speaks (the caller lists whenever a replace may be due).
    if (!mem) return replace('unverified', null);
    if (mem.hash !== desired.hash) return replace('changed', { hash: mem.hash });
  } else {
    const old = { hash: live.hash, counters: live.counters };
    if (live.hash !== desired.hash) return replace('changed', old);
    if (!mem || mem.hash !== desired.hash) return replace('unverified', old);
    if (live.structure !== mem.listing || !sameLiveElements(live, mem, desired)) return replace('drift', old);
  }
  const deltas = elementDeltas(desired, mem.elements);
  if (deltas === null) return replace('changed', { hash: mem.hash, ...(live ? { counters: live.counters } : {}) });
  if (deltas.length === 0) return [];
  return [{ kind: 'firewall-elements', op: 'update', reason: 'changed', old: { hash: mem.hash }, new: desired, sets: deltas }];
}

// ---------------------------------------------------------------- counters and apply

/** Parse `nft -j list counters table inet netwall` into `{reason: {packets, bytes}}`. */
export function parseCounters(json: string): Counters {
  const out: Counters = {};
  const doc = JSON.parse(json || '{}') as { nftables?: { counter?: { name?: string; packets?: number; bytes?: number } }[] };
  for (const item of doc.nftables ?? []) {
    const c = item.counter;
    if (!c?.name?.startsWith('d_')) continue;
    out[c.name.slice(2)] = { packets: c.packets ?? 0, bytes: c.bytes ?? 0 };
  }
  return out;
}

async function readCounters(runner: Runner): Promise<Counters> {
  const res = await runner.run(['nft', '-j', 'list', 'counters', 'table', TABLE_FAMILY, TABLE_NAME], { allowFailure: true });
  return res.exitCode === 0 ? parseCounters(res.stdout) : {};
}

/** Dropped packets per reason since the table was first created (for status reports). */
export async function readDropCounters(runner: Runner): Promise<Record<string, number>> {
  return packetsOf(await readCounters(runner));
}

export const packetsOf = (counters: Counters): Record<string, number> => Object.fromEntries(Object.entries(counters).map(([k, v]) => [k, v.packets]));

/** Carry the live counter values into the new table, so a replace does not reset the drop statistics. */
export function withCounterValues(text: string, counters: Counters): string {
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

/**
 * The element delta as one transaction. `create element` fails when the
 * member is already there and `delete element` when it is not, so the whole
 * transaction commits only if the kernel's sets are, for every member it
 * touches, what our memory says: the cheap check that stands in for listing
 * the table on this path.
 */
export function elementsTransaction(sets: readonly ElementDelta[]): string {
  const lines: string[] = [];
  for (const d of sets) {
    if (d.delete.length > 0) lines.push(`delete element ${TABLE_FAMILY} ${TABLE_NAME} ${d.set} { ${d.delete.join(', ')} }`);
    if (d.add.length > 0) lines.push(`create element ${TABLE_FAMILY} ${TABLE_NAME} ${d.set} { ${d.add.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

const elementsOf = (r: RenderedFirewall): Record<string, readonly string[]> =>
  Object.fromEntries(Object.entries(r.elementSets).map(([name, s]) => [name, s.elements]));

const summary = (els: readonly string[]): string => (els.length <= 3 ? els.join(', ') : `${els.slice(0, 3).join(', ')}, … (${els.length} in all)`);

/**
 * Apply a change and return the new memory. A replace lists the table once
 * afterwards (the kernel's own rendering is what drift is measured against);
 * an element delta lists nothing. If the delta is refused (the sets were not
 * as remembered: drift, or another writer), the table is replaced instead.
 */
export async function applyFirewallChange(change: FirewallChange, runner: Runner, log: ChangeLogger, memory: FirewallMemory | null = null): Promise<FirewallMemory> {
  if (change.kind === 'firewall-elements') {
    if (!validMemory(memory)) throw new Error('firewall-elements needs the memory it was planned from');
    return applyFirewallElements(change, runner, log, memory);
  }
  const counters = change.old?.counters ?? (change.old ? await readCounters(runner) : {});
  const script = replaceTransaction(withCounterValues(change.new.text, counters));
  log(`[#] nft -f - # replace table ${TABLE_FAMILY} ${TABLE_NAME} (${change.reason}, sha256 ${change.new.hash.slice(0, 12)})`);
  await runner.run(['nft', '-f', '-'], { input: script });
  const after = await observeFirewall(runner);
  if (!after.table) throw new Error(`nft: table ${TABLE_FAMILY} ${TABLE_NAME} missing right after apply`);
  return { version: 2, hash: change.new.hash, listing: after.table.structure, elements: elementsOf(change.new) };
}

async function applyFirewallElements(
  change: Extract<FirewallChange, { kind: 'firewall-elements' }>,
  runner: Runner,
  log: ChangeLogger,
  memory: FirewallMemory,
): Promise<FirewallMemory> {
  for (const d of change.sets) {
    if (d.delete.length > 0) log(`[#] nft delete element ${TABLE_FAMILY} ${TABLE_NAME} ${d.set} { ${summary(d.delete)} }`);
    if (d.add.length > 0) log(`[#] nft create element ${TABLE_FAMILY} ${TABLE_NAME} ${d.set} { ${summary(d.add)} }`);
  }
  const res = await runner.run(['nft', '-f', '-'], { input: elementsTransaction(change.sets), allowFailure: true });
  if (res.exitCode === 0) return { ...memory, elements: elementsOf(change.new) };
  const why = res.stderr.trim().split('\n')[0] ?? `exit ${res.exitCode}`;
  log(`[#] # element delta refused (${why}): replacing the table`);
  return applyFirewallChange({ kind: 'firewall-replace', op: 'update', reason: 'drift', old: { hash: change.old.hash }, new: change.new }, runner, log);
}
