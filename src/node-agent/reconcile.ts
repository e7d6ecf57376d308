/**
 * The node's data plane loop body: observe the live kernel → plan (pure diffs)
 * → apply (adds and updates before deletes, keep going on errors) → the caller
 * may observe again. The agent's memory holds only what the kernel cannot tell
 * us: the pids of the wireguard-go children and the kernel's own rendering of
 * the firewall we last applied (for drift detection).
 *
 * Container veths and their /32 routes belong to the CNI/attach code; this
 * module only reads their names (names.ts) into the firewall and never touches
 * `nwc*` links.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { DesiredState } from '../shared/desired.js';
import { writeFileAtomic } from '../shared/fsutil.js';
import type { ChangeLogger, Runner } from '../shared/runner.js';
import {
  applyFirewallChange,
  observeFirewall,
  planFirewall,
  readDropCounters,
  renderFirewall,
  type FirewallChange,
  type FirewallMemory,
  type FirewallOptions,
  type ObservedFirewall,
} from './nftables.js';
import { applyRouteChange, desiredRouting, observeRouting, planRoutes, type RouteChange, type RoutingState } from './routes.js';
import { applySysctlChange, observeSysctls, planSysctls, type SysctlChange } from './sysctl.js';
import {
  WireguardLinks,
  applyWireguardChange,
  desiredWireguard,
  observeWireguard,
  planWireguard,
  publicKeyOfFile,
  type ObservedInterface,
  type TenantKey,
  type WireguardChange,
  type WireguardMode,
} from './wireguard.js';
import { ProcessSpawner, WireguardGoSupervisor, type Spawner } from './wgproc.js';

export type Change = SysctlChange | FirewallChange | WireguardChange | RouteChange;

export interface Observed {
  sysctls: Record<string, string | null>;
  wireguard: ObservedInterface[];
  routing: RoutingState;
  firewall: ObservedFirewall;
}

export interface PlanInput {
  keyFor: (tenant: string) => TenantKey;
  firewall?: FirewallOptions;
  firewallMemory: FirewallMemory | null;
}

export async function observe(runner: Runner): Promise<Observed> {
  return {
    sysctls: await observeSysctls(runner),
    wireguard: await observeWireguard(runner),
    routing: await observeRouting(runner),
    firewall: await observeFirewall(runner),
  };
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
    ...planFirewall(renderFirewall(desired, input.firewall), observed.firewall, input.firewallMemory),
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
  /** Receives the firewall memory after a successful replace. */
  onFirewallApplied: (memory: FirewallMemory) => void;
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
          deps.onFirewallApplied(await applyFirewallChange(c, deps.runner, deps.log));
          break;
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
  firewall?: FirewallOptions;
  /** Read and written: the kernel's rendering of the last firewall we applied. */
  firewallMemory: { current: FirewallMemory | null };
}

export interface ReconcileResult {
  /** The plan that was applied (empty: already up to date). */
  changes: Change[];
  errors: string[];
  /** Tenants whose local public key is not the one in the document: register these with the coordinator. */
  keysToRegister: { tenant: string; publicKey: string }[];
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
  const observed = await observe(deps.runner);
  const changes = plan(desired, observed, { keyFor, firewall: deps.firewall, firewallMemory: deps.firewallMemory.current });
  const errors = await apply(changes, {
    runner: deps.runner,
    log: deps.log,
    links: deps.links,
    onFirewallApplied: (m) => (deps.firewallMemory.current = m),
  });
  const keysToRegister = desired.tenants
    .map((t) => ({ tenant: t.tenant, publicKey: keyFor(t.tenant).publicKey, known: t.publicKey }))
    .filter((k) => k.publicKey !== k.known)
    .map(({ tenant, publicKey }) => ({ tenant, publicKey }));
  return { changes, errors, keysToRegister };
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
  firewall?: FirewallOptions;
  /**
   * Where to keep the kernel's listing of the table as last applied, so a
   * restarted agent can tell an untouched table from drift (and does not
   * replace it needlessly).
   */
  firewallMemoryFile?: string;
}

/**
 * What the agent's main loop holds: call `reconcile(doc)` each tick with the
 * latest good document; `plan(doc)` to check without changing anything.
 */
export class Reconciler {
  readonly supervisor: WireguardGoSupervisor;
  private readonly links: WireguardLinks;
  private readonly firewallMemory: { current: FirewallMemory | null } = { current: null };

  constructor(private readonly options: ReconcilerOptions) {
    if (options.firewallMemoryFile && existsSync(options.firewallMemoryFile)) {
      try {
        this.firewallMemory.current = JSON.parse(readFileSync(options.firewallMemoryFile, 'utf8')) as FirewallMemory;
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
      ...(this.options.firewall ? { firewall: this.options.firewall } : {}),
      firewallMemory: this.firewallMemory,
    };
  }

  async reconcile(doc: DesiredState): Promise<ReconcileResult> {
    const before = this.firewallMemory.current;
    const result = await reconcile(doc, this.deps());
    const after = this.firewallMemory.current;
    if (this.options.firewallMemoryFile && after && after !== before) writeFileAtomic(this.options.firewallMemoryFile, JSON.stringify(after), 0o600);
    return result;
  }

  /** Observe and plan only (an empty list means the kernel matches the document). */
  async plan(doc: DesiredState): Promise<Change[]> {
    const observed = await observe(this.options.runner);
    return plan(doc, observed, {
      keyFor: keyForFrom(this.options),
      firewall: this.options.firewall,
      firewallMemory: this.firewallMemory.current,
    });
  }

  observe(): Promise<Observed> {
    return observe(this.options.runner);
  }

  dropCounters(): Promise<Record<string, number>> {
    return readDropCounters(this.options.runner);
  }

  /**
   * Stop the wireguard-go children we started (their interfaces go with
   * them). For tests and uninstall; the agent does not call it on restart, a
   * data plane that keeps running is the point.
   */
  stopUserspace(): Promise<void> {
    return this.supervisor.stopAll();
  }
}
