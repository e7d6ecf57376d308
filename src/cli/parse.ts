/**
 * Pure parsers for what people type on the command line: labels and selectors
 * (`app=web`), port specs (`tcp:80`, `tcp:8000-8080`, `udp:53,5353`, `icmp`),
 * egress destinations (`tcp:203.0.113.10/32:80`) and whole numbers. Each one
 * throws a UsageError naming the flag and the bad text.
 */
import { LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, type Labels } from '../shared/names.js';

/** The command line itself is wrong (exit code 2). */
export class UsageError extends Error {
  /** The help to point at, e.g. `netwall tenant --help`; default: the command's own. */
  constructor(
    message: string,
    readonly see?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Something failed locally or on the way to the coordinator (exit code 1). */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

export type PortProtocol = 'tcp' | 'udp' | 'icmp';
/** A single port as a number, a range as `"from-to"` — the API's wire form. */
export type PortItem = number | string;

export interface AllowRule {
  protocol: PortProtocol;
  ports?: PortItem[];
}

export interface EgressDestination {
  cidr: string;
  protocol: PortProtocol;
  ports?: PortItem[];
}

const LABEL_KEY_RE = new RegExp(LABEL_KEY_PATTERN);
const LABEL_VALUE_RE = new RegExp(LABEL_VALUE_PATTERN);
const PROTOCOLS: readonly PortProtocol[] = ['tcp', 'udp', 'icmp'];

/** Parse one `key=value` label. */
export function parseLabel(text: string, flag = '--label'): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`${flag} '${text}': expected key=value`);
  const key = text.slice(0, eq);
  const value = text.slice(eq + 1);
  if (!LABEL_KEY_RE.test(key)) throw new UsageError(`${flag} '${text}': bad label key '${key}'`);
  if (!LABEL_VALUE_RE.test(value)) throw new UsageError(`${flag} '${text}': bad label value '${value}'`);
  return [key, value];
}

/**
 * Merge repeated `--label k=v` flags (each may also hold a comma-separated list,
 * `app=web,tier=front`) into one label set. `*` alone means the empty selector
 * (matches every workload of the tenant), mirroring `selectorKey`.
 */
export function parseLabels(items: readonly string[], flag = '--label'): Labels {
  const labels: Labels = {};
  for (const item of items) {
    if (item.trim() === '*') continue;
    for (const part of item.split(',')) {
      const [k, v] = parseLabel(part.trim(), flag);
      if (k in labels && labels[k] !== v) {
        throw new UsageError(`${flag}: label '${k}' given twice ('${labels[k]}' and '${v}')`);
      }
      labels[k] = v;
    }
  }
  return labels;
}

