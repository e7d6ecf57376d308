/**
 * Read-only questions about a tenant's policy model: explain one flow, list
 * the reachability matrix, and what-if a policy were put or deleted. None of
 * them writes anything (no audit entry, no version bump).
 */
import type { FastifyInstance } from 'fastify';
import type { Protocol } from '../../shared/desired.js';
import type { MeshContext, PolicySpec } from '../model.js';
import { explainFlow, reachabilityMatrix, whatIf } from '../reachability.js';
import { answers, bodies, params } from '../schemas.js';
import { normalizePolicy } from '../validate.js';

const security = [{ bearer: [] }];

export async function reachabilityRoutes(app: FastifyInstance): Promise<void> {
  const { store, coordinatorAddresses } = app.netwall;
  const compiled = (tenant: string) => store.compiledTenant(store.tenant(tenant));
  const mesh = (): MeshContext => ({
    pool: store.ipam.pool,
    tenants: store.listTenants().map((t) => ({ name: t.name, subnet: t.subnet })),
    hostAddresses: store.hostAddresses(),
    coordinatorAddresses,
  });

  app.post<{ Params: { tenant: string }; Body: { from: string; to: string; protocol: Protocol; port?: number } }>(
    '/v1/tenants/:tenant/reachability/explain',
    {
      config: { access: 'tenant' },
      schema: {
        summary: 'Explain whether a flow from a workload is allowed, and by which rules',
        params: params.tenant,
        body: bodies.explain,
        response: { 200: answers.explanation },
        security,
      },
    },
    async (req) => explainFlow({ tenant: compiled(req.params.tenant), mesh: mesh() }, req.body),
  );

  app.get<{ Params: { tenant: string } }>(
    '/v1/tenants/:tenant/reachability',
    {
      config: { access: 'tenant' },
      schema: { summary: "The tenant's reachability matrix: every allowed workload-to-workload flow", params: params.tenant, response: { 200: answers.reachability }, security },
    },
    async (req) => reachabilityMatrix(compiled(req.params.tenant)),
  );

  // What-if mirrors the real write: the same method, path (+ /what-if), body schema and validation.
  app.put<{ Params: { tenant: string; name: string }; Body: PolicySpec }>(
    '/v1/tenants/:tenant/policies/:name/what-if',
    {
      config: { access: 'tenant' },
      schema: {
        summary: 'How the reachability matrix would change if this policy were put (nothing is written)',
        params: params.tenantName,
        body: bodies.policy,
        response: { 200: answers.whatIf },
        security,
      },
    },
    async (req) => {
      const spec = normalizePolicy(req.body);
      return whatIf(compiled(req.params.tenant), { op: 'put', name: req.params.name, spec });
    },
  );

  app.delete<{ Params: { tenant: string; name: string } }>(
    '/v1/tenants/:tenant/policies/:name/what-if',
    {
      config: { access: 'tenant' },
      schema: {
        summary: 'How the reachability matrix would change if this policy were deleted (nothing is written)',
        params: params.tenantName,
        response: { 200: answers.whatIf },
        security,
      },
    },
    async (req) => whatIf(compiled(req.params.tenant), { op: 'delete', name: req.params.name }),
  );
}
