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
  return mergeRanges(ranges);
}

/** Every port (1-65535): what a rule without ports allows. */
export const ALL_PORTS: readonly PortRange[] = Object.freeze([Object.freeze({ from: 1, to: 65535 })]);

/** Ranges sorted, with overlapping and adjacent ones joined (new objects; the input is not touched). */
export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const merged: PortRange[] = [];
  for (const r of [...ranges].sort((a, b) => a.from - b.from)) {
    const last = merged[merged.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else merged.push({ from: r.from, to: r.to });
  }
  return merged;
}

/** The ports in `a` that are not in `b` (both merged, as mergeRanges returns them). */
export function subtractRanges(a: readonly PortRange[], b: readonly PortRange[]): PortRange[] {
  const out: PortRange[] = [];
  let j = 0;
  for (const r of a) {
    let from = r.from;
    while (j < b.length && b[j]!.to < from) j++;
    for (let k = j; k < b.length && b[k]!.from <= r.to && from <= r.to; k++) {
      const cut = b[k]!;
      if (cut.from > from) out.push({ from, to: cut.from - 1 });
      from = Math.max(from, cut.to + 1);
    }
    if (from <= r.to) out.push({ from, to: r.to });
  }
  return out;
}

/** Does the (merged) range list hold `port`? */
export function rangesInclude(ranges: readonly PortRange[], port: number): boolean {
  return ranges.some((r) => r.from <= port && port <= r.to);
}

export function formatPorts(ranges: readonly PortRange[]): string {
  if (ranges.length === 0) return 'all';
  return ranges.map((r) => (r.from === r.to ? String(r.from) : `${r.from}-${r.to}`)).join(',');
}
