/**
 * Lab conformance suite (issue 6 §1, §3): the policy model's expected
 * reachability, probed for real by `netwall audit` — the real CLI against
 * the lab coordinator, the real agents running every probe from inside
 * their containers' network namespaces — after each step of a sequence of
 * policy changes; every probe must match (100 %), and every run has at least
 * 500 probes. The expectations come from the coordinator's policy model
 * (audit-plan.ts → explainFlow), never from observation. Then a control (the
 * audit must catch a hole and a broken flow made by hand in a node's
 * table), and the outside view: `netwall audit scan --from-here` from the
 * internet host, in-process and with nmap.
 *
 *   npm run build && npx ava --config ava.lab.config.js test/lab/conformance.test.ts
 *
 * World: scripts/lab-world.ts under the prefix nwt<pid>c (coordinator, node1,
 * node2, gateway1 as acme's egress gateway, the internet host with a web
 * server on 203.0.113.10:80), three tenants, eight containers (plain network
 * namespaces attached through `netwall-agent attach`, so the agents know
 * their namespaces), socat servers on TCP and UDP ports inside them.
 * Agents run with a long interval: drift repair must not undo the control's
 * hand-made rules mid-audit (documents still apply at once). Root only;
 * skipped otherwise. Everything made is removed, processes by pid.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOSTS, INTERNET_WEB, LabWorld, NODES, run, waitUntil, type NodeName } from '../../scripts/lab-world.js';
import { tearDownWorld } from './helpers/teardown.js';
import { labUnavailable } from './helpers/netns.js';

const P = process.pid;
const PREFIX = `nwt${P}c`;
const MIN_PROBES = 500;
const skip = labUnavailable(['ip', 'ss', 'nft', 'wg', 'wireguard-go', 'nsenter', 'unshare', 'socat', 'ping']);
const labTest = skip ? test.skip : test.serial;
if (skip) console.log(`SKIP test/lab/conformance.test.ts: ${skip}`);

const dir = skip ? '' : mkdtempSync(join(tmpdir(), `${PREFIX}-`));
const world = new LabWorld({ prefix: PREFIX, dir, agentInterval: 300, agentArgs: ['--underlay-restrict', '--underlay-allow-tcp', '22'] });
const INTERNET = HOSTS.internet.public as string;

interface Box {
  name: string;
  tenant: string;
  node: NodeName;
  app: string;
  netns: string;
  ip: string;
}
const box: Record<string, Box> = {};

const CONTAINERS: Omit<Box, 'netns' | 'ip'>[] = [
  { name: 'web1', tenant: 'acme', node: 'node1', app: 'web' },
  { name: 'cache1', tenant: 'acme', node: 'node1', app: 'cache' },
  { name: 'db1', tenant: 'acme', node: 'node2', app: 'db' },
  { name: 'front1', tenant: 'globex', node: 'node1', app: 'front' },
  { name: 'back1', tenant: 'globex', node: 'node2', app: 'back' },
  { name: 'back2', tenant: 'globex', node: 'node1', app: 'back' },
  { name: 'worker1', tenant: 'initech', node: 'node1', app: 'worker' },
  { name: 'api1', tenant: 'initech', node: 'node2', app: 'api' },
];

/** Servers inside the containers (socat, one process each, stopped by pid at the end): every policy port below has one. */
const SERVERS: [string, 'tcp' | 'udp', number][] = [
  ['db1', 'tcp', 5432],
  ['db1', 'tcp', 5433],
  ['db1', 'udp', 5353],
  ['cache1', 'tcp', 6379],
  ['back1', 'tcp', 8080],
  ['back1', 'tcp', 8081],
  ['back2', 'tcp', 8080],
  ['front1', 'tcp', 80],
  ['api1', 'tcp', 9000],
  ['api1', 'udp', 9000],
];

// ------------------------------------------------------------------ helpers

async function attach(c: Omit<Box, 'netns' | 'ip'>): Promise<Box> {
  const ns = `${PREFIX}-k-${c.name}`;
  await run(['ip', 'netns', 'add', ns]);
  await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  const netns = `/run/netns/${ns}`;
  const out = await run(world.agentArgv(c.node, 'attach', ['--tenant', c.tenant, '--name', c.name, '--label', `app=${c.app}`, '--netns', netns, '--socket', world.socketOf(c.node), '--json']));
  const res = JSON.parse(out.stdout) as { workload: { address: string } };
  return (box[c.name] = { ...c, netns, ip: res.workload.address.replace(/\/32$/, '') });
}

