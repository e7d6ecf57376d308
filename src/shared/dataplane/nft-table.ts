/**
 * The life of one nftables table that netwall owns (the node's `inet netwall`,
 * the gateway's `inet netwall_gw`): built as text by a pure renderer (TableText
 * here, the shape in the program's own renderer), then kept equal to it with
 * one atomic `nft -f -` transaction per change. Nothing outside the table is
 * ever touched. Two ways to change it:
 * - replace: the whole table (counters carried over), when its structure
 *   (tables, chains, rules, set declarations; hashed into the table comment)
 *   changes, when it is missing, or when it drifted;
 * - element delta: `create element` / `delete element` lines on the
 *   workload-dependent sets (`veth_addr`, `tunnel_entry`, `g_*`) when only their
 *   members changed since our last apply.
 * Every drop goes through `drop_<reason>`: a named counter `d_<reason>` and a
 * rate-limited log.
 */
import { createHash } from 'node:crypto';
import type { ChangeLogger, Runner } from '../runner.js';

/** Which table: family and name. */
export interface TableRef {
  family: 'inet' | 'ip';
  name: string;
}

const refText = (t: TableRef): string => `${t.family} ${t.name}`;

/** A workload-dependent set: its members change as workloads come and go, the declaration does not. */
export interface ElementSet {
  /** Interval sets (a group holding a CIDR) are never patched element by element: a change replaces the table. */
  interval: boolean;
  /** Canonical element texts, sorted (`10.1.1.10`, `"nwc…" . 10.1.1.10`). */
  elements: readonly string[];
}

export interface RenderedFirewall {
  readonly table: TableRef;
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

export const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** A string literal nft accepts (rule comments): no quotes, backslashes or newlines, at most 100 characters. */
export const quote = (s: string): string => `"${s.replace(/["\\\n\r]/g, '_').slice(0, 100)}"`;

// ---------------------------------------------------------------- small renderers

/**
 * One rendered table under construction. Element lines of the
 * workload-dependent sets go to the full text only; everything else is the
 * structure, whose hash names the table.
 */
export class TableText {
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

/** The chain every drop of one reason goes through: its counter, a rate-limited log line, the drop. */
export function dropChain(reason: string): string[] {
  return [
    `\tchain drop_${reason} {`,
    `\t\tcounter name "d_${reason}"`,
    `\t\tlimit rate 5/second log prefix "netwall drop ${reason}: "`,
    '\t\tdrop',
    '\t}',
  ];
}

/** The finished table: structure hash, element sets, and the full text (built on first use). */
export function finishTable(ref: TableRef, table: TableText): RenderedFirewall {
  const hash = sha(table.structure.join('\n'));
  const elementSets = table.elementSets;
  let text: string | undefined;
  return {
    table: ref,
    hash,
    elementSets,
    get text(): string {
      if (text === undefined) {
        const body = table.full.map((l) => {
          if (typeof l === 'string') return l;
          const els = elementSets[l.set]?.elements ?? [];
          return els.length > 0 ? elementsLine(els) : null;
        });
        text = [`table ${refText(ref)} {`, `\tcomment "netwall sha256=${hash}"`, ...body.filter((l) => l !== null), '}', ''].join('\n');
      }
      return text;
    },
  };
}

/** The hash a live table was rendered from (its comment), or null. */
export function tableHash(listing: string): string | null {
  return /comment "netwall sha256=([0-9a-f]{64})"/.exec(listing)?.[1] ?? null;
}

// ---------------------------------------------------------------- observe

export type Counters = Record<string, { packets: number; bytes: number }>;

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

/** Sets whose members follow the workloads (never part of the structure hash): `veth_addr`, `tunnel_entry`, the groups `g_*`. */
export const isElementSetName = (name: string): boolean => name === 'veth_addr' || name === 'tunnel_entry' || name.startsWith('g_');

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
export async function observeFirewall(runner: Runner, table: TableRef): Promise<ObservedFirewall> {
  const res = await runner.run(['nft', 'list', 'table', table.family, table.name], { allowFailure: true });
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
  if (a === b) return true; // a cached tenant's set, unchanged since we applied it
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

async function readCounters(runner: Runner, table: TableRef): Promise<Counters> {
  const res = await runner.run(['nft', '-j', 'list', 'counters', 'table', table.family, table.name], { allowFailure: true });
  return res.exitCode === 0 ? parseCounters(res.stdout) : {};
}

/** Dropped packets per reason since the table was first created (for status reports). */
export async function readDropCounters(runner: Runner, table: TableRef): Promise<Record<string, number>> {
  return packetsOf(await readCounters(runner, table));
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
export function replaceTransaction(text: string, table: TableRef): string {
  return `table ${refText(table)} {}\ndelete table ${refText(table)}\n${text}`;
}

/**
 * The element delta as one transaction. `create element` fails when the
 * member is already there and `delete element` when it is not, so the whole
 * transaction commits only if the kernel's sets are, for every member it
 * touches, what our memory says: the cheap check that stands in for listing
 * the table on this path.
 */
export function elementsTransaction(sets: readonly ElementDelta[], table: TableRef): string {
  const lines: string[] = [];
  for (const d of sets) {
    if (d.delete.length > 0) lines.push(`delete element ${refText(table)} ${d.set} { ${d.delete.join(', ')} }`);
    if (d.add.length > 0) lines.push(`create element ${refText(table)} ${d.set} { ${d.add.join(', ')} }`);
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
  const table = change.new.table;
  const counters = change.old?.counters ?? (change.old ? await readCounters(runner, table) : {});
  const script = replaceTransaction(withCounterValues(change.new.text, counters), table);
  log(`[#] nft -f - # replace table ${refText(table)} (${change.reason}, sha256 ${change.new.hash.slice(0, 12)})`);
  await runner.run(['nft', '-f', '-'], { input: script });
  const after = await observeFirewall(runner, table);
  if (!after.table) throw new Error(`nft: table ${refText(table)} missing right after apply`);
  return { version: 2, hash: change.new.hash, listing: after.table.structure, elements: elementsOf(change.new) };
}

async function applyFirewallElements(
  change: Extract<FirewallChange, { kind: 'firewall-elements' }>,
  runner: Runner,
  log: ChangeLogger,
  memory: FirewallMemory,
): Promise<FirewallMemory> {
  const table = change.new.table;
  for (const d of change.sets) {
    if (d.delete.length > 0) log(`[#] nft delete element ${refText(table)} ${d.set} { ${summary(d.delete)} }`);
    if (d.add.length > 0) log(`[#] nft create element ${refText(table)} ${d.set} { ${summary(d.add)} }`);
  }
  const res = await runner.run(['nft', '-f', '-'], { input: elementsTransaction(change.sets, table), allowFailure: true });
  if (res.exitCode === 0) return { ...memory, elements: elementsOf(change.new) };
  const why = res.stderr.trim().split('\n')[0] ?? `exit ${res.exitCode}`;
  log(`[#] # element delta refused (${why}): replacing the table`);
  return applyFirewallChange({ kind: 'firewall-replace', op: 'update', reason: 'drift', old: { hash: change.old.hash }, new: change.new }, runner, log);
}