/**
 * All reads and writes of the coordinator's database. Every mutation runs in
 * one IMMEDIATE transaction that also writes the audit log and bumps the
 * version of exactly the hosts whose desired state it changes, so a crash
 * leaves either all of a change or none of it.
 */
import { ConflictError, ForbiddenError, NotFoundError, UnauthorizedError, ValidationError } from '../shared/errors.js';
import { NEVER_EGRESS, type HostKind, type RouterCredential, type RouterGrant } from '../shared/desired.js';
import { matchesSelector, type Labels } from '../shared/names.js';
import { parseCidr, cidrsOverlap, type Cidr } from '../shared/ipv4.js';
import type Database from 'better-sqlite3';
import type { Db } from './db/open.js';
import {
  allocateGatewayAddress,
  allocateListenPort,
  allocateNodeSlice,
  allocateTenantSubnet,
  allocateWorkloadAddress,
  nodeAddress,
  validateIpamConfig,
  type IpamConfig,
} from './ipam.js';
import type { EgressSpec, ExposureSpec, HostAddressModel, MemberModel, PolicySpec, RouterKeyModel, TenantModel, WorkloadModel } from './model.js';
import { compileTenant, hostsAffectedByWorkload, withWorkload, type CompiledTenant } from './render.js';

export interface Actor {
  /** e.g. 'admin', 'tenant:acme/ci', 'host:node1' */
  id: string;
}

export interface TenantRow {
  id: number;
  name: string;
  subnet: string;
  revision: number;
  created_at: string;
}

export interface HostRow {
  id: number;
  name: string;
  kind: HostKind;
  identity_key: string;
  endpoint_host: string | null;
  port_base: number;
  mgmt_address: string | null;
  public_address: string | null;
  version: number;
  applied_version: number;
  status: string;
  status_detail: string | null;
  last_seen: string | null;
  created_at: string;
}

export interface WorkloadRow {
  id: number;
  tenant_id: number;
  host_id: number;
  name: string;
  labels: string;
  address: string;
  created_at: string;
}

export interface TokenRow {
  id: number;
  hash: string;
  kind: 'tenant' | 'enroll';
  tenant_id: number | null;
  host_kind: HostKind | null;
  name: string;
  expires_at: string | null;
  used_at: string | null;
}

type SpecKind = 'policies' | 'exposures' | 'egress_rules';

interface WriteOutcome<T> {
  result: T;
  hosts?: Iterable<number>;
  tenants?: Iterable<number>;
  detail?: unknown;
  /**
   * Runs once the change is in (inside the shared transaction, after its
   * savepoint), with the revision the change's hosts and tenants now carry
   * (null when it bumped none).
   */
  after?: (revision: number | null) => void;
}

export class Store {
  readonly pool;
  private readonly compiled = new Map<number, { revision: number; tenant: CompiledTenant }>();
  /** Called after each committed change with the ids of the hosts whose version moved. */
  onHostsChanged: (hostIds: number[]) => void = () => {};

  constructor(
    readonly db: Db,
    readonly ipam: IpamConfig,
    private readonly now: () => number = Date.now,
  ) {
    this.pool = validateIpamConfig(ipam);
    this.tx = db.transaction((fn: () => void) => fn());
    const nested = db.transaction((fn: () => unknown) => fn());
    this.savepoint = <R>(fn: () => R): R => nested(fn) as R;
  }

