import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Labels } from '../../shared/names.js';
import { ForbiddenError } from '../../shared/errors.js';
import type { HostStatusReport } from '../../shared/host-client.js';
import { signGrant } from '../../shared/router-protocol.js';
import { actorOf } from '../auth.js';
import { bodies, params, queries } from '../schemas.js';
import type { HostRow } from '../store.js';

function self(req: FastifyRequest): HostRow {
  const p = req.principal;
  if (p?.kind !== 'host') throw new ForbiddenError('this route is for enrolled hosts');
  return p.host;
}

/** The routes nodes and gateways call, each signed with the host's identity. */
export async function hostApiRoutes(app: FastifyInstance): Promise<void> {
  const { store, desired, metrics, maxWaitSeconds, signingKey } = app.netwall;

  for (const kind of ['node', 'gateway'] as const) {
    const base = `/v1/${kind}s/:name`;

    app.get<{ Params: { name: string }; Querystring: { after?: string; wait?: string } }>(
      `${base}/desired`,
      { config: { access: kind }, schema: { params: params.host, querystring: queries.desired } },
      async (req, reply) => {
        const host = self(req);
        const after = Number(req.query.after ?? 0);
        const wait = Math.min(Number(req.query.wait ?? 25), maxWaitSeconds);
        const newer = await desired.waitNewer(host.id, after, wait * 1000);
        metrics.inc('netwall_desired_polls_total', { result: newer ? 'document' : 'timeout' });
        if (!newer) return reply.status(204).send();
        return desired.document(newer);
      },
    );

    app.put<{ Params: { name: string; tenant: string }; Body: { publicKey: string; inUse?: boolean } }>(
      `${base}/tenants/:tenant/key`,
      { config: { access: kind }, schema: { params: params.hostTenant, body: bodies.registerWireguardKey } },
      async (req) => {
        const inUse = req.body.inUse ?? true;
        await store.registerKey(self(req), req.params.tenant, req.body.publicKey, inUse);
        return { tenant: req.params.tenant, publicKey: req.body.publicKey, inUse };
      },
    );

    app.post<{ Params: { name: string }; Body: HostStatusReport }>(
      `${base}/status`,
      { config: { access: kind }, schema: { params: params.host, body: bodies.status } },
      async (req, reply) => {
        store.reportStatus(self(req), req.body);
        return reply.status(204).send();
      },
    );
  }

  app.post<{ Params: { name: string }; Body: { tenant: string; name: string; labels?: Labels } }>(
    '/v1/nodes/:name/workloads',
    { config: { access: 'node' }, schema: { params: params.host, body: bodies.createNodeWorkload } },
    async (req, reply) => {
      const host = self(req);
      const { workload, created } = await store.createWorkload(actorOf(req.principal), req.body.tenant, req.body.name, host.name, req.body.labels ?? {}, true);
      if (created) metrics.inc('netwall_workload_allocations_total');
      return reply.status(created ? 201 : 200).send(workload);
    },
  );

  app.put<{ Params: { name: string; tenant: string; exposure: string; workload: string }; Body: { publicKey: string } }>(
    '/v1/nodes/:name/router-keys/:tenant/:exposure/:workload',
    { config: { access: 'node' }, schema: { params: params.hostRouterKey, body: bodies.registerKey } },
    async (req) => {
      const { tenant, exposure, workload } = req.params;
      const credential = await store.registerRouterKey(self(req), tenant, exposure, workload, req.body.publicKey, (grant) => signGrant(grant, signingKey.secretKey));
      return { tenant, exposure, workload, publicKey: req.body.publicKey, credential };
    },
  );

  app.delete<{ Params: { name: string; tenant: string; workload: string } }>(
    '/v1/nodes/:name/workloads/:tenant/:workload',
    { config: { access: 'node' }, schema: { params: params.hostWorkload } },
    async (req, reply) => {
      const host = self(req);
      await store.deleteWorkload(actorOf(req.principal), req.params.tenant, req.params.workload, host);
      return reply.status(204).send();
    },
  );
}
