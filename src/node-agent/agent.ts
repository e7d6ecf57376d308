/**
 * The node agent daemon: watches its signed desired state (starting from the
 * cached copy), reconciles the kernel to it on every new document and every
 * interval (drift repair), registers the WireGuard public keys it generated,
 * keeps CNI network configs current, serves the local socket the CNI plugin
 * and `attach` use, and reports status and drop counters.
 */
import { join } from 'node:path';
import { emptyDocument, type DesiredState } from '../shared/desired.js';
import { HostClient } from '../shared/host-client.js';
import { HostReporter } from '../shared/host-report.js';
import { ensureStateDir, loadIdentity } from '../shared/host-state.js';
import { ExecaRunner, type ChangeLogger } from '../shared/runner.js';
import { DesiredStateWatcher } from '../shared/watch.js';
import { AuditRunner } from './audit.js';
import { syncCniConfigs } from './cni-config.js';
import { installCniPlugin } from './cni/install.js';
import { nodeFirewall, type FirewallOptions } from './nftables.js';
import { Reconciler } from '../shared/dataplane/reconcile.js';
import { hostClientAllocator, startAgentSocket, type AgentSocketServer } from './socket.js';
import { NetnsRegistry, TunnelSupervisor } from './tunnels.js';
import { ProcessSpawner } from '../shared/dataplane/wgproc.js';
import { ensureTenantKey, type WireguardMode } from '../shared/dataplane/wireguard.js';
import { settleTenantKeys } from '../shared/dataplane/key-rotation.js';

/** In the state dir: the kernel's listing of our nft table as last applied. */
export const FIREWALL_MEMORY_FILE = 'firewall-applied.json';

export interface AgentOptions {
  stateDir: string;
  socketPath: string;
  cniConfDir: string;
  cniBinDir: string;
  installCni: boolean;
  intervalSeconds: number;
  wireguardMode: WireguardMode;
  firewall: FirewallOptions;
  log: ChangeLogger;
}

export class Agent {
  private watcher?: DesiredStateWatcher;
  private socket?: AgentSocketServer;
  private reconciler?: Reconciler;
  private client?: HostClient;
  private tunnels?: TunnelSupervisor;
  private audits?: AuditRunner;
  private timer?: NodeJS.Timeout;
  /** One reconcile at a time, in order. */
  private queue: Promise<void> = Promise.resolve();
  private reporter?: HostReporter;

  constructor(private readonly o: AgentOptions) {}

  async start(): Promise<void> {
    ensureStateDir(this.o.stateDir);
    const id = loadIdentity(this.o.stateDir);
    if (id.kind !== 'node') throw new Error(`${this.o.stateDir} holds a ${id.kind} identity, not a node's`);
    const runner = new ExecaRunner();
    this.client = new HostClient(id);
    this.reporter = new HostReporter(this.client, this.o.log);
    this.reconciler = new Reconciler({
      runner,
      log: this.o.log,
      keyFileFor: (tenant) => ensureTenantKey(this.o.stateDir, tenant).privateKeyFile,
      wireguardMode: this.o.wireguardMode,
      firewall: nodeFirewall(this.o.firewall),
      firewallMemoryFile: join(this.o.stateDir, FIREWALL_MEMORY_FILE),
      onWireguardExit: () => this.schedule('wireguard-go exited'),
      kickHandshakes: true,
    });
    if (this.o.installCni) installCniPlugin({ binDir: this.o.cniBinDir });
    const netns = new NetnsRegistry(join(this.o.stateDir, 'workloads.json'));
    const client = this.client;
    this.tunnels = new TunnelSupervisor({
      stateDir: this.o.stateDir,
      registerRouterKey: (tenant, exposure, workload, publicKey) => client.registerRouterKey(tenant, exposure, workload, publicKey),
      netnsOf: (tenant, workload) => netns.get(tenant, workload),
      spawner: new ProcessSpawner([], (line) => this.o.log(`[router-client] ${line}`)),
      log: this.o.log,
    });
    this.socket = await startAgentSocket({
      path: this.o.socketPath,
      allocator: hostClientAllocator(this.client),
      runner,
      mtu: () => this.watcher?.current?.settings.mtu ?? 1420,
      log: this.o.log,
      onChange: (e) => {
        netns.set(e.tenant, e.name, e.op === 'attach' ? e.netns : undefined);
        // A new entry point may need its router client at once.
        this.schedule('workload attached');
      },
      // `netwall-agent rotate-key` wrote a next key: register it now rather than at the next interval.
      onReconcile: () => this.schedule('reconcile requested'),
    });
    this.watcher = new DesiredStateWatcher({
      client: this.client,
      stateDir: this.o.stateDir,
      coordinatorKey: id.coordinatorKey,
      log: this.o.log,
      onDocument: (doc) => this.apply(doc),
    });
    // No cached document yet: the firewall of an empty one, before the first connection to the coordinator.
    if (!(await this.watcher.startFromCache())) await this.reconciler.ensureFirewall(emptyDocument('node', id.name));
    void this.watcher.run();
    // Reachability audits: probes from inside the local workloads' namespaces (src/node-agent/audit.ts).
    this.audits = new AuditRunner({ node: id.name, coordinatorKey: id.coordinatorKey, client: this.client, runner, netnsOf: (t, w) => netns.get(t, w), log: this.o.log });
    void this.audits.run();
    this.timer = setInterval(() => this.schedule('interval'), this.o.intervalSeconds * 1000);
    this.o.log(`[netwall] agent ${id.name} running (state ${this.o.stateDir}, socket ${this.socket.path})`);
  }

  /** Reconcile the current document again (drift repair, a dead wireguard-go). */
  private schedule(_reason: string): void {
    const doc = this.watcher?.current;
    if (doc) void this.apply(doc);
  }

  private apply(doc: DesiredState): Promise<void> {
    this.queue = this.queue.then(() => this.applyNow(doc)).catch((err: Error) => this.o.log(`[netwall] reconcile failed: ${err.message}`));
    return this.queue;
  }

  private async applyNow(doc: DesiredState): Promise<void> {
    const reconciler = this.reconciler!;
    // Key rotation (key-rotation.ts): promote a next key the document names, before the reconcile applies it.
    const keysToRegister = settleTenantKeys(this.o.stateDir, doc, this.o.log);
    const result = await reconciler.reconcile(doc);
    const errors = [...result.errors];
    try {
      syncCniConfigs(
        doc.networks.map((tenant) => ({ tenant, mtu: doc.settings.mtu, agentSocket: this.socket!.path })),
        this.o.cniConfDir,
      );
    } catch (err) {
      errors.push(`cni config: ${(err as Error).message}`);
    }
    errors.push(...(await this.tunnels!.sync(doc)));
    errors.push(...(await this.reporter!.registerKeys(keysToRegister)));
    await this.reporter!.report(doc, errors, () => reconciler.dropCounters(), {
      changes: result.changes.length,
      offline: this.watcher?.offline ?? false,
      tunnels: this.tunnels!.status(),
    });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.watcher?.stop();
    this.audits?.stop();
    // Router clients keep serving (like WireGuard and the firewall): the next agent adopts them.
    await this.socket?.close();
    await this.queue;
  }
}
