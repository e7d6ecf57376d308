/**
 * A host's data plane loop body (node agent and gateway alike; each brings
 * its own firewall renderer as a FirewallSpec): observe the live kernel → plan (pure diffs)
 * → apply (adds and updates before deletes, keep going on errors) → the caller
 * may observe again. The agent's memory holds only what the kernel cannot tell
 * us: the pids of the wireguard-go children and the kernel's own rendering of
 * the firewall we last applied (for drift detection), with the set members we
 * applied since.
 *
 * Firewall cadence: the table is listed (the full drift check) on every tick,
 * except a tick whose only firewall change is set members (workloads coming or
 * going) while the last check is younger than FAST_PATH_MAX_UNVERIFIED_MS:
 * that tick sends the element delta alone, whose create/delete preconditions
 * verify the members it touches; the next tick lists again.
 * `firewall.verifySeconds` spaces the checks of idle ticks further apart.
 *
 * On a node, container veths and their /32 routes belong to the CNI/attach
 * code; this module never touches `nwc*` links.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { DesiredState } from '../desired.js';
import { writeFileAtomic } from '../fsutil.js';
import type { ChangeLogger, Runner } from '../runner.js';
import {
  applyFirewallChange,
  elementDeltas,
  observeFirewall,
  packetsOf,
  planFirewall,
  readDropCounters,
  validMemory,
  type FirewallChange,
  type FirewallMemory,
  type ObservedFirewall,
  type RenderedFirewall,
  type TableRef,
} from './nft-table.js';
import { applyRouteChange, desiredRouting, observeRouting, planRoutes, type RouteChange, type RoutingState } from './routes.js';
import { applySysctlChange, observeSysctls, planSysctls, waitingSysctls, type SysctlChange } from './sysctl.js';
import {
  WireguardLinks,
  applyWireguardChange,
  desiredWireguard,
  handshakeKicks,
  observeWireguard,
  planWireguard,
  publicKeyOfFile,
  type ObservedInterface,
  type TenantKey,
  type WireguardChange,
  type WireguardMode,
} from './wireguard.js';
import { ProcessSpawner, WireguardGoSupervisor, type Spawner } from './wgproc.js';

/** A program's firewall: its table, how a document renders into it, and how often an idle tick checks it for drift. */
export interface FirewallSpec {
  table: TableRef;
  render: (doc: DesiredState) => RenderedFirewall;
  /** The least time between two drift checks (listings of the table) on ticks with nothing to change. Default 0: every tick. */
  verifySeconds?: number;
}

export type Change = SysctlChange | FirewallChange | WireguardChange | RouteChange;

export interface Observed {
  sysctls: Record<string, string | null>;
  wireguard: ObservedInterface[];
  routing: RoutingState;
  firewall: ObservedFirewall;
}

export interface PlanInput {
  keyFor: (tenant: string) => TenantKey;
  firewall: FirewallSpec;
  firewallMemory: FirewallMemory | null;
  /** The document's rendered firewall, when the caller has it already. */
  rendered?: RenderedFirewall;
  /** The firewall's part of the plan, when the caller has it already. */
  firewallChanges?: FirewallChange[];
}

/** `listFirewall: false` skips listing the table (the element fast path); the default lists it. */
export async function observe(runner: Runner, table: TableRef, options: { listFirewall?: boolean } = {}): Promise<Observed> {
  return {
    sysctls: await observeSysctls(runner),
    wireguard: await observeWireguard(runner),
    routing: await observeRouting(runner),
    firewall: options.listFirewall === false ? { table: undefined } : await observeFirewall(runner, table),
  };
}

/** How long the element fast path may go without listing the table. */
export const FAST_PATH_MAX_UNVERIFIED_MS = 30_000;

/** What the reconciler keeps about the firewall between ticks. */
export interface FirewallState {
  current: FirewallMemory | null;
  /** When a listing last matched the memory (or followed our replace); unset: never in this process. */
  verifiedAt?: number;
  /** Counter values from the last listing, for status reports. */
  counters?: { at: number; packets: Record<string, number> };
}

/**
 * Must this tick list the table? Yes, unless the memory is usable, the
 * structure is unchanged and either (a) only set members changed and the last
 * check is younger than FAST_PATH_MAX_UNVERIFIED_MS (and verifySeconds), or
 * (b) nothing changed and the last check is younger than verifySeconds.
 */
export function firewallListingDue(rendered: RenderedFirewall, state: FirewallState, now: number, verifySeconds = 0): boolean {
  const memory = state.current;
  if (!validMemory(memory) || memory.hash !== rendered.hash || state.verifiedAt === undefined) return true;
  const deltas = elementDeltas(rendered, memory.elements);
  if (deltas === null) return true;
  const age = now - state.verifiedAt;
  return age >= (deltas.length > 0 ? Math.max(verifySeconds * 1000, FAST_PATH_MAX_UNVERIFIED_MS) : verifySeconds * 1000);
}