async function listen(c: Box, proto: 'tcp' | 'udp', port: number): Promise<void> {
  const address = proto === 'tcp' ? `TCP-LISTEN:${port},fork,reuseaddr` : `UDP-RECVFROM:${port},fork`;
  world.startProcess(`srv-${c.name}-${proto}-${port}`, ['nsenter', `--net=${c.netns}`, 'socat', address, 'SYSTEM:read line; echo ok']);
  await waitUntil(async () => {
    const r = await run(['nsenter', `--net=${c.netns}`, 'ss', '-Hln', proto === 'tcp' ? '-t' : '-u', `sport = :${port}`], { allowFailure: true });
    return r.stdout.trim() !== '';
  }, 5000, `${c.name} ${proto}/${port} listening`, 50);
}

async function current(): Promise<boolean> {
  for (const n of NODES) {
    const v = await world.nodeView(n);
    if (v.appliedVersion !== v.version) return false;
  }
  const g = await world.curl('GET', '/v1/gateways/gateway1');
  const gv = g.body as { appliedVersion?: number; version?: number };
  return g.status === 200 && gv.appliedVersion === gv.version;
}

async function cli(args: string[]): Promise<void> {
  await world.cli(args);
}

interface ProbeView {
  i: number;
  tenant: string;
  from: string;
  target: string;
  address: string;
  protocol: string;
  port: number | null;
  expect: 'allowed' | 'denied';
  outcome: string;
  got: string | null;
  detail?: string;
  why: string;
}
interface AuditView {
  id: string;
  status: string;
  summary: { probes: number; matched: number; violations: number; broken: number; inconclusive: number; errors: number; pending: number; notRun: number };
  nodes: { name: string; state: string; probes: number }[];
  mismatches: ProbeView[];
  probes: ProbeView[];
}

/** `netwall audit --json` from the management network: exit code, the view, wall time. */
async function audit(extra: string[] = []): Promise<{ code: number; view: AuditView; seconds: number }> {
  const t0 = Date.now();
  const out = await world.cli(
    ['audit', '--json', '--probe-timeout', '1000', '--timeout', '240', '--extra-target', INTERNET, '--extra-target', `udp:${INTERNET}:53`, ...extra],
    { allowFailure: true, timeoutMs: 300_000 },
  );
  let view: AuditView;
  try {
    view = JSON.parse(out.stdout) as AuditView;
  } catch {
    throw new Error(`netwall audit: exit ${out.status}: ${out.stderr.trim() || out.stdout.slice(0, 500)}`);
  }
  return { code: out.status, view, seconds: (Date.now() - t0) / 1000 };
}

const cellOf = (v: AuditView, from: string, to: string, protocol: string, port: number | null) =>
  v.probes.find((p) => p.from === from && p.address === box[to]!.ip && p.protocol === protocol && p.port === port);

function describe(p: ProbeView): string {
  return `${p.outcome}: ${p.tenant}/${p.from} → ${p.target} ${p.address} ${p.protocol}${p.port === null ? '' : `/${p.port}`} expected ${p.expect}, got ${p.got}${p.detail ? ` (${p.detail})` : ''} — ${p.why}`;
}

const runs: { step: string; probes: number; seconds: number }[] = [];

/** One step's audit: at least MIN_PROBES probes, every one matched, exit 0. */
async function conforms(t: ExecutionContext, step: string, extra: string[] = []): Promise<AuditView> {
  await waitUntil(current, 60_000, 'agents and gateway to apply the latest documents', 200);
  const { code, view, seconds } = await audit(extra);
  const s = view.summary;
  runs.push({ step, probes: s.probes, seconds });
  t.log(`${step}: ${s.probes} probes from ${new Set(view.probes.map((p) => `${p.tenant}/${p.from}`)).size} containers on ${view.nodes.length} nodes, ` +
    `${s.matched} matched (${((100 * s.matched) / s.probes).toFixed(1)} %), ${view.probes.filter((p) => p.expect === 'allowed').length} expected open, ${seconds.toFixed(1)} s`);
  for (const m of view.mismatches.slice(0, 25)) t.log(`  ${describe(m)}`);
  t.true(s.probes >= MIN_PROBES, `${s.probes} probes (at least ${MIN_PROBES})`);
  t.is(s.matched, s.probes, `${s.probes - s.matched} mismatches`);
  t.is(code, 0);
  t.is(view.status, 'done');
  return view;
}

