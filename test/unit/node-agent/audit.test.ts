/**
 * The agent's side of the reachability audit: the probes themselves (on
 * 127.0.0.1 only), the prober process, signed assignments, and the runner
 * that groups probes by workload, starts one prober per workload inside its
 * network namespace (a FakeRunner here records the nsenter argv) and reports.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AuditRunner } from '../../../src/node-agent/audit.js';
import { openAssignment, signAssignment, type AuditAssignment, type ProbeReport, type SignedAssignment } from '../../../src/shared/audit.js';
import { generateSigningKeyPair } from '../../../src/shared/crypto.js';
import { probeIcmp, probeTcp, probeUdp, probeWithRetries } from '../../../src/shared/probe.js';
import { FakeRunner, SYSTEM_PATH } from '../../../src/shared/runner.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

async function tcpServer(): Promise<{ port: number; close: () => void }> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end('ok\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

async function udpSocket(reply: boolean): Promise<{ port: number; close: () => void }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (_m, from) => {
    if (reply) s.send('ok\n', from.port, from.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return { port: s.address().port, close: () => s.close() };
}

/** A port nothing listens on (bound, then released). */
async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  const s = kind === 'tcp' ? await tcpServer() : await udpSocket(false);
  s.close();
  await new Promise((r) => setTimeout(r, 20));
  return s.port;
}

test('probes: TCP connected / RST, UDP reply / port unreachable / silence', async (t) => {
  const srv = await tcpServer();
  const echo = await udpSocket(true);
  const mute = await udpSocket(false);
  try {
    t.like(await probeTcp('127.0.0.1', srv.port, 1000), { got: 'answered', detail: 'connected' });
    t.like(await probeTcp('127.0.0.1', await freePort('tcp'), 1000), { got: 'refused', detail: 'ECONNREFUSED' });
    t.like(await probeUdp('127.0.0.1', echo.port, 1000), { got: 'answered' });
    t.like(await probeUdp('127.0.0.1', await freePort('udp'), 1000), { got: 'refused', detail: 'ECONNREFUSED' });
    const silent = await probeUdp('127.0.0.1', mute.port, 300);
    t.is(silent.got, 'silent');
    t.true(silent.ms >= 290 && silent.ms < 1000, `${silent.ms} ms`);
    const retried = await probeWithRetries({ protocol: 'udp', address: '127.0.0.1', port: mute.port }, { timeoutMs: 100, attempts: 3, gapMs: 10 });
    t.like(retried, { got: 'silent', attempts: 3 });
    const once = await probeWithRetries({ protocol: 'tcp', address: '127.0.0.1', port: srv.port }, { timeoutMs: 500, attempts: 3 });
    t.like(once, { got: 'answered', attempts: 1 }, 'no retry once the target answered');
  } finally {
    srv.close();
    echo.close();
    mute.close();
  }
});

test('probes: ICMP through ping', async (t) => {
  if (!SYSTEM_PATH.split(':').some((d) => existsSync(join(d, 'ping')))) return t.pass('ping not installed');
  const r = await probeIcmp('127.0.0.1', 1000);
  if (r.got === 'error') return t.log(`ping cannot run here: ${r.detail}`), t.pass();
  t.is(r.got, 'answered');
  t.like(await probeIcmp('127.0.0.1', 1000, '/nonexistent/ping'), { got: 'error' });
});

test('the prober process: JSON in, one JSON line per probe out', async (t) => {
  const srv = await tcpServer();
  const closed = await freePort('tcp');
  try {
    const input = { timeoutMs: 500, concurrency: 4, probes: [
      { i: 7, protocol: 'tcp', address: '127.0.0.1', port: srv.port, attempts: 1 },
      { i: 9, protocol: 'tcp', address: '127.0.0.1', port: closed, attempts: 2 },
      { i: 11, protocol: 'udp', address: '127.0.0.1', port: null, attempts: 1 },
    ] };
    const out = await new Promise<string>((resolve, reject) => {
      const child = execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'src/node-agent/audit-probe-main.ts')], { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      );
      child.stdin!.end(JSON.stringify(input));
    });
    const byI = new Map(out.trim().split('\n').map((l) => JSON.parse(l) as ProbeReport).map((r) => [r.i, r]));
    t.like(byI.get(7), { got: 'answered', attempts: 1 });
    t.like(byI.get(9), { got: 'refused', attempts: 1 });
    t.like(byI.get(11), { got: 'error' });
  } finally {
    srv.close();
  }
});

const coordinator = generateSigningKeyPair();
const assignment = (over: Partial<AuditAssignment> = {}): AuditAssignment => ({
  v: 1,
  id: '0123456789abcdef',
  node: 'node1',
  issuedAt: new Date().toISOString(),
  expiresAt: new Date(Date.now() + 60_000).toISOString(),
  probeTimeoutMs: 700,
  probes: [
    { i: 0, tenant: 'acme', workload: 'web1', protocol: 'tcp', address: '10.240.0.5', port: 5432, expect: 'allowed' },
    { i: 1, tenant: 'acme', workload: 'web1', protocol: 'udp', address: '10.240.0.5', port: 53, expect: 'denied' },
    { i: 4, tenant: 'acme', workload: 'ghost', protocol: 'icmp', address: '10.240.0.5', port: null, expect: 'denied' },
    { i: 5, tenant: 'globex', workload: 'app', protocol: 'icmp', address: '10.240.16.9', port: null, expect: 'denied' },
  ],
  ...over,
});

