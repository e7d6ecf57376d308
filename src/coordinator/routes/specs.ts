import type { FastifyInstance } from 'fastify';
import { actorOf } from '../auth.js';
import type { EgressSpec, ExposureSpec, PolicySpec } from '../model.js';
import { bodies, params } from '../schemas.js';
import type { Store } from '../store.js';
import { normalizeEgress, normalizeExposure, normalizePolicy } from '../validate.js';

const security = [{ bearer: [] }];

interface SpecResource {
  path: string;
  table: 'policies' | 'exposures' | 'egress_rules';
  listKey: string;
  schema: object;
  put: (store: Store, actor: { id: string }, tenant: string, name: string, body: never) => Promise<{ created: boolean }>;
}

const resources: SpecResource[] = [
  {
    path: 'policies',
    table: 'policies',
    listKey: 'policies',
    schema: bodies.policy,
    put: (s, a, t, n, b: PolicySpec) => s.putPolicy(a, t, n, normalizePolicy(b)),
  },
  {
    path: 'exposures',
    table: 'exposures',
    listKey: 'exposures',
    schema: bodies.exposure,
    put: (s, a, t, n, b: ExposureSpec) => s.putExposure(a, t, n, normalizeExposure(b)),
  },
  {
    path: 'egress',
    table: 'egress_rules',
    listKey: 'egress',
    schema: bodies.egress,
    put: (s, a, t, n, b: EgressSpec) => s.putEgress(a, t, n, normalizeEgress(b)),
  },
];

/** Policies, exposures and egress rules share one shape: PUT/GET/DELETE by name, GET list. */
export async function specRoutes(app: FastifyInstance): Promise<void> {
  const { store } = app.netwall;
  for (const r of resources) {
    const one = `/v1/tenants/:tenant/${r.path}/:name`;
    const view = (tenant: string, s: { name: string; spec: unknown; updatedAt: string }) => ({ name: s.name, tenant, ...(s.spec as object), updatedAt: s.updatedAt });

    app.put<{ Params: { tenant: string; name: string }; Body: never }>(
      one,
      { config: { access: 'tenant' }, schema: { params: params.tenantName, body: r.schema, security } },
      async (req, reply) => {
        const { created } = await r.put(store, actorOf(req.principal), req.params.tenant, req.params.name, req.body as never);
        return reply.status(created ? 201 : 200).send(view(req.params.tenant, store.getSpec(r.table, req.params.tenant, req.params.name)));
      },
    );
    app.get<{ Params: { tenant: string; name: string } }>(one, { config: { access: 'tenant' }, schema: { params: params.tenantName, security } }, async (req) =>
      view(req.params.tenant, store.getSpec(r.table, req.params.tenant, req.params.name)),
    );
    app.delete<{ Params: { tenant: string; name: string } }>(one, { config: { access: 'tenant' }, schema: { params: params.tenantName, security } }, async (req, reply) => {
      await store.deleteSpec(actorOf(req.principal), r.table, req.params.tenant, req.params.name);
      return reply.status(204).send();
    });
    app.get<{ Params: { tenant: string } }>(`/v1/tenants/:tenant/${r.path}`, { config: { access: 'tenant' }, schema: { params: params.tenant, security } }, async (req) => ({
      [r.listKey]: store.listSpecs(r.table, req.params.tenant).map((s) => view(req.params.tenant, s)),
    }));
  }
}
