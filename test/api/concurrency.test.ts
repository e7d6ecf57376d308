/**
 * Concurrent allocations over real HTTP against a listening coordinator:
 * hundreds of workloads at once must each get a distinct, valid address in
 * their node's slice; a full slice answers 409 `exhausted`; a released address
 * rests in quarantine before it is handed out again.
 */
import test from 'ava';
import type { AddressInfo } from 'node:net';
import { cidrContains, cidrsOverlap, cidrSize, intToIp, ipToInt, parseCidr } from '../../src/shared/ipv4.js';
import { DEFAULT_IPAM } from '../../src/coordinator/ipam.js';
import { enrollHost, hostCall, httpCaller, newApp, withReadOnly, type Call, type Host, type Reply, type TestApp } from '../fixtures/harness.js';

interface Workload {
  name: string;
  tenant: string;
  node: string;
  address: string;
  labels: Record<string, string>;
  createdAt: string;
}
interface HostView {
  name: string;
  tenants: { tenant: string; slice: string; address: string; listenPort: number }[];
}
interface ErrorBody {
  error: { code: string; message: string };
}

const NODES = 8;
let t0: TestApp;
let admin: Call;
let anon: Call;
let nodes: Host[];

test.before(async () => {
  // Enrolling is rate-limited per client address; every request here comes from 127.0.0.1.
  t0 = await newApp('concurrency', { enrollmentsPerMinute: 1000 });
  await t0.app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(t0.app.server.address() as AddressInfo).port}`;
  admin = httpCaller(url, t0.adminToken);
  anon = httpCaller(url, '');
  nodes = [];
  for (let i = 1; i <= NODES; i++) nodes.push(await enrollHost(admin, `n${i}`));
});

test.after.always(async () => {
  await t0?.close();
});

async function createTenant(name: string): Promise<{ subnet: string }> {
  const res = await admin<{ subnet: string }>('POST', '/v1/tenants', { name });
  if (res.status !== 201) throw new Error(`tenant ${name}: ${res.status} ${res.text}`);
  return res.body;
}

async function sliceOf(tenant: string, node: string): Promise<{ slice: string; address: string }> {
  const res = await admin<HostView>('GET', `/v1/nodes/${node}`);
  const m = res.body.tenants.find((x) => x.tenant === tenant);
  if (!m) throw new Error(`${node} is not a member of ${tenant}`);
  return m;
}

test('400 parallel allocations over 8 nodes: all 201, unique, inside subnet and slice, never network/broadcast/node address', async (t) => {
  const tenant = 'acme';
  const { subnet } = await createTenant(tenant);
  const tok = await admin<{ token: string }>('POST', `/v1/tenants/${tenant}/tokens`, { name: 'ci' });
  t.is(tok.status, 201);
  const tenantCall = httpCaller(new URL(t0.app.listeningOrigin).toString(), tok.body.token);

  const N = 400;
  const started = Date.now();
  // Three doors to the same allocator: admin, tenant token, and the node's own signed CNI path.
  const replies = await Promise.all(
    Array.from({ length: N }, (_, i): Promise<Reply<Workload>> => {
      const node = nodes[i % NODES]!;
      const name = `w-${i}`;
      const labels = { app: i % 2 ? 'web' : 'db' };
      if (i % 4 === 0) return hostCall<Workload>(anon, node, 'POST', `/v1/nodes/${node.name}/workloads`, { tenant, name, labels });
      if (i % 4 === 1) return tenantCall<Workload>('POST', `/v1/tenants/${tenant}/workloads`, { name, node: node.name, labels });
      return admin<Workload>('POST', `/v1/tenants/${tenant}/workloads`, { name, node: node.name, labels });
    }),
  );
  t.log(`${N} allocations in ${Date.now() - started} ms`);

  const bad = replies.map((r, i) => ({ i, status: r.status, text: r.text })).filter((r) => r.status !== 201);
  t.deepEqual(bad, [], 'every allocation is 201');

  const addresses = replies.map((r) => r.body.address);
  t.is(new Set(addresses).size, N, 'no address handed out twice');

  const net = parseCidr(subnet, 'subnet');
  const slices = new Map<string, { slice: string; address: string }>();
  for (const n of nodes) slices.set(n.name, await sliceOf(tenant, n.name));

  // Slices: inside the subnet, not the infrastructure slice 0, pairwise disjoint.
  const sliceCidrs = [...slices.values()].map((s) => parseCidr(s.slice, 'slice'));
  for (const [i, s] of sliceCidrs.entries()) {
    t.is(s.prefix, DEFAULT_IPAM.slicePrefix);
    t.true(cidrContains(net, s.base) && cidrContains(net, s.base + cidrSize(s.prefix) - 1), `slice ${intToIp(s.base)} inside ${subnet}`);
    t.not(s.base, net.base, 'slice 0 is for gateways');
    for (const o of sliceCidrs.slice(i + 1)) t.false(cidrsOverlap(s, o), 'slices do not overlap');
  }

  for (const [i, r] of replies.entries()) {
    const w = r.body;
    const node = nodes[i % NODES]!.name;
    t.is(w.node, node);
    t.is(w.name, `w-${i}`);
    t.is(w.tenant, tenant);
    const { slice, address: nodeAddr } = slices.get(node)!;
    const s = parseCidr(slice, 'slice');
    const ip = ipToInt(w.address);
    t.true(cidrContains(net, ip), `${w.address} inside tenant subnet ${subnet}`);
    t.true(cidrContains(s, ip), `${w.address} inside ${node}'s slice ${slice}`);
    t.not(ip, s.base, `${w.address} is not the network address`);
    t.not(ip, s.base + cidrSize(s.prefix) - 1, `${w.address} is not the broadcast address`);
    t.is(nodeAddr, intToIp(s.base + 1), 'node address = slice base + 1');
    t.not(w.address, nodeAddr, `${w.address} is not the node's own address`);
  }

  // The listing agrees with what the clients were told.
  const list = await admin<{ workloads: Workload[] }>('GET', `/v1/tenants/${tenant}/workloads`);
  t.is(list.body.workloads.length, N);
  const told = new Map(replies.map((r) => [r.body.name, r.body.address]));
  for (const w of list.body.workloads) t.is(told.get(w.name), w.address, w.name);

  // One audit entry per allocation, none for anything else.
  const audited = withReadOnly(t0.dbPath, (db) => db.prepare(`SELECT COUNT(*) FROM audit_log WHERE action = 'workload.create' AND target LIKE 'acme/%'`).pluck().get() as number);
  t.is(audited, N);
});

