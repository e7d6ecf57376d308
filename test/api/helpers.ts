/** Shared fixtures for API tests: a coordinator on a temp database, admin calls, enrolled hosts. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp, type AppOptions } from '../../src/coordinator/app.js';
import { generateSigningKeyPair, generateToken, signRequest, type SigningKeyPair } from '../../src/shared/crypto.js';
import type { HostKind } from '../../src/shared/desired.js';

export interface TestHost {
  name: string;
  kind: HostKind;
  keys: SigningKeyPair;
  /** A signed request as this host. */
  call(method: string, url: string, body?: unknown): Promise<LightMyRequestResponse>;
}

export interface TestApp {
  app: FastifyInstance;
  adminToken: string;
  signingKey: SigningKeyPair;
  dir: string;
  admin(method: string, url: string, body?: unknown): Promise<LightMyRequestResponse>;
  as(token: string, method: string, url: string, body?: unknown): Promise<LightMyRequestResponse>;
  enroll(kind: HostKind, name: string, extra?: { endpoint?: string }): Promise<TestHost>;
  close(): Promise<void>;
}

export async function testApp(options: Partial<AppOptions> = {}): Promise<TestApp> {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-api-'));
  const adminToken = generateToken('admin');
  const signingKey = generateSigningKeyPair();
  const app = await buildApp({ db: join(dir, 'netwall.db'), adminToken, signingKey, ...options });
  const as = (token: string, method: string, url: string, body?: unknown) =>
    app.inject({
      method: method as 'GET',
      url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  const admin = (method: string, url: string, body?: unknown) => as(adminToken, method, url, body);
  const enroll = async (kind: HostKind, name: string, extra: { endpoint?: string } = {}): Promise<TestHost> => {
    const t = await admin('POST', '/v1/enrollment-tokens', { kind, name });
    if (t.statusCode !== 201) throw new Error(`enrollment token: ${t.body}`);
    const keys = generateSigningKeyPair();
    const r = await app.inject({ method: 'POST', url: '/v1/enroll', payload: { token: t.json<{ token: string }>().token, name, identityKey: keys.publicKey, ...extra } });
    if (r.statusCode !== 201) throw new Error(`enroll: ${r.body}`);
    return {
      name,
      kind,
      keys,
      call: (method, url, body) => {
        const text = body === undefined ? '' : JSON.stringify(body);
        return app.inject({
          method: method as 'GET',
          url,
          headers: { ...signRequest(name, keys.secretKey, method, url, text), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          ...(body === undefined ? {} : { payload: text }),
        });
      },
    };
  };
  return {
    app,
    adminToken,
    signingKey,
    dir,
    admin,
    as,
    enroll,
    close: async () => {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
