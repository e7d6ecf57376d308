/**
 * Crash safety: the real coordinator process is SIGKILLed in the middle of a
 * stream of concurrent allocations, then restarted on the same database.
 * After every kill the database (opened read-only while no process runs) must
 * be intact and consistent — no half-written allocation — and must hold every
 * allocation a client saw a 201 for. (synchronous=NORMAL in WAL mode may lose
 * the last commits on power loss, but a process kill must lose nothing that
 * was acknowledged: the commit is in the WAL file before the reply is sent.)
 */
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { generateToken } from '../../src/shared/crypto.js';
import { cidrContains, cidrSize, ipToInt, parseCidr } from '../../src/shared/ipv4.js';
import { enrollHost, httpCaller, startCoordinator, tempDir, withReadOnly, type Call, type Coordinator } from '../fixtures/harness.js';
import { mulberry32 } from '../helpers/random.js';

interface Ack {
  node: string;
  address: string;
}

const TENANT = 'acme';
const NODES = 12;
const WORKERS = 32;
const ROUNDS = 3;

interface Load {
  acked: number;
  inFlightAtKill: number;
  unknown: string[];
  unexpected: string[];
}

/**
 * Keep WORKERS allocations in flight until `stopAfter` of them were
 * acknowledged in this round, then kill -9 the coordinator while the rest are
 * still in flight.
 */
async function loadAndKill(c: Coordinator, admin: Call, round: number, stopAfter: number, acked: Map<string, Ack>): Promise<Load> {
  let seq = 0;
  let stopping = false;
  let inFlight = 0;
  let ackedHere = 0;
  let inFlightAtKill = -1;
  const unknown: string[] = [];
  const unexpected: string[] = [];
  let killed!: Promise<void>;
  const killOnce = () => {
    if (stopping) return;
    stopping = true;
    inFlightAtKill = inFlight;
    killed = c.kill9();
  };
  const worker = async () => {
    while (!stopping) {
      const i = seq++;
      const name = `r${round}-${i}`;
      const node = `n${(i % NODES) + 1}`;
      inFlight++;
      try {
        const r = await admin<{ address: string; node: string }>('POST', `/v1/tenants/${TENANT}/workloads`, { name, node, labels: { round: String(round) } });
        if (r.status === 201) {
          acked.set(name, { node: r.body.node, address: r.body.address });
          if (++ackedHere >= stopAfter) killOnce();
        } else {
          unexpected.push(`${name}: ${r.status} ${r.text}`);
        }
      } catch {
        // The connection died with the process: the outcome is unknown.
        unknown.push(name);
      } finally {
        inFlight--;
      }
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, worker));
  await killed;
  return { acked: ackedHere, inFlightAtKill, unknown, unexpected };
}

/** The invariants that must hold for the database file whenever no coordinator runs. */
function checkDatabase(t: ExecutionContext, dbPath: string, acked: Map<string, Ack>, label: string): number {
  return withReadOnly(dbPath, (db) => {
    t.is(db.pragma('integrity_check', { simple: true }), 'ok', `${label}: integrity_check`);
    t.deepEqual(db.pragma('foreign_key_check'), [], `${label}: foreign_key_check`);

    const dups = db.prepare('SELECT tenant_id, address, COUNT(*) AS n FROM workloads GROUP BY tenant_id, address HAVING n > 1').all();
    t.deepEqual(dups, [], `${label}: no address twice in a tenant`);

    // Every workload came with its audit entry and its node's membership, in the same transaction.
    const noAudit = db
      .prepare(
        `SELECT w.name FROM workloads w JOIN tenants t ON t.id = w.tenant_id
         WHERE NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.action = 'workload.create' AND a.target = t.name || '/' || w.name
                           AND json_extract(a.detail, '$.address') = w.address)`,
      )
      .pluck()
      .all();
    t.deepEqual(noAudit, [], `${label}: every workload has its workload.create audit entry`);
    const noMember = db
      .prepare('SELECT w.name FROM workloads w WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = w.tenant_id AND m.host_id = w.host_id)')
      .pluck()
      .all();
    t.deepEqual(noMember, [], `${label}: every workload's node is a member of its tenant`);
    // Nothing is deleted in this test, so the other direction holds too: no audit entry without its workload.
    const orphanAudit = db
      .prepare(
        `SELECT a.target FROM audit_log a WHERE a.action = 'workload.create'
         AND NOT EXISTS (SELECT 1 FROM workloads w JOIN tenants t ON t.id = w.tenant_id WHERE t.name || '/' || w.name = a.target)`,
      )
      .pluck()
      .all();
    t.deepEqual(orphanAudit, [], `${label}: no audit entry for a workload that is not there`);

    // Versions move with the global revision inside the same transaction.
    const revision = Number(db.prepare(`SELECT value FROM meta WHERE key = 'revision'`).pluck().get());
    const maxHost = db.prepare('SELECT MAX(version) FROM hosts').pluck().get() as number;
    const maxTenant = db.prepare('SELECT MAX(revision) FROM tenants').pluck().get() as number;
    t.true(maxHost <= revision && maxTenant === revision, `${label}: host versions ≤ tenant revision = revision ${revision} (hosts ${maxHost}, tenant ${maxTenant})`);

    // Every address is where it belongs.
    const rows = db
      .prepare(`SELECT w.name, w.address, h.name AS node, m.slice, m.address AS node_address, t.subnet FROM workloads w JOIN hosts h ON h.id = w.host_id
                JOIN memberships m ON m.tenant_id = w.tenant_id AND m.host_id = w.host_id JOIN tenants t ON t.id = w.tenant_id`)
      .all() as { name: string; address: string; node: string; slice: string; node_address: string; subnet: string }[];
    for (const r of rows) {
      const s = parseCidr(r.slice, 'slice');
      const ip = ipToInt(r.address);
      if (!cidrContains(s, ip) || ip === s.base || ip === s.base + cidrSize(s.prefix) - 1 || r.address === r.node_address || !cidrContains(parseCidr(r.subnet, 'subnet'), ip)) {
        t.fail(`${label}: ${r.name} has ${r.address}, outside the usable part of ${r.node}'s slice ${r.slice}`);
      }
    }

    // Durability: every acknowledged allocation is there, with the address the client was told.
    const byName = new Map(rows.map((r) => [r.name, r]));
    const lost = [...acked].filter(([name, a]) => byName.get(name)?.address !== a.address || byName.get(name)?.node !== a.node).map(([n]) => n);
    t.deepEqual(lost, [], `${label}: every acknowledged allocation survived`);
    return rows.length;
  });
}

