#!/usr/bin/env -S node --import tsx
/**
 * Build a coordinator database at the current schema version with a few rows
 * of every kind (tenants, nodes, a gateway, memberships with keys, workloads,
 * a released address, policies, exposures, egress, tokens, status, audit),
 * through the real API on a fixed clock with fixed keys, then compact it into
 * one self-contained file (rollback journal, 1 KiB pages, vacuumed).
 *
 *   node --import tsx scripts/make-db-fixture.ts [OUT]
 *
 * OUT defaults to test/fixtures/coordinator-v<schema version>.db. Keep every
 * shipped fixture: test/api/migrations.test.ts migrates each of them to the
 * latest schema. When you add a migration, run this once to add the fixture
 * of the new version; never regenerate an old one.
 */
import Database from 'better-sqlite3';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import nacl from 'tweetnacl';
import { buildApp } from '../src/coordinator/app.js';
import { MIGRATIONS } from '../src/coordinator/db/migrations.js';
import { b64, hashToken, sha256hex, signRequest, wireguardPublicKey, type SigningKeyPair } from '../src/shared/crypto.js';

/** The clock the fixture was made on (every created_at / at). */
export const FIXTURE_TIME = Date.parse('2025-01-15T12:00:00.000Z');
/** The admin token used to build it (the coordinator keeps only what it is told at start). */
export const FIXTURE_ADMIN_TOKEN = 'nwa_fixture-admin-token-0000000000000000000000';
/** The plaintext of tenant acme's token "ci" (the database holds only its hash). */
export const FIXTURE_TENANT_TOKEN = 'nwt_fixture-acme-ci-token-000000000000000000000';

const seed = (label: string): Uint8Array => new Uint8Array(Buffer.from(sha256hex(`netwall-fixture/${label}`), 'hex'));

/** A fixed ed25519 identity per label, so tests can sign as the fixture's hosts. */
export function fixtureIdentity(label: string): SigningKeyPair {
  const kp = nacl.sign.keyPair.fromSeed(seed(label));
  return { publicKey: b64(kp.publicKey), secretKey: b64(kp.secretKey) };
}

/** A fixed WireGuard key pair per label. */
export function fixtureWireguard(label: string): { privateKey: string; publicKey: string } {
  const priv = seed(`wg/${label}`);
  priv[0]! &= 248;
  priv[31]! &= 127;
  priv[31]! |= 64;
  return { privateKey: b64(priv), publicKey: wireguardPublicKey(b64(priv)) };
}