/**
 * The whole plan, pure: firewall first (so new interfaces and routes are
 * guarded from the moment they exist), then interfaces, peers and routes;
 * deletes last.
 */
export function plan(desired: DesiredState, observed: Observed, input: PlanInput): Change[] {
  const wg = desiredWireguard(desired, input.keyFor);
  const wgChanges = planWireguard(wg, observed.wireguard);
  const gone = new Set(wgChanges.filter((c) => c.kind === 'link-del').map((c) => c.iface));
  return orderChanges([
    ...planSysctls(observed.sysctls),
    ...(input.firewallChanges ?? planFirewall(input.rendered ?? input.firewall.render(desired), observed.firewall, input.firewallMemory)),
    ...wgChanges,
    ...planRoutes(desiredRouting(desired), observed.routing, gone),
  ]);
}

/** Adds and updates before deletes, otherwise in plan order (a stable partition). */
export function orderChanges(changes: readonly Change[]): Change[] {
  return [...changes.filter((c) => c.op !== 'delete'), ...changes.filter((c) => c.op === 'delete')];
}

/** One line per change, for logs and status reports. */
export function describeChange(c: Change): string {
  switch (c.kind) {
    case 'sysctl':
      return `sysctl ${c.key}: ${c.old ?? '?'} → ${c.new}`;
    case 'firewall-replace':
      return `firewall: replace table (${c.reason})`;
    case 'firewall-elements':
      return `firewall: set members ${c.sets.map((d) => `${d.set} +${d.add.length} -${d.delete.length}`).join(', ')}`;
    case 'route-set':
    case 'route-del':
      return `${c.kind} ${(c.new ?? c.old).dst} dev ${(c.new ?? c.old).dev} table ${(c.new ?? c.old).table}`;
    case 'rule-add':
    case 'rule-del':
      return `${c.kind} from ${(c.new ?? c.old).from} lookup ${(c.new ?? c.old).table}`;
    case 'peer-set':
      return `${c.iface}: ${c.op} peer ${c.new.host} ${c.new.publicKey}`;
    case 'peer-del':
      return `${c.iface}: remove peer ${c.old.publicKey}`;
    default:
      return `${c.iface}: ${c.kind}${c.new !== null && typeof c.new !== 'object' ? ` ${String(c.new)}` : ''}`;
  }
}

export interface ApplyDeps {
  runner: Runner;
  log: ChangeLogger;
  links: WireguardLinks;
  /** Receives the firewall memory after a successful replace or element delta. */
  onFirewallApplied: (memory: FirewallMemory, change: FirewallChange) => void;
  /** The memory the firewall change was planned from (an element delta builds on it). */
  firewallMemory?: () => FirewallMemory | null;
  /** Receives the time each firewall change took to apply. */
  onFirewallMs?: (ms: number) => void;
}

const ifaceOf = (c: Change): string | undefined => ('iface' in c ? c.iface : undefined);

/**
 * Apply in order; one failure does not stop the rest, except that changes to
 * an interface whose creation failed are skipped (they cannot succeed).
 */
