/**
 * The store keeps each tenant's compiled form warm by patching it per
 * workload change inside the shared (group-commit) transaction. Whatever part
 * of a batch rolls back — one change's savepoint, or the whole transaction at
 * COMMIT — the cached tenant must equal a fresh compile of what the database
 * holds, and tenants handed out earlier must stay as they were.
 */
import test from 'ava';
import { openDatabase, type Db } from '../../../src/coordinator/db/open.js';
import { DEFAULT_IPAM } from '../../../src/coordinator/ipam.js';
import { compileTenant, type CompiledTenant } from '../../../src/coordinator/render.js';
import { Store } from '../../../src/coordinator/store.js';
import { dumpCompiled } from './fixtures.js';

const admin = { id: 'admin' };


async function world(): Promise<{ db: Db; store: Store }> {
  const db = openDatabase(':memory:');
  // Slices of /22: room for every workload the tests add, released addresses resting included.
  const store = new Store(db, { ...DEFAULT_IPAM, slicePrefix: 22 });
  await store.createTenant(admin, 'acme');
  for (const name of ['n1', 'n2', 'n3']) {
    await store.createEnrollmentToken(admin, 'node', name, `hash-${name}`, new Date(Date.now() + 60_000).toISOString());
    await store.enroll({ tokenHash: `hash-${name}`, name, identityKey: `key-${name}`, endpointHost: null, portBase: null, mgmtAddress: null, publicAddress: null });
  }
  await store.putPolicy(admin, 'acme', 'web-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }] });
  // Every node a member, so the changes below take the incremental path.
  await Promise.all(['n1', 'n2', 'n3'].map((n, i) => store.createWorkload(admin, 'acme', `seed${i}`, n, { app: i ? 'db' : 'web' })));
  return { db, store };
}

const cached = (store: Store) => store.compiledTenant(store.tenant('acme'));
const fresh = (store: Store) => compileTenant(store.loadTenantModel(store.tenant('acme')));
const names = (c: CompiledTenant) => c.workloads.toArray().map((w) => w.name);

test('the temp store (savepoint journals) is in memory', (t) => {
  const db = openDatabase(':memory:');
  t.is(db.pragma('temp_store', { simple: true }), 2);
  db.close();
});

test('a change that fails inside its savepoint leaves the cache equal to a fresh compile', async (t) => {
  const { db, store } = await world();
  const before = cached(store);
  const beforeDump = dumpCompiled(before);
  // The audit row is the last write of a change: failing there rolls back the whole savepoint.
  db.exec(`CREATE TEMP TRIGGER boom BEFORE INSERT ON audit_log WHEN NEW.target = 'acme/boom' BEGIN SELECT RAISE(ABORT, 'boom'); END`);
  // One batch: these are queued in the same tick and share one transaction.
  const results = await Promise.allSettled([
    store.createWorkload(admin, 'acme', 'a', 'n1', { app: 'web' }),
    store.deleteWorkload(admin, 'acme', 'seed1'),
    store.createWorkload(admin, 'acme', 'a', 'n3', { app: 'db' }), // conflict: rolls back before writing
    store.createWorkload(admin, 'acme', 'b', 'n3', { app: 'db' }),
    store.createWorkload(admin, 'acme', 'boom', 'n2', { app: 'db' }),
  ]);
  t.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'rejected'],
  );
  // The next change takes the revision number boom had, without touching the cache: a cache
  // that had kept boom would now look current.
  await store.putPolicy(admin, 'acme', 'db-web', { from: { app: 'db' }, to: { app: 'web' }, allow: [{ protocol: 'icmp' }] });
  t.deepEqual(names(cached(store)), ['a', 'b', 'seed0', 'seed2']);
  t.deepEqual(cached(store).model.policies.map((p) => p.name).sort(), ['db-web', 'web-db']);
  t.is(dumpCompiled(cached(store)), dumpCompiled(fresh(store)));
  // The tenant handed out before the batch is untouched.
  t.is(dumpCompiled(before), beforeDump);
  t.deepEqual(names(before), ['seed0', 'seed1', 'seed2']);
});

test('a batch whose COMMIT fails leaves nothing of it in the cache', async (t) => {
  const { db, store } = await world();
  const before = cached(store);
  const beforeDump = dumpCompiled(before);
  // A deferred foreign key violation passes every statement and fails only the COMMIT.
  db.exec(`
    CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY);
    CREATE TEMP TABLE child (parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
    CREATE TEMP TRIGGER late AFTER INSERT ON audit_log WHEN NEW.target = 'acme/late' BEGIN INSERT INTO child VALUES (42); END;
  `);
  const results = await Promise.allSettled([
    store.createWorkload(admin, 'acme', 'x', 'n1', { app: 'web' }),
    store.deleteWorkload(admin, 'acme', 'seed2'),
    store.createWorkload(admin, 'acme', 'late', 'n2', { app: 'db' }),
  ]);
  t.deepEqual(
    results.map((r) => r.status),
    ['rejected', 'rejected', 'rejected'],
  );
  // As many changes that leave the cache alone as the batch had: the revision numbers meet again.
  for (const name of ['p1', 'p2', 'p3']) await store.putPolicy(admin, 'acme', name, { from: { app: 'db' }, to: { app: 'web' }, allow: [{ protocol: 'icmp' }] });
  t.deepEqual(names(fresh(store)), ['seed0', 'seed1', 'seed2']);
  t.deepEqual(names(cached(store)), ['seed0', 'seed1', 'seed2']);
  t.is(dumpCompiled(cached(store)), dumpCompiled(fresh(store)));
  t.is(dumpCompiled(before), beforeDump);
  // And the store carries on: the next batch commits and is cached.
  db.exec('DROP TRIGGER late');
  await store.createWorkload(admin, 'acme', 'y', 'n1', { app: 'web' });
  t.deepEqual(names(cached(store)), ['seed0', 'seed1', 'seed2', 'y']);
  t.is(dumpCompiled(cached(store)), dumpCompiled(fresh(store)));
});

test('many batches of adds and removes keep the cache equal to a fresh compile', async (t) => {
  const { store } = await world();
  let n = 0;
  for (let round = 0; round < 20; round++) {
    const batch: Promise<unknown>[] = [];
    for (let i = 0; i < 15; i++) batch.push(store.createWorkload(admin, 'acme', `w${n++}`, `n${(n % 3) + 1}`, { app: ['web', 'db', 'cron'][n % 3]! }));
    for (let i = 0; i < 5; i++) batch.push(store.deleteWorkload(admin, 'acme', `w${n - 15 - 3 * i}`).catch(() => false));
    await Promise.all(batch);
    const c = cached(store);
    t.is(dumpCompiled(c), dumpCompiled(fresh(store)), `round ${round}`);
    t.is(cached(store), c, 'served from the cache, not recompiled');
  }
});
