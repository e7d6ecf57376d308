/**
 * Who is asking. Three kinds of principal: the admin (bearer token), a tenant
 * (bearer token scoped to one tenant), a host (ed25519 signature over the
 * request, with timestamp and single-use nonce). Routes declare which they
 * accept; everything else is 401/403 before the handler runs.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { constantTimeEqual, hashToken, requestSigningText, SIG_HEADERS, SIGNATURE_WINDOW_MS, verify } from '../shared/crypto.js';
import type { HostKind } from '../shared/desired.js';
import { ForbiddenError, RateLimitedError, UnauthorizedError } from '../shared/errors.js';
import type { RateLimiter } from './ratelimit.js';
import type { HostRow, Store } from './store.js';

export type Principal =
  | { kind: 'admin' }
  | { kind: 'tenant'; tenant: string; tokenName: string }
  | { kind: 'host'; host: HostRow };

/** What a route accepts. `tenant` also admits the admin. */
export type Access = 'public' | 'admin' | 'tenant' | 'node' | 'gateway' | 'host';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    rawBody?: string;
  }
  interface FastifyContextConfig {
    access?: Access;
  }
}

export function actorOf(p: Principal | undefined): { id: string } {
  if (!p) return { id: 'anonymous' };
  if (p.kind === 'admin') return { id: 'admin' };
  if (p.kind === 'tenant') return { id: `tenant:${p.tenant}/${p.tokenName}` };
  return { id: `host:${p.host.name}` };
}

export class Authenticator {
  private readonly adminHash: string;
  private readonly nonces = new Map<string, number>();
  private readonly startedAt: number;

  constructor(
    private readonly store: Store,
    adminToken: string,
    private readonly failures: RateLimiter,
    private readonly now: () => number = Date.now,
  ) {
    this.adminHash = hashToken(adminToken);
    this.startedAt = now();
  }

  private ip(req: FastifyRequest): string {
    return req.ip || 'unknown';
  }

  /** Refuse early when this client has failed too often. */
  checkBlocked(req: FastifyRequest): void {
    const wait = this.failures.blockedFor(this.ip(req));
    if (wait > 0) throw new RateLimitedError(`too many failed authentications from ${this.ip(req)}; retry in ${wait}s`, wait);
  }

  private fail(req: FastifyRequest, message: string): never {
    this.failures.hit(this.ip(req));
    throw new UnauthorizedError(message);
  }

  /** Bearer tokens: for `admin` and `tenant` routes (onRequest, before the body is read). */
  bearer(req: FastifyRequest, access: 'admin' | 'tenant'): Principal {
    const header = req.headers.authorization;
    if (!header) this.fail(req, 'missing Authorization: Bearer <token>');
    const m = /^Bearer ([A-Za-z0-9_-]{10,200})$/.exec(header);
    if (!m) this.fail(req, 'malformed Authorization header; expected "Bearer <token>"');
    const hash = hashToken(m[1]!);
    if (constantTimeEqual(hash, this.adminHash)) return { kind: 'admin' };
    const t = this.store.tenantToken(hash);
    if (!t) this.fail(req, 'unknown or expired token');
    if (access === 'admin') throw new ForbiddenError('this route needs the admin token');
    const wanted = (req.params as { tenant?: string }).tenant;
    if (wanted !== t.tenant) throw new ForbiddenError(`this token is scoped to tenant "${t.tenant}"`);
    return { kind: 'tenant', tenant: t.tenant, tokenName: t.name };
  }

  /** Host signatures: checked once the raw body is known (preValidation). */
  host(req: FastifyRequest, access: 'node' | 'gateway' | 'host'): Principal {
    const h = (name: string) => {
      const v = req.headers[name];
      return typeof v === 'string' ? v : undefined;
    };
    const hostName = h(SIG_HEADERS.host);
    const timestamp = h(SIG_HEADERS.timestamp);
    const nonce = h(SIG_HEADERS.nonce);
    const signature = h(SIG_HEADERS.signature);
    if (!hostName || !timestamp || !nonce || !signature) this.fail(req, 'missing host signature headers');
    if (!/^\d{1,15}$/.test(timestamp) || !/^[0-9a-f]{32}$/.test(nonce)) this.fail(req, 'malformed host signature headers');
    const ts = Number(timestamp);
    const now = this.now();
    if (Math.abs(now - ts) > SIGNATURE_WINDOW_MS || ts < this.startedAt - 1000) {
      this.fail(req, 'signed request timestamp is outside the accepted window (check the host clock)');
    }
    const host = this.store.findHost(hostName);
    const text = requestSigningText(req.method, req.url, req.rawBody ?? '', timestamp, nonce);
    if (!host || !verify(text, signature, host.identity_key)) this.fail(req, 'bad host signature');
    if (this.nonces.has(nonce)) this.fail(req, 'replayed request (nonce already used)');
    this.nonces.set(nonce, ts + SIGNATURE_WINDOW_MS);
    if (this.nonces.size > 10_000) for (const [n, exp] of this.nonces) if (exp < now) this.nonces.delete(n);
    const wantKind: HostKind | undefined = access === 'host' ? undefined : access;
    if (wantKind && host.kind !== wantKind) throw new ForbiddenError(`this route is for ${wantKind}s`);
    const wanted = (req.params as { name?: string }).name;
    if (wanted !== undefined && wanted !== host.name) throw new ForbiddenError(`host "${host.name}" may only use its own routes`);
    this.store.touchHost(host.id);
    return { kind: 'host', host };
  }
}

/** Fastify hooks wiring an Authenticator to each route's `config.access`. */
export function authHooks(auth: Authenticator) {
  return {
    onRequest: async (req: FastifyRequest, _reply: FastifyReply) => {
      const access = req.routeOptions.config?.access ?? 'admin';
      if (access === 'public') return;
      auth.checkBlocked(req);
      if (access === 'admin' || access === 'tenant') req.principal = auth.bearer(req, access);
    },
    preValidation: async (req: FastifyRequest, _reply: FastifyReply) => {
      const access = req.routeOptions.config?.access ?? 'admin';
      if (access === 'node' || access === 'gateway' || access === 'host') req.principal = auth.host(req, access);
    },
  };
}
