/**
 * Schema migrations (PRAGMA user_version): the shipped fixture database of an
 * older (or the current) version opens, migrates to the latest, keeps every
 * row and is served by the API; an empty file migrates from 0; a newer
 * database is refused; a failing migration leaves nothing behind; the
 * connection settings the coordinator relies on are in force.
 * Fixtures come from scripts/make-db-fixture.ts.
 */
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../../src/coordinator/app.js';
import { MIGRATIONS } from '../../src/coordinator/db/migrations.js';
import { migrate, openDatabase, schemaVersion } from '../../src/coordinator/db/open.js';
import { generateSigningKeyPair, signRequest, verifyDocument } from '../../src/shared/crypto.js';
import { FIXTURE_ADMIN_TOKEN, FIXTURE_TENANT_TOKEN, fixtureIdentity, fixtureWireguard } from '../../scripts/make-db-fixture.js';
import { COORDINATOR_MAIN, ROOT, snapshotTables, tempDir } from '../fixtures/harness.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
const V1 = join(FIXTURES, 'coordinator-v1.db');
const LATEST = MIGRATIONS.length;
const TABLES = [
  'audit_log',
  'egress_gateways',
  'egress_rules',
  'exposure_gateways',
  'exposure_hostnames',
  'exposure_ports',
  'exposures',
  'hosts',
  'memberships',
  'meta',
  'policies',
  'released_addresses',
  'router_keys',
  'tenants',
  'tokens',
  'workloads',
];

/** A private copy of a fixture (tests never touch the committed file). */
async function copyOf(fixture: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await tempDir('migrate');
  const path = join(dir, 'coordinator.db');
  copyFileSync(fixture, path);
  return { path, cleanup };
}

const tables = (db: Database.Database): string[] =>
  db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).pluck().all() as string[];

function assertSettings(t: ExecutionContext, db: Database.Database): void {
  t.is(db.pragma('journal_mode', { simple: true }), 'wal');
  t.is(db.pragma('foreign_keys', { simple: true }), 1);
  t.is(db.pragma('busy_timeout', { simple: true }), 5000);
  t.is(db.pragma('synchronous', { simple: true }), 1, 'synchronous = NORMAL');
}

test('the fixture is small, self-contained and at schema version 1', (t) => {
  t.true(statSync(V1).size < 128 * 1024, `${statSync(V1).size} bytes`);
  const db = new Database(V1, { readonly: true, fileMustExist: true });
  try {
    t.is(schemaVersion(db), 1);
    t.is(db.pragma('journal_mode', { simple: true }), 'delete', 'no -wal file needed to read it');
    t.is(db.pragma('integrity_check', { simple: true }), 'ok');
  } finally {
    db.close();
  }
});

test('the v1 fixture migrates to the latest version with every row intact', async (t) => {
  const { path, cleanup } = await copyOf(V1);
  t.teardown(cleanup);
  const raw = new Database(path, { readonly: true });
  const before = snapshotTables(raw, []);
  raw.close();

  const db = openDatabase(path);
  try {
    t.is(schemaVersion(db), LATEST);
    assertSettings(t, db);
    t.is(db.pragma('integrity_check', { simple: true }), 'ok');
    t.deepEqual(db.pragma('foreign_key_check'), []);
    for (const name of TABLES) t.true(tables(db).includes(name), `table ${name}`);
    // Every row that was there is still there, column for column (new columns may be added).
    const after = snapshotTables(db, []);
    for (const [table, rows] of Object.entries(before)) {
      const now = after[table] as Record<string, unknown>[];
      t.is(now.length, rows.length, `${table}: row count`);
      for (const [i, row] of (rows as Record<string, unknown>[]).entries()) {
        const kept = Object.fromEntries(Object.keys(row).map((k) => [k, now[i]?.[k]]));
        t.deepEqual(kept, row, `${table} row ${i}`);
      }
    }
    t.deepEqual(
      Object.fromEntries(Object.entries(before).map(([k, v]) => [k, v.length])),
      {
        audit_log: 26,
        egress_gateways: 1,
        egress_rules: 1,
        exposure_gateways: 2,
        exposure_hostnames: 2,
        exposure_ports: 1,
        exposures: 2,
        hosts: 3,
        memberships: 4,
        meta: 1,
        policies: 2,
        released_addresses: 1,
        tenants: 2,
        tokens: 6,
        workloads: 4,
      },
      'the fixture holds rows of every kind',
    );
  } finally {
    db.close();
  }
});