test('the same workload name raced 20 times: one 201; the node path answers the rest 200 with the same address, the admin path 409', async (t) => {
  const tenant = 'racer';
  await createTenant(tenant);
  const node = nodes[0]!;
  const viaNode = await Promise.all(
    Array.from({ length: 20 }, () => hostCall<Workload>(anon, node, 'POST', `/v1/nodes/${node.name}/workloads`, { tenant, name: 'dup', labels: {} })),
  );
  t.deepEqual(
    viaNode.map((r) => r.status).sort(),
    [...Array(19).fill(200), 201].sort(),
  );
  t.is(new Set(viaNode.map((r) => r.body.address)).size, 1, 'every answer names the one address');

  const viaAdmin = await Promise.all(Array.from({ length: 20 }, () => admin<Workload | ErrorBody>('POST', `/v1/tenants/${tenant}/workloads`, { name: 'dup2', node: node.name })));
  t.is(viaAdmin.filter((r) => r.status === 201).length, 1);
  const conflicts = viaAdmin.filter((r) => r.status === 409);
  t.is(conflicts.length, 19);
  for (const c of conflicts) t.is((c.body as ErrorBody).error.code, 'conflict');
  const list = await admin<{ workloads: Workload[] }>('GET', `/v1/tenants/${tenant}/workloads`);
  t.deepEqual(list.body.workloads.map((w) => w.name), ['dup', 'dup2']);
});

test('40 tenants created in parallel get disjoint subnets inside the pool', async (t) => {
  const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => admin<{ name: string; subnet: string }>('POST', '/v1/tenants', { name: `par-${i}` })));
  t.deepEqual(replies.filter((r) => r.status !== 201).map((r) => r.text), []);
  const pool = parseCidr(DEFAULT_IPAM.pool, 'pool');
  const subnets = replies.map((r) => parseCidr(r.body.subnet, 'subnet'));
  for (const [i, s] of subnets.entries()) {
    t.true(cidrContains(pool, s.base) && cidrContains(pool, s.base + cidrSize(s.prefix) - 1));
    for (const o of subnets.slice(i + 1)) t.false(cidrsOverlap(s, o), `${intToIp(s.base)} vs ${intToIp(o.base)}`);
  }
  // Parallel nodes joining one tenant get disjoint slices too.
  const joins = await Promise.all(nodes.map((n, i) => admin<Workload>('POST', '/v1/tenants/par-0/workloads', { name: `j-${i}`, node: n.name })));
  t.true(joins.every((r) => r.status === 201));
  const slices = await Promise.all(nodes.map((n) => sliceOf('par-0', n.name)));
  t.is(new Set(slices.map((s) => s.slice)).size, NODES);
});