export async function apply(changes: readonly Change[], deps: ApplyDeps): Promise<string[]> {
  const errors: string[] = [];
  const brokenIfaces = new Set<string>();
  for (const c of changes) {
    const iface = ifaceOf(c);
    if (iface && brokenIfaces.has(iface) && c.kind !== 'link-del') {
      errors.push(`skipped (${iface} was not created): ${describeChange(c)}`);
      continue;
    }
    try {
      switch (c.kind) {
        case 'sysctl':
          await applySysctlChange(c, deps.runner, deps.log);
          break;
        case 'firewall-replace':
        case 'firewall-elements': {
          const t0 = performance.now();
          try {
            deps.onFirewallApplied(await applyFirewallChange(c, deps.runner, deps.log, deps.firewallMemory?.() ?? null), c);
          } finally {
            deps.onFirewallMs?.(performance.now() - t0);
          }
          break;
        }
        case 'route-set':
        case 'route-del':
        case 'rule-add':
        case 'rule-del':
          await applyRouteChange(c, deps.runner, deps.log);
          break;
        default:
          await applyWireguardChange(c, deps.runner, deps.log, deps.links);
      }
    } catch (err) {
      if (c.kind === 'link-add') brokenIfaces.add(c.iface);
      errors.push(`${describeChange(c)}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return errors;
}

export interface ReconcileDeps {
  runner: Runner;
  log: ChangeLogger;
  /** Path of the tenant's private key file (0600, kept by the caller). */
  keyFileFor: (tenant: string) => string;
  /** Defaults to reading the file and deriving the public key. */
  readPublicKey?: (privateKeyFile: string) => string;
  links: WireguardLinks;
  firewall: FirewallSpec;
  /** Read and written: the kernel's rendering of the last firewall we applied, and when it was last checked. */
  firewallMemory: FirewallState;
  /** Clock (ms), for tests. */
  now?: () => number;
  /** After the apply, start handshakes with new peers and, after a key change, with every peer (`handshakeKicks`). */
  kickHandshakes?: boolean;
}

export interface ReconcileResult {
  /** The plan that was applied (empty: already up to date). */
  changes: Change[];
  errors: string[];
  /** Time this tick spent on the firewall (render, listing, plan, apply), in ms; for benchmarks and logs. */
  firewallMs: number;
}

function keyForFrom(deps: Pick<ReconcileDeps, 'keyFileFor' | 'readPublicKey'>): (tenant: string) => TenantKey {
  const read = deps.readPublicKey ?? publicKeyOfFile;
  return (tenant) => {
    const privateKeyFile = deps.keyFileFor(tenant);
    return { privateKeyFile, publicKey: read(privateKeyFile) };
  };
}

/** observe → plan → apply. */
export async function reconcile(desired: DesiredState, deps: ReconcileDeps): Promise<ReconcileResult> {
  const keyFor = keyForFrom(deps);
  const now = deps.now ?? Date.now;
  const state = deps.firewallMemory;
  let t0 = performance.now();
  const rendered = deps.firewall.render(desired);
  const listFirewall = firewallListingDue(rendered, state, now(), deps.firewall.verifySeconds ?? 0);
  let firewallMs = performance.now() - t0;
  const observed = await observe(deps.runner, deps.firewall.table, { listFirewall: false });
  if (listFirewall) {
    t0 = performance.now();
    observed.firewall = await observeFirewall(deps.runner, deps.firewall.table);
    firewallMs += performance.now() - t0;
  }
  t0 = performance.now();
  const firewallChanges = planFirewall(rendered, observed.firewall, state.current);
  firewallMs += performance.now() - t0;
  const changes = plan(desired, observed, { keyFor, firewall: deps.firewall, firewallMemory: state.current, rendered, firewallChanges });
  const live = observed.firewall.table;
  if (live) {
    state.counters = { at: now(), packets: packetsOf(live.counters) };
    // Listed and not about to be replaced: the table is as we left it.
    if (!changes.some((c) => c.kind === 'firewall-replace')) state.verifiedAt = now();
  }
  const applyDeps: ApplyDeps = {
    runner: deps.runner,
    log: deps.log,
    links: deps.links,
    firewallMemory: () => state.current,
    onFirewallApplied: (m, c) => {
      state.current = m;
      if (c.kind === 'firewall-replace') state.verifiedAt = now();
    },
    onFirewallMs: (ms) => (firewallMs += ms),
  };
  const errors = await apply(changes, applyDeps);
  if (changes.some((c) => c.kind === 'firewall-replace') && waitingSysctls(observed.sysctls)) {
    // The table just loaded may have brought the module such a key belongs to (conntrack): set it in this tick, so the next plan is empty.
    const late = planSysctls(await observeSysctls(deps.runner));
    errors.push(...(await apply(late, applyDeps)));
    changes.push(...late);
  }
  if (deps.kickHandshakes && changes.some((c) => c.kind === 'peer-set' || c.kind === 'wg-config')) {
    const wgChanges = changes.filter((c): c is WireguardChange => c.kind === 'peer-set' || c.kind === 'wg-config');
    for (const argv of handshakeKicks(wgChanges, desiredWireguard(desired, keyFor), observed.wireguard)) {
      deps.log(`[#] ${argv.join(' ')}`);
      try {
        await deps.runner.run(argv);
      } catch (err) {
        errors.push(`handshake kick ${argv[2]}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  // Which keys to register with the coordinator is settleTenantKeys' answer (key-rotation.ts), asked before the reconcile.
  return { changes, errors, firewallMs };
}

export interface ReconcilerOptions {
  runner: Runner;
  log: ChangeLogger;
  keyFileFor: (tenant: string) => string;
  readPublicKey?: (privateKeyFile: string) => string;
  /** `auto` (default): kernel WireGuard when available, else wireguard-go. */
  wireguardMode?: WireguardMode;
  /** How wireguard-go children are started (namespaced in the lab). */
  spawner?: Spawner;
  wireguardGoBinary?: string;
  /** A wireguard-go child died on its own: reconcile soon to bring the interface back. */
  onWireguardExit?: (iface: string, code: number | string) => void;
  firewall: FirewallSpec;
  /**
   * Where to keep the kernel's listing of the table as last applied, so a
   * restarted agent can tell an untouched table from drift (and does not
   * replace it needlessly).
   */
  firewallMemoryFile?: string;
  /** Clock (ms), for tests. */
  now?: () => number;
  /** See ReconcileDeps.kickHandshakes (the daemons set it; default off). */
  kickHandshakes?: boolean;
}

/**
 * The memory file describes the kernel's table, which a power loss wipes with
 * it: no fsync on the tick's path. A file torn by a power loss reads as no
 * memory (or as drift), and the first tick replaces the table once.
 */
const MEMORY_WRITE = { durable: false };

/**
 * What the agent's main loop holds: call `reconcile(doc)` each tick with the
 * latest good document; `plan(doc)` to check without changing anything.
 */
export class Reconciler {
  readonly supervisor: WireguardGoSupervisor;
  private readonly links: WireguardLinks;
  private readonly firewallMemory: FirewallState = { current: null };

  constructor(private readonly options: ReconcilerOptions) {
    if (options.firewallMemoryFile && existsSync(options.firewallMemoryFile)) {
      try {
        const saved: unknown = JSON.parse(readFileSync(options.firewallMemoryFile, 'utf8'));
        // An older format (no set members recorded) counts as no memory: the first reconcile replaces the table once.
        this.firewallMemory.current = validMemory(saved) ? saved : null;
      } catch {
        // Unreadable: start without memory; the first reconcile replaces the table once.
      }
    }
    this.supervisor = new WireguardGoSupervisor({
      spawner: options.spawner ?? new ProcessSpawner(),
      ...(options.wireguardGoBinary ? { binary: options.wireguardGoBinary } : {}),
      ...(options.onWireguardExit ? { onExit: options.onWireguardExit } : {}),
      log: options.log,
    });
    this.links = new WireguardLinks(options.runner, options.log, this.supervisor, options.wireguardMode ?? 'auto');
  }

  private deps(): ReconcileDeps {
    return {
      runner: this.options.runner,
      log: this.options.log,
      keyFileFor: this.options.keyFileFor,
      ...(this.options.readPublicKey ? { readPublicKey: this.options.readPublicKey } : {}),
      links: this.links,
      firewall: this.options.firewall,
      firewallMemory: this.firewallMemory,
      ...(this.options.now ? { now: this.options.now } : {}),
      ...(this.options.kickHandshakes ? { kickHandshakes: true } : {}),
    };
  }

  async reconcile(doc: DesiredState): Promise<ReconcileResult> {
    const before = this.firewallMemory.current;
    const result = await reconcile(doc, this.deps());
    const after = this.firewallMemory.current;
    if (this.options.firewallMemoryFile && after && after !== before) {
      const t0 = performance.now();
      writeFileAtomic(this.options.firewallMemoryFile, JSON.stringify(after), 0o600, MEMORY_WRITE);
      result.firewallMs += performance.now() - t0;
    }
    return result;
  }

  /**
   * Load the table `doc` renders when ours is missing, before the host opens
   * its first connection: conntrack starts tracking in a namespace only once
   * a table uses it, and a connection opened before that (the first
   * long-poll) would see its replies dropped by the restricted input chain
   * as "new" until it timed out. Returns whether it loaded the table.
   */
  async ensureFirewall(doc: DesiredState): Promise<boolean> {
    const table = this.options.firewall.table;
    if ((await observeFirewall(this.options.runner, table)).table !== null) return false;
    const memory = await applyFirewallChange(
      { kind: 'firewall-replace', op: 'update', reason: 'missing', old: null, new: this.options.firewall.render(doc) },
      this.options.runner,
      this.options.log,
    );
    this.firewallMemory.current = memory;
    this.firewallMemory.verifiedAt = (this.options.now ?? Date.now)();
    if (this.options.firewallMemoryFile) writeFileAtomic(this.options.firewallMemoryFile, JSON.stringify(memory), 0o600, MEMORY_WRITE);
    return true;
  }

  /** Observe and plan only (an empty list means the kernel matches the document). */
  async plan(doc: DesiredState): Promise<Change[]> {
    const observed = await observe(this.options.runner, this.options.firewall.table);
    return plan(doc, observed, {
      keyFor: keyForFrom(this.options),
      firewall: this.options.firewall,
      firewallMemory: this.firewallMemory.current,
    });
  }

  observe(): Promise<Observed> {
    return observe(this.options.runner, this.options.firewall.table);
  }

  /** Drop counters; taken from this tick's listing when it is under a second old (no second dump of a large table). */
  dropCounters(): Promise<Record<string, number>> {
    const c = this.firewallMemory.counters;
    if (c && Date.now() - c.at <= 1000) return Promise.resolve({ ...c.packets });
    return readDropCounters(this.options.runner, this.options.firewall.table);
  }

  /**
   * Stop the wireguard-go children we started (their interfaces go with
   * them). For tests and uninstall; a daemon does not call it on restart, a
   * data plane that keeps running is the point.
   */
  stopUserspace(): Promise<void> {
    return this.supervisor.stopAll();
  }
}