  private readonly statements = new Map<string, Database.Statement>();
  /** Per (tenant, node): the last address handed out, where next-fit allocation resumes. */
  private readonly cursors = new Map<string, string>();
  /** One transaction wrapper, so BEGIN/COMMIT are prepared once, not per write. */
  private readonly tx: Database.Transaction<(fn: () => void) => void>;
  /** Called inside `tx`, the same wrapper is a SAVEPOINT. */
  private readonly savepoint: <R>(fn: () => R) => R;
  private readonly queue: { run: () => { value: unknown; hosts: number[] }; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  private flushScheduled = false;
  private hostIdCache: Map<string, number> | null = null;
  /** Slice text → parsed; a slice's text never changes meaning, so this needs no invalidation. */
  private readonly slices = new Map<string, Cidr>();

  /** A prepared statement, compiled once per SQL text. */
  private sql(text: string): Database.Statement {
    let st = this.statements.get(text);
    if (!st) this.statements.set(text, (st = this.db.prepare(text)));
    return st;
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  /**
   * Run `fn` as one change. `fn` returns its result, the hosts and tenants it
   * affects (they get the new revision as their version, and waiters are
   * woken after commit), the audit detail, and `after`, run once the change
   * is in (it keeps in-memory caches in step).
   *
   * Group commit: changes arriving together share one IMMEDIATE transaction,
   * each inside its own savepoint — one change failing rolls back only
   * itself — and every caller hears back only after the shared COMMIT, so an
   * acknowledged change is durable and a crash loses none of them.
   */
  private write<T>(actor: Actor, action: string, target: string, fn: () => WriteOutcome<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run: () => this.applyOne(actor, action, target, fn), resolve: resolve as (v: unknown) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private applyOne<T>(actor: Actor, action: string, target: string, fn: () => WriteOutcome<T>): { value: T; hosts: number[] } {
    const out = this.savepoint(() => {
      const o = fn();
      const hosts = [...new Set(o.hosts ?? [])];
      const tenants = [...new Set(o.tenants ?? [])];
      let revision: number | null = null;
      if (hosts.length || tenants.length) {
        revision = Number(this.sql(`UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision' RETURNING value`).pluck().get());
        // One statement, however many hosts a change touches.
        this.sql('UPDATE hosts SET version = ? WHERE id IN (SELECT value FROM json_each(?))').run(revision, JSON.stringify(hosts));
        // A change is inside one tenant, rarely more: a point update each is cheaper than json_each.
        for (const id of tenants) this.sql('UPDATE tenants SET revision = ? WHERE id = ?').run(revision, id);
      }
      this.sql('INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)').run(
        this.iso(),
        actor.id,
        action,
        target,
        o.detail === undefined ? null : JSON.stringify(o.detail),
      );
      return { o, hosts, revision };
    });
    out.o.after?.(out.revision);
    return { value: out.o.result, hosts: out.hosts };
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue.splice(0);
    const outcomes: ({ ok: true; value: unknown; hosts: number[] } | { ok: false; error: unknown })[] = [];
    try {
      this.tx.immediate(() => {
        for (const item of batch) {
          try {
            outcomes.push({ ok: true, ...item.run() });
          } catch (error) {
            outcomes.push({ ok: false, error });
          }
        }
      });
    } catch (error) {
      // The commit itself failed: nothing of the batch is in; caches may hold some of it.
      this.compiled.clear();
      this.cursors.clear();
      this.hostIdCache = null;
      for (const item of batch) item.reject(error);
      return;
    }
    const changed = new Set<number>();
    outcomes.forEach((o, i) => {
      if (o.ok) {
        for (const h of o.hosts) changed.add(h);
        batch[i]!.resolve(o.value);
      } else {
        batch[i]!.reject(o.error);
      }
    });
    if (changed.size) this.onHostsChanged([...changed]);
  }

  revision(): number {
    return Number(this.sql(`SELECT value FROM meta WHERE key = 'revision'`).pluck().get());
  }

  // ------------------------------------------------------------------ tenants

  listTenants(): TenantRow[] {
    return this.sql('SELECT * FROM tenants ORDER BY name').all() as TenantRow[];
  }

  tenantNames(): string[] {
    return this.sql('SELECT name FROM tenants ORDER BY name').pluck().all() as string[];
  }

  tenant(name: string): TenantRow {
    const row = this.sql('SELECT * FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
    if (!row) throw new NotFoundError(`tenant "${name}" does not exist`);
    return row;
  }

  createTenant(actor: Actor, name: string, prefixLength?: number): Promise<TenantRow> {
    return this.write(actor, 'tenant.create', name, () => {
      if (this.sql('SELECT 1 FROM tenants WHERE name = ?').get(name)) throw new ConflictError(`tenant "${name}" already exists`);
      const taken = this.sql('SELECT subnet FROM tenants').pluck().all() as string[];
      const subnet = allocateTenantSubnet(this.pool, prefixLength ?? this.ipam.tenantPrefix, taken);
      this.sql('INSERT INTO tenants (name, subnet, created_at) VALUES (?, ?, ?)').run(name, subnet, this.iso());
      // Every node's list of CNI networks grows.
      const nodes = this.sql(`SELECT id FROM hosts WHERE kind = 'node'`).pluck().all() as number[];
      return { result: this.tenant(name), hosts: nodes, detail: { subnet } };
    });
  }

  deleteTenant(actor: Actor, name: string, force: boolean): Promise<void> {
    return this.write(actor, 'tenant.delete', name, () => {
      const t = this.tenant(name);
      const n = this.sql('SELECT COUNT(*) FROM workloads WHERE tenant_id = ?').pluck().get(t.id) as number;
      if (n > 0 && !force) throw new ConflictError(`tenant "${name}" still has ${n} workload(s); delete them or pass force=true`);
      const hosts = [...this.memberHostIds(t.id), ...(this.sql(`SELECT id FROM hosts WHERE kind = 'node'`).pluck().all() as number[])];
      this.sql('DELETE FROM tenants WHERE id = ?').run(t.id);
      this.compiled.delete(t.id);
      return { result: undefined, hosts, detail: { workloads: n } };
    });
  }

  private memberHostIds(tenantId: number): number[] {
    return this.sql('SELECT host_id FROM memberships WHERE tenant_id = ?').pluck().all(tenantId) as number[];
  }

  // ------------------------------------------------------------------ tokens

  createTenantToken(actor: Actor, tenant: string, name: string, hash: string, expiresAt: string | null): Promise<TenantRow> {
    return this.write(actor, 'token.create', `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      this.sql(`INSERT INTO tokens (hash, kind, tenant_id, name, expires_at, created_at) VALUES (?, 'tenant', ?, ?, ?, ?)`).run(hash, t.id, name, expiresAt, this.iso());
      return { result: t, detail: { expiresAt } };
    });
  }

  createEnrollmentToken(actor: Actor, kind: HostKind, name: string, hash: string, expiresAt: string): Promise<void> {
    return this.write(actor, 'enrollment-token.create', `${kind}/${name}`, () => {
      if (this.sql('SELECT 1 FROM hosts WHERE name = ?').get(name)) throw new ConflictError(`a host named "${name}" is already enrolled`);
      this.sql(`INSERT INTO tokens (hash, kind, host_kind, name, expires_at, created_at) VALUES (?, 'enroll', ?, ?, ?, ?)`).run(hash, kind, name, expiresAt, this.iso());
      return { result: undefined, detail: { expiresAt } };
    });
  }

  /** A live tenant token by hash, with its tenant's name. */
  tenantToken(hash: string): { tenant: string; name: string } | undefined {
    const row = this.sql(
      `SELECT t.name AS tenant, k.name AS name, k.expires_at AS expires_at FROM tokens k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ? AND k.kind = 'tenant'`,
    ).get(hash) as { tenant: string; name: string; expires_at: string | null } | undefined;
    if (!row || (row.expires_at !== null && Date.parse(row.expires_at) <= this.now())) return undefined;
    return { tenant: row.tenant, name: row.name };
  }

  // ------------------------------------------------------------------ hosts

  enroll(input: { tokenHash: string; name: string; kind?: HostKind; identityKey: string; endpointHost: string | null; portBase: number | null; mgmtAddress: string | null; publicAddress: string | null }): Promise<HostRow> {
    return this.write({ id: `enroll:${input.name}` }, 'host.enroll', input.name, () => {
      const token = this.sql(`SELECT * FROM tokens WHERE hash = ? AND kind = 'enroll'`).get(input.tokenHash) as TokenRow | undefined;
      if (!token || token.used_at !== null || (token.expires_at !== null && Date.parse(token.expires_at) <= this.now())) {
        throw new UnauthorizedError('enrollment token is unknown, expired or already used');
      }
      if (token.name !== input.name) throw new ForbiddenError(`this enrollment token is for "${token.name}", not "${input.name}"`);
      if (input.kind && token.host_kind !== input.kind) throw new ForbiddenError(`this enrollment token is for a ${token.host_kind}, not a ${input.kind}`);
      if (this.sql('SELECT 1 FROM hosts WHERE name = ?').get(input.name)) throw new ConflictError(`a host named "${input.name}" is already enrolled`);
      if (this.sql('SELECT 1 FROM hosts WHERE identity_key = ?').get(input.identityKey)) {
        throw new ConflictError('identityKey: this identity key is already enrolled under another name');
      }
      this.sql('UPDATE tokens SET used_at = ? WHERE id = ?').run(this.iso(), token.id);
      this.sql(
        `INSERT INTO hosts (name, kind, identity_key, endpoint_host, port_base, mgmt_address, public_address, created_at, last_seen)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(input.name, token.host_kind, input.identityKey, input.endpointHost, input.portBase ?? 51820, input.mgmtAddress, input.publicAddress, this.iso(), this.iso());
      const host = this.host(input.name);
      this.hostIdCache = null;
      // Give it a first document (version > 0) so its long-poll returns at once.
      return { result: host, hosts: [host.id], detail: { kind: token.host_kind, endpoint: input.endpointHost } };
    });
  }

  listHosts(kind: HostKind): HostRow[] {
    return this.sql('SELECT * FROM hosts WHERE kind = ? ORDER BY name').all(kind) as HostRow[];
  }

  host(name: string, kind?: HostKind): HostRow {
    const row = this.sql('SELECT * FROM hosts WHERE name = ?').get(name) as HostRow | undefined;
    if (!row || (kind && row.kind !== kind)) throw new NotFoundError(`${kind ?? 'host'} "${name}" does not exist`);
    return row;
  }

  hostById(id: number): HostRow | undefined {
    return this.sql('SELECT * FROM hosts WHERE id = ?').get(id) as HostRow | undefined;
  }

  findHost(name: string): HostRow | undefined {
    return this.sql('SELECT * FROM hosts WHERE name = ?').get(name) as HostRow | undefined;
  }

  deleteHost(actor: Actor, name: string, kind: HostKind): Promise<void> {
    return this.write(actor, `${kind}.delete`, name, () => {
      const h = this.host(name, kind);
      const refs = this.sql(
        `SELECT 'exposure ' || t.name || '/' || e.name FROM exposure_gateways g JOIN exposures e ON e.id = g.exposure_id JOIN tenants t ON t.id = e.tenant_id WHERE g.host_id = ?
         UNION ALL SELECT 'egress ' || t.name || '/' || r.name FROM egress_gateways g JOIN egress_rules r ON r.id = g.egress_id JOIN tenants t ON t.id = r.tenant_id WHERE g.host_id = ?`,
      ).pluck().all(h.id, h.id) as string[];
      if (refs.length) throw new ConflictError(`${kind} "${name}" is still used by ${refs.join(', ')}`);
      const tenants = this.sql('SELECT tenant_id FROM memberships WHERE host_id = ?').pluck().all(h.id) as number[];
      const affected = tenants.flatMap((t) => this.memberHostIds(t)).filter((id) => id !== h.id);
      const workloads = this.sql('SELECT COUNT(*) FROM workloads WHERE host_id = ?').pluck().get(h.id) as number;
      this.sql('DELETE FROM hosts WHERE id = ?').run(h.id);
      this.hostIdCache = null;
      return { result: undefined, hosts: affected, tenants, detail: { workloads } };
    });
  }

  /** Record that a host was heard from (authenticated request). */
  touchHost(id: number): void {
    this.sql('UPDATE hosts SET last_seen = ? WHERE id = ?').run(this.iso(), id);
  }

  reportStatus(host: HostRow, report: { appliedVersion: number; errors: string[]; drops: Record<string, number>; details?: unknown }): void {
    const status = report.errors.length ? 'degraded' : 'ready';
    const detail = JSON.stringify({ errors: report.errors, drops: report.drops, details: report.details ?? null });
    this.sql('UPDATE hosts SET applied_version = ?, status = ?, status_detail = ?, last_seen = ? WHERE id = ?').run(report.appliedVersion, status, detail, this.iso(), host.id);
  }

  /** A host's tenants; `publicKey` is the key its peers have, `nextPublicKey` a rotation's key it has not confirmed yet. */
  memberships(hostId: number): { tenant: string; slice: string; address: string; listenPort: number; publicKey: string | null; nextPublicKey: string | null }[] {
    return this.sql(
      `SELECT t.name AS tenant, m.slice, m.address, m.listen_port AS listenPort, m.public_key AS publicKey, m.next_public_key AS nextPublicKey
       FROM memberships m JOIN tenants t ON t.id = m.tenant_id WHERE m.host_id = ? ORDER BY t.name`,
    ).all(hostId) as { tenant: string; slice: string; address: string; listenPort: number; publicKey: string | null; nextPublicKey: string | null }[];
  }

  /**
   * A host registers the WireGuard key of its tenant interface. Rotation goes in two steps, so that
   * the two ends of a tunnel never start a handshake at the same moment (two crossing initiations
   * leave each side waiting for the other's data: WireGuard's 5 s retry):
   *  1. `inUse` false: the key is held as the host's next key — its own document names it, its
   *     peers' do not; the host switches to it (its handshake to the peers fails, and WireGuard
   *     then starts no other one for 5 s);
   *  2. `inUse` true, once the host uses it: every member gets it, and the peers' handshakes to
   *     the host — the only ones in flight — complete.
   * A key in use always becomes the one the peers have (the first key, a confirmation, or a key the
   * coordinator did not know, e.g. after a restore); the current key in use drops a waiting next key.
   */
  registerKey(host: HostRow, tenant: string, publicKey: string, inUse = true): Promise<void> {
    return this.write({ id: `host:${host.name}` }, 'key.register', `${tenant}/${host.name}`, () => {
      const t = this.tenant(tenant);
      const m = this.sql('SELECT public_key, next_public_key FROM memberships WHERE tenant_id = ? AND host_id = ?').get(t.id, host.id) as
        | { public_key: string | null; next_public_key: string | null }
        | undefined;
      if (!m) throw new NotFoundError(`${host.kind} "${host.name}" is not a member of tenant "${tenant}"`);
      const unchanged = inUse ? m.public_key === publicKey && m.next_public_key === null : publicKey === m.public_key || publicKey === m.next_public_key;
      if (unchanged) return { result: undefined };
      const clash = this.sql('SELECT 1 FROM memberships WHERE tenant_id = ? AND ? IN (public_key, next_public_key) AND host_id != ?').get(t.id, publicKey, host.id);
      if (clash) throw new ConflictError('publicKey: another member of this tenant already uses this key');
      const setKeys = (current: string | null, next: string | null): void => {
        this.sql('UPDATE memberships SET public_key = ?, next_public_key = ?, key_updated_at = ? WHERE tenant_id = ? AND host_id = ?').run(current, next, this.iso(), t.id, host.id);
      };
      if (!inUse && m.public_key !== null) {
        setKeys(m.public_key, publicKey);
        return { result: undefined, hosts: [host.id], tenants: [t.id], detail: { next: publicKey } };
      }
      setKeys(publicKey, null);
      if (m.public_key === publicKey) return { result: undefined, hosts: [host.id], tenants: [t.id], detail: { nextDropped: m.next_public_key } };
      return { result: undefined, hosts: this.memberHostIds(t.id), tenants: [t.id], detail: { rotated: m.public_key !== null, publicKey } };
    });
  }

  /** Inside a write: make `host` a member of `tenant`, allocating its slice/address and port. Returns true if new. */
  private ensureMembership(t: TenantRow, h: Pick<HostRow, 'id' | 'kind' | 'port_base'>): boolean {
    if (this.sql('SELECT 1 FROM memberships WHERE tenant_id = ? AND host_id = ?').get(t.id, h.id)) return false;
    const ports = this.sql('SELECT listen_port FROM memberships WHERE host_id = ?').pluck().all(h.id) as number[];
    const listenPort = allocateListenPort(h.port_base, ports);
    let slice: string;
    let address: string;
    if (h.kind === 'node') {
      const taken = this.sql(`SELECT slice FROM memberships m JOIN hosts h ON h.id = m.host_id WHERE m.tenant_id = ? AND h.kind = 'node'`).pluck().all(t.id) as string[];
      slice = allocateNodeSlice(t.subnet, this.ipam.slicePrefix, taken);
      address = nodeAddress(slice);
    } else {
      const taken = this.sql(`SELECT address FROM memberships m JOIN hosts h ON h.id = m.host_id WHERE m.tenant_id = ? AND h.kind = 'gateway'`).pluck().all(t.id) as string[];
      address = allocateGatewayAddress(t.subnet, this.ipam.slicePrefix, taken);
      slice = `${address}/32`;
    }
    this.sql('INSERT INTO memberships (tenant_id, host_id, slice, address, listen_port) VALUES (?, ?, ?, ?, ?)').run(t.id, h.id, slice, address, listenPort);
    return true;
  }

  /** Inside a write: drop gateway memberships of `t` no exposure or egress rule uses any more. */
  private pruneGatewayMemberships(t: TenantRow): number[] {
    const stale = this.sql(
      `SELECT m.host_id FROM memberships m JOIN hosts h ON h.id = m.host_id
       WHERE m.tenant_id = ? AND h.kind = 'gateway'
         AND m.host_id NOT IN (SELECT g.host_id FROM exposure_gateways g JOIN exposures e ON e.id = g.exposure_id WHERE e.tenant_id = ?)
         AND m.host_id NOT IN (SELECT g.host_id FROM egress_gateways g JOIN egress_rules r ON r.id = g.egress_id WHERE r.tenant_id = ?)`,
    ).pluck().all(t.id, t.id, t.id) as number[];
    for (const h of stale) this.sql('DELETE FROM memberships WHERE tenant_id = ? AND host_id = ?').run(t.id, h);
    return stale;
  }

  // ------------------------------------------------------------------ workloads

  listWorkloads(tenant: string): WorkloadView[] {
    const t = this.tenant(tenant);
    return (this.sql(`SELECT w.*, h.name AS node FROM workloads w JOIN hosts h ON h.id = w.host_id WHERE w.tenant_id = ? ORDER BY w.name`).all(t.id) as (WorkloadRow & { node: string })[]).map((r) =>
      workloadView(t.name, r),
    );
  }

  workload(tenant: string, name: string): WorkloadView {
    const t = this.tenant(tenant);
    const r = this.sql(`SELECT w.*, h.name AS node FROM workloads w JOIN hosts h ON h.id = w.host_id WHERE w.tenant_id = ? AND w.name = ?`).get(t.id, name) as
      | (WorkloadRow & { node: string })
      | undefined;
    if (!r) throw new NotFoundError(`workload "${name}" does not exist in tenant "${tenant}"`);
    return workloadView(t.name, r);
  }

  /**
   * Place a workload on a node and give it an address. With `idempotent`, an
   * existing workload of that name on that node is returned unchanged (the
   * CNI path retries ADD).
   */
  createWorkload(actor: Actor, tenant: string, name: string, node: string, labels: Labels, idempotent = false): Promise<{ workload: WorkloadView; created: boolean }> {
    return this.write<{ workload: WorkloadView; created: boolean }>(actor, 'workload.create', `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      // Only the columns used here: a host row carries its last status report, which can be large.
      const h = this.sql(`SELECT id, kind, port_base FROM hosts WHERE name = ? AND kind = 'node'`).get(node) as Pick<HostRow, 'id' | 'kind' | 'port_base'> | undefined;
      if (!h) throw new NotFoundError(`node "${node}" does not exist`);
      const existing = this.sql('SELECT w.*, ? AS node FROM workloads w WHERE tenant_id = ? AND name = ?').get(node, t.id, name) as (WorkloadRow & { node: string }) | undefined;
      if (existing) {
        if (idempotent && existing.host_id === h.id) return { result: { workload: workloadView(tenant, existing), created: false } };
        throw new ConflictError(`workload "${name}" already exists in tenant "${tenant}"`);
      }
      const before = this.compiledTenant(t);
      const sliceOf = this.sql('SELECT slice FROM memberships WHERE tenant_id = ? AND host_id = ?').pluck();
      const current = sliceOf.get(t.id, h.id) as string | undefined;
      const newMember = current === undefined;
      if (newMember) this.ensureMembership(t, h);
      const slice = current ?? (sliceOf.get(t.id, h.id) as string);
      const used = this.sql('SELECT 1 FROM workloads WHERE tenant_id = ? AND address = ?').pluck();
      const released = this.sql('SELECT released_at_ms FROM released_addresses WHERE tenant_id = ? AND address = ?').pluck();
      const quarantineStart = this.now() - this.ipam.quarantineMs;
      const cursor = `${t.id}/${h.id}`;
      // An address whose quarantine is over may be reused; its release record goes then.
      let expired: string | null = null;
      const isTaken = (ip: string): boolean => {
        if (used.get(t.id, ip) !== undefined) return true;
        const at = released.get(t.id, ip) as number | undefined;
        if (at === undefined) return false;
        if (at > quarantineStart) return true;
        expired = ip;
        return false;
      };
      const address = allocateWorkloadAddress(this.parsedSlice(slice), isTaken, node, this.cursors.get(cursor));
      if (expired === address) this.sql('DELETE FROM released_addresses WHERE tenant_id = ? AND address = ?').run(t.id, address);
      const createdAt = this.iso();
      this.sql('INSERT INTO workloads (tenant_id, host_id, name, labels, address, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(t.id, h.id, name, JSON.stringify(labels), address, createdAt);
      const model: WorkloadModel = { name, node, address, labels };
      const hosts = newMember ? this.memberHostIds(t.id) : this.hostIds(hostsAffectedByWorkload(before, model));
      const workload: WorkloadView = { name, tenant, node, address, labels, createdAt };
      // Only after commit: a rolled-back allocation must not move the cursor.
      const advance = () => this.cursors.set(cursor, address);
      const after = (revision: number | null) => {
        advance();
        if (!newMember) this.patchCompiled(t.id, withWorkload(before, model, 'add'), revision);
      };
      return { result: { workload, created: true }, hosts, tenants: [t.id], detail: { node, address, labels }, after };
    });
  }

  deleteWorkload(actor: Actor, tenant: string, name: string, onlyNode?: HostRow): Promise<boolean> {
    return this.write(actor, 'workload.delete', `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      const r = this.sql(`SELECT w.*, h.name AS node FROM workloads w JOIN hosts h ON h.id = w.host_id WHERE w.tenant_id = ? AND w.name = ?`).get(t.id, name) as
        | (WorkloadRow & { node: string })
        | undefined;
      if (!r) {
        if (onlyNode) return { result: false }; // node-side deletes are idempotent
        throw new NotFoundError(`workload "${name}" does not exist in tenant "${tenant}"`);
      }
      if (onlyNode && r.host_id !== onlyNode.id) throw new ForbiddenError(`workload "${name}" runs on another node`);
      const before = this.compiledTenant(t);
      this.sql('DELETE FROM workloads WHERE id = ?').run(r.id);
      this.sql('INSERT INTO released_addresses (tenant_id, address, released_at_ms) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET released_at_ms = excluded.released_at_ms').run(t.id, r.address, this.now());
      const model: WorkloadModel = { name, node: r.node, address: r.address, labels: JSON.parse(r.labels) as Labels };
      const hosts = this.hostIds(hostsAffectedByWorkload(before, model));
      const after = (revision: number | null) => this.patchCompiled(t.id, withWorkload(before, model, 'remove'), revision);
      return { result: true, hosts, tenants: [t.id], detail: { node: r.node, address: r.address }, after };
    });
  }

  /** Host ids by name, from memory: hosts change rarely (enroll, delete), workloads often. */
  private hostIds(names: Iterable<string>): number[] {
    if (!this.hostIdCache) {
      this.hostIdCache = new Map((this.sql('SELECT name, id FROM hosts').all() as { name: string; id: number }[]).map((r) => [r.name, r.id]));
    }
    const ids: number[] = [];
    for (const n of names) {
      const id = this.hostIdCache.get(n);
      if (id !== undefined) ids.push(id);
    }
    return ids;
  }


  /**
   * A node registers the router-client key of one of its tunnel-mode entry
   * points; the coordinator issues the grant (signed with `sign`) binding
   * that key to the exposure, and the exposure's gateways learn the key.
   * Registering the same key again renews the grant.
   */
  registerRouterKey(host: HostRow, tenant: string, exposure: string, workload: string, publicKey: string, issue: (grant: RouterGrant) => RouterCredential, validDays = 30): Promise<RouterCredential> {
    return this.write({ id: `host:${host.name}` }, 'router-key.register', `${tenant}/${exposure}/${workload}`, () => {
      const t = this.tenant(tenant);
      const e = this.sql('SELECT id, spec FROM exposures WHERE tenant_id = ? AND name = ?').get(t.id, exposure) as { id: number; spec: string } | undefined;
      if (!e) throw new NotFoundError(`exposure "${exposure}" does not exist in tenant "${tenant}"`);
      const spec = JSON.parse(e.spec) as ExposureSpec;
      if (spec.mode !== 'tunnel') throw new ConflictError(`exposure "${exposure}" is in ${spec.mode} mode; router keys are for tunnel mode`);
      const w = this.sql('SELECT id, host_id, labels FROM workloads WHERE tenant_id = ? AND name = ?').get(t.id, workload) as { id: number; host_id: number; labels: string } | undefined;
      if (!w) throw new NotFoundError(`workload "${workload}" does not exist in tenant "${tenant}"`);
      if (w.host_id !== host.id) throw new ForbiddenError(`workload "${workload}" runs on another node`);
      if (!matchesSelector(spec.target.selector, JSON.parse(w.labels) as Labels)) throw new ConflictError(`workload "${workload}" is not an entry point of exposure "${exposure}"`);
      const clash = this.sql('SELECT 1 FROM router_keys WHERE public_key = ? AND NOT (exposure_id = ? AND workload_id = ?)').get(publicKey, e.id, w.id);
      if (clash) throw new ConflictError('publicKey: this router key is already registered for another entry point');
      const issuedAt = new Date(this.now());
      const expiresAt = new Date(this.now() + validDays * 86_400_000);
      const credential = issue({ v: 1, tenant, exposure, workload, node: host.name, publicKey, issuedAt: issuedAt.toISOString(), expiresAt: expiresAt.toISOString() });
      this.sql(
        `INSERT INTO router_keys (exposure_id, workload_id, public_key, credential, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (exposure_id, workload_id) DO UPDATE SET public_key = excluded.public_key, credential = excluded.credential, expires_at = excluded.expires_at`,
      ).run(e.id, w.id, publicKey, JSON.stringify(credential), expiresAt.toISOString());
      const gateways = this.sql('SELECT host_id FROM exposure_gateways WHERE exposure_id = ?').pluck().all(e.id) as number[];
      return { result: credential, hosts: [host.id, ...gateways], tenants: [t.id], detail: { publicKey, expiresAt: expiresAt.toISOString() } };
    });
  }

  // ------------------------------------------------------------------ policies, exposures, egress

  listSpecs<T>(kind: SpecKind, tenant: string): { name: string; spec: T; updatedAt: string }[] {
    const t = this.tenant(tenant);
    return (this.sql(`SELECT name, spec, updated_at FROM ${kind} WHERE tenant_id = ? ORDER BY name`).all(t.id) as { name: string; spec: string; updated_at: string }[]).map((r) => ({
      name: r.name,
      spec: JSON.parse(r.spec) as T,
      updatedAt: r.updated_at,
    }));
  }

  getSpec<T>(kind: SpecKind, tenant: string, name: string): { name: string; spec: T; updatedAt: string } {
    const t = this.tenant(tenant);
    const r = this.sql(`SELECT name, spec, updated_at FROM ${kind} WHERE tenant_id = ? AND name = ?`).get(t.id, name) as { name: string; spec: string; updated_at: string } | undefined;
    if (!r) throw new NotFoundError(`${singular(kind)} "${name}" does not exist in tenant "${tenant}"`);
    return { name: r.name, spec: JSON.parse(r.spec) as T, updatedAt: r.updated_at };
  }

  putPolicy(actor: Actor, tenant: string, name: string, spec: PolicySpec): Promise<{ created: boolean }> {
    return this.write(actor, 'policy.put', `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      const created = this.upsertSpec('policies', t, name, spec);
      return { result: { created }, hosts: this.memberHostIds(t.id), tenants: [t.id], detail: spec };
    });
  }

  putExposure(actor: Actor, tenant: string, name: string, spec: ExposureSpec): Promise<{ created: boolean }> {
    return this.write(actor, 'exposure.put', `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      const gateways = spec.gateways.map((g) => this.gatewayFor(g, 'gateways'));
      const created = this.upsertSpec('exposures', t, name, spec);
      const id = this.sql('SELECT id FROM exposures WHERE tenant_id = ? AND name = ?').pluck().get(t.id, name) as number;
      this.sql('DELETE FROM exposure_hostnames WHERE exposure_id = ?').run(id);
      this.sql('DELETE FROM exposure_ports WHERE exposure_id = ?').run(id);
      this.sql('DELETE FROM exposure_gateways WHERE exposure_id = ?').run(id);
      for (const hostname of spec.hostnames) {
        const owner = this.sql('SELECT t.name || \'/\' || e.name FROM exposure_hostnames x JOIN exposures e ON e.id = x.exposure_id JOIN tenants t ON t.id = e.tenant_id WHERE x.hostname = ?').pluck()
          .get(hostname) as string | undefined;
        if (owner) throw new ConflictError(`hostnames: "${hostname}" is already served by exposure ${owner.split('/')[0] === tenant ? owner : 'of another tenant'}`);
        this.sql('INSERT INTO exposure_hostnames (hostname, exposure_id) VALUES (?, ?)').run(hostname, id);
      }
      for (const g of gateways) {
        this.sql('INSERT INTO exposure_gateways (exposure_id, host_id) VALUES (?, ?)').run(id, g.id);
        if (spec.publicPort !== null) {
          const clash = this.sql('SELECT exposure_id FROM exposure_ports WHERE host_id = ? AND port = ?').get(g.id, spec.publicPort);
          if (clash) throw new ConflictError(`publicPort: ${spec.publicPort} is already used on gateway "${g.name}"`);
          this.sql('INSERT INTO exposure_ports (host_id, port, exposure_id) VALUES (?, ?, ?)').run(g.id, spec.publicPort, id);
        }
        this.ensureMembership(t, g);
      }
      const pruned = this.pruneGatewayMemberships(t);
      return { result: { created }, hosts: [...this.memberHostIds(t.id), ...pruned], tenants: [t.id], detail: spec };
    });
  }

  putEgress(actor: Actor, tenant: string, name: string, spec: EgressSpec): Promise<{ created: boolean }> {
    return this.write(actor, 'egress.put', `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      const gateways = spec.gateways.map((g) => this.gatewayFor(g, 'gateways'));
      const hosts = this.hostAddresses().filter((a) => a.what !== 'mesh');
      for (const [i, d] of spec.destinations.entries()) {
        const field = `destinations[${i}].cidr`;
        const cidr = parseCidr(d.cidr, field);
        if (cidrsOverlap(cidr, this.pool)) {
          throw new ValidationError(`${field}: ${d.cidr} overlaps the mesh address pool ${this.ipam.pool}; egress is for destinations outside the mesh`, field);
        }
        const special = NEVER_EGRESS.find((n) => cidrsOverlap(cidr, parseCidr(n.cidr, field)));
        if (special) throw new ValidationError(`${field}: ${d.cidr} overlaps ${special.cidr} (${special.what}), which egress never reaches`, field);
        // Containers never reach netwall's own hosts, egress included: a rule may not cover one.
        const host = hosts.find((h) => cidrsOverlap(cidr, parseCidr(`${h.address}/32`, field)));
        if (host) throw new ValidationError(`${field}: ${d.cidr} contains ${host.kind} ${host.host}'s ${host.what} address ${host.address}; containers never reach netwall hosts`, field);
      }
      const created = this.upsertSpec('egress_rules', t, name, spec);
      const id = this.sql('SELECT id FROM egress_rules WHERE tenant_id = ? AND name = ?').pluck().get(t.id, name) as number;
      this.sql('DELETE FROM egress_gateways WHERE egress_id = ?').run(id);
      for (const g of gateways) {
        this.sql('INSERT INTO egress_gateways (egress_id, host_id) VALUES (?, ?)').run(id, g.id);
        this.ensureMembership(t, g);
      }
      const pruned = this.pruneGatewayMemberships(t);
      return { result: { created }, hosts: [...this.memberHostIds(t.id), ...pruned], tenants: [t.id], detail: spec };
    });
  }

  deleteSpec(actor: Actor, kind: SpecKind, tenant: string, name: string): Promise<void> {
    return this.write(actor, `${singular(kind)}.delete`, `${tenant}/${name}`, () => {
      const t = this.tenant(tenant);
      const info = this.sql(`DELETE FROM ${kind} WHERE tenant_id = ? AND name = ?`).run(t.id, name);
      if (info.changes === 0) throw new NotFoundError(`${singular(kind)} "${name}" does not exist in tenant "${tenant}"`);
      const before = this.memberHostIds(t.id);
      const pruned = kind === 'policies' ? [] : this.pruneGatewayMemberships(t);
      return { result: undefined, hosts: [...before, ...pruned], tenants: [t.id] };
    });
  }

  private upsertSpec(kind: SpecKind, t: TenantRow, name: string, spec: unknown): boolean {
    const existed = this.sql(`SELECT 1 FROM ${kind} WHERE tenant_id = ? AND name = ?`).get(t.id, name) !== undefined;
    this.sql(
      `INSERT INTO ${kind} (tenant_id, name, spec, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at`,
    ).run(t.id, name, JSON.stringify(spec), this.iso());
    return !existed;
  }

  private gatewayFor(name: string, field: string): HostRow {
    const h = this.findHost(name);
    if (!h || h.kind !== 'gateway') throw new ValidationError(`${field}: gateway "${name}" does not exist`, field);
    return h;
  }

  // ------------------------------------------------------------------ audit

  audit(limit: number): { id: number; at: string; actor: string; action: string; target: string; detail: unknown }[] {
    return (this.sql('SELECT * FROM audit_log ORDER BY id DESC LIMIT ?').all(limit) as { id: number; at: string; actor: string; action: string; target: string; detail: string | null }[]).map(
      (r) => ({ ...r, detail: r.detail === null ? null : (JSON.parse(r.detail) as unknown) }),
    );
  }

  // ------------------------------------------------------------------ models for rendering

  loadTenantModel(t: TenantRow): TenantModel {
    const members = (
      this.sql(
        `SELECT h.name, h.kind, h.endpoint_host, m.slice, m.address, m.listen_port, m.public_key, m.next_public_key
         FROM memberships m JOIN hosts h ON h.id = m.host_id WHERE m.tenant_id = ? ORDER BY h.name`,
      ).all(t.id) as {
        name: string;
        kind: HostKind;
        endpoint_host: string | null;
        slice: string;
        address: string;
        listen_port: number;
        public_key: string | null;
        next_public_key: string | null;
      }[]
    ).map(
      (r): MemberModel => ({
        host: { name: r.name, kind: r.kind, endpointHost: r.endpoint_host },
        slice: r.slice,
        address: r.address,
        listenPort: r.listen_port,
        publicKey: r.public_key,
        nextPublicKey: r.next_public_key,
      }),
    );
    const workloads = (
      // In name order (the unique index's): the compiled list by name is then built without a sort.
      this.sql('SELECT w.name, h.name AS node, w.address, w.labels FROM workloads w JOIN hosts h ON h.id = w.host_id WHERE w.tenant_id = ? ORDER BY w.name').all(t.id) as {
        name: string;
        node: string;
        address: string;
        labels: string;
      }[]
    ).map((r): WorkloadModel => ({ name: r.name, node: r.node, address: r.address, labels: JSON.parse(r.labels) as Labels }));
    const specs = <T>(kind: SpecKind) =>
      (this.sql(`SELECT name, spec FROM ${kind} WHERE tenant_id = ?`).all(t.id) as { name: string; spec: string }[]).map((r) => ({ name: r.name, spec: JSON.parse(r.spec) as T }));
    const routerKeys = (
      this.sql(
        `SELECT e.name AS exposure, w.name AS workload, k.public_key, k.credential FROM router_keys k
         JOIN exposures e ON e.id = k.exposure_id JOIN workloads w ON w.id = k.workload_id WHERE e.tenant_id = ?`,
      ).all(t.id) as { exposure: string; workload: string; public_key: string; credential: string }[]
    ).map((r): RouterKeyModel => ({ exposure: r.exposure, workload: r.workload, publicKey: r.public_key, credential: JSON.parse(r.credential) as RouterCredential }));
    return {
      id: t.id,
      name: t.name,
      subnet: t.subnet,
      members,
      workloads,
      policies: specs<PolicySpec>('policies'),
      exposures: specs<ExposureSpec>('exposures'),
      egress: specs<EgressSpec>('egress_rules'),
      routerKeys,
    };
  }

  /**
   * After a workload change is in: keep the cache warm with the incrementally
   * updated tenant, at the revision the change gave it. If the shared
   * transaction then fails to commit, flush clears the cache.
   */
  private patchCompiled(tenantId: number, tenant: CompiledTenant, revision: number | null): void {
    if (revision !== null) this.compiled.set(tenantId, { revision, tenant });
  }

  private parsedSlice(slice: string): Cidr {
    let s = this.slices.get(slice);
    if (!s) this.slices.set(slice, (s = parseCidr(slice, 'slice')));
    return s;
  }

  /** The compiled tenant at its current revision (cached until the tenant changes). */
  compiledTenant(t: TenantRow): CompiledTenant {
    const revision = this.sql('SELECT revision FROM tenants WHERE id = ?').pluck().get(t.id) as number;
    const hit = this.compiled.get(t.id);
    if (hit && hit.revision === revision) return hit.tenant;
    const tenant = compileTenant(this.loadTenantModel(t));
    this.compiled.set(t.id, { revision, tenant });
    return tenant;
  }

  /** Every address of every host: mesh addresses per tenant, then underlay endpoint, management and public addresses. */
  hostAddresses(): HostAddressModel[] {
    const mesh = this.sql(
      `SELECT h.name AS host, h.kind, m.address, 'mesh' AS what, t.name AS tenant FROM memberships m JOIN hosts h ON h.id = m.host_id JOIN tenants t ON t.id = m.tenant_id`,
    ).all() as HostAddressModel[];
    const underlay: HostAddressModel[] = [];
    for (const h of this.sql('SELECT name, kind, endpoint_host, mgmt_address, public_address FROM hosts ORDER BY name').all() as Pick<
      HostRow,
      'name' | 'kind' | 'endpoint_host' | 'mgmt_address' | 'public_address'
    >[]) {
      const add = (address: string | null, what: HostAddressModel['what']) => {
        if (address !== null) underlay.push({ host: h.name, kind: h.kind, address, what, tenant: null });
      };
      add(h.endpoint_host, 'endpoint');
      add(h.mgmt_address, 'mgmt');
      add(h.public_address, 'public');
    }
    return [...mesh, ...underlay];
  }

  tenantsOfHost(hostId: number): TenantRow[] {
    return this.sql('SELECT t.* FROM tenants t JOIN memberships m ON m.tenant_id = t.id WHERE m.host_id = ? ORDER BY t.name').all(hostId) as TenantRow[];
  }
}

export interface WorkloadView {
  name: string;
  tenant: string;
  node: string;
  address: string;
  labels: Labels;
  createdAt: string;
}

function workloadView(tenant: string, r: WorkloadRow & { node: string }): WorkloadView {
  return { name: r.name, tenant, node: r.node, address: r.address, labels: JSON.parse(r.labels) as Labels, createdAt: r.created_at };
}

function singular(kind: SpecKind): string {
  return kind === 'policies' ? 'policy' : kind === 'exposures' ? 'exposure' : 'egress rule';
}
