import type { FastifyInstance } from 'fastify';
import { generateToken, hashToken } from '../../shared/crypto.js';
import { actorOf } from '../auth.js';
import { answers, bodies, errorBody, params, queries } from '../schemas.js';
import type { TenantRow } from '../store.js';

const view = (t: TenantRow) => ({ name: t.name, subnet: t.subnet, createdAt: t.created_at });
const security = [{ bearer: [] }];

export async function tenantRoutes(app: FastifyInstance): Promise<void> {
  const { store, now } = app.netwall;

  app.post<{ Body: { name: string; prefixLength?: number } }>(
    '/v1/tenants',
    { config: { access: 'admin' }, schema: { body: bodies.createTenant, response: { 201: answers.tenant, '4xx': errorBody }, security } },
    async (req, reply) => reply.status(201).send(view(await store.createTenant(actorOf(req.principal), req.body.name, req.body.prefixLength))),
  );

  app.get('/v1/tenants', { config: { access: 'admin' }, schema: { security } }, async () => ({ tenants: store.listTenants().map(view) }));

  app.get<{ Params: { tenant: string } }>(
    '/v1/tenants/:tenant',
    { config: { access: 'tenant' }, schema: { params: params.tenant, response: { 200: answers.tenant }, security } },
    async (req) => view(store.tenant(req.params.tenant)),
  );

  app.delete<{ Params: { tenant: string }; Querystring: { force?: string } }>(
    '/v1/tenants/:tenant',
    { config: { access: 'admin' }, schema: { params: params.tenant, querystring: queries.force, security } },
    async (req, reply) => {
      await store.deleteTenant(actorOf(req.principal), req.params.tenant, req.query.force === 'true');
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { tenant: string }; Body: { name?: string; ttlSeconds?: number } }>(
    '/v1/tenants/:tenant/tokens',
    {
      config: { access: 'admin' },
      // Every field is optional, so an empty body is fine.
      preValidation: async (req) => {
        req.body ??= {};
      },
      schema: { params: params.tenant, body: bodies.createTenantToken, security },
    },
    async (req, reply) => {
      const token = generateToken('tenant');
      const name = req.body?.name ?? 'default';
      const expiresAt = req.body?.ttlSeconds ? new Date(now() + req.body.ttlSeconds * 1000).toISOString() : null;
      await store.createTenantToken(actorOf(req.principal), req.params.tenant, name, hashToken(token), expiresAt);
      return reply.status(201).send({ token, name, tenant: req.params.tenant, expiresAt });
    },
  );
}
