/**
 * The coordinator as a fastify application: built from options, no listening,
 * no process state — main.ts listens, tests use `app.inject`.
 */
import swagger from '@fastify/swagger';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify';
import type { SigningKeyPair } from '../shared/crypto.js';
import { NetwallError, RateLimitedError, TooLargeError, ValidationError } from '../shared/errors.js';
import { Authenticator, authHooks } from './auth.js';
import { openDatabase, type Db } from './db/open.js';
import { DesiredService } from './desired-service.js';
import { DEFAULT_IPAM, type IpamConfig } from './ipam.js';
import { Metrics } from './metrics.js';
import { DEFAULT_RENDER_SETTINGS, type RenderSettings } from './model.js';
import { RateLimiter } from './ratelimit.js';
import { auditRoutes } from './routes/audits.js';
import { hostApiRoutes } from './routes/host-api.js';
import { hostRoutes } from './routes/hosts.js';
import { reachabilityRoutes } from './routes/reachability.js';
import { specRoutes } from './routes/specs.js';
import { systemRoutes } from './routes/system.js';
import { tenantRoutes } from './routes/tenants.js';
import { workloadRoutes } from './routes/workloads.js';
import { Store } from './store.js';

export interface AppOptions {
  /** A database path, or an open database (tests). */
  db: string | Db;
  adminToken: string;
  signingKey: SigningKeyPair;
  ipam?: Partial<IpamConfig>;
  render?: Partial<RenderSettings>;
  logger?: FastifyServerOptions['logger'];
  /** Longest long-poll a host may ask for, seconds. */
  maxWaitSeconds?: number;
  bodyLimit?: number;
  /** Failed authentications per client per minute before 429. */
  authFailuresPerMinute?: number;
  /** Enrollment attempts per client per minute before 429. */
  enrollmentsPerMinute?: number;
  now?: () => number;
  /** Addresses the coordinator is reached at, for reachability explanations (containers never reach it). */
  coordinatorAddresses?: string[];
}

export interface Services {
  store: Store;
  desired: DesiredService;
  metrics: Metrics;
  enrollLimiter: RateLimiter;
  signingKey: SigningKeyPair;
  maxWaitSeconds: number;
  /** Every route with the access it demands (for the auth matrix test and docs). */
  routes: { method: string; url: string; access: string }[];
  now: () => number;
  coordinatorAddresses: string[];
}

declare module 'fastify' {
  interface FastifyInstance {
    netwall: Services;
  }
}

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const now = opts.now ?? Date.now;
  const db = typeof opts.db === 'string' ? openDatabase(opts.db) : opts.db;
  const store = new Store(db, { ...DEFAULT_IPAM, ...opts.ipam }, now);
  const settings = { ...DEFAULT_RENDER_SETTINGS, ...opts.render };
  const desired = new DesiredService(store, opts.signingKey.secretKey, settings);
  const metrics = new Metrics();
  const auth = new Authenticator(store, opts.adminToken, new RateLimiter(opts.authFailuresPerMinute ?? 30, 60_000, now), now);

  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // Long-polls hold requests for up to a minute.
    requestTimeout: 120_000,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    // Malformed URLs and the like, caught before routing: still our error body.
    frameworkErrors: (err, _req, reply) => {
      void (reply as unknown as FastifyReply).status(400).send({ error: { code: 'invalid', message: `url: ${err.message}` } });
    },
  });

  app.decorate('netwall', {
    store,
    desired,
    metrics,
    enrollLimiter: new RateLimiter(opts.enrollmentsPerMinute ?? 20, 60_000, now),
    signingKey: opts.signingKey,
    maxWaitSeconds: opts.maxWaitSeconds ?? 60,
    routes: [],
    now,
    coordinatorAddresses: opts.coordinatorAddresses ?? [],
  } satisfies Services);
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) {
      if (method !== 'HEAD') app.netwall.routes.push({ method, url: r.url, access: r.config?.access ?? 'admin' });
    }
  });

  // Keep the raw body: host signatures cover its exact bytes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body as string;
    req.rawBody = text;
    if (text === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(new ValidationError('body: malformed JSON'), undefined);
    }
  });

  const hooks = authHooks(auth);
  app.addHook('onRequest', hooks.onRequest);
  app.addHook('preValidation', hooks.preValidation);
  app.addHook('onResponse', async (req, reply) => {
    metrics.inc('netwall_http_requests_total', { route: req.routeOptions.url ?? 'unmatched', method: req.method, status: String(reply.statusCode) });
  });
  app.addHook('onClose', async () => {
    desired.close();
    if (typeof opts.db === 'string') db.close();
  });

  app.setErrorHandler((err: FastifyError | NetwallError, req, reply) => {
    const mapped = mapError(err);
    if (mapped.status >= 500) req.log.error({ err }, 'internal error');
    if (mapped instanceof RateLimitedError) void reply.header('retry-after', String(mapped.retryAfterSeconds));
    void reply.status(mapped.status).send({ error: { code: mapped.code, message: mapped.message } });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'netwall coordinator', version: '1', description: 'Tenants, IPAM, enrollment, workloads, policies, exposures, egress and desired state.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });

  await app.register(systemRoutes);
  await app.register(tenantRoutes);
  await app.register(hostRoutes);
  await app.register(workloadRoutes);
  await app.register(specRoutes);
  await app.register(reachabilityRoutes);
  await app.register(hostApiRoutes);
  await app.register(auditRoutes);
  return app;
}

/** `/allow/0/ports/1` in the body → `body.allow[0].ports[1]`; likewise `querystring.x` and `params.x`. */
function fieldPath(context: string, pointer: string): string {
  let path = context;
  for (const p of pointer.split('/').filter(Boolean)) path += /^\d+$/.test(p) ? `[${p}]` : `.${p}`;
  return path;
}

/** Every error a client can cause becomes a 4xx with our body; anything else a bare 500. */
function mapError(err: FastifyError | NetwallError): NetwallError {
  if (err instanceof NetwallError) return err;
  const e = err as FastifyError;
  if (e.validation) {
    const v = e.validation[0];
    const where = fieldPath(e.validationContext ?? 'body', v?.instancePath ?? '');
    let message = `${where}: ${v?.message ?? 'invalid'}`;
    if (v?.keyword === 'additionalProperties') message = `${where}: unknown field "${String((v.params as { additionalProperty?: string }).additionalProperty)}"`;
    if (v?.keyword === 'pattern') message = `${where}: invalid value (must match ${String((v.params as { pattern?: string }).pattern)})`;
    return new ValidationError(message, where);
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new TooLargeError('body: larger than the 1 MiB limit');
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new ValidationError('content-type: send application/json');
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return new ValidationError(e.message);
  return new NetwallError('internal error');
}
