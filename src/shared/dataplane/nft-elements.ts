/**
 * Pure helpers that turn addresses, port ranges and allow lists into nftables
 * element texts: sorted, deduplicated, and in the canonical form the kernel
 * lists them in (so a listing compares equal to what we rendered).
 */
import type { AllowRule, EgressAllow, PortRange } from '../desired.js';
import { cidrRange, intToIpv4, normalizeCidr, stripPrefix } from './routes.js';
import { sha } from './nft-table.js';

/** Tenant names are DNS labels; `-` is the only character nft identifiers cannot hold. */
export function tenantIdent(tenant: string): string {
  const clean = tenant.toLowerCase().replace(/[^a-z0-9]/g, '_');
  return clean === tenant.replace(/-/g, '_') ? clean : `${clean}_${sha(tenant).slice(0, 6)}`;
}

/** `a.b.c.d` for a /32, the CIDR otherwise. */
export function addrElement(cidr: string): string {
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
export function addressElements(cidrs: readonly string[]): { elements: string[]; interval: boolean } {
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

export const portText = (p: PortRange): string => (p.from === p.to ? String(p.from) : `${p.from}-${p.to}`);

/**
 * The protocol/port matches of one allow rule; the rule is rendered once per
 * match. Single ports share one anonymous set (`tcp dport { 80, 443 }`); each
 * port range gets its own match (`tcp dport 8000-8080`). Never an anonymous
 * *interval* set: nft fetches the elements of every interval set in the table
 * before any `add element`, which cost ~40 ms per transaction with 500 of
 * them (measured, nft 1.0.6), so ranges stay plain range expressions.
 */
export function protoMatches(protocol: AllowRule['protocol'], ports: readonly PortRange[]): string[] {
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

/** `[elements, flags]` for TableText.set: interval sets (a CIDR among the members) need the interval flags. */
export function intervalArgs(a: { elements: string[]; interval: boolean }): [string[], string[]] {
  return [a.elements, a.interval ? ['interval', 'auto-merge'] : []];
}
