/**
 * scripts/bench control-plane — desired-state rendering at scale and API
 * allocation throughput. Prints figures and records them in docs/benchmarks.md.
 *
 * Render: synthetic worlds of N nodes x 50 workloads over 10 tenants (each
 * node hosts 5 workloads of each tenant; 5 policies per tenant over app labels;
 * one exposure and one egress rule per tenant on 2 gateways). Times are the
 * median of several runs in this process, after a warm-up.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { DEFAULT_RENDER_SETTINGS, type MemberModel, type TenantModel } from '../src/coordinator/model.js';
import { compileTenant, hostsAffectedByWorkload, renderHost, withWorkload, type CompiledTenant } from '../src/coordinator/render.js';
import { generateSigningKeyPair, generateToken, signDocument } from '../src/shared/crypto.js';
import { intToIp, ipToInt } from '../src/shared/ipv4.js';
import { recordBenchmark } from './bench-record.js';

const APPS = ['web', 'api', 'db', 'cache', 'worker'];
const TENANTS = 10;
const PER_NODE = 50;

function world(nodes: number): TenantModel[] {
  const key = (i: number) => Buffer.alloc(32, i % 251).toString('base64');
  const tenants: TenantModel[] = [];
  for (let t = 0; t < TENANTS; t++) {
    const base = ipToInt('10.0.0.0') + t * 2 ** 16 * 2; // a /15 per tenant: 512 slices of /24
    const members: MemberModel[] = [];
    for (let g = 0; g < 2; g++) {
      members.push({ host: { name: `gw${g}`, kind: 'gateway', endpointHost: `198.51.100.${g + 1}` }, slice: `${intToIp(base + g + 1)}/32`, address: intToIp(base + g + 1), listenPort: 51820 + t, publicKey: key(g + 7), nextPublicKey: null });
    }
    const workloads = [];
    for (let n = 0; n < nodes; n++) {
      const sliceBase = base + (n + 1) * 256;
      members.push({ host: { name: `n${n}`, kind: 'node', endpointHost: intToIp(ipToInt('172.16.0.0') + n) }, slice: `${intToIp(sliceBase)}/24`, address: intToIp(sliceBase + 1), listenPort: 51820 + t, publicKey: key(n), nextPublicKey: null });
      for (let i = 0; i < PER_NODE / TENANTS; i++) {
        workloads.push({ name: `t${t}-n${n}-w${i}`, node: `n${n}`, address: intToIp(sliceBase + 2 + i), labels: { app: APPS[i % APPS.length]! } });
      }
    }
    const policies = [
      ['web', 'api', 8080],
      ['api', 'db', 5432],
      ['api', 'cache', 6379],
      ['worker', 'db', 5432],
      ['worker', 'cache', 6379],
    ].map(([from, to, port]) => ({ name: `${from}-${to}`, spec: { from: { app: String(from) }, to: { app: String(to) }, allow: [{ protocol: 'tcp' as const, ports: [Number(port)] }] } }));
    tenants.push({
      id: t + 1,
      name: `tenant${t}`,
      subnet: `${intToIp(base)}/15`,
      members,
      workloads,
      policies,
      exposures: [{ name: 'web', spec: { protocol: 'http', hostnames: [`web.t${t}.test`], mode: 'tunnel', gateways: ['gw0', 'gw1'], target: { selector: { app: 'web' }, port: 8080 }, tls: null, publicPort: null, proxyProtocol: false } }],
      egress: [{ name: 'out', spec: { gateways: ['gw0'], destinations: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: [443] }] } }],
      routerKeys: [],
    });
  }
  return tenants;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function renderAll(models: TenantModel[], nodes: number): { compiled: CompiledTenant[]; ms: number; compileMs: number; docs: number } {
  (globalThis as { gc?: () => void }).gc?.();
  const t0 = performance.now();
  const compiled = models.map(compileTenant);
  const compileMs = performance.now() - t0;
  let docs = 0;
  for (let n = 0; n < nodes; n++) {
    renderHost({ name: `n${n}`, kind: 'node', version: 1, endpointHost: '172.16.0.1', tenants: compiled }, DEFAULT_RENDER_SETTINGS);
    docs++;
  }
  for (const g of ['gw0', 'gw1']) {
    renderHost({ name: g, kind: 'gateway', version: 1, endpointHost: '198.51.100.1', tenants: compiled }, DEFAULT_RENDER_SETTINGS);
    docs++;
  }
  return { compiled, ms: performance.now() - t0, compileMs, docs };
}

function benchRender(nodes: number, runs: number): { ms: number; compileMs: number } {
  const models = world(nodes);
  renderAll(models, nodes); // warm-up
  renderAll(models, nodes);
  const results = Array.from({ length: runs }, () => renderAll(models, nodes));
  return { ms: median(results.map((r) => r.ms)), compileMs: median(results.map((r) => r.compileMs)) };
}

/** One workload added: recompile its tenant, find the affected hosts, re-render only those. */
function benchIncremental(nodes: number, label: string): { ms: number; affected: number } {
  const models = world(nodes);
  const compiled = models.map(compileTenant);
  const times: number[] = [];
  let affected = 0;
  for (let i = 0; i < 21; i++) {
    const t0 = performance.now();
    const w = { name: `new-${label}-${i}`, node: 'n3', address: intToIp(ipToInt(models[0]!.members[2 + 3]!.address) + 100 + i), labels: { app: label } };
    const before = compiled[0]!;
    const hosts = hostsAffectedByWorkload(before, w);
    compiled[0] = withWorkload(before, w, 'add');
    for (const h of hosts) renderHost({ name: h, kind: h.startsWith('gw') ? 'gateway' : 'node', version: 2, endpointHost: '172.16.0.1', tenants: compiled }, DEFAULT_RENDER_SETTINGS);
    times.push(performance.now() - t0);
    affected = hosts.size;
  }
  return { ms: median(times.slice(1)), affected };
}

