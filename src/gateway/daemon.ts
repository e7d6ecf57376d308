/**
 * The gateway daemon: watches its signed desired state (starting from the
 * cached copy), reconciles its WireGuard interfaces, routes and firewall on
 * every document and every interval, and serves the exposures: public
 * listeners (src/gateway/public) handing each connection to the router server
 * (tunnel mode: a stream on the entry point's own outbound connection) or to
 * a TCP connection over the tenant's interface (mesh mode). It registers the
 * WireGuard keys it generated and reports status, drop counters and its
 * router sessions; a loopback-only admin endpoint serves health and metrics.
 */
import type { FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { Reconciler } from '../shared/dataplane/reconcile.js';
import { ensureTenantKey, type WireguardMode } from '../shared/dataplane/wireguard.js';
import { emptyDocument, type DesiredState, type GatewayExposure } from '../shared/desired.js';
import { HostClient } from '../shared/host-client.js';
import { HostReporter } from '../shared/host-report.js';
import { settleTenantKeys, watchNextKeys } from '../shared/dataplane/key-rotation.js';
import { ensureStateDir, loadIdentity } from '../shared/host-state.js';
import { ExecaRunner, type ChangeLogger } from '../shared/runner.js';
import { DesiredStateWatcher } from '../shared/watch.js';
import { renderRouterPrometheus, startAdminServer, type AdminServer } from './admin.js';
import { gatewayFirewall } from './firewall.js';
import { MeshUpstream } from './mesh-upstream.js';
import { PublicGateway, renderPrometheus, type PublicLimits } from './public/index.js';
import type { ClientAddress, Upstream } from './public/types.js';
import { RouterServer } from './router-server.js';

/** In the state dir: the kernel's listing of our nft table as last applied. */
export const FIREWALL_MEMORY_FILE = 'firewall-applied.json';

export interface GatewayOptions {
  stateDir: string;
  intervalSeconds: number;
  wireguardMode: WireguardMode;
  /** Public listeners: the address to bind (all by default) and the HTTP/HTTPS ports (null: off). */
  listen: { address: string; http: number | null; https: number | null };
  /** `<hostname>.crt` / `<hostname>.key` pairs for TLS termination. */
  certDir?: string;
  limits?: Partial<PublicLimits>;
  /** TCP ports left open from outside for administration (ssh). */
  adminTcpPorts: number[];
  /** Health and metrics endpoint (loopback or the management network); null: off. */
  admin: { host: string; port: number } | null;
  log: ChangeLogger;
}

/** Tunnel exposures go to the router server, mesh exposures over the tenant's interface. */
export function byMode(tunnel: Upstream, mesh: Upstream): Upstream {
  return {
    open: (exposure: GatewayExposure, client: ClientAddress) => (exposure.mode === 'tunnel' ? tunnel : mesh).open(exposure, client),
  };
}

export class GatewayDaemon {
  private watcher?: DesiredStateWatcher;
  private reconciler?: Reconciler;
  private client?: HostClient;
  private router?: RouterServer;
  private mesh?: MeshUpstream;
  private pub?: PublicGateway;
  private admin?: AdminServer;
  private timer?: NodeJS.Timeout;
  private keyWatch?: FSWatcher;
  private publicStarted = false;
  /** tenant → this gateway's mesh address (router listener and mesh source). */
  private meshAddress = new Map<string, string>();
  private queue: Promise<void> = Promise.resolve();
  private reporter?: HostReporter;
  private lastApplied: { version: number; at: string } | null = null;

  constructor(private readonly o: GatewayOptions) {}

  async start(): Promise<void> {
    ensureStateDir(this.o.stateDir);
    const id = loadIdentity(this.o.stateDir);
    if (id.kind !== 'gateway') throw new Error(`${this.o.stateDir} holds a ${id.kind} identity, not a gateway's`);
    const log = this.o.log;
    this.client = new HostClient(id);
    this.reporter = new HostReporter(this.client, log);
    this.reconciler = new Reconciler({
      runner: new ExecaRunner(),
      log,
      keyFileFor: (tenant) => ensureTenantKey(this.o.stateDir, tenant).privateKeyFile,
      wireguardMode: this.o.wireguardMode,
      firewall: gatewayFirewall({
        listenerPorts: [this.o.listen.http, this.o.listen.https].filter((p): p is number => p !== null),
        adminTcpPorts: this.o.adminTcpPorts,
      }),
      firewallMemoryFile: join(this.o.stateDir, FIREWALL_MEMORY_FILE),
      onWireguardExit: () => this.schedule(),
      // A node's rotated key (or a new member): handshake at once, not after WireGuard's 5 s retry.
      kickHandshakes: true,
    });
    this.router = new RouterServer({ name: id.name, coordinatorKey: id.coordinatorKey, log: (l) => log(`[router] ${l}`) });
    this.mesh = new MeshUpstream({ sourceAddress: (tenant) => this.meshAddress.get(tenant), log: (l) => log(`[mesh] ${l}`) });
    this.pub = new PublicGateway({
      upstream: byMode(this.router, this.mesh),
      ...(this.o.certDir ? { certDir: this.o.certDir } : {}),
      ...(this.o.limits ? { limits: this.o.limits } : {}),
      log: (event, fields) => log(`[public] ${event} ${JSON.stringify(fields)}`),
    });
    this.watcher = new DesiredStateWatcher({
      client: this.client,
      stateDir: this.o.stateDir,
      coordinatorKey: id.coordinatorKey,
      log,
      onDocument: (doc) => this.apply(doc),
    });
    // The cached document's firewall is in place before the public listeners open.
    if (!(await this.watcher.startFromCache())) await this.reconciler.ensureFirewall(emptyDocument('gateway', id.name));
    await this.pub.start(this.o.listen.address, { http: this.o.listen.http, https: this.o.listen.https });
    this.publicStarted = true;
    if (this.watcher.current) await this.pub.update(this.watcher.current.exposures);
    if (this.o.admin) this.admin = await startAdminServer({ ...this.o.admin, status: () => this.status(), metrics: () => this.metricsText() });
    void this.watcher.run();
    this.timer = setInterval(() => this.schedule(), this.o.intervalSeconds * 1000);
    this.watchNextKeys();
    const ports = this.pub.addresses();
    log(`[netwall] gateway ${id.name} running (state ${this.o.stateDir}; http ${ports.http ?? 'off'}, https ${ports.https ?? 'off'}${this.admin ? `; admin ${this.admin.url}` : ''})`);
  }

  /** `netwall-gateway rotate-key` wrote a next key: reconcile (register it) now, not at the next interval. */
  private watchNextKeys(): void {
    this.keyWatch = watchNextKeys(this.o.stateDir, () => this.schedule()) ?? undefined;
    if (!this.keyWatch) this.o.log(`[netwall] cannot watch ${this.o.stateDir}: rotate-key's next keys are picked up every ${this.o.intervalSeconds} s`);
  }

  private schedule(): void {
    const doc = this.watcher?.current;
    if (doc) void this.apply(doc);
  }

  private apply(doc: DesiredState): Promise<void> {
    this.queue = this.queue.then(() => this.applyNow(doc)).catch((err: Error) => this.o.log(`[netwall] reconcile failed: ${err.message}`));
    return this.queue;
  }

  private async applyNow(doc: DesiredState): Promise<void> {
    const keysToRegister = settleTenantKeys(this.o.stateDir, doc, this.o.log);
    const result = await this.reconciler!.reconcile(doc);
    const errors = [...result.errors];
    this.meshAddress = new Map(doc.tenants.map((t) => [t.tenant, t.address.split('/')[0] as string]));
    errors.push(...(await this.syncRouterListeners(doc)));
    this.router!.update(doc.exposures);
    if (this.publicStarted) {
      const r = await this.pub!.update(doc.exposures);
      for (const f of r.tcpFailed) errors.push(`tcp listener ${f.port}: ${f.error}`);
      for (const c of r.conflicts) errors.push(`conflict: ${JSON.stringify(c)}`);
    }
    errors.push(...(await this.reporter!.registerKeys(keysToRegister)));
    this.lastApplied = { version: doc.version, at: new Date().toISOString() };
    await this.reporter!.report(doc, errors, () => this.reconciler!.dropCounters(), {
      changes: result.changes.length,
      offline: this.watcher?.offline ?? false,
      router: this.routerSummary(),
    });
  }

  /** One router-server listener per tenant, on this gateway's mesh address in it (only that tenant's grants are accepted there). */
  private async syncRouterListeners(doc: DesiredState): Promise<string[]> {
    const router = this.router!;
    const errors: string[] = [];
    const wanted = new Map(doc.tenants.map((t) => [t.address.split('/')[0] as string, t.tenant]));
    for (const a of router.addresses()) {
      const host = a.slice(0, a.lastIndexOf(':'));
      if (!wanted.has(host)) await router.unlisten(host);
    }
    for (const [host, tenant] of wanted) {
      try {
        await router.listen({ host, tenant });
      } catch (err) {
        errors.push(`router server on ${host} (${tenant}): ${(err as Error).message}`);
      }
    }
    return errors;
  }

  private routerSummary(): Record<string, unknown> {
    const live: Record<string, number> = {};
    for (const s of this.router!.sessions()) live[`${s.tenant}/${s.exposure}`] = (live[`${s.tenant}/${s.exposure}`] ?? 0) + 1;
    const st = this.router!.stats();
    return { sessions: live, authFailures: Object.fromEntries(Object.entries(st.authFailures).filter(([, n]) => n > 0)) };
  }

  status(): Record<string, unknown> {
    return {
      applied: this.lastApplied,
      offline: this.watcher?.offline ?? null,
      errors: this.reporter?.errors ?? [],
      public: this.pub?.addresses() ?? null,
      router: this.router ? { listening: this.router.addresses(), ...this.routerSummary() } : null,
      mesh: this.mesh?.stats() ?? null,
    };
  }

  private metricsText(): string {
    return [this.pub ? renderPrometheus(this.pub.metrics()) : '', this.router ? renderRouterPrometheus(this.router) : ''].join('');
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.keyWatch?.close();
    this.watcher?.stop();
    await this.admin?.close();
    await this.pub?.stop();
    await this.router?.close(2000);
    await this.queue;
  }
}
