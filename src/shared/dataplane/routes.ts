/**
 * Routes and policy rules for the tenant meshes.
 *
 * Main table: every peer's allowed IPs `dev <tenant iface>`, except egress
 * destinations. Those would otherwise pull the host's own traffic (or, for
 * 0.0.0.0/0, its default route) into the mesh; instead they live in a
 * per-tenant table reached only by `ip rule from <tenant slice>`, so only the
 * tenant's containers are routed to the egress gateway.
 *
 * Only routes on netwall's interfaces (`nw-*`) and rules at NETWALL_RULE_PRIORITY
 * are observed, so nothing else on the host is ever changed or removed.
 */
import type { DesiredState } from '../desired.js';
import { sha256hex } from '../crypto.js';
import { intToIp as intToIpv4 } from '../ipv4.js';
import type { ChangeLogger, Runner } from '../runner.js';
import { TENANT_IF_PREFIX } from '../desired.js';

// ---------------------------------------------------------------- IPv4 helpers (pure)

/** 32-bit unsigned value of a dotted quad, or null if it is not one. */
export function ipv4ToInt(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = value * 256 + n;
  }
  return value;
}

/** Number → dotted quad: the shared helper, under the name this module's callers use. */
export { intToIpv4 };

export interface Ipv4Range {
  /** First and last address, inclusive, as unsigned 32-bit numbers. */
  first: number;
  last: number;
}