test('the migrated v1 fixture is served by the API', async (t) => {
  const { path, cleanup } = await copyOf(V1);
  t.teardown(cleanup);
  // The fixture was made on a fixed clock; its host-signature window follows the app's clock.
  const app = await buildApp({ db: path, adminToken: FIXTURE_ADMIN_TOKEN, signingKey: fixtureIdentity('coordinator') });
  t.teardown(() => app.close());
  const get = async <T>(url: string, token = FIXTURE_ADMIN_TOKEN) => {
    const r = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } });
    t.is(r.statusCode, 200, `${url}: ${r.body}`);
    return r.json<T>();
  };

  const { tenants } = await get<{ tenants: { name: string; subnet: string; createdAt: string }[] }>('/v1/tenants');
  t.deepEqual(tenants, [
    { name: 'acme', subnet: '10.240.0.0/20', createdAt: '2025-01-15T12:00:00.000Z' },
    { name: 'globex', subnet: '10.240.16.0/24', createdAt: '2025-01-15T12:00:00.000Z' },
  ]);

  const { workloads } = await get<{ workloads: { name: string; node: string; address: string; labels: Record<string, string> }[] }>('/v1/tenants/acme/workloads');
  t.deepEqual(
    workloads.map((w) => [w.name, w.node, w.address, w.labels]),
    [
      ['db-1', 'node2', '10.240.0.131', { app: 'db', 'netwall.io/tier': 'data' }],
      ['web-1', 'node1', '10.240.0.66', { app: 'web' }],
      ['web-2', 'node2', '10.240.0.130', { app: 'web' }],
    ],
  );
  t.deepEqual((await get<{ workloads: { address: string }[] }>('/v1/tenants/globex/workloads')).workloads.map((w) => w.address), ['10.240.16.66']);

  const policy = await get<Record<string, unknown>>('/v1/tenants/acme/policies/web-to-db');
  t.like(policy, { name: 'web-to-db', from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432, '9000-9100'] }, { protocol: 'icmp' }] });
  const { exposures } = await get<{ exposures: Record<string, unknown>[] }>('/v1/tenants/acme/exposures');
  t.deepEqual(
    exposures.map((e) => [e.name, e.protocol, e.hostnames, e.publicPort, e.proxyProtocol]),
    [
      ['db-admin', 'tcp', [], 15432, true],
      ['site', 'http', ['acme.test', 'www.acme.test'], null, false],
    ],
  );
  const egress = await get<Record<string, unknown>>('/v1/tenants/acme/egress/updates');
  t.like(egress, { gateways: ['gateway1'], destinations: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: [80, 443] }, { cidr: '192.0.2.53/32', protocol: 'udp', ports: [53] }] });

  const node1 = await get<{ endpoint: string; status: string; appliedVersion: number; drops: Record<string, number>; tenants: { tenant: string; slice: string; address: string; listenPort: number; publicKey: string }[] }>(
    '/v1/nodes/node1',
  );
  t.like(node1, { endpoint: '192.0.2.11', status: 'ready', appliedVersion: 5, drops: { spoofed: 3, policy: 12 } });
  t.deepEqual(node1.tenants, [
    { tenant: 'acme', slice: '10.240.0.64/26', address: '10.240.0.65', listenPort: 51820, publicKey: fixtureWireguard('node1/acme').publicKey, nextPublicKey: null },
    { tenant: 'globex', slice: '10.240.16.64/26', address: '10.240.16.65', listenPort: 51821, publicKey: fixtureWireguard('node1/globex').publicKey, nextPublicKey: null },
  ]);
  t.like(await get('/v1/nodes/node2'), { endpoint: null, status: 'degraded', errors: ['wg set: device busy'] });
  const gw = await get<{ publicAddress: string; tenants: { slice: string }[] }>('/v1/gateways/gateway1');
  t.is(gw.publicAddress, '198.51.100.21');
  t.deepEqual(gw.tenants.map((m) => m.slice), ['10.240.0.1/32']);
  const { entries } = await get<{ entries: { action: string }[] }>('/v1/audit?limit=1000');
  t.is(entries.length, 26);
  t.true(entries.some((e) => e.action === 'workload.delete'));

  // The tenant token stored (as a hash) before the migration still authenticates, for its tenant only.
  t.is((await get<{ name: string }>('/v1/tenants/acme', FIXTURE_TENANT_TOKEN)).name, 'acme');
  t.is((await app.inject({ method: 'GET', url: '/v1/tenants/globex', headers: { authorization: `Bearer ${FIXTURE_TENANT_TOKEN}` } })).statusCode, 403);

  // A host enrolled before the migration still signs in, and gets a signed document of its state.
  const url = '/v1/nodes/node1/desired?after=0&wait=0';
  const desired = await app.inject({ method: 'GET', url, headers: signRequest('node1', fixtureIdentity('node1').secretKey, 'GET', url, '') });
  t.is(desired.statusCode, 200, desired.body);
  const signed = desired.json<{ document: string; signature: string }>();
  t.true(verifyDocument(signed, fixtureIdentity('coordinator').publicKey));
  const doc = JSON.parse(signed.document) as { host: string; tenants: { tenant: string; workloads: { name: string }[] }[] };
  t.is(doc.host, 'node1');
  t.deepEqual(doc.tenants.map((x) => [x.tenant, x.workloads.map((w) => w.name)]), [
    ['acme', ['web-1']],
    ['globex', ['api']],
  ]);

  // And it takes writes: the quarantine of the address released before the migration (.67) is
  // long over, so the next workload on node1 gets it back.
  const created = await app.inject({
    method: 'POST',
    url: '/v1/tenants/acme/workloads',
    headers: { authorization: `Bearer ${FIXTURE_ADMIN_TOKEN}` },
    payload: { name: 'web-3', node: 'node1', labels: { app: 'web' } },
  });
  t.is(created.statusCode, 201, created.body);
  t.is(created.json<{ address: string }>().address, '10.240.0.67');
});