test('filling one node slice: 61 fit, the rest get 409 exhausted naming the node and slice; a released address stays quarantined', async (t) => {
  const tenant = 'tiny';
  await createTenant(tenant);
  const node = nodes[1]!;
  const usable = cidrSize(DEFAULT_IPAM.slicePrefix) - 3; // network, broadcast, node address
  t.is(usable, 61);
  const replies = await Promise.all(
    Array.from({ length: 70 }, (_, i) =>
      i % 2
        ? admin<Workload | ErrorBody>('POST', `/v1/tenants/${tenant}/workloads`, { name: `f-${i}`, node: node.name })
        : hostCall<Workload | ErrorBody>(anon, node, 'POST', `/v1/nodes/${node.name}/workloads`, { tenant, name: `f-${i}` }),
    ),
  );
  const ok = replies.filter((r) => r.status === 201);
  const full = replies.filter((r) => r.status !== 201);
  t.is(ok.length, usable);
  t.is(full.length, 70 - usable);
  const { slice } = await sliceOf(tenant, node.name);
  for (const r of full) {
    t.is(r.status, 409);
    const e = (r.body as ErrorBody).error;
    t.is(e.code, 'exhausted');
    t.true(e.message.includes(node.name) && e.message.includes(slice), e.message);
    t.regex(e.message, /no free workload address/);
  }
  t.is(new Set(ok.map((r) => (r.body as Workload).address)).size, usable);

  // Release one: the slice is still full for now, and the message says why.
  const victim = ok[0]!.body as Workload;
  t.is((await admin('DELETE', `/v1/tenants/${tenant}/workloads/${victim.name}`)).status, 204);
  const again = await admin<ErrorBody>('POST', `/v1/tenants/${tenant}/workloads`, { name: 'after-release', node: node.name });
  t.is(again.status, 409);
  t.is(again.body.error.code, 'exhausted');
  t.regex(again.body.error.message, /in use or quarantined after release/);
  const list = await admin<{ workloads: Workload[] }>('GET', `/v1/tenants/${tenant}/workloads`);
  t.false(list.body.workloads.some((w) => w.address === victim.address), 'the released address was not handed out again');
});

test('a released address is not reused while quarantined, and is after the quarantine', async (t) => {
  let clock = Date.parse('2030-01-01T00:00:00Z');
  // A /28 slice: 13 workload addresses, so next-fit allocation comes round to the released one quickly.
  const q = await newApp('quarantine', { now: () => clock, enrollmentsPerMinute: 1000, ipam: { slicePrefix: 28 } });
  t.teardown(() => q.close());
  await q.admin('POST', '/v1/tenants', { name: 'acme' });
  await enrollHost(q.admin, 'n1');
  const mk = async (name: string) => {
    const r = await q.admin<Workload>('POST', '/v1/tenants/acme/workloads', { name, node: 'n1' });
    t.is(r.status, 201, r.text);
    return r.body.address;
  };
  const a = await mk('a');
  const b = await mk('b');
  t.is((await q.admin('DELETE', '/v1/tenants/acme/workloads/a')).status, 204);
  const c = await mk('c');
  t.not(c, a, 'released address not handed out immediately');
  t.not(c, b);
  // Fill the rest of the slice: the quarantined address is skipped, so the slice runs out.
  const handed = [a, b, c];
  for (let i = 0; i < 10; i++) handed.push(await mk(`fill${i}`));
  clock += DEFAULT_IPAM.quarantineMs - 1000;
  const early = await q.admin<ErrorBody>('POST', '/v1/tenants/acme/workloads', { name: 'd', node: 'n1' });
  t.is(early.status, 409, 'still quarantined just before the end');
  clock += 2000;
  t.is(await mk('e'), a, 'handed out again once the quarantine is over');
});