/** Parse a port number 1..65535. */
export function parsePort(text: string, flag = '--port'): number {
  if (!/^\d{1,5}$/.test(text)) throw new UsageError(`${flag}: '${text}' is not a port number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new UsageError(`${flag}: port ${n} is out of range 1-65535`);
  return n;
}

/** Parse `80`, `8000-8080` or `80,443,8000-8080` into the API's port list. */
export function parsePortList(text: string, flag: string): PortItem[] {
  const out: PortItem[] = [];
  for (const part of text.split(',')) {
    const m = /^(\d+)-(\d+)$/.exec(part);
    if (m) {
      const from = parsePort(m[1]!, flag);
      const to = parsePort(m[2]!, flag);
      if (from > to) throw new UsageError(`${flag}: port range '${part}' runs backwards`);
      out.push(from === to ? from : `${from}-${to}`);
    } else {
      out.push(parsePort(part, flag));
    }
  }
  return out;
}

function parseProtocol(text: string, flag: string, whole: string): PortProtocol {
  const p = text.toLowerCase();
  if (!(PROTOCOLS as readonly string[]).includes(p)) {
    throw new UsageError(`${flag} '${whole}': unknown protocol '${text}' (expected tcp, udp or icmp)`);
  }
  return p as PortProtocol;
}

/** Parse one `--allow` spec: `tcp`, `tcp:80`, `tcp:80,443`, `tcp:8000-8080`, `udp:53`, `icmp`. */
export function parsePortSpec(text: string, flag = '--allow'): AllowRule {
  const colon = text.indexOf(':');
  const protocol = parseProtocol(colon < 0 ? text : text.slice(0, colon), flag, text);
  if (colon < 0) return { protocol };
  const ports = text.slice(colon + 1);
  if (protocol === 'icmp') throw new UsageError(`${flag} '${text}': icmp has no ports`);
  if (ports === '') throw new UsageError(`${flag} '${text}': missing ports after ':'`);
  return { protocol, ports: parsePortList(ports, `${flag} '${text}'`) };
}

function portKey(p: PortItem): number {
  return typeof p === 'number' ? p : Number(p.split('-')[0]);
}

/**
 * Parse repeated `--allow` specs and merge them by protocol, in order of first
 * appearance: `tcp:5432 tcp:8000-8080 icmp` → `[{tcp, [5432, "8000-8080"]}, {icmp}]`.
 * A protocol given once without ports means all its ports.
 */
export function parseAllowRules(items: readonly string[], flag = '--allow'): AllowRule[] {
  const byProto = new Map<PortProtocol, PortItem[] | null>();
  for (const item of items) {
    const rule = parsePortSpec(item, flag);
    const prev = byProto.get(rule.protocol);
    if (rule.ports === undefined || prev === null) {
      byProto.set(rule.protocol, null);
    } else {
      const merged = prev ?? [];
      for (const p of rule.ports) if (!merged.includes(p)) merged.push(p);
      byProto.set(rule.protocol, merged);
    }
  }
  return [...byProto].map(([protocol, ports]) =>
    ports === null ? { protocol } : { protocol, ports: [...ports].sort((a, b) => portKey(a) - portKey(b)) },
  );
}

const IPV4_RE = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * Parse one egress destination `PROTO:CIDR[:PORTS]`, e.g. `tcp:203.0.113.10/32:80`,
 * `udp:192.0.2.53/32:53`, `icmp:0.0.0.0/0`, `tcp:2001:db8::/32:443`. A bare IPv4
 * address is taken as its /32.
 */
export function parseEgressDestination(text: string, flag = '--allow'): EgressDestination {
  const colon = text.indexOf(':');
  if (colon < 0) throw new UsageError(`${flag} '${text}': expected PROTO:CIDR[:PORTS], e.g. tcp:203.0.113.10/32:443`);
  const protocol = parseProtocol(text.slice(0, colon), flag, text);
  const rest = text.slice(colon + 1);
  let cidr: string;
  let ports: string | undefined;
  const slash = /^([^/]+\/\d{1,3})(?::(.*))?$/.exec(rest);
  if (slash) {
    cidr = slash[1]!;
    ports = slash[2];
  } else {
    const v4 = /^([\d.]+)(?::(.*))?$/.exec(rest);
    if (!v4 || !IPV4_RE.test(v4[1]!)) {
      throw new UsageError(`${flag} '${text}': expected a CIDR like 203.0.113.0/24 after '${protocol}:'`);
    }
    cidr = `${v4[1]}/32`;
    ports = v4[2];
  }
  if (ports === undefined) return { cidr, protocol };
  if (protocol === 'icmp') throw new UsageError(`${flag} '${text}': icmp has no ports`);
  if (ports === '') throw new UsageError(`${flag} '${text}': missing ports after ':'`);
  return { cidr, protocol, ports: parsePortList(ports, `${flag} '${text}'`) };
}

/** Parse a whole number within bounds, for flags like `--ttl` and `--limit`. */
export function parseInteger(text: string, flag: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: expected a whole number, got '${text}'`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag}: ${n} is out of range ${min}-${max}`);
  return n;
}

/** Parse a duration for `--ttl`: plain seconds, or with a unit: `90s`, `15m`, `12h`, `30d`. */
export function parseDuration(text: string, flag = '--ttl'): number {
  const m = /^(\d+)([smhd]?)$/.exec(text);
  if (!m) throw new UsageError(`${flag}: expected seconds or a duration like 15m, 12h, 30d; got '${text}'`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  const n = Number(m[1]) * unit;
  if (n < 1 || !Number.isSafeInteger(n)) throw new UsageError(`${flag}: '${text}' is out of range`);
  return n;
}
