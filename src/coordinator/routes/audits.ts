/**
 * `netwall audit`: reachability audits planned from the policy model
 * (audit-plan.ts), run by the node agents from inside their workloads'
 * network namespaces, compared here (audits.ts). Admin routes start and read
 * audits and give the surface an outside scan checks against; node routes
 * (signed) long-poll for assignments and post results.
 */
import type { FastifyInstance } from 'fastify';
import { MAX_REPORT_RESULTS, PROBE_GOT, type ProbeReport } from '../../shared/audit.js';
import { ValidationError } from '../../shared/errors.js';
import { isIpv4 } from '../../shared/ipv4.js';
import { planAudit, type AuditHost, type ExtraTarget } from '../audit-plan.js';
import { AuditService } from '../audits.js';
import type { HostRow } from '../store.js';
import { name, params } from '../schemas.js';
import type { MeshContext } from '../model.js';

const security = [{ bearer: [] }];
const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;
const ipv4 = { type: 'string', pattern: '^[0-9.]{7,15}$' } as const;
const auditId = { type: 'string', pattern: '^[0-9a-f]{16}$' } as const;
const obj = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', additionalProperties: false, properties, required });

const schemas = {
  create: obj({
    tenants: { type: 'array', maxItems: 64, uniqueItems: true, items: name },
    extraTargets: {
      type: 'array',
      maxItems: 32,
      items: obj(
        {
          address: ipv4,
          tcp: { type: 'array', maxItems: 32, uniqueItems: true, items: port },
          udp: { type: 'array', maxItems: 32, uniqueItems: true, items: port },
          icmp: { type: 'boolean' },
        },
        ['address'],
      ),
    },
    ports: obj({
      tcp: { type: 'array', maxItems: 32, uniqueItems: true, items: port },
      udp: { type: 'array', maxItems: 32, uniqueItems: true, items: port },
    }),
    timeoutSeconds: { type: 'integer', minimum: 5, maximum: 600 },
    probeTimeoutMs: { type: 'integer', minimum: 200, maximum: 5000 },
  }),
  results: obj(
    {
      results: {
        type: 'array',
        maxItems: MAX_REPORT_RESULTS,
        items: obj(
          {
            i: { type: 'integer', minimum: 0 },
            got: { type: 'string', enum: PROBE_GOT },
            ms: { type: 'integer', minimum: 0 },
            attempts: { type: 'integer', minimum: 0, maximum: 10 },
            detail: { type: 'string', maxLength: 200 },
          },
          ['i', 'got', 'ms', 'attempts'],
        ),
      },
      done: { type: 'boolean' },
    },
    ['results', 'done'],
  ),
  id: obj({ id: auditId }, ['id']),
  nodeId: obj({ name, id: auditId }, ['name', 'id']),
  view: obj({ wait: { type: 'string', pattern: '^\\d{1,2}$' }, probes: { type: 'string', enum: ['all', 'mismatches'] } }),
  wait: obj({ wait: { type: 'string', pattern: '^\\d{1,2}$' } }),
};

interface CreateBody {
  tenants?: string[];
  extraTargets?: ExtraTarget[];
  ports?: { tcp?: number[]; udp?: number[] };
  timeoutSeconds?: number;
  probeTimeoutMs?: number;
}

/** Default time a node has to run its probes and report. */
export const DEFAULT_AUDIT_TIMEOUT_SECONDS = 120;
export const DEFAULT_PROBE_TIMEOUT_MS = 1500;

