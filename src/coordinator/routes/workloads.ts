import type { FastifyInstance } from 'fastify';
import type { Labels } from '../../shared/names.js';
import { actorOf } from '../auth.js';
import { answers, bodies, params } from '../schemas.js';

const security = [{ bearer: [] }];

export async function workloadRoutes(app: FastifyInstance): Promise<void> {
  const { store, metrics } = app.netwall;

  app.post<{ Params: { tenant: string }; Body: { name: string; node: string; labels?: Labels } }>(
    '/v1/tenants/:tenant/workloads',
    { config: { access: 'tenant' }, schema: { params: params.tenant, body: bodies.createWorkload, response: { 201: answers.workload }, security } },
    async (req, reply) => {
      const { workload } = await store.createWorkload(actorOf(req.principal), req.params.tenant, req.body.name, req.body.node, req.body.labels ?? {});
      metrics.inc('netwall_workload_allocations_total');
      return reply.status(201).send(workload);
    },
  );

  app.get<{ Params: { tenant: string } }>('/v1/tenants/:tenant/workloads', { config: { access: 'tenant' }, schema: { params: params.tenant, security } }, async (req) => ({
    workloads: store.listWorkloads(req.params.tenant),
  }));

  app.get<{ Params: { tenant: string; name: string } }>(
    '/v1/tenants/:tenant/workloads/:name',
    { config: { access: 'tenant' }, schema: { params: params.tenantName, response: { 200: answers.workload }, security } },
    async (req) => store.workload(req.params.tenant, req.params.name),
  );

  app.delete<{ Params: { tenant: string; name: string } }>(
    '/v1/tenants/:tenant/workloads/:name',
    { config: { access: 'tenant' }, schema: { params: params.tenantName, security } },
    async (req, reply) => {
      await store.deleteWorkload(actorOf(req.principal), req.params.tenant, req.params.name);
      return reply.status(204).send();
    },
  );
}
