/**
 * Reachability audits through the API: an admin starts one, nodes long-poll
 * their signed assignments and post results, the coordinator compares them
 * with the model. The nodes are played by signed requests here; the real
 * agents and probes are test/lab/conformance.test.ts.
 */
import test from 'ava';
import { openAssignment, type AuditAssignment, type ProbeReport } from '../../src/shared/audit.js';
import { testApp, type TestApp, type TestHost } from './helpers.js';

interface View {
  id: string;
  status: string;
  summary: { probes: number; matched: number; violations: number; broken: number; inconclusive: number; errors: number; pending: number; notRun: number };
  nodes: { name: string; state: string; probes: number; reported: number }[];
  mismatches: { i: number; outcome: string; expect: string; from: string; address: string; protocol: string; port: number | null; why: string; rules: string[] }[];
  probes?: { i: number; outcome: string }[];
}

async function world(): Promise<{ w: TestApp; n1: TestHost; n2: TestHost; gw: TestHost }> {
  const w = await testApp();
  for (const name of ['acme', 'globex']) await w.admin('POST', '/v1/tenants', { name });
  const n1 = await w.enroll('node', 'node1', { endpoint: '192.0.2.11' });
  const n2 = await w.enroll('node', 'node2', { endpoint: '192.0.2.12' });
  const gw = await w.enroll('gateway', 'gateway1', { endpoint: '192.0.2.21' });
  const wl = async (tenant: string, name: string, node: string, app: string) => {
    const r = await w.admin('POST', `/v1/tenants/${tenant}/workloads`, { name, node, labels: { app } });
    if (r.statusCode !== 201) throw new Error(r.body);
  };
  await wl('acme', 'web1', 'node1', 'web');
  await wl('acme', 'db1', 'node2', 'db');
  await wl('globex', 'app1', 'node1', 'app');
  await w.admin('PUT', '/v1/tenants/acme/policies/web-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }, { protocol: 'udp', ports: [5353] }] });
  return { w, n1, n2, gw };
}

/** What a node gets: its assignments, opened and checked like the agent does. */
async function claim(w: TestApp, n: TestHost): Promise<AuditAssignment[]> {
  const r = await n.call('GET', `/v1/nodes/${n.name}/audits?wait=0`);
  if (r.statusCode === 204) return [];
  if (r.statusCode !== 200) throw new Error(`${r.statusCode} ${r.body}`);
  return r.json<{ audits: { assignment: string; signature: string }[] }>().audits.map((s) => {
    const o = openAssignment(s, w.signingKey.publicKey, n.name);
    if ('error' in o) throw new Error(o.error);
    return o.assignment;
  });
}

/** The answer a correct wall gives: denied → silent, allowed → refused (reached, no listener). */
const faithful = (p: AuditAssignment['probes'][number]): ProbeReport => ({ i: p.i, got: p.expect === 'denied' ? 'silent' : 'refused', ms: 1, attempts: 1 });

async function report(n: TestHost, id: string, results: ProbeReport[], done: boolean) {
  return n.call('POST', `/v1/nodes/${n.name}/audits/${id}/results`, { results, done });
}

async function view(w: TestApp, id: string, query = ''): Promise<View> {
  const r = await w.admin('GET', `/v1/audits/${id}${query}`);
  if (r.statusCode !== 200) throw new Error(`${r.statusCode} ${r.body}`);
  return r.json<View>();
}

test('an audit end to end: planned, claimed by each node once (signed), reported in chunks, all matched', async (t) => {
  const { w, n1, n2 } = await world();
  const start = await w.admin('POST', '/v1/audits', { extraTargets: [{ address: '192.0.2.100' }] });
  t.is(start.statusCode, 201, start.body);
  const s = start.json<{ id: string; status: string; probes: number; nodes: { name: string; probes: number; state: string }[] }>();
  t.regex(s.id, /^[0-9a-f]{16}$/);
  t.is(s.status, 'running');
  t.deepEqual(s.nodes.map((n) => [n.name, n.state]), [['node1', 'pending'], ['node2', 'pending']]);
  t.is(s.nodes.reduce((k, n) => k + n.probes, 0), s.probes);
  t.is((await view(w, s.id)).summary.pending, s.probes);

  const [a1] = await claim(w, n1);
  t.is(a1!.id, s.id);
  t.true(a1!.probes.every((p) => ['web1', 'app1'].includes(p.workload)), 'node1 runs its own workloads only');
  t.deepEqual(await claim(w, n1), [], 'claimed once');
  t.true(a1!.probes.some((p) => p.workload === 'web1' && p.port === 5432 && p.expect === 'allowed'));
  t.true(a1!.probes.some((p) => p.workload === 'app1' && p.address === '192.0.2.100' && p.expect === 'denied'));

  const half = Math.floor(a1!.probes.length / 2);
  t.is((await report(n1, s.id, a1!.probes.slice(0, half).map(faithful), false)).statusCode, 200);
  t.is((await view(w, s.id)).status, 'running');
  t.is((await report(n1, s.id, a1!.probes.slice(half).map(faithful), true)).statusCode, 200);
  const [a2] = await claim(w, n2);
  t.is((await report(n2, s.id, a2!.probes.map(faithful), true)).statusCode, 200);

  const v = await view(w, s.id, '?wait=1&probes=all');
  t.is(v.status, 'done');
  t.is(v.summary.matched, s.probes);
  t.deepEqual(v.mismatches, []);
  t.is(v.probes!.length, s.probes);
  t.deepEqual(v.nodes.map((n) => [n.name, n.state, n.reported]), [['node1', 'done', a1!.probes.length], ['node2', 'done', a2!.probes.length]]);
  const list = (await w.admin('GET', '/v1/audits')).json<{ audits: { id: string; summary: { matched: number } }[] }>().audits;
  t.like(list[0], { id: s.id, summary: { matched: s.probes } });
  await w.close();
});

test('violations, broken and inconclusive cells are told apart; missing results are not_run', async (t) => {
  const { w, n1, n2 } = await world();
  const { id } = (await w.admin('POST', '/v1/audits', { tenants: ['acme'] })).json<{ id: string }>();
  const [a1] = await claim(w, n1);
  const [a2] = await claim(w, n2);
  const results = a1!.probes.map(faithful);
  const at = (f: (p: AuditAssignment['probes'][number]) => boolean) => results[a1!.probes.findIndex(f)]!;
  // web1 → db1 tcp 22 answered (the wall let it through); web1 → db1 tcp 5432 silent; udp 5353 silent.
  Object.assign(at((p) => p.port === 22 && p.address === a1!.probes.find((q) => q.port === 5432)!.address), { got: 'refused' });
  Object.assign(at((p) => p.port === 5432 && p.protocol === 'tcp'), { got: 'silent' });
  Object.assign(at((p) => p.port === 5353 && p.protocol === 'udp'), { got: 'silent' });
  await report(n1, id, results, true);
  await report(n2, id, a2!.probes.slice(1).map(faithful), true);
  const v = await view(w, id);
  t.is(v.status, 'done');
  t.like(v.summary, { violations: 1, broken: 1, inconclusive: 1, notRun: 1, errors: 0 });
  const byOutcome = Object.fromEntries(v.mismatches.map((m) => [m.outcome, m]));
  t.like(byOutcome.violation, { from: 'web1', protocol: 'tcp', port: 22, expect: 'denied' });
  t.regex(byOutcome.violation!.why, /no policy of tenant "acme" allows it/);
  t.like(byOutcome.broken, { from: 'web1', port: 5432, expect: 'allowed', rules: ['policy:web-db'] });
  t.like(byOutcome.inconclusive, { protocol: 'udp', port: 5353 });
  t.like(byOutcome.not_run, { from: 'db1' });
  await w.close();
});

test('a node not seen for minutes is offline at once: its probes are not_run; an audit past its deadline expires', async (t) => {
  const { w, n1 } = await world();
  w.app.netwall.store.db.prepare(`UPDATE hosts SET last_seen = ? WHERE name = 'node2'`).run(new Date(Date.now() - 10 * 60_000).toISOString());
  const s = (await w.admin('POST', '/v1/audits', { timeoutSeconds: 5 })).json<{ id: string; nodes: { name: string; state: string }[] }>();
  t.deepEqual(s.nodes.map((n) => [n.name, n.state]), [['node1', 'pending'], ['node2', 'offline']]);
  const [a1] = await claim(w, n1);
  await report(n1, s.id, a1!.probes.slice(0, 3).map(faithful), false);
  const v = await view(w, s.id, '?wait=10');
  t.is(v.status, 'expired');
  t.like(v.nodes.find((n) => n.name === 'node1'), { state: 'expired', reported: 3 });
  t.is(v.summary.matched, 3);
  t.is(v.summary.notRun, v.summary.probes - 3);
  const late = await report(n1, s.id, a1!.probes.slice(3, 4).map(faithful), true);
  t.is(late.statusCode, 409);
  await w.close();
});

test('node long-poll waits for an assignment and wakes when one is made', async (t) => {
  const { w, n1 } = await world();
  const poll = n1.call('GET', '/v1/nodes/node1/audits?wait=5');
  await new Promise((r) => setTimeout(r, 200));
  const t0 = Date.now();
  await w.admin('POST', '/v1/audits', { tenants: ['globex'] });
  const r = await poll;
  t.is(r.statusCode, 200);
  t.true(Date.now() - t0 < 2000);
  t.is(r.json<{ audits: unknown[] }>().audits.length, 1);
  t.is((await n1.call('GET', '/v1/nodes/node1/audits?wait=0')).statusCode, 204);
  await w.close();
});

test('bad input: unknown tenant, bad addresses and fields, foreign probes, unknown audits', async (t) => {
  const { w, n1, n2 } = await world();
  const code = async (r: Promise<{ statusCode: number; body: string }>, status: number, message?: RegExp) => {
    const res = await r;
    t.is(res.statusCode, status, res.body);
    if (message) t.regex((JSON.parse(res.body) as { error: { message: string } }).error.message, message);
  };
  await code(w.admin('POST', '/v1/audits', { tenants: ['nope'] }), 404, /tenant "nope"/);
  await code(w.admin('POST', '/v1/audits', { extraTargets: [{ address: '300.1.1.1' }] }), 400, /extraTargets\[0\]\.address/);
  await code(w.admin('POST', '/v1/audits', { extraTargets: [{ address: '192.0.2.1', tcp: [0] }] }), 400, /extraTargets\[0\]\.tcp\[0\]/);
  await code(w.admin('POST', '/v1/audits', { timeoutSeconds: 1 }), 400, /timeoutSeconds/);
  await code(w.admin('POST', '/v1/audits', { probes: 3 }), 400, /unknown field "probes"/);
  await code(w.admin('GET', '/v1/audits/not-an-id'), 400, /params\.id/);
  await code(w.admin('GET', '/v1/audits/0000000000000000'), 404, /does not exist/);
  const { id } = (await w.admin('POST', '/v1/audits', {})).json<{ id: string }>();
  const [a2] = await claim(w, n2);
  const [a1] = await claim(w, n1);
  await code(report(n1, id, [faithful(a2!.probes[0]!)], false), 400, /not one of node "node1"'s probes/);
  await code(report(n1, '0000000000000000', [faithful(a1!.probes[0]!)], false), 404);
  await code(n1.call('POST', `/v1/nodes/node1/audits/${id}/results`, { results: [{ i: 0, got: 'maybe', ms: 1, attempts: 1 }], done: false }), 400, /got/);
  await code(n1.call('POST', `/v1/nodes/node2/audits/${id}/results`, { results: [], done: true }), 403);
  await code(n1.call('GET', '/v1/nodes/node1/audits?wait=999'), 400, /wait/);
  await w.close();
});

test('the surface: underlay addresses, WireGuard ports, TCP exposure ports of gateways', async (t) => {
  const { w } = await world();
  await w.admin('PUT', '/v1/tenants/globex/exposures/db', {
    protocol: 'tcp', hostnames: [], mode: 'mesh', gateways: ['gateway1'], target: { selector: { app: 'app' }, port: 5432 }, tls: null, publicPort: 15432, proxyProtocol: false,
  });
  const r = await w.admin('GET', '/v1/audits/surface');
  t.is(r.statusCode, 200, r.body);
  const s = r.json<{ hosts: { name: string; kind: string; addresses: { address: string; what: string }[]; udp: number[]; tcp: number[] }[] }>();
  const by = Object.fromEntries(s.hosts.map((h) => [h.name, h]));
  t.deepEqual(by.node1!.addresses, [{ address: '192.0.2.11', what: 'endpoint' }]);
  t.true(by.node1!.udp.length >= 1, 'node1 serves acme and globex: WireGuard ports');
  t.deepEqual(by.gateway1!.tcp, [15432]);
  t.is(by.gateway1!.kind, 'gateway');
  await w.close();
});