function benchSerialize(nodes: number): number {
  const models = world(nodes);
  const compiled = models.map(compileTenant);
  const key = generateSigningKeyPair();
  const times: number[] = [];
  for (let n = 0; n < Math.min(nodes, 200); n++) {
    const t0 = performance.now();
    signDocument(JSON.stringify(renderHost({ name: `n${n}`, kind: 'node', version: 1, endpointHost: '172.16.0.1', tenants: compiled }, DEFAULT_RENDER_SETTINGS)), key.secretKey);
    times.push(performance.now() - t0);
  }
  return median(times);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * 20 nodes x /21 slices hold 20 x 2,045 workloads: room for 10 s (warm-up and
 * run) above 4,000 allocations/s. A full slice answers a fast 409, which
 * autocannon counts as throughput: a run with any answer but 201 is marked
 * INVALID.
 */
const SLICE_PREFIX = '21';

async function benchApi(): Promise<{ rps: number; p50: number; p99: number; errors: number; non2xx: number; total: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'netwall-bench-'));
  const port = await freePort();
  const token = generateToken('admin');
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [...(process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : []), 'dist/coordinator/main.js', '--listen', `127.0.0.1:${port}`, '--db', join(dir, 'db'), '--tenant-prefix', '16', '--slice-prefix', SLICE_PREFIX, '--log-level', 'warn'], {
    env: { ...process.env, NETWALL_ADMIN_TOKEN: token },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    for (let i = 0; i < 100; i++) {
      if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) }).then(async (r) => {
        if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
        return r.json() as Promise<Record<string, string>>;
      });
    const NODES = 20;
    await admin('POST', '/v1/tenants', { name: 'bench' });
    await admin('PUT', '/v1/tenants/bench/policies/web-db', { from: { app: 'web' }, to: { app: 'db' }, allow: [{ protocol: 'tcp', ports: [5432] }] });
    for (let n = 0; n < NODES; n++) {
      const { token: t } = await admin('POST', '/v1/enrollment-tokens', { kind: 'node', name: `node${n}` });
      await fetch(`${url}/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: t, name: `node${n}`, identityKey: generateSigningKeyPair().publicKey }) });
    }
    let counter = 0;
    const run = (duration: number) =>
      autocannon({
        url: `${url}/v1/tenants/bench/workloads`,
        connections: 8,
        duration,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => {
              const i = counter++;
              return { ...req, body: JSON.stringify({ name: `w${i}`, node: `node${i % NODES}`, labels: { app: i % 3 ? 'web' : 'db' } }) };
            },
          },
        ],
      });
    await run(2); // warm-up
    const r = await run(8);
    return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, non2xx: r.non2xx, total: r.requests.total };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const lines: string[] = [];
  const out = (s: string) => {
    console.log(s);
    lines.push(s);
  };
  const apiOnly = process.argv.includes('--api-only');
  if (!apiOnly) renderFigures(out);
  if (process.argv.includes('--no-api')) {
    out('API allocation benchmark skipped (--no-api)');
  } else {
    const api = await benchApi();
    out(`API workload allocations (autocannon, 8 connections, 8 s): ${api.rps.toFixed(0)} req/s, p50 ${api.p50} ms, p99 ${api.p99} ms, ${api.total} requests, ${api.errors} errors, ${api.non2xx} non-2xx   (target >= 2000 req/s, p99 <= 20 ms)`);
    if (api.errors || api.non2xx) out(`  INVALID: ${api.errors + api.non2xx} request(s) were not allocations, so req/s overstates the allocation rate`);
  }
  if (!apiOnly) recordBenchmark('control-plane', lines);
}

function renderFigures(out: (s: string) => void): void {
  const [b500, b1000, b2000] = [benchRender(500, 7), benchRender(1000, 7), benchRender(2000, 5)];
  const [r500, r1000, r2000] = [b500.ms, b1000.ms, b2000.ms];
  const row = (n: number, b: { ms: number; compileMs: number }, note = '') =>
    `render all hosts, ${n} nodes x 50 workloads (10 tenants): ${b.ms.toFixed(1)} ms (compile ${b.compileMs.toFixed(1)} ms + documents ${(b.ms - b.compileMs).toFixed(1)} ms)${note}`;
  out(row(500, b500));
  out(row(1000, b1000, '   (target <= 500 ms)'));
  out(row(2000, b2000));
  out(`scaling ratio 500->1000: ${(r1000 / r500).toFixed(2)}, 1000->2000: ${(r2000 / r1000).toFixed(2)}   (target <= 2.2 per doubling)`);
  const quiet = benchIncremental(1000, 'cron');
  const loud = benchIncremental(1000, 'web');
  out(`one workload added, no policy selects it:   ${quiet.ms.toFixed(2)} ms, ${quiet.affected} host(s) re-rendered   (target <= 5 ms)`);
  out(`one workload added, policies select it:     ${loud.ms.toFixed(2)} ms, ${loud.affected} host(s) re-rendered`);
  out(`serialize + sign one node document (1000-node world): ${benchSerialize(1000).toFixed(2)} ms median`);
}

main().catch((err: Error) => {
  console.error(`bench control-plane: ${err.stack ?? err.message}`);
  process.exit(1);
});