/** `a.b.c.d/n` (or a bare address, meaning /32) as its inclusive range; throws on garbage. */
export function cidrRange(cidr: string): Ipv4Range {
  const [addr = '', lenText = '32'] = cidr === 'default' ? ['0.0.0.0', '0'] : cidr.split('/');
  const base = ipv4ToInt(addr);
  const len = Number(lenText);
  if (base === null || !Number.isInteger(len) || len < 0 || len > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const size = 2 ** (32 - len);
  const first = base - (base % size);
  return { first, last: first + size - 1 };
}

/** Canonical text of a CIDR: network address and explicit prefix (`10.1.2.3` → `10.1.2.3/32`). */
export function normalizeCidr(cidr: string): string {
  const { first, last } = cidrRange(cidr);
  return `${intToIpv4(first)}/${32 - Math.log2(last - first + 1)}`;
}

/** The address part of `a.b.c.d/n`. */
export function stripPrefix(cidr: string): string {
  return cidr.split('/')[0] ?? cidr;
}

/** The CIDRs not inside another one of the list (a /32 inside a routed /24 needs no route of its own). */
export function withoutCovered(cidrs: readonly string[]): string[] {
  const ranges = cidrs.map((c) => ({ c, r: cidrRange(c) }));
  return ranges
    .filter(({ c, r }) => !ranges.some((o) => o.c !== c && o.r.first <= r.first && r.last <= o.r.last))
    .map(({ c }) => c);
}

// ---------------------------------------------------------------- model

/** Every netwall policy rule sits at this priority: before `main` (32766), and how we recognise our own rules. */
export const NETWALL_RULE_PRIORITY = 10000;
/** Egress tables are numbered from here (well away from the 253–255 the kernel reserves and the small numbers admins use). */
export const EGRESS_TABLE_BASE = 1_000_000;
const EGRESS_TABLE_SPAN = 1 << 20;

export interface Route {
  /** Canonical CIDR. */
  dst: string;
  dev: string;
  /** `main` or a table number as text. */
  table: string;
}

export interface Rule {
  /** Canonical CIDR of the source (the tenant's slice). */
  from: string;
  table: string;
  priority: number;
}

export interface RoutingState {
  routes: Route[];
  rules: Rule[];
}

export type RouteChange =
  | { kind: 'route-set'; op: 'add' | 'update'; iface: string; old: Route | null; new: Route }
  | { kind: 'route-del'; op: 'delete'; iface: string; old: Route; new: null }
  | { kind: 'rule-add'; op: 'add'; old: null; new: Rule }
  | { kind: 'rule-del'; op: 'delete'; old: Rule; new: null };

const routeKey = (r: Route): string => `${r.table}|${r.dst}`;
const ruleKey = (r: Rule): string => `${r.priority}|${r.from}|${r.table}`;

/**
 * Egress table number per tenant: a hash of the name (stable across restarts
 * and documents), probed past collisions in name order so it stays unique.
 */
export function egressTables(tenants: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  const used = new Set<number>();
  for (const tenant of [...tenants].sort()) {
    let slot = parseInt(sha256hex(`egress-table/${tenant}`).slice(0, 8), 16) % EGRESS_TABLE_SPAN;
    while (used.has(slot)) slot = (slot + 1) % EGRESS_TABLE_SPAN;
    used.add(slot);
    out.set(tenant, EGRESS_TABLE_BASE + slot);
  }
  return out;
}

/** The routes and rules a document asks for (pure). */
export function desiredRouting(doc: DesiredState): RoutingState {
  const routes = new Map<string, Route>();
  const rules: Rule[] = [];
  const tables = egressTables(doc.tenants.map((t) => t.tenant));
  for (const t of doc.tenants) {
    const egressCidrs = new Set(t.egress.allow.map((a) => normalizeCidr(a.cidr)));
    // The member list includes this host; its own slice must never be routed into the mesh.
    for (const peer of t.peers.filter((p) => p.host !== doc.host)) {
      for (const ip of peer.allowedIps) {
        const dst = normalizeCidr(ip);
        if (egressCidrs.has(dst)) continue;
        const r: Route = { dst, dev: t.iface, table: 'main' };
        routes.set(routeKey(r), r);
      }
    }
    // A node steers its containers' egress into the mesh; the gateway is where it leaves, so it routes nothing of it back in.
    if (doc.kind === 'node' && t.egress.gateway && egressCidrs.size > 0) {
      const table = String(tables.get(t.tenant));
      for (const dst of withoutCovered([...egressCidrs])) {
        const r: Route = { dst, dev: t.iface, table };
        routes.set(routeKey(r), r);
      }
      rules.push({ from: normalizeCidr(t.slice), table, priority: NETWALL_RULE_PRIORITY });
    }
  }
  return { routes: [...routes.values()], rules };
}

// ---------------------------------------------------------------- observe

interface IpRouteJson {
  dst?: string;
  dev?: string;
  table?: string;
  type?: string;
  protocol?: string;
}

interface IpRuleJson {
  priority?: number;
  src?: string;
  srclen?: number;
  table?: string;
}

/** Parse `ip -j -4 route show table all`, keeping only unicast routes on netwall interfaces. */
export function parseRoutes(json: string): Route[] {
  const list = JSON.parse(json || '[]') as IpRouteJson[];
  const out: Route[] = [];
  for (const r of list) {
    if (!r.dev?.startsWith(TENANT_IF_PREFIX) || !r.dst) continue;
    if (r.type && r.type !== 'unicast') continue;
    if (r.table === 'local' || r.protocol === 'kernel') continue;
    out.push({ dst: normalizeCidr(r.dst), dev: r.dev, table: r.table ?? 'main' });
  }
  return out;
}

/** Parse `ip -j -4 rule show`, keeping only netwall's rules (by priority). */
export function parseRules(json: string): Rule[] {
  const list = JSON.parse(json || '[]') as IpRuleJson[];
  return list
    .filter((r) => r.priority === NETWALL_RULE_PRIORITY && r.src && r.table)
    .map((r) => ({ from: normalizeCidr(`${r.src}/${r.srclen ?? 32}`), table: String(r.table), priority: NETWALL_RULE_PRIORITY }));
}

export async function observeRouting(runner: Runner): Promise<RoutingState> {
  const routes = await runner.run(['ip', '-j', '-4', 'route', 'show', 'table', 'all']);
  const rules = await runner.run(['ip', '-j', '-4', 'rule', 'show']);
  return { routes: parseRoutes(routes.stdout), rules: parseRules(rules.stdout) };
}

// ---------------------------------------------------------------- plan

/**
 * diff(desired, observed). Routes on interfaces that are about to be deleted
 * are skipped (`goneIfaces`): the kernel drops them with the link.
 */
export function planRoutes(desired: RoutingState, observed: RoutingState, goneIfaces: ReadonlySet<string> = new Set()): RouteChange[] {
  const changes: RouteChange[] = [];
  const have = new Map(observed.routes.map((r) => [routeKey(r), r]));
  const want = new Map(desired.routes.map((r) => [routeKey(r), r]));
  for (const [key, r] of want) {
    const old = have.get(key) ?? null;
    if (old && old.dev === r.dev) continue;
    changes.push({ kind: 'route-set', op: old ? 'update' : 'add', iface: r.dev, old, new: r });
  }
  const haveRules = new Set(observed.rules.map(ruleKey));
  for (const r of desired.rules) if (!haveRules.has(ruleKey(r))) changes.push({ kind: 'rule-add', op: 'add', old: null, new: r });
  for (const [key, r] of have) {
    if (!want.has(key) && !goneIfaces.has(r.dev)) changes.push({ kind: 'route-del', op: 'delete', iface: r.dev, old: r, new: null });
  }
  const wantRules = new Set(desired.rules.map(ruleKey));
  for (const r of observed.rules) if (!wantRules.has(ruleKey(r))) changes.push({ kind: 'rule-del', op: 'delete', old: r, new: null });
  return changes;
}

// ---------------------------------------------------------------- apply

const tableArgs = (table: string): string[] => (table === 'main' ? [] : ['table', table]);

export function routeCommand(change: RouteChange): string[] {
  switch (change.kind) {
    case 'route-set':
      return ['ip', 'route', 'replace', change.new.dst, 'dev', change.new.dev, ...tableArgs(change.new.table)];
    case 'route-del':
      return ['ip', 'route', 'del', change.old.dst, 'dev', change.old.dev, ...tableArgs(change.old.table)];
    case 'rule-add':
      return ['ip', 'rule', 'add', 'from', change.new.from, 'lookup', change.new.table, 'priority', String(change.new.priority)];
    case 'rule-del':
      return ['ip', 'rule', 'del', 'from', change.old.from, 'lookup', change.old.table, 'priority', String(change.old.priority)];
  }
}

export async function applyRouteChange(change: RouteChange, runner: Runner, log: ChangeLogger): Promise<void> {
  const argv = routeCommand(change);
  log(`[#] ${argv.join(' ')}`);
  await runner.run(argv);
}