test('every shipped fixture migrates to the latest version', async (t) => {
  const fixtures = readdirSync(FIXTURES).filter((f) => /^coordinator-v\d+\.db$/.test(f));
  t.true(fixtures.includes('coordinator-v1.db'));
  for (const f of fixtures) {
    const { path, cleanup } = await copyOf(join(FIXTURES, f));
    try {
      const db = openDatabase(path);
      t.is(schemaVersion(db), LATEST, f);
      t.is(db.pragma('integrity_check', { simple: true }), 'ok', f);
      t.deepEqual(db.pragma('foreign_key_check'), [], f);
      db.close();
      // Opening again is a no-op.
      const again = openDatabase(path);
      t.is(schemaVersion(again), LATEST, f);
      again.close();
    } finally {
      await cleanup();
    }
  }
});

test('an empty file (version 0) and a missing file migrate to the latest version', async (t) => {
  const { dir, cleanup } = await tempDir('migrate-empty');
  t.teardown(cleanup);
  const empty = join(dir, 'empty.db');
  writeFileSync(empty, '');
  for (const path of [empty, join(dir, 'missing.db')]) {
    const db = openDatabase(path);
    try {
      t.is(schemaVersion(db), LATEST);
      assertSettings(t, db);
      t.deepEqual(tables(db), TABLES);
      t.is(db.prepare(`SELECT value FROM meta WHERE key = 'revision'`).pluck().get(), '0');
      // foreign_keys is really enforced.
      t.throws(() => db.prepare(`INSERT INTO workloads (tenant_id, host_id, name, labels, address, created_at) VALUES (99, 99, 'x', '{}', '10.0.0.1', 'now')`).run(), {
        any: true,
        message: /FOREIGN KEY constraint failed/,
      });
    } finally {
      db.close();
    }
  }
});