test('assignments: only signed by our coordinator, for this node, not expired', (t) => {
  const s = signAssignment(assignment(), coordinator.secretKey);
  t.truthy('assignment' in openAssignment(s, coordinator.publicKey, 'node1') && openAssignment(s, coordinator.publicKey, 'node1'));
  t.like(openAssignment(s, generateSigningKeyPair().publicKey, 'node1'), { error: 'bad signature (not from our coordinator)' });
  t.like(openAssignment({ ...s, assignment: s.assignment.replace('10.240.0.5', '10.240.0.6') }, coordinator.publicKey, 'node1'), { error: 'bad signature (not from our coordinator)' });
  t.regex((openAssignment(s, coordinator.publicKey, 'node2') as { error: string }).error, /assigned to node "node1"/);
  const old = signAssignment(assignment({ expiresAt: new Date(Date.now() - 1000).toISOString() }), coordinator.secretKey);
  t.regex((openAssignment(old, coordinator.publicKey, 'node1') as { error: string }).error, /expired/);
});

function fakeClient(list: SignedAssignment[] = []) {
  const reports: { id: string; results: ProbeReport[]; done: boolean }[] = [];
  let handed = false;
  return {
    reports,
    client: {
      audits: async (_wait: number, signal?: AbortSignal) => {
        if (!handed) {
          handed = true;
          return list;
        }
        await new Promise<void>((r) => signal?.addEventListener('abort', () => r()));
        return [];
      },
      reportAudit: async (id: string, results: ProbeReport[], done: boolean) => {
        reports.push({ id, results, done });
      },
    },
  };
}

test('runner: one prober per workload in its namespace; unknown namespaces and a failed prober give errors; reported with done', async (t) => {
  const runner = new FakeRunner();
  const prober = ['nsenter', '--net=/run/netns/web1', '/usr/bin/node', '/opt/netwall/audit-probe-main.js'];
  runner.expect(prober, { stdout: `${JSON.stringify({ i: 0, got: 'refused', ms: 2, attempts: 1, detail: 'ECONNREFUSED' })}\n` });
  runner.expect(['nsenter', '--net=/proc/77/ns/net', '/usr/bin/node', '/opt/netwall/audit-probe-main.js'], { exitCode: 1, stderr: 'nsenter: cannot open /proc/77/ns/net' });
  const { client, reports } = fakeClient([signAssignment(assignment(), coordinator.secretKey)]);
  const lines: string[] = [];
  const r = new AuditRunner({
    node: 'node1',
    coordinatorKey: coordinator.publicKey,
    client,
    runner,
    netnsOf: (tenant, w) => (({ 'acme/web1': '/run/netns/web1', 'globex/app': '/proc/77/ns/net' }) as Record<string, string>)[`${tenant}/${w}`],
    log: (l) => lines.push(l),
    nodePath: '/usr/bin/node',
    proberPath: '/opt/netwall/audit-probe-main.js',
  });
  const loop = r.run();
  for (let k = 0; k < 200 && !reports.some((x) => x.done); k++) await new Promise((res) => setTimeout(res, 10));
  r.stop();
  await loop;
  t.deepEqual(runner.pending(), []);
  const input = JSON.parse(runner.calls[0]!.input!) as { timeoutMs: number; probes: { i: number; attempts: number }[] };
  t.is(input.timeoutMs, 700);
  t.deepEqual(input.probes.map((p) => [p.i, p.attempts]), [[0, 2], [1, 1]], 'allowed probes get a second attempt');
  const results = new Map(reports.flatMap((x) => x.results).map((x) => [x.i, x]));
  t.like(results.get(0), { got: 'refused', detail: 'ECONNREFUSED' });
  t.like(results.get(1), { got: 'error', detail: 'no result from the prober' });
  t.regex(results.get(4)!.detail!, /no network namespace known for acme\/ghost/);
  t.regex(results.get(5)!.detail!, /prober failed \(exit 1\): nsenter: cannot open/);
  t.is(reports.filter((x) => x.done).length, 1);
  t.true(reports[reports.length - 1]!.done);
  t.true(reports.every((x) => x.id === '0123456789abcdef'));
  t.true(lines.some((l) => /audit 0123456789abcdef: done/.test(l)));
});

test('runner: refuses an assignment that is not ours, and runs nothing', async (t) => {
  const runner = new FakeRunner();
  const { client, reports } = fakeClient([signAssignment(assignment(), generateSigningKeyPair().secretKey)]);
  const lines: string[] = [];
  const r = new AuditRunner({ node: 'node1', coordinatorKey: coordinator.publicKey, client, runner, netnsOf: () => '/run/netns/x', log: (l) => lines.push(l) });
  const loop = r.run();
  await new Promise((res) => setTimeout(res, 50));
  r.stop();
  await loop;
  t.is(runner.calls.length, 0);
  t.is(reports.length, 0);
  t.true(lines.some((l) => /refusing an assignment: bad signature/.test(l)));
});
