/**
 * Serves desired-state documents: renders a host's document at its current
 * version (cached until the version moves), signs it, and parks long-poll
 * requests until the host's version passes what it already has.
 */
import { signDocument } from '../shared/crypto.js';
import type { DesiredState, SignedDocument } from '../shared/desired.js';
import type { RenderSettings } from './model.js';
import { renderHost } from './render.js';
import type { HostRow, Store } from './store.js';

type Waiter = (changed: boolean) => void;

export class DesiredService {
  private readonly cache = new Map<number, { version: number; signed: SignedDocument }>();
  private readonly waiters = new Map<number, Set<Waiter>>();
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly secretKey: string,
    private readonly settings: RenderSettings,
  ) {
    store.onHostsChanged = (ids) => this.notify(ids);
  }

  render(host: HostRow): DesiredState {
    const tenants = this.store.tenantsOfHost(host.id).map((t) => this.store.compiledTenant(t));
    const networks = host.kind === 'node' ? this.store.tenantNames() : [];
    return renderHost({ name: host.name, kind: host.kind, version: host.version, endpointHost: host.endpoint_host, tenants, networks }, this.settings);
  }

  document(host: HostRow): SignedDocument {
    const hit = this.cache.get(host.id);
    if (hit && hit.version === host.version) return hit.signed;
    const signed = signDocument(JSON.stringify(this.render(host)), this.secretKey);
    this.cache.set(host.id, { version: host.version, signed });
    return signed;
  }

  /**
   * Resolve with the host's row once its version exceeds `after`, or null
   * after `waitMs` (or when the server shuts down).
   */
  async waitNewer(hostId: number, after: number, waitMs: number): Promise<HostRow | null> {
    const current = this.store.hostById(hostId);
    if (!current) return null;
    if (current.version > after) return current;
    if (this.closed || waitMs <= 0) return null;
    return new Promise((resolve) => {
      let set = this.waiters.get(hostId);
      if (!set) this.waiters.set(hostId, (set = new Set()));
      const waiter: Waiter = (changed) => {
        clearTimeout(timer);
        set!.delete(waiter);
        if (set!.size === 0) this.waiters.delete(hostId);
        if (!changed) return resolve(null);
        const row = this.store.hostById(hostId);
        resolve(row && row.version > after ? row : null);
      };
      const timer = setTimeout(() => waiter(false), waitMs);
      set.add(waiter);
    });
  }

  notify(hostIds: Iterable<number>): void {
    for (const id of hostIds) for (const w of [...(this.waiters.get(id) ?? [])]) w(true);
  }

  /** Release every parked request (shutdown). */
  close(): void {
    this.closed = true;
    for (const set of this.waiters.values()) for (const w of [...set]) w(false);
  }

  waiting(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }
}