test('a database from a newer coordinator is refused with a clear error; its version and tables stay', async (t) => {
  const { dir, cleanup } = await tempDir('migrate-newer');
  t.teardown(cleanup);
  const path = join(dir, 'coordinator.db');
  const future = new Database(path);
  future.exec('CREATE TABLE from_the_future (x)');
  future.pragma(`user_version = ${LATEST + 1}`);
  future.close();

  const message = new RegExp(`database schema version ${LATEST + 1} is newer than this coordinator \\(${LATEST}\\); refusing to run`);
  t.throws(() => openDatabase(path), { message });
  await t.throwsAsync(buildApp({ db: path, adminToken: 'x'.repeat(32), signingKey: generateSigningKeyPair() }), { message });

  // The real coordinator exits non-zero with that message and does not listen.
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NETWALL_')));
    const p = spawn(process.execPath, ['--import', 'tsx', COORDINATOR_MAIN, '--listen', '127.0.0.1:0', '--db', path], {
      cwd: ROOT,
      env: { ...env, NETWALL_ADMIN_TOKEN: 'x'.repeat(32) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
  t.is(result.code, 1, result.stderr);
  t.regex(result.stderr, message);

  const db = new Database(path, { readonly: true });
  t.is(schemaVersion(db), LATEST + 1);
  t.deepEqual(tables(db), ['from_the_future']);
  db.close();
});

// Regression: openDatabase used to switch the file to WAL before it looked at user_version,
// close the connection when migrate() throws. So an older coordinator that refuses a newer
// database still rewrites its header and leaves -wal/-shm (and an open handle) behind.
// Suggested fix in src/coordinator/db/open.ts: read user_version first and refuse before any
// pragma that writes; wrap migrate(db) in try/catch that closes db and rethrows.
test('refusing a newer database leaves the file byte for byte as it was', async (t) => {
  const { dir, cleanup } = await tempDir('migrate-newer-bytes');
  t.teardown(cleanup);
  const path = join(dir, 'coordinator.db');
  const future = new Database(path);
  future.exec('CREATE TABLE from_the_future (x)');
  future.pragma(`user_version = ${LATEST + 1}`);
  future.close();
  const bytes = readFileSync(path);
  t.throws(() => openDatabase(path), { message: /newer than this coordinator/ });
  t.true(readFileSync(path).equals(bytes), 'file header unchanged (still a rollback-journal database)');
  t.deepEqual(readdirSync(dir).sort(), ['coordinator.db'], 'no -wal/-shm left behind by an unclosed connection');
});

test('a failing migration rolls back completely; earlier steps stay applied', async (t) => {
  const { dir, cleanup } = await tempDir('migrate-fail');
  t.teardown(cleanup);
  const path = join(dir, 'coordinator.db');
  const broken = [...MIGRATIONS, `CREATE TABLE half_done (x); INSERT INTO meta (key, value) VALUES ('half', '1'); SELECT no_such_column FROM tenants;`];
  const db = new Database(path);
  try {
    t.throws(() => migrate(db, broken), { any: true, message: /no such column/ });
    // Every good step committed on its own; the bad one left no trace.
    t.is(schemaVersion(db), LATEST);
    t.false(tables(db).includes('half_done'));
    t.is(db.prepare(`SELECT COUNT(*) FROM meta WHERE key = 'half'`).pluck().get(), 0);
    // Fixing the migration and running again picks up where it stopped.
    migrate(db, [...MIGRATIONS, 'CREATE TABLE half_done (x);']);
    t.is(schemaVersion(db), LATEST + 1);
    t.true(tables(db).includes('half_done'));
  } finally {
    db.close();
  }
});
