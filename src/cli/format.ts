/**
 * Pure formatters for human output: aligned tables, `Key: value` blocks, and
 * the text forms of labels, port rules, egress destinations and times. Nothing
 * here does I/O; everything returns a string.
 */
import type { Labels } from '../shared/names.js';

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
}

/**
 * One cell's text: `-` for null/undefined/empty, arrays joined with `, `, and
 * control characters (newlines, terminal escapes) replaced so a value coming
 * from the server can neither break the layout nor drive the terminal.
 */
export function cell(value: unknown): string {
  if (value === null || value === undefined) return '-';
  let s: string;
  if (Array.isArray(value)) s = value.map((v) => cell(v)).join(', ');
  else if (typeof value === 'object') s = JSON.stringify(value);
  else s = String(value);
  s = [...s.replace(/[\r\n\t]+/g, ' ')].map((ch) => (isControl(ch) ? '?' : ch)).join('');
  return s === '' ? '-' : s;
}

function isControl(ch: string): boolean {
  const c = ch.codePointAt(0)!;
  return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

/** Display width, counting code points (good enough for the ASCII we print). */
function width(s: string): number {
  return [...s].length;
}

/**
 * Render rows as a table: an upper-case header line, columns left-aligned and
 * separated by three spaces, no trailing blanks. An empty list renders the
 * header alone so scripts and people see the same shape.
 */
export function renderTable<T>(columns: readonly Column<T>[], rows: readonly T[], indent = ''): string {
  const grid = [columns.map((c) => c.header.toUpperCase()), ...rows.map((r) => columns.map((c) => cell(c.value(r))))];
  const widths = columns.map((_, i) => Math.max(...grid.map((line) => width(line[i]!))));
  return grid
    .map((line) => indent + line.map((text, i) => (i === line.length - 1 ? text : text + ' '.repeat(widths[i]! - width(text)))).join('   ').trimEnd())
    .join('\n');
}

/** Pre-rendered text (e.g. a nested table) printed under its key as is. */
export class Block {
  constructor(readonly text: string) {}
}

/** Render `Key: value` lines with the values aligned; a Block goes on the lines below its key. */
export function renderFields(fields: readonly (readonly [string, unknown])[]): string {
  const w = Math.max(0, ...fields.map(([k]) => width(k))) + 3;
  return fields
    .map(([k, v]) => (v instanceof Block ? `${k}:\n${v.text}` : `${`${k}:`.padEnd(w)}${cell(v)}`.trimEnd()))
    .join('\n');
}

/** `app=web,tier=front`; `*` for the empty selector (all workloads). Keys sorted. */
export function formatLabels(labels: Labels | null | undefined): string {
  if (!labels) return '-';
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '*';
  return keys.map((k) => `${k}=${labels[k]}`).join(',');
}

/** `{protocol: 'tcp', ports: [5432, '8000-8080']}` → `tcp:5432,8000-8080`; no ports → `tcp`. */
export function formatPortRule(rule: { protocol?: unknown; ports?: unknown }): string {
  const proto = String(rule.protocol ?? '?');
  const ports = Array.isArray(rule.ports) ? rule.ports.map(formatPortItem) : [];
  return ports.length ? `${proto}:${ports.join(',')}` : proto;
}

function formatPortItem(p: unknown): string {
  if (p && typeof p === 'object' && 'from' in p && 'to' in p) {
    const r = p as { from: unknown; to: unknown };
    return r.from === r.to ? String(r.from) : `${r.from}-${r.to}`;
  }
  return String(p);
}

/**
 * One allowed flow's protocol and port ranges (`{from, to}` objects, as the
 * reachability answers carry them) in the `--allow` form: `tcp:5432,8000-8080`;
 * every port (1-65535) is the bare protocol, like `--allow tcp`.
 */
export function formatFlowPorts(flow: { protocol?: unknown; ports?: unknown }): string {
  const ports = Array.isArray(flow.ports) ? (flow.ports as { from?: unknown; to?: unknown }[]) : [];
  const every = ports.length === 1 && Number(ports[0]!.from) <= 1 && Number(ports[0]!.to) >= 65535;
  return every ? String(flow.protocol ?? '?') : formatPortRule(flow);
}

/** A policy's allow list as `tcp:5432,8000-8080 icmp`. */
export function formatAllowRules(rules: unknown): string {
  if (!Array.isArray(rules) || rules.length === 0) return '-';
  return rules.map((r) => formatPortRule((r ?? {}) as { protocol?: unknown; ports?: unknown })).join(' ');
}

/** An egress destination back in the form `--allow` takes: `tcp:203.0.113.10/32:80`. */
export function formatDestination(d: { cidr?: unknown; protocol?: unknown; ports?: unknown }): string {
  const ports = Array.isArray(d.ports) ? d.ports.map(formatPortItem) : [];
  const base = `${String(d.protocol ?? '?')}:${String(d.cidr ?? '?')}`;
  return ports.length ? `${base}:${ports.join(',')}` : base;
}

/**
 * A timestamp (ISO text or epoch milliseconds) as `YYYY-MM-DD HH:MM:SSZ`, UTC;
 * anything unparseable is shown as given.
 */
export function formatTime(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  const d = typeof value === 'number' ? new Date(value) : typeof value === 'string' ? new Date(value) : null;
  if (!d || Number.isNaN(d.getTime())) return cell(value);
  return d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

/** `{policy: 3, spoof: 1}` → `policy=3 spoof=1`. */
export function formatCounts(counts: unknown): string {
  if (!counts || typeof counts !== 'object') return '-';
  const entries = Object.entries(counts as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b));
  return entries.length ? entries.map(([k, v]) => `${k}=${cell(v)}`).join(' ') : '-';
}

/** A free-form object (e.g. an audit entry's detail) as `key=value` pairs; other values as they are. */
export function formatDetail(detail: unknown): string {
  if (!detail || typeof detail !== 'object' || Array.isArray(detail)) return cell(detail);
  const entries = Object.entries(detail as Record<string, unknown>);
  if (entries.length === 0) return '-';
  return entries.map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
}