export async function auditRoutes(app: FastifyInstance): Promise<void> {
  const { store, signingKey, maxWaitSeconds, now, coordinatorAddresses } = app.netwall;
  const audits = new AuditService({ signingKey: signingKey.secretKey, now });
  app.addHook('onClose', async () => audits.close());

  const mesh = (): MeshContext => ({
    pool: store.ipam.pool,
    tenants: store.listTenants().map((t) => ({ name: t.name, subnet: t.subnet })),
    hostAddresses: store.hostAddresses(),
    coordinatorAddresses,
  });
  const hosts = (): HostRow[] => [...store.listHosts('node'), ...store.listHosts('gateway')];
  /** A host that has not called in for this long is not polling: its probes are not_run at once. */
  const offlineAfterMs = (maxWaitSeconds * 2 + 30) * 1000;

  app.post<{ Body: CreateBody }>(
    '/v1/audits',
    {
      config: { access: 'admin' },
      schema: { summary: 'Start a reachability audit: probes planned from the policy model, run by the node agents', body: schemas.create, security },
    },
    async (req, reply) => {
      const b = req.body ?? {};
      for (const [i, x] of (b.extraTargets ?? []).entries()) {
        if (!isIpv4(x.address)) throw new ValidationError(`extraTargets[${i}].address: "${x.address}" is not an IPv4 address`, `extraTargets[${i}].address`);
      }
      const all = store.listTenants();
      for (const t of b.tenants ?? []) store.tenant(t); // 404 naming an unknown tenant
      const rows = hosts();
      const auditHosts: AuditHost[] = rows.map((h) => ({ name: h.name, kind: h.kind, listenPorts: [...new Set(store.memberships(h.id).map((m) => m.listenPort))].sort((x, y) => x - y) }));
      const plan = planAudit({
        tenants: all.map((t) => store.compiledTenant(t)),
        ...(b.tenants ? { sources: b.tenants } : {}),
        mesh: mesh(),
        hosts: auditHosts,
        ...(b.extraTargets ? { extraTargets: b.extraTargets } : {}),
        ...(b.ports ? { ports: b.ports } : {}),
      });
      const t = now();
      const offline = new Set(rows.filter((h) => h.kind === 'node' && (h.last_seen === null || t - Date.parse(h.last_seen) > offlineAfterMs)).map((h) => h.name));
      const job = audits.create(plan, {
        timeoutSeconds: b.timeoutSeconds ?? DEFAULT_AUDIT_TIMEOUT_SECONDS,
        probeTimeoutMs: b.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
        offline,
      });
      const view = await audits.view(job.id);
      return reply.status(201).send({
        id: view.id,
        status: view.status,
        createdAt: view.createdAt,
        deadline: view.deadline,
        tenants: view.tenants,
        probes: view.summary.probes,
        nodes: view.nodes,
      });
    },
  );

  app.get('/v1/audits', { config: { access: 'admin' }, schema: { summary: 'Audits kept in memory (the last hour), newest first', security } }, async () => ({ audits: audits.list() }));

  app.get(
    '/v1/audits/surface',
    {
      config: { access: 'admin' },
      schema: { summary: 'What may answer from outside: every node and gateway, its underlay addresses, WireGuard UDP ports and public TCP ports', security },
    },
    async () => {
      const exposures = new Map<string, Set<number>>();
      for (const t of store.listTenants()) {
        for (const [gateway, list] of store.compiledTenant(t).exposuresByGateway) {
          for (const e of list) {
            if (e.protocol !== 'tcp' || e.publicPort === null) continue;
            const s = exposures.get(gateway) ?? new Set<number>();
            s.add(e.publicPort);
            exposures.set(gateway, s);
          }
        }
      }
      return {
        hosts: hosts().map((h) => {
          const addresses: { address: string; what: string }[] = [];
          for (const [address, what] of [
            [h.endpoint_host, 'endpoint'],
            [h.mgmt_address, 'mgmt'],
            [h.public_address, 'public'],
          ] as const) {
            if (address === null) continue;
            const seen = addresses.find((a) => a.address === address);
            if (seen) seen.what += `+${what}`;
            else addresses.push({ address, what });
          }
          return {
            name: h.name,
            kind: h.kind,
            addresses,
            udp: [...new Set(store.memberships(h.id).map((m) => m.listenPort))].sort((a, b) => a - b),
            tcp: [...(exposures.get(h.name) ?? [])].sort((a, b) => a - b),
          };
        }),
        coordinator: { addresses: coordinatorAddresses },
      };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { wait?: string; probes?: string } }>(
    '/v1/audits/:id',
    {
      config: { access: 'admin' },
      schema: { summary: "An audit's status, summary and mismatches (every probe with ?probes=all); ?wait=S waits for it to end", params: schemas.id, querystring: schemas.view, security },
    },
    async (req) => audits.view(req.params.id, Math.min(Number(req.query.wait ?? 0), maxWaitSeconds) * 1000, req.query.probes === 'all'),
  );

  app.get<{ Params: { name: string }; Querystring: { wait?: string } }>(
    '/v1/nodes/:name/audits',
    { config: { access: 'node' }, schema: { params: params.host, querystring: schemas.wait } },
    async (req, reply) => {
      const wait = Math.min(Number(req.query.wait ?? 25), maxWaitSeconds);
      const list = await audits.claim(req.params.name, wait * 1000);
      if (list.length === 0) return reply.status(204).send();
      req.log.info({ node: req.params.name, audits: list.length }, 'audit assignments handed out');
      return { audits: list };
    },
  );

  app.post<{ Params: { name: string; id: string }; Body: { results: ProbeReport[]; done: boolean } }>(
    '/v1/nodes/:name/audits/:id/results',
    { config: { access: 'node' }, schema: { params: schemas.nodeId, body: schemas.results } },
    async (req) => audits.report(req.params.name, req.params.id, req.body.results, req.body.done),
  );
}