// ------------------------------------------------------------------ fixture

test.before(async () => {
  if (skip) return;
  for (const f of ['coordinator/main.js', 'node-agent/main.js', 'node-agent/audit-probe-main.js', 'cli/main.js', 'gateway/main.js']) {
    if (!existsSync(world.dist(f))) throw new Error(`dist/${f} missing: npm run build first`);
  }
  world.saveState();
  await world.createNetwork();
  await world.startCoordinator();
  for (const t of ['acme', 'globex', 'initech']) await cli(['tenant', 'create', t]);
  for (const n of NODES) {
    await world.enrollNode(n);
    await world.startAgent(n);
  }
  await world.startGateway('gateway1');
  world.buildRootfs();
  world.startProcess('internet-httpd', [...world.enter('internet'), '/bin/busybox', 'httpd', '-f', '-p', `${INTERNET_WEB}:80`, '-h', join(world.rootfs, 'www')]);

  // Step 1's policies before the containers: the agents write the CNI networks as tenants get members.
  await cli(['policy', 'set', '--tenant', 'acme', 'web-db', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:5432', '--allow', 'udp:5353']);
  await cli(['policy', 'set', '--tenant', 'acme', 'web-cache', '--from', 'app=web', '--to', 'app=cache', '--allow', 'tcp:6379']);
  await cli(['policy', 'set', '--tenant', 'globex', 'front-back', '--from', 'app=front', '--to', 'app=back', '--allow', 'tcp:8080']);
  await cli(['egress', 'set', '--tenant', 'acme', 'internet', '--gateway', 'gateway1', '--allow', `tcp:${INTERNET_WEB}/32:80`]);

  for (const c of CONTAINERS) await attach(c);
  for (const [name, proto, port] of SERVERS) await listen(box[name]!, proto, port);
  await waitUntil(current, 60_000, 'agents and gateway to apply their documents', 200);
  // First packets bring the WireGuard sessions up.
  await waitUntil(() => world.reach(box.web1!.netns, 'tcp', box.db1!.ip, 5432, 1), 30_000, 'web1 → db1 across the mesh', 100);
  await waitUntil(() => world.reach(box.front1!.netns, 'tcp', box.back1!.ip, 8080, 1), 30_000, 'front1 → back1 across the mesh', 100);
  await waitUntil(async () => (await world.httpGet(box.web1!.netns, `http://${INTERNET_WEB}/`, 2)) !== null, 30_000, 'web1 → the internet web server through gateway1', 200);
});

test.after.always('remove everything', async (t) => {
  if (skip) return;
  if (runs.length) t.log(`audits: ${runs.map((r) => `${r.step} ${r.probes} probes ${r.seconds.toFixed(1)} s`).join('; ')}`);
  await tearDownWorld(t, world);
});

// ------------------------------------------------------------------ the sequence

// Step 1's audit takes about a minute longer than the others: the agents' own long-polls, opened before
// their first --underlay-restrict table, stall until a TCP keepalive (conntrack picks such connections up
// as NEW, and underlay_input accepts only established ones) — a data-plane finding, not the audit's.
labTest('step 1 — initial policies, egress through gateway1: every probe matches the model', async (t) => {
  const v = await conforms(t, 'step 1');
  t.like(cellOf(v, 'web1', 'db1', 'tcp', 5432), { expect: 'allowed', outcome: 'match', got: 'answered' });
  t.like(cellOf(v, 'web1', 'db1', 'udp', 5353), { expect: 'allowed', outcome: 'match', got: 'answered' });
  t.like(cellOf(v, 'web1', 'db1', 'icmp', null), { expect: 'denied', outcome: 'match' });
  t.like(cellOf(v, 'web1', 'back2', 'tcp', 8080), { expect: 'denied', outcome: 'match' }, 'cross-tenant, same node, a served port');
  const egress = v.probes.filter((p) => p.address === INTERNET_WEB && p.protocol === 'tcp' && p.port === 80);
  t.deepEqual([...new Set(egress.filter((p) => p.expect === 'allowed').map((p) => p.tenant))], ['acme']);
  t.true(egress.filter((p) => p.tenant === 'acme').every((p) => p.got === 'answered'), 'acme reaches the internet web server through gateway1');
  const hosts = v.probes.filter((p) => /node|gateway|coordinator|own node link/.test(p.target));
  t.true(hosts.length > 200 && hosts.every((p) => p.expect === 'denied'), `${hosts.length} host cells, all denied`);
});

labTest('step 2 — policies added (icmp, a reverse flow, a third tenant\'s TCP and UDP): every probe matches', async (t) => {
  await cli(['policy', 'set', '--tenant', 'acme', 'web-db', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:5432', '--allow', 'udp:5353', '--allow', 'icmp']);
  await cli(['policy', 'set', '--tenant', 'globex', 'back-front', '--from', 'app=back', '--to', 'app=front', '--allow', 'tcp:80']);
  await cli(['policy', 'set', '--tenant', 'initech', 'worker-api', '--from', 'app=worker', '--to', 'app=api', '--allow', 'tcp:9000', '--allow', 'udp:9000']);
  const v = await conforms(t, 'step 2');
  t.like(cellOf(v, 'web1', 'db1', 'icmp', null), { expect: 'allowed', outcome: 'match', got: 'answered' });
  t.like(cellOf(v, 'back2', 'front1', 'tcp', 80), { expect: 'allowed', outcome: 'match' }, 'same node');
  t.like(cellOf(v, 'worker1', 'api1', 'udp', 9000), { expect: 'allowed', outcome: 'match', got: 'answered' });
  t.like(cellOf(v, 'api1', 'worker1', 'tcp', 22), { expect: 'denied', outcome: 'match' });
});

labTest('step 3 — ports changed (5432 → 5433, a range, every TCP port): every probe matches', async (t) => {
  await cli(['policy', 'set', '--tenant', 'acme', 'web-db', '--from', 'app=web', '--to', 'app=db', '--allow', 'tcp:5433', '--allow', 'udp:5353', '--allow', 'icmp']);
  await cli(['policy', 'set', '--tenant', 'globex', 'front-back', '--from', 'app=front', '--to', 'app=back', '--allow', 'tcp:8080-8081']);
  await cli(['policy', 'set', '--tenant', 'initech', 'worker-api', '--from', 'app=worker', '--to', 'app=api', '--allow', 'tcp', '--allow', 'udp:9000']);
  const v = await conforms(t, 'step 3');
  t.like(cellOf(v, 'web1', 'db1', 'tcp', 5432), { expect: 'denied', outcome: 'match' }, 'the old port is closed now');
  t.like(cellOf(v, 'web1', 'db1', 'tcp', 5433), { expect: 'allowed', outcome: 'match', got: 'answered' });
  t.like(cellOf(v, 'front1', 'back1', 'tcp', 8081), { expect: 'allowed', outcome: 'match' });
  t.like(cellOf(v, 'worker1', 'api1', 'tcp', 22), { expect: 'allowed', outcome: 'match', got: 'refused' }, 'every TCP port: no listener, but reached');
});

labTest('step 4 — policies deleted: every probe matches', async (t) => {
  await cli(['policy', 'delete', '--tenant', 'acme', 'web-cache']);
  await cli(['policy', 'delete', '--tenant', 'globex', 'back-front']);
  // The deleted policies' ports are in use no more: ask for them, so the audit probes them (now denied).
  const v = await conforms(t, 'step 4', ['--port', 'tcp:6379,80']);
  t.like(cellOf(v, 'web1', 'cache1', 'tcp', 6379), { expect: 'denied', outcome: 'match' });
  t.like(cellOf(v, 'back2', 'front1', 'tcp', 80), { expect: 'denied', outcome: 'match' });
  t.true(runs.every((r) => r.probes >= MIN_PROBES));
});

labTest('control: a hole and a broken flow made by hand in node1\'s table are caught (exit 1)', async (t) => {
  const web1 = box.web1!;
  const rules = [
    ['ip', 'saddr', web1.ip, 'ip', 'daddr', box.cache1!.ip, 'tcp', 'dport', '22', 'accept', 'comment', '"audit-control"'],
    ['ip', 'saddr', web1.ip, 'ip', 'daddr', box.db1!.ip, 'tcp', 'dport', '5433', 'drop', 'comment', '"audit-control"'],
  ];
  for (const r of rules) await world.exec('node1', ['nft', 'insert', 'rule', 'inet', 'netwall', 'from_container', ...r]);
  try {
    const { code, view, seconds } = await audit(['--tenant', 'acme']);
    t.log(`control: ${view.summary.probes} probes, ${view.summary.violations} violations, ${view.summary.broken} broken, ${seconds.toFixed(1)} s`);
    for (const m of view.mismatches) t.log(`  ${describe(m)}`);
    t.is(code, 1, 'a violation: exit 1');
    t.like(view.summary, { violations: 1, broken: 1 });
    t.like(view.mismatches.find((m) => m.outcome === 'violation'), { from: 'web1', address: box.cache1!.ip, protocol: 'tcp', port: 22, expect: 'denied', got: 'refused' });
    t.like(view.mismatches.find((m) => m.outcome === 'broken'), { from: 'web1', address: box.db1!.ip, protocol: 'tcp', port: 5433, expect: 'allowed', got: 'silent' });
  } finally {
    const listing = (await world.exec('node1', ['nft', '-a', 'list', 'chain', 'inet', 'netwall', 'from_container'])).stdout;
    for (const m of listing.matchAll(/comment "audit-control" # handle (\d+)/g)) {
      await world.exec('node1', ['nft', 'delete', 'rule', 'inet', 'netwall', 'from_container', 'handle', m[1]!], { allowFailure: true });
    }
  }
});

labTest('from the outside: scanning nodes and gateway1 from the internet host finds only allowed ports answering (in-process and nmap)', async (t) => {
  const surfaceFile = join(dir, 'surface.json');
  writeFileSync(surfaceFile, (await world.cli(['audit', 'surface', '--json'])).stdout);
  const scan = async (extra: string[]) => {
    const t0 = Date.now();
    const out = await world.exec('internet', [process.execPath, world.dist('cli/main.js'), 'audit', 'scan', '--from-here', '--expect', surfaceFile, '--json', ...extra], { allowFailure: true, timeoutMs: 240_000 });
    let body: { summary: { cells: number; addresses: number; violations: number; unfiltered: number; errors: number; allowed: number }; results: { finding: string; host: string; address: string; protocol: string; port: number; state: string }[]; notes: string[] };
    try {
      body = JSON.parse(out.stdout) as typeof body;
    } catch {
      throw new Error(`audit scan: exit ${out.status}: ${out.stderr.trim()}`);
    }
    return { code: out.status, body, seconds: (Date.now() - t0) / 1000 };
  };
  const here = await scan([]);
  const s = here.body.summary;
  t.log(`scan from the internet host: ${s.cells} ports on ${s.addresses} addresses, ${s.violations} violations, ${s.unfiltered} unfiltered, ${s.allowed} allowed, ${here.seconds.toFixed(1)} s`);
  for (const r of here.body.results.filter((x) => x.finding !== 'ok' && x.finding !== 'allowed')) t.log(`  ${r.finding} ${r.host} ${r.address} ${r.protocol}/${r.port} ${r.state}`);
  t.is(here.code, 0);
  t.like(s, { violations: 0, unfiltered: 0, errors: 0 });
  const open = here.body.results.filter((r) => r.state === 'open').map((r) => `${r.host} ${r.protocol}/${r.port}`);
  t.true(open.includes('gateway1 tcp/80'), `open: ${open.join(', ')}`);
  t.true(open.every((o) => o.startsWith('gateway1 tcp/')), `only gateway1's listeners are open: ${open.join(', ')}`);

  if ((await run(['sh', '-c', 'command -v nmap'], { allowFailure: true })).status !== 0) return t.log('nmap not installed: skipped the --nmap scan');
  const nm = await scan(['--nmap', 'node1', 'gateway1']);
  t.log(`nmap scan: ${nm.body.summary.cells} ports on ${nm.body.summary.addresses} addresses, ${nm.body.summary.violations} violations, ${nm.body.summary.unfiltered} unfiltered, ${nm.seconds.toFixed(1)} s`);
  t.is(nm.code, 0);
  t.like(nm.body.summary, { violations: 0, unfiltered: 0, errors: 0 });
  t.true(nm.body.results.some((r) => r.host === 'gateway1' && r.protocol === 'tcp' && r.port === 80 && r.state === 'open'));
});
