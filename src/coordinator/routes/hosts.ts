import type { FastifyInstance } from 'fastify';
import { generateToken, hashToken } from '../../shared/crypto.js';
import type { HostKind } from '../../shared/desired.js';
import { RateLimitedError } from '../../shared/errors.js';
import { isIpv4, parseEndpoint } from '../../shared/ipv4.js';
import { ValidationError } from '../../shared/errors.js';
import { actorOf } from '../auth.js';
import { answers, bodies, params } from '../schemas.js';
import type { HostRow, Store } from '../store.js';

const security = [{ bearer: [] }];

export function hostView(store: Store, h: HostRow) {
  const detail = h.status_detail ? (JSON.parse(h.status_detail) as { errors?: string[]; drops?: Record<string, number> }) : {};
  return {
    name: h.name,
    kind: h.kind,
    identityKey: h.identity_key,
    endpoint: h.endpoint_host,
    mgmtAddress: h.mgmt_address,
    publicAddress: h.public_address,
    status: h.status,
    lastSeen: h.last_seen,
    version: h.version,
    appliedVersion: h.applied_version,
    errors: detail.errors ?? [],
    drops: detail.drops ?? {},
    tenants: store.memberships(h.id),
  };
}

export async function hostRoutes(app: FastifyInstance): Promise<void> {
  const { store, enrollLimiter, signingKey, now } = app.netwall;

  app.post<{ Body: { kind: HostKind; name: string; ttlSeconds?: number } }>(
    '/v1/enrollment-tokens',
    { config: { access: 'admin' }, schema: { body: bodies.createEnrollmentToken, security } },
    async (req, reply) => {
      const token = generateToken('enroll');
      const expiresAt = new Date(now() + (req.body.ttlSeconds ?? 3600) * 1000).toISOString();
      await store.createEnrollmentToken(actorOf(req.principal), req.body.kind, req.body.name, hashToken(token), expiresAt);
      return reply.status(201).send({ token, kind: req.body.kind, name: req.body.name, expiresAt });
    },
  );

  app.post<{ Body: { token: string; name: string; kind?: HostKind; identityKey: string; endpoint?: string; mgmtAddress?: string; publicAddress?: string } }>(
    '/v1/enroll',
    {
      config: { access: 'public' },
      // Rate-limit before the body is even validated: enrollment is the one unauthenticated write.
      onRequest: async (req) => {
        const wait = enrollLimiter.blockedFor(req.ip);
        if (wait > 0) throw new RateLimitedError(`too many enrollment attempts from ${req.ip}; retry in ${wait}s`, wait);
        enrollLimiter.hit(req.ip);
      },
      schema: { body: bodies.enroll },
    },
    async (req, reply) => {
      const b = req.body;
      const endpoint = b.endpoint ? parseEndpoint(b.endpoint, 'endpoint') : null;
      for (const field of ['mgmtAddress', 'publicAddress'] as const) {
        const v = b[field];
        if (v !== undefined && !isIpv4(v)) throw new ValidationError(`${field}: "${v}" is not an IPv4 address`, field);
      }
      const host = await store.enroll({
        tokenHash: hashToken(b.token),
        name: b.name,
        ...(b.kind ? { kind: b.kind } : {}),
        identityKey: b.identityKey,
        endpointHost: endpoint?.host ?? null,
        portBase: endpoint?.port ?? null,
        mgmtAddress: b.mgmtAddress ?? null,
        publicAddress: b.publicAddress ?? null,
      });
      return reply.status(201).send({ name: host.name, kind: host.kind, coordinatorKey: signingKey.publicKey });
    },
  );

  for (const kind of ['node', 'gateway'] as const) {
    const plural = `${kind}s`;
    app.get(`/v1/${plural}`, { config: { access: 'admin' }, schema: { security } }, async () => ({ [plural]: store.listHosts(kind).map((h) => hostView(store, h)) }));
    app.get<{ Params: { name: string } }>(
      `/v1/${plural}/:name`,
      { config: { access: 'admin' }, schema: { params: params.host, response: { 200: answers.host }, security } },
      async (req) => hostView(store, store.host(req.params.name, kind)),
    );
    app.delete<{ Params: { name: string } }>(`/v1/${plural}/:name`, { config: { access: 'admin' }, schema: { params: params.host, security } }, async (req, reply) => {
      await store.deleteHost(actorOf(req.principal), req.params.name, kind);
      return reply.status(204).send();
    });
  }
}