export async function makeFixture(out: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-fixture-'));
  try {
    const dbPath = join(dir, 'coordinator.db');
    const now = () => FIXTURE_TIME;
    const app = await buildApp({ db: dbPath, adminToken: FIXTURE_ADMIN_TOKEN, signingKey: fixtureIdentity('coordinator'), now });
    const call = async (method: string, url: string, body?: unknown, headers: Record<string, string> = { authorization: `Bearer ${FIXTURE_ADMIN_TOKEN}` }) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const res = await app.inject({ method: method as 'GET', url, headers: { ...headers, ...(payload ? { 'content-type': 'application/json' } : {}) }, ...(payload ? { payload } : {}) });
      if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
      return (res.body ? res.json() : {}) as Record<string, unknown>;
    };
    const signed = (host: string, method: string, url: string, body?: unknown) => {
      const text = body === undefined ? '' : JSON.stringify(body);
      return call(method, url, body, signRequest(host, fixtureIdentity(host).secretKey, method, url, text, FIXTURE_TIME));
    };

    await call('POST', '/v1/tenants', { name: 'acme' });
    await call('POST', '/v1/tenants', { name: 'globex', prefixLength: 24 });

    const enroll = async (name: string, kind: 'node' | 'gateway', extra: Record<string, string>) => {
      const { token } = (await call('POST', '/v1/enrollment-tokens', { kind, name })) as { token: string };
      await call('POST', '/v1/enroll', { token, name, identityKey: fixtureIdentity(name).publicKey, ...extra }, {});
    };
    await enroll('node1', 'node', { endpoint: '192.0.2.11:51820', mgmtAddress: '10.0.0.11' });
    await enroll('node2', 'node', { mgmtAddress: '10.0.0.12' }); // behind NAT: no endpoint
    await enroll('gateway1', 'gateway', { endpoint: '192.0.2.21:51900', mgmtAddress: '10.0.0.21', publicAddress: '198.51.100.21' });
    await call('POST', '/v1/enrollment-tokens', { kind: 'node', name: 'node3', ttlSeconds: 7 * 24 * 3600 }); // pending

    await call('POST', '/v1/tenants/acme/workloads', { name: 'web-1', node: 'node1', labels: { app: 'web' } });
    await call('POST', '/v1/tenants/acme/workloads', { name: 'tmp', node: 'node1', labels: { app: 'tmp' } });
    await call('POST', '/v1/tenants/acme/workloads', { name: 'web-2', node: 'node2', labels: { app: 'web' } });
    await signed('node2', 'POST', '/v1/nodes/node2/workloads', { tenant: 'acme', name: 'db-1', labels: { app: 'db', 'netwall.io/tier': 'data' } });
    await call('POST', '/v1/tenants/globex/workloads', { name: 'api', node: 'node1', labels: { app: 'api' } });
    await call('DELETE', '/v1/tenants/acme/workloads/tmp'); // leaves a quarantined address

    await call('PUT', '/v1/tenants/acme/policies/web-to-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432, '9000-9100'] }, { protocol: 'icmp' }] });
    await call('PUT', '/v1/tenants/globex/policies/any', { from: {}, to: {}, allow: [{ protocol: 'udp' }] });
    await call('PUT', '/v1/tenants/acme/exposures/site', {
      protocol: 'http',
      hostnames: ['www.acme.test', 'acme.test'],
      mode: 'tunnel',
      gateways: ['gateway1'],
      target: { selector: { app: 'web' }, port: 8080 },
    });
    await call('PUT', '/v1/tenants/acme/exposures/db-admin', {
      protocol: 'tcp',
      mode: 'mesh',
      gateways: ['gateway1'],
      target: { selector: { app: 'db' }, port: 5432 },
      publicPort: 15432,
      proxyProtocol: true,
    });
    await call('PUT', '/v1/tenants/acme/egress/updates', { gateways: ['gateway1'], destinations: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: [80, 443] }, { cidr: '192.0.2.53/32', protocol: 'udp', ports: [53] }] });

    await signed('node1', 'PUT', '/v1/nodes/node1/tenants/acme/key', { publicKey: fixtureWireguard('node1/acme').publicKey });
    await signed('node1', 'PUT', '/v1/nodes/node1/tenants/globex/key', { publicKey: fixtureWireguard('node1/globex').publicKey });
    await signed('node2', 'PUT', '/v1/nodes/node2/tenants/acme/key', { publicKey: fixtureWireguard('node2/acme').publicKey });
    await signed('gateway1', 'PUT', '/v1/gateways/gateway1/tenants/acme/key', { publicKey: fixtureWireguard('gateway1/acme').publicKey });
    await signed('node1', 'POST', '/v1/nodes/node1/status', { appliedVersion: 5, errors: [], drops: { spoofed: 3, policy: 12 } });
    await signed('node2', 'POST', '/v1/nodes/node2/status', { appliedVersion: 2, errors: ['wg set: device busy'], drops: {} });

    await call('POST', '/v1/tenants/acme/tokens', { name: 'ci' });
    await call('POST', '/v1/tenants/globex/tokens', { name: 'deploy', ttlSeconds: 3600 });
    await app.close();

    // A known plaintext for acme's token, and one compact file without -wal/-shm.
    const db = new Database(dbPath);
    db.prepare(`UPDATE tokens SET hash = ? WHERE kind = 'tenant' AND name = 'ci'`).run(hashToken(FIXTURE_TENANT_TOKEN));
    db.pragma('journal_mode = DELETE');
    db.pragma('page_size = 1024');
    db.exec('VACUUM');
    const check = db.pragma('integrity_check', { simple: true });
    if (check !== 'ok') throw new Error(`fixture integrity_check: ${String(check)}`);
    db.close();
    copyFileSync(dbPath, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const out = resolve(process.argv[2] ?? join(root, 'test/fixtures', `coordinator-v${MIGRATIONS.length}.db`));
  if (existsSync(out) && !process.argv.includes('--force') && process.argv[2] === undefined) {
    console.error(`${out} exists; fixtures of released schema versions are never regenerated (pass OUT explicitly, or --force)`);
    process.exit(1);
  }
  makeFixture(out).then(
    () => console.log(`wrote ${out} (schema version ${MIGRATIONS.length})`),
    (err: Error) => {
      console.error(`make-db-fixture: ${err.message}`);
      process.exit(1);
    },
  );
}
