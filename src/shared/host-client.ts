/**
 * The HTTP client nodes and gateways use to talk to the coordinator: every
 * request signed with the host's ed25519 identity, errors rebuilt as typed
 * NetwallErrors, document signatures verified against the coordinator's key.
 */
import type { ProbeReport, SignedAssignment } from './audit.js';
import { signRequest, verifyDocument } from './crypto.js';
import type { DesiredState, HostKind, RouterCredential, SignedDocument } from './desired.js';
import { errorFromBody, NetwallError } from './errors.js';

export interface HostIdentity {
  name: string;
  kind: HostKind;
  /** ed25519 secret key, base64. */
  secretKey: string;
  /** The coordinator's ed25519 public key, learnt at enrollment. */
  coordinatorKey: string;
  coordinatorUrl: string;
}

export class HostClient {
  constructor(private readonly id: HostIdentity) {}

  private get base(): string {
    return `/v1/${this.id.kind === 'node' ? 'nodes' : 'gateways'}/${encodeURIComponent(this.id.name)}`;
  }

  async request<T>(method: string, pathWithQuery: string, body?: unknown, signal?: AbortSignal): Promise<{ status: number; body: T }> {
    const text = body === undefined ? '' : JSON.stringify(body);
    const headers: Record<string, string> = signRequest(this.id.name, this.id.secretKey, method, pathWithQuery, text);
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(new URL(pathWithQuery, this.id.coordinatorUrl), {
      method,
      headers,
      body: body === undefined ? undefined : text,
      signal: signal ?? null,
    });
    const raw = await res.text();
    let parsed: unknown = undefined;
    if (raw) {
      try {
        parsed = JSON.parse(raw);
      } catch {
        throw new NetwallError(`coordinator answered ${res.status} with non-JSON: ${raw.slice(0, 200)}`);
      }
    }
    if (res.status >= 400) throw errorFromBody(res.status, parsed);
    return { status: res.status, body: parsed as T };
  }

  /**
   * Long-poll for a document newer than `after`. Resolves to null when the
   * coordinator had nothing newer within `waitSeconds`. The signature is
   * checked before the document is parsed.
   */
  async desired(after: number, waitSeconds = 25, signal?: AbortSignal): Promise<{ signed: SignedDocument; state: DesiredState } | null> {
    const res = await this.request<SignedDocument>('GET', `${this.base}/desired?after=${after}&wait=${waitSeconds}`, undefined, signal);
    if (res.status === 204) return null;
    return { signed: res.body, state: parseSignedDocument(res.body, this.id.coordinatorKey) };
  }

  /** `inUse` false: a rotation's next key (key-rotation.ts). */
  registerKey(tenant: string, publicKey: string, inUse: boolean): Promise<unknown> {
    return this.request('PUT', `${this.base}/tenants/${encodeURIComponent(tenant)}/key`, { publicKey, inUse });
  }

  reportStatus(status: HostStatusReport): Promise<unknown> {
    return this.request('POST', `${this.base}/status`, status);
  }

  /** Nodes only: place (or find) a workload on this node and get its address. */
  async createWorkload(tenant: string, name: string, labels: Record<string, string>): Promise<WorkloadRecord> {
    const res = await this.request<WorkloadRecord>('POST', `${this.base}/workloads`, { tenant, name, labels });
    return res.body;
  }

  /** Nodes only: register a tunnel entry point's router-client key; answers with the credential issued for it. */
  async registerRouterKey(tenant: string, exposure: string, workload: string, publicKey: string): Promise<RouterCredential> {
    const path = `${this.base}/router-keys/${[tenant, exposure, workload].map(encodeURIComponent).join('/')}`;
    const res = await this.request<{ credential: RouterCredential }>('PUT', path, { publicKey });
    return res.body.credential;
  }

  async deleteWorkload(tenant: string, name: string): Promise<void> {
    await this.request('DELETE', `${this.base}/workloads/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`);
  }

  /** Nodes only: long-poll for reachability-audit assignments (signed; the caller verifies them). */
  async audits(waitSeconds = 25, signal?: AbortSignal): Promise<SignedAssignment[]> {
    const res = await this.request<{ audits: SignedAssignment[] }>('GET', `${this.base}/audits?wait=${waitSeconds}`, undefined, signal);
    return res.status === 204 ? [] : (res.body?.audits ?? []);
  }

  /** Nodes only: results of an audit's probes, in chunks; `done` on the last. */
  async reportAudit(id: string, results: ProbeReport[], done: boolean): Promise<void> {
    await this.request('POST', `${this.base}/audits/${encodeURIComponent(id)}/results`, { results, done });
  }
}

export interface HostStatusReport {
  appliedVersion: number;
  errors: string[];
  drops: Record<string, number>;
  details?: Record<string, unknown>;
}

export interface WorkloadRecord {
  name: string;
  tenant: string;
  node: string;
  address: string;
  labels: Record<string, string>;
  createdAt: string;
}

/** Verify and parse a signed document (also used on the cached copy at start). */
export function parseSignedDocument(signed: SignedDocument, coordinatorKey: string): DesiredState {
  if (typeof signed?.document !== 'string' || typeof signed?.signature !== 'string') {
    throw new NetwallError('desired state: not a signed document');
  }
  if (!verifyDocument(signed, coordinatorKey)) {
    throw new NetwallError('desired state: bad signature (not from our coordinator)');
  }
  return JSON.parse(signed.document) as DesiredState;
}

/** Enrollment: the one unsigned host request, authorised by a single-use token. */
export async function enroll(
  coordinatorUrl: string,
  body: { token: string; name: string; kind?: HostKind; identityKey: string; endpoint?: string; mgmtAddress?: string; publicAddress?: string },
): Promise<{ name: string; kind: HostKind; coordinatorKey: string }> {
  const res = await fetch(new URL('/v1/enroll', coordinatorUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const parsed: unknown = await res.json().catch(() => undefined);
  if (res.status >= 400) throw errorFromBody(res.status, parsed);
  return parsed as { name: string; kind: HostKind; coordinatorKey: string };
}
