import type { FastifyInstance } from 'fastify';
import { queries } from '../schemas.js';

export async function systemRoutes(app: FastifyInstance): Promise<void> {
  const { store, desired, metrics } = app.netwall;

  app.get('/healthz', { config: { access: 'public' }, schema: { hide: true } }, async () => {
    store.revision(); // touches the database
    return { status: 'ok' };
  });

  app.get('/openapi.json', { config: { access: 'public' }, schema: { hide: true } }, async () => app.swagger());

  app.get('/metrics', { config: { access: 'admin' }, schema: { hide: true } }, async (_req, reply) => {
    const count = (sql: string) => store.db.prepare(sql).pluck().get() as number;
    const text = metrics.render({
      netwall_tenants: count('SELECT COUNT(*) FROM tenants'),
      netwall_nodes: count(`SELECT COUNT(*) FROM hosts WHERE kind = 'node'`),
      netwall_gateways: count(`SELECT COUNT(*) FROM hosts WHERE kind = 'gateway'`),
      netwall_workloads: count('SELECT COUNT(*) FROM workloads'),
      netwall_hosts_behind: count('SELECT COUNT(*) FROM hosts WHERE applied_version < version'),
      netwall_longpolls_waiting: desired.waiting(),
      netwall_revision: store.revision(),
    });
    return reply.type('text/plain; version=0.0.4').send(text);
  });

  app.get<{ Querystring: { limit?: string } }>(
    '/v1/audit',
    { config: { access: 'admin' }, schema: { querystring: queries.limit, security: [{ bearer: [] }] } },
    async (req) => ({ entries: store.audit(Math.min(Number(req.query.limit ?? 100), 10_000)) }),
  );
}
