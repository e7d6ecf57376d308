import type { PortRange } from './desired.js';
import { ValidationError } from './errors.js';

/**
 * Parse ports given as numbers or "from-to" strings into sorted, merged
 * ranges. `field` names the input in errors.
 */
export function parsePorts(ports: readonly (number | string)[] | undefined, field: string): PortRange[] {
  const ranges: PortRange[] = [];
  for (const [i, p] of (ports ?? []).entries()) {
    const where = `${field}[${i}]`;
    let from: number;
    let to: number;
    if (typeof p === 'number') {
      from = to = p;
    } else {
      const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(p);
      if (!m) throw new ValidationError(`${where}: "${p}" is not a port or a range like 8000-8080`, where);
      from = Number(m[1]);
      to = m[2] === undefined ? from : Number(m[2]);
    }
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to > 65535 || from > to) {
      throw new ValidationError(`${where}: ports must be 1-65535 with from <= to (got ${JSON.stringify(p)})`, where);
    }
    ranges.push({ from, to });
  }
  ranges.sort((a, b) => a.from - b.from);
  const merged: PortRange[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else merged.push({ ...r });
  }
  return merged;
}

export function formatPorts(ranges: readonly PortRange[]): string {
  if (ranges.length === 0) return 'all';
  return ranges.map((r) => (r.from === r.to ? String(r.from) : `${r.from}-${r.to}`)).join(',');
}