test('kill -9 in the middle of concurrent allocations loses nothing acknowledged and leaves nothing half-written', async (t) => {
  t.timeout(110_000);
  const seed = Number(process.env.CRASH_SEED ?? Date.now() % 1_000_000);
  t.log(`CRASH_SEED=${seed}`);
  const rnd = mulberry32(seed);
  const { dir, cleanup } = await tempDir('crash');
  const dbPath = join(dir, 'coordinator.db');
  const adminToken = generateToken('admin');
  let c: Coordinator | undefined;
  try {
    c = await startCoordinator(dbPath, adminToken);
    let admin = httpCaller(c.url, adminToken);
    t.is((await admin('POST', '/v1/tenants', { name: TENANT })).status, 201);
    for (let i = 1; i <= NODES; i++) await enrollHost(admin, `n${i}`);

    const acked = new Map<string, Ack>();
    for (let round = 0; round < ROUNDS; round++) {
      const stopAfter = 40 + Math.floor(rnd() * 100);
      const load = await loadAndKill(c, admin, round, stopAfter, acked);
      const exit = await c.exited;
      t.is(exit.signal, 'SIGKILL', 'the coordinator died of SIGKILL');
      t.deepEqual(load.unexpected, [], 'no allocation was refused before the kill');
      t.true(load.inFlightAtKill > 0, 'killed while requests were in flight');
      const rows = checkDatabase(t, dbPath, acked, `after kill ${round + 1}`);
      const unknownThere = load.unknown.filter((n) => withReadOnly(dbPath, (db) => db.prepare('SELECT 1 FROM workloads WHERE name = ?').get(n)) !== undefined).length;
      t.log(
        `round ${round + 1}: ${load.acked} acknowledged, ${load.inFlightAtKill} in flight at the kill, ` +
          `${load.unknown.length} without an answer (${unknownThere} of those committed); ${rows} workloads in the database`,
      );

      c = await startCoordinator(dbPath, adminToken);
      admin = httpCaller(c.url, adminToken);
      const list = await admin<{ workloads: { name: string; address: string }[] }>('GET', `/v1/tenants/${TENANT}/workloads`);
      t.is(list.status, 200);
      const served = new Map(list.body.workloads.map((w) => [w.name, w.address]));
      t.deepEqual(
        [...acked].filter(([n, a]) => served.get(n) !== a.address).map(([n]) => n),
        [],
        'the restarted coordinator serves every acknowledged allocation',
      );
    }

    // The allocator carries on after the crashes without handing out a used address.
    const more = await Promise.all(Array.from({ length: 24 }, (_, i) => admin<{ name: string; node: string; address: string }>('POST', `/v1/tenants/${TENANT}/workloads`, { name: `after-${i}`, node: `n${(i % NODES) + 1}` })));
    t.deepEqual(more.filter((r) => r.status !== 201).map((r) => r.text), []);
    for (const r of more) acked.set(r.body.name, { node: r.body.node, address: r.body.address });
    await c.stop();
    const final = checkDatabase(t, dbPath, acked, 'after a clean stop');
    t.true(final >= acked.size);
  } finally {
    if (c) await c.kill9();
    await cleanup();
  }
});
